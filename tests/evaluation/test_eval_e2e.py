"""`factory eval conf/eval_demo.yaml` on the embedded model and local Ray (4 held-out prompts, two max_tokens
settings), then a rerun and a dry run: the table, its files, and 0 requests once everything is stored."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from factory.cli import main

pytestmark = pytest.mark.slow

EVAL_DEMO = Path(__file__).resolve().parents[2] / "conf" / "eval_demo.yaml"


@pytest.fixture(scope="module")
def eval_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "eval"
    args = [
        "eval", str(EVAL_DEMO), f"eval.output_dir={out}", "eval.limit=4",
        "eval.candidates.long.sampling.max_tokens=48", "eval.candidates.short.sampling.max_tokens=16",
        "judge.sampling.max_tokens=48", "progress_interval_s=5",
    ]  # fmt: skip
    assert main(args) == 0
    first = json.loads((out / "manifest.json").read_text())
    assert main(args) == 0
    second = json.loads((out / "manifest.json").read_text())
    assert main([*args, "--dry-run"]) == 0
    plan = json.loads((out / "plan.json").read_text())
    return out, first, second, plan


def test_both_candidates_are_sampled_once_and_judged(eval_dir):
    _, first, _, _ = eval_dir
    requests = first["requests"]
    assert requests["sample:long"] == requests["sample:short"] == 4
    # a judge reply cut at max_tokens is re-asked (judge.max_reasks, default 2): at most 3 requests a sample
    assert 0 < requests["judge:long"] <= 4 * 3 and 0 < requests["judge:short"] <= 4 * 3
    assert list(first["pools"]) == ["sample:long+sample:short+judge:long+judge:short"]  # one engine, one model load


def test_the_table_has_a_row_per_model_in_the_papers_form(eval_dir):
    out, _, _, _ = eval_dir
    table = pl.read_parquet(out / "report" / "eval.parquet")
    assert table["model"].to_list() == ["long", "short"] and table["prompts"].to_list() == [4, 4]
    assert table["max_tokens"].to_list()[1] <= 16 and table["max_rt_s"][1] <= 16 / 62.5
    assert table["score_diff"][0] is None and table["paired_prompts"][1] is not None
    text = (out / "report" / "eval.md").read_text()
    assert "| long " in text and "| short " in text and "answerable agree" in text and "vs long (95% CI)" in text
    assert (out / "report" / "score_vs_rt.png").stat().st_size > 1000


def test_a_rerun_makes_no_request_and_a_plan_plans_none(eval_dir):
    _, first, second, plan = eval_dir
    assert set(second["requests"].values()) == {0}
    assert second["fingerprints"] == first["fingerprints"]
    assert plan["total"]["requests"] == 0 and plan["requests_sent"] == 0
