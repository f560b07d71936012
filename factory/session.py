"""What every command that sends requests does around its stage graph, once (TRL's Trainer, datatrove's
executor.run): `factory run` and `factory eval` are a graph inside a session.

    with Session(cfg, cfg.output_dir, preflight=graph.preflight, prices=...) as session:
        session.say("[prompts] 30 valid, 2 invalid")
        done = session.run(graph.stages(prompts))        # the executor; Ray starts here, not before
        session.finish(Manifest(...))                    # metrics.json, then manifest.json

In order: preflight (before anything is touched) -> the output directory shown writable and the run's to
write (another tool's files, a home folder, a link out of it are refused: factory.rundir.guard; an error
names its key) -> secrets (the values of every api_key_env, scrubbed from every stored string) -> the lease
(one writer per directory) -> the budget (cost.max_usd) -> the small parts a killed run left, merged -> the
executor, started when the first graph runs, so a refusal found before (a degenerate prompt set) never
waits for Ray -> metrics.json -> manifest.json, a typed Manifest (factory/rundir/manifest.py) completed
here with the pools, spend, timings and history every command records.
Both files keep what the run directory has cost in all (`totals`) beside this invocation's share (`this_run`):
factory/rundir/ledger.py.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable

from factory.config import RunConfig
from factory.executor import Executor
from factory.executor.budget import Budget
from factory.executor.progress import Progress
from factory.rundir import ledger
from factory.rundir.guard import check_run_dir
from factory.rundir.lease import Lease
from factory.rundir.manifest import Manifest
from factory.rundir.secrets import scrub, scrub_all, scrub_table, secret_values
from factory.rundir.store import RunStore, open_output


class Session:
    """One requesting command's set-up and tear-down (see the module doc). `prices`: stage name -> its
    StageCostConfig, `price_keys`: stage name -> the config key of its prices; `output_key`: the config key
    named when the directory is not writable."""

    def __init__(
        self,
        cfg: RunConfig,
        output_dir: str,
        *,
        output_key: str = "output_dir",
        preflight: Callable[[], None] | None = None,
        prices: dict[str, Any] | None = None,
        price_keys: dict[str, str] | None = None,
        backend: str = "ray",
        build: Any = None,
        take_over: bool = False,
        command: str | None = None,
    ):
        self.cfg, self.output_dir, self.output_key = cfg, output_dir, output_key
        self._preflight, self.prices, self.price_keys = preflight, prices or {}, price_keys or {}
        self.backend, self.build, self.take_over, self.command = backend, build, take_over, command
        self.t0 = time.perf_counter()
        self.executor: Executor | None = None
        self.metrics: dict[str, Any] = {}
        self._closed = False
        self.store: RunStore
        self.previous: dict[str, Any] = {}
        self._said: set[str] = set()
        self.base_totals: dict[str, Any] = ledger.empty()
        self.this_run: dict[str, Any] = ledger.empty()

    # -- set-up ------------------------------------------------------------------------------------
    def __enter__(self) -> Session:
        if self._preflight is not None:
            self._preflight()
        self.store = open_output(self.output_dir, self.output_key)
        check_run_dir(self.store, self.output_key)  # another tool's files, $HOME, a link out of the directory
        self.secrets = secret_values(self.cfg)
        command = scrub(self.command or " ".join(["factory", *sys.argv[1:]]), self.secrets)
        self.lease = Lease(self.store, command, take_over=self.take_over)
        self.lease.__enter__()
        try:
            self.previous = self.store.read_json("manifest.json") or {}
            try:
                metrics = self.store.read_json("metrics.json")
            except ValueError:  # not JSON: no totals to go on from (it is replaced at the end)
                metrics = None
            self.base_totals = ledger.base_totals(metrics, self.previous)
            self.budget = Budget(self.prices, self.cfg.cost.max_usd, self.price_keys)
            self.progress = Progress(self.cfg.progress_interval_s)
            self._merge_leftovers()
        except BaseException:
            self.lease.__exit__(*sys.exc_info())
            raise
        return self

    def _merge_leftovers(self) -> None:
        """A killed run's small parts (its open part) merged before this run adds its own (factory.rundir.compact)."""
        from factory.rundir.compact import merge_leftovers

        for name, done in merge_leftovers(self.store, self.cfg.store.compact_mb).items():
            self.say(
                f"[store] {name}: merged the {done['parts_before']} small parts a stopped run left into "
                f"{done['parts_after']}"
            )

    def say(self, text: str) -> None:
        self.progress.say(text)

    def say_once(self, topic: str, text: str) -> None:
        """`say`, the first time `topic` comes up in this command (a `pairs.target` run has many rounds)."""
        if topic not in self._said:
            self._said.add(topic)
            self.say(text)

    def run(self, stages: list) -> dict[str, Any]:
        """Run a stage graph on the session's executor (started, with its pools, on the first call)."""
        if self.executor is None:
            secrets = self.secrets
            scrubber = (lambda table: scrub_table(table, secrets)) if secrets else None
            self.executor = Executor(
                self.store, self.cfg, backend=self.backend, build=self.build, progress=self.progress,
                scrub=scrubber, budget=self.budget,
            )  # fmt: skip
            self.executor.lease = self.lease
            executor = self.executor
            executor.checkpoint = lambda: self._write_metrics(executor)  # a driver killed outright keeps its share
        return self.executor.run(stages)

    # -- tear-down -----------------------------------------------------------------------------------
    def _close_executor(self) -> None:
        """metrics.json (scrubbed; this invocation's numbers and the directory's totals), then the pools go."""
        executor, self.executor = self.executor, None
        if executor is None:
            if not self._closed:
                self.progress.close()
            self._closed = True
            return
        try:
            self._write_metrics(executor)
        finally:
            executor.close()  # closes the progress too
            self._closed = True

    def _write_metrics(self, executor: Executor) -> None:
        """metrics.json: this invocation's numbers so far, and the totals it found plus its share."""
        self.metrics = executor.metrics_json()
        self.this_run = ledger.invocation(self.metrics)
        self.metrics["totals"] = ledger.add(self.base_totals, self.this_run)
        self.store.write_json("metrics.json", scrub_all(self.metrics, self.secrets))

    def finish(self, manifest: Manifest) -> dict[str, Any]:
        """Close the executor (metrics.json), complete the manifest (pools, spend, timings, history), scrub
        it and write manifest.json; returns it as written."""
        self._close_executor()
        totals = self.metrics.get("totals") or ledger.add(self.base_totals, self.this_run)
        keys = list(manifest.requests)
        manifest.totals = {**totals, "requests_by_key": ledger.requests_by_key(totals, keys)}
        manifest.this_run = {**self.this_run, "requests_by_key": ledger.requests_by_key(self.this_run, keys)}
        manifest.pools = self.metrics.get("pools", [])
        manifest.spend = self.budget.as_dict()  # this invocation's, as cost.max_usd counts it; totals.usd: in all
        manifest.timings = {
            **manifest.timings,
            "overlap": self.metrics.get("overlap_s", 0.0),
            "total": round(time.perf_counter() - self.t0, 3),
        }
        entry = {
            "at": time.time(), "requests": manifest.requests, "counts": manifest.counts,
            "tokens": {k: self.this_run[k] for k in ("prompt_tokens", "cached_tokens", "completion_tokens")},
            "usd": self.this_run["usd"], "wall_s": manifest.timings["total"],
        }  # fmt: skip
        manifest.history = (self.previous.get("history") or []) + [entry]
        written = scrub_all(manifest.to_dict(), self.secrets)
        self.store.write_json("manifest.json", written)
        return written

    def __exit__(self, *exc: Any) -> None:
        try:
            self._close_executor()
        finally:
            self.lease.__exit__(*exc)
