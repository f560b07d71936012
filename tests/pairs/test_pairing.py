"""Pairing modes (one, best_vs_each, all_ranked), the cap, the threshold per pair, duplicates."""

import math

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from factory import pairs
from factory.config import PairsConfig
from tests.pairs.test_kernel import frame_of, prompts_for, scored

SAMPLE = st.tuples(
    st.integers(1, 1000),
    st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0, 0.6, 0.61]),  # coarse, so that ties happen
    st.sampled_from(["stop"] * 6 + ["length"]),
)
GROUPS = st.lists(st.lists(SAMPLE, min_size=1, max_size=7), min_size=1, max_size=20)


def oracle(frame: pl.DataFrame, w_len: float, pairing: str, drop: float, cap: int | None) -> dict:
    """The documented rules in plain Python: every candidate pair -> its outcome."""
    candidates = []
    for pid in sorted(set(frame["prompt_id"])):
        rows = frame.filter((pl.col("prompt_id") == pid) & (pl.col("finish_reason") == "stop")).to_dicts()
        if len(rows) < 2:
            continue
        l_max = max(r["completion_tokens"] for r in rows)
        for r in rows:
            length = 1 - r["completion_tokens"] / l_max
            r["S"] = (
                w_len * length + (1 - w_len) * r["quality"]
                if w_len not in (0.0, 1.0)
                else (r["quality"] if w_len == 0.0 else length)
            )
        order = sorted(rows, key=lambda r: (-r["S"], r["completion_tokens"], -r["quality"], r["sample_idx"]))
        n = len(order)
        if pairing == "one":
            ends = [(0, n - 1)]
        elif pairing == "best_vs_each":
            ends = [(0, b) for b in range(n - 1, 0, -1)]
        else:
            ends = [(a, b) for a in range(n) for b in range(a + 1, n)]
        group = [
            (pid, order[a]["sample_idx"], order[b]["sample_idx"], order[a]["S"] - order[b]["S"], a, b) for a, b in ends
        ]
        candidates += sorted(group, key=lambda c: (-c[3], c[4], -c[5]))
    margins = sorted(c[3] for c in candidates)
    delta = None
    if margins:
        h = (len(margins) - 1) * drop
        lo = math.floor(h)
        delta = margins[lo] + (h - lo) * (margins[min(lo + 1, len(margins) - 1)] - margins[lo])
    outcome, kept_in_group = {}, {}
    for pid, chosen, rejected, margin, _, _ in candidates:
        if margin <= 0:
            outcome[(pid, chosen, rejected)] = "tied"
        elif margin < delta:
            outcome[(pid, chosen, rejected)] = "below_margin"
        else:
            kept_in_group[pid] = kept_in_group.get(pid, 0) + 1
            over = cap is not None and kept_in_group[pid] > cap
            outcome[(pid, chosen, rejected)] = "over_cap" if over else "kept"
    return {"delta": delta, "outcome": outcome, "order": [c[:3] for c in candidates]}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    groups=GROUPS,
    w_len=st.sampled_from([0.0, 0.3, 0.6, 1.0]),
    drop=st.floats(0, 0.9),
    pairing=st.sampled_from(["one", "best_vs_each", "all_ranked"]),
    cap=st.sampled_from([None, 1, 2, 5]),
)
def test_every_pairing_follows_the_rules_pair_by_pair(groups, w_len, drop, pairing, cap):
    frame = frame_of(groups)
    cfg = PairsConfig(w_len=w_len, drop_ratio=drop, pairing=pairing, max_pairs_per_group=cap)
    decisions, stats = pairs.select(frame, cfg)
    expected = oracle(frame, w_len, pairing, drop, cap)
    got = {(r["prompt_id"], r["chosen_idx"], r["rejected_idx"]): r["outcome"] for r in decisions.iter_rows(named=True)}
    assert got == expected["outcome"]
    assert decisions.select("prompt_id", "chosen_idx", "rejected_idx").rows() == expected["order"]
    assert stats.delta == (None if expected["delta"] is None else pytest.approx(expected["delta"], abs=1e-12))
    # The tie ban and the threshold hold for every kept pair; no sample is paired with itself.
    kept = decisions.filter(pl.col("outcome") == "kept")
    assert (decisions["chosen_idx"] != decisions["rejected_idx"]).all()
    assert (kept["margin"] > 0).all() and (kept["margin"] >= (stats.delta or 0.0)).all()
    assert (kept.group_by("prompt_id").len()["len"].max() or 0) <= (cap or 10**9)
    # Counts add up: every candidate pair in one outcome, every group in one bucket.
    assert sum(stats.pairs_by_outcome.values()) == stats.pairs_candidate == decisions.height
    assert sum(stats.groups_by_outcome.values()) == stats.groups == len(groups)
    assert stats.pairs_kept == kept.height and stats.groups_by_outcome["kept"] == kept["prompt_id"].n_unique()


