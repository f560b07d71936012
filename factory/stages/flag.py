"""The teacher's can-answer flag (seed 000 §2.2: the source's model outputs 能否回答观众问题, a flag, with its
主播回复, the reply): how `sampler.can_answer` asks for it and how a reply is read back.

Two forms (`form_of`):
    json    the request carries a JSON schema {"can_answer": bool, "reply": str} (where the engine kind
            supports one and sampler.can_answer.structured is true): {"can_answer": false, "reply": "..."}
    lines   a line format, for engines without JSON schema (a reasoning API): the first non-empty line is the
            flag, the reply follows on the next lines:
                can_answer: yes            能回答: 是            能否回答观众问题：否
                Link 3 is 49 yuan.         家人们，3号链接49元哦。
            (yes/no, true/false, 是/否, 能/不能, 可以/不可以; ':' or '：'; a label before the reply, 主播回复：
            or reply:, is dropped).

The instruction asking for the form is appended to the prompt's last user message when the request is made
(the prompt's own messages and prompt_hash stay as they are); its text and the form are in the sampler
fingerprint, so samples drawn without the option are never reused for a request with it, nor the other way.

`parse_flag(answer)` -> (flag, reply): the flag True/False and the reply alone; a reply the form cannot be
read from (no flag line, broken JSON) -> (None, the answer as it came): the text stays the sample's answer
(judged like any answer), its flag null, counted (manifest counts.can_answer_unparsed). Either form's parser
accepts the other's output (a model told to write JSON that wrote the line format still counts).

    parse_flag('能回答: 否\\n亲，这个要问客服哦。')          -> (False, '亲，这个要问客服哦。')
    parse_flag('{"can_answer": true, "reply": "Link 3."}')  -> (True, 'Link 3.')
    parse_flag('Link 3 is 49 yuan.')                        -> (None, 'Link 3 is 49 yuan.')
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

FORMS = ("json", "lines")
LANGUAGES = ("en", "zh")

SCHEMA = {
    "type": "object",
    "properties": {"can_answer": {"type": "boolean"}, "reply": {"type": "string"}},
    "required": ["can_answer", "reply"],
    "additionalProperties": False,
}

INSTRUCTIONS = {
    ("lines", "en"): (
        "Output format: on the first line write `can_answer: yes` if the product info can answer the viewer's "
        "question, or `can_answer: no` if it cannot (the question is not about these products, or the info is "
        "not enough to answer it); then write the host's reply on the next line."
    ),
    ("lines", "zh"): (
        "输出格式：第一行写“能回答: 是”或“能回答: 否”，表示商品信息能否回答观众问题"
        "（问题与商品不符，或商品信息不足以回答，都属于不能回答）；第二行起写主播回复。"
    ),
    ("json", "en"): (
        'Output format: a JSON object {"can_answer": true or false, "reply": "the host\'s reply"}; can_answer says '
        "whether the product info can answer the viewer's question (false when the question is not about these "
        "products or the info is not enough to answer it)."
    ),
    ("json", "zh"): (
        '输出格式：一个 JSON 对象 {"can_answer": true 或 false, "reply": "主播回复"}；'
        "can_answer 表示商品信息能否回答观众问题（问题与商品不符，或商品信息不足以回答，都为 false）。"
    ),
}

_YES = {"yes", "true", "y", "1", "是", "能", "可以", "能回答", "可回答"}
_NO = {"no", "false", "n", "0", "否", "不能", "不可以", "不能回答", "不可回答"}
_FLAG_LINE = re.compile(
    r"^\s*[*`#>\s]*(?:can[ _-]?answer|能否回答(?:观众问题)?|能回答|是否能回答|可否回答)[*`\s]*[:：]\s*[*`]*\s*"
    r"(?P<value>[^\s*`。.，,]+)[*`\s]*[。.]?\s*$",
    re.IGNORECASE,
)
# A label the reply may carry after the flag line (the source's form names both parts): dropped.
_REPLY_LABEL = re.compile(r"^\s*[*`]*(?:主播回复|回复|host reply|reply)[*`\s]*[:：]\s*", re.IGNORECASE)
_FENCE = re.compile(r"^\s*```(?:json)?\s*(?P<body>.*?)\s*```\s*$", re.DOTALL)


@dataclass(frozen=True)
class FlagForm:
    """How a request asks for the flag: its form (json | lines) and the instruction text appended."""

    form: str
    instruction: str

    @property
    def schema(self) -> dict | None:
        return SCHEMA if self.form == "json" else None

    def identity(self) -> dict[str, str]:
        """What the sampler fingerprint holds of it."""
        return {"form": self.form, "instruction": self.instruction}

    def messages(self, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        """The prompt's messages with the instruction appended to the last user message (a user message of
        its own when there is none)."""
        out = [dict(m) for m in messages]
        for message in reversed(out):
            if message.get("role") == "user":
                message["content"] = f"{message['content'].rstrip()}\n\n{self.instruction}"
                return out
        return [*out, {"role": "user", "content": self.instruction}]


def form_of(cfg: Any, json_schema: bool) -> FlagForm | None:
    """sampler.can_answer (`cfg`) -> the FlagForm, or None when it is off. `json_schema`: whether the teacher's
    engine kind takes a JSON schema (its engine class says so)."""
    if not cfg.enabled:
        return None
    form = "json" if cfg.structured and json_schema else "lines"
    return FlagForm(form, cfg.instruction or INSTRUCTIONS[(form, cfg.language)])


def _value(text: str) -> bool | None:
    word = text.strip().lower()
    return True if word in _YES else False if word in _NO else None


def _from_json(text: str) -> tuple[bool, str] | None:
    fenced = _FENCE.match(text)
    body = fenced.group("body") if fenced else text.strip()
    if not body.startswith("{"):
        return None
    try:
        reply = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(reply, dict) or not isinstance(reply.get("reply"), str):
        return None
    flag = reply.get("can_answer")
    if isinstance(flag, str):
        flag = _value(flag)
    if not isinstance(flag, bool):
        return None
    return flag, reply["reply"].strip()


def _from_lines(text: str) -> tuple[bool, str] | None:
    head, _, rest = text.strip().partition("\n")
    found = _FLAG_LINE.match(head)
    if found is None:
        return None
    flag = _value(found.group("value"))
    if flag is None:
        return None
    return flag, _REPLY_LABEL.sub("", rest.strip(), count=1).strip()


def parse_flag(answer: str) -> tuple[bool | None, str]:
    """(flag, reply) of a sample's answer (see the module doc); never raises."""
    text = answer if isinstance(answer, str) else ""
    parsed = _from_json(text) or _from_lines(text)
    if parsed is None:
        return None, text
    return parsed
