"""`ray job stop` on a `factory run` submitted with jobs/submit.sh: the job's driver gets SIGTERM (and, after
RAY_JOB_STOP_WAIT_TIME_S, SIGKILL: jobs/runtime_env.yaml gives it 30 s), prints the stop line, stores what
finished and releases the lease; submitting it again resumes without --take-over.

Slow (a Ray head with its job server, two job submissions)."""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest

from tests.engines.loopback import FakeModelServer
from tests.executor.test_runs import keys, write_config
from tests.system.test_jobs import BIN, ROOT, ray_head  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow


def submit(address: str, env: dict, config, no_wait: bool) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(ROOT / "jobs" / "submit.sh"), str(config)],
        env={**env, "RAY_ADDRESS": address, "RAY": str(BIN / "ray"), "NO_WAIT": "1" if no_wait else "0"},
        capture_output=True, text=True, timeout=540, cwd=ROOT, check=False,
    )  # fmt: skip


def test_ray_job_stop_stops_cleanly_and_a_resubmission_resumes(ray_head, tmp_path):  # noqa: F811
    address, env = ray_head
    ray = str(BIN / "ray")
    with FakeModelServer(delay=2.0) as sampler, FakeModelServer(delay=2.0) as judge:  # slow: stopped mid-run
        config = write_config(tmp_path, sampler.url, judge.url, n_prompts=12)
        done = submit(address, env, config, no_wait=True)
        assert done.returncode == 0, done.stdout + done.stderr
        job = re.search(r"raysubmit_[A-Za-z0-9]+", done.stdout + done.stderr).group(0)  # type: ignore[union-attr]
        run = tmp_path / "run"
        deadline = time.monotonic() + 300
        while len(keys(run, "samples")) < 2:
            assert time.monotonic() < deadline, "the job stored no sample"
            time.sleep(0.5)
        stopped_at = time.monotonic()
        stop = subprocess.run([ray, "job", "stop", "--address", address, job], env=env, capture_output=True,
                              text=True, timeout=120, check=False)  # fmt: skip
        took = time.monotonic() - stopped_at
        logs = subprocess.run([ray, "job", "logs", "--address", address, job], env=env, capture_output=True,
                              text=True, timeout=60, check=False).stdout  # fmt: skip
        assert "SIGTERM: stopping" in logs and "factory: stopped by SIGTERM" in logs, logs[-3000:] + stop.stderr
        assert not (run / "_lease.json").exists()
        assert took < 30, took
        stored = keys(run, "samples")
        before = len(sampler.sample_requests())
        again = submit(address, env, config, no_wait=False)
        out = again.stdout + again.stderr
        assert again.returncode == 0 and "succeeded" in out, out[-3000:]
        assert "taking over" not in out
    assert len(stored) < 24, "the job finished before it was stopped"
    assert keys(run, "samples") == sorted({(f"p{i}", j) for i in range(12) for j in range(2)})
    assert len(sampler.sample_requests()) - before == 24 - len(stored)
    assert json.loads((run / "manifest.json").read_text())["counts"]["samples_ok"] == 24
    print(f"\nray job stop: the job stopped {took:.1f}s after `ray job stop` was called")
