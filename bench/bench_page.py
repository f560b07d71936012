"""report/index.html at scale (factory.commands.page): size and write time for a ~15k-pair synthetic run.
Prints what it measured in this one run (wall and this process's CPU seconds: on a shared machine the
CPU time is the steadier figure); asserts nothing about speed.

    .venv/bin/python bench/bench_page.py                      # 21.5k groups x K=8 -> ~15k pairs
    .venv/bin/python bench/bench_page.py --groups 2000        # smaller

Data: bench/synth.py (short texts: a ~50-character reasoning, `--reasoning-repeat` times over, and a
~30-character answer). For each text length, the page is written (to a temporary local run directory,
through RunStore) three ways:
  report   what `factory report` does after its tables: numbers and decisions given (the page's own cost)
  run      the numbers computed by the page (write_page without them; `factory run` hands over its own)
  all      as report, but every pair, dropped group and excluded sample embedded (max_pairs = no cap)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import polars as pl  # noqa: E402
import synth  # noqa: E402

from factory import config as config_mod  # noqa: E402
from factory.commands import report as report_mod  # noqa: E402
from factory.commands import page  # noqa: E402
from factory.rundir.store import RunStore  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--groups", type=int, default=21_500, help="prompts (K=8, drop_ratio 0.3 keeps ~70%% of them)")
    parser.add_argument("--reasoning-repeat", type=int, nargs="+", default=[1, 20])
    args = parser.parse_args()
    for repeat in args.reasoning_repeat:
        scored, prompts = synth.scored_frame(args.groups, k=8, seed=0, reasoning_repeat=repeat)
        judgments = scored.select("parse_status")
        with tempfile.TemporaryDirectory(prefix="bench-page-") as folder:
            store = RunStore(folder)
            cfg = config_mod.load(None, [f"output_dir={folder}", "sampler.k=8"])
            manifest = {
                "config": config_mod.to_dict(cfg),
                "output_dir": folder,
                "parse_status": dict(judgments["parse_status"].value_counts().iter_rows()),
            }
            t = time.perf_counter()
            frames: dict = {}
            numbers = report_mod.build_report(scored, judgments, cfg, None, frames)
            numbers_s = time.perf_counter() - t
            chars = scored.select(pl.col("reasoning").str.len_chars().mean()).item()
            print(
                f"\n{args.groups} groups x K=8, {numbers['pairs']['pairs_kept']} pairs kept, reasoning ~{chars:.0f} "
                "chars "
                f"(report numbers and decisions: {numbers_s:.2f}s)"
            )
            ways = {
                "report": dict(report=numbers, frames=frames, judgments=judgments, prompts=prompts),
                "run": dict(prompts=prompts),
                "all": dict(report=numbers, frames=frames, judgments=judgments, prompts=prompts, max_pairs=10**9),
            }
            for name, kwargs in ways.items():
                cpu = time.process_time()
                info = page.write_page(store, cfg, manifest, scored, **kwargs)
                cpu = time.process_time() - cpu
                print(
                    f"  {name:6} {info['pairs_shown']:>6} of {info['pairs_total']} pairs embedded "
                    f"(+{info['embedded']['pairs'] - info['pairs_shown']} long2short, {info['embedded']['dropped']} "
                    "dropped "
                    f"groups, {info['embedded']['excluded']} excluded samples): "
                    f"{info['bytes'] / 2**20:7.2f} MiB, written in {info['seconds']:.2f}s wall, {cpu:.2f}s CPU"
                )
            print(f"  (report's 3 matplotlib PNGs, for scale: {png_seconds(numbers, cfg):.2f}s)")


def png_seconds(numbers: dict, cfg) -> float:
    t = time.perf_counter()
    report_mod.lengths_png(numbers, cfg), report_mod.margins_png(numbers, cfg), report_mod.quality_png(numbers, cfg)
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
