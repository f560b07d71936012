import uuid

import pyarrow as pa
import pytest

from factory.rundir.store import RunStore, parquet_bytes


@pytest.fixture(params=["local", "memory"])
def store(request, tmp_path):
    url = str(tmp_path / "run") if request.param == "local" else f"memory://test-{uuid.uuid4().hex}"
    return RunStore(url)


def test_append_then_read_back_every_part(store):
    store.append("samples", pa.table({"a": [1, 2]}))
    store.append("samples", pa.table({"a": [3]}))
    assert sorted(store.read("samples")["a"].to_list()) == [1, 2, 3]
    assert len(store.parts("samples")) == 2


def test_empty_table_writes_nothing_and_missing_table_reads_none(store):
    assert store.append("x", pa.table({"a": pa.array([], pa.int64())})) is None
    assert store.read("x") is None


def test_replace_leaves_only_the_new_part(store):
    store.append("pairs", pa.table({"a": [1]}))
    store.append("pairs", pa.table({"a": [2]}))
    store.replace("pairs", pa.table({"a": [9]}))
    assert store.read("pairs")["a"].to_list() == [9]
    store.replace("pairs", pa.table({"a": pa.array([], pa.int64())}))
    assert len(store.parts("pairs")) == 1 and store.read("pairs").height == 0


def test_no_temporary_file_is_left_and_underscore_files_are_not_data(tmp_path):
    store = RunStore(str(tmp_path / "run"))
    store.append("samples", pa.table({"a": [1]}))
    names = [p.name for p in (tmp_path / "run" / "samples").iterdir()]
    assert len(names) == 1 and names[0].startswith("part-")
    (tmp_path / "run" / "samples" / "_tmp-half.parquet").write_bytes(b"not parquet")
    assert store.read("samples")["a"].to_list() == [1]


def test_read_conforms_to_a_schema_adding_missing_columns(store):
    store.append("samples", pa.table({"a": [1]}))
    schema = pa.schema([("a", pa.int64()), ("b", pa.string())])
    frame = store.read("samples", schema)
    assert frame.columns == ["a", "b"] and frame["b"].to_list() == [None]


def test_json_round_trip(store):
    store.write_json("manifest.json", {"counts": {"x": 1}})
    assert store.read_json("manifest.json") == {"counts": {"x": 1}}
    assert store.read_json("nothing.json") is None


def test_merge_replaces_parts_and_a_committed_merge_is_read_as_done(store):
    for i in range(3):
        store.append("samples", pa.table({"a": [i]}))
    old = store.parts("samples")
    (new,) = store.merge("samples", old, pa.table({"a": [0, 1, 2]}))
    assert store.parts("samples") == [new] and sorted(store.read("samples")["a"].to_list()) == [0, 1, 2]


def test_a_merge_cut_short_after_its_commit_is_read_and_recovered_exactly(store):
    for i in range(2):
        store.append("t", pa.table({"a": [i]}))
    old = store.parts("t")
    # The state a kill leaves between commit (marker written) and cleanup: hidden new file, old parts, marker.
    store.write_bytes("t/_merged-1-x-000.parquet", parquet_bytes(pa.table({"a": [0, 1]})))
    record = {"old": [p.rsplit("/", 1)[-1] for p in old], "new": [["_merged-1-x-000.parquet", "part-1-x-000.parquet"]]}
    store.write_json("t/_merge-1-x.json", record)
    assert sorted(store.read("t")["a"].to_list()) == [0, 1]  # never twice
    assert store.recover("t") >= 1
    assert [p.rsplit("/", 1)[-1] for p in store.parts("t")] == ["part-1-x-000.parquet"]
    assert sorted(store.read("t")["a"].to_list()) == [0, 1]
    # Before the commit (no marker), the hidden file is not data and recover drops it.
    store.write_bytes("t/_merged-2-y-000.parquet", b"half")
    assert sorted(store.read("t")["a"].to_list()) == [0, 1]
    store.recover("t")
    assert not any("_merged-2" in p for p in store.fs.ls(store.path("t"), detail=False))


def test_an_unreadable_part_is_named(store):
    from factory.rundir.store import CorruptPartError

    store.append("samples", pa.table({"a": [1]}))
    store.write_bytes("samples/part-9-bad.parquet", b"PAR1 garbage, not a footer")
    with pytest.raises(
        CorruptPartError, match=r"samples/part-9-bad\.parquet: not a readable Parquet part.*factory doctor"
    ):
        store.read("samples")


def test_read_projects_columns_and_iter_parts_streams(store):
    store.append("samples", pa.table({"a": [1], "b": ["x"]}))
    store.append("samples", pa.table({"a": [2]}))
    assert store.read("samples", columns=["a"]).columns == ["a"]
    schema = pa.schema([("a", pa.int64()), ("b", pa.string())])
    parts = list(store.iter_parts("samples", ["a", "b"], schema))
    assert len(parts) == 2 and all(t.column_names == ["a", "b"] for t in parts)
