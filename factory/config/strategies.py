"""The pair strategies, one entry each: everything else asks this table instead of comparing names.

    strategy          weights of S (length, quality, terms, own)  own term              delta  outcome rule
    dp_dpo            w_len, w_quality, the terms' weights        -                     yes    margin
    quality           0, 1, the terms' weights                    -                     yes    margin
    long2short        1, 0, 0 ...                                 -                     no     chosen short enough
    shortest_correct  1, 0, 0 ..., 0                              not_correct (a gate)  no     margin
    reward            0, 0, 0 ..., 1                              ranked                no     margin

An own term is added after pairs.terms (factory/pairs/terms.py): shortest_correct's gate on
pairs.correct_column (a filter: below pairs.correct_min is excluded as not_correct), reward's ranked
pairs.reward_column. `delta` says whether the strategy drops pairs below a margin threshold (drop_ratio or
min_margin; the published recipes without one keep every untied pair); `chosen_max_tokens` the outcome rule
of long2short (a pair whose chosen side has max_chosen_tokens tokens or more is no_short_sample).
A new strategy is one entry here and, if it reads a setting, its key in factory/config/pairs.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

NOT_CORRECT = "not_correct"  # shortest_correct's exclusion reason (pairs.correct_min)
RANKED = "ranked"  # the reward strategy's one term (pairs.reward_column)


@dataclass(frozen=True)
class OwnTerm:
    """The term a strategy adds after pairs.terms: its name, the config key of its column, the column it
    reads and the gate's lower bound (None: no gate)."""

    name: str
    key: str
    column: Callable[[Any], str]
    exclude_below: Callable[[Any], Optional[float]] = lambda cfg: None


@dataclass(frozen=True)
class Strategy:
    """One pair strategy. `weights(cfg)`: the weights of length, quality, each pairs.terms entry and the
    own term (when there is one), in that order; `label(cfg)`: what its pairs depend on, in a few words
    (`factory pairs --compare`, the report's Strategies table)."""

    name: str
    weights: Callable[[Any], list[float]]
    label: Callable[[Any], str]
    own_term: Optional[OwnTerm] = None
    delta: bool = False
    chosen_max_tokens: bool = False


def _extra(cfg: Any) -> list[float]:
    return [entry.weight for entry in cfg.terms]


def _none(cfg: Any) -> list[float]:
    return [0.0] * len(cfg.terms)


# In the order `factory pairs --compare` and the report list them.
STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy(
            "dp_dpo",
            lambda cfg: [cfg.w_len, cfg.quality_weight, *_extra(cfg)],
            lambda cfg: f"w_len {cfg.w_len:g}, w_q {cfg.quality_weight:g}, drop {cfg.drop_ratio:g}",
            delta=True,
        ),
        Strategy(
            "quality", lambda cfg: [0.0, 1.0, *_extra(cfg)], lambda cfg: f"w_len 0, drop {cfg.drop_ratio:g}", delta=True
        ),
        Strategy(
            "long2short",
            lambda cfg: [1.0, 0.0, *_none(cfg)],
            lambda cfg: f"chosen < {cfg.max_chosen_tokens} tokens",
            chosen_max_tokens=True,
        ),
        Strategy(  # length alone, among the samples the gate lets through
            "shortest_correct",
            lambda cfg: [1.0, 0.0, *_none(cfg), 0.0],
            lambda cfg: f"{cfg.correct_column} >= {cfg.correct_min:g}",
            OwnTerm(NOT_CORRECT, "pairs.correct_column", lambda cfg: cfg.correct_column, lambda cfg: cfg.correct_min),
        ),
        Strategy(  # the ranked column alone
            "reward",
            lambda cfg: [0.0, 0.0, *_none(cfg), 1.0],
            lambda cfg: f"by {cfg.reward_column or cfg.judges[0]}",
            OwnTerm(RANKED, "pairs.reward_column", lambda cfg: cfg.reward_column or cfg.judges[0]),
        ),
    )
}
PAIR_STRATEGIES = tuple(STRATEGIES)
# The strategies other commands name: the base every other build is measured against (its samples carry no
# strategy's own term: the sweep, dp_sft), the report's long2short table, one judge column ranked alone.
DP_DPO, LONG2SHORT, REWARD = "dp_dpo", "long2short", "reward"


def strategy_of(cfg: Any) -> Strategy:
    """The entry of `cfg.strategy` (a PairsConfig; its own check names pairs.strategy when it is unknown)."""
    return STRATEGIES[cfg.strategy]
