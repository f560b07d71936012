import polars as pl
import pytest

from factory.config import SamplingConfig
from factory.engines.base import Completion
from factory.config import RunConfig
from factory.stages.sample import (
    sampler_fingerprint,
    SampleStage,
    current_samples,
    plan_samples,
    sample_batch,
    split_reasoning,
    token_split,
)
from tests.fakes import FakeEngine

PROMPTS = pl.DataFrame(
    {"prompt_id": ["a", "b"], "messages": [[{"role": "user", "content": "x"}], [{"role": "user", "content": "y"}]]}
)


def test_plan_is_every_missing_key_with_reproducible_seeds():
    plan = plan_samples(PROMPTS, None, k=3, sampler_fp="fp", base_seed=7)
    assert plan.height == 6
    assert set(zip(plan["prompt_id"], plan["sample_idx"])) == {(p, i) for p in "ab" for i in range(3)}
    again = plan_samples(PROMPTS, None, k=3, sampler_fp="fp", base_seed=7)
    assert plan["seed"].to_list() == again["seed"].to_list()
    assert plan["seed"].n_unique() == 6
    other = plan_samples(PROMPTS, None, k=3, sampler_fp="fp", base_seed=8)
    assert other["seed"].to_list() != plan["seed"].to_list()


def test_plan_skips_stored_keys_of_the_same_fingerprint_only():
    stored = pl.DataFrame({"prompt_id": ["a", "a", "b"], "sample_idx": [0, 1, 0], "sampler_fp": ["fp", "fp", "old"]})
    plan = plan_samples(PROMPTS, stored, k=2, sampler_fp="fp", base_seed=0)
    assert sorted(zip(plan["prompt_id"], plan["sample_idx"])) == [("b", 0), ("b", 1)]
    grown = plan_samples(PROMPTS, stored, k=4, sampler_fp="fp", base_seed=0)
    assert sorted(zip(grown["prompt_id"], grown["sample_idx"])) == [("a", 2), ("a", 3)] + [("b", i) for i in range(4)]


def test_plan_and_stage_name_a_missing_column():
    with pytest.raises(ValueError, match="prompt_id"):
        plan_samples(PROMPTS.drop("prompt_id"), None, k=2, sampler_fp="fp", base_seed=0)
    with pytest.raises(ValueError, match="messages"):
        SampleStage(RunConfig(), "fp", PROMPTS.drop("messages"))


@pytest.mark.parametrize(
    "text, reasoning, expected",
    [
        ("<think>plan</think>Answer.", None, ("plan", "Answer.")),
        ("<think>\n a \n</think>\n\nB", None, ("a", "B")),
        ("no tags at all", None, ("", "no tags at all")),
        ("<think>cut off mid-thought", None, ("cut off mid-thought", "")),
        ("plan</think>Answer", None, ("plan", "Answer")),
        ("Answer only", "api reasoning", ("api reasoning", "Answer only")),
    ],
)
def test_split_reasoning(text, reasoning, expected):
    assert split_reasoning(text, reasoning) == expected


def test_token_split_sums_to_the_completion_tokens():
    engine = FakeEngine()
    c = Completion(tag=0, completion_tokens=10)
    assert token_split(c, "a b c", "d e", engine) == (8, 2, 10)
    c = Completion(tag=0, completion_tokens=10, reasoning_tokens=6)
    assert token_split(c, "whatever", "x", engine) == (6, 4, 10)
    assert token_split(Completion(tag=0), "a b", "c", engine) == (2, 1, 3)


