"""A lost driver: its lease is taken at once when its process is gone on this host (pid gone, or reused by
a later process), and from another host once its heartbeat is stale; a run that finds a holder whose
heartbeat stopped waits for that instead of refusing (a resubmitted Ray job), a live holder is refused at
once. The killed run, resubmitted as another lease owner, resumes exactly."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest

from factory.rundir import lease as lease_mod
from factory.rundir.lease import Lease, LeaseHeld
from factory.rundir.store import RunStore


def holder_record(host: str, pid: int, age_s: float, **extra) -> dict:
    now = time.time()
    return {"owner": "someone", "host": host, "pid": pid, "command": "factory run crashed.yaml",
            "started_at": now - 100, "heartbeat_at": now - age_s, "token": "theirs", **extra}  # fmt: skip


@pytest.fixture()
def store(tmp_path):
    return RunStore(str(tmp_path / "run"))


def take(store, said: list[str]) -> float:
    started = time.monotonic()
    with Lease(store, "factory run mine.yaml", say=said.append):
        assert store.read_json("_lease.json")["token"] != "theirs"
    return time.monotonic() - started


def test_a_dead_process_on_this_host_is_taken_at_once(store):
    said: list[str] = []
    store.write_json("_lease.json", holder_record(socket.gethostname(), 2**22 + 7, age_s=1))
    assert take(store, said) < 2 and "taking over the stale lease" in said[0]


def test_a_pid_reused_by_a_later_process_is_a_dead_holder(store):
    said: list[str] = []
    # our own pid is alive, but the holder recorded another start time: the pid was reused
    store.write_json("_lease.json", holder_record(socket.gethostname(), os.getpid(), age_s=1, pid_started="1"))
    assert take(store, said) < 2 and "taking over the stale lease" in said[0]
    mine = Lease(store, "x")._record()
    assert mine["pid_started"] == lease_mod._process_start(os.getpid()) is not None


def test_a_live_holder_on_another_host_is_refused_at_once(store):
    store.write_json("_lease.json", holder_record("node-a", 4242, age_s=2))
    started = time.monotonic()
    with pytest.raises(LeaseHeld, match=r"being written by .* on node-a .*goes stale 60s after its last heartbeat"):
        Lease(store, "factory run mine.yaml", say=lambda _t: None).acquire()
    assert time.monotonic() - started < 2


def test_a_holder_on_another_host_whose_heartbeat_stopped_is_waited_for_then_taken(store, monkeypatch):
    monkeypatch.setattr(lease_mod, "TTL_S", 4.0)
    monkeypatch.setattr(lease_mod, "MISSED_BEAT_S", 1.5)
    said: list[str] = []
    store.write_json("_lease.json", holder_record("node-a", 4242, age_s=2.0))
    took = take(store, said)
    assert 1.5 < took < 5, took
    assert "heartbeat stopped 2s ago" in said[0] and "when it goes stale, 4s after its last heartbeat" in said[0]
    assert "taking over the stale lease" in said[1]


def test_a_holder_that_beats_while_waited_for_is_refused(store, monkeypatch):
    monkeypatch.setattr(lease_mod, "TTL_S", 6.0)
    monkeypatch.setattr(lease_mod, "MISSED_BEAT_S", 1.5)
    record = holder_record("node-a", 4242, age_s=2.0)
    store.write_json("_lease.json", record)

    def beat():  # the holder was only slow: it renews its lease
        store.write_json("_lease.json", {**record, "heartbeat_at": time.time()})

    threading.Timer(1.0, beat).start()
    with pytest.raises(LeaseHeld, match="being written by"):
        Lease(store, "factory run mine.yaml", say=lambda _t: None).acquire()


@pytest.mark.slow
def test_a_killed_driver_resubmitted_from_another_host_resumes_exactly(tmp_path):
    import json

    from tests.engines.loopback import FakeModelServer
    from tests.executor.test_runs import keys, quiet, start, wait_until, write_config

    with FakeModelServer(delay=0.3) as sampler, FakeModelServer(delay=0.3) as judge:
        config = write_config(tmp_path, sampler.url, judge.url, n_prompts=10)
        process = start(config)
        wait_until(lambda: len(sampler.replied) >= 6)
        os.killpg(process.pid, signal.SIGKILL)  # the driver dies: no cleanup, its lease stays
        process.wait()
        quiet(sampler, judge)
        run = tmp_path / "run"
        left = json.loads((run / "_lease.json").read_text())
        # As if that driver ran on another node, its heartbeat a minute old by the time the job is resubmitted.
        (run / "_lease.json").write_text(json.dumps({**left, "host": "node-a", "heartbeat_at": time.time() - 61}))
        stored = keys(run, "samples")
        judged = keys(run, "judgments")
        sent = len(sampler.sample_requests()), len(judge.judge_requests())
        resumed = start(config)  # no --take-over: another owner on another host
        out, _ = resumed.communicate(timeout=300)
        assert resumed.returncode == 0, out
        assert "taking over the stale lease" in out and "on node-a" in out
        assert len(sampler.sample_requests()) - sent[0] == 20 - len(stored)
        assert len(judge.judge_requests()) - sent[1] == 20 - len(judged)
    assert keys(run, "samples") == sorted({(f"p{i}", j) for i in range(10) for j in range(2)})
    assert keys(run, "judgments") == sorted({(f"p{i}", j, 0) for i in range(10) for j in range(2)})
    assert not (run / "_lease.json").exists()
