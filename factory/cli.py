"""The `factory` command. `python -m factory.cli ...` and `factory ...` run the same `main`, so the
same call works on a laptop and as the entry point of `ray job submit`.

    factory run CONFIG [key=value ...]     sample -> judge -> pair; resumes what is stored
    factory pairs RUN_DIR [key=value ...]  rebuild pairs/ and sft/ from what is stored, no LLM call
    factory pairs RUN_DIR --compare        the selection strategies side by side (no LLM call, nothing written)
    factory sweep RUN_DIR [key=value ...]  w_len x drop_ratio grid -> sweep/ (csv + heatmaps), no LLM call
    factory report RUN_DIR [key=value ...] tables + PNG plots + index.html -> report/, no LLM call
    factory report A --against B           the report of A, with A's and B's tag and dimension shares side by side
    factory calibrate [CONFIG] [key=value ...] [--data F] [--out D]   judge agreement on better/worse replies
    factory compact RUN_DIR                merge each table's parts into few large files
    factory doctor RUN_DIR                 read every part; move unreadable ones aside (quarantine)
    factory keys                           every config key with its default and help
    factory plan CONFIG [key=value ...]    requests, tokens, USD, GPU-hours of a run; no request (= run --dry-run)
    factory eval CONFIG [key=value ...]    candidate models on held-out prompts, judged -> EVAL_DIR/report/
    factory eval CONFIG --checkpoints TRAIN_OUT [--like NAME]   + every saved checkpoint, per-checkpoint table
    factory export RUN_DIR --template PATH [--name NAME] [key=value ...]   pairs under the student's chat template
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from factory.config import ConfigError


def _run(args: argparse.Namespace) -> int:
    from factory import config
    from factory.commands import summary
    from factory.run import run

    if getattr(args, "dry_run", False):
        return _plan(args)
    cfg = config.load(args.config, args.overrides)
    result = run(cfg, take_over=args.take_over, allow_fewer_prompts=args.allow_fewer_prompts)
    print(summary.run_summary(result.manifest, result.scored))
    return 0


def _live_note(run_dir: str, what: str) -> None:
    """Read-only commands say so when a run is writing the directory right now."""
    from factory.rundir.lease import note_if_live
    from factory.rundir.store import RunStore

    try:
        note = note_if_live(RunStore(run_dir, create=False), what)
    except Exception:  # the command itself reports a directory it cannot read
        return
    if note:
        print(note, file=sys.stderr)


def _pairs(args: argparse.Namespace) -> int:
    from factory.commands import rebuild
    from factory.commands import summary

    _live_note(args.run_dir, "these pairs are built from the rows stored so far; the run rewrites pairs/ when it ends")
    if args.compare:  # issue 16: the strategies side by side, nothing written
        from factory.commands.report import run_compare

        print(run_compare(args.run_dir, args.overrides))
        return 0
    if args.long_prompts:  # issue 16: long2short as the source did it, step 1
        from factory.commands.report import write_long_prompts

        print(write_long_prompts(args.run_dir, args.long_prompts, args.overrides))
        return 0
    manifest, scored = rebuild.rebuild_pairs(args.run_dir, args.overrides)
    print(summary.run_summary(manifest, scored, "factory pairs summary"))
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from factory.commands import sweep

    _live_note(args.run_dir, "this sweep covers the rows stored so far")
    table, info = sweep.run_sweep(args.run_dir, args.overrides)
    print(sweep.format_table(table))
    if info["crossing_w_len"] is not None:
        print(f"token gap and quality gap (each scaled to its max) cross at w_len ~ {info['crossing_w_len']:.2f}")
    print(f"{info['points']} points; load {info['seconds']['load']}s, table {info['seconds']['table']}s, "
          f"plots {info['seconds']['plots']}s; 0 LLM requests")  # fmt: skip
    print("\n".join(info["files"]))
    return 0


def _report(args: argparse.Namespace) -> int:
    from factory.commands import page, report

    _live_note(args.run_dir, "this report covers the rows stored so far")
    if args.max_pairs is not None and args.max_pairs < 1:
        raise ConfigError(f"--max-pairs: must be at least 1, got {args.max_pairs}")
    text, _, inputs = report.run_report(args.run_dir, args.overrides, args.against)
    page.write_page(**inputs, max_pairs=page.MAX_PAIRS if args.max_pairs is None else args.max_pairs)
    print(text)
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from factory import config
    from factory.commands import calibrate

    # CONFIG is optional: a first argument of the form key=value is an override, not a file.
    overrides = list(args.overrides)
    path = args.config
    if path is not None and "=" in path and not os.path.exists(path):
        overrides.insert(0, path)
        path = None
    cfg = config.load(path, overrides)
    summary = calibrate.run_calibration(cfg, data=args.data, out=args.out, limit=args.limit)
    print(calibrate.summary_table(summary))
    return 0


def _compact(args: argparse.Namespace) -> int:
    from factory.rundir import compact
    from factory.config import StoreConfig
    from factory.rundir.lease import Lease
    from factory.commands.rebuild import run_store
    from factory.commands.present import table

    store, _ = run_store(args.run_dir)
    with Lease(store, "factory compact", take_over=args.take_over):
        done = compact.compact(store, args.target_mb or StoreConfig().compact_mb)
    rows = [(name, f"{d['parts_before']} -> {d['parts_after']} parts") for name, d in done.items()]
    print(table(rows or [("tables", "none to compact")], f"factory compact {store.url}"))
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from factory.rundir import doctor
    from factory.rundir.lease import Lease
    from factory.commands.rebuild import run_store
    from factory.commands.present import table

    store, _ = run_store(args.run_dir)
    with Lease(store, "factory doctor", take_over=args.take_over):
        found = doctor.doctor(store)
    if not found:
        print(f"factory doctor: every part of {store.url} reads whole")
        return 0
    rows = [(f"{f['table']}/{f['part']}", f["reason"][:90]) for f in found]
    print(table(rows, f"factory doctor: {len(found)} part(s) quarantined"))
    print(
        f"moved to {store.display(doctor.QUARANTINE)}/; run `factory run` with the same config to request their keys "
        "again"
    )
    return 1


def _export(args: argparse.Namespace) -> int:  # issue 15
    from factory.commands import export

    _live_note(args.run_dir, "this export is built from the pairs stored so far")
    record = export.export_run(args.run_dir, args.template or "", args.name or "", args.overrides)
    print(
        f"factory export: {record['rows']} pairs -> {record['path']}/ (TRL standard format, template "
        f"{record['template']})"
    )
    for folder in record["sft"].values():
        print(f"factory export: {folder['rows']} SFT rows -> {folder['path']}/ (TRL prompt/completion)")
    return 0


def _keys(args: argparse.Namespace) -> int:
    from factory.config import help_table

    for key, default, text in help_table():
        print(f"{key:38} {default:24} {text}")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="factory", description="Rejection-sampling DPO data factory.")
    sub = top.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="sample -> judge -> pairs; resumes what is stored")
    run.add_argument("config", help="YAML config, e.g. conf/demo.yaml")
    run.add_argument("overrides", nargs="*", help="key=value overrides, e.g. sampler.k=8")
    run.add_argument("--dry-run", action="store_true", help="print the plan (as `factory plan`) and send nothing")
    run.add_argument(
        "--take-over", action="store_true", help="take the run directory's lease from a run you know is dead"
    )
    run.add_argument(
        "--allow-fewer-prompts", action="store_true",
        help="replace prompts/, pairs/ and sft/ even when this run has fewer valid prompts than they were built from",
    )  # fmt: skip
    run.set_defaults(func=_run)
    pairs = sub.add_parser("pairs", help="rebuild pairs/ and sft/ from stored samples and judgments (no LLM call)")
    pairs.add_argument("run_dir")
    pairs.add_argument("overrides", nargs="*", help="key=value overrides, e.g. pairs.w_len=0.4")
    pairs.add_argument(
        "--compare", action="store_true", help="print the strategies side by side on the stored samples; write nothing"
    )
    pairs.add_argument(
        "--long-prompts",
        metavar="FILE",
        help="write the prompts whose samples ran long (> pairs.sft_max_tokens) as JSONL, to sample them again "
        "for long2short (factory/pairs/long2short.py); nothing else is written",
    )
    pairs.set_defaults(func=_pairs)
    sweep = sub.add_parser("sweep", help="w_len x drop_ratio grid -> sweep/sweep.csv + heatmaps (no LLM call)")
    sweep.add_argument("run_dir")
    sweep.add_argument("overrides", nargs="*", help="key=value overrides, e.g. sweep.w_len_step=0.05")
    sweep.set_defaults(func=_sweep)
    report = sub.add_parser("report", help="tables and PNG plots of a run -> report/ (no LLM call)")
    report.add_argument("run_dir")
    report.add_argument("overrides", nargs="*", help="key=value overrides, e.g. pairs.strategy=quality")
    report.add_argument(
        "--max-pairs", type=int, default=None,
        help="pairs (and dropped groups, excluded samples) embedded in report/index.html, at most (default 2000)",
    )  # fmt: skip
    report.add_argument(
        "--against", metavar="RUN_B", default=None,
        help="another run directory: its tag and dimension shares beside this run's (nothing is written there)",
    )  # fmt: skip
    report.set_defaults(func=_report)
    cal = sub.add_parser("calibrate", help="judge agreement on the calibration set (better vs worse replies)")
    cal.add_argument("config", nargs="?", help="YAML config whose judge is used (default: built-in defaults)")
    cal.add_argument("overrides", nargs="*", help="key=value overrides, e.g. judge.votes=3")
    cal.add_argument("--data", help="calibration JSONL/Parquet (default: conf/data/calibration.jsonl)")
    cal.add_argument("--out", help="output folder or fsspec URL (default: OUTPUT_DIR/calibration)")
    cal.add_argument("--limit", type=int, help="use only the first N rows")
    cal.set_defaults(func=_calibrate)
    compact = sub.add_parser("compact", help="merge each table's parts into few large files (atomic, resumable)")
    compact.add_argument("run_dir")
    compact.add_argument("--target-mb", type=float, help="size of each merged file, MiB (default: store.compact_mb)")
    compact.add_argument("--take-over", action="store_true", help="take the lease from a run you know is dead")
    compact.set_defaults(func=_compact)
    doc = sub.add_parser(
        "doctor", help="read every part; move unreadable ones to _quarantine/ (a rerun asks again for their keys)"
    )
    doc.add_argument("run_dir")
    doc.add_argument("--take-over", action="store_true", help="take the lease from a run you know is dead")
    doc.set_defaults(func=_doctor)
    exp = sub.add_parser(  # issue 15
        "export",
        help="pairs/ under the student's chat template -> export/<name>/ (TRL standard format, reasoning kept)",
    )
    exp.add_argument("run_dir")
    exp.add_argument("overrides", nargs="*", help="key=value overrides, e.g. export.keep_bos=true")
    exp.add_argument("--template", help="tokenizer folder, tokenizer_config.json or .jinja (default: export.template)")
    exp.add_argument("--name", help="export/<name>/ (default: export.name, else the template's folder or file name)")
    exp.set_defaults(func=_export)
    keys = sub.add_parser("keys", help="list every config key with its default and help")
    keys.set_defaults(func=_keys)
    plan = sub.add_parser("plan", help="requests, tokens, dollars and hours a run would take; sends nothing")
    plan.add_argument("config", help="YAML config, e.g. conf/r1_api.yaml")
    plan.add_argument("overrides", nargs="*", help="key=value overrides, e.g. pairs.target=15000")
    plan.set_defaults(func=_plan)
    ev = sub.add_parser("eval", help="candidate models on held-out prompts, judged: the paper's table + PNG")
    ev.add_argument("config", help="YAML config with an eval: section, e.g. conf/eval_demo.yaml")
    ev.add_argument("overrides", nargs="*", help="key=value overrides, e.g. eval.k=4")
    ev.add_argument("--dry-run", action="store_true", help="print the plan of the eval and send nothing")
    ev.add_argument(
        "--take-over", action="store_true", help="take the eval directory's lease from a run you know is dead"
    )
    ev.add_argument(
        "--checkpoints",
        help="a training output folder: each of its checkpoints (checkpoints/*/ and the final) is a candidate; "
        "report/epochs.md tables them",
    )
    ev.add_argument(
        "--like", help="with --checkpoints: the candidate whose engine and sampling they copy (default: the last)"
    )
    ev.set_defaults(func=_eval)
    return top


def _plan(args: argparse.Namespace) -> int:
    from factory import config
    from factory.commands import plan

    print(plan.format_plan(plan.make_plan(config.load(args.config, args.overrides))))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from factory import config
    from factory.commands import plan
    from factory.evaluation import run as evaluation

    cfg = config.load(args.config, args.overrides)
    points = None
    if args.checkpoints:  # one candidate per checkpoint a recipe saved, and the per-checkpoint table
        from factory.evaluation import checkpoints

        cfg, points = checkpoints.with_checkpoints(cfg, args.checkpoints, args.like or "")
    if args.dry_run:
        print(plan.format_plan(evaluation.eval_plan(cfg)))
        return 0
    result = evaluation.evaluate(cfg, take_over=args.take_over, checkpoints=points)
    print(result["markdown"])
    if points:
        print("\n" + result["epochs"]["markdown"])
    return 0


def main(argv: list[str] | None = None) -> int:
    from factory.executor.budget import BUDGET_EXIT
    from factory.executor.core import BudgetExceeded

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    top = parser()
    args, extra = top.parse_known_args(argv)
    # key=value overrides written after an option (`factory eval CONFIG --dry-run k=v`) land here
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        top.error(f"unrecognized arguments: {' '.join(extra)}")
    from factory.executor import FatalRunError, Interrupted
    from factory.rundir.lease import LeaseHeld
    from factory.rundir.store import CorruptPartError

    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError, CorruptPartError) as exc:
        print(f"factory: error: {exc}", file=sys.stderr)
        return 2
    except BudgetExceeded as exc:
        print(f"factory: {exc}", file=sys.stderr)
        return BUDGET_EXIT
    except LeaseHeld as exc:
        print(f"factory: refused: {exc}", file=sys.stderr)
        return 3
    except FatalRunError as exc:
        print(f"factory: stopped: {exc}", file=sys.stderr)
        return 4
    except Interrupted as exc:
        print(f"factory: {exc}", file=sys.stderr)
        from factory.executor.ray import exit_if_ray_abandoned

        exit_if_ray_abandoned(130)  # Ray's processes were stopped with this one: skip its minute-long teardown
        return 130


if __name__ == "__main__":
    sys.exit(main())
