"""The summary's units say what they count, and `factory pairs` (no engine) prints no pool line."""

from __future__ import annotations

import json

from factory import config as config_mod
from factory.cli import main
from factory.run import run
from factory.commands.summary import run_summary
from tests.fakes import FakeEngine
from tests.synthetic import write_prompts


def cfg(tmp_path, *extra):
    prompts = write_prompts(tmp_path / "prompts.jsonl", 6)
    rubric = tmp_path / "rubric.txt"
    rubric.write_text("Rate {answer} from 0 to {scale_max}.")
    return config_mod.load(
        None,
        [f"output_dir={tmp_path / 'run'}", f"prompts.path={prompts}", "sampler.k=4", f"judge.rubric_file={rubric}",
         "progress_interval_s=60", "pairs.pairing=best_vs_each", *extra],
    )  # fmt: skip


def row(text: str, label: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"| {label}"))


def test_pairs_are_counted_as_pairs_and_groups_as_groups(tmp_path):
    manifest = run(cfg(tmp_path), backend="local", build=lambda _c: FakeEngine())
    text = run_summary(manifest.manifest, manifest.scored)
    counts, groups = manifest["counts"], manifest["pairs"]["groups"]
    kept = row(text, "pairs kept / dropped below delta")
    assert f"{counts['pairs_kept']} / {counts['pairs_dropped']} pairs, from {groups} groups" in kept
    assert counts["pairs_kept"] + counts["pairs_dropped"] > groups  # best_vs_each: more pairs than groups
    assert "pool " in text  # the run started its engine


def test_factory_pairs_prints_no_pool_line(tmp_path, capsys):
    run(cfg(tmp_path), backend="local", build=lambda _c: FakeEngine())
    assert main(["pairs", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "factory pairs summary" in out and "| pool " not in out
    assert "requests sampler / judge" in out and row(out, "requests sampler / judge").split("|")[2].strip() == "0 / 0"
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["pools"] == {}
