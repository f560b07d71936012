"""The judges' length bias, from what is stored (the report's "Bias audit"; numbers in report.json).

For every judge column of the scored samples (quality, quality_<judge>, reward_<name>):

    spearman         within each group of valid samples with >= 2 scored ones, the rank correlation
                     of the score with decoded tokens; the mean over the groups where both vary
                     (> 0: the judge scores longer replies higher)
    picks_longer     of the groups where the judge prefers something (scores differ), the share where
                     its top-scored sample is longer than its bottom-scored one (several tied at the
                     top or bottom: their mean length); picks_shorter the share where it is shorter.
                     "Always pick the longer" agrees with the judge on picks_longer of the groups.
    own pairs        the pairs the judge alone picks (strategy reward on its column: highest vs
                     lowest score, no length term), their rejected - chosen token gap: mean,
                     quantiles, share with the chosen side shorter; the current build's kept pairs
                     are a row of the same table
    scores           the distribution of every stored score (valid or not): n, distinct values, the
                     share at the bottom and at the top of the judge's scale, a 10-bin histogram (on
                     the scale for quality columns, on [min, max] for raw reward scores)

    rows in:   prompt_id  completion_tokens  quality          audit (quality):
               p1         100                0.9              spearman -1.0 (p1: longer, lower)
               p1         300                0.4              picks_longer 0.0, picks_shorter 1.0
               p1         200                0.6              own pairs: gap 200, chosen shorter 100%

Polars group-bys and numpy over whole columns: no loop over groups.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import polars as pl

from factory.config import PairsConfig, kinds
from factory.config.strategies import REWARD
from factory.pairs.kernel import decide
from factory.pairs.marks import Prepared, prepare

BINS = 10
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def judge_columns(names: list[str]) -> list[str]:
    """The judge columns among `names`, primary judge first."""
    return kinds.audited_columns(names)


def length_bias(frame: pl.DataFrame, column: str) -> dict[str, Any]:
    """spearman and picks_longer / picks_shorter of one judge column (see the module doc). `frame`:
    prompt_id, completion_tokens and the column, valid samples."""
    scored = frame.select(
        "prompt_id",
        pl.col("completion_tokens").cast(pl.Float64).alias("tokens"),
        pl.col(column).cast(pl.Float64).alias("s"),
    ).filter(pl.col("s").is_not_null() & pl.col("s").is_not_nan() & pl.col("tokens").is_not_null())
    groups = (
        scored.group_by("prompt_id")
        .agg(
            pl.len().alias("n"),
            pl.corr("s", "tokens", method="spearman").alias("rho"),
            pl.col("tokens").filter(pl.col("s") == pl.col("s").max()).mean().alias("top"),
            pl.col("tokens").filter(pl.col("s") == pl.col("s").min()).mean().alias("bottom"),
            (pl.col("s").max() > pl.col("s").min()).alias("prefers"),
        )
        .filter(pl.col("n") >= 2)
    )
    rho = groups["rho"].fill_nan(None).drop_nulls()
    prefers = groups.filter(pl.col("prefers"))
    longer = int((prefers["top"] > prefers["bottom"]).sum())
    shorter = int((prefers["top"] < prefers["bottom"]).sum())
    return {
        "judge": column,
        "samples": scored.height,
        "groups": groups.height,
        "spearman": float(rho.mean()) if rho.len() else None,  # type: ignore[arg-type]
        "spearman_groups": rho.len(),
        "groups_preferring": prefers.height,
        "picks_longer": longer / prefers.height if prefers.height else None,
        "picks_shorter": shorter / prefers.height if prefers.height else None,
    }


def gap_summary(name: str, decisions: pl.DataFrame) -> dict[str, Any]:
    """The rejected - chosen token gap of the kept pairs of a decision."""
    gap = (
        decisions.filter(pl.col("outcome") == "kept")
        .select((pl.col("rejected_tokens") - pl.col("chosen_tokens")).cast(pl.Float64))
        .to_series()
    )
    row: dict[str, Any] = {"pairs": name, "n": gap.len()}
    row["mean"] = float(gap.mean()) if gap.len() else None  # type: ignore[arg-type]
    for q in QUANTILES:
        row[f"p{round(q * 100)}"] = float(gap.quantile(q, "linear")) if gap.len() else None  # type: ignore[arg-type]
    row["chosen_shorter"] = float((gap > 0).mean()) if gap.len() else None  # type: ignore[arg-type]
    return row


def score_distribution(values: pl.Series, column: str, scale: float | None) -> dict[str, Any]:
    """n, distinct, share at the scale's bottom and top, and a 10-bin histogram. `scale`: the judge's
    scale_max for a quality column (stored 0..1, shown 0..scale), None for a raw reward score (bins on
    [min, max], no bottom/top share)."""
    x = values.cast(pl.Float64).fill_nan(None).drop_nulls().to_numpy()
    row: dict[str, Any] = {"judge": column, "n": len(x), "distinct": int(len(np.unique(x)))}
    if scale is not None:
        lo, hi = 0.0, 1.0
        row["range"] = f"0..{scale:g}"
        row["at_bottom"] = float(np.mean(x == 0.0)) if len(x) else None
        row["at_top"] = float(np.mean(x == 1.0)) if len(x) else None
    else:
        lo, hi = (float(x.min()), float(x.max())) if len(x) else (0.0, 1.0)
        row["range"] = f"{lo:.3g}..{hi:.3g}"
        row["at_bottom"] = row["at_top"] = None
    counts, _ = np.histogram(x, bins=BINS, range=(lo, hi if hi > lo else lo + 1.0))
    row["histogram"] = [int(c) for c in counts]
    return row


def bias_audit(
    scored: pl.DataFrame,
    prepared: Prepared,
    decisions: pl.DataFrame,
    cfg: PairsConfig,
    scale_max: float = 100.0,
    scales: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The audit of every judge column of `scored` (see the module doc). `prepared` / `decisions`: the
    current build's (its valid samples, its kept pairs); `scales`: column -> the judge's scale_max
    (quality columns; default scale_max)."""
    columns = [c for c in judge_columns(scored.columns) if scored[c].drop_nulls().len()]
    valid = scored.select(pl.col("prompt_id", "completion_tokens", *columns).gather(prepared.valid["row"]))
    gaps = [gap_summary(f"build ({cfg.strategy})", decisions)]
    for column in columns:
        own = replace(cfg, strategy=REWARD, reward_column=column, judges=[column])
        gaps.append(gap_summary(f"{column} alone", decide(prepare(scored, own, scale_max), own)[0]))
    scales = scales or {}
    return {
        "length_bias": [length_bias(valid, c) for c in columns],
        "gaps": gaps,
        "scores": [
            score_distribution(scored[c], c, None if kinds.judge_kind(c).scale == "raw" else scales.get(c, scale_max))
            for c in columns
        ],
    }
