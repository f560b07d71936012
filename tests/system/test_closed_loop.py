"""The closed loop's mechanics at toy size (bench/closed_loop.py): a synthetic run's pairs, exported under the
student's template, train the 135M student for 2 steps with jobs/train_dpo.py; `factory eval` samples base and
trained on the vLLM engine (CPU) on 2 held-out prompts, the embedded judge scores them, the table is written.
With --stages sft,dpo: filter-long SFT, DP-DPO from that checkpoint (its reference), the chosen-only SFT and the
brief base as control rows, all in one paired table. The numbers say nothing at this size; the test is that
every step runs and hands over to the next."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from tests.synthetic import make_run

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.vllm,
    pytest.mark.skipif(
        not all(importlib.util.find_spec(m) for m in ("vllm", "trl", "gguf")),
        reason="needs the vllm tier (vllm, trl, gguf)",
    ),
]


def test_pairs_train_a_checkpoint_that_factory_eval_compares_with_the_base(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    import closed_loop

    run = tmp_path / "run"
    make_run(str(run), n_prompts=6, k=4)
    out = tmp_path / "loop"
    summary = closed_loop.main([
        "--pairs-from", str(run), "--out", str(out), "--steps", "2", "--sft-steps", "1", "--batch-size", "2",
        "--eval-prompts", "2", "--max-tokens", "16", "--threads", "2",
    ])  # fmt: skip

    trained = out / "trained"
    record = json.loads((trained / "train_dpo.json").read_text())
    assert (trained / "config.json").is_file() and list(trained.glob("*.safetensors"))
    assert record["steps"] == 2 and record["pairs"] == summary["pairs"] > 0
    assert record["sft_term"] != "none"  # the SFT term on chosen is on
    export = json.loads((run / "export" / "student" / "_export.json").read_text())
    assert export["rows"] == summary["pairs"] and export["format"] == "standard"

    models = {row["model"]: row for row in summary["models"]}
    assert set(models) == {"base", "sft_chosen", "trained", "base_brief"}  # base_brief: its own eval folder
    for row in models.values():  # each sampled on both held-out prompts, through the vLLM engine, and judged
        assert row["prompts"] == 2 and row["samples"] == 2 and row["samples_failed"] == 0
        assert row["judgments"] == 2 and row["mean_tokens"] > 0
    scored = min(models["base"]["prompts_scored"], models["trained"]["prompts_scored"])
    assert models["trained"]["paired_prompts"] == scored  # paired by prompt: those both candidates have a score for
    table = (out / "closed_loop.md").read_text()
    assert "| base |" in table and "| trained |" in table and "trained / base tokens" in table
    assert "| sft_chosen |" in table and "| base_brief |" in table and "Lost prompts" in table
    folder = Path(summary["eval_dir"])  # a fresh folder per loop run, under OUT/eval/
    assert folder.parent == out / "eval" and closed_loop.fresh_eval_dir(out) != folder
    eval_json = json.loads((folder / "report" / "eval.json").read_text())
    assert [m["model"] for m in eval_json["models"]] == ["base", "sft_chosen", "trained"]
    assert set(summary["verdict"]) == {"model", "token_ratio", "token_ratio_high", "tokens_goal", "non_inferior",
                                       "margin", "goal_met"}  # fmt: skip
    rows = {r["model"]: r for r in summary["table"]["rows"]}
    assert list(rows) == ["base", "base_brief", "sft_chosen", "trained"]
    paired = len(summary["table"]["paired_ids"])
    for r in rows.values():  # the same paired prompts in every row; the rest counted by reason, per model
        assert r["paired"] == paired and r["prompts"] == 2
        assert all(paired + n <= 2 for n in r["lost"].values())
    assert summary["training"]["sft_chosen"]["recipe"] == "sft" and summary["training"]["trained"]["recipe"] == "dpo"


def test_two_stages_train_sft_then_dpo_from_it_and_table_every_arm(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    import closed_loop

    run = tmp_path / "run"
    make_run(str(run), n_prompts=6, k=4)
    out = tmp_path / "loop"
    summary = closed_loop.main([
        "--pairs-from", str(run), "--out", str(out), "--stages", "sft,dpo", "--steps", "1", "--sft-steps", "1",
        "--batch-size", "2", "--eval-prompts", "2", "--max-tokens", "16", "--threads", "2",
    ])  # fmt: skip
    sft = json.loads((out / "sft" / "train_sft.json").read_text())
    assert sft["format"] == "prompt-completion" and sft["data"].endswith("filter_long.student")
    dpo = json.loads((out / "sft_dpo" / "train_dpo.json").read_text())
    assert dpo["base"] == str(out / "sft") and dpo["reference"] == str(out / "sft")  # DPO from the SFT checkpoint
    rows = [r["model"] for r in summary["table"]["rows"]]
    assert rows == ["base", "base_brief", "sft_chosen", "sft", "sft_dpo"]
    assert summary["verdict"]["model"] == "sft_dpo"
    table = (out / "closed_loop.md").read_text()
    for name in rows:
        assert f"| {name} |" in table
