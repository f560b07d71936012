"""jobs/submit.sh against a real Ray cluster of one node on loopback: `ray start --head`, submit a tiny
`factory run` as a Ray job, check that it finished and wrote its run directory, stop that head only.

Slow (about a minute: the head, the job's runtime env, two engine pools of the embedded model).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.fixture()
def ray_head(tmp_path):
    if not (BIN / "ray").exists() or not shutil.which("factory", path=str(BIN)):
        pytest.skip("the ray CLI or the factory script is not installed in this environment")
    gcs, dashboard, agent_http, agent_grpc, runtime_env, metrics, node_manager, object_manager, client = free_ports(9)
    temp = Path(f"/tmp/factory-raytest-{os.getpid()}")  # Ray's socket paths must stay short
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",  # the job's driver finds `factory` here
        "RAY_AUTH_MODE": "disabled",  # a loopback-only test cluster
        "RAY_ADDRESS": "",
    }
    # --block keeps `ray start` in the foreground as the parent of every process it starts: SIGTERM to it
    # stops exactly this cluster, never another Ray on the machine (`ray stop` would stop them all).
    log = open(tmp_path / "head.log", "w")  # noqa: SIM115 - stays open as the head's stdout until teardown
    head = subprocess.Popen(
        [
            str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
            "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
            f"--dashboard-agent-listen-port={agent_http}", f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--runtime-env-agent-port={runtime_env}", f"--metrics-export-port={metrics}",
            f"--node-manager-port={node_manager}", f"--object-manager-port={object_manager}",
            f"--ray-client-server-port={client}", "--num-cpus=2", f"--temp-dir={temp}", "--disable-usage-stats",
        ],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    address = f"http://127.0.0.1:{dashboard}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(f"{address}/api/version", timeout=2):
                break
        except OSError:
            assert head.poll() is None, (tmp_path / "head.log").read_text()[-2000:]
            time.sleep(1)
    else:
        pytest.fail("the Ray head's job server did not come up in 120 s")
    yield address, env
    head.send_signal(signal.SIGTERM)
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)  # its own session: only what this test started
    log.close()
    shutil.rmtree(temp, ignore_errors=True)


def test_submit_script_runs_factory_as_a_ray_job(ray_head, tmp_path):
    address, env = ray_head
    out = tmp_path / "run"
    overrides = [
        f"output_dir={out}", "prompts.limit=2", "sampler.k=2", "sampler.sampling.max_tokens=8",
        "judge.sampling.max_tokens=16", "sampler.engine.cpus_per_replica=1", "judge.engine.cpus_per_replica=1",
    ]  # fmt: skip
    done = subprocess.run(
        ["bash", str(ROOT / "jobs" / "submit.sh"), "conf/demo.yaml", *overrides],
        env={**env, "RAY_ADDRESS": address, "RAY": str(BIN / "ray")},
        capture_output=True, text=True, timeout=540, cwd=ROOT, check=False,
    )  # fmt: skip
    logs = done.stdout + done.stderr
    assert done.returncode == 0, logs[-3000:]
    assert "succeeded" in logs
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["requests"]["sampler"] == 4
    assert manifest["counts"]["samples_ok"] + manifest["counts"]["samples_failed"] == 4
    assert "factory run summary" in logs  # the job's own output came back through `ray job submit`
