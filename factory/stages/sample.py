"""Sample stage: K teacher completions per prompt, keyed (prompt_id, sample_idx) under a fingerprint.

Input columns:  prompts  -> prompt_id, messages
                stored   -> prompt_id, sample_idx, sampler_fp (what is already done)
Output columns: samples  -> see factory.schemas.SAMPLES

    >>> plan = plan_samples(prompts, stored, k=4, sampler_fp="ab12", base_seed=0)
    >>> rows = sample_batch(engine, plan.to_dicts(), sampling, "ab12")   # inside an engine actor
"""

from __future__ import annotations

import re
import time
from typing import Any

import polars as pl

from factory.config import EngineConfig, SamplingConfig
from factory.engines.base import Completion, Engine, Request, check_order
from factory.keys import derive_seed, stable_hash
from factory.schemas import require_columns

PLAN_COLUMNS = ("prompt_id", "sample_idx", "seed", "messages")
_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)


def sampler_fingerprint(engine: EngineConfig, sampling: SamplingConfig, model_id: str, template: str) -> str:
    """What makes samples comparable: model, engine kind, sampling params and the prompt template
    (and, for vLLM, the weights' dtype and quantization, which change what the model says).
    K is not in it: growing K 4 -> 8 reuses the first 4 samples of every prompt."""
    identity = {
        "kind": engine.kind,
        "model": model_id,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "max_tokens": sampling.max_tokens,
        "seed": sampling.seed,
        "template": template,
    }
    if engine.kind == "vllm":
        identity |= {"dtype": engine.dtype, "quantization": engine.quantization}
    return stable_hash(identity)


def plan_samples(
    prompts: pl.DataFrame,
    stored: pl.DataFrame | None,
    k: int,
    sampler_fp: str,
    base_seed: int,
    retry_failed: bool = False,
) -> pl.DataFrame:
    """Every (prompt_id, sample_idx < k) not yet stored under `sampler_fp`, with its derived seed.
    With `retry_failed`, keys whose latest stored row failed (error set) are planned again; the new
    row supersedes the old one when samples are read (latest `created_at` wins)."""
    require_columns(prompts, ("prompt_id", "messages"), "sample.plan")
    key = ["prompt_id", "sample_idx"]
    wanted = prompts.select("prompt_id", "messages").join(
        pl.DataFrame({"sample_idx": list(range(k))}, schema={"sample_idx": pl.Int64}), how="cross"
    )
    if stored is not None and stored.height:
        require_columns(stored, (*key, "sampler_fp"), "sample.plan")
        done = stored.filter(pl.col("sampler_fp") == sampler_fp)
        if retry_failed:
            require_columns(stored, ("error", "created_at"), "sample.plan")
            done = done.sort("created_at").unique(subset=key, keep="last").filter(pl.col("error").is_null())
        wanted = wanted.join(done.select(key).unique(), on=key, how="anti", maintain_order="left")
    seeds = [derive_seed(base_seed, p, i) for p, i in zip(wanted["prompt_id"], wanted["sample_idx"])]
    return wanted.with_columns(pl.Series("seed", seeds, dtype=pl.Int64)).select(PLAN_COLUMNS)


def split_reasoning(text: str, reasoning: str | None = None) -> tuple[str, str]:
    """(reasoning, answer) from `<think>...</think>answer` or from an API's separate reasoning field.
    An unclosed `<think>` (truncated mid-thought) leaves the answer empty."""
    text = text or ""
    if reasoning is not None:
        return reasoning.strip(), _THINK.sub("", text).strip()
    found = _THINK.findall(text)
    if found:
        return "\n".join(part.strip() for part in found), _THINK.sub("", text).strip()
    if "<think>" in text:
        return text.split("<think>", 1)[1].strip(), ""
    if "</think>" in text:  # templates that open the think block in the prompt
        head, tail = text.split("</think>", 1)
        return head.strip(), tail.strip()
    return "", text.strip()


def token_split(completion: Completion, reasoning: str, answer: str, engine: Engine) -> tuple[int, int, int]:
    """(reasoning_tokens, answer_tokens, completion_tokens), with reasoning + answer == completion.
    The engine's usage wins where it has it; the rest is counted with the engine's tokenizer."""
    total = completion.completion_tokens
    if total is not None and completion.reasoning_tokens is not None:
        return completion.reasoning_tokens, total - completion.reasoning_tokens, total
    counts = engine.count_tokens([reasoning, answer]) if (reasoning or answer) else [0, 0]
    if counts is None:
        counts = [len(reasoning.split()), len(answer.split())]  # last resort: words
    if total is None:
        return counts[0], counts[1], counts[0] + counts[1]
    answer_tokens = min(counts[1], total)
    return total - answer_tokens, answer_tokens, total


def sample_batch(engine: Engine, rows: list[dict[str, Any]], sampling: SamplingConfig, sampler_fp: str) -> list[dict]:
    """Run one batch of planned samples on `engine` -> sample rows (one per plan row, same order)."""
    requests = [
        Request(
            messages=row["messages"],
            max_tokens=sampling.max_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            seed=row["seed"],
            tag=(row["prompt_id"], row["sample_idx"]),
        )
        for row in rows
    ]
    completions = check_order(requests, engine.generate(requests))
    out = []
    for row, completion in zip(rows, completions):
        reasoning, answer = split_reasoning(completion.text, completion.reasoning)
        if completion.error:
            r_tok = a_tok = c_tok = 0
        else:
            r_tok, a_tok, c_tok = token_split(completion, reasoning, answer, engine)
        out.append(
            {
                "prompt_id": row["prompt_id"],
                "sample_idx": row["sample_idx"],
                "sampler_fp": sampler_fp,
                "seed": row["seed"],
                "reasoning": reasoning,
                "answer": answer,
                "text": completion.text,
                "reasoning_tokens": r_tok,
                "answer_tokens": a_tok,
                "completion_tokens": c_tok,
                "prompt_tokens": completion.prompt_tokens,
                "finish_reason": completion.finish_reason or ("error" if completion.error else ""),
                "error": completion.error,
                "latency_s": completion.latency_s,
                "attempts": completion.attempts,
                "model": engine.model_name,
                "created_at": time.time(),
            }
        )
    return out


def current_samples(stored: pl.DataFrame | None, sampler_fp: str, prompt_ids: pl.Series, k: int) -> pl.DataFrame:
    """The samples this run uses: its fingerprint, its prompts, sample_idx < k, one row per key
    (the latest, should a retried write have stored a key twice)."""
    if stored is None:
        return pl.DataFrame()
    return (
        stored.filter(
            (pl.col("sampler_fp") == sampler_fp) & pl.col("prompt_id").is_in(prompt_ids.implode()) & (pl.col("sample_idx") < k)
        )
        .sort("created_at")
        .unique(subset=["prompt_id", "sample_idx"], keep="last", maintain_order=True)
        .sort("prompt_id", "sample_idx")
    )
