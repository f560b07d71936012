"""What a run directory has cost in all (factory/rundir/ledger.py): manifest.json and metrics.json keep the
totals of every invocation beside this invocation's share; a rerun with nothing to do adds zero and removes
nothing, a run stopped by the budget is counted, `factory pairs` keeps them, the page reads them."""

from __future__ import annotations

import json

import pytest

from factory import config
from factory.executor.core import BudgetExceeded
from factory.run import run
from tests.fakes import FakeEngine
from tests.synthetic import write_prompts

PRICED = ["cost.sampler.input_usd_per_m=1000", "cost.sampler.output_usd_per_m=1000",
          "cost.judge.input_usd_per_m=500", "cost.judge.output_usd_per_m=2000"]  # fmt: skip


def cfg_for(tmp_path, *extra):
    prompts = write_prompts(tmp_path / "prompts.jsonl", 6)
    rubric = tmp_path / "rubric.txt"
    rubric.write_text("Rate {answer} from 0 to {scale_max}.")
    return config.load(
        None,
        [f"output_dir={tmp_path / 'run'}", f"prompts.path={prompts}", "sampler.k=2", f"judge.rubric_file={rubric}",
         "sampler.engine.batch_size=2", "judge.engine.batch_size=2", "progress_interval_s=60", *PRICED, *extra],
    )  # fmt: skip


def local(cfg, engine):
    return run(cfg, backend="local", build=lambda _c: engine, command="factory run test")


def read(tmp_path, name):
    return json.loads((tmp_path / "run" / name).read_text())


def test_a_rerun_with_nothing_to_do_keeps_the_totals_and_adds_zero(tmp_path):
    engine = FakeEngine(latency=0.002)
    first = local(cfg_for(tmp_path), engine)
    metrics_first = read(tmp_path, "metrics.json")
    sent = len(engine.requests)
    totals = first["totals"]
    assert totals["requests"] == sent == first["requests"]["sampler"] + first["requests"]["judge"] > 0
    assert totals["requests_by_key"] == first["requests"]
    assert totals["usd"] == pytest.approx(first["spend"]["usd"]) and totals["usd"] > 0
    assert totals["prompt_tokens"] == first["spend"]["prompt_tokens"] > 0
    assert totals["stages"]["sample"]["wall_s"] > 0 and totals["wall_s"] > 0
    assert first["this_run"]["requests"] == sent

    second = local(cfg_for(tmp_path), engine)
    assert len(engine.requests) == sent  # nothing was asked again
    assert second["requests"] == {"sampler": 0, "judge": 0}  # the contract: this invocation's requests
    assert second["totals"] == totals  # the run directory's cost, whole
    this = second["this_run"]
    assert this["requests"] == this["prompt_tokens"] == this["completion_tokens"] == 0 and this["usd"] == 0
    assert this["wall_s"] == 0
    metrics = read(tmp_path, "metrics.json")
    assert metrics["stages"]["sample"]["requests"] == 0  # metrics.json's own numbers: this invocation
    assert metrics["totals"] == metrics_first["totals"]
    rate = metrics["totals"]["stages"]["sample"]["tokens_per_s"]
    assert rate and rate == metrics_first["totals"]["stages"]["sample"]["tokens_per_s"]
    history = second["history"]
    assert len(history) == 2 and history[0]["usd"] == pytest.approx(totals["usd"]) and history[1]["usd"] == 0
    assert history[0]["tokens"]["prompt_tokens"] == totals["prompt_tokens"]
    assert history[1]["tokens"]["prompt_tokens"] == 0


def test_a_run_stopped_by_the_budget_is_counted_in_the_totals_of_the_next(tmp_path):
    engine = FakeEngine()
    with pytest.raises(BudgetExceeded):
        local(cfg_for(tmp_path, "cost.max_usd=0.02"), engine)
    stopped = read(tmp_path, "metrics.json")  # the stopped invocation wrote no manifest, but its metrics
    assert stopped["spend"]["usd"] > 0 and stopped["totals"]["usd"] == pytest.approx(stopped["spend"]["usd"], abs=1e-6)
    done = local(cfg_for(tmp_path), engine)
    sampled = [r for r in engine.requests if r.json_schema is None]
    assert done["totals"]["stages"]["sample"]["requests"] == len(sampled) == 12  # every key once, both invocations
    assert done["totals"]["requests"] == len(engine.requests)
    assert done["totals"]["usd"] == pytest.approx(stopped["spend"]["usd"] + done["spend"]["usd"], abs=1e-6)
    assert done["this_run"]["requests"] == len(engine.requests) - stopped["totals"]["requests"]


def test_factory_pairs_keeps_the_totals_and_adds_nothing(tmp_path):
    from factory.commands.rebuild import rebuild_pairs

    first = local(cfg_for(tmp_path), FakeEngine())
    written, _ = rebuild_pairs(str(tmp_path / "run"), ["pairs.w_len=0.2"])
    assert written["totals"] == first["totals"]
    assert written["this_run"]["requests"] == 0 and written["this_run"]["requests_by_key"] == {"sampler": 0, "judge": 0}


