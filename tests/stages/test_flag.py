"""sampler.can_answer: the teacher's can-answer flag with its reply (factory/stages/flag.py), asked for, parsed
into samples.can_answer, kept apart in the fingerprint."""

import json

import polars as pl
import pytest

from factory.config import ConfigError, EngineConfig, RunConfig, SamplingConfig
from factory.config.judges import CanAnswerConfig
from factory.engines.base import Completion
from factory.stages.flag import INSTRUCTIONS, SCHEMA, form_of, parse_flag
from factory.stages.sample import SampleStage, plan_samples, sample_batch, sampler_fingerprint
from tests.fakes import FakeEngine

PROMPTS = pl.DataFrame(
    {
        "prompt_id": ["a", "b"],
        "messages": [
            [{"role": "system", "content": "host"}, {"role": "user", "content": "x"}],
            [{"role": "user", "content": "y"}],
        ],
    }
)


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("能回答: 否\n亲，这个要问客服哦。", (False, "亲，这个要问客服哦。")),
        ("能回答：是\n\n家人们，3号链接49元哦。", (True, "家人们，3号链接49元哦。")),
        ("能否回答观众问题：不能\n亲，问问客服哈。", (False, "亲，问问客服哈。")),
        ("can_answer: yes\nLink 3 is 49 yuan.", (True, "Link 3 is 49 yuan.")),
        ("能否回答观众问题：能\n主播回复：家人们，3号链接有货哦。", (True, "家人们，3号链接有货哦。")),
        ("**can_answer:** no\nReply: Please ask customer service.", (False, "Please ask customer service.")),
        ("Can answer: NO\nPlease ask customer service.", (False, "Please ask customer service.")),
        ('{"can_answer": true, "reply": "Link 3."}', (True, "Link 3.")),
        ('```json\n{"can_answer": false, "reply": "问客服哦"}\n```', (False, "问客服哦")),
        # not readable in the form: no flag, the text kept whole
        ("Link 3 is 49 yuan.", (None, "Link 3 is 49 yuan.")),
        ("can_answer: maybe\nLink 3.", (None, "can_answer: maybe\nLink 3.")),
        ('{"can_answer": "sometimes", "reply": "x"}', (None, '{"can_answer": "sometimes", "reply": "x"}')),
        ('{"reply": "x"', (None, '{"reply": "x"')),
        ("[1, 2]", (None, "[1, 2]")),
        ("", (None, "")),
    ],
)
def test_the_flag_is_read_in_both_forms_and_an_unreadable_reply_is_kept_whole(answer, expected):
    assert parse_flag(answer) == expected


def test_the_form_follows_the_engines_json_schema_and_the_config():
    assert form_of(CanAnswerConfig(), True) is None  # off by default
    on = CanAnswerConfig(enabled=True)
    assert form_of(on, True).form == "json" and form_of(on, True).schema == SCHEMA
    assert form_of(on, False).form == "lines" and form_of(on, False).schema is None
    zh = form_of(CanAnswerConfig(enabled=True, structured=False, language="zh"), True)
    assert (zh.form, zh.instruction) == ("lines", INSTRUCTIONS[("lines", "zh")])
    assert form_of(CanAnswerConfig(enabled=True, instruction="flag first"), False).instruction == "flag first"
    from factory import config

    with pytest.raises(ConfigError, match="sampler.can_answer.language"):
        config.load(None, ["sampler.can_answer.language=fr"])


def test_the_option_changes_the_fingerprint_and_leaves_it_alone_when_off():
    engine, sampling = EngineConfig(), SamplingConfig(max_tokens=16)
    plain = sampler_fingerprint(engine, sampling, "m", "t")
    assert sampler_fingerprint(engine, sampling, "m", "t", None) == plain
    lines = form_of(CanAnswerConfig(enabled=True, structured=False), True)
    json_form = form_of(CanAnswerConfig(enabled=True), True)
    fps = {plain, sampler_fingerprint(engine, sampling, "m", "t", lines)}
    fps.add(sampler_fingerprint(engine, sampling, "m", "t", json_form))
    assert len(fps) == 3


def test_the_run_graph_fingerprints_the_option():
    from factory import config
    from factory.graph import RunGraph

    api = ["sampler.engine.kind=openai", "sampler.engine.model=m", "sampler.engine.base_url=http://127.0.0.1:9/v1"]
    cfg, on = config.load(None, api), config.load(None, [*api, "sampler.can_answer.enabled=true"])
    assert RunGraph(cfg).flag_form is None and RunGraph(on).flag_form.form == "json"  # openai takes a schema
    assert RunGraph(cfg).sampler_fp != RunGraph(on).sampler_fp


