"""Orchestration overhead of the openai engine path. Prints ratios measured in this one run; asserts nothing.

    .venv/bin/python bench/bench_openai_overhead.py [--prompts 16] [--k 4] [--max-tokens 32] [--concurrency 4]

One local OpenAI-compatible server (the llama.cpp server xllamacpp runs, embedded SmolLM2-135M) answers
the same sample requests (demo prompts rendered by factory, K seeds each) two ways, at the same
concurrency:
  bare     an AsyncOpenAI loop with a semaphore, nothing else;
  factory  the sample stage as `factory run` drives it: the executor's Ray actor pool of OpenAIEngine
           replicas (started once, kept), sample_batch (reasoning split, token accounting), rows handed
           back per request and written as Parquet parts.
The arms alternate (bare, factory, factory, bare) so server warm-up and prompt caching fall on both.
Same seeds, so both arms decode about the same tokens (llama.cpp's batched slots are not bit-exact, so the
counts are printed and throughput is compared in completion tokens/s). Goal: factory/bare >= 0.95, timed
from the first request to the last row written (the replica start, about 1 s of Ray, is printed apart).
"""

from __future__ import annotations

import argparse
import asyncio
import time

from common import plan, sample_on_executor, sample_stage

from factory.config import EngineConfig, RayConfig, RunConfig, SamplingConfig
from factory.engines.llamacpp import LlamaCppEngine
from factory.executor import Executor
from factory.executor.progress import Progress
from factory.rundir.store import RunStore


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


class FactoryArm:
    """The executor with its pool of OpenAIEngine replicas, started once (timed apart) and kept."""

    def __init__(self, engine_cfg: EngineConfig, prompts: int, k: int, sampling: SamplingConfig):
        import tempfile

        self.stage = sample_stage(prompts, k, engine_cfg, sampling)
        quiet = Progress(3600, stream=open("/dev/null", "w"))  # noqa: SIM115
        self.executor = Executor(RunStore(tempfile.mkdtemp(prefix="bench-openai-")), RunConfig(), progress=quiet)
        start = time.perf_counter()
        self.executor._pool(self.stage).start()
        while not self.executor._pool(self.stage).ready:
            self.executor.backend.wait(0.05)
        self.start_s = time.perf_counter() - start

    def run(self) -> tuple[float, int]:
        return sample_on_executor(self.executor, self.stage, "bench-openai-")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1, help="each round runs bare, factory, factory, bare")
    args = parser.parse_args()

    from factory.executor.ray import init_ray

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
        f"{len(rows)} requests ({args.prompts} prompts x K={args.k}), max_tokens {args.max_tokens}, concurrency "
        f"{args.concurrency}"
    )
    asyncio.run(bare(base_url, rows[: args.concurrency], sampling, args.concurrency))  # warm the server

    times = {"bare": 0.0, "factory": 0.0}
    tokens = {"bare": [], "factory": []}
    factory = FactoryArm(engine_cfg, args.prompts, args.k, sampling)
    start_s = [factory.start_s]
    for arm in ["bare", "factory", "factory", "bare"] * args.rounds:
        if arm == "bare":
            seconds, n = asyncio.run(bare(base_url, rows, sampling, args.concurrency))
        else:
            seconds, n = factory.run()
        times[arm] += seconds
        tokens[arm].append(n)
        print(f"  {arm:8} {seconds:6.2f} s  {n} tokens  {n / seconds:6.1f} tok/s")
    factory.executor.close()
    server.close()

    bare_tps = sum(tokens["bare"]) / times["bare"]
    factory_tps = sum(tokens["factory"]) / times["factory"]
    print(f"completion tokens per pass: bare {tokens['bare']}, factory {tokens['factory']} (same seeds)")
    print(f"replica start (Ray actor + engine, once), not in the ratio: {', '.join(f'{s:.2f} s' for s in start_s)}")
    print(f"throughput ratio factory/bare: {factory_tps / bare_tps:.3f}  (goal >= 0.95)")


if __name__ == "__main__":
    main()
