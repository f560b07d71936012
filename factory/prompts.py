"""Read, validate and render prompts.

Input rows (Parquet, JSONL or a JSON array; a file or a folder of them; any fsspec URL) come in one of
two shapes:
- a `messages` column with ready chat messages, or
- fields rendered by the user template: product_info (object or text), history (list of
  {role, content}, optional) and question (text).
Roles are system, user and assistant; `prompts.roles` maps other names first (the source's dialogue
history says 观众 for the viewer and 主播 for the host: roles: {观众: user, 主播: assistant}).

    >>> valid, invalid = prepare_prompts(rows, cfg, system_prompt, user_template)
    valid:   prompt_id, messages, prompt_hash, product_info, history, question, row_index, <other input fields>
    invalid: stage="prompts", row_index, prompt_id, reason, raw

A row that cannot be used never stops the run: it goes to `invalid` with its reason (a line that is not
UTF-8 or not JSON, a missing field, a duplicate id; a file with no row is one ledger row with no
row_index). A file that cannot be read at all (a truncated Parquet file, a broken JSON array, a .csv,
a subfolder) is one PromptsFileError naming it, before any request. README "Bad input and failures"
has the table.
"""

from __future__ import annotations

import io
import json
import os
import re
from typing import Any, Iterable, Iterator

import fsspec
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from factory.config import ConfigError, PromptsConfig
from factory.rundir.hashing import messages_hash
from factory.rundir.schemas import INVALID, MESSAGES

DEFAULT_USER_TEMPLATE = "Product info:\n{product_info}\n\nConversation so far:\n{history}\n\nViewer comment: {question}"
ROLES = ("system", "user", "assistant")


class InvalidRow(ValueError):
    """A row that cannot be used, with its reason; `raw` keeps what was read (a bad line's text)."""

    def __init__(self, reason: str, raw: str | None = None):
        super().__init__(reason)
        self.raw = raw


class FileProblem(InvalidRow):
    """A whole file that holds no row to read (0 bytes, only blank lines, a Parquet file of 0 rows):
    one ledger row for the file, with no row_index."""


class PromptsFileError(ConfigError):
    """A prompts file or folder that cannot be read at all; the message names prompts.path and the file."""


# file suffix -> reader; anything else is refused by name (a .csv is not guessed at).
FORMATS = {".parquet": "parquet", ".jsonl": "jsonl", ".json": "json"}
_HINT = {
    ".csv": "CSV cannot hold the product_info object or the history list: convert it to JSONL or Parquet",
    ".tsv": "TSV cannot hold the product_info object or the history list: convert it to JSONL or Parquet",
}


def _name(file: str) -> str:
    return file.rstrip("/").rsplit("/", 1)[-1]


def _format(file: str) -> str:
    suffix = "." + _name(file).rsplit(".", 1)[-1].lower() if "." in _name(file) else ""
    if suffix not in FORMATS:
        hint = _HINT.get(suffix, f"prompts are read from {', '.join(FORMATS)} files")
        raise PromptsFileError(f"prompts.path: {file} is not a prompts file ({hint})")
    return FORMATS[suffix]


def _looked_at(path: str) -> str:
    """Where a relative local path was looked for: a path given on the command line is read from the current
    folder, one written in a YAML config from the config file's folder (config.load made it absolute)."""
    if "://" in path or os.path.isabs(path):
        return ""
    return (
        f" (looked at {os.path.abspath(path)}: a path on the command line is taken relative to the current folder, "
        f"{os.getcwd()}; one in a YAML config, to the config file's folder)"
    )


def check_url(path: str, key: str = "prompts.path") -> None:
    """A URL whose scheme fsspec does not know, or whose backend is not installed, is one error naming
    `key` (before any request), not a traceback."""
    for link in path.split("::"):  # a chained URL (simplecache::s3://...) names a filesystem per link
        protocol = fsspec.core.split_protocol(link)[0]
        if protocol is None:
            continue
        try:
            fsspec.get_filesystem_class(protocol)
        except ValueError:
            raise PromptsFileError(
                f"{key}: {path}: unknown URL scheme {protocol}:// (a local path needs none; fsspec reads file://, "
                "s3://, gs://, az://, hf://, http(s)://, memory://, ... with their package installed)"
            ) from None
        except ImportError as exc:
            raise PromptsFileError(f"{key}: {path}: no filesystem for {protocol}:// is installed ({exc})") from None


