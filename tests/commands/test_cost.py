"""Spend while running: tokens and dollars per stage in metrics, manifest and the progress line, and the
budget (cost.max_usd) that stops sending requests, keeps what finished and says how to go on."""

from __future__ import annotations

import io
import json

import polars as pl
import pytest

from factory import config as config_mod
from factory.config import ConfigError, StageCostConfig
from factory.executor.budget import BUDGET_EXIT, Budget
from factory.executor.core import BudgetExceeded
from factory.executor.progress import Progress, line
from factory.executor.metrics import StageMetrics
from factory.run import run
from factory.rundir.schemas import SAMPLES
from factory.rundir.store import RunStore
from tests.fakes import FakeEngine
from tests.synthetic import write_prompts


def test_budget_charges_each_stage_at_its_prices():
    budget = Budget({"sample": StageCostConfig(input_usd_per_m=1.0, output_usd_per_m=4.0)}, max_usd=0.01)
    budget.charge("sample", 1000, 1000)  # 0.001 + 0.004
    budget.charge("judge", 500, 10)  # not priced: tokens only
    assert budget.usd == pytest.approx(0.005) and not budget.exceeded()
    budget.charge("sample", 0, 1250)  # + 0.005
    assert budget.exceeded()
    spent = budget.as_dict()
    assert spent["prompt_tokens"] == 1500 and spent["completion_tokens"] == 2260
    # cached_tokens: the prompt tokens a server's prefix cache served (issue 24), none here
    assert spent["stages"]["judge"] == {"prompt_tokens": 500, "cached_tokens": 0, "completion_tokens": 10, "usd": 0.0}
    assert budget.label("sample") == "in 1000 out 2250 tok $0.0100 (all $0.0100 of $0.0100)"
    assert "Run the same command again" in budget.stop_message()


def config(tmp_path, *extra):
    prompts = write_prompts(tmp_path / "prompts.jsonl", 8)
    rubric = tmp_path / "rubric.txt"
    rubric.write_text("Rate {answer} from 0 to {scale_max}.")
    return config_mod.load(
        None,
        [f"output_dir={tmp_path / 'run'}", f"prompts.path={prompts}", "sampler.k=2", f"judge.rubric_file={rubric}",
         "sampler.engine.batch_size=2", "judge.engine.batch_size=2", "progress_interval_s=60", *extra],
    )  # fmt: skip


PRICED = ["cost.sampler.input_usd_per_m=1000", "cost.sampler.output_usd_per_m=1000",
          "cost.judge.input_usd_per_m=1000", "cost.judge.output_usd_per_m=1000"]  # fmt: skip


def test_a_run_reports_its_spend_in_metrics_and_manifest(tmp_path):
    engine = FakeEngine()
    manifest = run(config(tmp_path, *PRICED), backend="local", build=lambda _c: engine)
    spend = manifest["spend"]
    sampled = [r for r in engine.requests if r.json_schema is None]
    assert spend["stages"]["sample"]["prompt_tokens"] == 10 * len(sampled)  # the fake reports 10 per request
    tokens = spend["prompt_tokens"] + spend["completion_tokens"]
    assert spend["usd"] == pytest.approx(tokens * 1000 / 1e6)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["spend"] == spend


def test_the_budget_stops_sending_keeps_what_finished_and_a_rerun_goes_on(tmp_path):
    engine = FakeEngine()
    # every sample costs (10 + ~5 tokens) x $0.001 = ~$0.015: $0.02 is passed within the first batches
    cfg = config(tmp_path, *PRICED, "cost.max_usd=0.02")
    with pytest.raises(BudgetExceeded, match=r"budget reached: cost\.max_usd=0\.02.*Run the same command again"):
        run(cfg, backend="local", build=lambda _c: engine)
    stored = RunStore(str(tmp_path / "run")).read("samples", SAMPLES)
    sent = len(engine.requests)
    assert 2 <= stored.height < 16 and sent < 16 + 16  # stopped well before the 16 samples and their judgments
    assert stored["error"].null_count() == stored.height  # what was stored is whole, no failed row
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["spend"]["usd"] >= 0.02 and metrics["spend"]["max_usd"] == 0.02
    manifest = run(config(tmp_path, *PRICED), backend="local", build=lambda _c: engine)
    assert manifest["requests"]["sampler"] == 16 - stored.height  # only the missing keys
    assert manifest["counts"]["samples_ok"] == 16


CACHED_PRICES = {"sampler": (2.0, 8.0, 0.5), "judge": (1.0, 4.0, 0.25)}  # input, output, cached input per 1M


