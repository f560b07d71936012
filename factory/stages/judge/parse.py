"""Reading a judge's reply: the score (JSON, or "score: 7", "7/10" in text), dimensions and tags.

Every judgment is a score or a reason: parse_status is one of
ok | retried_ok (parsed after a re-ask) | unparseable | out_of_range | missing_dimensions |
truncated | engine_error.

A judge's text is untrusted: every step here runs in time linear in its length (no pattern that
backtracks over a run of digits or spaces, no search restarted at every `<think>`, a bounded budget for
the JSON objects tried), so megabytes of hostile text cost milliseconds and end as `unparseable`.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from factory.stages.think import think_blocks



STATUSES = ("ok", "retried_ok", "unparseable", "out_of_range", "missing_dimensions", "truncated", "engine_error")
USABLE = ("ok", "retried_ok")
# What a re-ask can fix; an engine error was already retried. missing_dimensions: a dimension asked for
# (judge.dimensions) is absent or off the scale; truncated: the reply was cut at judge.sampling.max_tokens,
# before its verdict or after (a score read from a cut reply is not trusted: its dimensions and tags may be
# lost with the rest); its cure is a larger max_tokens, which the run's summary names.
PARSE_FAILURES = ("unparseable", "out_of_range", "missing_dimensions", "truncated")
REASK_ECHO_CHARS = 600  # how much of a failed reply goes back to the judge with the correction

_THINK_OPEN = re.compile(r"<think>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</think>", re.IGNORECASE)
# A number starts where no digit or point precedes it: a run of N digits is tried once, not N times.
_NUMBER = r"(?<![\d.])-?\d+(?:\.\d+)?"
_NUMBER_CHARS = 64  # a JSON string longer than this is not a score ("85", " 85 / 100 ")
# JSON objects tried per character of text: a failed attempt is charged the characters it may have read.
_JSON_BUDGET = 4
# The most characters of a judge's final text (after its reasoning) read for the score: its verdict is at
# the end, and no rubric's verdict is this long; more than this is hostile or runaway text.
PARSE_CHARS = 65_536
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
    body = think_blocks(text, ignore_case=True)[1]
    closes = list(_THINK_CLOSE.finditer(body))
    if closes:
        body = body[closes[-1].end() :]
    opened = _THINK_OPEN.search(body)
    if opened:
        return body[: opened.start()].strip(), True
    return body.strip(), False


def _verdict(text: str | None) -> tuple[str, bool]:
    """strip_reasoning, then the last PARSE_CHARS characters of what is left."""
    body, in_think = strip_reasoning(text or "")
    return body[-PARSE_CHARS:], in_think


def _json_objects(text: str) -> list[dict]:
    """Every top-level JSON object in the text (fenced or bare), in order: from each `{` not inside an
    object already found. Attempts that fail are charged the text they may have read (to the error's
    position, or to the end for nesting too deep to decode); once that passes _JSON_BUDGET times the
    text's length, no more are tried (hostile text: what was found so far is kept)."""
    found = []
    decoder = json.JSONDecoder()
    budget = _JSON_BUDGET * len(text)
    index = text.find("{")
    while index != -1:
        try:
            value, end = decoder.raw_decode(text, index)
        except json.JSONDecodeError as exc:
            budget -= max(exc.pos - index, 1)
        except (ValueError, RecursionError):  # ints too long to convert (> 4300 digits), nesting too deep
            budget -= len(text) - index
        else:
            if isinstance(value, dict):
                found.append(value)
            index = text.find("{", end)
            continue
        if budget <= 0:
            break
        index = text.find("{", index + 1)
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
    if isinstance(value, str) and len(value) <= _NUMBER_CHARS:
        match = re.fullmatch(rf"\s*({_NUMBER})\s*(?:(?:/|out of)\s*({_NUMBER}))?\s*", value, re.IGNORECASE)
        if match:
            return float(match.group(1)), float(match.group(2)) if match.group(2) else None
    return None


_ABSENT = object()


def _lookup(obj: dict, keys: tuple[str, ...]) -> Any:
    """The first of `keys` (any case) whose value is a number; else the value of the first one present
    (a score that is not a number: "high", null); else _ABSENT."""
    lowered = {str(k).strip().lower(): v for k, v in obj.items()}
    present = [lowered[key] for key in keys if key in lowered]
    return next((v for v in present if _number(v) is not None), present[0] if present else _ABSENT)


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


def missing_dimensions(parsed: dict[str, Any], names: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """An `ok` parse that lacks one of the dimensions asked for (`names`) -> missing_dimensions."""
    if parsed["status"] != "ok" or not names:
        return parsed
    absent = [n for n in names if n not in (parsed["dimensions"] or {})]
    if not absent:
        return parsed
    why = f"dimension(s) {', '.join(absent)} missing or off the 0..scale_max scale"
    return {**parsed, "status": "missing_dimensions", "reason": why}


def parse_judgment(text: str | None, scale_max: float) -> dict[str, Any]:
    """Judge text -> {score, status, reason, dimensions}. Never raises; status says what went wrong.

    Order: strip <think> blocks (the last PARSE_CHARS characters of what is left are read); the last
    JSON object with a "score" (or overall/rating) key: its number, and when it is not a number ("high",
    null) the judgment is unparseable (never a number read from elsewhere in the text); else the last
    "score: N" form; else the last "N/M" or "N out of M" with M == scale_max. Then: a non-finite number
    is unparseable; a score stated on another scale ("8/10" on 0..100) or outside 0..scale_max is
    out_of_range (never clipped, never rescaled: the judge is re-asked).
    """
    body, in_think = _verdict(text)
    found: tuple[float, float | None] | None = None
    reason, dimensions = "", None
    for obj in reversed(_json_objects(body)):
        value = _lookup(obj, _SCORE_KEYS)
        if value is _ABSENT:
            continue
        found = _number(value)
        if found is None:
            shown = repr(value) if len(repr(value)) <= 60 else f"{repr(value)[:57]}..."
            why = f"the JSON score is not a number: {shown}"
            return {"score": None, "status": "unparseable", "reason": why, "dimensions": None}
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
    body, _ = _verdict(text)
    for obj in reversed(_json_objects(body)):
        found = obj.get("tags")
        if isinstance(found, list):
            tags = [str(t).strip() for t in found if isinstance(t, (str, int, float)) and str(t).strip()]
            if allowed:
                tags = [t for t in tags if t in allowed]
            return list(dict.fromkeys(tags))
    return None


def parse_group(text: str | None, labels: list[str], scale_max: float) -> dict[str, dict[str, Any]]:
    """A group judge's reply -> label -> {score, status, reason, dimensions, tags_text}: the last JSON object
    holding any of the labels, each label's value read as a pointwise reply; a label it lacks is unparseable."""
    body, in_think = strip_reasoning(text or "")
    found: dict | None = None
    for obj in reversed(_json_objects(body)):
        if any(isinstance(obj.get(label), dict) for label in labels):
            found = obj
            break
    out = {}
    for label in labels:
        value = found.get(label) if found is not None else None
        if isinstance(value, dict):
            one = json.dumps(value, ensure_ascii=False)
            out[label] = {**parse_judgment(one, scale_max), "text": one}
        else:
            why = f"no score for answer {label}"
            if found is None:
                why = "empty judge output" if not body else "no JSON object with the answers' labels in judge output"
            if found is None and in_think:
                why = "judge output ended inside <think> with no scores (raise judge.sampling.max_tokens?)"
            out[label] = {"score": None, "status": "unparseable", "reason": why, "dimensions": None, "text": ""}
    return out
