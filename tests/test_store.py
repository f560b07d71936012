import uuid

import pyarrow as pa
import pytest

from factory.store import RunStore


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