@settings(max_examples=60, deadline=None)
@given(groups=GROUPS, w_len=st.sampled_from([0.0, 0.6, 1.0]))
def test_a_cap_of_one_with_a_fixed_threshold_is_the_one_pair(groups, w_len):
    frame = frame_of(groups)

    def kept(pairing: str) -> list[tuple]:
        cfg = PairsConfig(w_len=w_len, min_margin=0.0, pairing=pairing, max_pairs_per_group=1)
        decisions, _ = pairs.select(frame, cfg)
        return decisions.filter(pl.col("outcome") == "kept").select("prompt_id", "chosen_idx", "rejected_idx").rows()

    assert kept("best_vs_each") == kept("one") == kept("all_ranked")


def test_best_vs_each_and_all_ranked_on_a_small_group():
    frame = scored([("a", 0, 100, 0.9), ("a", 1, 200, 0.9), ("a", 2, 300, 0.9), ("a", 3, 300, 0.9)])
    cfg = PairsConfig(w_len=1.0, drop_ratio=0.0, pairing="best_vs_each")
    decisions, stats = pairs.select(frame, cfg)
    # order: 0 (S 2/3), 1 (1/3), 2 and 3 (S 0; 2 before 3 by sample_idx); worst first
    assert decisions.select("chosen_idx", "rejected_idx", "outcome").rows() == [
        (0, 3, "kept"), (0, 2, "kept"), (0, 1, "kept"),
    ]  # fmt: skip
    ranked, ranked_stats = pairs.select(frame, PairsConfig(w_len=1.0, drop_ratio=0.0, pairing="all_ranked"))
    outcome = {(r["chosen_idx"], r["rejected_idx"]): r["outcome"] for r in ranked.iter_rows(named=True)}
    assert len(outcome) == 6 and outcome[(2, 3)] == "tied"  # equal S: the tie ban, per pair
    assert ranked_stats.pairs_by_outcome == {
        "kept": 5,
        "over_cap": 0,
        "below_margin": 0,
        "no_short_sample": 0,
        "tied": 1,
    }
    capped, capped_stats = pairs.select(
        frame, PairsConfig(w_len=1.0, drop_ratio=0.0, pairing="all_ranked", max_pairs_per_group=2)
    )
    kept = capped.filter(pl.col("outcome") == "kept").select("chosen_idx", "rejected_idx").rows()
    assert kept == [(0, 3), (0, 2)] and capped_stats.pairs_by_outcome["over_cap"] == 3


def test_delta_of_multi_pair_modes_is_the_quantile_of_every_candidate_margin():
    frame = scored([(g, i, t, 0.5) for g in ("a", "b") for i, t in enumerate((100, 200, 400, 800))])
    decisions, stats = pairs.select(frame, PairsConfig(w_len=1.0, drop_ratio=0.5, pairing="all_ranked"))
    margins = sorted(decisions["margin"].to_list())
    assert len(margins) == 12 and stats.delta == pytest.approx((margins[5] + margins[6]) / 2)
    assert stats.pairs_dropped == 6 and stats.pairs_kept == 6