TEMPLATE_FIELDS = ("product_info", "history", "question")


def check_template(template: str, key: str = "prompts.user_template_file") -> None:
    """The user template renders with its three fields, else one error naming `key` and the field (an
    unknown {field}, a positional {} or {0}, a stray brace, a bad !conversion), before any request."""
    fields = ", ".join("{" + f + "}" for f in TEMPLATE_FIELDS)
    literal = "write a literal brace as {{ or }}"
    try:
        template.format(**{f: "" for f in TEMPLATE_FIELDS})
    except KeyError as exc:
        raise ConfigError(
            f"{key}: unknown field {{{exc.args[0]}}} in the template (it may use {fields}; {literal})"
        ) from None
    except IndexError:
        raise ConfigError(f"{key}: a positional field {{}} in the template (name one of {fields}; {literal})") from None
    except AttributeError as exc:
        raise ConfigError(
            f"{key}: a field of the template reads an attribute ({exc}); use {fields} as they are"
        ) from None
    except ValueError as exc:
        raise ConfigError(f"{key}: the template does not parse: {exc} ({literal}; its fields are {fields})") from None


def prompt_files(path: str) -> tuple[Any, list[str]]:
    """(filesystem, files) of `path`: the file itself, or the files of a folder in name order.
    In a folder, names starting with '.' or '_' are not data (_SUCCESS, .DS_Store, .ipynb_checkpoints:
    the Arrow/Spark rule) and are passed over; a subfolder or a file of another kind is an error."""
    if not path:
        raise ValueError("prompts.path: no prompts file given")
    check_url(path)
    fs, root = fsspec.core.url_to_fs(path)
    if not fs.exists(root):
        raise FileNotFoundError(f"prompts.path: {path} does not exist{_looked_at(path)}")
    if not fs.isdir(root):
        _format(root)
        return fs, [root]
    files = []
    for entry in sorted(fs.ls(root, detail=True), key=lambda e: e["name"]):
        name = _name(entry["name"])
        if name.startswith((".", "_")) or entry["name"].rstrip("/") == root.rstrip("/"):
            continue
        if entry.get("type") == "directory":
            raise PromptsFileError(
                f"prompts.path: {path} holds a subfolder {name}/; prompts are read from the files directly in "
                "the folder: point prompts.path at the subfolder, or move its files up"
            )
        _format(entry["name"])
        files.append(entry["name"])
    if not files:
        raise PromptsFileError(f"prompts.path: {path} holds no prompts file ({', '.join(FORMATS)})")
    return fs, files


def read_rows(path: str, limit: int | None = None) -> Iterable[tuple[int | None, Any]]:
    """Yield (row_index, row) from a Parquet/JSONL/JSON file or a folder of them, in file order.
    A row that cannot be read (a line that is not valid UTF-8 or not JSON) is yielded as an InvalidRow
    so that it is recorded, not lost; a file with no row at all is one FileProblem with row_index None.
    A file that cannot be read as a whole (a truncated Parquet file, a broken JSON array) raises
    PromptsFileError naming it."""
    fs, files = prompt_files(path)
    index = 0
    for file in files:
        for row in _read_file(fs, file):
            if isinstance(row, FileProblem):
                yield None, row
                continue
            if limit is not None and index >= limit:
                return
            yield index, row
            index += 1
        if limit is not None and index >= limit:
            return


def _read_file(fs: Any, file: str) -> Iterator[Any]:
    name = _name(file)
    kind = _format(file)
    if fs.size(file) == 0:
        yield FileProblem(f"{name}: empty file (0 bytes), no rows")
        return
    rows = _parquet_rows(fs, file) if kind == "parquet" else _json_rows(fs, file, kind)
    count = 0
    for row in rows:
        count += 1
        yield row
    if count == 0:
        yield FileProblem(
            f"{name}: no rows" + (" (only blank lines)" if kind != "parquet" else " (0-row Parquet file)")
        )


