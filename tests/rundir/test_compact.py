"""`compact`: merges a run directory's small parts, keeping every row."""

import pyarrow as pa

from factory.rundir.store import RunStore


def test_compact_merges_appended_tables_only_and_keeps_every_row(tmp_path):
    from factory.rundir import compact

    store = RunStore(str(tmp_path / "run"))
    for i in range(5):
        store.append("samples", pa.table({"k": [i], "text": ["t" * 100]}))
    store.append("samples", pa.table({"k": [5]}))  # an older part without the text column
    store.replace("pairs", pa.table({"k": [1]}))
    done = compact.compact(store, target_mb=1)
    assert done == {"samples": {"parts_before": 6, "parts_after": 1, "rows": 6}}
    assert sorted(store.read("samples")["k"].to_list()) == list(range(6))
    assert store.read("samples").sort("k")["text"].to_list()[-1] is None
