"""The run directory over fsspec: atomic Parquet parts, merges, the manifest, and what is already done.

    store = RunStore("s3://bucket/runs/r1")          # or a local path, or memory://...
    store.append("samples", table)                    # samples/part-<time>-<uuid>.parquet, atomically
    store.read("samples", columns=["prompt_id"])      # every part, only those columns (or None)
    for part in store.iter_parts("samples", cols):    # one projected Arrow table per part: bounded memory
    store.merge("samples", old_paths, table)          # many parts -> one, readers never see a row twice

Every read and write of a run goes through this one object. A part is written under a temporary
name and then moved into place, so a reader never sees half a file; on object stores a PUT is
already atomic. Files whose names start with '_' or '.' are never read as data.

Merges (the executor's part roll-over and `factory compact`) replace several parts by one without a
moment where a reader of this store sees a row twice or not at all:
  1. the merged parts are written under hidden names (`_merged-<id>-<n>.parquet`),
  2. `_merge-<id>.json` names the old parts and the new ones: this is the commit point,
  3. the new parts are moved to their visible names, the old parts are removed, then the marker.
While a marker exists, `parts()` lists its new parts in place of its old ones. A merge cut short
before step 2 leaves only a hidden file (removed by `recover()`); after step 2, `recover()` finishes it.
A glob reader outside the factory (`pl.read_parquet("samples/*.parquet")`) may see a row twice for the
milliseconds between steps 3a and 3b.
"""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import fsspec
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq


class CorruptPartError(RuntimeError):
    """A Parquet part that cannot be read; the message names it and says how to move it aside."""


