"""`compact`: merges a run directory's small parts, keeping every row."""

import pyarrow as pa
import pytest

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


def _keys(store, name):
    return sorted(store.read(name)["k"].to_list())


def test_merge_leftovers_merges_only_the_small_parts_a_stopped_run_left(tmp_path):
    from factory.rundir import compact

    store = RunStore(str(tmp_path / "run"))
    (rolled,) = store.merge("samples", [], pa.table({"k": [100, 101]}))  # an earlier roll's merged file
    for i in range(30):  # a killed writer's open part: one small part per flush
        store.append("samples", pa.table({"k": [i]}))
    store.append("judgments", pa.table({"k": [7]}))  # a single small part: nothing to merge
    done = compact.merge_leftovers(store, target_mb=1024)
    assert done == {"samples": {"parts_before": 30, "parts_after": 1, "rows": 30}}
    assert rolled in store.parts("samples") and len(store.parts("samples")) == 2
    assert _keys(store, "samples") == [*range(30), 100, 101]  # every row once
    assert compact.merge_leftovers(store, target_mb=1024) == {}  # a second start finds nothing to do


def test_merge_leftovers_killed_mid_merge_loses_no_row_and_doubles_none(tmp_path, monkeypatch):
    from factory.rundir import compact

    store = RunStore(str(tmp_path / "run"))
    for i in range(10):
        store.append("samples", pa.table({"k": [i]}))

    class Killed(BaseException):
        pass

    def killed(*args):  # the kill lands after the commit (marker written), before the old parts go
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(RunStore, "_finish_merge", killed)
        with pytest.raises(Killed):
            compact.merge_leftovers(store, target_mb=1024)
    assert _keys(store, "samples") == list(range(10))  # a reader meanwhile: every row once
    compact.merge_leftovers(store, target_mb=1024)  # the next run's start finishes it
    assert len(store.parts("samples")) == 1 and _keys(store, "samples") == list(range(10))
    assert not [p for p in store.fs.ls(store.path("samples"), detail=False) if p.rsplit("/", 1)[-1].startswith("_")]
