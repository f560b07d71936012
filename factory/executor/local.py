"""Engine pools in this process: the same stage graph and the same core as on Ray, with batches on
threads. For calibration, the tests' synthetic runs and the benchmarks; no watchdog (a thread cannot
be killed), no placement. `build(engine_cfg) -> Engine` makes the engines (a fake one in tests).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from factory.config import EngineConfig
from factory.engines import bind_run_dir
from factory.executor.metrics import LiveMetrics
from factory.executor.pool import Event, reason_of

IN_FLIGHT_PER_REPLICA = 2


class LocalPool:
    def __init__(
        self,
        cfg: EngineConfig,
        name: str,
        build: Callable,
        events: queue.Queue,
        owns: Callable[[], bool],
        run_dir: str | None = None,
    ):
        self.cfg, self.name, self.build, self.events, self.owns = cfg, name, build, events, owns
        self.run_dir = run_dir
        self.engines: list[Any] = []
        self.locks: list[threading.Lock | None] = []
        self.load: list[int] = []
        self.calls: dict[int, int] = {}  # call -> engine index
        self.starts = self.restarts = 0
        self.start_s = self.first_ready_s = 0.0
        self.started = False
        self.threads: ThreadPoolExecutor | None = None

    def start(self) -> None:
        if self.started:
            return
        t0 = time.monotonic()
        self.engines = [self.build(self.cfg) for _ in range(self.cfg.replicas)]
        for engine in self.engines:
            bind_run_dir(engine, self.run_dir)
        self.locks = [None if getattr(e, "concurrent_batches", False) else threading.Lock() for e in self.engines]
        self.load = [0] * len(self.engines)
        workers = IN_FLIGHT_PER_REPLICA * len(self.engines)
        self.threads = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"factory-{self.name}")
        self.starts += 1
        self.start_s += time.monotonic() - t0
        self.first_ready_s = self.first_ready_s or self.start_s
        self.started = True

    def placement_pending(self) -> bool:
        return False  # threads in this process: nothing to place

    def needs(self) -> dict[str, float]:
        return {}

    @property
    def ready(self) -> bool:
        return self.started

    def capacity(self) -> int:
        return IN_FLIGHT_PER_REPLICA * len(self.engines) - len(self.calls) if self.started else 0

    def submit(self, call_id: int, fn: Callable, requests: list[dict], args: tuple) -> None:
        index = min(range(len(self.engines)), key=lambda i: self.load[i])
        self.load[index] += 1
        self.calls[call_id] = index
        assert self.threads is not None
        self.threads.submit(self._run, call_id, index, fn, requests, args)

    def _run(self, call_id: int, index: int, fn: Callable, requests: list[dict], args: tuple) -> None:
        error = None
        try:
            lock = self.locks[index]
            emit = lambda rows: self.events.put(Event("rows", call_id, list(rows)))  # noqa: E731
            if lock is None:
                fn(self.engines[index], requests, emit, *args)
            else:
                with lock:
                    fn(self.engines[index], requests, emit, *args)
        except Exception as exc:  # the batch's unfinished rows are retried by the core
            error = reason_of(exc)
        self.events.put(Event("done", call_id, error))

    def finished(self, call_id: int) -> None:
        index = self.calls.pop(call_id, None)
        if index is not None:
            self.load[index] -= 1

    def close(self) -> None:
        for engine in self.engines:  # a call waiting on a provider's batch returns (the batch stays stored)
            stop = getattr(engine, "stop_waiting", None)
            if stop is not None:
                stop()
        if self.threads is not None:
            self.threads.shutdown(wait=True, cancel_futures=True)
            self.threads = None
        for engine in self.engines if self.owns() else ():
            engine.close()
        self.engines, self.started = [], False


class LocalBackend:
    def __init__(self, build: Callable | None = None):
        if build is None:
            from factory.engines import build_engine

            build = build_engine
        self.build = build
        self.close_engines = True  # False when the caller lent its own engine and closes it itself
        self.events: queue.Queue = queue.Queue()
        self.pools: list[LocalPool] = []
        self.live = LiveMetrics()  # nothing live beyond the progress lines and metrics.json

    def pool(self, cfg: EngineConfig, name: str, run_dir: str | None = None) -> LocalPool:
        pool = LocalPool(cfg, name, self.build, self.events, lambda: self.close_engines, run_dir)
        self.pools.append(pool)
        return pool

    def fits(self, pool: LocalPool, reserved: list = ()) -> bool:  # type: ignore[assignment]
        return True

    def wait(self, timeout: float) -> list[Event]:
        try:
            events = [self.events.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                events.append(self.events.get_nowait())
            except queue.Empty:
                break
        for event in events:
            if event.kind == "done":
                for pool in self.pools:
                    pool.finished(event.call_id)
        return events

    def tick(self, now: float) -> list[Event]:
        return []

    def alive(self) -> bool:
        return True

    def close(self, stopping: bool = False) -> None:
        for pool in self.pools:
            pool.close()
        self.pools = []
