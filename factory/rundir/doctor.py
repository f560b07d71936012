"""`factory doctor RUN_DIR`: read every part of a run directory; move unreadable ones aside.

    factory doctor runs/r1
    samples/part-1732-ab12.parquet   quarantined: ArrowInvalid: Parquet magic bytes not found
    -> rerun `factory run` with the same config: only the keys those parts held are requested again

A part that cannot be read (truncated by a full disk, zero bytes, overwritten with garbage) makes
every later run stop with an error naming it. The doctor reads each part whole (streamed, so memory
stays bounded), finishes or drops interrupted merges, and moves each unreadable part into
OUTPUT_DIR/_quarantine/<table>/ beside a note saying why and when. Planning works from the keys that
are stored, so the next run asks again for exactly the rows the quarantined parts held; outputs that
are rebuilt whole (prompts, pairs, sft) come back with the next `factory run` or `factory pairs`.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pyarrow.parquet as pq

from factory.rundir.store import RunStore

QUARANTINE = "_quarantine"  # starts with '_': never read as data


def check_part(store: RunStore, path: str) -> str | None:
    """None when the part reads whole, else why not."""
    try:
        with store.fs.open(path, "rb") as handle:
            for _ in pq.ParquetFile(handle).iter_batches(batch_size=65_536):
                pass
    except Exception as exc:  # any failure to read is the finding
        text = str(exc).strip().splitlines()
        return f"{type(exc).__name__}: {text[0] if text else ''}"
    return None


def folders(store: RunStore) -> list[str]:
    """Every folder of the run that holds Parquet parts (sft/ has one folder per export)."""
    out = []
    for path, _dirs, files in store.fs.walk(store.root):
        relative = path[len(store.root) :].strip("/")
        if any(part.startswith(("_", ".")) for part in relative.split("/") if part):  # _quarantine, _tmp
            continue
        if relative and any(name.endswith(".parquet") for name in files):
            out.append(relative)
    return sorted(out)


def doctor(store: RunStore) -> list[dict[str, Any]]:
    """Check every part; quarantine the unreadable ones. Returns one finding per part moved."""
    found = []
    for table in folders(store):
        store.recover(table)
        for path in store.parts(table):
            reason = check_part(store, path)
            if reason is None:
                continue
            name = path.rsplit("/", 1)[-1]
            target = store.path(QUARANTINE, table, name)
            store.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
            store.fs.mv(path, target)
            note = {"table": table, "part": name, "reason": reason, "quarantined_at": time.time()}
            store.write_bytes(f"{QUARANTINE}/{table}/{name}.json", json.dumps(note, indent=2).encode())
            found.append({**note, "moved_to": store.display(QUARANTINE, table, name)})
    return found
