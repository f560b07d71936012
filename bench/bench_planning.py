"""Planning at scale: what a growth step costs when 1M samples are stored. Prints figures; asserts nothing.

    .venv/bin/python bench/bench_planning.py [--groups 125000] [--k 8] [--reasoning-repeat 160] [--keep DIR]

A run directory is made of synthetic rows (bench/synth.py, the pair benchmark's generator): `groups`
prompts x K samples with ~8 KB of reasoning text each (about 8 GB of text for 1M samples), one part
per 100k samples, and a judgment for every sample. Then, in a fresh process, the growth step
`prompts.limit` +10% is planned the way `factory run` plans it: SampleStage.plan (the missing
(prompt_id, sample_idx) keys) and JudgeStage.plan (the stored samples not yet judged). Planning
reads key and status columns only, never the text. Goals: < 10 s and peak RSS < 1 GiB.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import polars as pl
import pyarrow.parquet as pq
import synth

from factory.rundir.schemas import JUDGMENTS, SAMPLES
from factory.rundir.store import RunStore


def make_run(root: Path, groups: int, k: int, repeat: int, chunk: int = 12_500) -> None:
    store = RunStore(str(root))
    prompts = []
    for start in range(0, groups, chunk):
        scored, chunk_prompts = synth.scored_frame(min(chunk, groups - start), k, seed=start, first_group=start,
                                                   reasoning_repeat=repeat)  # fmt: skip
        now = time.time()
        samples = scored.select(
            "prompt_id", "sample_idx", pl.lit(synth.SAMPLER_FP).alias("sampler_fp"), "reasoning", "answer",
            "completion_tokens", "finish_reason", "error", pl.lit(now).alias("created_at"),
        )  # fmt: skip
        store.append("samples", synth._conform(samples, SAMPLES))
        judgments = scored.filter(pl.col("error").is_null()).select(
            "prompt_id", "sample_idx", pl.lit(synth.SAMPLER_FP).alias("sampler_fp"), pl.lit(0, pl.Int64).alias("vote"),
            pl.lit(synth.JUDGE_FP).alias("judge_fp"), pl.lit(now).alias("sample_created_at"), "score", "quality",
            "parse_status", pl.lit(now).alias("created_at"),
        )  # fmt: skip
        store.append("judgments", synth._conform(judgments, JUDGMENTS))
        prompts.append(chunk_prompts)
    # The prompt pool is 10% larger than what is stored: the growth step samples the rest.
    _, extra = synth.scored_frame(groups // 10, k, seed=groups, first_group=groups)
    pool = pl.concat([*prompts, extra]).select(
        "prompt_id", "messages", pl.lit("a mug").alias("product_info"), pl.lit([]).cast(pl.List(pl.Struct(
            {"role": pl.String, "content": pl.String}))).alias("history"), pl.lit("in stock?").alias("question"),
    )  # fmt: skip
    pool.write_parquet(root / "pool.parquet")


def text_bytes(path: Path) -> int:
    """Uncompressed bytes of the reasoning and answer columns, from the Parquet footer (nothing decoded)."""
    meta = pq.ParquetFile(path).metadata
    names = [meta.schema.column(j).name for j in range(meta.num_columns)]
    wanted = [j for j, name in enumerate(names) if name in ("reasoning", "answer")]
    return sum(meta.row_group(i).column(j).total_uncompressed_size for i in range(meta.num_row_groups) for j in wanted)


PLAN = """
import json, sys, time
sys.path[:0] = {paths!r}
import polars as pl
import pyarrow.parquet as pq
import synth
from factory.config import RunConfig
from factory.stages.judge import JudgeStage
from factory.stages.sample import SampleStage
from factory.rundir.store import RunStore

def peak_rss_mib():  # VmHWM starts anew at exec (getrusage's ru_maxrss keeps the parent's peak)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

t0 = time.perf_counter()
store = RunStore({root!r}, create=False)
prompts = pl.read_parquet({pool!r})
cfg = RunConfig()
cfg.sampler.k = {k}
fps = {{"sampler": synth.SAMPLER_FP, "judge": synth.JUDGE_FP}}
t1 = time.perf_counter()
sample_plan = SampleStage(cfg, fps["sampler"], prompts).plan(store)
t2 = time.perf_counter()
judge_plan = JudgeStage(cfg, fps, prompts, "Rate {{answer}} 0-{{scale_max}}.").plan(store)
t3 = time.perf_counter()
print(json.dumps({{"load_prompts_s": t1 - t0, "sample_plan_s": t2 - t1, "judge_plan_s": t3 - t2,
                  "sample_plan_rows": sample_plan.height, "judge_plan_rows": judge_plan.height,
                  "peak_rss_mib": peak_rss_mib()}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", type=int, default=125_000)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--reasoning-repeat", type=int, default=160, help="~50 characters x this, per sample")
    parser.add_argument("--keep", help="make (or reuse) the run directory here instead of a temporary one")
    args = parser.parse_args()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-planning-"))
    try:
        if not (root / "pool.parquet").exists():
            start = time.perf_counter()
            make_run(root, args.groups, args.k, args.reasoning_repeat)
            print(f"made {args.groups * args.k:,} samples in {time.perf_counter() - start:.0f} s")
        store = RunStore(str(root), create=False)
        text = sum(text_bytes(p) for p in (root / "samples").glob("*.parquet"))
        disk = sum(p.stat().st_size for p in (root / "samples").glob("*.parquet"))
        print(f"stored: {args.groups * args.k:,} samples, {text / 1e9:.1f} GB of reasoning text "
              f"({disk / 1e6:.0f} MB of zstd Parquet), {len(store.parts('samples'))} parts")  # fmt: skip
        code = PLAN.format(
            paths=[str(HERE), str(HERE.parent)], root=str(root), pool=str(root / "pool.parquet"), k=args.k
        )
        result = json.loads(
            subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        )
        total = result["sample_plan_s"] + result["judge_plan_s"]
        print(f"growth step +10% prompts, planned in a fresh process: sample plan {result['sample_plan_s']:.2f} s "
              f"({result['sample_plan_rows']:,} keys), judge plan {result['judge_plan_s']:.2f} s "
              f"({result['judge_plan_rows']:,} rows); {total:.2f} s in all (goal < 10 s)")  # fmt: skip
        print(
            f"peak RSS {result['peak_rss_mib']:.0f} MiB (goal < 1024), prompts loaded in "
            f"{result['load_prompts_s']:.2f} s"
        )
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
