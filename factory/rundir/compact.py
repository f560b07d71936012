"""`factory compact RUN_DIR`: merge each table's parts into few large files, atomically.

    factory compact runs/r1            # samples/ 212 parts -> 3, judgments/ 212 -> 1, ...

Only the tables stages append to are compacted (samples, judgments, and any other stage table);
the outputs a build replaces whole (prompts, invalid, pairs, sft) already are one file each. Rows
are kept as they are (a superseded failed row stays, the latest row of a key still wins on read), so
a run stays resumable: after compaction the same keys are stored and nothing is asked again. The new
files land before the old ones go (store.merge): a reader never sees a row twice or not at all. Parts
are streamed record batch by record batch, so memory stays bounded whatever the table's size.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from factory.rundir.store import RunStore, conform

REPLACED_WHOLE = ("prompts", "invalid", "pairs", "sft", "sweep", "report", "calibration", "_quarantine")
BATCH_ROWS = 65_536


def tables(store: RunStore) -> list[str]:
    """The appended tables of a run directory: every top folder holding parts, but the replaced ones."""
    names = []
    for path in store.fs.ls(store.root, detail=False):
        name = path.rstrip("/").rsplit("/", 1)[-1]
        if name.startswith(("_", ".")) or name in REPLACED_WHOLE or not store.fs.isdir(path):
            continue
        names.append(name)
    return sorted(names)


def _batches(store: RunStore, paths: list[str], schema: pa.Schema) -> Iterator[pa.Table]:
    for path in paths:
        with store.fs.open(path, "rb") as handle:
            for batch in pq.ParquetFile(handle).iter_batches(batch_size=BATCH_ROWS):
                yield conform(pa.Table.from_batches([batch]), schema)


# What RunStore.append names a part; a merge's parts end in -<n> (part-<ns>-<id>-000.parquet).
_SMALL_PART = re.compile(r"part-\d+-[0-9a-f]{8}\.parquet")


def small_parts(store: RunStore, name: str) -> list[str]:
    """The parts of `name` a writer appended and no merge has taken in yet."""
    return [p for p in store.parts(name) if _SMALL_PART.fullmatch(p.rsplit("/", 1)[-1])]


def compact_table(store: RunStore, name: str, target_mb: float, only_small: bool = False) -> dict[str, Any]:
    """Merge every part of `name` (only its small parts when `only_small`) into files of about
    `target_mb` MiB of Arrow data each."""
    store.recover(name)
    parts = small_parts(store, name) if only_small else store.parts(name)
    before = len(parts)
    if before <= 1:
        return {"parts_before": before, "parts_after": before, "rows": None}
    schemas = []
    for path in parts:
        store.read_part(path, columns=[])  # names an unreadable part before anything is written
        with store.fs.open(path, "rb") as handle:
            schemas.append(pq.ParquetFile(handle).schema_arrow)
    schema = pa.unify_schemas(schemas, promote_options="permissive")
    rows = 0

    def counted() -> Iterator[pa.Table]:
        nonlocal rows
        for table in _batches(store, parts, schema):
            rows += table.num_rows
            yield table

    new = store.merge(name, parts, counted(), max_bytes=int(target_mb * 2**20))
    return {"parts_before": before, "parts_after": len(new), "rows": rows}


def compact(store: RunStore, target_mb: float) -> dict[str, dict[str, Any]]:
    return {name: compact_table(store, name, target_mb) for name in tables(store)}


def merge_leftovers(store: RunStore, target_mb: float) -> dict[str, dict[str, Any]]:
    """What a requesting command does first, under its lease: finish the merges a killed run committed,
    and merge the small parts it left (its open part, which only its end would have merged) into one
    file per table, as `factory compact` would, the merged files of earlier rolls left as they are.
    Returns the tables that had leftovers: {name: {parts_before, parts_after, rows}}."""
    done = {}
    for name in tables(store):
        store.recover(name)
        if len(small_parts(store, name)) > 1:
            done[name] = compact_table(store, name, target_mb, only_small=True)
    return done
