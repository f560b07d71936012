"""The `factory` command. `python -m factory.cli ...` and `factory ...` run the same `main`, so the
same call works on a laptop and as the entry point of `ray job submit`.

    factory run CONFIG [key=value ...]     sample -> judge -> pair; resumes what is stored
    factory pairs RUN_DIR [key=value ...]  rebuild pairs/ and sft/ from what is stored, no LLM call
    factory keys                           every config key with its default and help
"""

from __future__ import annotations

import argparse
import logging
import sys

from factory.config import ConfigError


def _run(args: argparse.Namespace) -> int:
    from factory import config, pipeline, summary

    cfg = config.load(args.config, args.overrides)
    manifest = pipeline.run(cfg)
    print(summary.run_summary(manifest, manifest.pop("_scored")))
    return 0


def _pairs(args: argparse.Namespace) -> int:
    from factory import rebuild, summary

    manifest, scored = rebuild.rebuild_pairs(args.run_dir, args.overrides)
    print(summary.run_summary(manifest, scored))
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
    run.set_defaults(func=_run)
    pairs = sub.add_parser("pairs", help="rebuild pairs/ and sft/ from stored samples and judgments (no LLM call)")
    pairs.add_argument("run_dir")
    pairs.add_argument("overrides", nargs="*", help="key=value overrides, e.g. pairs.w_len=0.4")
    pairs.set_defaults(func=_pairs)
    keys = sub.add_parser("keys", help="list every config key with its default and help")
    keys.set_defaults(func=_keys)
    return top


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"factory: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
