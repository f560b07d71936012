"""The executor core on the in-process backend: what is sent, what is stored, in what order, how often."""

from __future__ import annotations

import io
import time
import uuid

import polars as pl
import pytest

from factory.config import EngineConfig, RunConfig, StoreConfig
from factory.engines.base import FatalEngineError
from factory.executor import Executor, FatalRunError
from factory.executor.core import WorkQueue
from factory.executor.metrics import StageMetrics, overlap_s
from factory.executor.progress import Progress, line
from factory.rundir.store import RunStore
from tests.executor.echo import EchoStage
from tests.fakes import FakeEngine, Raise, Twice, tag_reply


def counting(script: dict | None = None, latency: float = 0.0) -> FakeEngine:
    """Answers `ok <key>` in request order, each request handed over as it finishes; `script` gives a key
    its fate: Raise(...) (the batch raises once this request is reached), Twice() (its completion is handed
    over twice), a list of those (one per attempt of that key)."""
    return FakeEngine(
        script, reply=tag_reply, latency=latency, shuffle=False, model_name="counting", supports_json_schema=False
    )


def engine_cfg(**kw) -> EngineConfig:
    return EngineConfig(**{"batch_size": 4, "max_retries": 2, **kw})


def memory_store() -> RunStore:
    return RunStore(f"memory://core-{uuid.uuid4().hex}")


def run_local(stages, engine, run_store=None, **cfg_kw):
    store = run_store or memory_store()
    cfg = RunConfig(progress_interval_s=60, **cfg_kw)
    builds = []

    def build(engine_config):
        builds.append(engine_config)
        return engine

    with Executor(store, cfg, backend="local", build=build, progress=Progress(60, stream=io.StringIO())) as ex:
        done = ex.run(stages)
        metrics = ex.metrics_json()
    return store, done, metrics, builds


def test_every_key_is_sent_once_and_stored_once_and_a_rerun_sends_nothing():
    engine = counting()
    store, done, _, _ = run_local([EchoStage(engine_cfg(), 10)], engine)
    assert sorted(engine.answered) == list(range(10))
    assert sorted(store.read("echo")["key"].to_list()) == list(range(10))
    assert done["echo"].requests == 10 and done["echo"].ok == 10
    _, again, _, builds = run_local([EchoStage(engine_cfg(), 10)], engine, store)
    assert sorted(engine.answered) == list(range(10)) and again["echo"].requests == 0
    assert builds == []  # nothing to do: no engine is even started


def test_a_raising_batch_resends_only_its_unfinished_requests():
    engine = counting({5: [Raise(RuntimeError("connection reset at 5")), None]})
    store, done, _, _ = run_local([EchoStage(engine_cfg(batch_size=8), 8)], engine)
    # keys 0-4 finished before the batch raised: never sent again; 5-7 sent on the retry
    assert sorted(engine.answered) == list(range(8))
    assert store.read("echo").filter(pl.col("error").is_not_null()).height == 0
    assert done["echo"].retried_calls == 1


def test_after_max_retries_the_unfinished_requests_are_stored_failed_with_the_reason():
    hung_up = Raise(RuntimeError("server hung up"))  # every batch raises after answering its first request
    always_raises = counting({1: [hung_up, None], 2: hung_up})
    store, done, _, _ = run_local([EchoStage(engine_cfg(batch_size=3, max_retries=1), 3)], always_raises)
    rows = {r["key"]: r for r in store.read("echo").to_dicts()}
    assert sorted(rows) == [0, 1, 2] and rows[0]["error"] is None
    # key 1 came back on the retry, key 2 never did: failed with the reason and the attempt count
    assert rows[1]["error"] is None
    assert rows[2]["error"] == "failed after 2 attempts: RuntimeError: server hung up"
    assert done["echo"].failed == 1


def test_a_row_given_twice_is_stored_once():
    store, _, _, _ = run_local([EchoStage(engine_cfg(), 4)], counting({2: Twice()}))
    assert sorted(store.read("echo")["key"].to_list()) == [0, 1, 2, 3]


def test_a_fatal_engine_error_stops_the_run_and_keeps_what_finished():
    engine = counting({6: Raise(FatalEngineError("HTTP 401: check engine.api_key_env (FACTORY_KEY)"))})
    store = memory_store()
    with pytest.raises(FatalRunError, match="engine.api_key_env"):
        run_local([EchoStage(engine_cfg(batch_size=4), 12)], engine, store)
    stored = store.read("echo")
    assert stored is not None and stored["error"].null_count() == stored.height  # no failed row stored
    assert 6 not in stored["key"].to_list()


