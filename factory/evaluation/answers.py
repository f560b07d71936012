"""A candidate's answers produced elsewhere (a model served outside the factory), imported as samples.

Input: a Parquet, JSONL or JSON-array file (any fsspec URL), one row per answer:
    prompt_id (or the prompts' id column, e.g. id)    which held-out prompt it answers
    answer, or text (`<think>...</think>answer`)       the reply; optional reasoning apart
    sample_idx                                        optional: else 0, 1, ... per prompt in file order
    completion_tokens, reasoning_tokens, answer_tokens  optional: else counted with the candidate's
                                                      engine.tokenizer, else estimated from characters
    finish_reason                                     optional ("length" marks a truncated reply)
Output: sample rows (factory.rundir.schemas.SAMPLES) under the fingerprint "answers-<sha256 of the file>", so an
edited file is a new candidate version (its answers judged again) and a renamed candidate keeps its rows.
Only keys not stored yet are written; rows of unknown prompts or with sample_idx >= eval.k are counted
and left out. No LLM request is made for them.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from typing import Any

import fsspec
import polars as pl
import pyarrow as pa

from factory.config import CandidateConfig, ConfigError
from factory.rundir.schemas import SAMPLES
from factory.stages.sample import HASH, KEY, STATUS_COLUMNS, of_prompts, prompt_hashes, split_reasoning

FORMATS = (".parquet", ".jsonl", ".json")


def _read_bytes(path: str, key: str) -> bytes:
    try:
        with fsspec.open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise ConfigError(f"{key}: file not found: {path}") from None


def answers_fingerprint(path: str, key: str) -> str:
    return "answers-" + hashlib.sha256(_read_bytes(path, key)).hexdigest()[:16]


def read_answers(path: str, key: str) -> pl.DataFrame:
    """The answers file as a frame (every column as read)."""
    if not path.lower().endswith(FORMATS):
        raise ConfigError(f"{key}: {path} is not a .parquet, .jsonl or .json file")
    data = _read_bytes(path, key)
    try:
        if path.lower().endswith(".parquet"):
            return pl.read_parquet(io.BytesIO(data))
        text = data.decode("utf-8-sig")
        stripped = text.lstrip()
        if path.lower().endswith(".json") and stripped.startswith("["):
            return pl.DataFrame(json.loads(text), infer_schema_length=None)
        return pl.DataFrame([json.loads(line) for line in text.splitlines() if line.strip()], infer_schema_length=None)
    except (ValueError, pl.exceptions.PolarsError, OSError) as exc:
        raise ConfigError(f"{key}: {path} cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None


def answer_rows(
    frame: pl.DataFrame, candidate: CandidateConfig, id_column: str | None, key: str, fp: str
) -> tuple[pl.DataFrame, str]:
    """Sample rows from an answers frame, and how their token counts were had (file, tokenizer, estimated)."""
    from factory.commands.plan import chars_tokens, tokenizer_counter

    id_col = "prompt_id" if "prompt_id" in frame.columns else id_column if id_column in frame.columns else None
    if id_col is None:
        raise ConfigError(f"{key}: no prompt_id{f' or {id_column}' if id_column else ''} column in the answers file")
    if "answer" not in frame.columns and "text" not in frame.columns:
        raise ConfigError(f"{key}: no answer (or text) column in the answers file")
    rows = frame.to_dicts()
    count, _ = tokenizer_counter(candidate.engine)
    has_counts = "completion_tokens" in frame.columns
    basis = "file" if has_counts else "tokenizer" if count is not None else "estimated from characters"
    seen: dict[str, int] = {}
    out = []
    now = time.time()
    for row in rows:
        prompt_id = str(row[id_col])
        if row.get("answer") is not None:
            reasoning, answer = (row.get("reasoning") or "").strip(), str(row["answer"]).strip()
        else:
            reasoning, answer = split_reasoning(str(row.get("text") or ""), row.get("reasoning"))
        idx = row.get("sample_idx")
        idx = seen.get(prompt_id, 0) if idx is None else int(idx)
        seen[prompt_id] = max(seen.get(prompt_id, 0), idx + 1)
        if has_counts and row.get("completion_tokens") is not None:
            total = int(row["completion_tokens"])
            r_tok = row.get("reasoning_tokens")
            a_tok = row.get("answer_tokens")
            r_tok = int(r_tok) if r_tok is not None else (total - int(a_tok) if a_tok is not None else 0)
            a_tok = total - r_tok
        else:
            measure = count or chars_tokens
            r_tok, a_tok = round(measure(reasoning)) if reasoning else 0, round(measure(answer)) if answer else 0
            total = r_tok + a_tok
        out.append(
            {
                "prompt_id": prompt_id,
                "sample_idx": idx,
                "sampler_fp": fp,
                "seed": None,
                "reasoning": reasoning,
                "answer": answer,
                "text": row.get("text") or (f"<think>{reasoning}</think>{answer}" if reasoning else answer),
                "reasoning_tokens": r_tok,
                "answer_tokens": a_tok,
                "completion_tokens": total,
                "prompt_tokens": None,
                "finish_reason": str(row.get("finish_reason") or "stop"),
                "error": None,
                "latency_s": None,
                "attempts": 0,
                "model": f"answers:{key.split('.')[2]}",
                "created_at": now,
            }
        )
    table = pa.Table.from_pylist(out, schema=SAMPLES) if out else SAMPLES.empty_table()
    return pl.from_arrow(table), basis  # type: ignore[return-value]


def pending_answers(
    store: Any, candidate: CandidateConfig, name: str, prompts: pl.DataFrame, id_column: str | None, k: int, fp: str
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """(the answer rows not stored yet, counts) of a candidate's answers file; nothing is written."""
    key = f"eval.candidates.{name}.answers_path"
    rows, basis = answer_rows(read_answers(candidate.answers_path, key), candidate, id_column, key, fp)
    known = rows.filter(pl.col("prompt_id").is_in(prompts["prompt_id"].implode()))
    usable = known.filter(pl.col("sample_idx") < k).unique(subset=list(KEY), keep="first", maintain_order=True)
    hashes = prompt_hashes(prompts)
    if hashes is not None:  # an imported answer is stored for the prompt's text at import, as a sample is
        text = pl.col("prompt_id").replace_strict(prompts["prompt_id"], hashes, default=None, return_dtype=pl.String)
        usable = usable.with_columns(text.alias(HASH))
    stored = store.read("samples", SAMPLES, columns=STATUS_COLUMNS)
    if stored is not None and stored.height:
        mine = of_prompts(stored.filter(pl.col("sampler_fp") == fp), prompts["prompt_id"], hashes)
        done = mine.select(list(KEY)).unique()
        usable = usable.join(done, on=list(KEY), how="anti", maintain_order="left")
    counts = {
        "rows": rows.height,
        "unknown_prompt": rows.height - known.height,
        "beyond_k": known.filter(pl.col("sample_idx") >= k).height,
        "to_import": usable.height,
        "tokens": basis,
    }
    return usable, counts


def import_answers(
    store: Any, candidate: CandidateConfig, name: str, prompts: pl.DataFrame, id_column: str | None, k: int, fp: str
) -> dict[str, Any]:
    """Store the candidate's answers not stored yet as samples; returns the counts."""
    rows, counts = pending_answers(store, candidate, name, prompts, id_column, k, fp)
    if rows.height:
        store.append("samples", rows.to_arrow().cast(SAMPLES))
    return counts
