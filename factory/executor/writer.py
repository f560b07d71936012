"""Durable, few-file writes of a stage's finished rows.

    writer = TableWriter(store, "samples", SAMPLES, StoreConfig())
    writer.add(rows)            # finished rows, as they come back from the engines
    stored = writer.flush()     # when `due()`: one small part on disk, its rows returned (to feed
                                #   the next stage only once they are durable)
    writer.close()              # last flush, then the run's small parts merged into one

Durability and file count pull apart, so the writer does both: finished rows are written as a small
part as soon as a batch of them (`feed_rows`) is in, FEED_MIN_S apart, and at least every `flush_s`
seconds (a kill -9 loses at most those, plus requests in flight), and the small parts of the current
"open part" are merged into one Parquet file (store.merge: readers never see a row twice or not at
all) once they hold `part_mb` MiB or are `part_s` seconds old, and at the end of the run. The open
part's rows stay in memory until then, so a merge never reads back; their size is kept as they come,
so a flush costs the same at 2 or 2,000 open parts. A run killed before its merge leaves its small
parts: the next run merges them first (factory.rundir.compact.merge_leftovers).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pyarrow as pa

from factory.config import StoreConfig
from factory.rundir.store import RunStore

FEED_MIN_S = 0.25  # a table with a batch of rows in flushes at most this often for it (part count vs latency)


class TableWriter:
    def __init__(
        self,
        store: RunStore,
        table: str,
        schema: pa.Schema,
        cfg: StoreConfig,
        feed_rows: int = 0,
        scrub: Callable[[pa.Table], pa.Table] | None = None,
    ):
        self.store, self.table, self.schema, self.cfg = store, table, schema, cfg
        self.feed_rows = feed_rows  # > 0: flush once this many (a batch of the stage fed, or of this stage)
        self.scrub = scrub
        self.buffer: list[dict] = []
        self.open: list[tuple[str, pa.Table]] = []  # small parts of the open part: (path, rows)
        self.open_bytes = 0  # their Arrow size, kept as they come: a flush never re-sums the open part
        self.open_since = self.last_flush = time.monotonic()
        self.parts_written = self.merges = self.rows_written = 0

    def add(self, rows: list[dict]) -> None:
        self.buffer.extend(rows)

    @property
    def pending(self) -> int:
        return len(self.buffer)

    def due(self, now: float | None = None) -> bool:
        if not self.buffer:
            return False
        waited = (now or time.monotonic()) - self.last_flush
        if waited >= self.cfg.flush_s:
            return True
        return bool(self.feed_rows) and len(self.buffer) >= self.feed_rows and waited >= FEED_MIN_S

    def flush(self) -> list[dict]:
        """Write the buffered rows as one small part; returns them (now durable)."""
        self.last_flush = time.monotonic()
        if not self.buffer:
            return []
        rows, self.buffer = self.buffer, []
        table = pa.Table.from_pylist(rows, schema=self.schema)
        if self.scrub is not None:
            table = self.scrub(table)
        path = self.store.append(self.table, table)
        assert path is not None  # a non-empty table always makes a part
        self.parts_written += 1
        self.rows_written += len(rows)
        if not self.open:
            self.open_since = self.last_flush
        self.open.append((path, table))
        self.open_bytes += table.nbytes
        if self.open_bytes >= self.cfg.part_mb * 2**20 or self.last_flush - self.open_since >= self.cfg.part_s:
            self.roll()
        return rows

    def roll(self) -> None:
        """Merge the open part's small parts into one file."""
        if len(self.open) > 1:
            self.store.merge(self.table, [p for p, _ in self.open], pa.concat_tables([t for _, t in self.open]))
            self.merges += 1
        self.open, self.open_bytes = [], 0

    def close(self) -> list[dict]:
        rows = self.flush()
        self.roll()
        return rows
