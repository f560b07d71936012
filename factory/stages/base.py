"""The stage contract the executor drives (datatrove's PipelineStep, Ray's StatefulStage).

A stage turns work items into stored rows with an engine passed in. It declares:

    name, table, key, schema      "sample", "samples", ("prompt_id", "sample_idx"), SAMPLES
    engine                        the EngineConfig of the pool it runs on (same identity -> one pool)
    upstream                      the stage whose stored rows feed it ("sample" for the judge), or None
    inputs                        the columns it reads: of the prompts (no upstream) or of the upstream's
                                  rows; the executor checks them before the first work (missing column named)
    plan(store) -> DataFrame      the work still missing, from stored key/status columns only
    follow(rows) -> list[dict]    the work made by upstream rows that were just stored
    follows (optional)            more stages whose stored rows it follows (follow is called with them
                                  too; the sampler under sampler.adaptive follows itself and the judges)
    settle(store) (optional)      called when nothing else is left to do: more work from what is stored
                                  (the executor goes on while a stage finds some)
    render(work) -> list[dict]    the request rows one batch sends (messages etc.), built at dispatch
    run_batch, batch_args         run_batch(engine, requests, emit, *batch_args) -> None, on an engine
                                  actor: emit(rows) hands each finished row back as soon as it is done
    failed(requests, reason)      the rows stored for requests that could not be served (same schema)
    read(store) -> DataFrame      the stage's current rows as stored (latest row per key)
    ok(row), tokens(row)          for progress and metrics
    seen(rows) (optional)         called with the rows of each reply as they are stored (the sampler tells
                                  `factory run` when the first reasoning arrives)

Stages never import Ray; the tests drive them with lists of rows and a fake engine. BaseStage holds the
members most stages share (batch size from the engine, batch_args from `batch_fields`, no follow-on work, a
row ok without an error, prompt + completion tokens); a stage writes only what differs. A batch function hands
each finished row on through one Batch (emit, by tag, and the check that none was lost).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

import polars as pl
import pyarrow as pa

from factory.config import EngineConfig

Emit = Callable[[list[dict]], None]


class Stage(Protocol):
    name: str
    table: str
    key: tuple[str, ...]
    schema: pa.Schema
    engine: EngineConfig
    upstream: str | None
    inputs: tuple[str, ...]
    run_batch: Callable[..., None]

    @property
    def batch_size(self) -> int: ...

    @property
    def batch_args(self) -> tuple: ...

    def plan(self, store: Any) -> pl.DataFrame: ...

    def follow(self, rows: list[dict]) -> list[dict]: ...

    def render(self, work: list[dict]) -> list[dict]: ...

    def failed(self, requests: list[dict], reason: str) -> list[dict]: ...

    def read(self, store: Any) -> pl.DataFrame: ...

    def ok(self, row: dict) -> bool: ...

    def tokens(self, row: dict) -> tuple[int, int]: ...


class BaseStage:
    """The stage contract's shared defaults (see the module doc). `batch_fields`: the attributes handed to
    run_batch after (engine, requests, emit), in order."""

    upstream: str | None = None
    inputs: tuple[str, ...] = ()
    batch_fields: tuple[str, ...] = ()
    engine: EngineConfig

    @property
    def batch_size(self) -> int:
        return self.engine.batch_size

    @property
    def batch_args(self) -> tuple:
        return tuple(getattr(self, name) for name in self.batch_fields)

    def follow(self, rows: list[dict]) -> list[dict]:
        return []  # fed by its plan only (no upstream rows make work)

    def ok(self, row: dict) -> bool:
        return row["error"] is None

    def tokens(self, row: dict) -> tuple[int, int]:
        return int(row.get("prompt_tokens") or 0), int(row.get("completion_tokens") or 0)


class Batch:
    """The rows of one batch as they finish: `add(tag, row)` keeps the row under its request's tag and hands
    it to `emit` at once (the executor stores it before the slowest request is back); `rows(tags, what)` are
    the rows in request order, and one error naming how many (and which first) the engine lost."""

    def __init__(self, emit: Emit | None):
        self.emit = emit
        self.by_tag: dict[Any, dict] = {}

    def add(self, tag: Any, row: dict) -> None:
        self.by_tag[tag] = row
        if self.emit is not None:
            self.emit([row])

    def rows(self, tags: Iterable[Any], what: str) -> list[dict]:
        tags = list(tags)
        missing = [tag for tag in tags if tag not in self.by_tag]
        if missing:
            raise RuntimeError(f"engine lost {len(missing)} {what}, e.g. {missing[0]}")
        return [self.by_tag[tag] for tag in tags]


def read_status(
    store: Any, table: str, schema: pa.Schema, columns: list[str], prompt_ids: pl.Series, where: pl.Expr
) -> pl.DataFrame:
    """The key and status columns of `table`'s rows that match `where` and belong to these prompts,
    read part by part, with prompt_id as a u32 code into `prompt_ids` (decode: prompt_ids.gather(code)).
    Planning joins integer keys only, and no string column of a million stored rows piles up."""
    enum = pl.Enum(prompt_ids)
    frames = []
    for part in store.iter_parts(table, columns, schema):
        frame = pl.from_arrow(part).filter(where)  # type: ignore[union-attr]
        frame = frame.with_columns(pl.col("prompt_id").cast(enum, strict=False).to_physical())
        frames.append(frame.drop_nulls("prompt_id"))  # rows of other prompts
    if not frames:
        empty = pl.from_arrow(pa.schema([schema.field(c) for c in columns]).empty_table())
        return empty.with_columns(pl.col("prompt_id").cast(pl.UInt32))  # type: ignore[union-attr]
    return pl.concat(frames)


def encode(frame: pl.DataFrame, prompt_ids: pl.Series) -> pl.DataFrame:
    """`frame` with prompt_id as its u32 code into `prompt_ids` (rows of other prompts dropped)."""
    codes = pl.col("prompt_id").cast(pl.Enum(prompt_ids), strict=False).to_physical()
    return frame.with_columns(codes).drop_nulls("prompt_id")


class PromptRows(Mapping):
    """prompt_id -> that prompt's row as a dict, built when asked from the frame: a stage renders its
    requests from it without holding a Python object per prompt (a million prompts stay a frame)."""

    def __init__(self, prompts: pl.DataFrame, columns: Iterable[str]):
        self.frame = prompts.select("prompt_id", *[c for c in columns if c != "prompt_id"])
        self.index = {pid: i for i, pid in enumerate(prompts["prompt_id"].to_list())}

    def __getitem__(self, prompt_id: str) -> dict:
        return self.frame.row(self.index[prompt_id], named=True)

    def __contains__(self, prompt_id: object) -> bool:
        return prompt_id in self.index

    def __iter__(self) -> Iterator[str]:
        return iter(self.index)

    def __len__(self) -> int:
        return len(self.index)


def row_key(row: dict, key: Iterable[str]) -> tuple:
    return tuple(row[name] for name in key)


def latest(frame: pl.DataFrame, key: list[str]) -> pl.DataFrame:
    """One row per key: the latest stored (a retried key supersedes its failed row)."""
    if "created_at" in frame.columns:
        frame = frame.sort("created_at", maintain_order=True)
    return frame.unique(subset=key, keep="last", maintain_order=True)


def check_inputs(stage: Any, columns: Iterable[str], what: str) -> None:
    """Fail with the missing column's name when `columns` (a frame's or a row's) lack one of the stage's
    declared inputs."""
    missing = [c for c in stage.inputs if c not in set(columns)]
    if missing:
        raise ValueError(f"{stage.name}: {what} lack the column(s) {missing} it reads (inputs: {list(stage.inputs)})")
