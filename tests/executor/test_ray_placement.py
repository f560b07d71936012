"""What the Ray executor says while a pool is not up: "waiting for the cluster" only when Ray has not
placed it (a replica loading its engine slowly is not waiting), and a wait bounded by
ray.placement_timeout_s that ends like a signal, with what finished stored.
"""

from __future__ import annotations

import io
import sys
import time
import uuid

import pytest
from ray import cloudpickle

from factory.config import EngineConfig, RayConfig, RunConfig
from factory.engines.base import Completion
from factory.executor import Executor, Interrupted
from factory.executor.progress import Progress
from factory.rundir.store import RunStore
from tests.executor import echo as echo_module
from tests.executor.echo import EchoStage

pytestmark = pytest.mark.slow
cloudpickle.register_pickle_by_value(sys.modules[__name__])
cloudpickle.register_pickle_by_value(echo_module)


@pytest.fixture(scope="module")
def ray4():
    import ray

    ray.shutdown()
    ray.init(num_cpus=4, include_dashboard=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


class SlowLoad:
    """Takes `load_s` to start (a model load), then answers at once."""

    model_name = "slow-load"
    supports_json_schema = False
    concurrent_batches = False

    def __init__(self, load_s: float):
        time.sleep(load_s)
        self.finished = 0

    def generate(self, requests, on_done=None):
        out = []
        for r in requests:
            self.finished += 1
            out.append(Completion(tag=r.tag, text=f"ok {r.tag}"))
            if on_done:
                on_done(out[-1])
        return out

    def count_tokens(self, texts):
        return None

    def close(self):
        pass


def engine_cfg(cpus: float) -> EngineConfig:
    return EngineConfig(
        kind="llamacpp", replicas=1, batch_size=2, max_retries=1, cpus_per_replica=cpus, watchdog_s=60.0
    )


def run_echo(cpus: float, load_s: float, timeout: float | None = 600.0, fits: bool | None = None, n_rows: int = 4):
    store = RunStore(f"memory://placement-{uuid.uuid4().hex}")
    stream = io.StringIO()
    cfg = RunConfig(ray=RayConfig(placement_timeout_s=timeout))
    error = None
    with Executor(
        store, cfg, backend="ray", build=lambda _c: SlowLoad(load_s), progress=Progress(60, stream, live=False)
    ) as ex:
        if fits is not None:
            ex.backend.fits = lambda pool, reserved=(): fits  # as a cluster that reported room it did not have
        try:
            ex.run([EchoStage(engine_cfg(cpus), n_rows)])
        except Interrupted as exc:
            error = exc
    rows = store.read("echo")
    return stream.getvalue(), (rows.height if rows is not None else 0), error


def test_a_pool_loading_slowly_is_not_said_to_wait_for_the_cluster(ray4):
    out, stored, error = run_echo(cpus=1, load_s=4.0)
    assert error is None and stored == 4
    assert "waiting for the cluster" not in out, out


def test_a_pool_ray_cannot_place_says_what_it_waits_for_and_gives_up_after_the_timeout(ray4):
    import ray

    @ray.remote(num_cpus=3)
    class Blocker:
        def ready(self):
            return True

    blocker = Blocker.remote()
    ray.get(blocker.ready.remote())
    try:
        started = time.monotonic()
        out, stored, error = run_echo(cpus=2, load_s=0.0, timeout=4.0, fits=True)  # started, never placed
        took = time.monotonic() - started
    finally:
        ray.kill(blocker)
    assert "waiting for the cluster to place the echo pool (2 CPU for 1 replica(s); no node has them free)" in out, out
    assert "it gives up after ray.placement_timeout_s=4s" in out
    assert error is not None and "stopped by ray.placement_timeout_s=4: no node could host the echo pool" in str(error)
    assert "run the same command again to resume" in str(error)
    assert stored == 0 and took < 30


def test_a_pool_waiting_for_placement_goes_on_once_the_cluster_has_room(ray4):
    import threading

    import ray

    @ray.remote(num_cpus=3)
    class Blocker:
        def ready(self):
            return True

    blocker = Blocker.remote()
    ray.get(blocker.ready.remote())
    threading.Timer(5.0, lambda: ray.kill(blocker)).start()  # the cluster frees the CPUs after 5 s
    out, stored, error = run_echo(cpus=2, load_s=0.0, timeout=120.0, fits=True)
    assert error is None and stored == 4
    assert out.count("waiting for the cluster to place the echo pool") == 1, out
