"""The run directory and the prompts on s3://, against a local S3-compatible server (moto) on loopback."""

import json
import socket
from pathlib import Path

import fsspec
import pyarrow as pa
import pytest

from factory.rundir.store import RunStore

moto_server = pytest.importorskip("moto.server")
pytest.importorskip("s3fs")

DEMO = Path(__file__).resolve().parents[2] / "conf" / "demo.yaml"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3(monkeypatch_module):
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,  # botocore (and so s3fs) reads it: no code change for users
        "NO_PROXY": "127.0.0.1,localhost",
    }.items():
        monkeypatch_module.setenv(key, value)
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.mkdir("factory-test")
    yield endpoint
    server.stop()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_store_round_trip_on_s3(s3):
    store = RunStore("s3://factory-test/store-check")
    store.append("samples", pa.table({"a": [1, 2]}))
    store.append("samples", pa.table({"a": [3]}))
    store.replace("pairs", pa.table({"a": [7]}))
    store.write_json("manifest.json", {"ok": True})
    assert sorted(store.read("samples")["a"].to_list()) == [1, 2, 3]
    assert store.read("pairs")["a"].to_list() == [7]
    assert store.read_json("manifest.json") == {"ok": True}


@pytest.mark.slow
def test_factory_run_reads_and_writes_s3(s3):
    from factory.cli import main

    lines = (DEMO.parent / "data" / "demo_prompts.jsonl").read_text().splitlines()[:2]
    with fsspec.open("s3://factory-test/in/prompts.jsonl", "w") as handle:
        handle.write("\n".join(lines) + "\n")
    args = [
        "run", str(DEMO), "output_dir=s3://factory-test/runs/r1", "prompts.path=s3://factory-test/in/prompts.jsonl",
        "sampler.k=2", "sampler.sampling.max_tokens=16", "judge.sampling.max_tokens=32",
    ]  # fmt: skip
    assert main(args) == 0
    fs = fsspec.filesystem("s3")
    manifest = json.loads(fs.cat("factory-test/runs/r1/manifest.json"))
    assert manifest["counts"]["prompts_valid"] == 2 and manifest["requests"]["sampler"] == 4
    assert fs.glob("factory-test/runs/r1/pairs/*.parquet") and fs.glob("factory-test/runs/r1/samples/*.parquet")
    assert main(args) == 0
    assert json.loads(fs.cat("factory-test/runs/r1/manifest.json"))["requests"] == {"sampler": 0, "judge": 0}
