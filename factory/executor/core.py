"""The executor: runs a graph of stages (factory/stages/base.py) on long-lived engine pools.

    with Executor(store, cfg, backend="ray") as ex:        # or backend="local" (threads, no Ray)
        ex.run([SampleStage(...), JudgeStage(...)])        # any number of times: the pools stay up
    ex.metrics_json()                                      # what metrics.json holds

One run() plans every stage from what is stored (keys only), then loops:
- dispatch: each pool with a free slot takes a batch from the stages it serves (a downstream stage
  first, so groups finish early), rendered right before it is sent;
- collect: finished rows come back per request (Event "rows"), are matched to their request by key
  (a row not asked for, or twice, is dropped with a warning) and buffered in the stage's writer;
- store: a writer flushes at least every `store.flush_s` seconds, and as soon as it holds a batch of
  rows (a downstream stage's batch, else its own stage's: judgments are stored as promptly as the
  samples they judge, so a kill re-pays little more than the requests in flight); once rows are
  durable they are handed to the stages they feed
  (`follow`), so judging runs while sampling runs and a kill at any point resumes exactly: a
  judgment is only ever made of a stored sample;
- fail: a batch that raises, or whose replica dies or stalls, has its unfinished requests sent again
  (never its finished ones) up to `engine.max_retries` times, then stored as failed rows with the
  reason. A FatalEngineError (bad credentials) stops the run.
Stages that share an engine identity (kind, model, resources) share one pool: one model load.

Signals: the first SIGINT/SIGTERM stops dispatching, waits up to STOP_GRACE_S for requests in flight,
stores every finished row and raises Interrupted (what was kept, how to resume); a second exits at once.
Budget (optional, factory/executor/budget.py): every stored row is charged stage.tokens(row) at its stage's prices;
once `budget.exceeded()`, dispatching stops as on a first signal, the requests in flight (already paid
for) finish and are stored, and BudgetExceeded says how to go on.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import polars as pl
import pyarrow as pa

from factory.config import RunConfig
from factory.engines import engine_identity
from factory.executor.metrics import LiveMetrics, StageMetrics, overlap_s
from factory.executor.pool import Event
from factory.executor.progress import Progress
from factory.executor.writer import TableWriter
from factory.stages.base import Stage, check_inputs, row_key
from factory.rundir.store import RunStore

log = logging.getLogger("factory")

STOP_GRACE_S = 5.0
METRICS_CHECKPOINT_S = 3.0  # `checkpoint` (metrics.json, with the run directory's totals) at least this often
WAIT_BEFORE_MAKING_ROOM_S = 2.0  # a started pool not placed by then is taken to wait for resources
FATAL = "FatalEngineError"


class Interrupted(RuntimeError):
    """The run was stopped by a signal; everything finished is stored."""


class FatalRunError(RuntimeError):
    """An engine said that no request can succeed (e.g. HTTP 401): the run stopped."""


class BudgetExceeded(Interrupted):
    """cost.max_usd was reached: no new request was sent; everything finished is stored."""


BUDGET = "budget"  # self.stopping when the budget stopped the run


def cached_tokens(row: dict, prompt_tokens: int) -> int:
    """Of a stored row's prompt tokens, those its server's prefix cache served (the `cached_tokens` column of
    samples and judgments; 0 where a table or server has none)."""
    return min(int(row.get("cached_tokens") or 0), prompt_tokens)


class WorkQueue:
    """A stage's pending work: chunks of plan rows (a DataFrame is sliced lazily) or of rendered
    requests coming back for another attempt (those go first)."""

    def __init__(self) -> None:
        self.chunks: deque[list[Any]] = deque()  # [attempt, rows (list | DataFrame), offset, rendered]
        self.size = 0

    def extend(self, rows: list[dict] | pl.DataFrame, attempt: int = 0, rendered: bool = False) -> None:
        n = rows.height if isinstance(rows, pl.DataFrame) else len(rows)
        if not n:
            return
        chunk = [attempt, rows, 0, rendered]
        if rendered:
            self.chunks.appendleft(chunk)
        else:
            self.chunks.append(chunk)
        self.size += n

    def take(self, n: int) -> tuple[int, list[dict], bool]:
        chunk = self.chunks[0]
        attempt, rows, offset, rendered = chunk
        if isinstance(rows, pl.DataFrame):
            out = rows.slice(offset, n).to_dicts()
        else:
            out = rows[offset : offset + n]
        chunk[2] = offset + len(out)
        total = rows.height if isinstance(rows, pl.DataFrame) else len(rows)
        if chunk[2] >= total:
            self.chunks.popleft()
        self.size -= len(out)
        return attempt, out, rendered

    def __len__(self) -> int:
        return self.size


@dataclass
class _Call:
    stage: str
    requests: list[dict]
    attempt: int
    expected: dict[tuple, int]
    received: set[tuple] = field(default_factory=set)


def answered_keys(stage: Stage, request: dict) -> list[tuple]:
    """The stored rows' keys one request answers: its own key, or those a stage names (a group judge's
    request answers every sample it shows)."""
    answers = getattr(stage, "answers", None)
    return answers(request) if answers is not None else [row_key(request, stage.key)]


def planned_rows(stage: Stage, work: list[dict] | pl.DataFrame) -> int:
    """The rows a stage's work will store (a group judge's request stores one per sample it shows)."""
    rows = getattr(stage, "rows_of", None)
    if rows is not None:
        return rows(work)
    return work.height if isinstance(work, pl.DataFrame) else len(work)


class Executor:
    def __init__(
        self,
        store: RunStore,
        cfg: RunConfig,
        backend: str = "ray",
        build: Callable | None = None,
        progress: Progress | None = None,
        scrub: Callable[[pa.Table], pa.Table] | None = None,
        budget: Any = None,
    ):
        self.store, self.cfg, self.scrub = store, cfg, scrub
        self.budget = budget
        self.kind = backend
        if backend == "ray":
            from factory.executor.ray import RayBackend

            self.backend: Any = RayBackend(cfg.ray, build)
        elif backend == "local":
            from factory.executor.local import LocalBackend

            self.backend = LocalBackend(build)
        else:
            raise ValueError(f"unknown executor backend {backend!r} (ray, local)")
        self.progress = progress or Progress(cfg.progress_interval_s)
        self.pools: dict[str, Any] = {}  # engine identity -> pool
        self.pool_stages: dict[str, list[str]] = {}
        self.history: list[StageMetrics] = []
        self.t0 = time.monotonic()
        self.stopping: str | None = None
        self._stop_deadline = 0.0
        self.lease: Any = None  # a Lease: when another run takes the directory over, stop like on a signal
        self._next_start_check = 0.0
        self._pending_since: dict[int, float] = {}  # pool -> since when it waits for the cluster to place it
        self._starved_warned: tuple[float, bool] | None = None
        self._next_alive_check = self._last_event = 0.0
        self.fatal: str | None = None
        self._ids = itertools.count()
        self.live: LiveMetrics = self.backend.live  # Ray's metrics on the Ray backend (executor/metrics.py)
        self._pool_names: dict[str, str] = {}  # stage -> its pool's name (the stages sharing it, joined by +)
        self._in_flight: dict[str, int] = {}  # stage -> requests in flight, as last reported
        # Called every METRICS_CHECKPOINT_S while requests run (the session writes metrics.json), so a driver
        # killed outright loses at most that much of its share of the run directory's totals.
        self.checkpoint: Callable[[], None] | None = None
        self._next_checkpoint = time.monotonic() + METRICS_CHECKPOINT_S

    # -- pools -------------------------------------------------------------------------------------
    def _pool(self, stage: Stage) -> Any:
        identity = engine_identity(stage.engine)
        names = self.pool_stages.setdefault(identity, [])
        if stage.name not in names:
            names.append(stage.name)
        if identity not in self.pools:
            # Engines that keep state in the run directory (batch ids) get the executor's store.
            self.pools[identity] = self.backend.pool(stage.engine, stage.name, run_dir=self.store.url)
        return self.pools[identity]

    def close(self) -> None:
        """After a stop (signal, budget, lost lease) the lease is released first: everything finished is
        stored by then, and closing the pools talks to Ray, which a group signal may have stopped too."""
        self.progress.close()
        if self.stopping and self.lease is not None:
            self.lease.release()
        self.backend.close(stopping=bool(self.stopping))

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- one pass over a stage graph ---------------------------------------------------------------
    def run(self, stages: list[Stage], store: RunStore | None = None) -> dict[str, StageMetrics]:
        """Plan every stage from the store and run until nothing is missing; returns each stage's metrics.
        `store` runs this graph against another run directory on the same pools (eval, benchmarks)."""
        if store is not None:
            self.store = store
        by_name = {s.name: s for s in stages}
        # A stage is fed by its upstream's stored rows, and follows those of the stages it names in `follows`
        # (sampler.adaptive: the sampler follows itself and the judges to draw a group's next step).
        feeds = {
            s.name: [d for d in stages if d.upstream == s.name or s.name in getattr(d, "follows", ())] for s in stages
        }
        queues = {s.name: WorkQueue() for s in stages}
        metrics = {s.name: StageMetrics(s.name, fed_by=s.upstream if s.upstream in by_name else "") for s in stages}
        pools = {s.name: self._pool(s) for s in stages}
        self._pool_names = {s.name: "+".join(self.pool_stages[engine_identity(s.engine)]) for s in stages}
        checked: set[str] = set()  # stages whose declared inputs the upstream rows were checked against
        for s in stages:
            plan = s.plan(self.store)
            queues[s.name].extend(plan)
            metrics[s.name].planned = planned_rows(s, plan)
            fed = s.upstream in by_name and metrics[s.upstream].planned
            note = "; ".join(
                part
                for part in (
                    f"more as {s.upstream} stores rows" if fed else "",
                    "every key is already stored" if not plan.height and not fed else "",
                    getattr(s, "note", ""),
                )
                if part
            )
            self.progress.say(f"[{s.name}] {plan.height} request(s) to make" + (f" ({note})" if note else ""))
            if self.budget is not None and self.budget.max_usd is not None and (plan.height or fed):
                from factory.executor.budget import unpriced_paid

                if unpriced_paid([(s.name, s.engine, 1)], self.budget.prices):
                    self.progress.say(
                        f"[{s.name}] warning: cost.max_usd does not count this stage: no price "
                        f"({self.budget.key(s.name)}.*)"
                    )
        writers = {
            s.name: TableWriter(
                self.store, s.table, s.schema, self.cfg.store,
                feed_rows=max((d.batch_size for d in feeds[s.name]), default=s.batch_size), scrub=self.scrub,
                failed=s.failed, on_replaced=lambda row, new, s=s: metrics[s.name].recount(s.ok(row), s.ok(new)),
            )
            for s in stages
        }  # fmt: skip
        calls: dict[int, _Call] = {}

        def upstream_active(name: str) -> bool:
            stage = by_name[name]
            if stage.upstream is None or stage.upstream not in by_name:
                return False
            up = stage.upstream
            return bool(
                len(queues[up])
                or writers[up].pending
                or any(c.stage == up for c in calls.values())
                or upstream_active(up)
            )

        def wanted(s: Stage) -> bool:
            return bool(
                len(queues[s.name]) or metrics[s.name].feeding or any(c.stage == s.name for c in calls.values())
            )

        for s in stages:
            metrics[s.name].feeding = upstream_active(s.name)
            if wanted(s) and (metrics[s.name].planned or metrics[s.name].feeding):
                self.progress.track(metrics[s.name])
        self.history += metrics.values()
        restore = self._install_signals()
        try:
            while True:
                now = time.monotonic()
                if self.lease is not None and self.lease.lost and not self.stopping:
                    self.stopping, self._stop_deadline = "a lost lease", now + STOP_GRACE_S
                if self.budget is not None and not self.stopping and self.budget.exceeded():
                    self.stopping, self._stop_deadline = BUDGET, float("inf")  # what is in flight is paid for
                    self.progress.say(f"[factory] {self.budget.stop_message()}")
                if not self.stopping and not self.fatal:
                    self._start_pools(stages, pools, wanted, now)
                    self._dispatch(stages, queues, pools, calls, metrics)
                busy = any(len(q) for q in queues.values()) or calls
                events = self.backend.wait(0.05 if busy else 0.01)
                events += self.backend.tick(now)
                for event in events:
                    self._on_event(event, by_name, calls, queues, writers, metrics)
                self._report_in_flight(stages, calls)
                for s in stages:
                    writer = writers[s.name]
                    idle = not len(queues[s.name]) and not any(c.stage == s.name for c in calls.values())
                    if writer.pending and (writer.due() or (idle and feeds[s.name])):
                        stored = writer.flush()
                        if not self.stopping and not self.fatal:
                            for downstream in feeds[s.name]:
                                fed = downstream.upstream == s.name  # else it only follows these rows
                                if fed and stored and downstream.name not in checked:  # once: rows share a schema
                                    check_inputs(downstream, stored[0].keys(), f"the rows of {s.name}")
                                    checked.add(downstream.name)
                                work = downstream.follow(stored)
                                queues[downstream.name].extend(work)
                                metrics[downstream.name].planned += planned_rows(downstream, work)
                for s in stages:
                    metrics[s.name].feeding = upstream_active(s.name)
                self.progress.tick()
                if self.checkpoint is not None and now >= self._next_checkpoint:
                    self._next_checkpoint = now + METRICS_CHECKPOINT_S
                    try:
                        self.checkpoint()
                    except OSError as exc:  # the directory will be written again at the end; go on
                        log.warning("metrics.json checkpoint not written: %s", exc)
                if self.fatal or (self.stopping and (not calls or time.monotonic() > self._stop_deadline)):
                    break
                if events:
                    self._last_event = time.monotonic()
                if self.stopping and calls and time.monotonic() - self._last_event > 1.0 and not self._backend_alive():
                    # The actors are processes of their own and still hand rows back for a moment; once
                    # none comes, what is in flight is lost with Ray (a rerun asks for those keys again).
                    self.progress.say(
                        f"[factory] Ray's processes were stopped too: {len(calls)} batch(es) in flight are lost"
                    )
                    break
                if (
                    not calls
                    and not any(len(q) for q in queues.values())
                    and not any(writers[s.name].pending for s in stages if feeds[s.name])
                ):
                    if self.stopping or self.fatal or not self._settle(stages, queues, metrics):
                        break
        finally:
            restore()
            self._report_in_flight(stages, {})
            for s in stages:
                writers[s.name].close()
                metrics[s.name].feeding = False
                metrics[s.name].parts_written, metrics[s.name].merges = (
                    writers[s.name].parts_written,
                    writers[s.name].merges,
                )
            self.progress.tick(force=True)
        if self.fatal:
            raise FatalRunError(self.fatal)
        if self.stopping == BUDGET:
            raise BudgetExceeded(self.budget.stop_message())
        if self.stopping:
            kept = ", ".join(f"{m.rows} {by_name[n].table}" for n, m in metrics.items())
            raise Interrupted(
                f"stopped by {self.stopping}: stored every finished row ({kept} this time); "
                "run the same command again to resume: only the missing keys are requested"
            )
        return metrics

    def _settle(self, stages: list[Stage], queues: dict, metrics: dict) -> bool:
        """Nothing is left to do: a stage with `settle` (sampler.adaptive) plans from what is stored once
        more; True when one found work (the loop goes on)."""
        found = False
        for s in stages:
            settle = getattr(s, "settle", None)
            work = settle(self.store) if settle is not None else []
            if work:
                queues[s.name].extend(work)
                metrics[s.name].planned += len(work)
                if all(m is not metrics[s.name] for m in self.progress.stages):
                    self.progress.track(metrics[s.name])
                found = True
        return found

    def _start_pools(self, stages: list[Stage], pools: dict, wanted: Callable[[Stage], bool], now: float) -> None:
        """Start the pools that have work, in stage order, as far as the cluster holds them. When it cannot
        hold a pool with work beside the others, a pool whose stages are all done is closed to make room
        (its stages run one after the other instead of overlapping; a later round starts it again).

        A pool waits for resources only when Ray has not placed it: not started because it does not fit,
        or started with no replica up and none placed on a node (a lost node, a full cluster); a replica
        that is placed and loading its engine, however slowly, is not waiting. A pool that waits longer
        than `ray.placement_timeout_s` with nothing else running stops the run like a signal."""
        if now < self._next_start_check:
            return
        self._next_start_check = now + 0.5
        distinct = list({id(p): p for p in pools.values()}.values())
        for stage in stages:
            pool = pools[stage.name]
            if not wanted(stage) or pool.ready:
                self._pending_since.pop(id(pool), None)
                continue
            if not pool.started:
                # What started pools still wait for is not free, whatever the cluster reports yet.
                waiting = [p.needs() for p in distinct if p.started and not p.ready and p.placement_pending()]
                if self.backend.fits(pool, reserved=waiting):
                    pool.start()
                    self._pending_since.pop(id(pool), None)
                    continue
            elif not pool.placement_pending():
                self._pending_since.pop(id(pool), None)
                continue  # placed: loading its engine
            since = self._pending_since.setdefault(id(pool), now)
            if now - since < WAIT_BEFORE_MAKING_ROOM_S:
                return
            idle = [
                p
                for p in distinct
                if p.started and p is not pool and not any(wanted(s) for s in stages if pools[s.name] is p)
            ]
            for other in idle:
                self.progress.say(
                    f"[executor] the cluster cannot hold the {stage.name} pool beside the others: closing the idle "
                    f"{'+'.join(self.pool_stages[engine_identity(other.cfg)])} pool to make room"
                )
                other.close()
            if not idle:
                self._waiting_for_placement(stage, pool, since, now, alone=not any(p.ready for p in distinct))
            return  # one pool at a time, in stage order

    def _waiting_for_placement(self, stage: Stage, pool: Any, since: float, now: float, alone: bool) -> None:
        """Say once per wait what the pool waits for and which key bounds it; give up after the timeout."""
        timeout = self.cfg.ray.placement_timeout_s
        if self._starved_warned != (since, alone):  # once per wait, and again when what bounds it changes
            self._starved_warned = (since, alone)
            needs = ", ".join(f"{v:g} {k}" for k, v in pool.needs().items() if v) or "its resources"
            what = "place" if pool.started else "free resources for"
            bound = (
                f"gives up after ray.placement_timeout_s={timeout:g}s" if timeout is not None and alone
                else "waits while other pools work" if not alone else "waits for ever (ray.placement_timeout_s=null)"
            )  # fmt: skip
            self.progress.say(
                f"[executor] waiting for the cluster to {what} the {stage.name} pool ({needs} for "
                f"{pool.cfg.replicas} replica(s); no node has them free); it {bound}"
            )
        if timeout is not None and alone and now - since > timeout and not self.stopping:
            self.stopping = (
                f"ray.placement_timeout_s={timeout:g}: no node could host the {stage.name} pool for {now - since:.0f}s"
            )
            self._stop_deadline = now + STOP_GRACE_S
            self.progress.say(f"[factory] {self.stopping}: stopping")

    def _dispatch(self, stages: list[Stage], queues: dict, pools: dict, calls: dict, metrics: dict) -> None:
        for stage in reversed(stages):  # downstream first: its work finishes groups
            pool = pools[stage.name]
            queue = queues[stage.name]
            while len(queue) and pool.ready and pool.capacity() > 0:
                attempt, work, rendered = queue.take(stage.batch_size)
                requests = work if rendered else stage.render(work)
                call_id = next(self._ids)
                expected = {key: i for i, r in enumerate(requests) for key in answered_keys(stage, r)}
                calls[call_id] = _Call(stage.name, requests, attempt, expected)
                pool.submit(call_id, stage.run_batch, requests, stage.batch_args)
                if metrics[stage.name].first_dispatch is None:
                    metrics[stage.name].first_dispatch = time.monotonic()

    def _on_event(self, event: Event, by_name: dict, calls: dict, queues: dict, writers: dict, metrics: dict) -> None:
        call = calls.get(event.call_id)
        if call is None:
            return
        stage = by_name[call.stage]
        m = metrics[call.stage]
        if event.kind == "rows":
            accepted = []
            for row in event.payload:
                key = row_key(row, stage.key)
                if key not in call.expected or key in call.received:
                    log.warning("%s: dropped a row nobody asked for (or twice): %s", stage.name, key)
                    continue
                call.received.add(key)
                accepted.append(row)
                writers[call.stage].add([row])
                prompt, completion = stage.tokens(row)
                cached = cached_tokens(row, prompt)
                ok, attempts = stage.ok(row), int(row.get("attempts") or 0)
                m.add(ok, attempts, prompt, completion, row.get("latency_s"), cached)
                self.live.row(stage.name, self._pool_names[stage.name], ok, attempts, prompt, completion)
                if self.budget is not None:
                    self.budget.charge(stage.name, prompt, completion, cached)
                    self.progress.extra[stage.name] = self.budget.label(stage.name)
            seen = getattr(stage, "seen", None)
            if seen is not None and accepted:
                seen(accepted)
            return
        del calls[event.call_id]
        lacking = sorted({i for key, i in call.expected.items() if key not in call.received})
        missing = [call.requests[i] for i in lacking]  # a request that answers several keys goes back whole
        error = event.payload
        if not missing and event.kind == "done" and error is None:
            return
        if error and error.startswith(FATAL):
            self.fatal = f"{call.stage}: {error.split(': ', 1)[-1]}"
            return
        if self.stopping or self.fatal or not missing:
            return  # abandoned (a resume asks again), or nothing of the call is lost
        error = error or f"the batch returned no row for {len(missing)} request(s)"
        if call.attempt < stage.engine.max_retries:
            queues[call.stage].extend(missing, attempt=call.attempt + 1, rendered=True)
            m.retried_calls += 1
            return
        for row in stage.failed(missing, f"failed after {call.attempt + 1} attempts: {error}"):
            writers[call.stage].add([row])
            m.add(False, int(row.get("attempts") or 0), 0, 0, None)
            self.live.row(stage.name, self._pool_names[stage.name], False, int(row.get("attempts") or 0), 0, 0)

    def _report_in_flight(self, stages: list[Stage], calls: dict[int, _Call]) -> None:
        """The requests each stage has sent and not had back yet, to the live metrics (Ray's gauge)."""
        waiting = dict.fromkeys((s.name for s in stages), 0)
        for call in calls.values():
            waiting[call.stage] += len(call.expected) - len(call.received)
        for name, n in waiting.items():
            if self._in_flight.get(name, 0) != n:  # 0 before the first dispatch: nothing to report, Ray may not be up
                self._in_flight[name] = n
                self.live.in_flight(name, self._pool_names[name], n)

    def _backend_alive(self) -> bool:
        """While stopping: whether the backend can still hand back the requests in flight (checked every 0.5 s)."""
        now = time.monotonic()
        if now < self._next_alive_check:
            return True
        self._next_alive_check = now + 0.5
        return self.backend.alive()

    # -- signals -----------------------------------------------------------------------------------
    def _install_signals(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def handler(signum: int, frame: Any) -> None:
            name = signal.Signals(signum).name
            if self.stopping and self.stopping != BUDGET:
                os._exit(128 + signum)  # the second signal: at once
            self.stopping = name
            self._stop_deadline = time.monotonic() + STOP_GRACE_S
            self.progress.say(
                f"[factory] {name}: stopping: no new requests, storing what has finished "
                f"(waiting up to {STOP_GRACE_S:g}s for requests in flight; a second {name} quits at once)"
            )

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

        def restore() -> None:
            for sig, old in previous.items():
                signal.signal(sig, old)

        return restore

    # -- metrics -----------------------------------------------------------------------------------
    def metrics_json(self) -> dict[str, Any]:
        """metrics.json: per stage (summed over every run() of this executor), per pool, and the overlap."""
        stages: dict[str, StageMetrics] = {}
        for m in self.history:
            total = stages.setdefault(m.name, StageMetrics(m.name))
            for name in ("planned", "rows", "ok", "failed", "requests", "retried_calls", "prompt_tokens",
                         "cached_tokens", "completion_tokens", "parts_written", "merges"):  # fmt: skip
                setattr(total, name, getattr(total, name) + getattr(m, name))
            total.latencies += m.latencies
            if m.first_dispatch is not None:
                total.first_dispatch = min(total.first_dispatch or m.first_dispatch, m.first_dispatch)
            if m.last_row is not None:
                total.last_row = max(total.last_row or m.last_row, m.last_row)
        out = {name: m.as_dict(self.t0) for name, m in stages.items()}
        pools = {
            "+".join(self.pool_stages[identity]): {
                "engine": pool.cfg.kind, "replicas": pool.cfg.replicas, "starts": pool.starts,
                "start_s": round(pool.start_s, 3) or None, "first_ready_s": round(pool.first_ready_s, 3) or None,
                "restarts": pool.restarts,
            }
            for identity, pool in self.pools.items()
        }  # fmt: skip
        return {
            "stages": out,
            "pools": pools,
            "overlap_s": overlap_s(list(out.values())),
            "wall_s": round(time.monotonic() - self.t0, 3),
            **({"spend": self.budget.as_dict()} if self.budget is not None else {}),
        }
