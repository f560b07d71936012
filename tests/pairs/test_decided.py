"""pairs.decided: the groups sampler.adaptive stops growing are those the pair build keeps a pair of, at
the same threshold (one kernel, no second copy of its rules)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from factory import pairs
from factory.config import PairsConfig
from tests.pairs.test_kernel import prompts_for, scored


def random_groups(seed: int, n: int = 60):
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(n):
        spread = rng.choice([0.0, 2.0, 30.0])  # some tied, some apart
        for i in range(int(rng.integers(1, 6))):
            quality = None if rng.random() < 0.1 else float(np.clip(60 + spread * rng.standard_normal(), 0, 100)) / 100
            finish = "length" if rng.random() < 0.05 else "stop"
            rows.append((f"p{g:03d}", i, int(100 + rng.integers(0, 3) * 50 * (spread > 0)), quality, finish))
    return scored(rows)


@pytest.mark.parametrize(
    "cfg",
    [PairsConfig(), PairsConfig(min_margin=0.2), PairsConfig(w_len=0.0, drop_ratio=0.5),
     PairsConfig(strategy="long2short", max_chosen_tokens=120),
     PairsConfig(pairing="all_ranked", max_pairs_per_group=1)],
)  # fmt: skip
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_decided_groups_are_the_groups_the_build_keeps_a_pair_of(cfg, seed):
    frame = random_groups(seed)
    built = pairs.build(frame, prompts_for(frame), cfg)
    decided = pairs.decided(pairs.prepare(frame, cfg), cfg)
    assert sorted(decided.to_list()) == sorted(set(built.pairs["prompt_id"].to_list()))
    assert 0 < decided.len() < frame["prompt_id"].n_unique()  # some decided, some not: the test can fail


def test_a_given_threshold_decides_instead_of_the_groups_own():
    frame = scored([("a", 0, 100, 0.9), ("a", 1, 100, 0.1), ("b", 0, 100, 0.55), ("b", 1, 100, 0.5)])
    cfg = replace(PairsConfig(w_len=0.0), drop_ratio=0.5)
    prepared = pairs.prepare(frame, cfg)
    assert sorted(pairs.decided(prepared, cfg).to_list()) == ["a"]  # delta: the median of the margins 0.8 and 0.05
    assert sorted(pairs.decided(prepared, cfg, delta=0.01).to_list()) == ["a", "b"]
    assert pairs.decided(prepared, cfg, delta=0.9).to_list() == []
