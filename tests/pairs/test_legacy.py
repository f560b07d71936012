"""The two-term shorthand (pairs.w_len / pairs.w_quality) gives today's pairs.

Two references, both from the code before the kernel (commit d8814a3):
- fixtures/legacy_*: outputs that code computed on a fixed frame (fixtures/make_legacy_fixture.py);
- legacy_pairs.py: that module kept verbatim, the oracle for the property test on random frames.
"""

import json
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from factory import pairs
from factory.config import PairsConfig
from tests.pairs import legacy_pairs

FIXTURES = Path(__file__).parent / "fixtures"
LEGACY = json.loads((FIXTURES / "legacy_stats.json").read_text())
COMPARED = [
    "prompt_id", "chosen_idx", "rejected_idx", "chosen_tokens", "rejected_tokens", "chosen_quality",
    "rejected_quality", "chosen_score", "rejected_score", "margin", "outcome",
]  # fmt: skip
OLD_STATS = [
    "strategy", "groups", "groups_candidate", "pairs_kept", "pairs_dropped", "delta", "delta_rule", "samples_total",
    "samples_valid", "groups_excluded", "groups_too_few_by_reason", "mean_token_gap", "mean_quality_gap",
    "mean_chosen_tokens", "mean_rejected_tokens", "mean_chosen_quality", "mean_rejected_quality", "target",
    "prompts_needed_more",
]  # fmt: skip


def comparable(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select(COMPARED).with_columns(pl.col("outcome").cast(pl.String))


def expected(name: str) -> pl.DataFrame:
    groups = pl.read_parquet(FIXTURES / "legacy_groups.parquet")
    return comparable(groups.filter(pl.col("config") == name))


@pytest.mark.parametrize("name", sorted(LEGACY["configs"]))
def test_the_oracle_still_gives_the_frozen_outputs(name):
    scored = pl.read_parquet(FIXTURES / "legacy_scored.parquet")
    groups, stats = legacy_pairs.select_pairs(scored, PairsConfig(**LEGACY["configs"][name]))
    assert comparable(groups).equals(expected(name))
    assert stats.as_dict() == LEGACY["stats"][name]


@pytest.mark.parametrize("dedupe", ["off", "content"])
@pytest.mark.parametrize("name", sorted(LEGACY["configs"]))
def test_shorthand_gives_the_frozen_outputs_bit_for_bit(name, dedupe):
    # The fixture's texts are all distinct within a group, so deduplication changes nothing.
    scored = pl.read_parquet(FIXTURES / "legacy_scored.parquet")
    decisions, stats = pairs.select(scored, PairsConfig(dedupe=dedupe, **LEGACY["configs"][name]))
    assert comparable(decisions).equals(expected(name))  # floats compared exactly
    new = stats.as_dict()
    old = LEGACY["stats"][name]
    assert {k: new[k] for k in OLD_STATS} == {k: old[k] for k in OLD_STATS}
    excluded = {k: v for k, v in new["samples_excluded"].items() if k != "duplicate"}
    assert excluded == old["samples_excluded"] and new["samples_excluded"].get("duplicate", 0) == 0


SAMPLE = st.tuples(
    st.integers(1, 1000),  # tokens
    st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0, 0.6, 0.61, None]),  # quality, coarse so that ties happen
    st.sampled_from(["stop"] * 6 + ["length"]),
)
CONFIGS = st.fixed_dictionaries(
    {
        "w_len": st.sampled_from([0.0, 0.3, 0.6, 1.0]),
        "w_quality": st.sampled_from([None, 0.0, 0.5]),
        "drop_ratio": st.floats(0, 0.95),
        "strategy": st.sampled_from(["dp_dpo", "dp_dpo", "quality", "long2short"]),
        "norm": st.sampled_from(
            [{}, {"length_norm": "global"}, {"length_norm": "fixed", "length_max": 400.0}, {"quality_norm": "group"}]
        ),
        "min_margin": st.sampled_from([None, None, 0.0, 0.2]),
    }
)


def random_frame(groups: list[list[tuple]]) -> pl.DataFrame:
    rows = [(f"g{g:03d}", i, t, q, f) for g, samples in enumerate(groups) for i, (t, q, f) in enumerate(samples)]
    return pl.DataFrame(
        {
            "prompt_id": [r[0] for r in rows],
            "sample_idx": [r[1] for r in rows],
            "completion_tokens": [r[2] for r in rows],
            "quality": [r[3] for r in rows],
            "finish_reason": [r[4] for r in rows],
            "error": [None] * len(rows),
            "answer": [f"answer {r[0]}/{r[1]}" for r in rows],  # distinct texts: nothing is a duplicate
            "reasoning": [f"think {r[1]}" for r in rows],
        },
        schema_overrides={"completion_tokens": pl.Int64, "quality": pl.Float64, "error": pl.String},
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(groups=st.lists(st.lists(SAMPLE, min_size=1, max_size=8), min_size=1, max_size=25), setting=CONFIGS)
def test_shorthand_equals_the_oracle_on_any_frame(groups, setting):
    norm = setting.pop("norm")
    cfg = PairsConfig(**setting, **norm)
    frame = random_frame(groups)
    old_groups, old_stats = legacy_pairs.select_pairs(frame, cfg)
    new_groups, new_stats = pairs.select(frame, cfg)
    assert comparable(new_groups).equals(comparable(old_groups))
    new, old = new_stats.as_dict(), old_stats.as_dict()
    assert {k: new[k] for k in OLD_STATS} == {k: old[k] for k in OLD_STATS}
    assert new["samples_excluded"] == old["samples_excluded"] | {"duplicate": 0}