def test_the_page_reads_the_run_directorys_totals(tmp_path):
    """A rerun that changes only the pair settings (no request) rebuilds the page: it still says what the run
    directory cost, not this invocation's zero."""
    first = local(cfg_for(tmp_path), FakeEngine())
    local(cfg_for(tmp_path, "pairs.w_len=0.3"), FakeEngine())
    page = (tmp_path / "run" / "report" / "index.html").read_text()
    total = first["totals"]["requests"]
    assert f'<div class="v">{total:,}</div><div class="k">requests (all invocations)</div>' in page
    assert "every invocation of this run directory" in page


def test_ledgers_add_per_stage_and_pool():
    from factory.rundir import ledger

    one = ledger.invocation(
        {"stages": {"sample": {"requests": 3, "rows": 3, "ok": 3, "prompt_tokens": 30, "cached_tokens": 10,
                               "completion_tokens": 60, "wall_s": 2.0}},
         "pools": {"sample": {"starts": 1, "start_s": 4.0}}, "wall_s": 9.0,
         "spend": {"stages": {"sample": {"usd": 0.5}}}}
    )  # fmt: skip
    idle = ledger.invocation({"stages": {"sample": {"wall_s": 0.0}}, "pools": {}, "wall_s": 3.0})
    both = ledger.add(ledger.add(ledger.empty(), one), idle)
    assert both["stages"]["sample"] == {"requests": 3, "rows": 3, "ok": 3, "failed": 0, "prompt_tokens": 30,
                                        "cached_tokens": 10, "completion_tokens": 60, "usd": 0.5, "wall_s": 2.0,
                                        "tokens_per_s": 30.0}  # fmt: skip
    assert both["wall_s"] == 9.0 and both["usd"] == 0.5 and both["pools"] == {"sample": {"starts": 1, "start_s": 4.0}}
    assert ledger.base_totals({"stages": {}}, {"totals": both}) == both  # an old metrics.json: the manifest's


def test_the_run_summary_says_what_the_run_directory_cost_in_all(tmp_path):
    from factory.commands.summary import run_summary

    engine = FakeEngine()
    first = local(cfg_for(tmp_path), engine)
    again = local(cfg_for(tmp_path), engine)
    line = next(r for r in run_summary(again.manifest, again.scored).splitlines() if "run directory in all" in r)
    assert line.split("|")[2].strip().startswith(f"{first['totals']['requests']}, ") and "$" in line


def test_a_metrics_json_that_is_not_json_does_not_stop_a_run(tmp_path):
    first = local(cfg_for(tmp_path), FakeEngine())
    (tmp_path / "run" / "metrics.json").write_text("{cut")
    again = local(cfg_for(tmp_path), FakeEngine())
    assert again["totals"] == first["totals"]  # the manifest's totals, then
    kept = {k: v for k, v in first["totals"].items() if k != "requests_by_key"}  # the manifest's key only
    assert read(tmp_path, "metrics.json")["totals"] == kept


def test_a_driver_killed_outright_keeps_its_share_up_to_its_last_checkpoint(tmp_path):
    """SIGKILL leaves no time to write anything: the metrics.json the run wrote while it ran holds its share
    so far, and the next run adds its own to it (never more than the server was sent)."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from tests.engines.loopback import FakeModelServer

    root = Path(__file__).resolve().parents[2]
    with FakeModelServer(delay=0.25) as server:
        engine = ("kind=openai", "model=fake", "max_retries=0", "parallel=1", f"base_url={server.url}/v1")
        extra = [f"{side}.engine.{o}" for side in ("sampler", "judge") for o in engine]
        overrides = [f"output_dir={tmp_path / 'run'}", *extra]
        cfg_for(tmp_path)  # writes the prompts and the rubric
        args = [f"prompts.path={tmp_path / 'prompts.jsonl'}", f"judge.rubric_file={tmp_path / 'rubric.txt'}",
                "sampler.k=2", "progress_interval_s=60", *PRICED, *overrides]  # fmt: skip
        code = (
            "import sys; from factory import config; from factory.run import run; "
            "run(config.load(None, sys.argv[1:]), backend='local')"
        )
        env = {**os.environ, "PYTHONPATH": str(root)}
        process = subprocess.Popen([sys.executable, "-c", code, *args], cwd=root, env=env, start_new_session=True,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        metrics = tmp_path / "run" / "metrics.json"
        deadline = time.monotonic() + 60
        while not (metrics.exists() and json.loads(metrics.read_text())["totals"]["requests"] > 0):
            assert process.poll() is None and time.monotonic() < deadline, "no checkpoint before the run ended"
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        time.sleep(0.5)
        assert not (tmp_path / "run" / "manifest.json").exists()  # killed before it could write one
        killed = json.loads(metrics.read_text())["totals"]
        sent_before = len(server.chat_requests())
        assert 0 < killed["requests"] <= sent_before
        done = run(config.load(None, args), backend="local")
        sent = len(server.chat_requests())
    assert done["this_run"]["requests"] == sent - sent_before
    assert done["totals"]["requests"] == killed["requests"] + done["this_run"]["requests"] <= sent
    assert done["totals"]["usd"] == pytest.approx(killed["usd"] + done["this_run"]["usd"], abs=1e-6)
