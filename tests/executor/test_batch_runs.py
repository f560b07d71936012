"""`factory run` with engine.batch (in process, the local executor) against the loopback batch routes:
a driver killed while its sample batch runs at the provider is resumed by polling the stored batch id,
the server sees every request once, the manifest counts each request once, and the spend is priced at
the batch rate."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import yaml

from factory.executor.budget import usd
from factory.graph import RunGraph
from factory.config import load
from factory.rundir.schemas import BATCHES
from factory.rundir.store import RunStore
from factory.run import run
from tests.engines.batch_server import BatchServer
from tests.synthetic import write_prompts

ROOT = Path(__file__).resolve().parents[2]
PRICES = {"input_usd_per_m": 1.0, "output_usd_per_m": 4.0}


def write_config(tmp_path: Path, url: str, n_prompts: int = 4, batch: bool = True) -> Path:
    prompts = write_prompts(tmp_path / "prompts.jsonl", n_prompts)
    rubric = tmp_path / "rubric.txt"
    rubric.write_text("Rate {answer} from 0 to {scale_max}.")
    engine = {"kind": "openai", "base_url": f"{url}/v1", "model": "fake", "batch": batch, "batch_poll_s": 0.05,
              "batch_size": 64, "max_retries": 1, "backoff_s": 0.01, "request_timeout_s": 10}  # fmt: skip
    cfg = {
        "output_dir": str(tmp_path / "run"),
        "prompts": {"path": str(prompts)},
        "sampler": {"k": 2, "engine": engine, "sampling": {"max_tokens": 32}},
        "judge": {"engine": engine, "rubric_file": str(rubric), "sampling": {"max_tokens": 32}},
        "cost": {"sampler": PRICES, "judge": PRICES},
        "progress_interval_s": 1,
        "store": {"flush_s": 0.2},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


DRIVER = (
    "import sys; from factory.config import load; from factory.run import run; run(load(sys.argv[1]), backend='local')"
)


def test_a_run_killed_while_its_batch_runs_resumes_by_polling_it_and_pays_each_request_once(tmp_path):
    with BatchServer(plans=["hold"]) as server:
        config = write_config(tmp_path, server.url)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": ""}
        driver = subprocess.Popen(
            [sys.executable, "-c", DRIVER, str(config)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 90
            while server.polls < 2 and time.monotonic() < deadline and driver.poll() is None:
                time.sleep(0.05)
            alive = driver.poll() is None
        finally:
            os.killpg(driver.pid, signal.SIGKILL)
            output = driver.communicate(timeout=10)[0]
        assert alive and server.creates == 1 and server.downloads == 0, output
        assert not (tmp_path / "run" / "samples").exists()  # nothing came back before the kill
        server.release()
        result = run(load(config), backend="local", take_over=True)
        sample_lines = server.inputs["batch_0"]
        assert len(sample_lines) == 8  # 4 prompts x k=2, one batch
        assert server.chats == 0 and set(server.lines.values()) == {1}  # every request reached the server once
        assert sum(len(lines) for lines in server.inputs.values()) == 16  # 8 samples + 8 judgments
        assert result["counts"]["samples_ok"] == 8 and result["counts"]["judgments_ok"] == 8
        assert result["requests"]["sampler"] == 8 and result["requests"]["judge"] == 8
        spend = result["spend"]
        tokens = spend["stages"]["sample"]
        half = {k: v / 2 for k, v in PRICES.items()}
        assert tokens["usd"] == pytest.approx(
            (tokens["prompt_tokens"] * half["input_usd_per_m"] + tokens["completion_tokens"] * half["output_usd_per_m"])
            / 1e6
        )
        assert tokens["prompt_tokens"] == 8 * 7 and tokens["usd"] > 0
        again = run(load(config), backend="local")
        assert again["requests"] == {"sampler": 0, "judge": 0} and server.creates == len(server.inputs)


def test_batch_mode_is_priced_at_the_batch_rate(tmp_path):
    batch = load(write_config(tmp_path, "http://127.0.0.1:9", batch=True))
    plain = load(write_config(tmp_path, "http://127.0.0.1:9", batch=False))
    assert usd(1e6, 1e6, RunGraph(batch, stored={}).prices()["sample"]) == pytest.approx(2.5)  # (1 + 4) x (1 - 0.5)
    assert usd(1e6, 1e6, RunGraph(plain, stored={}).prices()["sample"]) == pytest.approx(
        5.0
    )  # not by batch: the list prices
    deeper = load(write_config(tmp_path, "http://127.0.0.1:9"), ["cost.judge.batch_discount=0.75"])
    assert usd(1e6, 1e6, RunGraph(deeper, stored={}).prices()["judge"]) == pytest.approx(1.25)
    with pytest.raises(Exception, match=r"cost\.judge\.batch_discount: must be in \[0, 1\]"):
        load(write_config(tmp_path, "http://127.0.0.1:9"), ["cost.judge.batch_discount=1.5"])


def test_the_batch_rate_takes_the_discount_off_the_cached_input_price_too(tmp_path):
    cached = ["cost.sampler.cached_input_per_m=0.25"]
    batch = load(write_config(tmp_path, "http://127.0.0.1:9", batch=True), cached)
    plain = load(write_config(tmp_path, "http://127.0.0.1:9", batch=False), cached)
    # 1M prompt tokens all served from the cache, no output: the cached price, halved by batch
    assert usd(1e6, 0, RunGraph(plain, stored={}).prices()["sample"], cached_tokens=1e6) == pytest.approx(0.25)
    assert usd(1e6, 0, RunGraph(batch, stored={}).prices()["sample"], cached_tokens=1e6) == pytest.approx(0.125)


@pytest.mark.slow
def test_on_ray_the_replica_journals_its_batches_into_the_run_directory(tmp_path):
    with BatchServer() as server:
        config = write_config(tmp_path, server.url, n_prompts=2)
        result = run(load(config, ["ray.num_cpus=2", "sampler.engine.cpus_per_replica=0.5"]), backend="ray")
    assert result["counts"]["samples_ok"] == 4 and result["counts"]["judgments_ok"] == 4
    assert server.chats == 0 and set(server.lines.values()) == {1}
    stored = RunStore(str(tmp_path / "run")).read("batches", BATCHES)
    assert stored is not None and set(stored.filter(~pl.col("batch_id").str.starts_with("file:"))["batch_id"]) == set(
        server.inputs
    )
