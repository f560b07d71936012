"""Filters before judging: the judge requests a plan makes with and without the pre-judge filter, on a
stored demo run (copied; the original is never written). Prints figures; asserts nothing.

    .venv/bin/python bench/bench_prejudge.py [RUN_DIR] [--config conf/demo.yaml] [--rule 80]

The copy's judgments are removed, so the judge stage plans every stored sample again, the way
`factory plan` and `factory run` plan it (JudgeStage.plan through the one usable-samples planner):
once with pairs.filter_before_judge=false (every usable sample, as before issue 16) and once with the
default (only the samples that pass the pair build's judge-free exclusions). With the seed's rule
`pairs.terms=[{source: answer_chars, exclude_above: 80}]` the second number must equal the samples
that survive those exclusions, as the pair kernel counts them.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

import polars as pl

from factory import config
from factory.graph import RunGraph
from factory.pairs import prejudge
from factory.rundir.schemas import SAMPLES
from factory.rundir.store import RunStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", default="runs/demo")
    parser.add_argument("--config", default=str(HERE.parent / "conf" / "demo.yaml"))
    parser.add_argument("--rule", type=float, default=80.0, help="answer_chars exclude_above")
    args = parser.parse_args()
    copy = Path(tempfile.mkdtemp(prefix="bench-prejudge-")) / "run"
    shutil.copytree(args.run_dir, copy, ignore=shutil.ignore_patterns("_lease.json"))
    try:
        store = RunStore(str(copy))
        store.remove("judgments")
        rule = f"pairs.terms=[{{source: answer_chars, exclude_above: {args.rule:g}}}]"
        prompts = store.read("prompts")
        samples = store.read("samples", SAMPLES)
        planned = {}
        for label, extra in (
            ("before (filter_before_judge=false)", ["pairs.filter_before_judge=false"]),
            ("after", []),
        ):
            cfg = config.load(args.config, [f"output_dir={copy}", rule, *extra])
            stage = RunGraph(cfg).stages(prompts)[1]
            t = time.perf_counter()
            work = stage.plan(store)
            planned[label] = (work.height, time.perf_counter() - t, stage.note)
        cfg = config.load(args.config, [f"output_dir={copy}", rule])
        marked = prejudge.passing(samples.filter(pl.col("sample_idx") < cfg.sampler.k), cfg.pairs)
        survivors = marked.filter(pl.col("exclusion").is_null()).height
        print(f"run {args.run_dir}: {samples.height} samples, {prompts.height} prompts; rule: {rule}")
        for label, (n, seconds, note) in planned.items():
            print(f"  judge requests {label:36s} {n:5d}   (plan {seconds * 1000:.0f} ms){'; ' + note if note else ''}")
        before, after = planned["before (filter_before_judge=false)"][0], planned["after"][0]
        print(f"  samples surviving the judge-free exclusions: {survivors} (after == survivors: {after == survivors})")
        if before:
            print(f"  judge requests saved: {before - after} of {before} ({(before - after) / before:.0%})")
        counts = marked["exclusion"].drop_nulls().value_counts(sort=True)
        print("  excluded before judging by reason: " + ", ".join(f"{r} {c}" for r, c in counts.iter_rows()))
    finally:
        shutil.rmtree(copy.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
