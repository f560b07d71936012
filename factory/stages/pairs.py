"""Pair stage: normalized length + quality -> weighted score S -> chosen/rejected per group -> margin
threshold. Pure polars, no Python loop per group, no LLM call.

Input columns:  scored  -> prompt_id, sample_idx, completion_tokens, finish_reason, error, answer,
                           reasoning, quality (mean usable judge vote, 0..1, null when none)
                prompts -> prompt_id, messages
Output columns: pairs   -> factory.schemas.PAIRS (the contract TRL's DPOTrainer loads)

    S_i    = w_len * (1 - L_i / L_max) + w_q * (Q_i / Q_max)
    chosen = argmax S, rejected = argmin S, margin = S_chosen - S_rejected
    kept   = margin >= delta and margin > 0, delta = the drop_ratio quantile of all group margins
             (linear interpolation between the two nearest ranks, as numpy's default), or
             pairs.min_margin when set.

Valid samples: no engine error, not truncated (finish_reason != "length"), non-empty answer, and a
usable judgment. Every other sample is counted under its reason, and so is every group with fewer
than 2 valid samples, so the counts always add up.

Ties are broken deterministically: chosen is the highest S, then fewest tokens, then highest
quality, then lowest sample_idx; rejected is the lowest S, then most tokens, then lowest quality,
then highest sample_idx. With n >= 2 valid samples the two orders never pick the same sample, and a
group whose best and worst S are equal (margin 0, no preference) is never kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import polars as pl

from factory.config import PairsConfig
from factory.schemas import require_columns

SCORED_COLUMNS = ("prompt_id", "sample_idx", "completion_tokens", "finish_reason", "error", "answer", "reasoning", "quality")
EXCLUSION_REASONS = ("engine_error", "truncated", "empty_answer", "no_judgment")


@dataclass
class PairStats:
    groups: int = 0
    groups_candidate: int = 0
    pairs_kept: int = 0
    pairs_dropped: int = 0
    delta: float | None = None
    samples_valid: int = 0
    samples_excluded: dict[str, int] = field(default_factory=dict)
    groups_excluded: dict[str, int] = field(default_factory=dict)
    mean_token_gap: float | None = None
    mean_quality_gap: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def with_validity(scored: pl.LazyFrame) -> pl.LazyFrame:
    """Adds `exclusion` (null for a valid sample, else the first reason that applies)."""
    answer_empty = pl.col("answer").fill_null("").str.strip_chars().str.len_chars() == 0
    return scored.with_columns(
        pl.when(pl.col("error").is_not_null())
        .then(pl.lit("engine_error"))
        .when(pl.col("finish_reason") == "length")
        .then(pl.lit("truncated"))
        .when(answer_empty)
        .then(pl.lit("empty_answer"))
        .when(pl.col("quality").is_null())
        .then(pl.lit("no_judgment"))
        .otherwise(None)
        .alias("exclusion")
    )


def weights(cfg: PairsConfig) -> tuple[float, float]:
    if cfg.strategy == "quality":
        return 0.0, 1.0
    if cfg.strategy == "long2short":
        return 1.0, 0.0
    return cfg.w_len, cfg.quality_weight


def score_samples(valid: pl.LazyFrame, cfg: PairsConfig) -> pl.LazyFrame:
    """Adds L_max, Q_norm and S to valid samples."""
    w_len, w_q = weights(cfg)
    tokens = pl.col("completion_tokens").cast(pl.Float64)
    if cfg.length_norm == "group":
        l_max = tokens.max().over("prompt_id")
    elif cfg.length_norm == "global":
        l_max = tokens.max()
    else:
        l_max = pl.lit(float(cfg.length_max))  # type: ignore[arg-type]
    if cfg.quality_norm == "group":
        q_max = pl.col("quality").max().over("prompt_id")
        q_norm = pl.when(q_max > 0).then(pl.col("quality") / q_max).otherwise(0.0)
    else:  # quality is already score / scale_max
        q_norm = pl.col("quality")
    length_term = pl.when(l_max > 0).then(1.0 - tokens / l_max).otherwise(0.0)
    return valid.with_columns(
        (w_len * length_term + w_q * q_norm).alias("S"),
        l_max.alias("L_max"),
    )


def pick_sides(scored: pl.LazyFrame) -> pl.LazyFrame:
    """One row per group with >= 2 valid samples: chosen_* and rejected_* columns, margin."""
    best = ["S", "completion_tokens", "quality", "sample_idx"]
    order_chosen = dict(by=best, descending=[True, False, True, False])
    order_rejected = dict(by=best, descending=[False, True, False, True])
    sides = []
    for side, order in (("chosen", order_chosen), ("rejected", order_rejected)):
        for column, name in (
            ("sample_idx", "idx"),
            ("completion_tokens", "tokens"),
            ("quality", "quality"),
            ("S", "score"),
            ("reasoning", "reasoning"),
            ("answer", "answer"),
        ):
            sides.append(pl.col(column).sort_by(**order).first().alias(f"{side}_{name}"))
    return (
        scored.group_by("prompt_id")
        .agg(pl.len().alias("n_valid"), *sides)
        .filter(pl.col("n_valid") >= 2)
        .with_columns((pl.col("chosen_score") - pl.col("rejected_score")).alias("margin"))
    )


def long2short_sides(valid: pl.LazyFrame, max_chosen_tokens: int) -> pl.LazyFrame:
    """long2short: shortest valid sample chosen if under max_chosen_tokens, longest rejected."""
    return (
        pick_sides(score_samples(valid, PairsConfig(strategy="long2short")))
        .with_columns((pl.col("chosen_tokens") < max_chosen_tokens).alias("short_enough"))
    )


def render_side(reasoning: pl.Expr, answer: pl.Expr, include_reasoning: bool) -> pl.Expr:
    """One assistant message; the reasoning sits in <think> tags in the same form on both sides."""
    content = (
        pl.concat_str([pl.lit("<think>\n"), reasoning.fill_null(""), pl.lit("\n</think>\n\n"), answer.fill_null("")])
        if include_reasoning
        else answer.fill_null("")
    )
    return pl.concat_list(pl.struct(pl.lit("assistant").alias("role"), content.alias("content")))


def build_pairs(
    scored: pl.LazyFrame | pl.DataFrame, prompts: pl.LazyFrame | pl.DataFrame, cfg: PairsConfig
) -> tuple[pl.DataFrame, PairStats]:
    """Scored samples + prompts -> (pairs in the contract schema, stats)."""
    scored, prompts = scored.lazy(), prompts.lazy()
    require_columns(scored, SCORED_COLUMNS, "pairs")
    require_columns(prompts, ("prompt_id", "messages"), "pairs")
    marked = with_validity(scored).collect()
    stats = PairStats(groups=marked["prompt_id"].n_unique())
    excluded = marked.filter(pl.col("exclusion").is_not_null())["exclusion"].value_counts()
    stats.samples_excluded = {r: 0 for r in EXCLUSION_REASONS} | dict(zip(excluded["exclusion"], excluded["count"]))
    valid = marked.lazy().filter(pl.col("exclusion").is_null())
    stats.samples_valid = marked.height - sum(stats.samples_excluded.values())

    if cfg.strategy == "long2short":
        groups = long2short_sides(valid, cfg.max_chosen_tokens).collect()
        stats.groups_excluded["no_short_sample"] = groups.filter(~pl.col("short_enough")).height
        groups = groups.filter(pl.col("short_enough"))
        ties = groups.filter(pl.col("margin") <= 0)
        kept = groups.filter(pl.col("margin") > 0)
    else:
        groups = pick_sides(score_samples(valid, cfg)).collect()
        if cfg.min_margin is not None:
            stats.delta = float(cfg.min_margin)
        elif groups.height:
            stats.delta = float(groups["margin"].quantile(cfg.drop_ratio, interpolation="linear"))  # type: ignore[arg-type]
        ties = groups.filter(pl.col("margin") <= 0)
        kept = groups.filter((pl.col("margin") > 0) & (pl.col("margin") >= (stats.delta or 0.0)))
    stats.groups_candidate = groups.height + stats.groups_excluded.get("no_short_sample", 0)
    stats.groups_excluded["fewer_than_2_valid"] = stats.groups - stats.groups_candidate
    stats.groups_excluded["tied"] = ties.height
    stats.pairs_kept = kept.height
    stats.pairs_dropped = groups.height - kept.height - ties.height
    if kept.height:
        stats.mean_token_gap = float((kept["rejected_tokens"] - kept["chosen_tokens"]).mean())  # type: ignore[arg-type]
        stats.mean_quality_gap = float((kept["chosen_quality"] - kept["rejected_quality"]).mean())  # type: ignore[arg-type]

    pairs = (
        kept.lazy()
        .join(prompts.select("prompt_id", pl.col("messages").alias("prompt")), on="prompt_id", how="left")
        .select(
            "prompt",
            render_side(pl.col("chosen_reasoning"), pl.col("chosen_answer"), cfg.include_reasoning).alias("chosen"),
            render_side(pl.col("rejected_reasoning"), pl.col("rejected_answer"), cfg.include_reasoning).alias("rejected"),
            "prompt_id",
            pl.col("chosen_idx").cast(pl.Int64),
            pl.col("rejected_idx").cast(pl.Int64),
            pl.col("chosen_tokens").cast(pl.Int64),
            pl.col("rejected_tokens").cast(pl.Int64),
            "chosen_quality",
            "rejected_quality",
            "chosen_score",
            "rejected_score",
            "margin",
            pl.lit(cfg.strategy).alias("strategy"),
        )
        .sort("prompt_id")
        .collect()
    )
    return pairs, stats


def sft_filter_long(scored: pl.DataFrame, prompts: pl.DataFrame, max_tokens: int, include_reasoning: bool) -> pl.DataFrame:
    """Filter-long SFT baseline: every valid sample with at most `max_tokens` decoded tokens."""
    valid = with_validity(scored.lazy()).filter(pl.col("exclusion").is_null() & (pl.col("completion_tokens") <= max_tokens))
    return _sft_rows(valid, prompts.lazy(), "filter_long", include_reasoning)


def sft_dp(pairs: pl.DataFrame) -> pl.DataFrame:
    """DP-SFT: the chosen side of the kept pairs."""
    return pairs.select(
        "prompt_id",
        pl.col("chosen_idx").alias("sample_idx"),
        pl.concat_list("prompt", "chosen").alias("messages"),
        pl.col("chosen_tokens").alias("completion_tokens"),
        pl.col("chosen_quality").alias("quality"),
        pl.lit("dp_sft").alias("source"),
    )


def _sft_rows(valid: pl.LazyFrame, prompts: pl.LazyFrame, source: str, include_reasoning: bool) -> pl.DataFrame:
    return (
        valid.join(prompts.select("prompt_id", "messages"), on="prompt_id", how="inner")
        .select(
            "prompt_id",
            pl.col("sample_idx").cast(pl.Int64),
            pl.concat_list("messages", render_side(pl.col("reasoning"), pl.col("answer"), include_reasoning)).alias(
                "messages"
            ),
            pl.col("completion_tokens").cast(pl.Int64),
            "quality",
            pl.lit(source).alias("source"),
        )
        .sort("prompt_id", "sample_idx")
        .collect()
    )