def test_multi_pair_rows_keep_the_trl_shape_and_dp_sft_lists_each_chosen_once():
    frame = scored([("a", 0, 100, 0.9), ("a", 1, 200, 0.5), ("a", 2, 300, 0.1)])
    cfg = PairsConfig(w_len=0.5, drop_ratio=0.0, pairing="best_vs_each")
    built = pairs.build(frame, prompts_for(frame), cfg)
    assert built.pairs.columns[:4] == ["prompt", "chosen", "rejected", "prompt_id"]
    assert built.pairs.select("chosen_idx", "rejected_idx").rows() == [(0, 2), (0, 1)]
    assert built.pairs["chosen"][0].to_list() == [
        {"role": "assistant", "content": "<think>\nthink a/0\n</think>\n\nanswer a/0"}
    ]
    assert built.sft["dp_sft"].select("prompt_id", "sample_idx").rows() == [("a", 0)]


def test_long2short_in_best_vs_each_keeps_the_short_chosen_against_each_longer():
    frame = scored([("a", 0, 350, 0.2), ("a", 1, 900, 0.9), ("a", 2, 500, 0.9), ("b", 0, 450, 0.9), ("b", 1, 800, 0.1)])
    decisions, stats = pairs.select(frame, PairsConfig(strategy="long2short", pairing="best_vs_each"))
    kept = decisions.filter(pl.col("outcome") == "kept").select("prompt_id", "chosen_idx", "rejected_idx").rows()
    assert kept == [("a", 0, 1), ("a", 0, 2)]
    assert stats.groups_by_outcome["no_short_sample"] == 1 and stats.delta is None


# -- duplicates --------------------------------------------------------------------------------------------
def test_duplicates_count_once_keeping_the_lowest_sample_idx():
    frame = scored(
        [
            ("a", 3, 100, 0.9, "stop", None, "Link 3 has it."),
            ("a", 1, 300, 0.5, "stop", None, "link 3  HAS it."),  # same text: the lower sample_idx stays
            ("a", 0, 50, 0.9, "length", None, "Link 3 has it."),  # truncated: not a candidate, so not a copy
            ("a", 2, 200, 0.5, "stop", None, "Link 4 has it."),
        ]
    ).with_columns(pl.lit("same thinking").alias("reasoning"))
    decisions, stats = pairs.select(frame, PairsConfig(drop_ratio=0.0))
    assert stats.samples_excluded["duplicate"] == 1 and stats.samples_excluded["truncated"] == 1
    assert set(decisions.select("chosen_idx", "rejected_idx").row(0)) == {1, 2}
    # Duplicates are decided before judging (on what needs no judge): an unjudged original still
    # makes its later copies duplicates, which are never judged.
    unjudged = frame.with_columns(
        pl.when(pl.col("sample_idx") == 0)
        .then(pl.lit("stop"))
        .otherwise(pl.col("finish_reason"))
        .alias("finish_reason"),
        pl.when(pl.col("sample_idx").is_in([0, 3])).then(None).otherwise(pl.col("quality")).alias("quality"),
    )
    counts = pairs.select(unjudged, PairsConfig(drop_ratio=0.0))[1].samples_excluded
    assert counts["duplicate"] == 2 and counts["no_judgment"] == 1
    # content (the default, with reasoning): a different reasoning makes a different sample
    other = frame.with_columns(pl.Series("reasoning", ["short", "longer thinking", "x", "y"]))
    assert pairs.select(other, PairsConfig())[1].samples_excluded["duplicate"] == 0
    assert pairs.select(other, PairsConfig(dedupe="answer"))[1].samples_excluded["duplicate"] == 1
    assert "duplicate" not in pairs.select(frame, PairsConfig(dedupe="off"))[1].samples_excluded
