"""Selection recipes side by side on the same stored samples, through the one kernel, no LLM call
(`factory pairs RUN_DIR --compare`, the report's "Strategies" table).

    strategy          picks (per group of valid samples)                               threshold
    dp_dpo            argmax / argmin of S = w_len x length + w_q x quality + terms    drop_ratio quantile
    quality           the same with w_len = 0                                          drop_ratio quantile
    long2short        shortest (if < max_chosen_tokens) vs longest                     none
    shortest_correct  among correct_column >= correct_min: shortest vs longest         none
    reward            highest vs lowest reward_column                                  none

    row out: strategy=shortest_correct  setting="quality >= 0.7"  groups=30  pairs_kept=12
             mean_token_gap=41.5  mean_quality_gap=0.02  chosen_shorter=1.0  mean_chosen_tokens=...

Every strategy keeps the run's other settings (filters, dedupe, pairing, cap, judges). mean_token_gap is
rejected - chosen tokens; mean_quality_gap chosen - rejected on the primary judge's 0..1 quality;
chosen_shorter the share of kept pairs whose chosen side has fewer tokens than its rejected side.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import polars as pl

from factory.config import PairsConfig
from factory.config.strategies import DP_DPO, PAIR_STRATEGIES, strategy_of
from factory.pairs.kernel import decide
from factory.pairs.marks import Prepared, prepare

STRATEGIES = PAIR_STRATEGIES  # every entry of factory/config/strategies.py, in its order


def setting(cfg: PairsConfig) -> str:
    """What a strategy's pairs depend on, in a few words."""
    return strategy_of(cfg).label(cfg)


def kept_summary(decisions: pl.DataFrame) -> dict[str, float | None]:
    """Means of a decision's kept pairs (None without a kept pair)."""
    kept = decisions.filter(pl.col("outcome") == "kept")
    if not kept.height:
        return dict.fromkeys(("mean_token_gap", "mean_quality_gap", "chosen_shorter", "mean_chosen_tokens",
                              "mean_rejected_tokens", "mean_chosen_quality"))  # fmt: skip
    row = kept.select(
        (pl.col("rejected_tokens") - pl.col("chosen_tokens")).cast(pl.Float64).mean().alias("mean_token_gap"),
        (pl.col("chosen_quality") - pl.col("rejected_quality")).mean().alias("mean_quality_gap"),
        (pl.col("chosen_tokens") < pl.col("rejected_tokens")).mean().alias("chosen_shorter"),
        pl.col("chosen_tokens").cast(pl.Float64).mean().alias("mean_chosen_tokens"),
        pl.col("rejected_tokens").cast(pl.Float64).mean().alias("mean_rejected_tokens"),
        pl.col("chosen_quality").mean().alias("mean_chosen_quality"),
    ).row(0, named=True)
    return {k: None if v is None else float(v) for k, v in row.items()}


def compare(
    scored: pl.LazyFrame | pl.DataFrame,
    cfg: PairsConfig,
    scale_max: float = 100.0,
    strategies: tuple[str, ...] = STRATEGIES,
    prepared: Prepared | None = None,
) -> list[dict[str, Any]]:
    """One row per strategy (see the module doc). `prepared`: the samples already prepared with a
    strategy that adds no term (dp_dpo, quality, long2short), reused for those three."""
    if prepared is None or strategy_of(cfg).own_term is not None:  # a gate or a ranked column: other samples
        prepared = prepare(scored, replace(cfg, strategy=DP_DPO), scale_max)
    rows = []
    for strategy in strategies:
        each = replace(cfg, strategy=strategy)
        samples = prepare(scored, each, scale_max) if strategy_of(each).own_term is not None else prepared
        decisions, stats = decide(samples, each)
        rows.append(
            {
                "strategy": strategy,
                "setting": setting(each),
                "groups": stats.groups,
                "samples_valid": stats.samples_valid,
                "pairs_kept": stats.pairs_kept,
                **kept_summary(decisions),
            }
        )
    return rows