@pytest.mark.parametrize("style", ["openai", "deepseek"])
def test_cached_prompt_tokens_are_stored_per_row_and_priced_at_the_cached_rate(tmp_path, style):
    """A provider-like loopback server with a prefix cache: the K samples of a prompt after the first, and the
    judge requests sharing the rubric's opening words, are billed cached. Every row keeps its cached tokens; the
    spend (metrics, manifest, ledger totals) prices them at cost.*.cached_input_per_m."""
    from factory.rundir.schemas import JUDGMENTS
    from tests.engines.loopback import FakeModelServer

    prices = [
        f"cost.{stage}.{key}={value}"
        for stage, values in CACHED_PRICES.items()
        for key, value in zip(("input_usd_per_m", "output_usd_per_m", "cached_input_per_m"), values)
    ]
    engine = [f"{side}.engine.{o}" for side in ("sampler", "judge")
              for o in ("kind=openai", "model=fake", "max_retries=0")]  # fmt: skip
    with FakeModelServer(delay=0.0, cache=style) as server:
        cfg = config(tmp_path, *prices, *engine, f"sampler.engine.base_url={server.url}/v1",
                     f"judge.engine.base_url={server.url}/v1")  # fmt: skip
        manifest = run(cfg, backend="local")
        reported = sum(server.cached_reported)
    store = RunStore(str(tmp_path / "run"))
    samples, judgments = store.read("samples", SAMPLES), store.read("judgments", JUDGMENTS)
    assert samples.height == 16 and judgments.height > 0
    for rows in (samples, judgments):
        assert rows["cached_tokens"].null_count() == 0
        assert (rows["cached_tokens"] <= rows["prompt_tokens"]).all()
    # The second sample of a prompt repeats its whole prompt: all of it cached.
    assert samples.filter(pl.col("cached_tokens") == pl.col("prompt_tokens")).height >= 8
    assert judgments["cached_tokens"].sum() > 0
    assert samples["cached_tokens"].sum() + judgments["cached_tokens"].sum() == reported > 0
    spend = manifest["spend"]
    for stage, rows, key in (("sample", samples, "sampler"), ("judge", judgments, "judge")):
        inp, outp, cached_price = CACHED_PRICES[key]
        columns = ("prompt_tokens", "cached_tokens", "completion_tokens")
        prompt, cached, completion = (int(rows[c].sum()) for c in columns)
        expected = ((prompt - cached) * inp + cached * cached_price + completion * outp) / 1e6
        assert spend["stages"][stage]["cached_tokens"] == cached
        assert spend["stages"][stage]["usd"] == pytest.approx(expected, abs=1e-6)
        assert manifest["totals"]["stages"][stage]["cached_tokens"] == cached
        assert manifest["totals"]["stages"][stage]["usd"] == pytest.approx(expected, abs=1e-6)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["stages"]["sample"]["cached_tokens"] == int(samples["cached_tokens"].sum())


def test_unset_cached_price_charges_cached_tokens_at_the_input_price():
    full = Budget({"sample": StageCostConfig(input_usd_per_m=2.0)})
    full.charge("sample", 1000, 0, cached_tokens=600)
    cheap = Budget({"sample": StageCostConfig(input_usd_per_m=2.0, cached_input_per_m=0.5)})
    cheap.charge("sample", 1000, 0, cached_tokens=600)
    assert full.usd == pytest.approx(0.002) and cheap.usd == pytest.approx((400 * 2.0 + 600 * 0.5) / 1e6)
    assert cheap.as_dict()["cached_tokens"] == 600
    assert cheap.label("sample").startswith("in 1000 (600 cached) out 0 tok")


def test_the_cli_exits_3_with_the_message(monkeypatch, capsys, tmp_path):
    from factory import cli

    def stopped(cfg, **_):
        raise BudgetExceeded("budget reached: cost.max_usd=1, ...; Run the same command again to go on")

    monkeypatch.setattr("factory.run.run", stopped)
    assert cli.main(["run", str(tmp_path / "none.yaml")]) == 2  # a missing config is still a config error
    cfg = tmp_path / "c.yaml"
    cfg.write_text("cost:\n  max_usd: 1\n")
    assert cli.main(["run", str(cfg)]) == BUDGET_EXIT == 5
    assert "Run the same command again" in capsys.readouterr().err


def test_a_budget_that_could_never_be_reached_is_refused_before_any_request(tmp_path):
    with pytest.raises(ConfigError, match=r"cost\.max_usd: must be > 0 or null"):
        config(tmp_path, "cost.max_usd=0")
    engine = FakeEngine()
    with pytest.raises(ConfigError, match=r"^cost\.max_usd: 5 is set but no stage has a price"):
        run(config(tmp_path, "cost.max_usd=5"), backend="local", build=lambda _c: engine)
    assert engine.requests == []


def test_the_progress_line_carries_the_spend():
    progress = Progress(60, stream=io.StringIO(), live=False)
    m = StageMetrics("sample", planned=2)
    budget = Budget({"sample": StageCostConfig(output_usd_per_m=2.0)})
    budget.charge("sample", 100, 20000)
    progress.extra["sample"] = budget.label("sample")
    assert line(m, progress.extra["sample"]).endswith("| in 100 out 20.0k tok $0.0400 (all $0.0400)")
