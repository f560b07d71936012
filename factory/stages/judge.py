"""Judge stage: a generative reward model scores every usable sample on the rubric.

Input columns:  samples   -> prompt_id, sample_idx, sampler_fp, answer, reasoning, error
                prompts   -> prompt_id, product_info, history, question
                stored    -> prompt_id, sample_idx, sampler_fp, vote, judge_fp, parse_status (already judged)
Output columns: judgments -> see factory.schemas.JUDGMENTS

    >>> plan = plan_judgments(samples, prompts, stored, cfg, judge_fp, rubric)   # only what is missing
    >>> rows = judge_batch(engine, plan.to_dicts(), cfg, judge_fp)             # inside a judge actor
    >>> sample_quality(judgments)   # prompt_id, sample_idx, quality, score, quality_spread, votes_ok, votes

Every judgment is a score or a reason: parse_status is one of
ok | retried_ok (parsed after a re-ask) | unparseable | out_of_range | engine_error,
and the judge's raw text is kept next to it.
"""

from __future__ import annotations

import json
import math
import re
import string
import time
from collections.abc import Mapping
from typing import Any

import polars as pl

from factory.config import ConfigError, JudgeConfig, RunConfig
from factory.engines.base import Completion, Engine, Request
from factory.keys import derive_seed, stable_hash
from factory.prompts import render_history
from factory.schemas import JUDGMENTS, SAMPLES, require_columns
from factory.stages.base import Emit, PromptRows, latest, read_status

KEY = ("prompt_id", "sample_idx", "sampler_fp", "vote")
# What planning and resume read of the stored judgments: keys and status, never the text.
STATUS_COLUMNS = [*KEY, "judge_fp", "parse_status", "sample_created_at", "created_at"]
SAMPLE_KEY = ["prompt_id", "sample_idx", "sampler_fp"]
STATUSES = ("ok", "retried_ok", "unparseable", "out_of_range", "engine_error")
USABLE = ("ok", "retried_ok")
PARSE_FAILURES = ("unparseable", "out_of_range")  # what a re-ask can fix; an engine error was already retried
DIMENSIONS = ("question", "product_info", "self", "instruction")
RUBRIC_FIELDS = ("product_info", "history", "question", "answer", "reasoning", "scale_max")
REASK_ECHO_CHARS = 600  # how much of a failed reply goes back to the judge with the correction