def _rows(form, replies):
    engine = FakeEngine({key: text for key, text in replies.items()}, shuffle=False)
    plan = plan_samples(PROMPTS, None, k=2, sampler_fp="fp", base_seed=0).to_dicts()
    rows = SampleStage(RunConfig(), "fp", PROMPTS, can_answer=form).render(plan)
    out = sample_batch(engine, rows, None, SamplingConfig(max_tokens=64), "fp", form)
    return engine, {(r["prompt_id"], r["sample_idx"]): r for r in out}


def test_each_request_asks_for_the_flag_and_each_row_holds_it_apart_from_the_reply():
    form = form_of(CanAnswerConfig(enabled=True, structured=False, language="zh"), True)
    replies = {
        ("a", 0): "能回答: 是\n家人们，3号链接49元哦。",
        ("a", 1): "<think>商品信息里没有</think>能回答: 否\n亲，这个问题问问客服哈。",
        ("b", 0): "家人们，3号链接49元哦。",  # no flag line
        ("b", 1): RuntimeError("server down"),
    }
    engine, rows = _rows(form, replies)
    asked = {r.tag: r for r in engine.requests}
    assert asked[("a", 0)].messages[0] == {"role": "system", "content": "host"}  # the system prompt as it was
    assert asked[("a", 0)].messages[-1]["content"] == "x\n\n" + form.instruction
    assert asked[("b", 0)].json_schema is None  # the line format: no schema
    assert rows[("a", 0)]["can_answer"] is True and rows[("a", 0)]["answer"] == "家人们，3号链接49元哦。"
    assert rows[("a", 1)]["can_answer"] is False and rows[("a", 1)]["answer"] == "亲，这个问题问问客服哈。"
    assert rows[("a", 1)]["reasoning"] == "商品信息里没有"
    assert rows[("a", 1)]["text"].endswith("能回答: 否\n亲，这个问题问问客服哈。")  # the raw reply stays in text
    assert rows[("b", 0)]["can_answer"] is None and rows[("b", 0)]["answer"] == "家人们，3号链接49元哦。"
    assert rows[("b", 1)]["can_answer"] is None and rows[("b", 1)]["error"] == "server down"
    # the prompt's own hash: a stored row answers the prompt as before (the instruction is in the fingerprint)
    from factory.rundir.hashing import messages_hash

    assert rows[("a", 0)]["prompt_hash"] == messages_hash(PROMPTS["messages"][0].to_list())


def test_the_stage_renders_the_request_as_sent_so_factory_plan_counts_the_instruction():
    from factory.rundir.hashing import messages_hash

    form = form_of(CanAnswerConfig(enabled=True, structured=False), True)
    plan = plan_samples(PROMPTS, None, k=1, sampler_fp="fp", base_seed=0).to_dicts()
    plain, asked = (
        SampleStage(RunConfig(), "fp", PROMPTS).render(plan),
        SampleStage(RunConfig(), "fp", PROMPTS, can_answer=form).render(plan),
    )
    for before, after, messages in zip(plain, asked, PROMPTS["messages"].to_list()):
        assert after["messages"][-1]["content"] == before["messages"][-1]["content"] + "\n\n" + form.instruction
        assert after["prompt_hash"] == messages_hash(messages)  # what a stored row answers: the prompt's own text


def test_the_json_form_sends_its_schema_where_the_engine_takes_one():
    form = form_of(CanAnswerConfig(enabled=True), True)
    reply = json.dumps({"can_answer": False, "reply": "Please ask customer service."})
    engine, rows = _rows(form, {("a", 0): reply, ("a", 1): "{broken", ("b", 0): reply, ("b", 1): reply})
    assert all(r.json_schema == SCHEMA for r in engine.requests)
    assert rows[("a", 0)]["can_answer"] is False and rows[("a", 0)]["answer"] == "Please ask customer service."
    assert rows[("a", 1)]["can_answer"] is None and rows[("a", 1)]["answer"] == "{broken"


def test_without_the_option_nothing_changes():
    engine, rows = _rows(None, {("a", 0): "能回答: 是\nhi"})
    assert engine.requests[0].messages[-1]["content"] == "x" and engine.requests[0].json_schema is None
    assert rows[("a", 0)]["can_answer"] is None and rows[("a", 0)]["answer"] == "能回答: 是\nhi"


def test_the_token_counts_are_what_was_decoded():
    form = form_of(CanAnswerConfig(enabled=True, structured=False), True)
    done = Completion(None, "can_answer: yes\nLink 3.", None, "stop", 5, 9)
    _, rows = _rows(form, {("a", 0): done})
    assert rows[("a", 0)]["answer"] == "Link 3." and rows[("a", 0)]["completion_tokens"] == 9
    assert rows[("a", 0)]["answer_tokens"] == 9  # the flag line was decoded too


