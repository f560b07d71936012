"""The judge's rubric: the template's fields and checks, the request messages, the output's JSON schema.

    check_rubric(text, "judge.rubric_file")               # before any request; names the key
    render_rubric(text, prompt, sample, cfg)            # -> [{"role": "user", "content": ...}]
    judge_schema(100, dimensions=True)                  # the JSON schema an engine constrains output to
"""

from __future__ import annotations

import json
import math
import string
from typing import Any


from factory.config import ConfigError, JudgeConfig
from factory.prompts import render_history
from factory.stages.judge.parse import REASK_ECHO_CHARS, strip_reasoning

DIMENSIONS = ("question", "product_info", "self", "instruction")
FREE_TAGS_MAX = 8  # judge.tags with no tag_values: at most this many free-text tags
RUBRIC_FIELDS = ("product_info", "history", "question", "answer", "reasoning", "scale_max")


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
    if tags:  # bounded: a judge cannot loop on one tag until max_tokens
        item: dict[str, Any] = {"type": "string", "enum": list(tag_values)} if tag_values else {"type": "string"}
        top = len(tag_values) if tag_values else FREE_TAGS_MAX
        properties["tags"] = {"type": "array", "items": item, "maxItems": top, "uniqueItems": True}
    properties["reason"] = {"type": "string"}
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def minimal_reply(scale_max: float, dimensions: bool, names: list[str] | tuple[str, ...], tags: bool) -> str:
    """The shortest JSON reply the schema allows at full scale (every dimension, no tag, an empty
    reason): what judge.sampling.max_tokens must at least hold."""
    top = int(scale_max) if float(scale_max).is_integer() else scale_max
    reply: dict[str, Any] = {"score": top}
    if dimensions:
        reply["dimensions"] = {name: top for name in names}
    if tags:
        reply["tags"] = []
    reply["reason"] = ""
    return json.dumps(reply)


def check_room(cfg: JudgeConfig, key: str = "judge") -> None:
    """Fail when judge.sampling.max_tokens cannot hold the reply the schema asks for (its minimal JSON,
    estimated at 2.5 characters a token: JSON's quotes and braces are short tokens), naming the key."""
    reply = minimal_reply(cfg.scale_max, cfg.dimensions, cfg.dimension_names, cfg.tags)
    needed = math.ceil(len(reply) / 2.5)
    if cfg.sampling.max_tokens < needed:
        asked = ", ".join(["a score", *(["dimensions " + ", ".join(cfg.dimension_names)] if cfg.dimensions else []),
                           *(["tags"] if cfg.tags else []), "a reason"])  # fmt: skip
        raise ConfigError(
            f"{key}.sampling.max_tokens: {cfg.sampling.max_tokens} cannot hold the JSON asked for ({asked}): "
            f"its shortest form {reply} is ~{needed} tokens; raise it (a reason takes more)"
        )


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


def render_rubric(
    rubric: str, prompt: dict, sample: dict, cfg: JudgeConfig, speakers: dict[str, str] | None = None
) -> list[dict[str, str]]:
    """One judge request's messages: the rubric filled with the prompt's fields and the sample's answer.
    The reasoning is shown (in <think> tags before the answer, and as {reasoning}) only with include_reasoning.
    `speakers` (prompts.speakers): the names the history's turns are shown under, as in the teacher's prompt
    (观众 / 主播 for the source's Chinese turns; default Viewer / Host)."""
    answer = sample.get("answer") or ""
    reasoning = (sample.get("reasoning") or "") if cfg.include_reasoning else ""
    if reasoning and "reasoning" not in rubric_fields(rubric):
        answer = f"<think>{reasoning}</think>\n{answer}"
    history = prompt.get("history") or []
    content = rubric.format(
        product_info=prompt.get("product_info") or "(none)",
        history=render_history(history, speakers=speakers),
        question=prompt.get("question") or "",
        answer=answer,
        reasoning=reasoning or "(not shown)",
        scale_max=int(cfg.scale_max) if float(cfg.scale_max).is_integer() else cfg.scale_max,
    )
    return [{"role": "user", "content": content}]


