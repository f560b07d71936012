"""A minimal stage for executor tests: each request row {"key": i} becomes {"key": i, "text": ..., "error": ...}."""

from __future__ import annotations

import time
from typing import Any

import polars as pl
import pyarrow as pa

from factory.config import EngineConfig
from factory.engines.base import Request

SCHEMA = pa.schema(
    [
        ("key", pa.int64()),
        ("text", pa.string()),
        ("error", pa.string()),
        ("attempts", pa.int64()),
        ("created_at", pa.float64()),
    ]
)


def echo(engine: Any, rows: list[dict], emit: Any) -> None:
    """The batch function: one request per row; each row emitted as its request finishes."""
    requests = [
        Request(messages=[{"role": "user", "content": str(r["key"])}], max_tokens=4, tag=r["key"]) for r in rows
    ]

    def done(completion: Any) -> None:
        emit(
            [
                {
                    "key": completion.tag,
                    "text": completion.text,
                    "error": completion.error,
                    "attempts": 1,
                    "created_at": time.time(),
                }
            ]
        )

    engine.generate(requests, on_done=done)


class EchoStage:
    name = "echo"
    table = "echo"
    key = ("key",)
    schema = SCHEMA
    upstream = None
    inputs = ("key", "error")  # of the upstream's rows (follow reads them)
    run_batch = staticmethod(echo)
    batch_args = ()

    def __init__(self, engine: EngineConfig, n_rows: int, name: str = "echo", upstream: str | None = None):
        self.engine, self.n_rows = engine, n_rows
        self.name = self.table = name
        self.upstream = upstream

    @property
    def batch_size(self) -> int:
        return self.engine.batch_size

    def plan(self, store: Any) -> pl.DataFrame:
        done = store.read(self.table, SCHEMA, columns=["key"])
        keys = pl.DataFrame(
            {"key": list(range(self.n_rows)) if self.upstream is None else []}, schema={"key": pl.Int64}
        )
        return keys if done is None else keys.join(done, on="key", how="anti")

    def follow(self, rows: list[dict]) -> list[dict]:
        return [{"key": r["key"]} for r in rows if r["error"] is None]

    def render(self, work: list[dict]) -> list[dict]:
        return work

    def failed(self, requests: list[dict], reason: str) -> list[dict]:
        return [
            {"key": r["key"], "text": None, "error": reason, "attempts": 0, "created_at": time.time()} for r in requests
        ]

    def read(self, store: Any) -> pl.DataFrame:
        return store.read(self.table, SCHEMA)

    def ok(self, row: dict) -> bool:
        return row["error"] is None

    def tokens(self, row: dict) -> tuple[int, int]:
        return 0, 1