def judge_schema(
    scale_max: float,
    dimensions: bool = False,
    names: tuple[str, ...] | list[str] = DIMENSIONS,
    tags: bool = False,
    tag_values: tuple[str, ...] | list[str] = (),
) -> dict:
    """The JSON schema the judge output is constrained to where the engine supports it.

    The score comes first, so that an output cut at max_tokens still holds it; the reason is last.
    Kept to the subset every backend takes (llama.cpp grammars, vLLM guided decoding, OpenAI strict
    mode): all properties required, no additional properties, no string length limits (the rubric
    asks for one short sentence and max_tokens bounds it). `names`: the dimensions asked for with
    `dimensions`; `tags` adds a list of strings (one of `tag_values` each, when given)."""
    whole = float(scale_max).is_integer()
    score = {"type": "integer" if whole else "number", "minimum": 0, "maximum": int(scale_max) if whole else scale_max}
    properties: dict[str, Any] = {"score": score}
    if dimensions:
        properties["dimensions"] = {
            "type": "object",
            "properties": {name: score for name in names},
            "required": list(names),
            "additionalProperties": False,
        }
    if tags:
        item: dict[str, Any] = {"type": "string", "enum": list(tag_values)} if tag_values else {"type": "string"}
        properties["tags"] = {"type": "array", "items": item}
    properties["reason"] = {"type": "string"}
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def judge_fingerprint(cfg: JudgeConfig, model_id: str, rubric: str) -> str:
    """What makes judgments comparable: judge model, rubric text, scale, output format and judge sampling.
    `votes` and `max_reasks` are not in it: growing votes 1 -> 3 reuses vote 0 of every sample."""
    identity = {
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
    # Each only when set, so judgments stored before the option existed keep their key.
    if cfg.sampling.stop:
        identity["stop"] = list(cfg.sampling.stop)
    if cfg.dimensions:
        identity["dimensions"] = True
        if tuple(cfg.dimension_names) != DIMENSIONS:
            identity["dimension_names"] = list(cfg.dimension_names)
    if cfg.tags:
        identity["tags"] = list(cfg.tag_values) or True
    return stable_hash(identity)


# -- rubric ---------------------------------------------------------------------------------------
def rubric_fields(rubric: str) -> set[str]:
    """The {field} names a rubric template uses (raises ValueError on a malformed template)."""
    return {name for _, name, _, _ in string.Formatter().parse(rubric) if name is not None}


def check_rubric(rubric: str, key: str = "judge.rubric_file") -> None:
    """Fail before any request when the rubric template cannot be rendered, naming the config key.

    Fields: {product_info} {history} {question} {answer} {reasoning} {scale_max}; {answer} is required.
    Literal braces (the JSON example) are written doubled: {{"score": ...}}."""
    try:
        fields = rubric_fields(rubric)
    except ValueError as exc:
        raise ConfigError(
            f"{key}: the rubric is not a valid template ({exc}); write literal braces as {{{{ }}}}"
        ) from None
    unknown = sorted(fields - set(RUBRIC_FIELDS))
    if unknown:
        raise ConfigError(f"{key}: unknown field(s) {unknown} in the rubric; valid: {', '.join(RUBRIC_FIELDS)}")
    if "answer" not in fields:
        raise ConfigError(f"{key}: the rubric has no {{answer}} field, so the judge would never see the reply")


def render_rubric(rubric: str, prompt: dict, sample: dict, cfg: JudgeConfig) -> list[dict[str, str]]:
    """One judge request's messages: the rubric filled with the prompt's fields and the sample's answer.
    The reasoning is shown (in <think> tags before the answer, and as {reasoning}) only with include_reasoning."""
    answer = sample.get("answer") or ""
    reasoning = (sample.get("reasoning") or "") if cfg.include_reasoning else ""
    if reasoning and "reasoning" not in rubric_fields(rubric):
        answer = f"<think>{reasoning}</think>\n{answer}"
    history = prompt.get("history") or []
    content = rubric.format(
        product_info=prompt.get("product_info") or "(none)",
        history=render_history(history),
        question=prompt.get("question") or "",
        answer=answer,
        reasoning=reasoning or "(not shown)",
        scale_max=int(cfg.scale_max) if float(cfg.scale_max).is_integer() else cfg.scale_max,
    )
    return [{"role": "user", "content": content}]


# -- parsing ----------------------------------------------------------------------------------------
_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_THINK_OPEN = re.compile(r"<think>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</think>", re.IGNORECASE)
_NUMBER = r"-?\d+(?:\.\d+)?"
# "score: 85", "**Score:** 85", "Overall score is 85/100", "评分：85" - the words a judge puts before its number.
_SCORE_TEXT = re.compile(
    r"(?<![a-z])(?:overall[ _]score|final[ _]score|total[ _]score|score|rating|评分|得分|总分|分数)"
    r"[\s*_\"'`]*(?:[:：=]|\bis\b|\bof\b|为|是)[\s*_\"'`]*"
    rf"({_NUMBER})(?:\s*(?:/|out of)\s*({_NUMBER}))?",
    re.IGNORECASE,
)
_OUT_OF = re.compile(rf"({_NUMBER})\s*(?:/|out of)\s*({_NUMBER})", re.IGNORECASE)
_SCORE_KEYS = ("score", "overall", "overall_score", "total_score", "final_score", "rating", "评分", "得分", "总分")


def strip_reasoning(text: str) -> tuple[str, bool]:
    """(the judge's final text, whether it ended inside an unclosed <think>).

    R1-style output: closed <think> blocks go; a `</think>` without its opening tag (templates that
    open the block in the prompt) keeps what follows it; an unclosed <think> keeps what precedes it."""
    body = _THINK_BLOCK.sub("", text)
    closes = list(_THINK_CLOSE.finditer(body))
    if closes:
        body = body[closes[-1].end() :]
    opened = _THINK_OPEN.search(body)
    if opened:
        return body[: opened.start()].strip(), True
    return body.strip(), False


def _json_objects(text: str) -> list[dict]:
    """Every top-level JSON object in the text (fenced or bare), in order."""
    found = []
    decoder = json.JSONDecoder()
    index = text.find("{")
    while index != -1:
        try:
            value, end = decoder.raw_decode(text, index)
        except (ValueError, RecursionError):  # also ints too long to convert (> 4300 digits)
            index = text.find("{", index + 1)
            continue
        if isinstance(value, dict):
            found.append(value)
        index = text.find("{", end)
    return found


def _number(value: Any) -> tuple[float, float | None] | None:
    """(number, its stated scale top or None) from a JSON value: 85, 85.0, "85", "85/100"."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        try:
            return float(value), None
        except OverflowError:  # an integer beyond float range: no finite score
            return math.inf, None
    if isinstance(value, float):
        return value, None
    if isinstance(value, str):
        match = re.fullmatch(rf"\s*({_NUMBER})\s*(?:(?:/|out of)\s*({_NUMBER}))?\s*", value, re.IGNORECASE)
        if match:
            return float(match.group(1)), float(match.group(2)) if match.group(2) else None
    return None


def _lookup(obj: dict, keys: tuple[str, ...]) -> Any:
    lowered = {str(k).strip().lower(): v for k, v in obj.items()}
    for key in keys:
        if key in lowered and _number(lowered[key]) is not None:
            return lowered[key]
    return None


def _dimensions(obj: dict, scale_max: float) -> dict[str, float] | None:
    """Per-dimension scores that are numbers on the scale; anything else is left out (the overall
    score is what the pairs use, so a bad dimension never costs the judgment)."""
    dims = obj.get("dimensions", obj.get("scores"))
    if not isinstance(dims, dict):
        return None
    out = {}
    for name, value in dims.items():
        parsed = _number(value)
        if parsed is not None and math.isfinite(parsed[0]) and 0 <= parsed[0] <= scale_max:
            out[str(name)] = parsed[0]
    return out or None


def parse_judgment(text: str | None, scale_max: float) -> dict[str, Any]:
    """Judge text -> {score, status, reason, dimensions}. Never raises; status says what went wrong.

    Order: strip <think> blocks; the last JSON object with a numeric "score" (or overall/rating);
    else the last "score: N" form; else the last "N/M" or "N out of M" with M == scale_max.
    Then: a non-finite number is unparseable; a score stated on another scale ("8/10" on 0..100) or
    outside 0..scale_max is out_of_range (never clipped, never rescaled: the judge is re-asked).
    """
    body, in_think = strip_reasoning(text or "")
    found: tuple[float, float | None] | None = None
    reason, dimensions = "", None
    for obj in reversed(_json_objects(body)):
        value = _lookup(obj, _SCORE_KEYS)
        if value is not None:
            found = _number(value)
            reason = str(obj.get("reason") or obj.get("explanation") or "")
            dimensions = _dimensions(obj, scale_max)
            break
    if found is None:
        matches = _SCORE_TEXT.findall(body)
        if matches:
            value, top = matches[-1]
            found = (float(value), float(top) if top else None)
    if found is None:
        for value, top in _OUT_OF.findall(body):
            if float(top) == float(scale_max):
                found = (float(value), float(top))
    if found is None:
        if in_think:
            why = "judge output ended inside <think> with no score (raise judge.sampling.max_tokens?)"
        else:
            why = "empty judge output" if not body else "no score found in judge output"
        return {"score": None, "status": "unparseable", "reason": why, "dimensions": None}
    score, top = found
    if not math.isfinite(score):
        return {
            "score": None,
            "status": "unparseable",
            "reason": f"score is not a finite number ({score})",
            "dimensions": None,
        }
    if top is not None and top != float(scale_max):
        why = f"score given as {score:g}/{top:g}, but the scale is 0..{scale_max:g}"
        return {"score": score, "status": "out_of_range", "reason": why, "dimensions": dimensions}
    if not 0 <= score <= scale_max:
        why = f"score {score:g} outside 0..{scale_max:g}"
        return {"score": score, "status": "out_of_range", "reason": why, "dimensions": dimensions}
    return {"score": score, "status": "ok", "reason": reason, "dimensions": dimensions}


def parse_tags(text: str | None, allowed: tuple[str, ...] | list[str] = ()) -> list[str] | None:
    """The `tags` list of the judge's last JSON object that has one (after <think> blocks), each tag
    stripped, once, in order; only `allowed` ones when given. None when the judge gave no list."""
    body, _ = strip_reasoning(text or "")
    for obj in reversed(_json_objects(body)):
        found = obj.get("tags")
        if isinstance(found, list):
            tags = [str(t).strip() for t in found if isinstance(t, (str, int, float)) and str(t).strip()]
            if allowed:
                tags = [t for t in tags if t in allowed]
            return list(dict.fromkeys(tags))
    return None


# -- planning -----------------------------------------------------------------------------------------
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


def pending_keys(
    samples: pl.DataFrame, stored: pl.DataFrame | None, votes: int, judge_fp: str, retry_failed: bool = False
) -> pl.DataFrame:
    """(prompt_id, sample_idx, sampler_fp, vote) of every vote not yet judged under `judge_fp`.

    Input: samples -> prompt_id, sample_idx, sampler_fp (the ones to judge; and created_at, which ties
                      a judgment to the very sample row it judged);
           stored  -> prompt_id, sample_idx, sampler_fp, vote, judge_fp, parse_status, created_at
                      (and sample_created_at).
    The same rubric plans nothing, a changed rubric (new judge_fp) plans every vote again. With
    `retry_failed`, stored engine_error judgments are planned again (the new row supersedes)."""
    key = list(KEY)
    wanted = samples.select(SAMPLE_KEY).join(pl.DataFrame({"vote": list(range(votes))}, schema={"vote": pl.Int64}), how="cross")
    if stored is not None and stored.height:
        require_columns(stored, (*key, "judge_fp", "parse_status", "created_at"), "judge.plan")
        done = of_current_samples(stored.filter(pl.col("judge_fp") == judge_fp), samples)
        if retry_failed:  # the latest row of a key decides, as when the judgments are read
            done = latest(done, key).filter(pl.col("parse_status") != "engine_error")
        wanted = wanted.join(done.select(key).unique(), on=key, how="anti", maintain_order="left")
    return wanted


def plan_judgments(
    samples: pl.DataFrame,
    prompts: pl.DataFrame,
    stored: pl.DataFrame | None,
    cfg: JudgeConfig,
    judge_fp: str,
    rubric: str,
) -> pl.DataFrame:
    """Every (usable sample, vote) not yet judged under `judge_fp`, rendered: the request rows
    judge_batch takes (prompt_id, sample_idx, sampler_fp, vote, seed, messages)."""
    require_columns(samples, ("prompt_id", "sample_idx", "sampler_fp", "answer", "reasoning", "error"), "judge.plan")
    check_rubric(rubric)
    work = judgeable(samples).select(
        *SAMPLE_KEY, "answer", "reasoning", *(["created_at"] if "created_at" in samples.columns else [])
    )
    keys = pending_keys(work, stored, cfg.votes, judge_fp, cfg.retry_failed)
    if "created_at" in work.columns:
        work = work.rename({"created_at": "sample_created_at"})
    work = keys.join(work, on=["prompt_id", "sample_idx", "sampler_fp"], how="left", maintain_order="left")
    rows = render_requests(work.to_dicts(), prompt_fields(prompts), rubric, cfg)
    return pl.DataFrame(rows, schema=REQUEST_SCHEMA)


REQUEST_SCHEMA = {
    "prompt_id": pl.String,
    "sample_idx": pl.Int64,
    "sampler_fp": pl.String,
    "vote": pl.Int64,
    "sample_created_at": pl.Float64,
    "seed": pl.Int64,
    "messages": pl.List(pl.Struct({"role": pl.String, "content": pl.String})),
}


def prompt_fields(prompts: pl.DataFrame) -> Mapping[str, dict]:
    """prompt_id -> the fields a rubric shows (product_info, history, question)."""
    require_columns(prompts, ("prompt_id", "product_info", "history", "question"), "judge")
    return PromptRows(prompts, ["product_info", "history", "question"])


def render_requests(work: list[dict], prompts: Mapping[str, dict], rubric: str, cfg: JudgeConfig) -> list[dict]:
    """Work rows (keys + answer, reasoning) -> request rows with their derived seed and rubric messages."""
    orphans = {row["prompt_id"] for row in work if row["prompt_id"] not in prompts}
    if orphans:
        raise ValueError(f"judge.plan: samples of {len(orphans)} prompt(s) not in prompts, e.g. {sorted(orphans)[:3]}")
    return [
        {
            "prompt_id": row["prompt_id"],
            "sample_idx": row["sample_idx"],
            "sampler_fp": row["sampler_fp"],
            "vote": row["vote"],
            "sample_created_at": row.get("sample_created_at"),
            "seed": derive_seed(cfg.sampling.seed, "judge", row["prompt_id"], row["sample_idx"], row["vote"]),
            "messages": render_rubric(rubric, prompts[row["prompt_id"]], row, cfg),
        }
        for row in work
    ]


# -- running ------------------------------------------------------------------------------------------
def reask_messages(
    messages: list[dict[str, str]], failed_text: str, reason: str, cfg: JudgeConfig
) -> list[dict[str, str]]:
    """The original request plus the failed reply and a correction, so the judge knows what to fix
    (a plain retry with a new seed tends to repeat a format mistake such as a 0..10 score)."""
    body, _ = strip_reasoning(failed_text or "")
    top = int(cfg.scale_max) if float(cfg.scale_max).is_integer() else cfg.scale_max
    correction = (
        f"Your reply could not be used: {reason}. Reply again with only a JSON object, "
        f'{{"score": <a number from 0 to {top}>, "reason": "<one short sentence>"}}, and nothing else.'
    )
    echo = body[-REASK_ECHO_CHARS:] or "(no reply)"
    return [*messages, {"role": "assistant", "content": echo}, {"role": "user", "content": correction}]


def judge_batch(
    engine: Engine, rows: list[dict[str, Any]], emit: Emit | None, cfg: JudgeConfig, judge_fp: str
) -> list[dict]:
    """Judge a batch of planned rows -> judgment rows (one per plan row, same order); each row is
    also handed to `emit` as soon as it is final.

    A row whose output cannot be parsed (unparseable, out_of_range) is re-asked up to max_reasks
    times with a new seed and the correction above; parsed on a re-ask -> retried_ok. An engine error
    is not re-asked here (the engine already retried it). `attempts` counts the LLM requests made,
    `completion_tokens` and `latency_s` add up over them; `raw` is the last reply."""
    schema = (
        judge_schema(cfg.scale_max, cfg.dimensions, cfg.dimension_names, cfg.tags, cfg.tag_values)
        if cfg.structured and engine.supports_json_schema
        else None
    )
    state = [
        {"result": None, "attempts": 0, "reasks": 0, "tokens": None, "latency": 0.0, "messages": row["messages"]}
        for row in rows
    ]
    out: list[dict | None] = [None] * len(rows)
    pending = list(range(len(rows)))
    for round_no in range(cfg.max_reasks + 1):
        if not pending:
            break
        requests = [
            Request(
                messages=state[i]["messages"],
                max_tokens=cfg.sampling.max_tokens,
                temperature=cfg.sampling.temperature,
                top_p=cfg.sampling.top_p,
                seed=(rows[i]["seed"] + round_no) & 0x7FFFFFFF,
                stop=list(cfg.sampling.stop) or None,
                json_schema=schema,
                tag=i,
            )
            for i in pending
        ]
        retry: list[int] = []

        def done(completion: Completion, round_no: int = round_no, retry: list[int] = retry) -> None:
            i = completion.tag
            if _absorb(state[i], completion, round_no, rows[i], cfg):
                retry.append(i)
                return
            out[i] = judgment_row(rows[i], state[i], cfg, judge_fp)
            if emit is not None:
                emit([out[i]])

        engine.generate(requests, on_done=done)
        pending = sorted(retry)
    lost = [i for i, row in enumerate(out) if row is None]
    if lost:
        raise RuntimeError(f"engine lost {len(lost)} judge completion(s), e.g. row {lost[0]}")
    return out  # type: ignore[return-value]


def _absorb(current: dict, completion: Completion, round_no: int, row: dict, cfg: JudgeConfig) -> bool:
    """Fold one completion into a row's state; True when the row is to be re-asked."""
    previous = current["result"]
    current["attempts"] += completion.attempts
    current["reasks"] = round_no
    current["latency"] += completion.latency_s or 0.0
    if completion.completion_tokens is not None:
        current["tokens"] = (current["tokens"] or 0) + completion.completion_tokens
    if completion.prompt_tokens is not None:
        current["prompt_tokens"] = (current.get("prompt_tokens") or 0) + completion.prompt_tokens
    if completion.error:
        parsed = {"score": None, "status": "engine_error", "reason": completion.error, "dimensions": None}
    else:
        parsed = parse_judgment(completion.text, cfg.scale_max)
        if parsed["status"] == "ok" and round_no > 0:
            parsed["status"] = "retried_ok"
        if completion.finish_reason == "length" and parsed["status"] in PARSE_FAILURES:
            parsed["reason"] += " (output cut at judge.sampling.max_tokens)"
    if previous is not None and parsed["status"] not in USABLE:
        parsed["reason"] += f"; after {round_no} re-ask(s), first: {previous['first_reason']}"
    parsed["first_reason"] = previous["first_reason"] if previous else parsed["reason"]
    current["result"] = {**parsed, "raw": completion.text, "error": completion.error}
    if parsed["status"] in PARSE_FAILURES and round_no < cfg.max_reasks:
        current["messages"] = reask_messages(row["messages"], completion.text, parsed["reason"], cfg)
        return True
    return False


def judgment_row(row: dict, current: dict, cfg: JudgeConfig, judge_fp: str) -> dict:
    result = current["result"]
    usable = result["status"] in USABLE
    return {
        "prompt_id": row["prompt_id"],
        "sample_idx": row["sample_idx"],
        "sampler_fp": row["sampler_fp"],
        "vote": row["vote"],
        "judge_fp": judge_fp,
        "sample_created_at": row.get("sample_created_at"),
        "score": result["score"],
        "quality": result["score"] / cfg.scale_max if usable else None,
        "parse_status": result["status"],
        "reason": result["reason"],
        "dimensions": None,  # the JSON form of `dims`, kept in the schema for runs made before `dims`
        "dims": [{"name": k, "score": v} for k, v in result["dimensions"].items()] if result["dimensions"] else None,
        "tags": parse_tags(result["raw"], cfg.tag_values) if cfg.tags and usable else None,
        "raw": result["raw"],
        "attempts": current["attempts"],
        "reasks": current["reasks"],
        "completion_tokens": current["tokens"],
        "prompt_tokens": current.get("prompt_tokens"),
        "error": result["error"],
        "latency_s": current["latency"],
        "created_at": time.time(),
    }


def failed_judgments(requests: list[dict], reason: str, judge_fp: str, attempts: int = 0) -> list[dict]:
    """The rows stored for judge requests that could not be served (their replica kept failing):
    judgment_row's fields, with parse_status engine_error."""
    current = {"attempts": attempts, "reasks": 0, "tokens": None, "latency": 0.0}
    result = {"score": None, "status": "engine_error", "reason": reason, "dimensions": None, "raw": None, "error": reason}
    return [judgment_row(r, {**current, "result": result}, JudgeConfig(), judge_fp) for r in requests]


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


DIMS_DTYPE = pl.List(pl.Struct({"name": pl.String, "score": pl.Float64}))


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


class JudgeStage:
    """The judge stage as the executor drives it (factory/stages/base.py): fed by stored samples.
    `factory run` has one per judge: `judge` (cfg.judge) and `judge_<name>` for each cfg.judges entry,
    each under its own fingerprint fps[<stage name>], all writing judgments/."""

    name = "judge"
    table = "judgments"
    key = KEY
    schema = JUDGMENTS
    upstream = "sample"
    run_batch = staticmethod(judge_batch)

    def __init__(
        self,
        cfg: RunConfig,
        fps: dict[str, str],
        prompts: pl.DataFrame,
        rubric: str,
        *,
        k: int | None = None,
        name: str = "judge",
        upstream: str | None = "sample",
        judge: JudgeConfig | None = None,
    ):
        """`name`: the stage (and fingerprint) name; `judge`: its config (default cfg.judge). `factory eval`
        passes a candidate's k and its sample stage as upstream (None for a candidate's imported answers)."""
        check_rubric(rubric)
        self.name, self.upstream = name, upstream
        self.cfg = judge if judge is not None else cfg.judge
        self.judge_fp, self.sampler_fp, self.rubric = fps[name], fps["sampler"], rubric
        self.k = k if k is not None else cfg.sampler.k
        self.engine = self.cfg.engine
        self.prompts = prompt_fields(prompts)
        self.prompt_ids = prompts["prompt_id"]
        self.note = ""

    @property
    def fanout(self) -> int:
        """Judge requests per usable upstream sample (`factory plan` estimates with it)."""
        return self.cfg.votes

    @property
    def batch_size(self) -> int:
        return self.engine.batch_size

    @property
    def batch_args(self) -> tuple:
        return (self.cfg, self.judge_fp)

    def _mine(self, samples: pl.DataFrame) -> pl.DataFrame:
        return samples.filter(
            (pl.col("sampler_fp") == self.sampler_fp)
            & pl.col("prompt_id").is_in(self.prompt_ids.implode())
            & (pl.col("sample_idx") < self.k)
        )

    def plan(self, store: Any) -> pl.DataFrame:
        """Keys first (samples' status, judgments' status, prompt ids as integer codes), then the answer
        text of the pending samples only."""
        from factory.stages.sample import STATUS_COLUMNS as SAMPLE_STATUS

        ids = self.prompt_ids
        mine = (pl.col("sampler_fp") == self.sampler_fp) & (pl.col("sample_idx") < self.k)
        samples = latest(read_status(store, "samples", SAMPLES, SAMPLE_STATUS, ids, mine), ["prompt_id", "sample_idx"])
        failed = samples.filter(pl.col("error").is_not_null()).height
        samples = samples.filter(pl.col("error").is_null())
        ours = (pl.col("judge_fp") == self.judge_fp) & (pl.col("sampler_fp") == self.sampler_fp)
        stored = read_status(store, "judgments", JUDGMENTS, STATUS_COLUMNS, ids, ours)
        keys = pending_keys(samples, stored, self.cfg.votes, self.judge_fp, self.cfg.retry_failed)
        keys = keys.with_columns(ids.gather(keys["prompt_id"]).alias("prompt_id"))
        text = self._text(store, keys.select(SAMPLE_KEY).unique())
        work = judgeable(keys.join(text, on=SAMPLE_KEY, how="inner", maintain_order="left"))
        empty = (keys.height - work.height) // max(self.cfg.votes, 1)
        skipped = [f"{failed} failed sample(s)" if failed else "", f"{empty} with an empty answer" if empty else ""]
        self.note = " and ".join(p for p in skipped if p) + " not judged" if failed or empty else ""
        return work.select(*KEY, "answer", "reasoning", pl.col("created_at").alias("sample_created_at"))

    @staticmethod
    def _text(store: Any, keys: pl.DataFrame) -> pl.DataFrame:
        return sample_text(store, keys)

    def follow(self, rows: list[dict]) -> list[dict]:
        """Samples just stored -> their judge work (every vote of each usable one)."""
        work = []
        for row in rows:
            if row["sampler_fp"] != self.sampler_fp or row["error"] is not None or not (row["answer"] or "").strip():
                continue
            if row["prompt_id"] not in self.prompts or row["sample_idx"] >= self.k:
                continue
            for vote in range(self.cfg.votes):
                work.append({**{k: row[k] for k in SAMPLE_KEY}, "vote": vote, "answer": row["answer"],
                             "reasoning": row["reasoning"], "sample_created_at": row["created_at"]})  # fmt: skip
        return work

    def render(self, work: list[dict]) -> list[dict]:
        return render_requests(work, self.prompts, self.rubric, self.cfg)

    def failed(self, requests: list[dict], reason: str) -> list[dict]:
        return failed_judgments(requests, reason, self.judge_fp)

    def read(self, store: Any, samples: pl.DataFrame | None = None) -> pl.DataFrame:
        """The current judgments of `samples` (default: this run's stored samples)."""
        if samples is None:
            status = store.read("samples", SAMPLES, columns=[*SAMPLE_KEY, "created_at"])
            samples = latest(self._mine(status), SAMPLE_KEY) if status is not None else pl.DataFrame()
        return current_judgments(store.read("judgments", JUDGMENTS), self.judge_fp, samples)

    def ok(self, row: dict) -> bool:
        return row["parse_status"] in USABLE

    def tokens(self, row: dict) -> tuple[int, int]:
        return int(row.get("prompt_tokens") or 0), int(row.get("completion_tokens") or 0)
