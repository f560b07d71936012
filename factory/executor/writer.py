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

One row never costs the others of its flush: a row the schema cannot hold (an integer beyond int64, a
number where text goes) is replaced by its stage's failed row (`failed`, the stage's own) with the reason
naming the column, and the rest of the flush is stored as it is. Engines check replies before this
(factory.engines.base.checked); this is the last line, for whatever else makes a row.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pyarrow as pa

from factory.config import StoreConfig
from factory.rundir.store import RunStore

log = logging.getLogger("factory")

# The columns of a row the schema cannot hold that its failed row keeps: the request's cost and identity.
KEPT = ("attempts", "latency_s", "prompt_hash")
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
        failed: Callable[[list[dict], str], list[dict]] | None = None,
        on_replaced: Callable[[dict, dict], None] | None = None,
    ):
        """`failed(rows, reason)`: the stage's failed rows for rows the schema cannot hold (without it such
        a row raises, as it would in Arrow); `on_replaced(row, failed_row)` is told of each replacement."""
        self.store, self.table, self.schema, self.cfg = store, table, schema, cfg
        self.feed_rows = feed_rows  # > 0: flush once this many (a batch of the stage fed, or of this stage)
        self.scrub = scrub
        self.failed, self.on_replaced = failed, on_replaced
        self.replaced = 0  # rows stored as their stage's failed row, the schema could not hold them
        self._kept = pa.schema([f for f in schema if f.name in KEPT])
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
        table = self._table(rows)
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

    def _table(self, rows: list[dict]) -> pa.Table:
        """The rows as a table of the schema; a row it cannot hold is replaced in `rows` (see the module doc)."""
        try:
            return pa.Table.from_pylist(rows, schema=self.schema)
        except (pa.ArrowException, OverflowError, TypeError, ValueError):
            if self.failed is None:
                raise
        kept = []
        for row in rows:
            problem = unstorable(row, self.schema)
            if problem is not None:
                replacement = self.failed([row], f"row not storable: {problem}")[0]
                if unstorable(replacement, self.schema) is not None:  # its key itself: nothing to store
                    log.error("%s: a row the schema cannot hold was not stored (%s): %s", self.table, problem, row)
                    continue
                for name in KEPT:  # what the request cost and which text it answered are still true
                    if name in replacement and unstorable({name: row.get(name)}, self._kept) is None:
                        replacement[name] = row.get(name)
                self.replaced += 1
                if self.on_replaced is not None:
                    self.on_replaced(row, replacement)
                row = replacement
            kept.append(row)
        rows[:] = kept
        return pa.Table.from_pylist(rows, schema=self.schema)

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


def unstorable(row: dict, schema: pa.Schema) -> str | None:
    """Why `schema` cannot hold `row` (the first column that fails, and Arrow's words), or None."""
    for name, kind in zip(schema.names, schema.types):
        try:
            pa.array([row.get(name)], type=kind)
        except (pa.ArrowException, OverflowError, TypeError, ValueError) as exc:
            shown = str(exc).split("\n")[0][:200]
            return f"column {name}: {type(exc).__name__}: {shown}"
    return None
