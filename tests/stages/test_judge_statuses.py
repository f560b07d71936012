"""Dimensions and tags that cannot be lost: a reply lacking a requested dimension or cut at max_tokens
is not ok (its own parse status), is re-asked within judge.max_reasks, then counted; the schema
bounds the tag list; preflight says when max_tokens cannot hold the JSON asked for."""

import json

import polars as pl
import pytest

from factory import config
from factory.config import ConfigError, EngineConfig, JudgeConfig
from factory.engines.base import Completion
from factory.graph import RunGraph
from factory.stages import judge

DIMS = ["facts", "style"]


class Replies:
    """Answers each judge request with the next scripted (text, finish_reason); records the requests."""

    supports_json_schema = True
    concurrent_batches = True
    model_name = "scripted"

    def __init__(self, *replies):
        self.replies, self.requests = list(replies), []

    def generate(self, requests, on_done=None):
        out = []
        for request in requests:
            self.requests.append(request)
            text, finish = self.replies.pop(0)
            out.append(Completion(tag=request.tag, text=text, finish_reason=finish, completion_tokens=len(text)))
        for completion in out:
            on_done(completion)
        return out


def row():
    messages = [{"role": "user", "content": "rate"}]
    return {"prompt_id": "p1", "sample_idx": 0, "sampler_fp": "s", "vote": 0, "seed": 7, "messages": messages}


def judged(engine, **kw):
    cfg = JudgeConfig(engine=EngineConfig(batch_size=4), dimensions=True, dimension_names=DIMS, **kw)
    return judge.judge_batch(engine, [row()], None, cfg, "jfp")[0]


FULL = json.dumps({"score": 80, "dimensions": {"facts": 70, "style": 60}, "reason": "r"})
LACKS = json.dumps({"score": 80, "dimensions": {"facts": 70}, "reason": "r"})


def test_a_missing_dimension_is_re_asked_then_usable():
    engine = Replies((LACKS, "stop"), (FULL, "stop"))
    out = judged(engine)
    assert out["parse_status"] == "retried_ok" and out["attempts"] == 2 and out["quality"] == 0.8
    assert "style" in engine.requests[1].messages[-1]["content"]  # the correction names the dimensions


def test_a_missing_dimension_never_given_is_counted_not_ok():
    out = judged(Replies((LACKS, "stop"), (LACKS, "stop")), max_reasks=1)
    assert out["parse_status"] == "missing_dimensions" and out["quality"] is None
    assert "style missing" in out["reason"]


def test_a_cut_reply_is_truncated_even_with_a_score():
    cut = '{"score": 80, "dimensions": {"facts": 70, "style": 60}, "tags": ["price", "price", "pri'
    out = judged(Replies((cut, "length")), max_reasks=0)
    assert out["parse_status"] == "truncated" and out["quality"] is None
    assert judged(Replies((cut, "length"), (FULL, "stop")))["parse_status"] == "retried_ok"


def test_statuses_reach_the_scored_frame_as_unjudged_and_a_dim_term_counts_its_own_reason():
    from factory import pairs
    from factory.config import PairsConfig, TermConfig

    votes = pl.DataFrame(
        {"prompt_id": ["a"] * 3, "sample_idx": [0, 1, 2], "score": [80.0, 80.0, 50.0], "quality": [0.8, None, 0.5],
         "parse_status": ["ok", "missing_dimensions", "ok"],
         "dims": [[{"name": "facts", "score": 7.0}], None, None]},
    )  # fmt: skip
    samples = pl.DataFrame(
        {
            "prompt_id": ["a"] * 3,
            "sample_idx": [0, 1, 2],
            "completion_tokens": [10, 20, 30],
            "finish_reason": ["stop"] * 3,
            "error": [None] * 3,
            "answer": ["x", "y", "z"],
            "reasoning": [""] * 3,
        },
    )
    scored = judge.with_quality(samples, votes).join(
        judge.sample_dims(votes), on=["prompt_id", "sample_idx"], how="left"
    )
    stats = pairs.select(scored, PairsConfig(terms=[TermConfig(source="dim_facts", weight=0.1)]))[1]
    # sample 1: its judgment is not usable (no_judgment); sample 2: judged, but no facts dimension
    assert stats.samples_excluded["no_judgment"] == 1 and stats.samples_excluded["missing_dimension"] == 1


def test_preflight_says_when_max_tokens_cannot_hold_the_json():
    base = ["judge.dimensions=true", "judge.tags=true", "judge.tag_values=[price,stock]"]
    with pytest.raises(
        ConfigError, match=r"judge\.sampling\.max_tokens: 16 cannot hold the JSON asked for .*dimensions"
    ):
        RunGraph(config.load("conf/demo.yaml", [*base, "judge.sampling.max_tokens=16"])).preflight(credentials=False)
    RunGraph(config.load("conf/demo.yaml", [*base, "judge.sampling.max_tokens=256"])).preflight(credentials=False)
    with pytest.raises(ConfigError, match=r"judges\.b\.sampling\.max_tokens: 4 "):
        RunGraph(config.load("conf/demo.yaml", ["judges.b.sampling.max_tokens=4"])).preflight(credentials=False)


def test_the_tag_list_is_bounded_and_fingerprints_stay():
    schema = judge.judge_schema(100, tags=True, tag_values=["price", "stock", "size", "color"])["properties"]["tags"]
    assert schema["maxItems"] == 4 and schema["uniqueItems"] is True
    # the schema is not part of a judge's identity: stored judgments keep their keys
    plain = JudgeConfig(tags=True, tag_values=["price"])
    assert judge.judge_fingerprint(plain, "m", "r {answer}") == judge.judge_fingerprint(
        JudgeConfig(tags=True, tag_values=["price"], max_reasks=5), "m", "r {answer}"
    )


def test_the_pointwise_and_the_group_judge_count_re_ask_and_truncate_alike():
    # One re-ask loop for both (factory/stages/judge/reask.py). Round 0 gives no verdict; the re-ask is cut at
    # max_tokens before one: truncated (the key to raise), its reason naming the first failure, 2 attempts.
    cfg = config.load(None, ["judge.max_reasks=1"]).judge
    point = judge.judge_batch(Replies(("no verdict", "stop"), ('{"sco', "length")), [row()], None, cfg, "jfp")[0]
    group_cfg = config.load(None, ["judge.mode=group", "judge.max_reasks=1"]).judge
    engine = Replies(('{"A": {"score": 70, "reason": "r"}}', "stop"), ('{"B": {"sco', "length"))
    group = {"prompt_id": "p1", "sampler_fp": "s", "vote": 0, "members": [3, 1], "created": [1.0, 2.0],
             "group_key": "g", "group_pool": "pool", "seed": 5,
             "messages": [{"role": "user", "content": "A, B"}]}  # fmt: skip
    first, second = judge.group_judge_batch(engine, [group], None, group_cfg, "jfp")
    assert (first["label"], first["parse_status"], first["score"]) == ("A", "ok", 70)  # its first usable score
    for out in (point, second):
        assert out["parse_status"] == "truncated" and out["quality"] is None and out["reasks"] == 1
        assert out["reason"].startswith("reply cut at judge.sampling.max_tokens before a verdict (")
        assert "; after 1 re-ask(s), first: " in out["reason"]
    assert point["attempts"] == 2 and first["attempts"] + second["attempts"] == 2
    assert "no score for answer B" in second["reason"]  # the group's first failure, named
