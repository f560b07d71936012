"""The judge's re-ask loop, one for the pointwise judge (stage.judge_batch: one score a reply) and the group
judge (group.group_judge_batch: one score per answer label a reply).

    states = [start(row["messages"], keys) for row in rows]     # keys: [""] pointwise, the labels of a group
    ask(engine, rows, states, cfg, schema, parse, reask, final)  # final(i) once row i's state is final

Every row is asked; a row with a score in PARSE_FAILURES (unparseable, out_of_range, missing_dimensions,
truncated) is asked again, up to judge.max_reasks times, each round with its own seed and the correction
`reask` builds; an engine error is not (the engine already retried it). Per reply: `attempts` adds the
requests the engine sent, completion, prompt and cached tokens and latency add up, `reasks` is the round of
the last reply, `raw` / `error` are the last reply's. Each score gets its status from `verdict` and is kept
by `keep`: a usable score stays (a group's answer keeps its first usable score); a failure after re-asks
names the first failure's reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from factory.config import JudgeConfig
from factory.engines.base import Completion, Engine, Request
from factory.stages.judge.parse import PARSE_FAILURES, USABLE, missing_dimensions

Parse = Callable[[dict, str | None], dict[str, dict]]  # (state, reply text) -> key -> parsed score


def judge_request(cfg: JudgeConfig, messages: list, seed: int, round_no: int, schema: Any, tag: int) -> Request:
    """One judge request (pointwise or group) under the judge's sampling; each re-ask round its own seed."""
    return Request(
        messages=messages,
        max_tokens=cfg.sampling.max_tokens,
        temperature=cfg.sampling.temperature,
        top_p=cfg.sampling.top_p,
        seed=(seed + round_no) & 0x7FFFFFFF,
        stop=list(cfg.sampling.stop) or None,
        json_schema=schema,
        tag=tag,
    )


def start(messages: list, keys: list[str]) -> dict[str, Any]:
    """A row's state before its first reply: `results` (key -> the score kept) fills as replies come."""
    return {"keys": keys, "results": {}, "attempts": 0, "reasks": 0, "tokens": None, "prompt_tokens": None,
            "cached_tokens": None, "latency": 0.0, "messages": messages, "raw": None, "error": None}  # fmt: skip


def ask(
    engine: Engine,
    rows: list[dict[str, Any]],
    states: list[dict[str, Any]],
    cfg: JudgeConfig,
    schema: Callable[[int], Any],
    parse: Parse,
    reask: Callable[[int, str | None, list[str]], list[dict]],
    final: Callable[[int], None],
) -> None:
    """Rounds of requests (see the module doc). `schema(i)`: row i's JSON schema (or None); `parse`: a reply's
    scores by key; `reask(i, reply, failing keys)`: the messages of row i's next request; `final(i)`: row i is
    done (called once per row, as its last reply comes)."""
    pending = list(range(len(rows)))
    for round_no in range(cfg.max_reasks + 1):
        if not pending:
            break
        requests = [judge_request(cfg, states[i]["messages"], rows[i]["seed"], round_no, schema(i), i) for i in pending]
        retry: list[int] = []

        def done(completion: Completion, round_no: int = round_no, retry: list[int] = retry) -> None:
            i = completion.tag
            failing = absorb(states[i], completion, round_no, cfg, parse)
            if failing and round_no < cfg.max_reasks:
                states[i]["messages"] = reask(i, completion.text, failing)
                retry.append(i)
                return
            final(i)

        engine.generate(requests, on_done=done)
        pending = sorted(retry)


def absorb(current: dict, completion: Completion, round_no: int, cfg: JudgeConfig, parse: Parse) -> list[str]:
    """Fold one reply into a row's state; the keys whose kept score is still a parse failure."""
    current["attempts"] += completion.attempts
    current["reasks"] = round_no
    current["latency"] += completion.latency_s or 0.0
    for field, value in (
        ("tokens", completion.completion_tokens), ("prompt_tokens", completion.prompt_tokens),
        ("cached_tokens", completion.cached_tokens),
    ):  # fmt: skip
        if value is not None:
            current[field] = (current.get(field) or 0) + value
    current["raw"], current["error"] = completion.text, completion.error
    keys = current["keys"]
    if completion.error:
        failed = {"score": None, "status": "engine_error", "reason": completion.error, "dimensions": None}
        parsed = {key: dict(failed) for key in keys}
    else:
        parsed = {key: verdict(one, completion, round_no, cfg) for key, one in parse(current, completion.text).items()}
    for key in keys:
        current["results"][key] = keep(current["results"].get(key), parsed[key], round_no)
    return [key for key in keys if current["results"][key]["status"] in PARSE_FAILURES]


def verdict(parsed: dict, completion: Completion, round_no: int, cfg: JudgeConfig) -> dict:
    """One parsed score's status: missing_dimensions when a dimension asked for is absent; truncated when the
    reply was cut at the judge's max_tokens (a score read from a cut reply, or none: the judge's own max_tokens
    lost it, not a reply it could not make; the cure is a larger max_tokens); retried_ok when a re-ask got it."""
    if cfg.dimensions:
        parsed = missing_dimensions(parsed, list(cfg.dimension_names))
    if completion.finish_reason == "length" and parsed["status"] in ("ok", "missing_dimensions"):
        parsed = {**parsed, "status": "truncated", "reason": "reply cut at judge.sampling.max_tokens"}
    elif completion.finish_reason == "length" and parsed["status"] in PARSE_FAILURES:
        reason = f"reply cut at judge.sampling.max_tokens before a verdict ({parsed['reason']})"
        parsed = {**parsed, "status": "truncated", "reason": reason}
    if parsed["status"] == "ok" and round_no > 0:
        parsed = {**parsed, "status": "retried_ok"}
    return parsed


def keep(previous: dict | None, parsed: dict, round_no: int) -> dict:
    """The score a key keeps after this reply: a usable earlier one stays; else this reply's, whose reason,
    when it is still not usable after re-asks, names the first failure's (`first_reason`)."""
    if previous is not None and previous["status"] in USABLE:
        return previous
    if previous is not None and parsed["status"] not in USABLE:
        reason = f"{parsed['reason']}; after {round_no} re-ask(s), first: {previous['first_reason']}"
        parsed = {**parsed, "reason": reason}
    return {**parsed, "first_reason": previous["first_reason"] if previous else parsed["reason"]}
