"""Batch mode of the openai engine (engine.batch) against a loopback fake of the batch routes
(tests/engines/batch_server.py): one batch per call, its id stored at once, a killed driver's batch
polled by the next one and never sent again, an expired or failed batch sent again only for its
missing rows, a request the batch refused kept as that request's error."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from factory.config import ConfigError, EngineConfig
from factory.engines.base import Request
from factory.engines.openai import OpenAIEngine
from factory.rundir.schemas import BATCHES
from factory.rundir.store import RunStore
from tests.engines.batch_server import BatchServer, answer

ROOT = Path(__file__).resolve().parents[2]


def engine_cfg(url: str, **extra) -> EngineConfig:
    fields = {"kind": "openai", "base_url": f"{url}/v1", "model": "m", "batch": True, "batch_poll_s": 0.05,
              "max_retries": 2, "backoff_s": 0.01, "request_timeout_s": 10} | extra  # fmt: skip
    return EngineConfig(**fields)


def batch_engine(url: str, run_dir: Path, **extra) -> OpenAIEngine:
    engine = OpenAIEngine(engine_cfg(url, **extra))
    engine.bind_run_dir(str(run_dir))
    return engine


def requests(n: int = 4) -> list[Request]:
    return [
        Request(messages=[{"role": "user", "content": f"q{i}"}], max_tokens=16, seed=100 + i, tag=("p", i))
        for i in range(n)
    ]


def expected_text(request: Request) -> str:
    return answer({"seed": request.seed})["choices"][0]["message"]["content"]


def journal(run_dir: Path) -> list[dict]:
    stored = RunStore(str(run_dir)).read("batches", BATCHES)
    return [] if stored is None else stored.sort("updated_at").to_dicts()


def test_one_call_is_one_batch_its_id_stored_and_no_chat_request_sent(tmp_path):
    with BatchServer() as server:
        engine = batch_engine(server.url, tmp_path)
        asked = requests(4)
        seen = []
        try:
            out = engine.generate(asked, on_done=seen.append)
        finally:
            engine.close()
    assert [c.tag for c in out] == [r.tag for r in asked]
    assert [c.text for c in out] == [expected_text(r) for r in asked]
    assert all(c.error is None and c.attempts == 1 and c.prompt_tokens == 7 for c in out)
    assert len(seen) == 4 and engine.finished == 4
    assert (server.uploads, server.creates, server.chats) == (1, 1, 0)
    line = json.loads(server.files["file-0"].decode().splitlines()[0])
    assert line["method"] == "POST" and line["url"] == "/v1/chat/completions"
    assert line["body"]["model"] == "m" and line["body"]["seed"] == 100 and len(line["custom_id"]) == 32
    rows = journal(tmp_path)
    assert [(r["batch_id"], r["status"]) for r in rows] == [
        ("file:file-0", "uploaded"),
        ("batch_0", "validating"),
        ("batch_0", "completed"),
    ]  # the file's row before the create call, the batch's the moment it exists, then each status seen
    assert rows[1]["input_file_id"] == "file-0" and rows[-1]["output_file_id"]
    assert sorted(rows[0]["custom_ids"]) == sorted(server.lines) and len(rows[0]["keys"]) == 4
    assert json.loads(rows[0]["keys"][0]) == ["p", 0]


DRIVER = """
import sys
from factory.engines.base import Request
from tests.engines.test_openai_batch import batch_engine, requests
engine = batch_engine(sys.argv[1], sys.argv[2])
engine.generate(requests(4))
print("finished", flush=True)
"""


def test_a_driver_killed_between_create_and_download_is_resumed_by_polling_its_stored_batch(tmp_path):
    """The first driver creates the batch and is killed while it runs; the second polls the stored id:
    the server receives every request exactly once and no second batch."""
    run_dir = tmp_path / "run"
    with BatchServer(plans=["hold"]) as server:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        driver = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(DRIVER), server.url, str(run_dir)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while server.polls < 2 and time.monotonic() < deadline and driver.poll() is None:
                time.sleep(0.05)  # created, stored and polled at least once: it runs at the provider
            assert server.creates == 1 and server.polls >= 2, (
                driver.communicate(timeout=5)[0] if driver.poll() is not None else ""
            )
        finally:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait(timeout=10)
        assert server.downloads == 0  # killed before anything came back
        assert [r["status"] for r in journal(run_dir)][:2] == ["uploaded", "validating"]
        server.release()
        engine = batch_engine(server.url, run_dir)
        try:
            out = engine.generate(requests(4))
        finally:
            engine.close()
    assert [c.text for c in out] == [expected_text(r) for r in requests(4)]
    assert all(c.error is None for c in out)
    assert (server.uploads, server.creates, server.chats) == (1, 1, 0)
    assert set(server.lines.values()) == {1} and len(server.lines) == 4  # each request seen once
    assert journal(run_dir)[-1]["status"] == "completed"


def test_an_expired_batch_is_sent_again_only_for_its_missing_rows(tmp_path):
    with BatchServer(plans=["expire_half"]) as server:
        engine = batch_engine(server.url, tmp_path)
        try:
            out = engine.generate(requests(4))
        finally:
            engine.close()
    assert [c.text for c in out] == [expected_text(r) for r in requests(4)]
    assert [c.attempts for c in out] == [1, 1, 2, 2]
    first, second = server.inputs["batch_0"], server.inputs["batch_1"]
    assert len(first) == 4 and [line["custom_id"] for line in second] == [line["custom_id"] for line in first[2:]]
    assert server.creates == 2 and sorted(server.lines.values()) == [1, 1, 2, 2]
    statuses = {r["batch_id"]: r["status"] for r in journal(tmp_path) if not r["batch_id"].startswith("file:")}
    assert statuses == {"batch_0": "expired", "batch_1": "completed"}


def test_a_failed_batch_is_sent_again_and_gives_up_after_max_retries(tmp_path):
    with BatchServer(plans=["fail", "complete"]) as server:
        engine = batch_engine(server.url, tmp_path)
        try:
            out = engine.generate(requests(2))
        finally:
            engine.close()
    assert [c.error for c in out] == [None, None] and [c.attempts for c in out] == [2, 2]
    failed = [r for r in journal(tmp_path) if r["batch_id"] == "batch_0"][-1]
    assert failed["status"] == "failed" and "invalid_request: bad line" in failed["error"]
    with BatchServer(plans=["fail"] * 5) as server:
        engine = batch_engine(server.url, tmp_path / "again", max_retries=1)
        try:
            out = engine.generate(requests(2))
        finally:
            engine.close()
    assert server.creates == 2  # max_retries=1: two batches, then the requests' own errors
    assert all(c.error and "after 2 batch(es)" in c.error and c.attempts == 2 for c in out)


def test_a_request_refused_inside_a_batch_is_its_error_and_a_5xx_is_sent_again(tmp_path):
    with BatchServer(plans=["refuse_first"]) as server:
        engine = batch_engine(server.url, tmp_path / "a")
        try:
            out = engine.generate(requests(3))
        finally:
            engine.close()
    assert out[0].error == "HTTP 400: scripted 400" and [c.error for c in out[1:]] == [None, None]
    assert server.creates == 1
    with BatchServer(plans=["error_first"]) as server:
        engine = batch_engine(server.url, tmp_path / "b")
        try:
            out = engine.generate(requests(3))
        finally:
            engine.close()
    assert all(c.error is None for c in out) and out[0].attempts == 2
    assert server.creates == 2 and len(server.inputs["batch_1"]) == 1


def test_an_ended_batch_of_an_earlier_run_answers_without_a_new_batch_and_a_changed_request_is_sent(tmp_path):
    """A stored result is reused only for the exact request it answered: same key, other body -> sent."""
    with BatchServer() as server:
        for _ in range(2):
            engine = batch_engine(server.url, tmp_path)
            try:
                out = engine.generate(requests(2))
            finally:
                engine.close()
        assert server.creates == 1 and all(c.error is None for c in out)
        engine = batch_engine(server.url, tmp_path, model="other")
        try:
            engine.generate(requests(2))
        finally:
            engine.close()
        assert server.creates == 2


def test_a_driver_killed_while_its_batch_was_created_finds_it_by_its_file(tmp_path, monkeypatch):
    """The batch exists at the provider but its row was never stored (the driver died right after the
    create call): the next run finds it by the uploaded file's row and polls it; nothing is sent twice."""
    from factory.engines import openai_batch

    with BatchServer() as server:
        engine = batch_engine(server.url, tmp_path)
        real = openai_batch.BatchSender._record

        def die_after_create(self, batch, *args, **kwargs):
            if not batch.id.startswith("file:"):
                raise SystemExit("killed between creating the batch and storing its row")
            return real(self, batch, *args, **kwargs)

        monkeypatch.setattr(openai_batch.BatchSender, "_record", die_after_create)
        with pytest.raises(SystemExit):
            engine.generate(requests(3))
        engine.close()
        monkeypatch.setattr(openai_batch.BatchSender, "_record", real)
        assert server.creates == 1 and [r["status"] for r in journal(tmp_path)] == ["uploaded"]
        engine = batch_engine(server.url, tmp_path)
        try:
            out = engine.generate(requests(3))
        finally:
            engine.close()
        assert [c.text for c in out] == [expected_text(r) for r in requests(3)]
        assert (server.uploads, server.creates, server.lists) == (1, 1, 1) and set(server.lines.values()) == {1}
        # a file whose batch was never made: its requests are sent (once), the row marked abandoned
        store = RunStore(str(tmp_path / "never"))
        engine = batch_engine(server.url, tmp_path / "never")
        uploaded = {"input_file_id": "file-none", "custom_ids": [], "keys": []}
        engine._batch.bind(store)
        engine._batch._record(openai_batch._Uploaded("file-none"), [], [])
        engine._batch._adopt(uploaded)
        engine.close()
        assert journal(tmp_path / "never")[-1]["status"] == "abandoned"


def test_batch_is_the_openai_kinds_capability_only():
    with pytest.raises(ConfigError, match=r"engine\.batch: the batch API is a capability of the openai kind"):
        EngineConfig(kind="llamacpp", batch=True)
