"""The judge-free exclusions (factory/pairs/prejudge.py): the kernel's own rules on the samples alone."""

import polars as pl

from factory import pairs
from factory.config import PairsConfig, TermConfig
from factory.pairs import prejudge


def samples(rows):
    return pl.DataFrame(
        rows,
        schema=["prompt_id", "sample_idx", "completion_tokens", "finish_reason", "error", "answer"],
        orient="row",
    ).with_columns(pl.lit("").alias("reasoning"))


ROWS = [
    ("p1", 0, 40, "stop", None, "Link 3, yes."),
    ("p1", 1, 90, "stop", None, "x" * 120),  # answer_chars above 80
    ("p1", 2, 512, "length", None, "cut"),  # truncated
    ("p1", 3, 41, "stop", None, "link 3,  YES."),  # duplicate of 0
    ("p1", 4, 30, "stop", "HTTP 500", None),  # engine error
    ("p2", 0, 20, "stop", None, "   "),  # empty answer
    ("p2", 1, 25, "stop", None, "Link 4."),
]
RULE = PairsConfig(terms=[TermConfig(source="answer_chars", exclude_above=80)])


def test_each_judge_free_reason_is_the_kernels_own():
    marked = prejudge.passing(samples(ROWS), RULE).sort("prompt_id", "sample_idx")
    assert marked["exclusion"].to_list() == [
        None, "answer_chars", "truncated", "duplicate", "engine_error", "empty_answer", None
    ]  # fmt: skip


def test_judge_terms_and_judge_filters_play_no_part_before_judging():
    cfg = PairsConfig(
        judges=["quality", "reward_rm"],
        terms=[TermConfig(source="quality", name="q", exclude_below=0.9), TermConfig(source="reward_rm", weight=0.3),
               TermConfig(source="answer_chars", exclude_above=80)],
    )  # fmt: skip
    marked = prejudge.passing(samples(ROWS), cfg)  # no quality or reward column: none is read
    assert marked.filter(pl.col("exclusion").is_null()).height == 2


def test_the_build_counts_a_sample_never_judged_under_its_rule_reason_not_no_judgment():
    """The kernel on the scored frame where only the passing samples were judged gives the same
    exclusion counts as when every sample was judged."""
    frame = samples(ROWS)
    passed = prejudge.passing(frame, RULE).filter(pl.col("exclusion").is_null())
    everything = frame.with_columns(pl.lit(0.5).alias("quality"))
    judged_only = everything.join(passed.select("prompt_id", "sample_idx").with_columns(pl.lit(0.5).alias("q")),
                                  on=["prompt_id", "sample_idx"], how="left")  # fmt: skip
    judged_only = judged_only.with_columns(pl.col("q").alias("quality")).drop("q")
    before = pairs.select(everything, RULE)[1]
    after = pairs.select(judged_only, RULE)[1]
    assert after.samples_excluded == before.samples_excluded
    assert after.samples_excluded["no_judgment"] == 0 and after.samples_excluded["duplicate"] == 1
    assert after.pairs_kept == before.pairs_kept


def test_a_missing_dimension_is_its_own_reason():
    frame = samples(
        [("p1", 0, 40, "stop", None, "a"), ("p1", 1, 41, "stop", None, "b"), ("p1", 2, 42, "stop", None, "c")]
    )
    frame = frame.with_columns(pl.lit(0.5).alias("quality"), pl.Series("dim_facts", [3.0, None, 4.0]))
    cfg = PairsConfig(terms=[TermConfig(source="dim_facts", weight=0.2)])
    stats = pairs.select(frame, cfg)[1]
    assert stats.samples_excluded["missing_dimension"] == 1 and stats.samples_excluded["no_judgment"] == 0


def test_a_strategy_gate_on_a_verifier_column_is_left_to_the_pair_build():
    # shortest_correct gating on verify_<name> (judge-free) crashed here: the gate has no pairs.terms entry.
    cfg = PairsConfig(strategy="shortest_correct", correct_column="verify_v", correct_min=1.0, terms=RULE.terms)
    assert prejudge.verifier_columns(cfg) == []
    frame = samples(ROWS).with_columns(pl.lit(0.0).alias("verify_v"))
    marked = prejudge.passing(frame, cfg).sort("prompt_id", "sample_idx")
    assert marked["exclusion"].to_list() == [
        None, "answer_chars", "truncated", "duplicate", "engine_error", "empty_answer", None
    ]  # fmt: skip
    gated = PairsConfig(strategy="shortest_correct", correct_column="quality_b", terms=RULE.terms)
    assert (
        prejudge.passing(samples(ROWS), gated)["exclusion"].to_list()
        == prejudge.passing(samples(ROWS), RULE)["exclusion"].to_list()
    )
