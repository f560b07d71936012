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
import pyarrow as pa

from factory.pairs import prejudge
from factory.rundir.schemas import SAMPLES
from factory.stages.base import latest, read_status
from factory.stages.sample import STATUS_COLUMNS as SAMPLE_STATUS
from factory.stages.sample import answered, of_prompts

SAMPLE_KEY = ["prompt_id", "sample_idx", "sampler_fp"]
# What every judge stage (GenRM, reward model) reads of the stored samples: its declared inputs.
USABLE_INPUTS = ("prompt_id", "sample_idx", "sampler_fp", "answer", "reasoning", "error", "created_at")


def judgeable(samples: pl.DataFrame) -> pl.DataFrame:
    """Samples worth a judge call: no engine error and a non-empty answer (the pairs stage counts the
    others under engine_error / empty_answer, so they are not lost)."""
    return samples.filter(
        pl.col("error").is_null() & (pl.col("answer").fill_null("").str.strip_chars().str.len_chars() > 0)
    )


def of_current_samples(judgments: pl.DataFrame, samples: pl.DataFrame) -> pl.DataFrame:
    """The judgments made of the samples as they are stored now: when both sides carry the sample's
    created_at, a judgment of an earlier row under the same key (a sample asked again, a prompt whose text
    changed sampled again) does not count. Judgments stored before the column existed (null) count for a
    sample stored before them, never for one stored after."""
    if "created_at" not in samples.columns or "sample_created_at" not in judgments.columns:
        return judgments.join(samples.select(SAMPLE_KEY).unique(), on=SAMPLE_KEY, how="semi")
    current = samples.select(*SAMPLE_KEY, pl.col("created_at").alias("_current"))
    legacy = pl.col("sample_created_at").is_null()
    if "created_at" in judgments.columns:
        legacy = legacy & (pl.col("created_at").is_null() | (pl.col("created_at") >= pl.col("_current")))
    return (
        judgments.join(current, on=SAMPLE_KEY, how="inner")
        .filter(legacy | (pl.col("sample_created_at") == pl.col("_current")))
        .drop("_current")
    )


TEXT_SCHEMA = {
    "prompt_id": pl.String,
    "sample_idx": pl.Int64,
    "sampler_fp": pl.String,
    "prompt_hash": pl.String,
    "answer": pl.String,
    "reasoning": pl.String,
    "error": pl.String,
    "created_at": pl.Float64,
    "completion_tokens": pl.Int64,
    "finish_reason": pl.String,
    "can_answer": pl.Boolean,  # sampler.can_answer: the flag_contradiction filter reads it
}


def sample_text(
    store: Any, keys: pl.DataFrame, prompt_ids: pl.Series | None = None, hashes: pl.Series | None = None
) -> pl.DataFrame:
    """answer, reasoning, error (and what the judge-free filters read: completion_tokens,
    finish_reason, can_answer) of the sample keys given, read part by part (bounded memory). With `prompt_ids` and
    `hashes` (stages/sample.py prompt_hashes): only as answered for the prompts' current text."""

    def of(part: pa.Table) -> pl.DataFrame:
        rows = pl.from_arrow(part).join(keys, on=SAMPLE_KEY, how="semi")  # type: ignore[union-attr]
        return rows if prompt_ids is None else of_prompts(rows, prompt_ids, hashes)

    found = [of(part) for part in store.iter_batches("samples", list(TEXT_SCHEMA), SAMPLES)] if keys.height else []
    if not found:
        return pl.DataFrame(schema=TEXT_SCHEMA)
    text = latest(pl.concat(found), SAMPLE_KEY)  # type: ignore[arg-type]
    return text.select(*TEXT_SCHEMA).cast(TEXT_SCHEMA)  # type: ignore[arg-type]


def prefiltered(text: pl.DataFrame, prefilter: prejudge.Prefilter | None) -> pl.DataFrame:
    """The sample keys of `text` (SAMPLE_KEY) with `exclusion`: null when they pass the pair build's
    judge-free exclusions, else its reason. `text`: whole groups (duplicates are decided within them).
    No prefilter: all pass."""
    keys = text.select(SAMPLE_KEY)
    if prefilter is None or not text.height:
        return keys.with_columns(pl.lit(None, pl.String).alias("exclusion"))
    return keys.join(prefilter.passing(text), on=["prompt_id", "sample_idx"], how="left")


