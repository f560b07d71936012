"""The read side of judgments: votes -> one row per sample (quality, dimensions, tags), as the pair
kernel, the report and eval read them.

    sample_quality(judgments)   # prompt_id, sample_idx, quality, score, quality_spread, votes_ok, votes
    sample_dims(judgments)      # prompt_id, sample_idx, dim_<name>...
"""

from __future__ import annotations

import json

import polars as pl

from factory.rundir.schemas import JUDGMENTS, require_columns
from factory.stages.base import latest
from factory.stages.judge.parse import USABLE
from factory.stages.scored import of_current_samples

DIMS_DTYPE = pl.List(pl.Struct({"name": pl.String, "score": pl.Float64}))
# The columns with_quality adds to the samples, and order_quality's (judge.orders 2): what the scored samples
# hold of the primary judge besides its dim_<name> and tags (RunGraph.scored_columns lists them before a run).
QUALITY_COLUMNS = ("quality", "score", "quality_spread", "votes_ok", "votes")
ORDER_COLUMNS = ("order0_quality", "order1_quality")


def with_quality(samples: pl.DataFrame, judgments: pl.DataFrame) -> pl.DataFrame:
    """Samples with their aggregated judge quality (null when no usable vote).

    Output: the samples' columns + quality, score, quality_spread, votes_ok, votes."""
    if not judgments.height:
        quality, score, spread, ok, votes = QUALITY_COLUMNS
        return samples.with_columns(
            pl.lit(None, pl.Float64).alias(quality),
            pl.lit(None, pl.Float64).alias(score),
            pl.lit(0.0).alias(spread),
            pl.lit(0, pl.Int64).alias(ok),
            pl.lit(0, pl.Int64).alias(votes),
        )
    return samples.join(sample_quality(judgments), on=["prompt_id", "sample_idx"], how="left")


def sample_quality(judgments: pl.DataFrame) -> pl.DataFrame:
    """Votes -> one row per sample.

    Input:  prompt_id, sample_idx, vote, score, quality, parse_status (one row per vote)
    Output: prompt_id, sample_idx, quality (mean of usable votes, null when none), score (their mean
            raw score), quality_spread (population std of usable votes: 0 for one vote, null for none),
            votes_ok, votes
    """
    require_columns(judgments, ("prompt_id", "sample_idx", "score", "quality", "parse_status"), "judge.aggregate")
    usable = pl.col("parse_status").is_in(USABLE)
    return (
        judgments.group_by("prompt_id", "sample_idx")
        .agg(
            pl.col("quality").filter(usable).mean().alias("quality"),
            pl.col("score").filter(usable).mean().alias("score"),
            pl.col("quality").filter(usable).std(ddof=0).alias("quality_spread"),
            usable.sum().cast(pl.Int64).alias("votes_ok"),
            pl.len().cast(pl.Int64).alias("votes"),
        )
        .with_columns(
            pl.when(pl.col("votes_ok") > 0).then(pl.col("quality_spread").fill_null(0.0)).alias("quality_spread")
        )
    )


def current_judgments(stored: pl.DataFrame | None, judge_fp: str, samples: pl.DataFrame) -> pl.DataFrame:
    """The judgments of `samples` under `judge_fp`, one row per (sample, vote): the latest stored."""
    if stored is None or not samples.height:
        return pl.from_arrow(JUDGMENTS.empty_table())  # type: ignore[return-value]
    mine = of_current_samples(stored.filter(pl.col("judge_fp") == judge_fp), samples)
    return latest(mine, ["prompt_id", "sample_idx", "vote"])


def sample_dims(judgments: pl.DataFrame, prefix: str = "dim_") -> pl.DataFrame:
    """Votes -> one row per sample with a column `<prefix><name>` per rubric dimension: the mean of the
    usable votes' scores on the judge's scale (null when none gave it). Judgments of runs made before
    `dims` existed hold the dimensions as JSON (`dimensions`); those are read too.

    Input:  prompt_id, sample_idx, parse_status, dims (list<struct<name, score>>) [, dimensions (JSON)]
    Output: prompt_id, sample_idx, dim_question, dim_self, ... (names of letters, digits and _ only)"""
    keys = ["prompt_id", "sample_idx"]
    if not judgments.height or "dims" not in judgments.columns:
        return pl.DataFrame(schema={"prompt_id": pl.String, "sample_idx": pl.Int64})
    usable = judgments.filter(pl.col("parse_status").is_in(USABLE))
    if "dimensions" in usable.columns:  # rows stored before `dims`: their JSON text -> the typed list
        old = pl.col("dims").is_null() & pl.col("dimensions").is_not_null()
        legacy = usable.filter(old)
        if legacy.height:
            typed = [[{"name": k, "score": float(v)} for k, v in json.loads(t).items()] for t in legacy["dimensions"]]
            legacy = legacy.with_columns(pl.Series("dims", typed, dtype=DIMS_DTYPE))
            usable = pl.concat([usable.filter(~old), legacy])
    long = usable.select(*keys, "dims").explode("dims").drop_nulls("dims").unnest("dims")
    long = long.filter(pl.col("name").str.contains(r"^[A-Za-z0-9_]+$"))
    if not long.height:
        return pl.DataFrame(schema={"prompt_id": pl.String, "sample_idx": pl.Int64})
    means = long.group_by(*keys, "name").agg(pl.col("score").mean())
    wide = means.pivot(on="name", index=keys, values="score", sort_columns=True)
    return wide.rename({c: f"{prefix}{c}" for c in wide.columns if c not in keys})


def sample_tags(judgments: pl.DataFrame) -> pl.DataFrame:
    """Votes -> prompt_id, sample_idx, tags (every tag a usable vote gave, once, sorted; null when none
    was asked for or given)."""
    keys = ["prompt_id", "sample_idx"]
    if not judgments.height or "tags" not in judgments.columns:
        return pl.DataFrame(schema={"prompt_id": pl.String, "sample_idx": pl.Int64, "tags": pl.List(pl.String)})
    usable = judgments.filter(pl.col("parse_status").is_in(USABLE) & pl.col("tags").is_not_null())
    return usable.group_by(keys).agg(pl.col("tags").list.explode(keep_nulls=False, empty_as_null=False).unique().sort())


def order_quality(judgments: pl.DataFrame) -> pl.DataFrame:
    """judge.orders 2: prompt_id, sample_idx, order0_quality, order1_quality (each order's usable quality,
    null when that order gave none); what the pair kernel counts order flips with."""
    usable = judgments.filter(pl.col("parse_status").is_in(USABLE) & pl.col("vote").is_in([0, 1]))
    out = judgments.select("prompt_id", "sample_idx").unique()
    for order, name in enumerate(ORDER_COLUMNS):
        one = usable.filter(pl.col("vote") == order).select("prompt_id", "sample_idx", pl.col("quality").alias(name))
        out = out.join(one, on=["prompt_id", "sample_idx"], how="left")
    return out