def test_sample_batch_puts_results_back_by_key_and_records_errors():
    plan = plan_samples(PROMPTS, None, k=2, sampler_fp="fp", base_seed=0).to_dicts()
    engine = FakeEngine(script={("b", 1): RuntimeError("prompt has 9000 tokens, max_model_len 2048")})
    rows = sample_batch(
        engine, SampleStage(RunConfig(), "fp", PROMPTS).render(plan), None, SamplingConfig(max_tokens=16), "fp"
    )
    assert [(r["prompt_id"], r["sample_idx"]) for r in rows] == [(p["prompt_id"], p["sample_idx"]) for p in plan]
    assert len(engine.requests) == 4
    by_key = {(r["prompt_id"], r["sample_idx"]): r for r in rows}
    failed = by_key[("b", 1)]
    assert failed["error"].startswith("prompt has 9000 tokens") and failed["finish_reason"] == "error"
    ok = by_key[("a", 0)]
    assert ok["error"] is None and ok["answer"].startswith("word")
    assert ok["reasoning_tokens"] + ok["answer_tokens"] == ok["completion_tokens"]
    seeds = {r.tag: r.seed for r in engine.requests}
    assert all(seeds[(r["prompt_id"], r["sample_idx"])] == r["seed"] for r in rows)


def test_current_samples_keeps_one_row_per_key_of_this_run():
    stored = pl.DataFrame(
        {
            "prompt_id": ["a", "a", "a", "z"],
            "sample_idx": [0, 0, 5, 0],
            "sampler_fp": ["fp", "fp", "fp", "fp"],
            "created_at": [1.0, 2.0, 1.0, 1.0],
            "answer": ["old", "new", "beyond k", "other prompt"],
        }
    )
    rows = current_samples(stored, "fp", pl.Series(["a"]), k=2)
    assert rows["answer"].to_list() == ["new"]


def test_retry_failed_plans_keys_whose_latest_row_failed_only():
    stored = pl.DataFrame(
        {
            "prompt_id": ["a", "a", "b", "b"],
            "sample_idx": [0, 1, 0, 0],
            "sampler_fp": ["fp"] * 4,
            "error": [None, "timeout", "timeout", None],
            "created_at": [1.0, 1.0, 1.0, 2.0],  # b/0 failed, then succeeded on a later run
        }
    )
    prompts = PROMPTS.filter(pl.col("prompt_id").is_in(["a", "b"]))
    assert plan_samples(prompts, stored, k=2, sampler_fp="fp", base_seed=0).select(
        "prompt_id", "sample_idx"
    ).rows() == [("b", 1)]
    retry = plan_samples(prompts, stored, k=2, sampler_fp="fp", base_seed=0, retry_failed=True)
    assert sorted(retry.select("prompt_id", "sample_idx").rows()) == [("a", 1), ("b", 1)]


def test_stop_strings_reach_every_request_and_the_fingerprint_only_when_set():
    from factory.config import EngineConfig
    from factory.rundir.hashing import stable_hash

    engine_cfg = EngineConfig()
    plain = sampler_fingerprint(engine_cfg, SamplingConfig(max_tokens=16), "m", "t")
    # A config without stop keeps the key samples had before the option existed.
    identity = {
        "kind": "llamacpp",
        "model": "m",
        "temperature": 0.8,
        "top_p": 0.95,
        "max_tokens": 16,
        "seed": 0,
        "template": "t",
    }
    assert plain == stable_hash(identity)
    assert sampler_fingerprint(engine_cfg, SamplingConfig(max_tokens=16, stop=["\n"]), "m", "t") != plain

    plan = plan_samples(PROMPTS, None, k=1, sampler_fp="fp", base_seed=0).to_dicts()
    engine = FakeEngine()
    rows = SampleStage(RunConfig(), "fp", PROMPTS).render(plan)
    sample_batch(engine, rows, None, SamplingConfig(max_tokens=16, stop=["\n", "Viewer:"]), "fp")
    assert [r.stop for r in engine.requests] == [["\n", "Viewer:"]] * 2
    assert engine.requests[0].chat_body()["stop"] == ["\n", "Viewer:"]
    sample_batch(engine, rows, None, SamplingConfig(max_tokens=16), "fp")
    assert "stop" not in engine.requests[-1].chat_body()