def follow_usable(
    rows: list[dict], sampler_fp: str, k: int, prompts: Any, prefilter: prejudge.Prefilter | None = None
) -> list[dict]:
    """Samples just stored -> those a judge is fed: this sampler's, of these prompts (`prompts`:
    anything `in` works on), sample_idx < k, no engine error, a non-empty answer, and (with
    `prefilter`) passing the judge-free exclusions; duplicates among the rows given."""
    mine = [
        row for row in rows
        if row["sampler_fp"] == sampler_fp and row["error"] is None and (row["answer"] or "").strip()
        and row["prompt_id"] in prompts and row["sample_idx"] < k
    ]  # fmt: skip
    if prefilter is None or not mine:
        return mine
    frame = pl.DataFrame([{c: row.get(c) for c in TEXT_SCHEMA} for row in mine], schema=TEXT_SCHEMA)
    passed = prefiltered(frame, prefilter).filter(pl.col("exclusion").is_null())
    keep = set(passed.select("prompt_id", "sample_idx").iter_rows())
    return [row for row in mine if (row["prompt_id"], row["sample_idx"]) in keep]


def plan_usable(
    store: Any,
    prompt_ids: pl.Series,
    sampler_fp: str,
    k: int,
    pending: Callable[[pl.DataFrame], pl.DataFrame],
    per_sample: int = 1,
    verb: str = "judged",
    prefilter: prejudge.Prefilter | None = None,
    hashes: pl.Series | None = None,
) -> tuple[pl.DataFrame, str]:
    """The work of one judge: (work rows, a note on what is not sent).

    Input:  samples/ status columns of this run (sampler_fp, sample_idx < k, these prompts, their current
            text: `hashes`, stages/sample.py prompt_hashes);
            pending(samples) -> the pending keys (SAMPLE_KEY [+ vote]), prompt_id as integer codes,
            from the judge's own stored status.
    Output: the pending keys with answer, reasoning and sample_created_at, usable samples only; the
            note counts failed samples and empty answers ("3 failed sample(s) not judged").
    `prefilter` (pairs.filter_before_judge): only the samples that pass the pair build's judge-free
    exclusions (factory/pairs/prejudge.py); the text is then read for every usable sample of the
    groups with a pending key (a duplicate needs its group), not for the others."""
    mine = (pl.col("sampler_fp") == sampler_fp) & (pl.col("sample_idx") < k)
    status = read_status(store, "samples", SAMPLES, SAMPLE_STATUS, prompt_ids, mine).filter(answered(hashes))
    samples = latest(status, ["prompt_id", "sample_idx"])
    failed = samples.filter(pl.col("error").is_not_null()).height
    usable = samples.filter(pl.col("error").is_null())
    keys = pending(usable)
    # With the prefilter, whole groups: the judge-free rules (and duplicates) decide on them.
    read = usable.join(keys.select("prompt_id").unique(), on="prompt_id", how="semi") if prefilter else keys
    read = read.select(SAMPLE_KEY).unique()
    read = read.with_columns(prompt_ids.gather(read["prompt_id"]).alias("prompt_id"))
    keys = keys.with_columns(prompt_ids.gather(keys["prompt_id"]).alias("prompt_id"))
    text = sample_text(store, read, prompt_ids, hashes)
    work = judgeable(keys.join(text, on=SAMPLE_KEY, how="inner", maintain_order="left"))
    empty = (keys.height - work.height) // max(per_sample, 1)
    filtered = ""
    if prefilter is not None:
        marked = prefiltered(judgeable(text), prefilter)
        planned = marked.join(work.select(SAMPLE_KEY).unique(), on=SAMPLE_KEY, how="semi")
        filtered = prejudge.reasons_note(planned.filter(pl.col("exclusion").is_not_null()))
        work = work.join(marked.filter(pl.col("exclusion").is_null()), on=SAMPLE_KEY, how="semi", maintain_order="left")
    skipped = [f"{failed} failed sample(s)" if failed else "", f"{empty} with an empty answer" if empty else ""]
    note = " and ".join(p for p in skipped if p) + f" not {verb}" if failed or empty else ""
    note = "; ".join(p for p in (note, filtered) if p)
    key = [c for c in keys.columns if c in (*SAMPLE_KEY, "vote")]
    return work.select(*key, "answer", "reasoning", pl.col("created_at").alias("sample_created_at")), note