class RunStore:
    def __init__(self, url: str, storage_options: dict | None = None, create: bool = True):
        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url, **(storage_options or {}))
        self.root = self.root.rstrip("/")
        if create:
            self.fs.makedirs(self.root, exist_ok=True)

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def display(self, *parts: str) -> str:
        """The user-facing URL of a path in the run."""
        return "/".join([self.url, *parts])

    def display_path(self, path: str) -> str:
        """The user-facing URL of a path returned by `parts()`."""
        return self.display(path[len(self.root) :].lstrip("/")) if path.startswith(self.root) else path

    # -- Parquet parts ---------------------------------------------------------------------
    def _listing(self, name: str) -> list[str]:
        folder = self.path(name)
        try:
            return [p.rstrip("/") for p in self.fs.ls(folder, detail=False)]
        except FileNotFoundError:
            return []

    def parts(self, name: str) -> list[str]:
        """The data parts of table `name`, as a reader must take them (merges in progress resolved)."""
        listing = self._listing(name)
        visible = {p for p in listing if _is_part(p)}
        for marker in (p for p in listing if _base(p).startswith("_merge-") and p.endswith(".json")):
            try:
                record = json.loads(self.fs.cat_file(marker))
            except (FileNotFoundError, ValueError):  # finished meanwhile, or still being written
                continue
            new = []
            for hidden, final in record["new"]:
                final_path, hidden_path = self.path(name, final), self.path(name, hidden)
                new.append(final_path if final_path in visible or not self.fs.exists(hidden_path) else hidden_path)
            if not all(p in visible or self.fs.exists(p) for p in new):  # finished meanwhile (the marker goes last)
                continue
            visible -= {self.path(name, old) for old in record["old"]}
            visible |= set(new)
        return sorted(visible)

    def append(
        self, name: str, table: pa.Table | pl.DataFrame, prefix: str = "part", keep_empty: bool = False
    ) -> str | None:
        """Write one new part of table `name`; returns its path (None for an empty table, unless
        `keep_empty`: an output like pairs/ always has a file, with its schema, even with 0 rows)."""
        if isinstance(table, pl.DataFrame):
            table = table.to_arrow()
        if table.num_rows == 0 and not keep_empty:
            return None
        final = self.path(name, f"{prefix}-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet")
        self._atomic_write(final, parquet_bytes(table))
        return final

    def replace(self, name: str, table: pa.Table | pl.DataFrame, prefix: str = "part") -> str | None:
        """Make `table` the content of `name` written under `prefix`: the new part lands before the old
        ones go, so a reader never finds the folder empty."""
        old = [p for p in self.parts(name) if _base(p).startswith(prefix + "-")]
        new = self.append(name, table, prefix, keep_empty=True)
        for path in old:
            self.fs.rm(path)
        return new

    def remove(self, name: str) -> None:
        """Remove every part of table `name` (an output that is no longer asked for)."""
        for path in self.parts(name):
            self.fs.rm(path)

    def merge(self, name: str, old: list[str], tables: pa.Table | Iterable[pa.Table], max_bytes: int = 0) -> list[str]:
        """Replace the parts `old` of `name` by new parts holding `tables` (their rows; an iterable is
        streamed, starting a new part past `max_bytes` of input when > 0), see the module doc."""
        merge_id = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}"
        hidden = self._write_hidden(name, merge_id, [tables] if isinstance(tables, pa.Table) else tables, max_bytes)
        marker = self.path(name, f"_merge-{merge_id}.json")
        new = [[h, f"part-{merge_id}-{i:03d}.parquet"] for i, h in enumerate(hidden)]
        record = {"old": [_base(p) for p in old], "new": new}
        self._atomic_write(marker, json.dumps(record).encode())
        self._finish_merge(name, marker, record)
        return [self.path(name, final) for _, final in new]

    def _write_hidden(self, name: str, merge_id: str, tables: Iterable[pa.Table], max_bytes: int) -> list[str]:
        """Stream tables into hidden `_merged-<id>-<n>.parquet` files (never read as data until committed)."""
        names: list[str] = []
        writer, handle, size = None, None, 0
        try:
            for table in tables:
                if writer is None or (max_bytes and size >= max_bytes):
                    if writer is not None:
                        writer.close()
                        handle.close()  # type: ignore[union-attr]
                    names.append(f"_merged-{merge_id}-{len(names):03d}.parquet")
                    self.fs.makedirs(self.path(name), exist_ok=True)
                    handle = self.fs.open(self.path(name, names[-1]), "wb")
                    writer, size = pq.ParquetWriter(handle, table.schema, compression="zstd"), 0
                writer.write_table(table.cast(writer.schema) if table.schema != writer.schema else table)
                size += table.nbytes
        finally:
            if writer is not None:
                writer.close()
                handle.close()  # type: ignore[union-attr]
        return names

    def _finish_merge(self, name: str, marker: str, record: dict) -> None:
        for hidden, final in record["new"]:
            if self.fs.exists(self.path(name, hidden)):
                self.fs.mv(self.path(name, hidden), self.path(name, final))
        for old in record["old"]:
            path = self.path(name, old)
            if self.fs.exists(path):
                self.fs.rm(path)
        self.fs.rm(marker)

    def recover(self, name: str) -> int:
        """Finish the merges a killed process committed and drop its uncommitted leftovers; returns how
        many files it touched. Run by the one writer of the run (under its lease), never by a reader."""
        touched = 0
        listing = self._listing(name)
        committed = set()
        for marker in [p for p in listing if _base(p).startswith("_merge-") and p.endswith(".json")]:
            try:
                record = json.loads(self.fs.cat_file(marker))
            except ValueError:  # a marker cut short was never a commit
                self.fs.rm(marker)
                touched += 1
                continue
            committed |= {hidden for hidden, _ in record["new"]}
            self._finish_merge(name, marker, record)
            touched += 1
        for path in listing:
            base = _base(path)
            if (base.startswith("_merged-") and base not in committed) or base.startswith("_tmp-"):
                if self.fs.exists(path):
                    self.fs.rm(path)
                    touched += 1
        return touched

    def read_part(self, path: str, columns: list[str] | None = None) -> pa.Table:
        """One part (only `columns` that it has, when given); an unreadable part raises CorruptPartError."""
        try:
            with self.fs.open(path, "rb") as handle:
                parquet = pq.ParquetFile(handle)
                names = parquet.schema_arrow.names
                wanted = None if columns is None else [c for c in columns if c in names]
                return parquet.read(columns=wanted)
        except (pa.ArrowException, OSError, ValueError) as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            raise CorruptPartError(
                f"{self.display_path(path)}: not a readable Parquet part ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}); `factory doctor {self.url}` moves it aside"
            ) from None

    def iter_parts(
        self, name: str, columns: list[str] | None = None, schema: pa.Schema | None = None
    ) -> Iterator[pa.Table]:
        """Each part of `name` as an Arrow table of `columns` (conformed to `schema` when given), one at a time."""
        for path in self.parts(name):
            try:
                table = self.read_part(path, columns)
            except FileNotFoundError:  # merged away between the listing and the read: its rows are in the new part
                continue
            if schema is not None:
                picked = [schema.field(c) for c in columns if c in schema.names] if columns is not None else []
                wanted = schema if columns is None else pa.schema(picked)
                table = conform(table, wanted)
            yield table

    def iter_batches(
        self, name: str, columns: list[str], schema: pa.Schema | None = None, rows: int = 65_536
    ) -> Iterator[pa.Table]:
        """The rows of `name` (only `columns`), a few thousand at a time: memory stays bounded by the
        batch, not by a part (a compacted part may hold gigabytes of text)."""
        for path in self.parts(name):
            try:
                with self.fs.open(path, "rb") as handle:
                    parquet = pq.ParquetFile(handle)
                    present = [c for c in columns if c in parquet.schema_arrow.names]
                    for batch in parquet.iter_batches(batch_size=rows, columns=present):
                        table = pa.Table.from_batches([batch])
                        if schema is not None:
                            table = conform(table, pa.schema([schema.field(c) for c in columns if c in schema.names]))
                        yield table
            except FileNotFoundError:  # merged away between the listing and the read: its rows are in the new part
                continue
            except (pa.ArrowException, OSError, ValueError):
                self.read_part(path, columns)  # raises CorruptPartError naming the part
                raise

    def read(self, name: str, schema: pa.Schema | None = None, columns: list[str] | None = None) -> pl.DataFrame | None:
        """All parts of `name` (only `columns` when given) as one DataFrame, or None when there are none."""
        if not self.parts(name):
            return None
        tables = list(self.iter_parts(name, columns, schema))
        if not tables:
            return None
        table = pa.concat_tables(tables, promote_options="permissive")
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

    def exists(self, name: str) -> bool:
        return self.fs.exists(self.path(name))

    def _atomic_write(self, final: str, data: bytes) -> None:
        folder, base = final.rsplit("/", 1)
        if _is_local(self.fs):
            self.fs.makedirs(folder, exist_ok=True)
            tmp = f"{folder}/_tmp-{uuid.uuid4().hex[:8]}-{base}"
            self.fs.pipe_file(tmp, data)
            self.fs.mv(tmp, final)
        else:  # object stores (and memory://) publish a whole object at once
            self.fs.pipe_file(final, data)


