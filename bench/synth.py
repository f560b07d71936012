"""Synthetic scored samples for the pair benchmarks and for trying `factory pairs/sweep/report` at scale.

    scored, prompts = synth.scored_frame(groups=15_000, k=8, seed=0)
    synth.write_run("/tmp/synth15k", groups=15_000, k=8)       # a run directory the CLI can open

The numbers follow the source's shape: decoded tokens log-normal around ~330 (max_tokens 1024, so a
few percent are truncated), judge scores 0..100 in whole points (so ties happen) that drift down a
little with length, and a sprinkle of engine errors, empty answers and unparsable judgments so that
every exclusion reason is exercised. Texts are short on purpose (the reasoning can be made longer).

`extra_terms=True` adds what the four-term benchmark scores and filters: a reward-model column
`reward_rm` (raw, unbounded: about 8 x quality plus noise), answers that repeat their sentence 1 to 3
times (so the repeated n-gram ratio varies), and about 3% of samples that copy the reasoning and
answer of their group's sample 0 in other case and spacing (duplicates). The default frame is
unchanged (tests/pairs/fixtures was made from it).
"""

from __future__ import annotations

import time

import numpy as np
import polars as pl
import pyarrow as pa

MAX_TOKENS = 1024
SAMPLER_FP = "synth-sampler"
JUDGE_FP = "synth-judge"