def reask_messages(
    messages: list[dict[str, str]], failed_text: str, reason: str, cfg: JudgeConfig
) -> list[dict[str, str]]:
    """The original request plus the failed reply and a correction, so the judge knows what to fix
    (a plain retry with a new seed tends to repeat a format mistake such as a 0..10 score)."""
    body, _ = strip_reasoning(failed_text or "")
    top = int(cfg.scale_max) if float(cfg.scale_max).is_integer() else cfg.scale_max
    fields = f'"score": <a number from 0 to {top}>'
    if cfg.dimensions:
        fields += ', "dimensions": {' + ", ".join(f'"{n}": <0 to {top}>' for n in cfg.dimension_names) + "}"
    if cfg.tags:
        fields += ', "tags": [<each tag once' + (f": {', '.join(cfg.tag_values)}" if cfg.tag_values else "") + ">]"
    correction = (
        f"Your reply could not be used: {reason}. Reply again with only a JSON object, "
        f'{{{fields}, "reason": "<one short sentence>"}}, and nothing else.'
    )
    echo = body[-REASK_ECHO_CHARS:] or "(no reply)"
    return [*messages, {"role": "assistant", "content": echo}, {"role": "user", "content": correction}]


# -- judge.mode group: one request shows a prompt's samples together ---------------------------------
def group_labels(n: int) -> list[str]:
    """A, B, ..., Z, AA, AB, ...: the labels of n answers in the order shown."""
    out = []
    for i in range(n):
        label, i = "", i + 1
        while i:
            i, rest = divmod(i - 1, 26)
            label = chr(ord("A") + rest) + label
        out.append(label)
    return out


def group_schema(labels: list[str], cfg: JudgeConfig) -> dict:
    """One object per label, each the pointwise schema (score first, then dimensions, tags, reason)."""
    one = judge_schema(cfg.scale_max, cfg.dimensions, cfg.dimension_names, cfg.tags, cfg.tag_values)
    properties = {label: one for label in labels}
    return {"type": "object", "properties": properties, "required": labels, "additionalProperties": False}


def render_group(
    rubric: str, prompt: dict, answers: list[dict], cfg: JudgeConfig, speakers: dict[str, str] | None = None
) -> list[dict[str, str]]:
    """One group request's messages: the rubric filled once, its {answer} holding every answer under its
    label (reasoning in <think> tags with include_reasoning), then what to reply: one JSON object per label.
    `speakers`: as render_rubric's."""
    labels = group_labels(len(answers))
    blocks = []
    for label, sample in zip(labels, answers):
        text = sample.get("answer") or ""
        reasoning = (sample.get("reasoning") or "") if cfg.include_reasoning else ""
        blocks.append(f"[Answer {label}]\n" + (f"<think>{reasoning}</think>\n" if reasoning else "") + text)
    shown = "\n\n".join(blocks)
    content = rubric.format(
        product_info=prompt.get("product_info") or "(none)",
        history=render_history(prompt.get("history") or [], speakers=speakers),
        question=prompt.get("question") or "",
        answer=shown,
        reasoning="(shown with each answer)" if cfg.include_reasoning else "(not shown)",
        scale_max=int(cfg.scale_max) if float(cfg.scale_max).is_integer() else cfg.scale_max,
    )
    top = int(cfg.scale_max) if float(cfg.scale_max).is_integer() else cfg.scale_max
    one = minimal_reply(cfg.scale_max, cfg.dimensions, cfg.dimension_names, cfg.tags).replace(
        str(top), "<0 to %s>" % top
    )
    one = one.replace('"reason": ""', '"reason": "<one short sentence>"')
    example = ", ".join(f'"{label}": {one}' for label in labels[:2]) + (", ..." if len(labels) > 2 else "")
    instruction = (
        f"\n\nThe {len(labels)} answers above ({', '.join(labels)}) are replies to the same viewer. Score each one "
        f"on its own against the rubric, from 0 to {top}, and reply with only one JSON object holding every "
        f"label: {{{example}}}"
    )
    return [{"role": "user", "content": content + instruction}]
