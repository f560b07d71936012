"""The judges' bias audit (factory.pairs.audit) on frames whose answers are known by construction."""

import numpy as np
import polars as pl
import pytest

from factory import pairs
from factory.config import PairsConfig
from factory.pairs.audit import bias_audit, judge_columns, length_bias, score_distribution
from tests.pairs.test_kernel import scored


def audit_of(frame: pl.DataFrame, cfg: PairsConfig | None = None) -> dict:
    cfg = cfg or PairsConfig(drop_ratio=0.0)
    prepared = pairs.prepare(frame, cfg)
    decisions, _ = pairs.decide(prepared, cfg)
    return bias_audit(frame, prepared, decisions, cfg)


def test_a_judge_that_loves_length_and_a_reward_model_that_hates_it():
    # quality rises with length in every group; reward_rm falls with it.
    rows, rewards = [], []
    for g in range(3):
        for i, tokens in enumerate((100, 200, 300, 400)):
            rows.append((f"p{g}", i, tokens, 0.2 * (i + 1)))
            rewards.append(-float(tokens) + g)
    frame = scored(rows).with_columns(pl.Series("reward_rm", rewards))
    audit = audit_of(frame)
    bias = {r["judge"]: r for r in audit["length_bias"]}
    assert bias["quality"]["spearman"] == pytest.approx(1.0) and bias["reward_rm"]["spearman"] == pytest.approx(-1.0)
    assert bias["quality"]["picks_longer"] == 1.0 and bias["quality"]["picks_shorter"] == 0.0
    assert bias["reward_rm"]["picks_longer"] == 0.0 and bias["reward_rm"]["picks_shorter"] == 1.0
    assert bias["quality"]["groups"] == 3 and bias["quality"]["samples"] == 12
    gaps = {r["pairs"]: r for r in audit["gaps"]}
    assert gaps["quality alone"]["mean"] == -300 and gaps["quality alone"]["chosen_shorter"] == 0.0
    assert gaps["reward_rm alone"]["mean"] == 300 and gaps["reward_rm alone"]["chosen_shorter"] == 1.0
    assert gaps["build (dp_dpo)"]["n"] == 3


def test_ties_at_the_top_use_the_mean_length_and_groups_without_a_preference_are_set_apart():
    frame = pl.DataFrame(
        {
            "prompt_id": ["a"] * 3 + ["b"] * 2 + ["c"] * 2,
            "completion_tokens": [100, 500, 200, 100, 200, 100, 300],
            "quality": [0.9, 0.9, 0.1, 0.5, 0.5, 0.2, 0.8],
        }
    )
    row = length_bias(frame, "quality")
    # a: top mean (100 + 500) / 2 = 300 > 200 -> longer; b: no preference; c: top 300 > 100 -> longer
    assert row["groups"] == 3 and row["groups_preferring"] == 2 and row["picks_longer"] == 1.0
    # spearman: b is constant (no correlation), so the mean is over a and c
    assert row["spearman_groups"] == 2


def test_within_group_spearman_matches_a_direct_computation():
    rng = np.random.default_rng(3)
    frame = pl.DataFrame(
        {
            "prompt_id": np.repeat([f"p{i}" for i in range(40)], 6),
            "completion_tokens": rng.integers(50, 500, 240),
            "quality": rng.integers(0, 10, 240) / 10,
        }
    )
    expected = []
    for _, group in frame.group_by("prompt_id"):
        a = group["quality"].rank("average").to_numpy()
        b = group["completion_tokens"].cast(pl.Float64).rank("average").to_numpy()
        if a.std() > 0 and b.std() > 0:
            expected.append(np.corrcoef(a, b)[0, 1])
    assert length_bias(frame, "quality")["spearman"] == pytest.approx(np.mean(expected))


def test_score_distribution_shows_a_judge_that_gives_the_ends_of_its_scale():
    values = pl.Series([0.0] * 50 + [1.0] * 44 + [0.55] * 6)
    row = score_distribution(values, "quality", 10.0)
    assert row["at_bottom"] == 0.5 and row["at_top"] == 0.44 and row["distinct"] == 3
    assert row["histogram"] == [50, 0, 0, 0, 0, 6, 0, 0, 0, 44] and row["range"] == "0..10"
    raw = score_distribution(pl.Series([-2.0, 0.0, 8.0, None]), "reward_rm", None)
    assert raw["n"] == 3 and raw["at_top"] is None and raw["histogram"][0] == 1 and raw["histogram"][-1] == 1


def test_judge_columns_are_found_primary_first_and_the_spread_is_not_one():
    names = ["reward_b", "quality_spread", "answer", "quality_r1", "quality", "dim_self"]
    assert judge_columns(names) == ["quality", "quality_r1", "reward_b"]
