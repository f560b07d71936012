"""Read, validate and render prompts.

Input rows (Parquet or JSONL, any fsspec URL) come in one of two shapes:
- a `messages` column with ready chat messages, or
- fields rendered by the user template: product_info (object or text), history (list of
  {role, content}, optional) and question (text).

    >>> valid, invalid = prepare_prompts(rows, cfg, system_prompt, user_template)
    valid:   prompt_id, messages, product_info, history, question, row_index, <other input fields>
    invalid: stage="prompts", row_index, prompt_id, reason, raw

A row that cannot be used never stops the run: it goes to `invalid` with its reason.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

import fsspec
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from factory.config import PromptsConfig
from factory.keys import stable_hash
from factory.schemas import INVALID, MESSAGES

DEFAULT_USER_TEMPLATE = "Product info:\n{product_info}\n\nConversation so far:\n{history}\n\nViewer comment: {question}"
ROLES = ("system", "user", "assistant")


class InvalidRow(ValueError):
    pass


def read_rows(path: str, limit: int | None = None) -> Iterable[tuple[int, Any]]:
    """Yield (row_index, row) from a Parquet/JSONL file or a folder of them. A JSONL line that is
    not JSON is yielded as an InvalidRow so that it is recorded, not lost."""
    if not path:
        raise ValueError("prompts.path: no prompts file given")
    fs, root = fsspec.core.url_to_fs(path)
    if not fs.exists(root):
        raise FileNotFoundError(f"prompts.path: {path} does not exist")
    if fs.isdir(root):
        files = sorted(p for p in fs.ls(root, detail=False) if p.endswith((".parquet", ".jsonl", ".json")))
    else:
        files = [root]
    index = 0
    for file in files:
        if file.endswith(".parquet"):
            with fs.open(file, "rb") as handle:
                parquet = pq.ParquetFile(handle)
                for batch in parquet.iter_batches(batch_size=4096):
                    for row in batch.to_pylist():
                        if limit is not None and index >= limit:
                            return
                        yield index, row
                        index += 1
        else:
            with fs.open(file, "rt", encoding="utf-8") as handle:
                for line_no, line in enumerate(handle, 1):
                    if not line.strip():
                        continue
                    if limit is not None and index >= limit:
                        return
                    try:
                        row: Any = json.loads(line)
                    except json.JSONDecodeError as exc:
                        row = InvalidRow(f"{file.rsplit('/', 1)[-1]} line {line_no}: not valid JSON ({exc.msg})")
                    yield index, row
                    index += 1


def _check_messages(value: Any, what: str) -> list[dict[str, str]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidRow(f"{what} is not a list of {{role, content}}")
    out = []
    for turn in value:
        if not isinstance(turn, dict) or not isinstance(turn.get("content"), str) or turn.get("role") not in ROLES:
            raise InvalidRow(f"{what} has a turn that is not {{role: system|user|assistant, content: text}}")
        out.append({"role": turn["role"], "content": turn["content"]})
    return out


def render_product_info(value: Any) -> str:
    """Product info as short `key: value` lines (models echo pretty-printed JSON back verbatim)."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, dict):
        lines = []
        for key, item in value.items():
            if isinstance(item, dict):
                item = "; ".join(f"{k}: {v}" for k, v in item.items())
            elif isinstance(item, list):
                item = ", ".join(map(str, item))
            lines.append(f"- {key}: {item}")
        return "\n".join(lines)
    return json.dumps(value, ensure_ascii=False)


def render_history(history: list[dict[str, str]]) -> str:
    if not history:
        return "(none)"
    names = {"user": "Viewer", "assistant": "Host", "system": "System"}
    return "\n".join(f"{names[t['role']]}: {t['content']}" for t in history)


def _field(row: dict, name: str) -> Any:
    if name not in row or row[name] is None:
        raise InvalidRow(f"missing field {name!r}")
    value = row[name]
    if (isinstance(value, str) and not value.strip()) or (isinstance(value, (dict, list)) and not value):
        raise InvalidRow(f"empty field {name!r}")
    return value


