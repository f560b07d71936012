"""Judge stage: parsing (a corpus of malformed outputs + properties), re-asks, votes, the judge cache
counted in requests, and the structured path against the real embedded model (slow, tiny)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factory.config import ConfigError, EngineConfig, JudgeConfig, SamplingConfig
from factory.engines.base import Completion, Request
from factory.rundir.schemas import JUDGMENTS, SAMPLES
from factory.stages import judge
from factory.stages.sample import plan_samples
from factory.rundir.store import RunStore
from tests.fakes import FakeEngine

CONF = Path(__file__).resolve().parents[2] / "conf"
RUBRIC_EN = (CONF / "rubrics" / "default_en.txt").read_text().strip()
RUBRIC_ZH = (CONF / "rubrics" / "default_zh.txt").read_text().strip()
FAILURES = ("unparseable", "out_of_range")


# -- a judge that can be scripted and counts its requests --------------------------------------------
def marked_score(request: Request) -> str:
    """`{"score": N, "reason": ...}` with N taken from the answer's `[N]` marker (50 without one)."""
    found = re.search(r"\[(\d+)\]", request.messages[0]["content"])
    return json.dumps({"score": int(found.group(1)) if found else 50, "reason": "fake"})


def in_prompt(marker: str, request: Request) -> bool:
    return marker in request.messages[0]["content"]


def counting_judge(script: dict[str, list] | None = None, **kw) -> FakeEngine:
    """A judge scripted by a marker in the request (a list: one reply per attempt of that marker; an
    Exception or an error Completion is an engine error), else `marked_score`; counts every request and
    returns completions in reverse order like an async engine."""
    return FakeEngine(script, reply=marked_score, match=in_prompt, model_name="counting-judge", **kw)


def engine_error(message: str) -> Completion:
    """What an engine returns for a request it gave up on after its own retries."""
    return Completion(tag=None, error=message, attempts=4)


def cfg(**kwargs) -> JudgeConfig:
    return JudgeConfig(engine=EngineConfig(batch_size=4), **kwargs)