def test_stages_with_the_same_engine_share_one_pool_and_one_engine():
    engine = counting()
    first = EchoStage(engine_cfg(batch_size=2), 6, name="up")
    second = EchoStage(engine_cfg(batch_size=3), 0, name="down", upstream="up")  # batch_size is per stage
    store, done, metrics, builds = run_local([first, second], engine)
    assert len(builds) == 1 and list(metrics["pools"]) == ["up+down"] and metrics["pools"]["up+down"]["starts"] == 1
    assert sorted(store.read("down")["key"].to_list()) == list(range(6))
    other = EchoStage(engine_cfg(batch_size=2, parallel=8), 0, name="down2", upstream="up")
    _, _, metrics, builds = run_local([EchoStage(engine_cfg(batch_size=2), 6, name="up"), other], counting())
    assert len(builds) == 2 and sorted(metrics["pools"]) == ["down2", "up"]


def test_a_downstream_stage_only_ever_sees_rows_that_are_stored():
    store = memory_store()
    seen_unstored = []

    class Checking(EchoStage):
        def follow(self, rows):
            stored = set(store.read("up")["key"].to_list())
            seen_unstored.extend(r["key"] for r in rows if r["key"] not in stored)
            return super().follow(rows)

    up = EchoStage(engine_cfg(batch_size=2), 20, name="up")
    run_local([up, Checking(engine_cfg(batch_size=2), 0, name="down", upstream="up")], counting(latency=0.01), store)
    assert seen_unstored == []
    assert sorted(store.read("down")["key"].to_list()) == list(range(20))


def test_small_flushes_are_merged_into_one_part_at_the_end():
    store = memory_store()
    # flush every 10 ms while 40 slow requests trickle in: many small parts, merged into one at the end
    _, done, metrics, _ = run_local(
        [EchoStage(engine_cfg(batch_size=1), 40)], counting(latency=0.005), store, store=StoreConfig(flush_s=0.01)
    )
    assert done["echo"].parts_written > 5 and metrics["stages"]["echo"]["parts_written"] == done["echo"].parts_written
    assert len(store.parts("echo")) == 1 and store.read("echo").height == 40


def test_work_queue_takes_retries_first_and_slices_frames():
    queue = WorkQueue()
    queue.extend(pl.DataFrame({"key": list(range(5))}))
    queue.extend([{"key": 9}], attempt=1, rendered=True)
    assert queue.take(4) == (1, [{"key": 9}], True)
    assert queue.take(3) == (0, [{"key": 0}, {"key": 1}, {"key": 2}], False)
    assert len(queue) == 2 and queue.take(4)[1] == [{"key": 3}, {"key": 4}] and len(queue) == 0


def test_progress_line_and_overlap():
    m = StageMetrics("sample", planned=4, feeding=True)
    m.first_dispatch = time.monotonic() - 2
    m.add(True, 1, 10, 100, 0.5)
    m.add(False, 2, 10, 0, None)
    text = line(m)
    assert text.startswith("[sample] 2/4+ (50%) failed 1 |") and "tok/s" in text and "waiting for" in text
    spans = [
        {"started_at": 0.0, "ended_at": 10.0},
        {"started_at": 4.0, "ended_at": 12.0},
        {"started_at": None, "ended_at": None},
    ]
    assert overlap_s(spans) == 6.0


def test_a_terminal_gets_a_live_bar_per_stage_with_counts_and_rates():
    out = io.StringIO()
    progress = Progress(1, stream=out, live=True)
    sample, judge = StageMetrics("sample", planned=40), StageMetrics("judge", planned=10, feeding=True)
    for m in (sample, judge):
        m.first_dispatch = time.monotonic() - 3
        progress.track(m)
    for _ in range(12):
        sample.add(True, 1, 10, 50, 0.1)
    judge.add(False, 1, 0, 5, 0.1)
    progress.tick()
    progress.close()
    text = out.getvalue()
    assert "sample" in text and "12/40 failed 0" in text and "tok/s" in text and "rows/s" in text
    assert "judge" in text and "1/10+ failed 1" in text  # still fed by an upstream stage: "+"


def test_a_target_run_shows_the_pairs_it_still_needs_and_its_spend():
    """pairs.target (issue 18): a bar of its own on a terminal, a line in logs."""
    out = io.StringIO()
    progress = Progress(1, stream=out, live=True)
    sample = StageMetrics("sample", planned=40)
    sample.first_dispatch = time.monotonic() - 3
    progress.track(sample)
    progress.pairs_target(1200, 15000, "spent $0.05 of $1.00")
    progress.pairs_target(15200, 15000, "spent $0.61 of $1.00")
    progress.close()
    text = out.getvalue()
    assert "pairs" in text and "15000/15000" not in text and "15200/15000" in text and "target met" in text
    assert "spent $0.61 of $1.00" in text
    logs = io.StringIO()
    plain = Progress(1, stream=logs, live=False)
    plain.pairs_target(1200, 15000, "")
    assert logs.getvalue() == "[pairs] 1200/15000 kept, 13800 still needed\n"
