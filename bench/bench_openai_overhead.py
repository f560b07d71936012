"""Orchestration overhead of the openai engine path. Prints ratios measured in this one run; asserts nothing.

    .venv/bin/python bench/bench_openai_overhead.py [--prompts 16] [--k 4] [--max-tokens 32] [--concurrency 4]

One local OpenAI-compatible server (the llama.cpp server xllamacpp runs, embedded SmolLM2-135M) answers
the same sample requests (demo prompts rendered by factory, K seeds each) two ways, at the same
concurrency:
  bare     an AsyncOpenAI loop with a semaphore, nothing else;
  factory  the sample stage as `factory run` drives it: a Ray actor pool of OpenAIEngine replicas,
           sample_batch (reasoning split, token accounting), rows written as Parquet parts.
The arms alternate (bare, factory, factory, bare) so server warm-up and prompt caching fall on both.
Same seeds, so both arms decode about the same tokens (llama.cpp's batched slots are not bit-exact, so the
counts are printed and throughput is compared in completion tokens/s). Goal: factory/bare >= 0.95, timed
from the first request to the last row written (the replica start, about 1 s of Ray, is printed apart).
"""

from __future__ import annotations

import argparse
import asyncio
import time

from common import plan, sample_on_pool

from factory.config import EngineConfig, RayConfig, SamplingConfig
from factory.engines.llamacpp import LlamaCppEngine


async def bare(base_url: str, rows: list[dict], sampling: SamplingConfig, concurrency: int) -> tuple[float, int]:
    import openai

    client = openai.AsyncOpenAI(
        base_url=base_url, api_key="EMPTY", max_retries=0, http_client=openai.DefaultAsyncHttpxClient(trust_env=False)
    )
    slots = asyncio.Semaphore(concurrency)

    async def one(row: dict) -> int:
        async with slots:
            response = await client.chat.completions.create(
                model="smollm2", messages=row["messages"], max_tokens=sampling.max_tokens,
                temperature=sampling.temperature, top_p=sampling.top_p, seed=row["seed"],
            )  # fmt: skip
            return response.usage.completion_tokens

    start = time.perf_counter()
    tokens = sum(await asyncio.gather(*(one(r) for r in rows)))
    seconds = time.perf_counter() - start
    await client.close()
    return seconds, tokens


def factory_arm(engine_cfg: EngineConfig, rows: list[dict], sampling: SamplingConfig) -> tuple[float, float, int]:
    from factory.runner import EnginePool

    start = time.perf_counter()
    pool = EnginePool(engine_cfg, "bench")
    ready = time.perf_counter()
    try:
        seconds, tokens = sample_on_pool(pool, rows, sampling, "bench-openai-")
    finally:
        pool.shutdown()
    return seconds, ready - start, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1, help="each round runs bare, factory, factory, bare")
    args = parser.parse_args()

    from factory.runner import init_ray

    init_ray(RayConfig())  # the Ray `factory run` starts
    rows = plan(args.prompts, args.k)
    sampling = SamplingConfig(temperature=0.9, top_p=0.95, max_tokens=args.max_tokens)
    server = LlamaCppEngine(
        EngineConfig(kind="llamacpp", parallel=args.concurrency, cpus_per_replica=2, max_model_len=1024)
    )
    base_url = f"{server.base_url}/v1"
    engine_cfg = EngineConfig(
        kind="openai", base_url=base_url, model="smollm2", parallel=args.concurrency, replicas=1,
        batch_size=max(1, 2 * args.concurrency), cpus_per_replica=0.5, max_model_len=1024,
    )  # fmt: skip
    print(
        f"{len(rows)} requests ({args.prompts} prompts x K={args.k}), max_tokens {args.max_tokens}, concurrency {args.concurrency}"
    )
    asyncio.run(bare(base_url, rows[: args.concurrency], sampling, args.concurrency))  # warm the server

    times = {"bare": 0.0, "factory": 0.0}
    tokens = {"bare": [], "factory": []}
    start_s = []
    for arm in ["bare", "factory", "factory", "bare"] * args.rounds:
        if arm == "bare":
            seconds, n = asyncio.run(bare(base_url, rows, sampling, args.concurrency))
        else:
            seconds, started, n = factory_arm(engine_cfg, rows, sampling)
            start_s.append(started)
        times[arm] += seconds
        tokens[arm].append(n)
        print(f"  {arm:8} {seconds:6.2f} s  {n} tokens  {n / seconds:6.1f} tok/s")
    server.close()

    bare_tps = sum(tokens["bare"]) / times["bare"]
    factory_tps = sum(tokens["factory"]) / times["factory"]
    print(f"completion tokens per pass: bare {tokens['bare']}, factory {tokens['factory']} (same seeds)")
    print(f"replica start (Ray actor + engine), not in the ratio: {', '.join(f'{s:.2f} s' for s in start_s)}")
    print(f"throughput ratio factory/bare: {factory_tps / bare_tps:.3f}  (goal >= 0.95)")


if __name__ == "__main__":
    main()
