"""conf/live_zh.yaml (issue 25: the source's own Chinese setting) end to end on the tests' fake engine:
prompts -> samples -> judgments -> pairs (the 80-character rule, repeats of the host's earlier turn) ->
export under the student's template -> report page, every stage on Chinese text."""

import json
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from factory import config
from factory.engines.base import Completion, Request
from factory.stages.flag import INSTRUCTIONS

ROOT = Path(__file__).resolve().parents[2]
LIVE_ZH = ROOT / "conf" / "live_zh.yaml"
FILLER = "这款宝贝真的很不错哦"  # 10 characters, 30 UTF-8 bytes


def reply_of(answer_chars: int, seed: int) -> str:
    """A host reply of exactly `answer_chars` characters, its own per seed (Chinese characters are three
    UTF-8 bytes each: a byte count would be about three times it)."""
    text = f"家人{seed % 10**6:06d}，" + FILLER * 9
    return text[:answer_chars]


def last_host_turn(request: Request) -> str | None:
    lines = [line for m in request.messages for line in m["content"].splitlines() if line.startswith("主播: ")]
    return lines[-1][len("主播: ") :] if lines else None


def zh_reply(request: Request) -> Completion:
    """The teacher: reasoning apart with its own token count (as R1's API returns it), and by the seed an
    answer of 80 characters (kept), 81 (over the rule), 20, or the host's earlier turn again. The judge:
    a score parsed from text (structured: false), higher for shorter replies."""
    text = request.messages[0]["content"] if len(request.messages) < 3 else ""
    if "你是一名严格的评审" in text:
        answer = text.rsplit("主播回复：", 1)[1].split("你的 JSON 评判", 1)[0].strip()
        return Completion(
            request.tag,
            json.dumps({"score": 100 - len(answer) // 2, "reason": "回复简洁"}, ensure_ascii=False),
            None,
            "stop",
            50,
            12,
        )
    text = request.messages[-1]["content"]
    kind = request.seed % 4
    seed = request.seed
    answer = {
        0: reply_of(80, seed),
        1: reply_of(81, seed),
        2: reply_of(20, seed),
        3: last_host_turn(request) or reply_of(30, seed),
    }[kind]
    assert text.endswith(INSTRUCTIONS[("lines", "zh")])  # sampler.can_answer asked for the source's output form
    # sampler.can_answer (the line format): the flag first, by the seed: yes, no (which these replies contradict:
    # none refers the viewer to customer service), or no flag line at all
    flag = {0: "能回答: 是\n", 1: "能回答: 否\n", 2: ""}[(request.seed // 4) % 3]
    reasoning = "观众问的是商品信息，" * (1 + request.seed % 5)
    content = flag + answer
    tokens = len(content) + len(reasoning)  # one token per character, a stand-in for a Chinese tokenizer
    return Completion(request.tag, content, reasoning, "stop", 200, tokens, len(reasoning), 0.001)


@pytest.fixture(scope="module")
def live_run(tmp_path_factory):
    from factory.run import run
    from tests.fakes import FakeEngine

    out = tmp_path_factory.mktemp("live_zh") / "run"
    cfg = config.load(
        LIVE_ZH,
        [f"output_dir={out}", "prompts.limit=40", "sampler.k=4", "progress_interval_s=60",
         # the fake engine in place of the API: no key, no server
         "sampler.engine.api_key_env=''", "judge.engine.api_key_env=''", "sampler.engine.base_url=http://127.0.0.1:9/v1",
         "judge.engine.base_url=http://127.0.0.1:9/v1"],
    )  # fmt: skip
    engine = FakeEngine(reply=zh_reply)
    manifest = run(cfg, backend="local", build=lambda _cfg: engine, command="factory run live_zh test")
    return cfg, out, manifest


def test_the_prompt_set_is_the_sources_shape_and_made_by_its_script(tmp_path):
    made = tmp_path / "live_zh.jsonl"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_live_zh.py"), str(made)], check=True, capture_output=True
    )
    assert (
        made.read_bytes() == (ROOT / "conf" / "data" / "live_zh.jsonl").read_bytes()
    )  # deterministic, committed as made
    rows = [json.loads(line) for line in made.read_text(encoding="utf-8").splitlines()]
    assert 200 <= len(rows) <= 500
    kinds = {r["question_kind"] for r in rows}
    assert {"answerable", "partial", "unanswerable", "subsidy", "digital_human", "ordered"} <= kinds
    assert len({r["category"] for r in rows}) >= 5
    multi = [r for r in rows if r["history"]]
    assert len(multi) > len(rows) / 3 and {t["role"] for r in multi for t in r["history"]} == {"观众", "主播"}
    assert any("商品2" in r["product_info"] for r in rows)  # several products in one prompt
    assert {r["answerable"] for r in rows} == {"yes", "no", ""}
    host = (ROOT / "conf" / "prompts" / "host_system_zh.txt").read_text(encoding="utf-8")
    for rule in ("80个字", "家人", "亲", "宝宝", "逗号和句号", "下单", "数字人", "国补", "商品页", "不要重复", "客服"):
        assert rule in host, rule  # appendix B's host rules


def test_every_stage_handles_the_chinese_text(live_run):
    cfg, out, manifest = live_run
    prompts = pl.read_parquet(out / "prompts")
    assert prompts.height == 40 and manifest["counts"]["prompts_invalid"] == 0
    multi = prompts.filter(pl.col("history").list.len() > 0)
    user = multi["messages"][0][-1]["content"]
    assert "对话历史：\n观众: " in user and "\n主播: " in user  # the source's roles, shown by prompts.speakers
    alone = prompts.filter(pl.col("history").list.len() == 0)["messages"][0][-1]["content"]
    assert "对话历史" not in alone and "(none)" not in alone

    samples = pl.read_parquet(out / "samples")
    assert samples.height == 160 and samples["error"].null_count() == 160
    # tokens: the engine's counts (of what was decoded: the flag line too), reasoning apart; characters: the
    # answer's, not its bytes (issue 25's flag: the flag line was added to the fake teacher's reply)
    assert (
        samples["completion_tokens"] == samples["text"].str.len_chars() + samples["reasoning"].str.len_chars()
    ).all()
    # the teacher's flag apart from its reply: the answer is the reply alone
    flagged = samples["text"].str.starts_with("能回答: ")
    assert samples.filter(flagged)["can_answer"].null_count() == 0
    assert samples.filter(~flagged)["can_answer"].is_null().all()
    assert (samples.filter(flagged)["text"].str.split("\n").list.get(1) == samples.filter(flagged)["answer"]).all()
    counts = manifest["counts"]
    assert counts["can_answer_unparsed"] == int((~flagged).sum()) > 0
    assert counts["can_answer_yes"] + counts["can_answer_no"] + counts["can_answer_unparsed"] == counts["samples_ok"]
    assert (samples["reasoning_tokens"] == samples["reasoning"].str.len_chars()).all()
    assert set(samples["answer"].str.len_chars().to_list()) >= {80, 81, 20}

    judgments = pl.read_parquet(out / "judgments")
    assert (judgments["parse_status"] == "ok").all()

    # The 80-character rule on Chinese text: 81 characters excluded, 80 (240 bytes) kept, counted before judging
    pairs_stats = manifest["pairs"]
    over = samples.filter(pl.col("answer").str.len_chars() > 80).height
    assert over > 0 and pairs_stats["samples_excluded"]["answer_chars"] == over
    judged = judgments.select("prompt_id", "sample_idx").unique()
    eighty = samples.filter((pl.col("answer").str.len_chars() == 80) & pl.col("can_answer").ne_missing(False))
    eighty = eighty.select("prompt_id", "sample_idx")
    assert eighty.join(judged, on=["prompt_id", "sample_idx"], how="anti").height == 0  # all judged
    assert (
        samples.filter(pl.col("answer").str.len_chars() > 80)
        .join(judged, on=["prompt_id", "sample_idx"], how="semi")
        .height
        == 0
    )
    # a repeat of the host's earlier turn, excluded under its name
    history = prompts.select(
        "prompt_id",
        pl.col("history")
        .list.eval(pl.element().filter(pl.element().struct.field("role") == "assistant").struct.field("content"))
        .alias("host"),
    )
    repeats = samples.join(history, on="prompt_id").filter(pl.col("host").list.contains(pl.col("answer")))
    assert repeats.height > 0 and pairs_stats["samples_excluded"]["repeats_history"] == repeats.height
    assert repeats.join(judged, on=["prompt_id", "sample_idx"], how="semi").height == 0  # never sent to the judge

    # the flag that contradicts its reply ("cannot answer", then an answer): excluded under its name, never judged
    contradicting = samples.filter(pl.col("can_answer").eq_missing(False))
    assert contradicting.join(judged, on=["prompt_id", "sample_idx"], how="semi").height == 0
    earlier = contradicting.join(repeats, on=["prompt_id", "sample_idx"], how="anti")
    earlier = earlier.filter(pl.col("answer").str.len_chars() <= 80)  # not already out under an earlier term
    assert pairs_stats["samples_excluded"]["flag_contradiction"] == earlier.height > 0
    # the flag against the hand label (verifiers.flag, rule can_answer): its agreement in the manifest
    assert manifest["judges"]["verify_flag"]["ok"] > 0 and 0 <= manifest["judges"]["verify_flag"]["mean"] <= 1

    pairs = pl.read_parquet(out / "pairs")
    assert pairs.height > 0
    for side in ("chosen", "rejected"):
        assert all(len(m[0]["content"].split("</think>")[-1].strip()) <= 80 for m in pairs[side].to_list())
    assert re.search(r"[\u4e00-\u9fff]", pairs["prompt"][0][-1]["content"])

    export = pl.read_parquet(out / "export" / "r1_distill_qwen" / "*.parquet")
    assert export.height == pairs.height
    assert all(p.endswith("<｜Assistant｜>") and "观众弹幕：" in p for p in export["prompt"])
    assert all(c.startswith("<think>") and c.endswith("<｜end▁of▁sentence｜>") for c in export["chosen"])
    balance = pairs_stats["balance"]["by_value"]  # pairs.balance by the product category
    assert len(balance) >= 3 and sum(v["kept"] for v in balance.values()) == pairs.height


def test_the_report_page_renders_the_chinese_text(live_run):
    from factory.commands import page, report

    cfg, out, _ = live_run
    text, numbers, inputs = report.run_report(str(out))
    page.write_page(**inputs)
    html = (out / "report" / "index.html").read_text(encoding="utf-8")
    answers = pl.read_parquet(out / "pairs")["chosen"].to_list()
    shown = answers[0][0]["content"].split("</think>")[-1].strip()
    assert shown in html and "观众弹幕" in html  # the text itself, not mojibake or escapes
    assert "answer_chars" in text and "repeats_history" in text


# -- the Chinese calibration set: cases where the right score is known, appendix B's rules among them ----
CALIBRATION_ZH = ROOT / "conf" / "data" / "calibration_zh.jsonl"


def test_the_chinese_calibration_set_covers_the_host_rules_and_its_better_replies_keep_them():
    from factory.commands import calibrate

    rows, invalid = calibrate.load_calibration(str(CALIBRATION_ZH))
    assert invalid == [] and len(rows) >= 15
    rules = {
        json.loads(line)["rule"].split("：")[0] for line in CALIBRATION_ZH.read_text(encoding="utf-8").splitlines()
    }
    assert {"长度", "国补", "下单", "数字人", "不重复", "标点", "客服", "事实", "链接号"} <= rules
    for row in rows:  # the better reply keeps the mechanical rules: <= 80 characters, only ， and 。
        assert len(row["better"]) <= 80 and not re.search(r"[！？!?…、；]", row["better"]), row["id"]
    assert any(len(r["worse"]) > 80 for r in rows) and any("！" in r["worse"] for r in rows)


def test_factory_calibrate_runs_the_chinese_set_with_the_live_zh_judge(tmp_path):
    from factory.commands import calibrate
    from tests.fakes import FakeEngine

    rows, _ = calibrate.load_calibration(str(CALIBRATION_ZH))
    better = {r["better"] for r in rows}

    def judge(request: Request) -> str:  # the rubric's own slot for the reply; text output (structured: false)
        content = request.messages[0]["content"]
        assert content.startswith("你是一名严格的评审")
        shown = content.rsplit("主播回复：\n", 1)[1].split("\n\n你的 JSON 评判", 1)[0]
        return f'好的，评判如下：{{"score": {90 if shown in better else 30}, "reason": "理由"}}'

    cfg = config.load(LIVE_ZH, [f"output_dir={tmp_path / 'run'}", "judge.engine.api_key_env=''"])
    engine = FakeEngine(reply=judge, shuffle=False, concurrent_batches=False)
    summary = calibrate.run_calibration(cfg, data=str(CALIBRATION_ZH), out=str(tmp_path / "cal"), engine=engine)
    assert (summary["rows"], summary["agree"], summary["agreement"]) == (len(rows), len(rows), 1.0)
    assert summary["parse_status"] == {"ok": 2 * len(rows)}
    assert "cal-zh-10" in (tmp_path / "cal" / "calibration.csv").read_text(encoding="utf-8")


# -- the judge shows the history under the configured speakers (prompts.speakers: 观众 / 主播) ------------
def test_the_chinese_judge_shows_the_history_under_the_configured_speakers(live_run):
    from factory.graph import GenRMNode, RunGraph
    from factory.stages import judge as judge_stage

    cfg, out, _ = live_run
    prompts = pl.read_parquet(out / "prompts")
    multi = prompts.filter(pl.col("history").list.len() > 0).head(1)
    node = GenRMNode.of(cfg)
    stage = judge_stage.JudgeStage(cfg, {"judge": node.fingerprint, "sampler": "s"}, multi, node.rubric)
    work = {"prompt_id": multi["prompt_id"][0], "sample_idx": 0, "sampler_fp": "s", "vote": 0, "answer": "亲，有的哦",
            "reasoning": ""}  # fmt: skip
    shown = stage.render([work])[0]["messages"][0]["content"]
    history = shown.split("对话历史：\n", 1)[1].split("\n\n", 1)[0]
    turns = multi["history"][0].to_list()
    assert history.splitlines()[0] == f"观众: {turns[0]['content']}" and "\n主播: " in history
    assert "Viewer:" not in shown and "Host:" not in shown
    # the same with a group judge and in factory calibrate's requests
    prompt = stage.prompts[work["prompt_id"]]
    group = judge_stage.render_group(node.rubric, prompt, [work], cfg.judge, stage.speakers)
    assert "\n主播: " in group[0]["content"].split("对话历史：\n", 1)[1]
    # the names the judge saw are part of its fingerprint (only when set): other names, another request
    other = config.load(LIVE_ZH, [f"output_dir={out}", "prompts.speakers.user=弹幕用户"])
    assert GenRMNode.of(other).fingerprint != node.fingerprint
    assert RunGraph(cfg).fingerprints["judge"] == node.fingerprint


def test_factory_calibrate_shows_the_configured_speakers(tmp_path):
    from factory.commands import calibrate

    rows, _ = calibrate.load_calibration(str(CALIBRATION_ZH))
    cfg = config.load(LIVE_ZH, [f"output_dir={tmp_path / 'run'}", "judge.engine.api_key_env=''"])
    from factory.graph import GenRMNode

    plan = calibrate.plan_calibration(rows, cfg.judge, GenRMNode.of(cfg).rubric, dict(cfg.prompts.speakers))
    with_history = [p for p, r in zip(plan[::2], rows) if r["history"]]
    assert with_history and all("\n主播: " in p["messages"][0]["content"] for p in with_history)
    assert not any("Host: " in p["messages"][0]["content"] for p in plan)
