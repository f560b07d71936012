"""Usable samples: what the judge and reward stages are fed, planned from key and status columns.

A sample is usable when it has no engine error and a non-empty answer; the pair kernel counts the
others under engine_error / empty_answer, so they are not lost. Every judge (GenRM, reward model)
plans the same way: the samples' status (prompt ids as integer codes), the judge's own stored status,
the pending keys, then the text of the pending samples only.

    work, note = plan_usable(store, prompt_ids, sampler_fp, k, pending=..., per_sample=votes, verb="judged")
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import polars as pl

from factory.rundir.schemas import SAMPLES
from factory.stages.base import latest, read_status
from factory.stages.sample import STATUS_COLUMNS as SAMPLE_STATUS

SAMPLE_KEY = ["prompt_id", "sample_idx", "sampler_fp"]


def judgeable(samples: pl.DataFrame) -> pl.DataFrame:
    """Samples worth a judge call: no engine error and a non-empty answer (the pairs stage counts the
    others under engine_error / empty_answer, so they are not lost)."""
    return samples.filter(
        pl.col("error").is_null() & (pl.col("answer").fill_null("").str.strip_chars().str.len_chars() > 0)
    )


def of_current_samples(judgments: pl.DataFrame, samples: pl.DataFrame) -> pl.DataFrame:
    """The judgments made of the samples as they are stored now: when both sides carry the sample's
    created_at, a judgment of an earlier row under the same key (a sample asked again) does not count.
    Judgments stored before the column existed (null) count."""
    if "created_at" not in samples.columns or "sample_created_at" not in judgments.columns:
        return judgments.join(samples.select(SAMPLE_KEY).unique(), on=SAMPLE_KEY, how="semi")
    current = samples.select(*SAMPLE_KEY, pl.col("created_at").alias("_current"))
    return (
        judgments.join(current, on=SAMPLE_KEY, how="inner")
        .filter(pl.col("sample_created_at").is_null() | (pl.col("sample_created_at") == pl.col("_current")))
        .drop("_current")
    )


def sample_text(store: Any, keys: pl.DataFrame) -> pl.DataFrame:
    """answer, reasoning (and error) of the sample keys given, read part by part (bounded memory)."""
    columns = ["prompt_id", "sample_idx", "sampler_fp", "answer", "reasoning", "error", "created_at"]
    found = [
        pl.from_arrow(part).join(keys, on=["prompt_id", "sample_idx", "sampler_fp"], how="semi")
        for part in store.iter_batches("samples", columns, SAMPLES)
    ] if keys.height else []  # fmt: skip
    if not found:
        return pl.DataFrame(schema={"prompt_id": pl.String, "sample_idx": pl.Int64, "sampler_fp": pl.String,
                                    "answer": pl.String, "reasoning": pl.String, "error": pl.String,
                                    "created_at": pl.Float64})  # fmt: skip
    text = latest(pl.concat(found), SAMPLE_KEY)  # type: ignore[arg-type]
    return text.select(*SAMPLE_KEY, "answer", "reasoning", "error", "created_at")


def plan_usable(
    store: Any,
    prompt_ids: pl.Series,
    sampler_fp: str,
    k: int,
    pending: Callable[[pl.DataFrame], pl.DataFrame],
    per_sample: int = 1,
    verb: str = "judged",
) -> tuple[pl.DataFrame, str]:
    """The work of one judge: (work rows, a note on what is not sent).

    Input:  samples/ status columns of this run (sampler_fp, sample_idx < k, these prompts);
            pending(samples) -> the pending keys (SAMPLE_KEY [+ vote]), prompt_id as integer codes,
            from the judge's own stored status.
    Output: the pending keys with answer, reasoning and sample_created_at, usable samples only; the
            note counts failed samples and empty answers ("3 failed sample(s) not judged")."""
    mine = (pl.col("sampler_fp") == sampler_fp) & (pl.col("sample_idx") < k)
    samples = latest(read_status(store, "samples", SAMPLES, SAMPLE_STATUS, prompt_ids, mine), ["prompt_id", "sample_idx"])
    failed = samples.filter(pl.col("error").is_not_null()).height
    keys = pending(samples.filter(pl.col("error").is_null()))
    keys = keys.with_columns(prompt_ids.gather(keys["prompt_id"]).alias("prompt_id"))
    text = sample_text(store, keys.select(SAMPLE_KEY).unique())
    work = judgeable(keys.join(text, on=SAMPLE_KEY, how="inner", maintain_order="left"))
    empty = (keys.height - work.height) // max(per_sample, 1)
    skipped = [f"{failed} failed sample(s)" if failed else "", f"{empty} with an empty answer" if empty else ""]
    note = " and ".join(p for p in skipped if p) + f" not {verb}" if failed or empty else ""
    key = [c for c in keys.columns if c in (*SAMPLE_KEY, "vote")]
    return work.select(*key, "answer", "reasoning", pl.col("created_at").alias("sample_created_at")), note
