"""The driver's ceiling and the part count. Prints figures measured in this one run; asserts nothing.

    .venv/bin/python bench/bench_executor.py [--samples 100000] [--replicas 8] [--batch-size 256]

1. Driver ceiling (the cluster case, simulated): engines that answer at once, on `replicas` local Ray
   actors, so that all that is measured is the factory: planning, dispatch, rows coming back per
   request, matching them to their keys, progress, Parquet writes. Rows stored per second of
   `executor.run`, pools already up; goal >= 5,000 rows/s (a 100-replica R1 cluster needs ~500/s).
   The same load through the runner this executor replaced (loaded from git history: batch results
   returned whole, a part every 32 rows) gives today's figure.
2. Sample -> judge through the same executor, same engines: both stages' rows per second.
3. Part count of that 100k-sample run: small parts flushed during the run, files on disk after it,
   and after `factory compact` (goals: <= 50 before compaction, <= 4 after).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import common
from common import HERE, InstantEngine

import polars as pl
import pyarrow as pa

from factory.rundir import compact
from factory.config import EngineConfig, RunConfig, SamplingConfig
from factory.executor import Executor
from factory.executor.progress import Progress
from factory.prompts import prepare_prompts
from factory.rundir.schemas import SAMPLES
from factory.stages.judge import JudgeStage
from factory.stages.sample import SampleStage, plan_samples
from factory.rundir.store import RunStore

RUBRIC = "Rate {answer} from 0 to {scale_max}."
BEFORE = "d8814a3"  # the last commit with factory/runner.py and factory/pipeline.py


def prompts_frame(n: int) -> pl.DataFrame:
    rows = [(i, {"id": f"p{i:06d}", "product_info": "a mug", "history": [], "question": f"q{i}?"}) for i in range(n)]
    prompts, _ = prepare_prompts(rows, RunConfig().prompts)
    return prompts


def run_cfg(replicas: int, batch_size: int, k: int) -> RunConfig:
    cfg = RunConfig(progress_interval_s=3600)
    engine = EngineConfig(kind="openai", base_url="http://127.0.0.1:9/v1", model="instant", replicas=replicas,
                          cpus_per_replica=0.25, batch_size=batch_size, parallel=batch_size)  # fmt: skip
    cfg.sampler.k, cfg.sampler.engine, cfg.sampler.sampling = k, engine, SamplingConfig(max_tokens=8)
    cfg.judge.engine = EngineConfig(**{**engine.__dict__, "model": "instant-judge"})
    return cfg


def parts_on_disk(root: Path) -> dict[str, int]:
    return {t: len(list((root / t).glob("*.parquet"))) for t in ("samples", "judgments") if (root / t).exists()}


def factory_arm(args: argparse.Namespace) -> None:
    k = 8
    prompts = prompts_frame(args.samples // k)
    cfg = run_cfg(args.replicas, args.batch_size, k)
    quiet = Progress(3600, stream=open("/dev/null", "w"))  # noqa: SIM115
    with Executor(RunStore(tempfile.mkdtemp(prefix="bench-exec-")), cfg, build=InstantEngine, progress=quiet) as ex:
        fps = {"sampler": "warm", "judge": "warm-judge"}
        head = prompts.head(200)
        ex.run([SampleStage(cfg, "warm", head), JudgeStage(cfg, fps, head, RUBRIC)])  # both pools up, code warm
        root = Path(tempfile.mkdtemp(prefix="bench-exec-"))
        stage = SampleStage(cfg, "bench", prompts)
        start = time.perf_counter()
        done = ex.run([stage], store=RunStore(str(root)))
        seconds = time.perf_counter() - start
        stored = RunStore(str(root)).read("samples", columns=["prompt_id"]).height
        print(f"1. sample stage, {stored} rows on {args.replicas} instant replicas: {seconds:.2f} s, "
              f"{stored / seconds:,.0f} rows/s (goal >= 5,000)")  # fmt: skip

        root = Path(tempfile.mkdtemp(prefix="bench-exec-"))
        store = RunStore(str(root))
        fps = {"sampler": "bench", "judge": "bench-judge"}
        stages = [SampleStage(cfg, "bench", prompts), JudgeStage(cfg, fps, prompts, RUBRIC)]
        start = time.perf_counter()
        done = ex.run(stages, store=store)
        seconds = time.perf_counter() - start
        rows = done["sample"].rows + done["judge"].rows
        print(f"2. sample -> judge, {done['sample'].rows} samples + {done['judge'].rows} judgments: {seconds:.2f} s, "
              f"{rows / seconds:,.0f} rows/s stored (both stages)")  # fmt: skip
        written = {name: m.parts_written for name, m in done.items()}
        after_run = parts_on_disk(root)
        result = compact.compact(store, target_mb=1024)
        print(
            f"3. parts of that run: flushed during it {written}, on disk after it {after_run}, "
            f"after factory compact { {t: r['parts_after'] for t, r in result.items()} } (goals <= 50, <= 4)"
        )


# Modules the old code imports under the names they had before the layout of this phase.
MOVED = {"factory.keys": "factory.rundir.hashing", "factory.schemas": "factory.rundir.schemas",
         "factory.store": "factory.rundir.store", "factory.secrets": "factory.rundir.secrets"}  # fmt: skip


def load_before(path: str, name: str) -> types.ModuleType:
    for old, new in MOVED.items():
        sys.modules.setdefault(old, importlib.import_module(new))
    source = subprocess.run(
        ["git", "show", f"{BEFORE}:{path}"], cwd=HERE.parent, capture_output=True, text=True, check=True
    )
    spec = importlib.util.spec_from_loader(name, loader=None)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module
    exec(compile(source.stdout, f"{BEFORE}:{path}", "exec"), module.__dict__)
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(module)  # it exists in this process only
    return module


class OldInstantEngine(InstantEngine):
    """The engine protocol before on_done: generate(requests) only."""

    def generate(self, requests, on_done=None):
        return super().generate(requests)


def before_arm(args: argparse.Namespace) -> None:
    """Today's figure: the same load through the runner and part writer this executor replaced."""
    runner = load_before("factory/runner.py", "runner_before")
    sample = load_before("factory/stages/sample.py", "sample_before")
    k = 8
    prompts = prompts_frame(args.samples // k)
    rows = plan_samples(prompts, None, k, "bench", 0).to_dicts()
    messages = dict(zip(prompts["prompt_id"].to_list(), prompts["messages"].to_list()))
    rows = [{**r, "messages": messages[r["prompt_id"]]} for r in rows]
    cfg = run_cfg(args.replicas, args.batch_size, k)
    pool = runner.EnginePool(cfg.sampler.engine, "before", build=OldInstantEngine)
    store = RunStore(tempfile.mkdtemp(prefix="bench-before-"))
    buffer: list[dict] = []

    def on_result(batch, results):  # the old pipeline's _PartWriter: a part every max(batch_size, 32) rows
        buffer.extend(results)
        if len(buffer) >= max(cfg.sampler.engine.batch_size, 32):
            store.append("samples", pa.Table.from_pylist(buffer, schema=SAMPLES))
            buffer.clear()

    try:
        pool.map_batches(sample.sample_batch, rows[:200], (cfg.sampler.sampling, "warm"), on_result, lambda b, r: [])
        store = RunStore(tempfile.mkdtemp(prefix="bench-before-"))
        start = time.perf_counter()
        pool.map_batches(sample.sample_batch, rows, (cfg.sampler.sampling, "bench"), on_result, lambda b, r: [])
        if buffer:
            store.append("samples", pa.Table.from_pylist(buffer, schema=SAMPLES))
        seconds = time.perf_counter() - start
    finally:
        pool.shutdown()
    stored = store.read("samples", columns=["prompt_id"]).height
    print(f"   before ({BEFORE}: runner.EnginePool + a part every 32 rows): {stored} rows in {seconds:.2f} s, "
          f"{stored / seconds:,.0f} rows/s, {len(store.parts('samples'))} parts")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--replicas", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--skip-before", action="store_true", help="skip today's figure (the replaced runner)")
    args = parser.parse_args()
    import ray
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(common)  # Ray workers cannot import bench/
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=4, include_dashboard=False, logging_level="ERROR")
    factory_arm(args)
    if not args.skip_before:
        before_arm(args)


if __name__ == "__main__":
    main()
