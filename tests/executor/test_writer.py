"""The table writer at the users' scale: a flush's cost does not grow with the open part, and every
table is stored as promptly as the ones that feed a stage."""

from __future__ import annotations

import uuid

import pyarrow as pa

from factory.config import StoreConfig
from factory.executor.writer import TableWriter
from factory.rundir.store import RunStore
from tests.executor.echo import SCHEMA, EchoStage
from tests.executor.test_core import counting, engine_cfg, run_local


class _CountingTable:
    """Stands for an open small part's rows and counts how often its size is asked for."""

    def __init__(self, table: pa.Table, calls: list[int]):
        self.table, self.calls = table, calls

    @property
    def nbytes(self) -> int:
        self.calls.append(1)
        return self.table.nbytes


def _rows(start: int, n: int = 3) -> list[dict]:
    return [
        {"key": i, "text": "x" * 50, "error": None, "attempts": 1, "created_at": 0.0} for i in range(start, start + n)
    ]


def test_a_flush_does_not_ask_the_size_of_every_open_part():
    store = RunStore(f"memory://writer-{uuid.uuid4().hex}")
    writer = TableWriter(store, "t", SCHEMA, StoreConfig(part_mb=1024, part_s=3600))
    open_parts = 200
    for n in range(open_parts):
        writer.add(_rows(3 * n))
        writer.flush()
    assert len(writer.open) == open_parts  # nothing rolled: the open part holds them all
    calls: list[int] = []
    writer.open = [(path, _CountingTable(table, calls)) for path, table in writer.open]
    writer.add(_rows(10_000))
    writer.flush()
    assert calls == []  # main asked each of the 200 open parts for its size on every flush
    # the kept size is the open part's: it still rolls at part_mb
    assert writer.open_bytes == sum(t.table.nbytes for _, t in writer.open[:-1]) + writer.open[-1][1].nbytes


def test_the_open_part_rolls_once_its_kept_size_reaches_part_mb():
    store = RunStore(f"memory://writer-{uuid.uuid4().hex}")
    one = pa.Table.from_pylist(_rows(0), schema=SCHEMA).nbytes
    writer = TableWriter(store, "t", SCHEMA, StoreConfig(part_mb=2.5 * one / 2**20, part_s=3600))
    for n in range(3):
        writer.add(_rows(3 * n))
        writer.flush()
    assert writer.merges == 1 and writer.open == [] and writer.open_bytes == 0  # rolled at the 3rd flush
    assert len(store.parts("t")) == 1 and store.read("t").height == 9


def test_a_table_nothing_reads_from_is_stored_as_promptly_as_the_one_that_feeds_a_stage():
    # flush_s is long: rows are stored early only when a batch of them is in (FEED_MIN_S apart). The
    # samples table feeds the judge and always did that; the judgments table must too, or a kill
    # re-pays up to flush_s of judgments.
    up = EchoStage(engine_cfg(batch_size=4), 400, name="up")
    down = EchoStage(engine_cfg(batch_size=4), 0, name="down", upstream="up")
    store, done, _, _ = run_local([up, down], counting(latency=0.01), store=StoreConfig(flush_s=600))
    assert store.read("down").height == 400
    assert done["up"].parts_written >= 3
    assert done["down"].parts_written >= 3  # main: 1 (only the final flush)
