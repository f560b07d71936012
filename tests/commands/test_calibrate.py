"""`factory calibrate`: loading the set, agreement counting, the files written, the CLI (slow: real model)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import polars as pl
import pytest

from factory.commands import calibrate
from factory.cli import main
from factory.config import JudgeConfig, RunConfig
from factory.engines.base import Request
from factory.stages import judge
from tests.fakes import FakeEngine

CONF = Path(__file__).resolve().parents[2] / "conf"
RUBRIC = (CONF / "rubrics" / "default_en.txt").read_text().strip()


def reply_judge(rule) -> FakeEngine:
    """A judge that scores a reply by a rule on its text (what a real judge would do with the rubric); counts
    requests. `rule(reply) -> str` returns the judge's raw output (an Exception: an engine error)."""

    def reply(request: Request):
        shown = re.search(r"Host reply:\n(.*?)\n\nYour JSON verdict:", request.messages[0]["content"], re.DOTALL)
        return rule(shown.group(1))

    return FakeEngine(reply=reply, shuffle=False, model_name="reply-judge", concurrent_batches=False)


def test_the_shipped_set_loads_whole():
    rows, invalid = calibrate.load_calibration(str(calibrate.DEFAULT_DATA))
    assert len(rows) == 20 and invalid == []
    assert len({r["id"] for r in rows}) == 20
    for row in rows:
        assert row["better"] != row["worse"]
        assert row["product_info"].startswith("- name:")


def test_bad_rows_are_listed_with_their_reason(tmp_path):
    good = {"id": "a", "product_info": {"name": "Mug"}, "question": "q?", "better": "b", "worse": "w"}
    lines = [
        json.dumps(good),
        json.dumps({**good, "id": "b", "worse": "  "}),
        json.dumps({**good, "id": "c", "product_info": None}),
        json.dumps({**good, "id": "d", "history": "not a list"}),
        json.dumps(good),
        "{not json",
    ]
    path = tmp_path / "cal.jsonl"
    path.write_text("\n".join(lines) + "\n")
    rows, invalid = calibrate.load_calibration(str(path))
    assert [r["id"] for r in rows] == ["a"]
    reasons = [bad["reason"] for bad in invalid]
    assert [bad["row_index"] for bad in invalid] == [1, 2, 3, 4, 5]
    assert "'worse'" in reasons[0] and "'product_info'" in reasons[1] and "history" in reasons[2]
    assert "duplicate id 'a'" in reasons[3] and "not valid JSON" in reasons[4]


def test_plan_judges_both_sides_with_every_vote():
    rows, _ = calibrate.load_calibration(str(calibrate.DEFAULT_DATA), limit=3)
    plan = calibrate.plan_calibration(rows, JudgeConfig(votes=2), RUBRIC)
    assert len(plan) == 3 * 2 * 2
    assert len({p["seed"] for p in plan}) == 12
    first = [p for p in plan if p["prompt_id"] == rows[0]["id"]]
    assert rows[0]["better"] in first[0]["messages"][0]["content"]
    assert rows[0]["worse"] in first[-1]["messages"][0]["content"]


def fake_rule(better_ids: dict[str, str]):
    """A judge that knows the better replies: 90 for a better reply, 30 for a worse one, with the
    outcomes scripted for a few rows: a tie, a disagreement, an unparseable and an engine error."""

    def rule(reply: str):
        row = better_ids.get(reply)
        side = "better" if row else "worse"
        if row == "cal-02" or (side == "worse" and reply.startswith("Totally, vitamin C")):
            return '{"score": 50, "reason": "tie"}'
        if reply in special:
            return special[reply]
        return json.dumps({"score": 90 if side == "better" else 30, "reason": side})

    special: dict[str, object] = {}
    return rule, special