OPEN_TIMEOUT_S = 10.0


def open_output(url: str, key: str = "output_dir", timeout_s: float = OPEN_TIMEOUT_S) -> RunStore:
    """The run directory, checked writable before any request: a file is written there and removed.
    Every way this fails (permission, a file in the way, an unreachable endpoint, no credentials, a
    missing fsspec backend) is one ConfigError naming `key`, within `timeout_s`."""
    from factory.config import ConfigError

    result: dict[str, Any] = {}

    def probe() -> None:
        try:
            store = RunStore(url)
            name = f"_probe-{uuid.uuid4().hex[:8]}"
            store.write_bytes(name, b"ok")
            store.fs.rm(store.path(name))
            result["store"] = store
        except BaseException as exc:  # reported below, with the key
            result["error"] = exc

    worker = threading.Thread(target=probe, name="factory-output-probe", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise ConfigError(f"{key}: {url} did not answer within {timeout_s:g}s (is the endpoint reachable?)")
    error = result.get("error")
    if error is None:
        return result["store"]
    name = type(error).__name__
    if isinstance(error, PermissionError):
        why = f"permission denied ({error})"
    elif isinstance(error, (NotADirectoryError, FileExistsError)):
        why = f"a file is in the way of the directory ({error})"
    elif isinstance(error, ImportError):
        why = f"no filesystem for this URL ({error}); for s3:// run: pip install 'factory[s3]'"
    elif "Credentials" in name or "credential" in str(error).lower():
        why = f"no credentials ({name}: {error}); set them in the environment (e.g. AWS_ACCESS_KEY_ID)"
    elif "Endpoint" in name or "Connect" in name or isinstance(error, (ConnectionError, TimeoutError)):
        why = f"endpoint unreachable ({name}: {error})"
    else:
        why = f"{name}: {error}"
    raise ConfigError(f"{key}: cannot write to {url}: {why}") from None


def _base(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def _is_part(path: str) -> bool:
    base = _base(path)
    return base.endswith(".parquet") and not base.startswith(("_", "."))


def _is_local(fs: Any) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocol or "local" in protocol


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Cast to `schema`, adding missing nullable columns (parts written by older versions); columns
    that are not in the schema are kept after it."""
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
