"""The Ray runner: actor pools of engines that run stage batch functions, with backpressure,
a watchdog, restarts, and progress. No stage logic lives here.

    pool = EnginePool(cfg.sampler.engine, "sampler")
    pool.map_batches(sample_batch, plan_rows, args=(sampling, fp), on_result=write, on_fail=fail_rows)
    pool.shutdown()

Each replica is one Ray actor that builds its engine once. A replica gets `batch_size` rows per
call and at most two calls in flight, so the driver never floods the object store. A call that
raises, whose actor dies, or that makes no progress for `watchdog_s` is retried on a fresh actor
up to `max_retries` times; then `on_fail` turns its rows into failed rows, which are stored with
their reason like any others. Nothing is lost or doubled: results are matched to their batch.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

from factory.config import EngineConfig, RayConfig

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
        ray.init(num_cpus=cfg.num_cpus, include_dashboard=False, **kwargs)


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
        eta_text = _duration(eta) if eta == eta else "?"
        return (
            f"[{self.label}] {self.done}/{self.total} ({pct:.0f}%) failed {self.failed} | "
            f"{self.tokens / elapsed:.1f} tok/s | elapsed {_duration(elapsed)} | ETA {eta_text}"
        )


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
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
        """Holds one engine; runs stage batch functions on it."""

        def __init__(self, engine_cfg: EngineConfig):
            from factory.engines import build_engine

            self.engine = build_engine(engine_cfg)

        def run(self, fn: Callable, rows: list[dict], args: tuple) -> list[dict]:
            return fn(self.engine, rows, *args)

        def ready(self) -> bool:
            return True

    return EngineActor


@dataclass
class _Call:
    batch: list[dict]
    replica: int
    started: float
    attempt: int


class EnginePool:
    """`replicas` engine actors with the resources the engine config asks for."""

    def __init__(self, cfg: EngineConfig, name: str):
        import ray

        self.cfg, self.name = cfg, name
        self._ray = ray
        self._cls = _actor_class()
        self.actors: list[Any] = [self._start(i) for i in range(cfg.replicas)]
        self.restarts = 0
        # Building the engine (loading the model) happens here, so errors surface before any work.
        ray.get([actor.ready.remote() for actor in self.actors])

    def _options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"num_cpus": self.cfg.cpus_per_replica, "max_concurrency": 1}
        if self.cfg.kind == "vllm":
            from factory.engines.vllm import actor_options

            options.update(actor_options(self.cfg))
        return options

    def _start(self, index: int) -> Any:
        return self._cls.options(name=None, **self._options()).remote(self.cfg)

    def _restart(self, index: int) -> None:
        try:
            self._ray.kill(self.actors[index], no_restart=True)
        except Exception:  # already dead
            pass
        self.restarts += 1
        self.actors[index] = self._start(index)

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
        in_flight: dict[Any, _Call] = {}
        load = [0] * len(self.actors)
        while queue or in_flight:
            while queue and min(load) < IN_FLIGHT_PER_REPLICA:
                replica = load.index(min(load))
                batch, attempt = queue.pop()
                ref = self.actors[replica].run.remote(fn, batch, args)
                in_flight[ref] = _Call(batch, replica, time.monotonic(), attempt)
                load[replica] += 1
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
            for ref in ready:
                call = in_flight.pop(ref)
                load[call.replica] -= 1
                try:
                    results = ray.get(ref)
                except Exception as exc:  # the batch raised, or the actor died
                    reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
                    self._retry_or_fail(call, reason, queue, in_flight, load, on_result, on_fail)
                    continue
                on_result(call.batch, results)
            self._watchdog(queue, in_flight, load, on_result, on_fail)

    def _watchdog(self, queue, in_flight, load, on_result, on_fail) -> None:
        now = time.monotonic()
        stuck = {c.replica for c in in_flight.values() if now - c.started > self.cfg.watchdog_s}
        for replica in stuck:
            log.warning("%s replica %d made no progress for %.0fs: restarting it", self.name, replica, self.cfg.watchdog_s)
            self._restart(replica)
            for ref, call in list(in_flight.items()):
                if call.replica == replica:
                    in_flight.pop(ref)
                    load[replica] -= 1
                    reason = f"watchdog: no progress for {self.cfg.watchdog_s:.0f}s"
                    self._retry_or_fail(call, reason, queue, in_flight, load, on_result, on_fail, restarted=True)

    def _retry_or_fail(self, call, reason, queue, in_flight, load, on_result, on_fail, restarted=False) -> None:
        if not restarted:
            dead = _is_actor_death(reason)
            if dead:
                log.warning("%s replica %d died (%s): restarting it", self.name, call.replica, reason)
                self._restart(call.replica)
                for ref, other in list(in_flight.items()):  # its other calls die with it; requeue them
                    if other.replica == call.replica:
                        in_flight.pop(ref)
                        load[call.replica] -= 1
                        queue.append((other.batch, other.attempt))
        if call.attempt < self.cfg.max_retries:
            queue.append((call.batch, call.attempt + 1))
        else:
            on_result(call.batch, on_fail(call.batch, f"failed after {call.attempt + 1} attempts: {reason}"))

    def shutdown(self) -> None:
        for actor in self.actors:
            try:
                self._ray.kill(actor, no_restart=True)
            except Exception:
                pass
        self.actors = []


def _is_actor_death(reason: str) -> bool:
    return any(word in reason for word in ("ActorDiedError", "RayActorError", "ActorUnavailableError", "WorkerCrashedError"))
