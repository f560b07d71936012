"""A lost worker node on a real multi-node Ray cluster on loopback: a head with no CPUs (127.0.0.1) and a
worker node that holds the engine replicas (127.0.0.2), each started by the test with `ray start --block`
in its own process group. The worker node is killed (SIGKILL to its group: a preempted machine) while
`factory run` samples, and a new worker node joins a few seconds later: the run goes on by itself, keeps
every stored row, stores every key once, re-sends at most the requests that were in flight, and builds the
same pairs as an uninterrupted run (the loopback server answers each request from its seed). With no node
coming, the run says what it waits for and gives up after ray.placement_timeout_s with the stop line.

Slow (two to three minutes on 2 cores): every node is a set of Ray processes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest

from tests.engines.loopback import FakeModelServer
from tests.executor.test_runs import write_config
from tests.system.test_jobs import free_ports

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
IN_FLIGHT = 2 * 2  # IN_FLIGHT_PER_REPLICA batches x batch_size requests per replica (write_config's engines)


class Cluster:
    """Ray nodes on loopback, each `ray start --block` in its own session (killpg ends exactly that node)."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.temp = Path(f"/tmp/factory-nl-{os.getpid()}")  # Ray's socket paths must stay short
        self.env = {
            **os.environ, "RAY_AUTH_MODE": "disabled", "RAY_ADDRESS": "", "RAY_USAGE_STATS_ENABLED": "0",
            # the GCS tells a dead node within ~3 s (default ~30 s)
            "RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "1000",
            "RAY_health_check_failure_threshold": "3",
        }  # fmt: skip
        self.nodes: list[subprocess.Popen] = []
        self.gcs = free_ports(1)[0]
        self.address = f"127.0.0.1:{self.gcs}"

    def _start(self, name: str, args: list[str], ip: str) -> subprocess.Popen:
        node_manager, object_manager, agent, agent_grpc, runtime_env, metrics, low = free_ports(7)
        log = open(self.tmp / f"{name}.log", "w")  # noqa: SIM115 - the node's stdout until it ends
        node = subprocess.Popen(
            [str(BIN / "ray"), "start", "--block", f"--node-ip-address={ip}", f"--temp-dir={self.temp}",
             f"--node-manager-port={node_manager}", f"--object-manager-port={object_manager}",
             f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
             f"--runtime-env-agent-port={runtime_env}", f"--metrics-export-port={metrics}",
             "--disable-usage-stats", *args],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.nodes.append(node)
        return node

    def head(self) -> None:
        client = free_ports(1)[0]
        self._start("head", ["--head", f"--port={self.gcs}", "--num-cpus=0", "--include-dashboard=false",
                             f"--ray-client-server-port={client}"], "127.0.0.1")  # fmt: skip
        self.wait_cpus(0, nodes=1)

    def worker(self, name: str, cpus: int = 2, tries: int = 3) -> subprocess.Popen:
        """A worker node, started again when its `ray start` gives up (it allows its raylet 30 s to register,
        which a machine under heavy load can miss)."""
        for attempt in range(tries):
            node = self._start(f"{name}-{attempt}", [f"--address={self.address}", f"--num-cpus={cpus}"], "127.0.0.2")
            log = self.tmp / f"{name}-{attempt}.log"
            while node.poll() is None and "Ray runtime started" not in log.read_text():
                time.sleep(0.5)
            if node.poll() is None:  # up (`ray start --block` exits only when its node fails)
                return node
        return node

    def wait_cpus(self, cpus: float, nodes: int, timeout: float = 300) -> None:
        probe = (
            "import ray, sys, time; ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False);"
            "alive = [n for n in ray.nodes() if n['Alive']]; print(len(alive), ray.cluster_resources().get('CPU', 0))"
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = subprocess.run([sys.executable, "-c", probe, self.address], env=self.env, capture_output=True,
                                  text=True, timeout=60, check=False)  # fmt: skip
            parts = done.stdout.split()
            if len(parts) == 2 and int(parts[0]) >= nodes and float(parts[1]) >= cpus:
                return
            time.sleep(1)
        logs = {log.name: log.read_text()[-1500:] for log in sorted(self.tmp.glob("*.log"))}
        pytest.fail(
            f"the cluster did not reach {nodes} node(s) with {cpus} CPU(s): {done.stdout} {done.stderr[-1000:]} {logs}"
        )

    @staticmethod
    def kill(node: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        try:
            os.killpg(node.pid, sig)
        except ProcessLookupError:
            pass
        try:
            node.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(node.pid, signal.SIGKILL)
            node.wait()

    def stop(self) -> None:
        for node in reversed(self.nodes):
            if node.poll() is None:
                self.kill(node, signal.SIGTERM)
        shutil.rmtree(self.temp, ignore_errors=True)


@pytest.fixture()
def cluster(tmp_path):
    if not (BIN / "ray").exists():
        pytest.skip("the ray CLI is not installed in this environment")
    nodes = Cluster(tmp_path)
    try:
        nodes.head()
        yield nodes
    finally:
        nodes.stop()


class Run:
    """`factory run` joining the cluster through RAY_ADDRESS, its output lines timed as they come."""

    def __init__(self, config: Path, address: str, *overrides: str):
        env = {**os.environ, "RAY_ADDRESS": address, "PYTHONUNBUFFERED": "1", "RAY_AUTH_MODE": "disabled"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "factory.cli", "run", str(config), *overrides], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip
        self.lines: list[tuple[float, str]] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:  # type: ignore[union-attr]
            self.lines.append((time.monotonic(), line.rstrip()))

    def wait(self, timeout: float) -> str:
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.reader.join(timeout=10)
        return self.text()

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def first(self, needle: str) -> float | None:
        return next((t for t, line in self.lines if needle in line), None)


def stored(run: Path, table: str) -> pl.DataFrame:
    return pl.read_parquet(run / table) if list((run / table).glob("*.parquet")) else pl.DataFrame()


def wait_until(condition, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


PROMPTS, K = 12, 2


def test_a_lost_worker_node_is_replaced_and_the_run_finishes_exactly(cluster, tmp_path):
    node = cluster.worker("worker1")
    cluster.wait_cpus(2, nodes=2)
    with FakeModelServer(delay=0.4) as sampler, FakeModelServer(delay=0.4) as judge:
        config = write_config(tmp_path, sampler.url, judge.url, n_prompts=PROMPTS)
        run_dir = tmp_path / "run"
        overrides = ["ray.placement_timeout_s=240", "sampler.engine.max_retries=4", "judge.engine.max_retries=4"]
        factory = Run(config, cluster.address, *overrides)
        wait_until(lambda: len(stored(run_dir, "samples")) >= 6)  # mid-sampling, rows stored
        before = stored(run_dir, "samples").select("prompt_id", "sample_idx", "created_at")
        judged_before = stored(run_dir, "judgments")
        cluster.kill(node)  # the machine is gone: every process of the node at once
        killed_at, killed_wall = time.monotonic(), time.time()
        sent_at_kill = len(sampler.sample_requests()), len(judge.judge_requests())
        time.sleep(5)
        joined_at, joined_wall = time.monotonic(), time.time()
        threading.Thread(target=cluster.worker, args=("worker2",), daemon=True).start()
        out = factory.wait(timeout=400)
        sample_requests, judge_requests = len(sampler.sample_requests()), len(judge.judge_requests())
    assert factory.process.returncode == 0, out[-4000:]
    assert "Traceback" not in out and "EngineStartError" not in out
    said = [(t, line) for t, line in factory.lines if "waiting for the cluster" in line]
    assert said and all(t > killed_at for t, _ in said), out[-4000:]  # only once no node can host a replica
    assert all("waiting for the cluster to place the" in line for _, line in said)
    assert any("it gives up after ray.placement_timeout_s=240s" in line for _, line in said), said

    samples, judgments = stored(run_dir, "samples"), stored(run_dir, "judgments")
    keys = {(f"p{i}", j) for i in range(PROMPTS) for j in range(K)}
    assert set(samples.select("prompt_id", "sample_idx").rows()) == keys and samples.height == len(keys)  # once each
    assert judgments.height == len(keys) and judgments.select("prompt_id", "sample_idx", "vote").n_unique() == len(keys)
    assert samples["error"].null_count() == samples.height
    # every row stored before the kill is kept as it was
    kept = before.join(samples.select("prompt_id", "sample_idx", "created_at"), on=["prompt_id", "sample_idx"])
    assert kept.height == before.height and (kept["created_at"] == kept["created_at_right"]).all()
    assert (
        judged_before.height == 0
        or judged_before.select("prompt_id", "sample_idx").join(judgments, on=["prompt_id", "sample_idx"]).height
        == judged_before.height
    )
    # re-sent: at most what the lost replicas had in flight, per stage
    resent_samples, resent_judgments = sample_requests - len(keys), judge_requests - len(keys)
    assert 0 <= resent_samples <= IN_FLIGHT and 0 <= resent_judgments <= IN_FLIGHT

    # the same pairs as an uninterrupted run of the same config (in process, same server answers)
    with FakeModelServer(delay=0.0) as sampler2, FakeModelServer(delay=0.0) as judge2:
        from factory import config as config_mod
        from factory.run import run

        (tmp_path / "clean").mkdir()
        clean = write_config(tmp_path / "clean", sampler2.url, judge2.url, n_prompts=PROMPTS)
        run(config_mod.load(clean), backend="local")
    columns = ["prompt_id", "chosen_idx", "rejected_idx", "margin", "chosen", "rejected"]
    ours = stored(run_dir, "pairs").select(columns).sort("prompt_id")
    theirs = stored(tmp_path / "clean" / "run", "pairs").select(columns).sort("prompt_id")
    assert ours.height > 0 and ours.equals(theirs)

    new_rows = samples.join(before, on=["prompt_id", "sample_idx"], how="anti")
    after_join = new_rows.filter(pl.col("created_at") > joined_wall)
    first_new = float(after_join["created_at"].min()) if after_join.height else float("nan")
    waited = said[0][0]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    print(
        f"\nnode loss: {before.height} samples stored at the kill; the server saw {sample_requests} sample and "
        f"{judge_requests} judge requests for {len(keys)} + {len(keys)} keys stored (re-sent {resent_samples} + "
        f"{resent_judgments}; {sent_at_kill} sent before the kill); 'waiting' said "
        f"{waited - killed_at:.1f}s after the kill; new node joined {joined_at - killed_at:.1f}s after "
        f"the kill; the first sample made on it stored {first_new - joined_wall:.1f}s after its `ray start` "
        f"({first_new - killed_wall:.1f}s after the kill); {after_join.height} samples made after the join; the run "
        f"ended {time.monotonic() - killed_at:.0f}s after the kill (pairs check included); pools "
        f"{manifest['pools']}"
    )


def test_with_no_node_to_host_a_replica_the_run_says_so_and_gives_up_after_the_timeout(cluster, tmp_path):
    node = cluster.worker("worker1")
    cluster.wait_cpus(2, nodes=2)
    with FakeModelServer(delay=0.4) as sampler, FakeModelServer(delay=0.4) as judge:
        config = write_config(tmp_path, sampler.url, judge.url, n_prompts=PROMPTS)
        run_dir = tmp_path / "run"
        factory = Run(config, cluster.address, "ray.placement_timeout_s=10")
        wait_until(lambda: len(stored(run_dir, "samples")) >= 4)
        cluster.kill(node)
        killed_at = time.monotonic()
        out = factory.wait(timeout=180)
        took = time.monotonic() - killed_at
    assert factory.process.returncode == 130, out[-4000:]
    assert "waiting for the cluster to place the" in out and "gives up after ray.placement_timeout_s=10s" in out
    assert "factory: stopped by ray.placement_timeout_s=10: no node could host the" in out
    assert "run the same command again to resume" in out
    assert took < 60, took
    assert not (run_dir / "_lease.json").exists()
    print(f"\nno node: gave up {took:.1f}s after the kill (ray.placement_timeout_s=10)")
