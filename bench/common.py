"""What the engine benchmarks share: the demo requests and the factory arm (the sample stage on a Ray pool)."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

import pyarrow as pa

from factory import config
from factory.config import SamplingConfig
from factory.prompts import load_prompts
from factory.schemas import SAMPLES
from factory.stages.sample import plan_samples, sample_batch
from factory.store import RunStore

DEMO = HERE.parent / "conf" / "demo.yaml"


def plan(n_prompts: int, k: int) -> list[dict]:
    """The demo prompts rendered by factory, K derived seeds each: the same requests for every arm."""
    cfg = config.load(DEMO, [f"prompts.limit={n_prompts}"])
    prompts, _ = load_prompts(cfg.prompts)
    return plan_samples(prompts, None, k, "bench", 0).to_dicts()


def sample_on_pool(pool, rows: list[dict], sampling: SamplingConfig, prefix: str) -> tuple[float, int]:
    """The sample stage as `factory run` drives it: batches on the pool, rows written as Parquet parts.
    Returns (seconds, completion tokens); a failed row stops the bench (its ratio would mean nothing)."""
    store = RunStore(tempfile.mkdtemp(prefix=prefix))
    tokens = 0

    def on_result(batch: list[dict], results: list[dict]) -> None:
        nonlocal tokens
        store.append("samples", pa.Table.from_pylist(results, schema=SAMPLES))
        tokens += sum(r["completion_tokens"] for r in results)
        assert not any(r["error"] for r in results), [r["error"] for r in results if r["error"]][:1]

    start = time.perf_counter()
    pool.map_batches(sample_batch, rows, (sampling, "bench"), on_result=on_result, on_fail=lambda b, r: [])
    return time.perf_counter() - start, tokens