PROMPTS = pl.DataFrame(
    {
        "prompt_id": ["p1", "p2"],
        "product_info": ["- name: Air Fryer\n- link: 3", "- name: Serum\n- link: 7"],
        "history": [[], [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello!"}]],
        "question": ["coupon today?", "with retinol?"],
    },
    schema={
        "prompt_id": pl.String,
        "product_info": pl.String,
        "history": pl.List(pl.Struct({"role": pl.String, "content": pl.String})),
        "question": pl.String,
    },
)


def samples_frame(sampler_fp: str = "sfp") -> pl.DataFrame:
    """2 prompts x 3 samples: one engine error, one empty answer, so 2 x 3 - 2 = 4 are judgeable."""
    rows = []
    for p, scores in (("p1", (80, 20, 60)), ("p2", (40, 90, 10))):
        for i, s in enumerate(scores):
            rows.append(
                {"prompt_id": p, "sample_idx": i, "sampler_fp": sampler_fp, "reasoning": f"think {p}{i}",
                 "answer": f"reply {p}{i} [{s}]", "error": None, "created_at": float(i)}
            )  # fmt: skip
    rows[2]["error"] = "engine down"
    rows[5]["answer"] = "   "
    return pl.DataFrame(rows)


# -- parsing: a corpus of what judges really write -----------------------------------------------------
CORPUS = [
    ('{"score": 85, "reason": "good"}', "ok", 85),
    ('{"score": 85.5, "reason": "good"}', "ok", 85.5),
    ('{"score": "85", "reason": "string score"}', "ok", 85),
    ('{"score": "85/100"}', "ok", 85),
    ('{"Score": 55, "Reason": "capitalised keys"}', "ok", 55),
    ('{"overall_score": 66}', "ok", 66),
    ('```json\n{"score": 70, "reason": "fenced"}\n```', "ok", 70),
    ('Here is my verdict:\n{"score": 40, "reason": "x"}\nHope that helps!', "ok", 40),
    ('{"dimensions": {"question": 90}, "score": 77}', "ok", 77),
    ('{"score": 10, "reason": "This is a JSON object with a JSON', "ok", 10),  # cut at max_tokens
    ('<think>The reply invents a coupon. {"score": 90}</think>{"score": 20, "reason": "invented"}', "ok", 20),
    ("<think>score: 99 maybe</think>\nScore: 35", "ok", 35),
    ('the reply is fine overall</think>{"score": 64}', "ok", 64),  # template opened <think> in the prompt
    ("<THINK>hmm</THINK> score = 12", "ok", 12),
    ("**Score:** 72\n**Reason:** ok", "ok", 72),
    ("Overall score is 91.", "ok", 91),
    ("Final score: 45/100", "ok", 45),
    ("I would rate it 70 out of 100.", "ok", 70),
    ("评分：85", "ok", 85),
    ("得分为 60 分", "ok", 60),
    ("{'score': 33, 'reason': 'python dict'}", "ok", 33),
    ('{"score": 0, "reason": "harmful"}', "ok", 0),
    ('{"score": 100}', "ok", 100),
    ('{"score": 150, "reason": "too good"}', "out_of_range", 150),
    ('{"score": -5}', "out_of_range", -5),
    ("Score: 8/10", "out_of_range", 8),  # another scale: re-asked, never rescaled
    ('{"score": "9/10"}', "out_of_range", 9),
    ("Score: 101", "out_of_range", 101),
    ('{"score": NaN}', "unparseable", None),
    ('{"score": Infinity}', "unparseable", None),
    ('{"score": 1e999}', "unparseable", None),
    ('{"score": null, "reason": "cannot judge"}', "unparseable", None),
    ('{"score": true}', "unparseable", None),
    ('{"score": "high"}', "unparseable", None),
    ('{"reason": "no score key"}', "unparseable", None),
    ("<think>The reply is good, I think the score should be", "unparseable", None),  # cut inside <think>
    ("<think>score: 80</think>", "unparseable", None),  # a score only inside the reasoning is not the verdict
    ("", "unparseable", None),
    (None, "unparseable", None),
    ("The reply is great!", "unparseable", None),
    ("Released 2024/05/01, rated 4/5 stars", "unparseable", None),  # fractions on other scales are not scores
    ("{{{{{{{{", "unparseable", None),
    ("{" * 5000, "unparseable", None),
    ("[" * 5000 + "]" * 5000, "unparseable", None),
    ('{"score": 1' + "0" * 400 + "}", "unparseable", None),  # beyond float range
    ('{"score": ' + "9" * 5000 + "}", "unparseable", None),  # beyond Python's int parsing limit
]


@pytest.mark.parametrize("text, status, score", CORPUS)
def test_parse_corpus(text, status, score):
    parsed = judge.parse_judgment(text, 100)
    assert parsed["status"] == status, parsed
    assert parsed["score"] == score
    assert parsed["reason"] or status == "ok"  # every failure says why


def test_parse_keeps_reason_and_only_valid_dimensions():
    text = '{"score": 70, "reason": "ok", "dimensions": {"question": 80, "self": "90", "product_info": 300, "x": "?"}}'
    parsed = judge.parse_judgment(text, 100)
    assert parsed["reason"] == "ok"
    assert parsed["dimensions"] == {"question": 80.0, "self": 90.0}


def test_parse_unparseable_says_when_the_output_ended_in_think():
    assert "inside <think>" in judge.parse_judgment("<think>long thought", 100)["reason"]
    assert judge.parse_judgment("   ", 100)["reason"] == "empty judge output"


def test_parse_other_scale():
    assert judge.parse_judgment("Score: 8/10", 10) == {"score": 8.0, "status": "ok", "reason": "", "dimensions": None}
    assert judge.parse_judgment('{"score": 4.5}', 5)["status"] == "ok"
    assert judge.parse_judgment('{"score": 6}', 5)["status"] == "out_of_range"


BRACE_FREE = st.text(alphabet=st.characters(blacklist_characters="{}<>"), max_size=80)


@given(st.text(max_size=400), st.sampled_from([1, 5, 10, 100]))
@settings(max_examples=300, deadline=None)
def test_any_text_never_raises_and_usable_means_in_range(text, scale):
    parsed = judge.parse_judgment(text, scale)
    assert parsed["status"] in FAILURES + ("ok",)
    if parsed["status"] == "ok":
        assert 0 <= parsed["score"] <= scale
    else:
        assert parsed["reason"]


FRAGMENTS = st.sampled_from(
    [
        "{",
        "}",
        '"score"',
        "'score'",
        "Score",
        "score",
        ":",
        "：",
        "=",
        " ",
        "\n",
        ",",
        '"',
        "-",
        ".",
        "/",
        "out of",
        "0",
        "7",
        "42",
        "100",
        "101",
        "1e400",
        "NaN",
        "<think>",
        "</think>",
        "```json",
        "```",
        "评分",
        "null",
        "true",
        "[",
        "]",
    ]
)


@given(st.lists(FRAGMENTS, max_size=40).map("".join), st.sampled_from([10, 100]))
@settings(max_examples=500, deadline=None)
def test_judge_like_fragments_never_raise_and_usable_means_in_range(text, scale):
    parsed = judge.parse_judgment(text, scale)
    assert parsed["status"] in FAILURES + ("ok",)
    assert parsed["status"] != "ok" or 0 <= parsed["score"] <= scale
    assert parsed["status"] == "ok" or parsed["reason"]


@given(
    score=st.one_of(st.integers(0, 100), st.floats(0, 100, allow_nan=False).map(lambda x: round(x, 2))),
    reason=st.text(max_size=60),
    prefix=BRACE_FREE,
    suffix=BRACE_FREE,
    thinking=st.one_of(st.none(), st.text(max_size=200).filter(lambda t: "</think>" not in t.lower())),
)
@settings(max_examples=300, deadline=None)
def test_json_with_a_score_in_range_parses_to_that_score(score, reason, prefix, suffix, thinking):
    body = json.dumps({"score": score, "reason": reason}, ensure_ascii=False)
    text = (f"<think>{thinking}</think>" if thinking is not None else "") + prefix + body + suffix
    parsed = judge.parse_judgment(text, 100)
    assert parsed["status"] == "ok", (text, parsed)
    assert parsed["score"] == float(score)
    assert parsed["reason"] == reason


@given(
    score=st.one_of(
        st.integers(max_value=-1), st.integers(min_value=101), st.floats(100.01, 1e12), st.floats(-1e12, -0.01)
    ),
    form=st.sampled_from(["json", "text"]),
)
@settings(max_examples=300, deadline=None)
def test_a_score_out_of_range_is_always_out_of_range(score, form):
    text = (
        json.dumps({"score": score})
        if form == "json"
        else f"Score: {score:f}"
        if isinstance(score, float)
        else f"Score: {score}"
    )
    parsed = judge.parse_judgment(text, 100)
    assert parsed["status"] == "out_of_range", (text, parsed)
    assert parsed["score"] == pytest.approx(float(score))


# -- rubric and schema -----------------------------------------------------------------------------
@pytest.mark.parametrize("rubric", [RUBRIC_EN, RUBRIC_ZH], ids=["en", "zh"])
def test_default_rubrics_render_every_field(rubric):
    judge.check_rubric(rubric)
    prompt = PROMPTS.row(1, named=True)
    (message,) = judge.render_rubric(
        rubric, prompt, {"answer": "Link 7, ask customer service!", "reasoning": "hmm"}, cfg()
    )
    content = message["content"]
    for expected in ("- name: Serum", "Viewer: hi", "Host: hello!", "with retinol?", "Link 7, ask customer service!"):
        assert expected in content
    assert "100" in content and "{scale_max}" not in content
    assert '{"score": <' in content  # the doubled braces of the JSON example come out single
    assert "hmm" not in content  # reasoning stays hidden by default


def test_include_reasoning_shows_the_reasoning():
    (message,) = judge.render_rubric(
        RUBRIC_EN, PROMPTS.row(0, named=True), {"answer": "A", "reasoning": "R1 thought"}, cfg(include_reasoning=True)
    )
    assert "<think>R1 thought</think>\nA" in message["content"]
    custom = "Reasoning: {reasoning}\nReply: {answer}"
    (message,) = judge.render_rubric(custom, {}, {"answer": "A", "reasoning": "R"}, cfg(include_reasoning=True))
    assert message["content"] == "Reasoning: R\nReply: A"


@pytest.mark.parametrize(
    "rubric, message",
    [
        ("Reply: {answer} {colour}", "unknown field"),
        ("Reply: {reply}", "unknown field"),
        ("Product: {product_info}", "no {answer} field"),
        ('Reply: {answer} {"score": 1}', "judge.rubric_file"),
        ("Reply: {answer", "not a valid template"),
    ],
)
def test_bad_rubric_is_a_config_error_naming_the_key(rubric, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        judge.check_rubric(rubric)
    assert str(info.value).startswith("judge.rubric_file")


def test_schema_score_first_and_dimensions_optional():
    plain = judge.judge_schema(100)
    assert list(plain["properties"]) == ["score", "reason"]
    assert plain["properties"]["score"] == {"type": "integer", "minimum": 0, "maximum": 100}
    dims = judge.judge_schema(10, dimensions=True)
    assert dims["required"] == ["score", "dimensions", "reason"]
    assert dims["properties"]["dimensions"]["required"] == list(judge.DIMENSIONS)
    assert judge.judge_schema(1.5)["properties"]["score"]["type"] == "number"


@pytest.mark.parametrize("dimensions", [False, True])
def test_schema_stays_in_the_subset_strict_backends_accept(dimensions):
    """OpenAI strict mode refuses objects that allow extra keys or leave a property optional."""

    def objects(node):
        if isinstance(node, dict):
            if node.get("type") == "object":
                yield node
            for value in node.values():
                yield from objects(value)

    schema = judge.judge_schema(100, dimensions)
    found = list(objects(schema))
    assert len(found) == (2 if dimensions else 1)
    for node in found:
        assert node["additionalProperties"] is False
        assert node["required"] == list(node["properties"])
    assert "maxLength" not in json.dumps(schema)


def test_fingerprint_changes_with_rubric_and_format_not_with_votes():
    base = judge.judge_fingerprint(cfg(), "m", "rubric {answer}")
    assert judge.judge_fingerprint(cfg(), "m", "rubric {answer}!") != base
    assert judge.judge_fingerprint(cfg(dimensions=True), "m", "rubric {answer}") != base
    assert judge.judge_fingerprint(cfg(scale_max=10), "m", "rubric {answer}") != base
    assert judge.judge_fingerprint(cfg(votes=3, max_reasks=5), "m", "rubric {answer}") == base


def test_config_refuses_identical_votes_and_negative_reasks():
    with pytest.raises(ConfigError, match="judge.votes"):
        JudgeConfig(votes=3, sampling=SamplingConfig(temperature=0.0))
    with pytest.raises(ConfigError, match="judge.max_reasks"):
        JudgeConfig(max_reasks=-1)
    JudgeConfig(
        votes=3, sampling=SamplingConfig(temperature=0.0), engine=EngineConfig(kind="openai", base_url="http://x")
    )


# -- judge_batch: structured requests, re-asks, statuses ----------------------------------------------
def plan_rows(samples: pl.DataFrame | None = None, config: JudgeConfig | None = None) -> list[dict]:
    config = config or cfg()
    return judge.plan_judgments(
        samples_frame() if samples is None else samples, PROMPTS, None, config, "jfp", RUBRIC_EN
    ).to_dicts()


def test_judge_batch_passes_the_schema_only_when_the_engine_supports_it():
    for supports, structured, expected in (
        (True, True, judge.judge_schema(100)),
        (False, True, None),
        (True, False, None),
    ):
        engine = counting_judge(supports_json_schema=supports)
        judge.judge_batch(engine, plan_rows(), None, cfg(structured=structured), "jfp")
        assert all(r.json_schema == expected for r in engine.requests)
    engine = counting_judge()
    judge.judge_batch(engine, plan_rows(), None, cfg(dimensions=True), "jfp")
    assert engine.requests[0].json_schema == judge.judge_schema(100, dimensions=True)


def test_judge_batch_uses_the_judge_sampling_params():
    engine = counting_judge()
    config = cfg(sampling=SamplingConfig(temperature=0.3, top_p=0.7, max_tokens=77, seed=5))
    rows = plan_rows(config=config)
    judge.judge_batch(engine, rows, None, config, "jfp")
    assert {(r.temperature, r.top_p, r.max_tokens) for r in engine.requests} == {(0.3, 0.7, 77)}
    assert [r.seed for r in engine.requests] == [row["seed"] for row in rows]


def test_judge_batch_results_in_plan_order_with_scores():
    rows = plan_rows()
    out = judge.judge_batch(counting_judge(), rows, None, cfg(), "jfp")
    assert [(r["prompt_id"], r["sample_idx"]) for r in out] == [(r["prompt_id"], r["sample_idx"]) for r in rows]
    assert [r["score"] for r in out] == [80, 20, 40, 90]
    assert [r["quality"] for r in out] == [0.8, 0.2, 0.4, 0.9]
    assert {r["parse_status"] for r in out} == {"ok"}
    assert all(r["attempts"] == 1 and r["reasks"] == 0 and r["completion_tokens"] > 0 for r in out)


def test_reasks_fix_parse_failures_and_every_failure_keeps_its_reason_and_raw():
    script = {
        "reply p10": ["no idea", '{"score": 75, "reason": "fixed"}'],  # unparseable -> retried_ok
        "reply p11": ["Score: 8/10", "Score: 80/100"],  # out_of_range -> retried_ok
        "reply p20": ["???", "still ???", "nope"],  # unparseable after every re-ask
        "reply p21": [engine_error("HTTP 500")],  # engine error: not re-asked (the engine retried)
    }
    engine = counting_judge(script)
    out = {
        r["prompt_id"] + str(r["sample_idx"]): r
        for r in judge.judge_batch(engine, plan_rows(), None, cfg(max_reasks=2), "jfp")
    }
    assert (out["p10"]["parse_status"], out["p10"]["score"], out["p10"]["reason"]) == ("retried_ok", 75, "fixed")
    assert out["p10"]["attempts"] == 2 and out["p10"]["reasks"] == 1
    assert out["p10"]["completion_tokens"] == 2 + 4  # the fake counts words: "no idea", then the JSON
    assert (out["p11"]["parse_status"], out["p11"]["quality"]) == ("retried_ok", 0.8)
    bad = out["p20"]
    assert (bad["parse_status"], bad["score"], bad["quality"], bad["raw"]) == ("unparseable", None, None, "nope")
    assert bad["attempts"] == 3 and bad["reasks"] == 2 and "after 2 re-ask(s)" in bad["reason"]
    err = out["p21"]
    assert (err["parse_status"], err["error"], err["reason"], err["attempts"]) == (
        "engine_error",
        "HTTP 500",
        "HTTP 500",
        4,
    )
    assert engine.calls == {"reply p10": 2, "reply p11": 2, "reply p20": 3, "reply p21": 1}
    assert len(engine.requests) == 2 + 2 + 3 + 1


def test_a_reask_shows_the_failed_reply_and_the_reason_with_a_new_seed():
    engine = counting_judge({"reply p10": ["Score: 8/10", '{"score": 80}']})
    rows = plan_rows()
    judge.judge_batch(engine, rows, None, cfg(), "jfp")
    first, again = [r for r in engine.requests if "reply p10" in r.messages[0]["content"]]
    assert again.messages[: len(first.messages)] == first.messages
    assert again.messages[-2] == {"role": "assistant", "content": "Score: 8/10"}
    assert "but the scale is 0..100" in again.messages[-1]["content"] and '"score"' in again.messages[-1]["content"]
    assert again.seed != first.seed


def test_no_reask_when_max_reasks_is_zero():
    engine = counting_judge({"reply p10": ["nothing"]})
    out = judge.judge_batch(engine, plan_rows(), None, cfg(max_reasks=0), "jfp")
    assert len(engine.requests) == 4
    assert out[0]["parse_status"] == "unparseable" and out[0]["attempts"] == 1


# -- votes -------------------------------------------------------------------------------------------
def test_votes_have_their_own_seeds_and_quality_is_their_mean_with_the_spread():
    config = cfg(votes=3)
    rows = plan_rows(config=config)
    assert len(rows) == 4 * 3
    assert len({r["seed"] for r in rows}) == 12
    script = {
        "reply p10": ['{"score": 60}', '{"score": 80}', '{"score": 100}'],
        "reply p11": ["x"],
        "reply p20": ['{"score": 50}', "x"],
    }
    engine = counting_judge(script)
    out = judge.judge_batch(engine, rows, None, cfg(votes=3, max_reasks=0), "jfp")
    quality = judge.sample_quality(pl.from_arrow(pa.Table.from_pylist(out, schema=JUDGMENTS))).sort(
        "prompt_id", "sample_idx"
    )
    by_key = {(r["prompt_id"], r["sample_idx"]): r for r in quality.to_dicts()}
    p10 = by_key[("p1", 0)]
    assert (p10["votes"], p10["votes_ok"], p10["score"]) == (3, 3, 80)
    assert p10["quality"] == pytest.approx(0.8)
    assert p10["quality_spread"] == pytest.approx((((0.2**2) * 2) / 3) ** 0.5)
    assert (by_key[("p1", 1)]["quality"], by_key[("p1", 1)]["quality_spread"], by_key[("p1", 1)]["votes_ok"]) == (
        None,
        None,
        0,
    )
    assert (by_key[("p2", 0)]["quality"], by_key[("p2", 0)]["quality_spread"], by_key[("p2", 0)]["votes_ok"]) == (
        0.5,
        0.0,
        1,
    )


def test_spread_reaches_the_pairs_input():
    from factory.stages.judge import with_quality as scored_samples

    out = judge.judge_batch(counting_judge(), plan_rows(config=cfg(votes=2)), None, cfg(votes=2), "jfp")
    judgments = pl.from_arrow(pa.Table.from_pylist(out, schema=JUDGMENTS))
    scored = scored_samples(samples_frame(), judgments)
    assert {"quality", "quality_spread", "votes_ok", "votes"} <= set(scored.columns)
    assert scored.filter(pl.col("quality").is_not_null()).height == 4
    assert scored.filter(pl.col("quality").is_null()).height == 2  # the engine error and the empty answer


# -- the cache, counted in requests -----------------------------------------------------------------
def judge_all(store: RunStore, engine: FakeEngine, config: JudgeConfig, rubric: str, samples: pl.DataFrame) -> int:
    """One judge stage over the store, as a run drives it; returns the requests it made."""
    fp = judge.judge_fingerprint(config, engine.model_name, rubric)
    plan = judge.plan_judgments(samples, PROMPTS, store.read("judgments", JUDGMENTS), config, fp, rubric)
    before = len(engine.requests)
    rows = judge.judge_batch(engine, plan.to_dicts(), None, config, fp) if plan.height else []
    store.append("judgments", pa.Table.from_pylist(rows, schema=JUDGMENTS))
    return len(engine.requests) - before


def test_same_rubric_zero_requests_new_rubric_rejudges_all_and_resamples_nothing(tmp_path):
    store = RunStore(f"memory://judge-cache/{tmp_path.name}")
    samples = samples_frame()
    store.append("samples", pa.Table.from_pylist(
        [{**r, "seed": 0, "text": r["answer"], "completion_tokens": 5} for r in samples.to_dicts()], schema=SAMPLES
    ))  # fmt: skip
    engine = counting_judge()
    config = cfg()
    assert judge_all(store, engine, config, RUBRIC_EN, samples) == 4  # the 4 judgeable samples
    assert judge_all(store, engine, config, RUBRIC_EN, samples) == 0  # same rubric: nothing
    changed = RUBRIC_EN + "\nBe extra strict about link numbers."
    assert judge_all(store, engine, config, changed, samples) == 4  # every sample again
    assert judge_all(store, engine, config, changed, samples) == 0
    assert judge_all(store, engine, config, RUBRIC_ZH, samples) == 4
    # the samples are not touched by any of this: their plan under the same sampler fp is empty
    prompts = PROMPTS.with_columns(pl.lit([{"role": "user", "content": "x"}]).alias("messages"))
    assert plan_samples(prompts, store.read("samples", SAMPLES), k=3, sampler_fp="sfp", base_seed=0).height == 0
    stored = store.read("judgments", JUDGMENTS)
    assert stored.height == 12 and stored["judge_fp"].n_unique() == 3
    # growing votes asks only for the new vote; a new sampler fp (re-sampled) is judged anew
    assert judge_all(store, engine, cfg(votes=2), RUBRIC_EN, samples) == 4
    assert judge_all(store, engine, config, RUBRIC_EN, samples_frame("sfp2")) == 4
    assert len(engine.requests) == 4 + 4 + 4 + 4 + 4


def test_retry_failed_rejudges_engine_errors_only(tmp_path):
    store = RunStore(f"memory://judge-retry/{tmp_path.name}")
    samples = samples_frame()
    engine = counting_judge({"reply p10": [engine_error("HTTP 503")], "reply p11": ["garbage"]})
    assert judge_all(store, engine, cfg(max_reasks=0), RUBRIC_EN, samples) == 4
    assert judge_all(store, engine, cfg(max_reasks=0), RUBRIC_EN, samples) == 0  # stored failures are kept
    engine.script = {}
    assert judge_all(store, engine, cfg(max_reasks=0, retry_failed=True), RUBRIC_EN, samples) == 1  # only the 503
    assert judge_all(store, engine, cfg(max_reasks=0, retry_failed=True), RUBRIC_EN, samples) == 0
    latest = (
        store.read("judgments", JUDGMENTS).sort("created_at")
        .unique(subset=["prompt_id", "sample_idx", "vote"], keep="last").sort("prompt_id", "sample_idx")
    )  # fmt: skip
    assert latest["parse_status"].to_list() == ["ok", "unparseable", "ok", "ok"]


def test_plan_skips_error_and_empty_samples_and_names_missing_columns():
    plan = judge.plan_judgments(samples_frame(), PROMPTS, None, cfg(), "jfp", RUBRIC_EN)
    assert sorted(zip(plan["prompt_id"], plan["sample_idx"])) == [("p1", 0), ("p1", 1), ("p2", 0), ("p2", 1)]
    with pytest.raises(ValueError, match="answer"):
        judge.plan_judgments(samples_frame().drop("answer"), PROMPTS, None, cfg(), "jfp", RUBRIC_EN)
    with pytest.raises(ValueError, match="not in prompts"):
        judge.plan_judgments(samples_frame(), PROMPTS.head(1), None, cfg(), "jfp", RUBRIC_EN)


# -- the real embedded model (slow, tiny) ---------------------------------------------------------
@pytest.mark.slow
def test_structured_output_on_the_embedded_engine():
    """llama.cpp turns the JSON schema into a grammar: even SmolLM2-135M, cut at 24 tokens, starts
    with a score in range, which it almost never does unconstrained."""
    from factory.engines import build_engine

    engine = build_engine(EngineConfig(kind="llamacpp", parallel=2, cpus_per_replica=2, max_model_len=1024))
    try:
        config = cfg(sampling=SamplingConfig(temperature=0.2, top_p=1.0, max_tokens=24), max_reasks=0)
        rows = plan_rows(config=config)[:2]
        out = judge.judge_batch(engine, rows, None, config, "jfp")
    finally:
        engine.close()
    for row in out:
        assert re.match(r'\s*\{\s*"score"\s*:\s*\d+', row["raw"]), row["raw"]
        assert row["parse_status"] == "ok", row
        assert 0 <= row["score"] <= 100
        assert 0 < row["completion_tokens"] <= 24
        assert row["attempts"] == 1


@pytest.mark.slow
def test_pipeline_judge_cache_counts_requests_end_to_end(tmp_path):
    """factory run on 2 prompts x K=2 with the embedded model: the rerun makes 0 requests; a changed
    rubric re-judges every judgeable sample and re-samples nothing."""
    from factory import config as config_mod
    from factory.run import run

    rubric = tmp_path / "rubric.txt"
    rubric.write_text(RUBRIC_EN)
    overrides = [
        f"output_dir={tmp_path / 'run'}",
        "prompts.limit=2",
        "sampler.k=2",
        "sampler.sampling.max_tokens=8",
        "judge.sampling.max_tokens=16",
        "judge.max_reasks=0",
        "judge.engine.parallel=1",
        f"judge.rubric_file={rubric}",
        "pairs.filter_before_judge=false",  # the samples are cut at 8 tokens: judge them anyway
        "progress_interval_s=60",
    ]
    run_cfg = config_mod.load(CONF / "demo.yaml", overrides)
    first = run(run_cfg)
    # judge.engine.parallel differs from the sampler's: two pools, each started once
    assert sorted(first["pools"]) == ["judge", "sample"] and all(p["starts"] == 1 for p in first["pools"].values())
    scored = first.scored
    judgeable = judge.judgeable(scored).height
    assert first["requests"] == {"sampler": 4, "judge": judgeable}
    judgments = RunStore(run_cfg.output_dir).read("judgments", JUDGMENTS)
    assert judgments.height == judgeable
    assert (judgments["completion_tokens"] <= 16).all()  # the judge's own max_tokens, not the sampler's 8...
    assert judgments["completion_tokens"].max() > 8  # ...which it really used

    again = run(run_cfg)
    assert again["requests"] == {"sampler": 0, "judge": 0}

    rubric.write_text(RUBRIC_EN + "\nBe extra strict about link numbers.")
    changed = run(config_mod.load(CONF / "demo.yaml", overrides))
    assert changed["requests"] == {"sampler": 0, "judge": judgeable}
    assert changed["fingerprints"]["sampler"] == first["fingerprints"]["sampler"]
    assert changed["fingerprints"]["judge"] != first["fingerprints"]["judge"]
    stored = RunStore(run_cfg.output_dir)
    assert stored.read("samples", SAMPLES).height == 4
    assert stored.read("judgments", JUDGMENTS).height == 2 * judgeable


# -- dimensions and tags: typed per judgment, per sample in the scored frame -------------------------
def test_the_schema_asks_for_the_configured_dimensions_and_tags():
    schema = judge.judge_schema(
        5, dimensions=True, names=["style", "facts"], tags=True, tag_values=["short", "off_topic"]
    )
    assert list(schema["properties"]) == ["score", "dimensions", "tags", "reason"] == schema["required"]
    assert schema["properties"]["dimensions"]["required"] == ["style", "facts"]
    assert schema["properties"]["dimensions"]["properties"]["facts"] == {"type": "integer", "minimum": 0, "maximum": 5}
    assert schema["properties"]["tags"] == {
        "type": "array",
        "items": {"type": "string", "enum": ["short", "off_topic"]},
        "maxItems": 2,
        "uniqueItems": True,
    }
    free = judge.judge_schema(5, tags=True)["properties"]["tags"]
    assert free["items"] == {"type": "string"} and free["maxItems"] == judge.FREE_TAGS_MAX and free["uniqueItems"]


def test_the_fingerprint_keeps_old_keys_and_follows_new_dimension_names_and_tags():
    with_dims = judge.judge_fingerprint(cfg(dimensions=True), "m", "r {answer}")
    default_names = cfg(dimensions=True, dimension_names=list(judge.DIMENSIONS))
    assert judge.judge_fingerprint(default_names, "m", "r {answer}") == with_dims  # stored judgments keep their key
    assert judge.judge_fingerprint(cfg(dimension_names=["a"]), "m", "r {answer}") == judge.judge_fingerprint(
        cfg(), "m", "r {answer}"
    )
    others = {
        judge.judge_fingerprint(cfg(dimensions=True, dimension_names=["style"]), "m", "r {answer}"),
        judge.judge_fingerprint(cfg(tags=True), "m", "r {answer}"),
        judge.judge_fingerprint(cfg(tags=True, tag_values=["short"]), "m", "r {answer}"),
    }
    assert len(others) == 3 and with_dims not in others


@pytest.mark.parametrize(
    "text, allowed, tags",
    [
        ('{"score": 70, "tags": ["short", " spoken ", "short", ""]}', (), ["short", "spoken"]),
        ('<think>{"tags": ["x"]}</think>{"score": 70, "tags": ["short", "made_up"]}', ("short",), ["short"]),
        ('{"score": 70, "reason": "fine"}', (), None),
        ('{"tags": ["a"]} then {"score": 70, "tags": "not a list"}', (), ["a"]),
        ("Score: 70", (), None),
    ],
)
def test_tags_come_from_the_judges_last_json_object_with_a_list(text, allowed, tags):
    assert judge.parse_tags(text, allowed) == tags


def test_a_judgment_stores_one_typed_score_per_dimension_and_its_tags():
    def replies():
        return FakeEngine(reply=lambda request: json.dumps(
            {"score": 80, "reason": "ok", "dimensions": {"style": 4, "facts": 2.5, "bad": 99},
             "tags": ["short", "rude", "short"]}))  # fmt: skip

    config = cfg(
        scale_max=5, dimensions=True, dimension_names=["style", "facts"], tags=True, tag_values=["short", "long"]
    )
    rows = judge.judge_batch(replies(), plan_rows(config=cfg(scale_max=5)), None, config, "jfp")
    assert {r["parse_status"] for r in rows} == {"out_of_range"}  # 80 on a 0..5 scale: no tags kept then
    assert all(r["tags"] is None for r in rows)
    config = cfg(
        scale_max=100, dimensions=True, dimension_names=["style", "facts"], tags=True, tag_values=["short", "long"]
    )
    rows = judge.judge_batch(replies(), plan_rows(config=config), None, config, "jfp")
    row = rows[0]
    assert row["parse_status"] == "ok" and row["dimensions"] is None
    assert row["dims"] == [
        {"name": "style", "score": 4.0},
        {"name": "facts", "score": 2.5},
        {"name": "bad", "score": 99.0},
    ]
    assert row["tags"] == ["short"]
    table = pa.Table.from_pylist(rows, schema=JUDGMENTS)  # the typed columns hold them as they are
    assert table.schema.field("dims").type == pa.list_(pa.struct([("name", pa.string()), ("score", pa.float64())]))


def test_sample_dims_average_usable_votes_and_read_the_json_of_older_runs():
    dims = pl.List(pl.Struct({"name": pl.String, "score": pl.Float64}))
    judgments = pl.DataFrame(
        {
            "prompt_id": ["p1", "p1", "p1", "p2", "p3"],
            "sample_idx": [0, 0, 0, 0, 0],
            "parse_status": ["ok", "retried_ok", "unparseable", "ok", "ok"],
            "dims": [
                [{"name": "style", "score": 4.0}, {"name": "facts", "score": 1.0}],
                [{"name": "style", "score": 2.0}],
                [{"name": "style", "score": 0.0}],
                None,
                [{"name": "bad name", "score": 3.0}],
            ],
            "dimensions": [None, None, None, '{"style": 5, "facts": 3}', None],  # p2: stored before `dims`
        },
        schema_overrides={"dims": dims},
    )
    out = judge.sample_dims(judgments).sort("prompt_id")
    assert out.columns == ["prompt_id", "sample_idx", "dim_facts", "dim_style"]
    assert out.rows() == [("p1", 0, 1.0, 3.0), ("p2", 0, 3.0, 5.0)]  # p3's only dimension is not a column name
    assert judge.sample_dims(judgments, "dim_b_").columns[2:] == ["dim_b_facts", "dim_b_style"]
    tags = pl.DataFrame(
        {
            "prompt_id": ["p1", "p1", "p2"],
            "sample_idx": [0, 0, 0],
            "parse_status": ["ok", "ok", "unparseable"],
            "tags": [["b", "a"], ["a", "c"], ["z"]],
        }
    )
    assert judge.sample_tags(tags).rows() == [("p1", 0, ["a", "b", "c"])]


def test_dimensions_become_score_terms_and_an_old_run_without_dims_still_reads(tmp_path):
    from factory.graph import RunGraph
    from tests.test_run import local_run, synthetic_cfg

    dims = ["judge.dimensions=true", "judge.dimension_names=[question,facts]", "judge.tags=true",
            "judge.tag_values=[short,long,off_topic]", "pairs.terms=[{source: dim_facts, weight: 0.3}]"]  # fmt: skip
    run_cfg = synthetic_cfg(tmp_path, 4, *dims)
    manifest = local_run(run_cfg)
    scored = manifest.scored
    assert {"dim_question", "dim_facts", "tags"} <= set(scored.columns)
    judged = scored.filter(pl.col("quality").is_not_null())
    assert judged.height == 8 and judged["dim_facts"].null_count() == 0 and judged["tags"].null_count() == 0
    assert set(judged["tags"].explode()) <= {"short", "long", "off_topic"}
    assert [t["name"] for t in manifest["pairs"]["terms"]] == ["length", "quality", "dim_facts"]
    # A judgments part written before `dims` and `tags` existed: the JSON column is read in their place.
    store = RunStore(run_cfg.output_dir)
    old = store.read("judgments").with_columns(
        pl.col("dims").map_elements(lambda d: json.dumps({x["name"]: x["score"] for x in d}), return_dtype=pl.String)
        .alias("dimensions")
    ).drop("dims", "tags")  # fmt: skip
    for part in store.parts("judgments"):
        store.fs.rm(part)
    store.append("judgments", old)
    rescored = RunGraph(run_cfg).scored(store, store.read("prompts"), manifest["fingerprints"]).scored
    cols = ["prompt_id", "sample_idx", "dim_question", "dim_facts"]
    assert rescored.select(cols).sort(cols[:2]).equals(scored.select(cols).sort(cols[:2]))


# -- a prompt's requests go out together (issue 24: a server's prefix cache serves the shared prefix) ------------
def _order_cfg(tmp_path, *extra):
    from factory import config
    from tests.synthetic import write_prompts

    prompts = write_prompts(tmp_path / "prompts.jsonl", 4)
    rubric = tmp_path / "rubric.txt"
    rubric.write_text("Rate {answer} from 0 to {scale_max}.")
    return config.load(
        None,
        [f"output_dir={tmp_path / 'run'}", f"prompts.path={prompts}", "sampler.k=3", f"judge.rubric_file={rubric}",
         "judge.engine.batch_size=64", "progress_interval_s=60", *extra],
    )  # fmt: skip


def _runs(order: list) -> list:
    """The prompt ids of `order`, one entry per run of equal neighbours."""
    return [p for i, p in enumerate(order) if i == 0 or order[i - 1] != p]


def test_the_samples_and_judgments_of_a_prompt_are_dispatched_next_to_each_other(tmp_path):
    """The sampler plans a prompt's K keys together; the judge plans a prompt's requests together even when the
    stored samples interleave the prompts (they were stored as they finished)."""
    from factory.run import run

    from factory.rundir.hashing import derive_seed

    cfg = _order_cfg(tmp_path, "pairs.filter_before_judge=false")
    first = FakeEngine(shuffle=False)
    run(cfg, backend="local", build=lambda _c: first, command="t")
    sampled = [r.tag[0] for r in first.requests if r.json_schema is None]
    assert len(sampled) == 12 and len(_runs(sampled)) == 4  # each prompt's K=3 samples adjacent
    store = RunStore(str(tmp_path / "run"))
    interleaved = store.read("samples", SAMPLES).sort("sample_idx", "prompt_id")  # p1 0, p2 0, ..., p1 1, ...
    assert len(_runs(interleaved["prompt_id"].to_list())) == 12
    store.remove("samples")
    store.append("samples", interleaved.to_arrow().cast(SAMPLES))
    store.remove("judgments")
    again = FakeEngine(shuffle=False)
    run(cfg, backend="local", build=lambda _c: again, command="t")
    judged = [r for r in again.requests if r.json_schema is not None]
    assert len(judged) == 12 and not [r for r in again.requests if r.json_schema is None]
    keys = interleaved.select("prompt_id", "sample_idx").rows()
    prompt_of = {derive_seed(cfg.judge.sampling.seed, "judge", p, i, 0): p for p, i in keys}
    order = [prompt_of[r.seed] for r in judged]
    assert len(_runs(order)) == 4  # each prompt's 3 judge requests adjacent


def test_judge_work_from_stored_rows_is_grouped_by_prompt(tmp_path):
    from factory.graph import RunGraph
    from factory.prompts import load_prompts

    cfg = _order_cfg(tmp_path, "pairs.filter_before_judge=false")
    prompts, _ = load_prompts(cfg.prompts)
    graph = RunGraph(cfg)
    judge_stage = graph.stages(prompts)[1]
    ids = prompts["prompt_id"].to_list()[:2]
    rows = [
        {"prompt_id": p, "sample_idx": i, "sampler_fp": graph.fingerprints["sampler"], "error": None,
         "answer": f"answer {p} {i}", "reasoning": "", "created_at": 1.0}
        for i in range(2) for p in ids
    ]  # fmt: skip
    work = judge_stage.follow(rows)
    assert [(w["prompt_id"], w["sample_idx"]) for w in work] == [(ids[0], 0), (ids[0], 1), (ids[1], 0), (ids[1], 1)]


# -- hostile judge text: a lying or runaway judge costs time linear in what it sent ------------------------
def test_a_score_that_is_not_a_number_is_unparseable_never_a_number_from_the_reason():
    for text in (
        '{"score": "high", "reason": "I would give it a score of 7"}',
        '{"reason": "score: 80 at most", "score": null}',
        '{"score": {"value": 70}, "reason": "Score: 70"} 70/100',
    ):
        parsed = judge.parse_judgment(text, 100)
        assert parsed["status"] == "unparseable" and parsed["score"] is None, (text, parsed)
        assert parsed["reason"].startswith("the JSON score is not a number: "), parsed
    # a numeric key wins over a non-numeric one of lower rank, as before
    assert judge.parse_judgment('{"score": "n/a", "overall": 61}', 100)["score"] == 61


# Each case is built in the subprocess (1-5 MB of text), parsed, and its (status, score) printed. The
# subprocess has a generous timeout: the parser's old patterns took minutes on these (quadratic).
HOSTILE = {
    "digits": ('"1" * 2_000_000', ("unparseable", None)),
    "digits_then_verdict": ('"1" * 2_000_000 + chr(10) + json.dumps({"score": 85})', ("ok", 85.0)),
    "spaces_after_a_number": ('"1" + " " * 3_000_000 + "x"', ("unparseable", None)),
    "opened_thinks": ('"<think>" * 500_000', ("unparseable", None)),
    "thinks_then_verdict": ('"<think>a" * 300_000 + "</think>" + json.dumps({"score": 40})', ("ok", 40.0)),
    "nested_objects": ("'{\"a\":' * 1_000_000", ("unparseable", None)),
    "nested_blocks": ("('{\"a\":' * 900 + 'x') * 1_000", ("unparseable", None)),
    "score_words": ('"score: " * 700_000', ("unparseable", None)),
    "long_string_score": ("json.dumps({'score': '1' + ' ' * 2_000_000 + 'x'})", ("unparseable", None)),
    "verdict_after_5mb": ('"{x} " * 1_250_000 + json.dumps({"score": 70, "reason": "ok"})', ("ok", 70.0)),
}


def test_megabytes_of_hostile_judge_text_parse_and_end_as_what_they_are():
    import subprocess
    import sys

    code = "\n".join(
        [
            "import json",
            "from factory.stages.judge.parse import parse_judgment, parse_tags",
            "out = {}",
            *(
                f"text = {expr}\n"
                f"parsed = parse_judgment(text, 100); parse_tags(text)\n"
                f"out[{name!r}] = [parsed['status'], parsed['score']]"
                for name, (expr, _) in HOSTILE.items()
            ),
            "print(json.dumps(out))",
        ]
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout)
    assert got == {name: list(expected) for name, (_, expected) in HOSTILE.items()}
