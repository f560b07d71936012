"""`factory run` end to end on the embedded model and local Ray: 3 prompts x K=2, then a rerun."""

import json
import re
from pathlib import Path

import polars as pl
import pyarrow as pa

import pyarrow.parquet as pq
import pytest

from factory.cli import main
from factory.commands.rebuild import open_run
from factory.pairs.prejudge import passing
from factory.rundir.schemas import PAIRS

pytestmark = pytest.mark.slow

DEMO = Path(__file__).resolve().parents[2] / "conf" / "demo.yaml"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    prompts = root / "prompts.jsonl"
    lines = (DEMO.parent / "data" / "demo_prompts.jsonl").read_text().splitlines()
    bad = json.dumps({"id": "bad-x", "product_info": {"name": "Mug"}, "history": [], "question": "  "})
    prompts.write_text("\n".join(lines[:3] + [bad]) + "\n")
    out = root / "run"
    overrides = [
        f"output_dir={out}",
        f"prompts.path={prompts}",
        "sampler.k=2",
        "sampler.sampling.max_tokens=64",
        "judge.sampling.max_tokens=48",
        "progress_interval_s=0.5",
    ]
    assert main(["run", str(DEMO), *overrides]) == 0
    first = json.loads((out / "manifest.json").read_text())
    assert main(["run", str(DEMO), *overrides]) == 0
    second = json.loads((out / "manifest.json").read_text())
    return out, first, second


def out_of(run_dir):
    return run_dir[0]


def test_first_run_makes_every_request_once(run_dir):
    _, first, _ = run_dir
    counts = first["counts"]
    assert counts["prompts_in"] == 4 and counts["prompts_invalid"] == 1 and counts["prompts_valid"] == 3
    assert counts["samples_ok"] + counts["samples_failed"] == 6
    assert first["requests"]["sampler"] == 6
    judgments = pa.concat_tables([pq.read_table(p) for p in (out_of(run_dir) / "judgments").glob("*.parquet")])
    samples = pa.concat_tables([pq.read_table(p) for p in (out_of(run_dir) / "samples").glob("*.parquet")])
    # the samples the pair filters that need no judge let through (truncated, duplicates... are never judged)
    stored = (out_of(run_dir) / "prompts").glob("*.parquet")
    prompts = pl.from_arrow(pa.concat_tables([pq.read_table(p) for p in stored]))
    pairs_cfg = open_run(str(out_of(run_dir)))[0].pairs
    # the demo's copies_prompt filter reads the prompt's own text, as the judges' prefilter does
    judgeable = passing(pl.from_arrow(samples), pairs_cfg, prompts)["exclusion"].is_null().sum()
    # one judgment per judgeable sample; every request the judge sent counted (re-asks included)
    assert judgments.num_rows == counts["judgments_ok"] + counts["judgments_failed"] == judgeable
    assert first["requests"]["judge"] == sum(judgments.column("attempts").to_pylist())
    groups = first["pairs"]["groups_by_outcome"]
    assert sum(groups.values()) == counts["groups"] == 3 and groups.get("kept", 0) == counts["pairs_kept"]


def test_sampler_and_judge_share_one_pool_started_once(run_dir):
    out, first, second = run_dir
    assert list(first["pools"]) == ["sample+judge"] and first["pools"]["sample+judge"]["starts"] == 1
    assert second["pools"]["sample+judge"]["starts"] == 0  # a rerun with nothing to do loads no model
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["stages"]["sample"]["requests"] == 0  # metrics.json describes the last invocation


def test_rerun_makes_zero_requests_and_keeps_the_counts(run_dir):
    _, first, second = run_dir
    assert second["requests"] == {"sampler": 0, "judge": 0}
    assert second["counts"] == first["counts"]
    assert second["fingerprints"] == first["fingerprints"]
    assert len(second["history"]) == 2


def test_run_directory_contract(run_dir):
    out, first, _ = run_dir
    for folder in ("prompts", "samples", "judgments", "pairs", "invalid"):
        assert list((out / folder).glob("*.parquet")), folder
    samples = pa.concat_tables([pq.read_table(p) for p in (out / "samples").glob("*.parquet")])
    for column in (
        "prompt_id",
        "sample_idx",
        "reasoning",
        "answer",
        "reasoning_tokens",
        "answer_tokens",
        "completion_tokens",
        "finish_reason",
        "error",
    ):
        assert column in samples.column_names
    judgments = pa.concat_tables([pq.read_table(p) for p in (out / "judgments").glob("*.parquet")])
    for column in ("prompt_id", "sample_idx", "vote", "score", "quality", "parse_status"):
        assert column in judgments.column_names
    invalid = pq.read_table(next((out / "invalid").glob("*.parquet"))).to_pylist()
    assert invalid[0]["prompt_id"] == "bad-x" and "empty field 'question'" in invalid[0]["reason"]
    for key in ("config", "fingerprints", "versions", "counts", "requests", "timings"):
        assert key in first


def test_pairs_parquet_matches_the_contract_schema(run_dir):
    out, first, _ = run_dir
    (path,) = list((out / "pairs").glob("*.parquet"))
    table = pq.read_table(path)
    assert table.schema.equals(PAIRS, check_metadata=False)
    assert table.num_rows == first["counts"]["pairs_kept"]
    for row in table.to_pylist():
        assert row["chosen_idx"] != row["rejected_idx"]
        assert row["chosen"][0]["role"] == "assistant" == row["rejected"][0]["role"]
        for side in (row["chosen"][0]["content"], row["rejected"][0]["content"]):  # a think block only with reasoning
            assert "<think>" not in side or re.match(r"<think>\n\S.*?\n</think>\n\n", side, re.DOTALL), side
        assert row["prompt"][-1]["role"] == "user"


def test_bad_override_fails_before_any_work(tmp_path, capsys):
    assert main(["run", str(DEMO), f"output_dir={tmp_path / 'x'}", "sampler.kk=2"]) == 2
    assert "did you mean 'sampler.k'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