def _parquet_rows(fs: Any, file: str) -> Iterator[Any]:
    name, done = _name(file), 0
    try:
        with fs.open(file, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            for batch in parquet.iter_batches(batch_size=4096):
                try:
                    rows = batch.to_pylist()
                except UnicodeDecodeError:  # a text column with bytes that are not UTF-8: find the rows
                    rows = [_parquet_row(batch, i, name, done + i) for i in range(batch.num_rows)]
                for row in rows:
                    yield row
                    done += 1
    except (pa.ArrowException, OSError) as exc:
        after = f" after {done} rows" if done else ""
        raise PromptsFileError(
            f"prompts.path: {file} is not a readable Parquet file{after} ({type(exc).__name__}: {exc})"
        ) from None


def _parquet_row(batch: pa.RecordBatch, i: int, name: str, row_no: int) -> Any:
    row, bad = {}, []
    for column_name, column in zip(batch.schema.names, batch.columns):
        try:
            row[column_name] = column[i].as_py()
        except UnicodeDecodeError:
            bad.append(column_name)
    if bad:
        return InvalidRow(f"{name} row {row_no + 1}: column {', '.join(bad)} is not valid UTF-8")
    return row


def _json_rows(fs: Any, file: str, kind: str) -> Iterator[Any]:
    """JSONL: one object per line, each line on its own (a bad line is that row's problem only).
    JSON: an array of objects (pretty-printed or not), a single object, or one object per line."""
    name = _name(file)
    if kind == "json":
        with fs.open(file, "rb") as handle:
            data = handle.read()
        text = data.lstrip(b"\xef\xbb\xbf \t\r\n")
        if text.startswith(b"["):
            yield from _json_array(data, file)
            return
        if text.startswith(b"{"):
            try:
                whole = json.loads(data.decode("utf-8-sig"))
            except (ValueError, RecursionError):  # UnicodeDecodeError included: not one document, read it line by line
                whole = None
            if isinstance(whole, dict):
                yield _checked(whole, name)
                return
        yield from _json_lines(io.BytesIO(data), name)
        return
    with fs.open(file, "rb") as handle:
        yield from _json_lines(handle, name)


def _json_array(data: bytes, file: str) -> Iterator[Any]:
    try:
        rows = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise PromptsFileError(
            f"prompts.path: {file} is a JSON array with bytes that are not UTF-8 (byte {exc.start}): the "
            "array cannot be split into rows around them; fix the file or write it as JSONL"
        ) from None
    except json.JSONDecodeError as exc:
        raise PromptsFileError(
            f"prompts.path: {file} is not a valid JSON array ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    except (RecursionError, ValueError) as exc:  # nested too deep, an integer of too many digits
        why = "nested deeper than a JSON reader goes" if isinstance(exc, RecursionError) else str(exc).split(";")[0]
        raise PromptsFileError(
            f"prompts.path: {file} is a JSON array that cannot be read ({why}): the array cannot be split into rows "
            "around it; fix the file or write it as JSONL (one bad line is then that row's problem only)"
        ) from None
    name = _name(file)
    for number, row in enumerate(rows, 1):
        yield _checked(row, f"{name} element {number}")


MAX_DEPTH = 64  # nesting levels of a row: a product_info object holds 3 or 4; past this a row is refused


def _checked(row: Any, where: str) -> Any:
    """A parsed JSON row, or an InvalidRow when it cannot be stored or rendered: nested deeper than
    MAX_DEPTH (every later step would recurse that deep), or holding text that is not valid Unicode (a
    lone surrogate from a `\\ud800` escape: UTF-8 cannot encode it, so no Parquet file can hold it)."""
    stack = [(row, 1, None)]
    while stack:
        value, depth, field = stack.pop()
        if depth > MAX_DEPTH:
            return InvalidRow(
                f"{where}: nested more than {MAX_DEPTH} levels deep" + (f" (field {field!r})" if field else "")
            )
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                return InvalidRow(
                    f"{where}: " + (f"field {field!r} holds" if field else "holds")
                    + f" text that is not valid Unicode (a lone surrogate \\u{ord(exc.object[exc.start]):04x}), "
                    "which UTF-8 cannot encode"
                )  # fmt: skip
        elif isinstance(value, dict):
            for key, item in value.items():
                top = field if field is not None else key
                stack.append((key, depth, top))
                stack.append((item, depth + 1, top))
        elif isinstance(value, list):
            stack.extend((item, depth + 1, field) for item in value)
    return row


def _parse_line(line: str, where: str) -> Any:
    """One JSON text -> its row (checked), or an InvalidRow saying why it cannot be one."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        return InvalidRow(f"{where}: not valid JSON ({exc.msg})", raw=line.strip())
    except RecursionError:
        return InvalidRow(f"{where}: not usable JSON (nested deeper than a JSON reader goes)", raw=line.strip()[:1000])
    except ValueError as exc:  # an integer of more digits than Python converts (4300)
        return InvalidRow(f"{where}: not usable JSON ({str(exc).split(';')[0]})", raw=line.strip()[:1000])
    return _checked(row, where)


def _json_lines(handle: Any, name: str) -> Iterator[Any]:
    for line_no, raw in enumerate(handle, 1):
        try:
            line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            text = raw.decode("utf-8", errors="replace").strip()
            reason = f"{name} line {line_no}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
            yield InvalidRow(reason, raw=text)
            continue
        if not line.strip():
            continue
        yield _parse_line(line, f"{name} line {line_no}")


def _check_messages(value: Any, what: str, roles: dict[str, str] | None = None) -> list[dict[str, str]]:
    """A list of {role, content} turns; `roles` (prompts.roles) maps the input's role names first."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidRow(f"{what} is not a list of {{role, content}}")
    out = []
    for turn in value:
        role = turn.get("role") if isinstance(turn, dict) else None
        role = (roles or {}).get(role, role) if isinstance(role, str) else role
        if not isinstance(turn, dict) or not isinstance(turn.get("content"), str) or role not in ROLES:
            unknown = f" (role {role!r}: map it with prompts.roles)" if isinstance(role, str) else ""
            raise InvalidRow(f"{what} has a turn that is not {{role: system|user|assistant, content: text}}{unknown}")
        out.append({"role": role, "content": turn["content"]})
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


SPEAKERS = {"user": "Viewer", "assistant": "Host", "system": "System"}


def render_history(history: list[dict[str, str]], empty: str = "(none)", speakers: dict[str, str] | None = None) -> str:
    """The history as `Speaker: text` lines (prompts.speakers names the roles; default Viewer / Host);
    `empty` when there is none (the judge's rubric says "(none)"; the user template drops it, render_user)."""
    if not history:
        return empty
    names = {**SPEAKERS, **(speakers or {})}
    return "\n".join(f"{names[t['role']]}: {t['content']}" for t in history)


def render_user(template: str, product_info: str, history: list[dict[str, str]], question: str,
                speakers: dict[str, str] | None = None) -> str:
    """The user message. With no history, the template's paragraph (its text between blank lines) that holds
    {history} and no other field is left out, heading and all: a placeholder such as "(none)" is text a small
    model copies as its answer. A {history} sharing its paragraph with another field renders as ""."""
    fields = {"product_info": product_info, "history": render_history(history, "", speakers), "question": question}
    if not history:
        paragraphs = re.split(r"\n[ \t]*\n", template)
        kept = [p for p in paragraphs if not ("{history}" in p and not re.search(r"\{(product_info|question)\}", p))]
        if len(kept) < len(paragraphs):
            template = "\n\n".join(kept)
    return template.format(**fields)


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
        messages = _check_messages(row[cfg.messages_column], cfg.messages_column, cfg.roles)
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
    history = _check_messages(row.get(cfg.history_column), cfg.history_column, cfg.roles)
    user = render_user(user_template, product_info, history, question.strip(), cfg.speakers)
    messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
        {"role": "user", "content": user}
    ]
    return {"messages": messages, "product_info": product_info, "history": history, "question": question.strip()}


def _scalar(value: Any) -> Any:
    """An input field as a Parquet-friendly scalar: objects and lists as JSON text, other values that
    are not JSON scalars (a Parquet timestamp, decimal, bytes) as their text."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


FIXED = pa.schema(
    [
        ("prompt_id", pa.string()),
        ("row_index", pa.int64()),
        ("messages", MESSAGES),
        ("prompt_hash", pa.string()),  # messages_hash(messages): what the samples of this prompt must have answered
        ("product_info", pa.string()),
        ("history", MESSAGES),
        ("question", pa.string()),
    ]
)


def prepare_prompts(
    rows: Iterable[tuple[int | None, Any]], cfg: PromptsConfig, system_prompt: str = "", user_template: str = ""
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Validate and render rows -> (valid prompts, invalid ledger). The input's other fields are kept as
    columns; one whose name is taken by a prompts column (row_index, ...) is kept as input_<name>."""
    template = user_template or DEFAULT_USER_TEMPLATE
    special = {cfg.messages_column, cfg.product_info_column, cfg.history_column, cfg.question_column}
    valid: list[dict] = []
    invalid: list[dict] = []
    seen: set[str] = set()
    texts: dict[str, tuple[str, int | None]] = {}  # hash of the rendered messages -> the first (id, row)
    for row_index, row in rows:
        given_id = None
        try:
            if isinstance(row, InvalidRow):
                raise row
            if isinstance(row, dict) and cfg.id_column and row.get(cfg.id_column) is not None:
                given_id = str(row[cfg.id_column])
            rendered = render_row(row, cfg, system_prompt, template)
            text = messages_hash(rendered["messages"])
            prompt_id = given_id or text
            if prompt_id in seen:
                raise InvalidRow(f"duplicate prompt_id {prompt_id!r}")
            if cfg.dedupe_text and text in texts:
                first_id, first_row = texts[text]
                raise InvalidRow(
                    f"duplicate prompt text: the same messages as prompt_id {first_id!r} (row {first_row}); "
                    "sampling it again would pay twice for one prompt (prompts.dedupe_text=false keeps both)"
                )
            seen.add(prompt_id)
            texts.setdefault(text, (prompt_id, row_index))
        except InvalidRow as exc:
            raw = json.dumps(row, ensure_ascii=False, default=str) if isinstance(row, dict) else exc.raw
            invalid.append(
                {"stage": "prompts", "row_index": row_index, "prompt_id": given_id, "reason": str(exc), "raw": raw}
            )
            continue
        extras = {}
        for key, value in row.items():
            if key in special or (key == cfg.id_column and key in FIXED.names):
                continue
            extras[f"input_{key}" if key in FIXED.names else key] = _scalar(value)
        valid.append({"prompt_id": prompt_id, "row_index": row_index, "prompt_hash": text, **rendered, **extras})
    return _prompts_frame(valid), pl.from_arrow(pa.Table.from_pylist(invalid, schema=INVALID))  # type: ignore[return-value]


def _prompts_frame(rows: list[dict]) -> pl.DataFrame:
    columns = {f.name: pa.array([r[f.name] for r in rows], type=f.type) for f in FIXED}
    for name in sorted({k for r in rows for k in r} - set(FIXED.names)):
        columns[name] = _column([r.get(name) for r in rows])
    return pl.from_arrow(pa.table(columns))  # type: ignore[return-value]


def _column(values: list[Any]) -> pa.Array:
    """An input field's column; when its values mix types that share no Arrow type (an id that is a
    number in some rows and text in others), each value is kept as its JSON text: 7 -> "7", true -> "true"."""
    try:
        return pa.array(values)
    except (pa.ArrowException, OverflowError):
        return pa.array(
            [v if v is None or isinstance(v, str) else json.dumps(v, ensure_ascii=False) for v in values],
            type=pa.string(),
        )


def load_prompts(cfg: PromptsConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Read `cfg.path` (honouring `cfg.limit`) and prepare it."""
    system_prompt = read_text(cfg.system_prompt_file) if cfg.system_prompt_file else ""
    user_template = read_text(cfg.user_template_file) if cfg.user_template_file else ""
    check_template(user_template)
    return prepare_prompts(read_rows(cfg.path, cfg.limit), cfg, system_prompt, user_template)


def read_text(path: str) -> str:
    with fsspec.open(path, "rt", encoding="utf-8") as handle:
        return handle.read().strip()