def scored_frame(
    groups: int,
    k: int = 8,
    seed: int = 0,
    text: bool = True,
    first_group: int = 0,
    reasoning_repeat: int = 1,
    extra_terms: bool = False,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(scored samples, prompts): the columns the pair stage reads, plus score/parse_status.
    The reasoning is one ~50-character sentence, `reasoning_repeat` times over."""
    rng = np.random.default_rng(seed)
    n = groups * k
    group = np.repeat(np.arange(first_group, first_group + groups, dtype=np.int64), k)
    tokens = np.minimum(np.round(rng.lognormal(np.log(300), 0.45, n)), MAX_TOKENS).astype(np.int64)
    tokens = np.maximum(tokens, 8)
    truncated = tokens >= MAX_TOKENS
    error = rng.random(n) < 0.005
    empty = rng.random(n) < 0.005
    unparsed = rng.random(n) < 0.01
    score = np.clip(np.round(rng.normal(82, 7, n) - 0.01 * (tokens - 300)), 0, 100)
    frame = pl.DataFrame(
        {
            "group": group,
            "sample_idx": np.tile(np.arange(k, dtype=np.int64), groups),
            "completion_tokens": np.where(error, 0, tokens),
            "finish_reason": np.where(error, "error", np.where(truncated, "length", "stop")),
            "error_flag": error,
            "empty": empty,
            "score": np.where(error | unparsed, np.nan, score),
            "parse_status": np.where(error, "engine_error", np.where(unparsed, "unparsable", "ok")),
        }
    )
    prompt_id = pl.format("p{}", pl.col("group").cast(pl.String).str.zfill(7))
    scored = frame.select(
        prompt_id.alias("prompt_id"),
        "sample_idx",
        "completion_tokens",
        "finish_reason",
        pl.when(pl.col("error_flag")).then(pl.lit("synthetic engine error")).otherwise(None).alias("error"),
        (
            pl.when(pl.col("error_flag") | pl.col("empty"))
            .then(pl.lit(""))
            .otherwise(pl.format("Link {} is in stock; answer {}.", pl.col("group") % 50, pl.col("sample_idx")))
            if text
            else pl.lit("ok")
        ).alias("answer"),
        (
            pl.format("Viewer asks about item {}; try {} of the reasoning.", pl.col("group"), pl.col("sample_idx"))
            .repeat_by(reasoning_repeat)
            .list.join(" ")
            if text
            else pl.lit("")
        ).alias("reasoning"),
        pl.col("score").fill_nan(None),
        (pl.col("score").fill_nan(None) / 100.0).alias("quality"),
        "parse_status",
    )
    if extra_terms:
        scored = _extra_terms(scored, np.random.default_rng(seed + 1_000_003))
    prompts = pl.DataFrame({"group": np.arange(first_group, first_group + groups, dtype=np.int64)}).select(
        prompt_id.alias("prompt_id"),
        pl.concat_list(
            pl.struct(pl.lit("system").alias("role"), pl.lit("You are a live-stream host.").alias("content")),
            pl.struct(
                pl.lit("user").alias("role"), pl.format("Product {}: is it in stock?", pl.col("group")).alias("content")
            ),
        ).alias("messages"),
    )
    return scored, prompts


def _extra_terms(scored: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame:
    n = scored.height
    repeats = pl.Series(rng.choice([1, 1, 1, 2, 3], n))
    copy = pl.Series((rng.random(n) < 0.03) & (scored["sample_idx"].to_numpy() > 0))
    scored = scored.with_columns(
        (pl.col("quality") * 8 + pl.Series(rng.normal(0, 0.6, n))).alias("reward_rm"),
        pl.when(pl.col("answer") == "")
        .then(pl.col("answer"))
        .otherwise(pl.col("answer").repeat_by(repeats).list.join(" "))
        .alias("answer"),
    )
    first = pl.col("answer").first().over("prompt_id"), pl.col("reasoning").first().over("prompt_id")
    return scored.with_columns(
        pl.when(copy & (first[0] != "")).then(first[0].str.to_uppercase()).otherwise(pl.col("answer")).alias("answer"),
        pl.when(copy & (first[0] != ""))
        .then(first[1].str.replace_all(" ", "  "))
        .otherwise(pl.col("reasoning"))
        .alias("reasoning"),
    )


def write_parquet(
    folder: str,
    groups: int,
    k: int = 8,
    seed: int = 0,
    chunk: int = 100_000,
    reasoning_repeat: int = 1,
    extra_terms: bool = False,
) -> None:
    """scored.parquet and prompts.parquet in `folder`, generated `chunk` groups at a time so that
    making 1M x 8 rows never holds them all in memory."""
    from pathlib import Path

    import pyarrow.parquet as pq

    Path(folder).mkdir(parents=True, exist_ok=True)
    writers: dict[str, pq.ParquetWriter] = {}
    try:
        for index, start in enumerate(range(0, groups, chunk)):
            frames = scored_frame(
                min(chunk, groups - start),
                k,
                seed + index,
                first_group=start,
                reasoning_repeat=reasoning_repeat,
                extra_terms=extra_terms,
            )
            for name, frame in zip(("scored", "prompts"), frames):
                table = frame.to_arrow()
                if name not in writers:
                    writers[name] = pq.ParquetWriter(f"{folder}/{name}.parquet", table.schema, compression="zstd")
                writers[name].write_table(table, row_group_size=100_000)  # row groups of a usual size
    finally:
        for writer in writers.values():
            writer.close()


def write_run(path: str, groups: int = 15_000, k: int = 8, seed: int = 0) -> None:
    """A run directory made of synthetic rows, as `factory run` would leave it (no LLM needed)."""
    from factory import config as config_mod
    from factory.rundir.schemas import JUDGMENTS, SAMPLES
    from factory.rundir.store import RunStore

    scored, prompts = scored_frame(groups, k, seed)
    store = RunStore(path)
    now = time.time()
    samples = scored.select(
        "prompt_id",
        "sample_idx",
        pl.lit(SAMPLER_FP).alias("sampler_fp"),
        pl.col("sample_idx").alias("seed"),
        "reasoning",
        "answer",
        pl.format("<think>{}</think>{}", "reasoning", "answer").alias("text"),
        (pl.col("completion_tokens") * 4 // 5).alias("reasoning_tokens"),
        (pl.col("completion_tokens") - pl.col("completion_tokens") * 4 // 5).alias("answer_tokens"),
        "completion_tokens",
        pl.lit(200, pl.Int64).alias("prompt_tokens"),
        "finish_reason",
        "error",
        pl.lit(0.0).alias("latency_s"),
        pl.lit(1, pl.Int64).alias("attempts"),
        pl.lit("synthetic").alias("model"),
        pl.lit(now).alias("created_at"),
    )
    judgments = scored.filter(pl.col("error").is_null()).select(
        "prompt_id",
        "sample_idx",
        pl.lit(SAMPLER_FP).alias("sampler_fp"),
        pl.lit(0, pl.Int64).alias("vote"),
        pl.lit(JUDGE_FP).alias("judge_fp"),
        "score",
        "quality",
        "parse_status",
        pl.lit(None, pl.String).alias("reason"),
        pl.lit(None, pl.String).alias("dimensions"),
        pl.lit(None, pl.String).alias("raw"),
        pl.lit(1, pl.Int64).alias("attempts"),
        pl.lit(None, pl.String).alias("error"),
        pl.lit(0.0).alias("latency_s"),
        pl.lit(now).alias("created_at"),
    )
    store.replace("prompts", prompts.with_row_index("row_index").with_columns(pl.col("row_index").cast(pl.Int64)))
    store.replace("samples", _conform(samples, SAMPLES))
    store.replace("judgments", _conform(judgments, JUDGMENTS))
    cfg = config_mod.load(None, [f"output_dir={path}", f"sampler.k={k}", "sampler.sampling.max_tokens=1024"])
    usable = judgments.filter(pl.col("parse_status") == "ok").height
    counts = {
        "prompts_in": groups,
        "prompts_valid": groups,
        "prompts_invalid": 0,
        "samples_expected": groups * k,
        "samples_ok": samples.filter(pl.col("error").is_null()).height,
        "samples_failed": samples.filter(pl.col("error").is_not_null()).height,
        "judgments_ok": usable,
        "judgments_failed": judgments.height - usable,
    }
    manifest = {
        "config": config_mod.to_dict(cfg),
        "fingerprints": {"sampler": SAMPLER_FP, "judge": JUDGE_FP},
        "versions": {},
        "counts": counts,
        "requests": {"sampler": 0, "judge": 0},
        "timings": {},
        "output_dir": store.url,
        "synthetic": {"groups": groups, "k": k, "seed": seed},
    }
    store.write_json("manifest.json", manifest)


def _conform(frame: pl.DataFrame, schema: pa.Schema) -> pa.Table:
    """`frame` in `schema`'s columns and types; a column the schema has and the frame lacks is null."""
    table = frame.to_arrow()
    columns = [
        table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(len(table), f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Write a synthetic run directory.")
    parser.add_argument("path")
    parser.add_argument("--groups", type=int, default=15_000)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write_run(args.path, args.groups, args.k, args.seed)
    print(f"wrote {args.groups} x {args.k} synthetic samples to {args.path}")
