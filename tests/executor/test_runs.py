"""`factory run` on the Ray executor against loopback model servers that count every request: stages
overlap, a kill -9 resumes exactly, Ctrl-C stops cleanly, two runs never write one directory, and
compaction keeps a run growable. The sampler and the judge each have their own server (so their own
pool), answering after a fixed delay (tests/engines/loopback.py: FakeModelServer).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import yaml

from factory.rundir.hashing import derive_seed
from tests.engines.loopback import FakeModelServer
from tests.synthetic import write_prompts

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def write_config(tmp_path: Path, sampler: str, judge: str, n_prompts: int = 8, **extra) -> Path:
    prompts = write_prompts(tmp_path / "prompts.jsonl", n_prompts)
    rubric = tmp_path / "rubric.txt"
    rubric.write_text("Rate {answer} from 0 to {scale_max}.")

    def engine(url: str) -> dict:
        return {"kind": "openai", "base_url": f"{url}/v1", "model": "fake", "parallel": 2, "batch_size": 2,
                "cpus_per_replica": 0.25, "max_retries": 1, "request_timeout_s": 30}  # fmt: skip

    cfg = {
        "output_dir": str(tmp_path / "run"),
        "prompts": {"path": str(prompts)},
        "sampler": {"k": 2, "engine": engine(sampler), "sampling": {"max_tokens": 32}},
        "judge": {"engine": engine(judge), "rubric_file": str(rubric), "sampling": {"max_tokens": 32}},
        "progress_interval_s": 1,
        "store": {"flush_s": 1},
        **extra,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def start(config: Path, *args: str) -> subprocess.Popen:
    """`factory run` in a new session, as a terminal runs a command (Ctrl-C reaches its process group)."""
    env = {**os.environ, "RAY_ADDRESS": "", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "factory.cli", "run", str(config), *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip


def wait_until(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def quiet(*servers: FakeModelServer, seconds: float = 3.0) -> None:
    """Wait until no server has received a request for `seconds`: the actors of a killed driver go on
    for a moment (they are processes of their own) until Ray ends its job."""
    while True:
        counts = [len(s.chat_requests()) for s in servers]
        time.sleep(seconds)
        if counts == [len(s.chat_requests()) for s in servers]:
            return


def keys(run: Path, table: str) -> list[tuple]:
    frame = pl.read_parquet(run / table) if list((run / table).glob("*.parquet")) else pl.DataFrame()
    if not frame.height:
        return []
    columns = ["prompt_id", "sample_idx"] + (["vote"] if table == "judgments" else [])
    return sorted(frame.select(columns).rows())


@pytest.fixture()
def servers():
    with FakeModelServer(delay=0.3) as sampler, FakeModelServer(delay=0.3) as judge:
        yield sampler, judge


def test_judging_overlaps_sampling_on_separate_pools(servers, tmp_path):
    from factory import config
    from factory.run import run

    sampler, judge = servers
    manifest = run(config.load(write_config(tmp_path, sampler.url, judge.url, n_prompts=8)))
    assert manifest["requests"] == {"sampler": 16, "judge": 16}
    # a judge request reached its server before the sampler's last request did
    assert min(judge.chat_times()) < max(sampler.chat_times())
    assert manifest["timings"]["overlap"] > 0 and sorted(manifest["pools"]) == ["judge", "sample"]


def test_kill_9_during_overlap_then_an_exact_resume(servers, tmp_path):
    sampler, judge = servers
    config = write_config(tmp_path, sampler.url, judge.url, n_prompts=10)
    process = start(config)
    wait_until(lambda: len(judge.judge_requests()) >= 3)
    assert len(sampler.sample_requests()) < 20, "sampling ended before the kill: no overlap to test"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    quiet(sampler, judge)
    run = tmp_path / "run"
    samples_after_kill, judged_after_kill = keys(run, "samples"), keys(run, "judgments")
    sent_before = len(sampler.sample_requests()), len(judge.judge_requests())

    resumed = start(config)
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    # Exactly the missing keys were asked the second time, each stored once.
    assert len(sampler.sample_requests()) - sent_before[0] == 20 - len(samples_after_kill)
    assert len(judge.judge_requests()) - sent_before[1] == 20 - len(judged_after_kill)
    assert keys(run, "samples") == sorted({(f"p{i}", j) for i in range(10) for j in range(2)})
    assert keys(run, "judgments") == sorted({(f"p{i}", j, 0) for i in range(10) for j in range(2)})
    # Every judgment is of the sample row that is stored (never of one that was lost and asked again).
    samples = pl.read_parquet(run / "samples").select("prompt_id", "sample_idx", pl.col("created_at").alias("stored"))
    judgments = pl.read_parquet(run / "judgments").join(samples, on=["prompt_id", "sample_idx"])
    assert judgments.height == 20 and (judgments["sample_created_at"] == judgments["stored"]).all()


def test_ctrl_c_stops_within_seconds_keeps_what_finished_and_resumes(servers, tmp_path):
    sampler, judge = servers
    config = write_config(tmp_path, sampler.url, judge.url, n_prompts=12)
    process = start(config)
    wait_until(lambda: len(sampler.replied) >= 4)
    os.killpg(process.pid, signal.SIGINT)  # what a terminal sends on Ctrl-C
    stopped_at = time.monotonic()
    out, _ = process.communicate(timeout=60)
    assert time.monotonic() - stopped_at < 12, out
    assert process.returncode == 130, out
    assert "SIGINT: stopping" in out and "run the same command again to resume" in out
    replied = {seed for _, seed, is_judge in sampler.replied if not is_judge}
    stored = set(keys(tmp_path / "run", "samples"))
    seeds = {derive_seed(0, p, i): (p, i) for p, i in stored}
    assert len(stored) >= 4 and set(seeds) <= replied  # what finished is stored (and only real replies)
    resumed = start(config)
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    assert len(keys(tmp_path / "run", "samples")) == 24 and len(sampler.sample_requests()) <= 24 + 4


def test_two_runs_on_one_directory_one_refuses_and_nothing_is_paid_twice(servers, tmp_path):
    sampler, judge = servers
    config = write_config(tmp_path, sampler.url, judge.url, n_prompts=4)
    first, second = start(config), start(config)
    outs = [p.communicate(timeout=300)[0] for p in (first, second)]
    codes = sorted(p.returncode for p in (first, second))
    assert codes == [0, 3], outs
    assert any("is being written by" in out for out in outs)
    assert len(sampler.sample_requests()) == 8 and len(judge.judge_requests()) == 8


def test_kill_9_mid_batch_keeps_every_reply_older_than_the_flush_bound(servers, tmp_path):
    sampler, judge = servers
    sampler.delay = 0.5
    config = write_config(tmp_path, sampler.url, judge.url, n_prompts=16)
    process = start(config)
    wait_until(lambda: len(sampler.replied) >= 12)
    killed_at = time.time()
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    flush_s = 1.0
    # A reply that reached the run more than flush_s (+ a second of slack for the poll) before the
    # kill is stored; requests in flight and the last flush window may be lost.
    old = {seed for at, seed, is_judge in sampler.replied if not is_judge and at < killed_at - flush_s - 1.0}
    seeds = {derive_seed(0, f"p{i}", j): (f"p{i}", j) for i in range(16) for j in range(2)}
    stored = set(keys(tmp_path / "run", "samples"))
    assert old and {seeds[s] for s in old} <= stored


def test_compaction_then_growth_asks_only_for_the_new_keys(servers, tmp_path):
    from factory import config as config_mod
    from factory.cli import main
    from factory.run import run

    sampler, judge = servers
    path = write_config(tmp_path, sampler.url, judge.url, n_prompts=6)
    run(config_mod.load(path, ["prompts.limit=3"]))
    run(config_mod.load(path, ["prompts.limit=4"]))  # two runs: at least two parts per table
    assert main(["compact", str(tmp_path / "run")]) == 0
    assert len(list((tmp_path / "run" / "samples").glob("*.parquet"))) == 1
    before = len(sampler.sample_requests())
    manifest = run(config_mod.load(path, []))
    assert manifest["requests"]["sampler"] == 4 and len(sampler.sample_requests()) - before == 4  # p4, p5 x K=2
    assert len(keys(tmp_path / "run", "samples")) == 12
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["counts"]["samples_ok"] == 12


def test_a_faulty_server_every_attempt_counted_and_every_key_stored_once(tmp_path):
    """Faults mixed into the sampler's replies: each is one request's own retry; the manifest's request
    count equals what the server received, and no sample is missing or doubled."""
    from factory import config
    from factory.run import run
    from tests.engines.loopback import ScriptedServer, dropped, malformed, no_choices, null_content, ok, server_error

    answer = ok("<think>fine</think>a short answer")
    script = [server_error(500), answer, malformed(), answer, dropped(), no_choices(), answer, null_content(), answer]
    with ScriptedServer(script) as sampler, FakeModelServer(delay=0.05) as judge:
        path = write_config(tmp_path, sampler.url, judge.url, n_prompts=6)
        # Five faults, five retries each: however two requests in flight share out the script's steps, no
        # request runs out of attempts, so every fault costs exactly one more request (with three retries
        # one request could meet four faults in a row and fail: seen once in CI).
        overrides = ["sampler.engine.max_retries=5", "sampler.engine.backoff_s=0.05"]
        manifest = run(config.load(path, overrides))
        received = len(sampler.chat_requests())
    assert manifest["requests"]["sampler"] == received == 12 + 5  # 12 samples + 5 faulty replies retried
    assert keys(tmp_path / "run", "samples") == sorted({(f"p{i}", j) for i in range(6) for j in range(2)})
    assert manifest["counts"]["samples_failed"] == 0


def test_a_refused_key_stops_the_run_stores_no_sample_and_names_the_variable(tmp_path, monkeypatch):
    from tests.engines.loopback import ScriptedServer, unauthorized

    monkeypatch.setenv("FACTORY_TEST_KEY", "sk-test-secret-998877")
    with ScriptedServer([unauthorized(401)]) as sampler, FakeModelServer(delay=0.05) as judge:
        config = write_config(tmp_path, sampler.url, judge.url, n_prompts=6)
        process = start(config, "sampler.engine.api_key_env=FACTORY_TEST_KEY")
        out, _ = process.communicate(timeout=180)
        received = len(sampler.chat_requests())
    assert process.returncode == 4, out
    assert "factory: stopped: sample: " in out and "engine.api_key_env" in out and "FACTORY_TEST_KEY" in out
    assert "sk-test-secret-998877" not in out
    assert received <= 2  # the requests in flight when the first 401 came back; nothing after
    assert keys(tmp_path / "run", "samples") == [] and len(judge.chat_requests()) == 0
