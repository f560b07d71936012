"""Judge stage: a generative reward model scores every usable sample on the rubric.

Input columns:  samples   -> prompt_id, sample_idx, answer, reasoning, error
                prompts   -> prompt_id, product_info, history, question
                stored    -> prompt_id, sample_idx, vote, judge_fp (what is already judged)
Output columns: judgments -> see factory.schemas.JUDGMENTS

Every judgment is a score or a reason: parse_status is one of
ok | retried_ok (parsed after a re-ask) | unparseable | out_of_range | engine_error.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import polars as pl

from factory.config import JudgeConfig
from factory.engines.base import Engine, Request, check_order
from factory.keys import derive_seed, stable_hash
from factory.prompts import render_history
from factory.schemas import require_columns

USABLE = ("ok", "retried_ok")
DIMENSIONS = ("question", "product_info", "self", "instruction")


def judge_schema(scale_max: float) -> dict:
    """The JSON schema the judge output is constrained to where the engine supports it."""
    score = {"type": "integer", "minimum": 0, "maximum": int(scale_max)}
    return {
        "type": "object",
        "properties": {"score": score, "reason": {"type": "string", "maxLength": 300}},
        "required": ["score", "reason"],
    }


def judge_fingerprint(cfg: JudgeConfig, model_id: str, rubric: str) -> str:
    """What makes judgments comparable: judge model, rubric text, scale and judge sampling."""
    return stable_hash(
        {
            "kind": cfg.engine.kind,
            "model": model_id,
            "rubric": rubric,
            "scale_max": cfg.scale_max,
            "include_reasoning": cfg.include_reasoning,
            "structured": cfg.structured,
            "temperature": cfg.sampling.temperature,
            "top_p": cfg.sampling.top_p,
            "max_tokens": cfg.sampling.max_tokens,
            "seed": cfg.sampling.seed,
        }
    )


# -- parsing ------------------------------------------------------------------------------------
_THINK_BLOCK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL)
_SCORE_TEXT = re.compile(r"(?:score|rating|评分|得分|分数)\s*[\"']?\s*[:：=]\s*[\"']?\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)
_OUT_OF = re.compile(r"(-?\d+(?:\.\d+)?)\s*(?:/|out of)\s*(\d+)", re.IGNORECASE)


def _json_objects(text: str) -> list[dict]:
    """Every top-level JSON object in the text (fenced or bare), in order."""
    found = []
    decoder = json.JSONDecoder()
    index = text.find("{")
    while index != -1:
        try:
            value, end = decoder.raw_decode(text, index)
        except json.JSONDecodeError:
            index = text.find("{", index + 1)
            continue
        if isinstance(value, dict):
            found.append(value)
        index = text.find("{", end)
    return found


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(-?\d+(?:\.\d+)?)\s*(?:/\s*\d+)?\s*", value)
        return float(match.group(1)) if match else None
    return None


def parse_judgment(text: str, scale_max: float) -> dict[str, Any]:
    """Judge text -> {score, status, reason, dimensions}. Never raises; status says what went wrong.

    Order: strip `<think>` blocks; the last JSON object with a numeric "score"; else a
    "score: N" form; else "N/M" or "N out of M" with M == scale_max. Then the range check.
    """
    body = _THINK_BLOCK.sub("", text or "").strip()
    score: float | None = None
    reason = ""
    dimensions: dict | None = None
    for obj in reversed(_json_objects(body)):
        value = _number(obj.get("score", obj.get("overall")))
        if value is not None:
            score = value
            reason = str(obj.get("reason", "") or "")
            dims = obj.get("dimensions")
            dimensions = dims if isinstance(dims, dict) else None
            break
    if score is None:
        matches = _SCORE_TEXT.findall(body)
        if matches:
            score = float(matches[-1])
    if score is None:
        for value, top in _OUT_OF.findall(body):
            if float(top) == float(scale_max):
                score = float(value)
    if score is None:
        return {"score": None, "status": "unparseable", "reason": "no score found in judge output", "dimensions": None}
    if not 0 <= score <= scale_max:
        return {
            "score": score,
            "status": "out_of_range",
            "reason": f"score {score:g} outside 0..{scale_max:g}",
            "dimensions": dimensions,
        }
    return {"score": score, "status": "ok", "reason": reason, "dimensions": dimensions}


# -- planning -----------------------------------------------------------------------------------
def judgeable(samples: pl.DataFrame) -> pl.DataFrame:
    """Samples worth a judge call: no engine error and a non-empty answer."""
    return samples.filter(pl.col("error").is_null() & (pl.col("answer").str.strip_chars().str.len_chars() > 0))


def render_rubric(rubric: str, prompt: dict, sample: dict, cfg: JudgeConfig) -> list[dict[str, str]]:
    answer = sample["answer"]
    if cfg.include_reasoning and sample.get("reasoning"):
        answer = f"<think>{sample['reasoning']}</think>\n{answer}"
    history = prompt.get("history") or []
    content = rubric.format(
        product_info=prompt.get("product_info") or "(none)",
        history=render_history(history),
        question=prompt.get("question") or "",
        answer=answer,
        scale_max=int(cfg.scale_max) if float(cfg.scale_max).is_integer() else cfg.scale_max,
    )
    return [{"role": "user", "content": content}]


def plan_judgments(
    samples: pl.DataFrame,
    prompts: pl.DataFrame,
    stored: pl.DataFrame | None,
    cfg: JudgeConfig,
    judge_fp: str,
    rubric: str,
) -> pl.DataFrame:
    """Every (sample, vote) not yet judged under `judge_fp`, with the rendered judge messages."""
    require_columns(samples, ("prompt_id", "sample_idx", "sampler_fp", "answer", "reasoning", "error"), "judge.plan")
    require_columns(prompts, ("prompt_id", "product_info", "history", "question"), "judge.plan")
    wanted = judgeable(samples).select("prompt_id", "sample_idx", "sampler_fp", "answer", "reasoning")
    wanted = wanted.join(pl.DataFrame({"vote": list(range(cfg.votes))}, schema={"vote": pl.Int64}), how="cross")
    if stored is not None and stored.height:
        done = stored.filter(pl.col("judge_fp") == judge_fp).select("prompt_id", "sample_idx", "sampler_fp", "vote")
        wanted = wanted.join(done.unique(), on=["prompt_id", "sample_idx", "sampler_fp", "vote"], how="anti")
    by_id = {row["prompt_id"]: row for row in prompts.select("prompt_id", "product_info", "history", "question").to_dicts()}
    rows = []
    for row in wanted.to_dicts():
        rows.append(
            {
                "prompt_id": row["prompt_id"],
                "sample_idx": row["sample_idx"],
                "sampler_fp": row["sampler_fp"],
                "vote": row["vote"],
                "seed": derive_seed(cfg.sampling.seed, "judge", row["prompt_id"], row["sample_idx"], row["vote"]),
                "messages": render_rubric(rubric, by_id[row["prompt_id"]], row, cfg),
            }
        )
    schema = {
        "prompt_id": pl.String,
        "sample_idx": pl.Int64,
        "sampler_fp": pl.String,
        "vote": pl.Int64,
        "seed": pl.Int64,
        "messages": pl.List(pl.Struct({"role": pl.String, "content": pl.String})),
    }
    return pl.DataFrame(rows, schema=schema)


# -- running ------------------------------------------------------------------------------------
def judge_batch(engine: Engine, rows: list[dict[str, Any]], cfg: JudgeConfig, judge_fp: str) -> list[dict]:
    """Judge a batch; a row whose output cannot be parsed is re-asked (new seed) up to max_reasks."""
    schema = judge_schema(cfg.scale_max) if cfg.structured and engine.supports_json_schema else None
    results: dict[int, dict] = {}
    pending = list(range(len(rows)))
    attempts = {i: 0 for i in pending}
    for round_no in range(cfg.max_reasks + 1):
        if not pending:
            break
        requests = [
            Request(
                messages=rows[i]["messages"],
                max_tokens=cfg.sampling.max_tokens,
                temperature=cfg.sampling.temperature,
                top_p=cfg.sampling.top_p,
                seed=rows[i]["seed"] + round_no,
                json_schema=schema,
                tag=i,
            )
            for i in pending
        ]
        retry = []
        for i, completion in zip(pending, check_order(requests, engine.generate(requests))):
            attempts[i] += completion.attempts
            if completion.error:
                parsed = {"score": None, "status": "engine_error", "reason": completion.error, "dimensions": None}
            else:
                parsed = parse_judgment(completion.text, cfg.scale_max)
                if parsed["status"] == "ok" and round_no > 0:
                    parsed["status"] = "retried_ok"
            results[i] = {**parsed, "raw": completion.text, "latency_s": completion.latency_s, "error": completion.error}
            if parsed["status"] in ("unparseable", "out_of_range"):
                retry.append(i)
        pending = retry
    out = []
    for i, row in enumerate(rows):
        result = results[i]
        usable = result["status"] in USABLE
        out.append(
            {
                "prompt_id": row["prompt_id"],
                "sample_idx": row["sample_idx"],
                "sampler_fp": row["sampler_fp"],
                "vote": row["vote"],
                "judge_fp": judge_fp,
                "score": result["score"],
                "quality": result["score"] / cfg.scale_max if usable else None,
                "parse_status": result["status"],
                "reason": result["reason"],
                "dimensions": json.dumps(result["dimensions"]) if result["dimensions"] else None,
                "raw": result["raw"],
                "attempts": attempts[i],
                "error": result["error"],
                "latency_s": result["latency_s"],
                "created_at": time.time(),
            }
        )
    return out


def sample_quality(judgments: pl.DataFrame) -> pl.DataFrame:
    """Votes -> one row per sample: quality (mean of usable votes), spread, vote counts, status."""
    require_columns(judgments, ("prompt_id", "sample_idx", "quality", "parse_status"), "judge.aggregate")
    usable = pl.col("parse_status").is_in(USABLE)
    return judgments.group_by("prompt_id", "sample_idx").agg(
        pl.col("quality").filter(usable).mean().alias("quality"),
        pl.col("score").filter(usable).mean().alias("score"),
        pl.col("quality").filter(usable).std(ddof=0).fill_null(0.0).alias("quality_spread"),
        usable.sum().cast(pl.Int64).alias("votes_ok"),
        pl.len().cast(pl.Int64).alias("votes"),
    )