def render_row(row: dict, cfg: PromptsConfig, system_prompt: str, user_template: str) -> dict[str, Any]:
    """One input row -> the rendered prompt fields (raises InvalidRow with the reason)."""
    if not isinstance(row, dict):
        raise InvalidRow("row is not an object")
    if cfg.messages_column in row and row[cfg.messages_column] is not None:
        messages = _check_messages(row[cfg.messages_column], cfg.messages_column)
        if not messages or messages[-1]["role"] != "user" or not messages[-1]["content"].strip():
            raise InvalidRow(f"{cfg.messages_column} must end with a non-empty user message")
        history = [m for m in messages[:-1] if m["role"] != "system"]
        return {
            "messages": messages,
            "product_info": render_product_info(row.get(cfg.product_info_column) or ""),
            "history": history,
            "question": messages[-1]["content"],
        }
    product_info = render_product_info(_field(row, cfg.product_info_column))
    question = _field(row, cfg.question_column)
    if not isinstance(question, str):
        raise InvalidRow(f"field {cfg.question_column!r} is not text")
    history = _check_messages(row.get(cfg.history_column), cfg.history_column)
    user = user_template.format(product_info=product_info, history=render_history(history), question=question.strip())
    messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
        {"role": "user", "content": user}
    ]
    return {"messages": messages, "product_info": product_info, "history": history, "question": question.strip()}


def _scalar(value: Any) -> Any:
    return value if value is None or isinstance(value, (str, int, float, bool)) else json.dumps(value, ensure_ascii=False)


def prepare_prompts(
    rows: Iterable[tuple[int, Any]], cfg: PromptsConfig, system_prompt: str = "", user_template: str = ""
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Validate and render rows -> (valid prompts, invalid ledger)."""
    template = user_template or DEFAULT_USER_TEMPLATE
    special = {cfg.messages_column, cfg.product_info_column, cfg.history_column, cfg.question_column}
    valid: list[dict] = []
    invalid: list[dict] = []
    seen: set[str] = set()
    for row_index, row in rows:
        given_id = None
        try:
            if isinstance(row, InvalidRow):
                raise row
            if isinstance(row, dict) and cfg.id_column and row.get(cfg.id_column) is not None:
                given_id = str(row[cfg.id_column])
            rendered = render_row(row, cfg, system_prompt, template)
            prompt_id = given_id or stable_hash(rendered["messages"])
            if prompt_id in seen:
                raise InvalidRow(f"duplicate prompt_id {prompt_id!r}")
            seen.add(prompt_id)
        except InvalidRow as exc:
            raw = json.dumps(row, ensure_ascii=False, default=str) if isinstance(row, dict) else None
            invalid.append(
                {"stage": "prompts", "row_index": row_index, "prompt_id": given_id, "reason": str(exc), "raw": raw}
            )
            continue
        extras = {k: _scalar(v) for k, v in row.items() if k not in special and k != "prompt_id"}
        valid.append({"prompt_id": prompt_id, "row_index": row_index, **rendered, **extras})
    return _prompts_frame(valid), pl.from_arrow(pa.Table.from_pylist(invalid, schema=INVALID))  # type: ignore[return-value]


def _prompts_frame(rows: list[dict]) -> pl.DataFrame:
    fixed = pa.schema(
        [
            ("prompt_id", pa.string()),
            ("row_index", pa.int64()),
            ("messages", MESSAGES),
            ("product_info", pa.string()),
            ("history", MESSAGES),
            ("question", pa.string()),
        ]
    )
    extra_names = sorted({k for r in rows for k in r} - set(fixed.names))
    columns = {f.name: pa.array([r[f.name] for r in rows], type=f.type) for f in fixed}
    for name in extra_names:
        columns[name] = pa.array([r.get(name) for r in rows])
    return pl.from_arrow(pa.table(columns))  # type: ignore[return-value]


def load_prompts(cfg: PromptsConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Read `cfg.path` (honouring `cfg.limit`) and prepare it."""
    system_prompt = read_text(cfg.system_prompt_file) if cfg.system_prompt_file else ""
    user_template = read_text(cfg.user_template_file) if cfg.user_template_file else ""
    return prepare_prompts(read_rows(cfg.path, cfg.limit), cfg, system_prompt, user_template)


def read_text(path: str) -> str:
    with fsspec.open(path, "rt", encoding="utf-8") as handle:
        return handle.read().strip()
