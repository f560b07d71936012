"""The run directory over fsspec: atomic Parquet parts, the manifest, and what is already done.

    store = RunStore("s3://bucket/runs/r1")      # or a local path, or memory://...
    store.append("samples", table)                # samples/part-<time>-<uuid>.parquet, atomically
    store.read("samples")                         # every part, as one polars DataFrame (or None)

Every read and write of a run goes through this one object. A part is written under a temporary
name and then moved into place, so a reader never sees half a file; on object stores a PUT is
already atomic. Files whose names start with '_' or '.' are never read as data.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from typing import Any

import fsspec
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq


class RunStore:
    def __init__(self, url: str, storage_options: dict | None = None):
        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url, **(storage_options or {}))
        self.root = self.root.rstrip("/")
        self.fs.makedirs(self.root, exist_ok=True)

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def display(self, *parts: str) -> str:
        """The user-facing URL of a path in the run."""
        return "/".join([self.url, *parts])

    # -- Parquet parts ---------------------------------------------------------------------
    def parts(self, name: str) -> list[str]:
        folder = self.path(name)
        if not self.fs.exists(folder):
            return []
        files = [p for p in self.fs.ls(folder, detail=False) if p.endswith(".parquet")]
        return sorted(p for p in files if not p.rsplit("/", 1)[-1].startswith(("_", ".")))

    def append(
        self, name: str, table: pa.Table | pl.DataFrame, prefix: str = "part", keep_empty: bool = False
    ) -> str | None:
        """Write one new part of table `name`; returns its path (None for an empty table, unless
        `keep_empty`: an output like pairs/ always has a file, with its schema, even with 0 rows)."""
        if isinstance(table, pl.DataFrame):
            table = table.to_arrow()
        if table.num_rows == 0 and not keep_empty:
            return None
        self.fs.makedirs(self.path(name), exist_ok=True)
        final = self.path(name, f"{prefix}-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet")
        self._atomic_write(final, _parquet_bytes(table))
        return final

    def replace(self, name: str, table: pa.Table | pl.DataFrame, prefix: str = "part") -> str | None:
        """Make `table` the content of `name` written under `prefix` (sft/ holds one prefix per export):
        the new part lands before the old ones go, so a reader never finds the folder empty."""
        old = [p for p in self.parts(name) if p.rsplit("/", 1)[-1].startswith(prefix + "-")]
        new = self.append(name, table, prefix, keep_empty=True)
        for path in old:
            self.fs.rm(path)
        return new

    def read(self, name: str, schema: pa.Schema | None = None) -> pl.DataFrame | None:
        """All parts of `name` as one DataFrame, or None when there are none."""
        paths = self.parts(name)
        if not paths:
            return None
        tables = []
        for path in paths:
            with self.fs.open(path, "rb") as handle:
                tables.append(pq.read_table(handle))
        table = pa.concat_tables(tables, promote_options="permissive")
        if schema is not None:
            table = _conform(table, schema)
        return pl.from_arrow(table)  # type: ignore[return-value]

    # -- small files -------------------------------------------------------------------------
    def write_json(self, name: str, value: Any) -> None:
        self._atomic_write(self.path(name), json.dumps(value, indent=2, ensure_ascii=False, default=str).encode())

    def read_json(self, name: str) -> Any | None:
        path = self.path(name)
        if not self.fs.exists(path):
            return None
        with self.fs.open(path, "rb") as handle:
            return json.loads(handle.read())

    def write_bytes(self, name: str, data: bytes) -> None:
        self._atomic_write(self.path(name), data)

    def _atomic_write(self, final: str, data: bytes) -> None:
        folder, base = final.rsplit("/", 1)
        self.fs.makedirs(folder, exist_ok=True)
        if self.fs.protocol in ("file", "local") or "file" in getattr(self.fs, "protocol", ()):
            tmp = f"{folder}/_tmp-{uuid.uuid4().hex[:8]}-{base}"
            self.fs.pipe_file(tmp, data)
            self.fs.mv(tmp, final)
        else:  # object stores (and memory://) publish a whole object at once
            self.fs.pipe_file(final, data)


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Cast to `schema`, adding missing nullable columns (parts written by older versions)."""
    columns = []
    for f in schema:
        if f.name in table.column_names:
            columns.append(table.column(f.name).cast(f.type))
        else:
            columns.append(pa.nulls(table.num_rows, f.type))
    extra = [n for n in table.column_names if n not in schema.names]
    out = pa.Table.from_arrays(columns, schema=schema)
    for name in extra:
        out = out.append_column(name, table.column(name))
    return out