def test_agreement_counts_add_up_and_files_are_written(tmp_path):
    rows, _ = calibrate.load_calibration(str(calibrate.DEFAULT_DATA))
    by_id = {r["id"]: r for r in rows}
    rule, special = fake_rule({r["better"]: r["id"] for r in rows})
    special[by_id["cal-03"]["better"]] = '{"score": 10, "reason": "judge got it wrong"}'  # disagree
    special[by_id["cal-04"]["worse"]] = "I cannot decide."  # unparseable after re-asks -> unscored
    special[by_id["cal-05"]["better"]] = RuntimeError("HTTP 500")  # engine error -> unscored
    engine = reply_judge(rule)
    cfg = RunConfig(output_dir=str(tmp_path / "run"))
    summary = calibrate.run_calibration(cfg, out=str(tmp_path / "cal"), engine=engine)

    assert (summary["agree"], summary["tie"], summary["disagree"], summary["unscored"]) == (16, 1, 1, 2)
    assert summary["agree"] + summary["tie"] + summary["disagree"] + summary["unscored"] == summary["rows"] == 20
    assert summary["agreement"] == pytest.approx(16 / 20)
    assert summary["agreement_of_scored"] == pytest.approx(16 / 18)
    assert summary["parse_status"] == {"ok": 38, "unparseable": 1, "engine_error": 1}
    assert sum(summary["parse_status"].values()) == summary["judgments"] == 40
    # 40 first asks + 2 re-asks of the unparseable one (the engine error is not re-asked)
    assert summary["requests"] == len(engine.requests) == 42
    assert summary["judge_fp"] == judge.judge_fingerprint(cfg.judge, summary["model"], RUBRIC)

    written = json.loads((tmp_path / "cal" / "calibration.json").read_text())
    assert written["agreement"] == summary["agreement"]
    with open(tmp_path / "cal" / "calibration.csv") as handle:
        per_row = {r["id"]: r for r in csv.DictReader(handle)}
    assert len(per_row) == 20
    assert per_row["cal-03"]["outcome"] == "disagree" and per_row["cal-02"]["outcome"] == "tie"
    assert per_row["cal-04"]["outcome"] == "unscored" and per_row["cal-04"]["worse_score"] == ""
    judgments = pl.read_parquet(tmp_path / "cal" / "calibration_judgments.parquet")
    assert judgments.height == 40
    bad = judgments.filter(pl.col("parse_status") == "unparseable")
    assert bad["raw"].to_list() == ["I cannot decide."] and bad["reason"][0]


def test_summary_table_shows_the_figures(tmp_path):
    engine = reply_judge(lambda reply: '{"score": 10, "reason": "same"}')
    summary = calibrate.run_calibration(
        RunConfig(), data=str(calibrate.DEFAULT_DATA), out=str(tmp_path), limit=2, engine=engine
    )
    assert (summary["rows"], summary["tie"], summary["agreement"]) == (2, 2, 0.0)
    text = calibrate.summary_table(summary)
    assert "0 / 2 / 0 / 0" in text and "ok 4" in text


def test_cli_bad_override_is_a_config_error(capsys):
    assert main(["calibrate", "judge.vots=3"]) == 2
    assert "judge.votes" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_on_the_embedded_model(tmp_path, capsys):
    """The real command on 2 rows with the embedded SmolLM2 judge (tiny max_tokens)."""
    out = tmp_path / "cal"
    code = main(
        ["calibrate", str(CONF / "demo.yaml"), "judge.sampling.max_tokens=16", "judge.max_reasks=0",
         "--limit", "2", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    summary = json.loads((out / "calibration.json").read_text())
    assert summary["rows"] == 2 and summary["judgments"] == 4 and summary["requests"] == 4
    assert summary["agree"] + summary["tie"] + summary["disagree"] + summary["unscored"] == 2
    assert sum(summary["parse_status"].values()) == 4
    assert "agreement (all rows)" in capsys.readouterr().out


def group_judge(score_of) -> FakeEngine:
    """A group judge: each [Answer X] block of the host reply scored by `score_of(answer)`; counts requests."""

    def reply(request: Request):
        shown = re.search(r"Host reply:\n(.*?)\n\nYour JSON verdict:", request.messages[0]["content"], re.DOTALL)
        blocks = re.findall(r"\[Answer ([A-Z]+)\]\n(.*?)(?=\n\n\[Answer |\Z)", shown.group(1), re.DOTALL)
        return json.dumps({label: {"score": score_of(answer), "reason": "r"} for label, answer in blocks})

    return FakeEngine(reply=reply, shuffle=False, model_name="group-judge")


@pytest.mark.parametrize("orders", [1, 2])
def test_group_mode_judges_both_replies_in_one_request_per_order(tmp_path, orders):
    rows, _ = calibrate.load_calibration(str(calibrate.DEFAULT_DATA))
    better = {r["better"] for r in rows}
    engine = group_judge(lambda answer: 90 if answer in better else 20)
    cfg = RunConfig(output_dir=str(tmp_path / "run"))
    cfg.judge.mode, cfg.judge.orders = "group", orders
    summary = calibrate.run_calibration(cfg, out=str(tmp_path / "cal"), engine=engine)
    assert summary["requests"] == len(engine.requests) == 20 * orders  # one request per row and order
    assert summary["judgments"] == 40 * orders and summary["agree"] == 20 and summary["agreement"] == 1.0
    # the fake bills 10 prompt tokens a request: a group request shares them over its two replies
    assert summary["prompt_tokens"] == 10 * 20 * orders and summary["prompt_tokens_per_judgment"] == 5
    shown = [
        re.findall(
            r"\[Answer ([A-Z]+)\]\n(.*?)(?=\n\n\[Answer |\n\nYour JSON verdict:)", r.messages[0]["content"], re.DOTALL
        )
        for r in engine.requests
    ]
    firsts = [blocks[0][1] in better for blocks in shown[:20]]
    assert 0 < sum(firsts) < 20  # the better reply is not always shown first: the order is shuffled
    assert "group" in calibrate.summary_table(summary)
