"""The stage contract the executor drives (datatrove's PipelineStep, Ray's StatefulStage).

A stage turns work items into stored rows with an engine passed in. It declares:

    name, table, key, schema      "sample", "samples", ("prompt_id", "sample_idx"), SAMPLES
    engine                        the EngineConfig of the pool it runs on (same identity -> one pool)
    upstream                      the stage whose stored rows feed it ("sample" for the judge), or None
    plan(store) -> DataFrame      the work still missing, from stored key/status columns only
    follow(rows) -> list[dict]    the work made by upstream rows that were just stored
    render(work) -> list[dict]    the request rows one batch sends (messages etc.), built at dispatch
    run_batch, batch_args         run_batch(engine, requests, emit, *batch_args) -> None, on an engine
                                  actor: emit(rows) hands each finished row back as soon as it is done
    failed(requests, reason)      the rows stored for requests that could not be served (same schema)
    read(store) -> DataFrame      the stage's current rows as stored (latest row per key)
    ok(row), tokens(row)          for progress and metrics

Stages never import Ray; the tests drive them with lists of rows and a fake engine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
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


def row_key(row: dict, key: Iterable[str]) -> tuple:
    return tuple(row[name] for name in key)


def latest(frame: pl.DataFrame, key: list[str]) -> pl.DataFrame:
    """One row per key: the latest stored (a retried key supersedes its failed row)."""
    if "created_at" in frame.columns:
        frame = frame.sort("created_at", maintain_order=True)
    return frame.unique(subset=key, keep="last", maintain_order=True)
