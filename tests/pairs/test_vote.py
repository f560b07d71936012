"""Several judges: quality averaged into S (combine terms) or majority vote; agreement."""

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from factory import pairs
from factory.config import PairsConfig, TermConfig
from tests.pairs.test_kernel import frame_of, scored

SAMPLE = st.tuples(
    st.integers(1, 1000),
    st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0, 0.6]),
    st.sampled_from(["stop"] * 6 + ["length"]),
)
GROUPS = st.lists(st.lists(SAMPLE, min_size=1, max_size=7), min_size=1, max_size=20)
REWARDS = st.lists(st.floats(-5, 5, allow_nan=False), min_size=200, max_size=200)


def with_judges(frame: pl.DataFrame, second: list[float]) -> pl.DataFrame:
    """A second GenRM judge (0..1) and a reward model over the same samples."""
    n = frame.height
    return frame.with_columns(
        pl.Series("quality_b", [round(abs(x) / 5, 2) for x in second[:n]], pl.Float64),
        pl.Series("reward_rm", second[:n], pl.Float64),
    )


def picks(frame: pl.DataFrame, cfg: PairsConfig) -> tuple[pl.DataFrame, dict]:
    decisions, stats = pairs.select(frame, cfg)
    return decisions.with_columns(pl.col("outcome").cast(pl.String)), stats.as_dict()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    groups=GROUPS,
    second=REWARDS,
    judge=st.sampled_from(["quality", "quality_b", "reward_rm"]),
    w_len=st.sampled_from([0.0, 0.4, 1.0]),
    drop=st.floats(0, 0.9),
    extra=st.booleans(),
)
def test_an_ensemble_of_one_judge_is_that_judge(groups, second, judge, w_len, drop, extra):
    frame = with_judges(frame_of(groups), second)
    terms = [TermConfig(source="answer_chars", weight=0.1)] if extra else []
    single = PairsConfig(w_len=w_len, drop_ratio=drop, judges=[judge], terms=terms)
    voted = PairsConfig(w_len=w_len, drop_ratio=drop, judges=[judge], terms=terms, combine="vote")
    by_terms, terms_stats = picks(frame, single)
    by_vote, vote_stats = picks(frame, voted)
    assert by_vote.equals(by_terms)
    assert {k: v for k, v in vote_stats.items() if k != "combine"} == {
        k: v for k, v in terms_stats.items() if k != "combine"
    }


@settings(max_examples=60, deadline=None)
@given(groups=GROUPS, w_len=st.sampled_from([0.0, 0.4, 1.0]), drop=st.floats(0, 0.9))
def test_the_primary_judge_alone_is_the_default_build(groups, w_len, drop):
    frame = frame_of(groups)
    default, _ = picks(frame, PairsConfig(w_len=w_len, drop_ratio=drop))
    voted, _ = picks(frame, PairsConfig(w_len=w_len, drop_ratio=drop, combine="vote"))
    assert voted.equals(default)


@settings(max_examples=80, deadline=None)
@given(groups=GROUPS, second=REWARDS, drop=st.floats(0, 0.9))
def test_a_vote_never_pairs_a_sample_with_itself_and_keeps_the_tie_ban(groups, second, drop):
    frame = with_judges(frame_of(groups), second)
    cfg = PairsConfig(w_len=0.3, drop_ratio=drop, judges=["quality", "quality_b", "reward_rm"], combine="vote")
    decisions, stats = pairs.select(frame, cfg)
    kept = decisions.filter(pl.col("outcome") == "kept")
    assert (decisions["chosen_idx"] != decisions["rejected_idx"]).all()
    assert (kept["margin"] > 0).all() and (kept["margin"] >= (stats.delta or 0.0)).all()
    assert sum(stats.groups_by_outcome.values()) == stats.groups == len(groups)


def test_majority_vote_and_ties_broken_by_the_ensemble_score():
    # Quality only (w_len 0). Judges: quality and quality_b prefer sample 0 over 2; quality_c the reverse.
    frame = scored([("a", 0, 100, 0.9), ("a", 1, 100, 0.5), ("a", 2, 100, 0.1)]).with_columns(
        pl.Series("quality_b", [0.8, 0.5, 0.2]), pl.Series("quality_c", [0.0, 0.5, 0.95])
    )
    cfg = PairsConfig(w_len=0.0, drop_ratio=0.0, judges=["quality", "quality_b", "quality_c"], combine="vote")
    decisions, stats = pairs.select(frame, cfg)
    row = decisions.row(0, named=True)
    assert (row["chosen_idx"], row["rejected_idx"]) == (0, 2)
    assert row["chosen_score"] == pytest.approx((0.9 + 0.8 + 0.0) / 3)  # the ensemble S: the judges' mean
    assert stats.judge_agreement == {
        "quality vs quality_b": 1.0, "quality vs quality_c": 0.0, "quality_b vs quality_c": 0.0,
    }  # fmt: skip
    # Two judges that disagree: one vote each, so the ensemble S breaks the tie.
    two = PairsConfig(w_len=0.0, drop_ratio=0.0, judges=["quality", "quality_c"], combine="vote")
    row = pairs.select(frame, two)[0].row(0, named=True)
    # ensemble means: 0.45, 0.5, 0.525 -> sample 2 first, sample 0 last
    assert (row["chosen_idx"], row["rejected_idx"]) == (2, 0)


def test_terms_combine_averages_the_judges_into_the_quality_term():
    frame = scored([("a", 0, 100, 0.9), ("a", 1, 100, 0.5)]).with_columns(pl.Series("quality_b", [0.1, 0.7]))
    decisions, stats = pairs.select(frame, PairsConfig(w_len=0.0, drop_ratio=0.0, judges=["quality", "quality_b"]))
    row = decisions.row(0, named=True)
    assert (row["chosen_idx"], row["chosen_score"], row["rejected_score"]) == (
        1,
        pytest.approx(0.6),
        pytest.approx(0.5),
    )
    assert stats.judge_agreement == {"quality vs quality_b": 0.0}
