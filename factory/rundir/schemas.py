"""Explicit Arrow schemas of what the run directory holds (the contract in DESIGN.md, plus extras)."""

from __future__ import annotations

import polars as pl
import pyarrow as pa

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
MESSAGES = pa.list_(MESSAGE)

SAMPLES = pa.schema(
    [
        ("prompt_id", pa.string()),
        ("sample_idx", pa.int64()),
        ("sampler_fp", pa.string()),
        # messages_hash of the messages the request sent: a row answers only the prompt text with this hash
        # (null in rows stored before it was kept; `factory run` fills them from prompts/, stages/sample.py)
        ("prompt_hash", pa.string()),
        ("seed", pa.int64()),
        ("reasoning", pa.string()),
        ("answer", pa.string()),
        ("text", pa.string()),
        ("reasoning_tokens", pa.int64()),
        ("answer_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("prompt_tokens", pa.int64()),
        ("finish_reason", pa.string()),
        ("error", pa.string()),
        ("latency_s", pa.float64()),
        ("attempts", pa.int64()),
        ("model", pa.string()),
        ("created_at", pa.float64()),
        # of prompt_tokens, those the server's prefix cache served (null: it did not say; null in older rows)
        ("cached_tokens", pa.int64()),
        # sampler.can_answer: the teacher's flag read from its reply (factory/stages/flag.py); null when the
        # option is off, the reply could not be read in the form, or the sample failed (and in older rows)
        ("can_answer", pa.bool_()),
    ]
)

DIMS = pa.list_(pa.struct([("name", pa.string()), ("score", pa.float64())]))

JUDGMENTS = pa.schema(
    [
        ("prompt_id", pa.string()),
        ("sample_idx", pa.int64()),
        ("sampler_fp", pa.string()),
        ("vote", pa.int64()),
        ("judge_fp", pa.string()),
        # created_at of the sample row that was judged: a sample stored again later (its part was lost and
        # it was asked again) is judged again, never paired with a judgment of another text
        ("sample_created_at", pa.float64()),
        ("score", pa.float64()),
        ("quality", pa.float64()),
        ("parse_status", pa.string()),
        ("reason", pa.string()),
        ("dimensions", pa.string()),  # JSON, written by runs before `dims`; read as a fallback
        ("dims", DIMS),  # one typed score per rubric dimension (judge.dimensions), on the judge's scale
        ("tags", pa.list_(pa.string())),  # the judge's tags (judge.tags)
        ("raw", pa.string()),
        ("attempts", pa.int64()),
        ("reasks", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("error", pa.string()),
        ("latency_s", pa.float64()),
        ("created_at", pa.float64()),
        ("prompt_tokens", pa.int64()),  # summed over re-asks; null in rows stored before it was kept
        ("cached_tokens", pa.int64()),  # of prompt_tokens, served by the server's prefix cache (summed over re-asks)
        # judge.mode group (null in pointwise rows): the group request this row is one answer of.
        ("group_key", pa.string()),  # the exact samples shown, in their order, and the order number
        ("group_pool", pa.string()),  # the stored samples the group was drawn from: when it changes, re-judged
        ("group_order", pa.list_(pa.int64())),  # sample_idx of the answers as shown, label A first
        ("label", pa.string()),  # this sample's label in the request
    ]
)

# One row per (sample, reward model): the model's raw score of the sample's answer.
REWARDS = pa.schema(
    [
        ("prompt_id", pa.string()),
        ("sample_idx", pa.int64()),
        ("sampler_fp", pa.string()),
        ("rm", pa.string()),  # the reward_models name that asked (the cache key is rm_fp)
        ("rm_fp", pa.string()),
        ("sample_created_at", pa.float64()),  # the sample row scored (as judgments.sample_created_at)
        ("score", pa.float64()),  # raw, null when error is set
        ("error", pa.string()),
        ("attempts", pa.int64()),
        ("prompt_tokens", pa.int64()),
        ("latency_s", pa.float64()),
        ("created_at", pa.float64()),
    ]
)

# batches/: one row per provider batch (engine.batch) and status seen, appended as it changes; the latest row
# of a batch_id is its state. custom_ids are the requests it holds (factory/engines/openai_batch.py).
BATCHES = pa.schema(
    [
        ("batch_id", pa.string()),
        ("server", pa.string()),  # engine.base_url with any credentials redacted
        ("model", pa.string()),
        ("input_file_id", pa.string()),
        ("output_file_id", pa.string()),
        ("error_file_id", pa.string()),
        ("status", pa.string()),
        ("custom_ids", pa.list_(pa.string())),
        ("keys", pa.list_(pa.string())),  # each request's key (its tag) as JSON, in custom_ids' order
        ("error", pa.string()),
        ("created_at", pa.float64()),  # when the batch was created
        ("updated_at", pa.float64()),  # when this status was seen
    ]
)

INVALID = pa.schema(
    [
        ("stage", pa.string()),
        ("row_index", pa.int64()),
        ("prompt_id", pa.string()),
        ("reason", pa.string()),
        ("raw", pa.string()),
    ]
)

PAIRS = pa.schema(
    [
        ("prompt", MESSAGES),
        ("chosen", MESSAGES),
        ("rejected", MESSAGES),
        ("prompt_id", pa.string()),
        ("chosen_idx", pa.int64()),
        ("rejected_idx", pa.int64()),
        ("chosen_tokens", pa.int64()),
        ("rejected_tokens", pa.int64()),
        ("chosen_quality", pa.float64()),
        ("rejected_quality", pa.float64()),
        ("chosen_score", pa.float64()),
        ("rejected_score", pa.float64()),
        ("margin", pa.float64()),
        ("strategy", pa.string()),
    ]
)


def require_columns(frame: pl.DataFrame | pl.LazyFrame, needed: list[str] | tuple[str, ...], stage: str) -> None:
    """Fail before any work when an input frame lacks a column the stage needs, naming it."""
    names = frame.collect_schema().names() if isinstance(frame, pl.LazyFrame) else frame.columns
    missing = [c for c in needed if c not in names]
    if missing:
        raise ValueError(f"{stage}: input is missing column(s) {missing}; it has {names}")
