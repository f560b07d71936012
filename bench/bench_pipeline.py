"""Overlapping stages and long-lived pools. Prints figures measured in this one run; asserts nothing.

    .venv/bin/python bench/bench_pipeline.py [--prompts 200] [--k 4] [--service-s 0.05] [--parallel 8]

1. The sampler and the judge on separate pools (separate engines, one replica each), every request
   taking a fixed service time (`--service-s`, `--parallel` at once per replica), about the same total
   work per stage (one judgment per sample). On the same warm pools:
       sample alone, judge alone (samples stored), sample -> judge together, and the two one after
       the other (what `factory run` did before this executor).
   Goal: together / max(alone) <= 1.15 (one after the other is about 2.0).
2. A `pairs.target` run that needs several draw rounds, with the sampler and the judge on the same
   engine: engine starts (the replaced pipeline started a pool per stage per round: 2 x rounds).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import common
from common import InstantEngine

from factory import config as config_mod
from factory.config import EngineConfig, RunConfig, SamplingConfig
from factory.engines.base import gather
from factory.executor import Executor
from factory.executor.progress import Progress
from factory.stages.judge import JudgeStage
from factory.stages.sample import SampleStage
from factory.rundir.store import RunStore

RUBRIC = "Rate {answer} from 0 to {scale_max}."


class ServiceTimeEngine(InstantEngine):
    """Every request takes `service_s` seconds, `parallel` at a time (a model server at a fixed speed)."""

    def __init__(self, cfg: EngineConfig):
        super().__init__(cfg)
        self.service_s = float(cfg.engine_kwargs["service_s"])
        self.slots = ThreadPoolExecutor(max_workers=cfg.parallel)
        self.lock = threading.Lock()

    def _one(self, request):
        time.sleep(self.service_s)
        (completion,) = InstantEngine.generate(self, [request])
        return completion

    def generate(self, requests, on_done=None):
        return gather(requests, [self.slots.submit(self._one, r) for r in requests], on_done)


def engine(name: str, args: argparse.Namespace) -> EngineConfig:
    return EngineConfig(
        kind="openai",
        base_url=f"http://127.0.0.1:9/{name}",
        model=name,
        parallel=args.parallel,
        batch_size=args.parallel,
        cpus_per_replica=0.5,
        engine_kwargs={"service_s": args.service_s},
    )


def overlap(args: argparse.Namespace) -> None:
    from bench_executor import prompts_frame

    cfg = RunConfig(progress_interval_s=3600)
    cfg.sampler.k, cfg.sampler.engine, cfg.sampler.sampling = (
        args.k,
        engine("sampler", args),
        SamplingConfig(max_tokens=8),
    )
    cfg.judge.engine = engine("judge", args)
    prompts = prompts_frame(args.prompts)
    fps = {"sampler": "bench", "judge": "bench-judge"}

    def graph(head=None):
        p = prompts if head is None else prompts.head(head)
        return [SampleStage(cfg, fps["sampler"], p), JudgeStage(cfg, fps, p, RUBRIC)]

    quiet = Progress(3600, stream=open("/dev/null", "w"))  # noqa: SIM115
    with Executor(RunStore(tempfile.mkdtemp(prefix="bench-pipe-")), cfg, build=ServiceTimeEngine, progress=quiet) as ex:
        ex.run(graph(4))  # both pools up (not timed)

        def timed(stages, store):
            start = time.perf_counter()
            ex.run(stages, store=store)
            return time.perf_counter() - start

        store = RunStore(tempfile.mkdtemp(prefix="bench-pipe-"))
        sample_alone = timed(graph()[:1], store)
        judge_alone = timed(graph(), store)  # the samples are stored: only the judge works
        together = timed(graph(), RunStore(tempfile.mkdtemp(prefix="bench-pipe-")))
        store = RunStore(tempfile.mkdtemp(prefix="bench-pipe-"))
        one_after_other = timed(graph()[:1], store) + timed(graph(), store)
    longest = max(sample_alone, judge_alone)
    n = args.prompts * args.k
    print(f"1. {n} samples and {n} judgments, {args.service_s:g} s a request, {args.parallel} at once per stage")
    print(f"   sample alone {sample_alone:.2f} s, judge alone {judge_alone:.2f} s")
    print(
        f"   sample -> judge together {together:.2f} s: together / max(alone) = {together / longest:.3f}  (goal <= "
        "1.15)"
    )
    print(f"   one after the other {one_after_other:.2f} s: / max(alone) = {one_after_other / longest:.3f}  (before)")


def target_rounds(args: argparse.Namespace) -> None:
    from factory.run import run
    from tests.synthetic import write_prompts

    folder = Path(tempfile.mkdtemp(prefix="bench-target-"))
    prompts = write_prompts(folder / "prompts.jsonl", 400)
    rubric = folder / "rubric.txt"
    rubric.write_text(RUBRIC)
    shared = json.dumps({"service_s": 0.01})
    cfg = config_mod.load(None, [
        f"output_dir={folder / 'run'}", f"prompts.path={prompts}", f"judge.rubric_file={rubric}", "sampler.k=4",
        "prompts.limit=1", "pairs.target=150", "pairs.drop_ratio=0.3", "progress_interval_s=3600",
        *[f"{side}.engine.{key}" for side in ("sampler", "judge") for key in (
            "kind=openai", "base_url=http://127.0.0.1:9/v1", "model=shared", "parallel=8", "cpus_per_replica=0.5",
            "batch_size=8")],
        f"sampler.engine.engine_kwargs={shared}", f"judge.engine.engine_kwargs={shared}",
    ])  # fmt: skip
    manifest = run(cfg, build=ServiceTimeEngine)
    draws = manifest["target"]["draws"]
    starts = sum(p["starts"] for p in manifest["pools"].values())
    print(f"2. pairs.target=150 met: {manifest['target']['met']} after {len(draws)} draw rounds "
          f"({', '.join(str(d['limit']) for d in draws)} prompts), pools {list(manifest['pools'])}: "
          f"{starts} engine start(s) (before: {2 * len(draws)})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--service-s", type=float, default=0.05)
    parser.add_argument("--parallel", type=int, default=8)
    args = parser.parse_args()
    import ray
    from ray import cloudpickle

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    cloudpickle.register_pickle_by_value(common)  # Ray workers cannot import bench/
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=4, include_dashboard=False, logging_level="ERROR")
    overlap(args)
    target_rounds(args)


if __name__ == "__main__":
    main()
