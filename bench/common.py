"""What the benchmarks share: the demo requests, fake engines, and the factory arm (the sample stage on
the executor, rows written as Parquet parts)."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

from factory import config
from factory.config import EngineConfig, RunConfig, SamplingConfig
from factory.engines.base import Completion
from factory.executor import Executor
from factory.prompts import load_prompts
from factory.stages.sample import SampleStage, plan_samples
from factory.rundir.store import RunStore

DEMO = HERE.parent / "conf" / "demo.yaml"


def demo_prompts(n_prompts: int):
    cfg = config.load(DEMO, [f"prompts.limit={n_prompts}"])
    prompts, _ = load_prompts(cfg.prompts)
    return prompts


def plan(n_prompts: int, k: int) -> list[dict]:
    """The demo prompts rendered by factory, K derived seeds each: the same requests for every arm."""
    prompts = demo_prompts(n_prompts)
    rows = plan_samples(prompts, None, k, "bench", 0).to_dicts()
    messages = dict(zip(prompts["prompt_id"].to_list(), prompts["messages"].to_list()))
    return [{**row, "messages": messages[row["prompt_id"]]} for row in rows]


def sample_stage(n_prompts: int, k: int, engine: EngineConfig, sampling: SamplingConfig) -> SampleStage:
    """The sample stage of the demo prompts with this engine and sampling (fingerprint "bench")."""
    cfg = RunConfig()
    cfg.sampler.k, cfg.sampler.engine, cfg.sampler.sampling = k, engine, sampling
    return SampleStage(cfg, "bench", demo_prompts(n_prompts))


def sample_on_executor(executor: Executor, stage: SampleStage, prefix: str) -> tuple[float, int]:
    """The sample stage as `factory run` drives it, into a fresh run directory, on the executor's pools
    (started once). Returns (seconds, completion tokens); a failed row stops the bench."""
    store = RunStore(tempfile.mkdtemp(prefix=prefix))
    start = time.perf_counter()
    executor.run([stage], store=store)
    seconds = time.perf_counter() - start
    samples = store.read("samples")
    errors = samples["error"].drop_nulls().to_list()
    assert not errors, errors[:1]
    return seconds, int(samples["completion_tokens"].sum())


class InstantEngine:
    """Answers every request at once: what is left to measure is the factory itself."""

    model_name = "instant"
    supports_json_schema = True
    concurrent_batches = True

    def __init__(self, cfg: EngineConfig | None = None, delay: float = 0.0):
        self.finished = 0
        self.delay = delay

    def generate(self, requests, on_done=None):
        if self.delay:
            time.sleep(self.delay)
        out = [Completion(tag=r.tag, text=self.text(r), finish_reason="stop", prompt_tokens=10, completion_tokens=4)
               for r in requests]  # fmt: skip
        self.finished += len(out)
        for completion in out if on_done else ():
            on_done(completion)
        return out

    @staticmethod
    def text(request) -> str:
        """A sample whose length, and a judge score whose value, follow the request's seed."""
        if request.json_schema is not None:
            return f'{{"score": {request.seed % 101}, "reason": "r"}}'
        return "<think>r</think>" + " ".join(["word"] * (1 + request.seed % 12))

    def count_tokens(self, texts):
        return [len(t.split()) for t in texts]

    def close(self):
        pass