# -- a run with the flag: its counts, the can_answer verifier, the flag_contradiction filter --------------
def flag_reply(request):
    """The teacher by its seed: a flag and a reply that agree (yes + answer, no + referral), a contradiction (yes +
    referral), or no flag at all; the judge (a JSON schema) as the fake's default."""
    from tests.fakes import seeded_reply

    if request.json_schema is not None:
        return seeded_reply(request)
    return {
        0: "can_answer: yes\nLink 3 is in stock.",
        1: "can_answer: no\nPlease ask customer service.",
        2: "can_answer: yes\nPlease ask customer service.",
        3: "Link 3 is in stock.",
    }[request.seed % 4]


def test_a_run_counts_the_flags_excludes_contradictions_and_verifies_the_flag_against_the_label(tmp_path, capsys):
    from factory import cli
    from factory.graph import RunGraph
    from factory.rundir.store import RunStore
    from tests.stages.test_prejudge import cfg_of, local_run

    path = tmp_path / "labelled.jsonl"
    rows = [
        {"id": f"p{i}", "product_info": {"name": f"thing {i}"}, "history": [], "question": f"q{i}?",
         "answerable": ["yes", "no", ""][i % 3]}
        for i in range(6)
    ]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = cfg_of(
        tmp_path, "run", f"prompts.path={path}", "sampler.can_answer.enabled=true",
        "sampler.can_answer.structured=false", "verifiers.flag.rule=can_answer", "verifiers.flag.column=answerable",
        "pairs.terms=[{source: flag_contradiction, exclude_above: 0}]",
    )  # fmt: skip
    engine = FakeEngine(reply=flag_reply)
    manifest = local_run(cfg, engine)
    sampled = [r for r in engine.requests if r.json_schema is None]
    asked = INSTRUCTIONS[("lines", "en")]
    assert len(sampled) == 24 and all(r.messages[-1]["content"].endswith(asked) for r in sampled)

    samples = pl.read_parquet(tmp_path / "run" / "samples")
    kind = samples["seed"] % 4
    counts = manifest["counts"]
    assert counts["can_answer_yes"] == int(kind.is_in([0, 2]).sum())
    assert counts["can_answer_no"] == int((kind == 1).sum())
    assert counts["can_answer_unparsed"] == int((kind == 3).sum()) > 0
    assert counts["can_answer_yes"] + counts["can_answer_no"] + counts["can_answer_unparsed"] == counts["samples_ok"]
    assert samples.filter(kind != 3)["answer"].str.starts_with("can_answer").sum() == 0  # the reply alone

    contradictions = int((kind == 2).sum())
    assert contradictions > 0 and manifest["pairs"]["samples_excluded"]["flag_contradiction"] == contradictions
    judged = set(pl.read_parquet(tmp_path / "run" / "judgments").select("prompt_id", "sample_idx").iter_rows())
    contradicting = set(samples.filter(kind == 2).select("prompt_id", "sample_idx").iter_rows())
    assert judged and not judged & contradicting  # never sent to the judge

    # the verifier: the flag against the hand label (p0, p3 yes; p1, p4 no; p2, p5 unlabelled)
    label = {r["id"]: {"yes": True, "no": False}.get(r["answerable"]) for r in rows}
    by_hand = [
        float(flag == label[p]) for p, flag in samples.select("prompt_id", "can_answer").iter_rows()
        if flag is not None and label[p] is not None
    ]  # fmt: skip
    scored = RunGraph(cfg).scored(RunStore(cfg.output_dir), RunStore(cfg.output_dir).read("prompts")).scored
    assert scored["verify_flag"].drop_nulls().len() == len(by_hand) > 0
    entry = manifest["judges"]["verify_flag"]
    assert entry["ok"] == len(by_hand) and entry["mean"] == pytest.approx(sum(by_hand) / len(by_hand))
    assert cli.main(["report", cfg.output_dir]) == 0
    out = capsys.readouterr().out
    assert "| verify_flag " in out and f"{sum(by_hand) / len(by_hand):.3f} of {len(by_hand)}" in out
    assert "flag_contradiction" in out


@pytest.mark.parametrize(
    "extra, key",
    [
        (["verifiers.flag.rule=can_answer", "verifiers.flag.column=answerable"], r"verifiers\.flag\.rule"),
        (["pairs.terms=[{source: flag_contradiction, exclude_above: 0}]"], r"pairs\.terms\[0\]\.source"),
    ],
)
def test_what_reads_the_flag_needs_the_teacher_asked_for_it(extra, key):
    from factory import config

    with pytest.raises(ConfigError, match=key + r": .*sampler\.can_answer\.enabled=true"):
        config.load(None, extra)
    config.load(None, [*extra, "sampler.can_answer.enabled=true"])  # fine with it
