"""The executor's live figures in Ray's metrics (factory/executor/ray.py: RayLiveMetrics), read back from the
local Ray's metrics endpoint as Prometheus text, the way Ray's dashboard and Grafana read Ray's own: per
stage and pool the requests sent, the failed rows, the tokens, and the requests in flight; the counters
equal metrics.json's figures."""

from __future__ import annotations

import re
import socket
import sys
import threading
import time
import urllib.request
import uuid

import pytest
from ray import cloudpickle

from factory.config import EngineConfig, RunConfig
from factory.executor import Executor
from factory.rundir.store import RunStore
from tests import fakes as fakes_module
from tests.executor import echo as echo_module
from tests.executor.echo import EchoStage
from tests.fakes import FakeEngine, tag_reply

pytestmark = pytest.mark.slow
cloudpickle.register_pickle_by_value(sys.modules[__name__])
cloudpickle.register_pickle_by_value(echo_module)
cloudpickle.register_pickle_by_value(fakes_module)
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
SAMPLE = re.compile(r"^(ray_factory_\w+)\{(.*)\} (\S+)$")


@pytest.fixture(scope="module")
def ray_metrics_port():
    import ray

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", _metrics_export_port=port,
             _system_config={"metrics_report_interval_ms": 500})  # fmt: skip
    yield port
    ray.shutdown()


def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    """(metric, its stage/pool/kind tags) -> value, from the node's Prometheus text."""
    text = _NO_PROXY.open(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match:
            tags = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
            mine = frozenset((k, v) for k, v in tags.items() if k in ("stage", "pool", "kind"))
            out[(match.group(1), mine)] = out.get((match.group(1), mine), 0.0) + float(match.group(3))
    return out


def slow_engine(_cfg):
    # key 1 fails (an error row, not retried); every request takes 0.3 s so that some are seen in flight
    return FakeEngine({1: RuntimeError("boom")}, reply=tag_reply, latency=0.3, shuffle=False, concurrent_batches=False)


def test_requests_failures_tokens_and_in_flight_read_back_from_rays_metrics_endpoint(ray_metrics_port):
    engine = EngineConfig(kind="llamacpp", replicas=1, batch_size=2, max_retries=0, cpus_per_replica=0.5)
    store = RunStore(f"memory://ray-metrics-{uuid.uuid4().hex}")
    seen_in_flight: list[float] = []
    done = threading.Event()

    def watch():
        while not done.is_set():
            with_flight = [v for (name, _), v in scrape(ray_metrics_port).items() if name == "ray_factory_in_flight"]
            seen_in_flight.extend(with_flight)
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    # two stages on one engine identity: one pool, named after both
    stages = [EchoStage(engine, 8), EchoStage(engine, 0, name="echo2", upstream="echo")]
    try:
        with Executor(store, RunConfig(), backend="ray", build=slow_engine) as executor:
            executor.run(stages)
            figures = executor.metrics_json()["stages"]
    finally:
        done.set()
        watcher.join(10)
    pool = "echo+echo2"
    want = {
        ("ray_factory_requests_total", "echo"): figures["echo"]["requests"],
        ("ray_factory_failures_total", "echo"): figures["echo"]["failed"],
        ("ray_factory_requests_total", "echo2"): figures["echo2"]["requests"],
    }
    assert figures["echo"]["failed"] == 1 and figures["echo2"]["requests"] == 7  # the 7 good rows, followed
    deadline = time.monotonic() + 30
    while True:  # the node exports what the driver recorded every report interval
        got = scrape(ray_metrics_port)
        values = {key: got.get((key[0], frozenset({("stage", key[1]), ("pool", pool)}))) for key in want}
        tokens = got.get(
            ("ray_factory_tokens_total", frozenset({("stage", "echo"), ("pool", pool), ("kind", "completion")}))
        )
        flight = [
            got.get(("ray_factory_in_flight", frozenset({("stage", s), ("pool", pool)}))) for s in ("echo", "echo2")
        ]
        if (
            values == want and tokens == figures["echo"]["completion_tokens"] and flight == [0.0, 0.0]
        ) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert values == want
    assert tokens == figures["echo"]["completion_tokens"] == 8  # the echo stage counts 1 per row
    assert flight == [0.0, 0.0]  # nothing in flight once the run is over
    assert max(seen_in_flight, default=0.0) > 0  # and something while it ran
