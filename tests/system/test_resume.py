"""Row-level resume and growth, proven by the requests a real server received.

`factory run` samples with the openai engine from a real llama.cpp server on loopback (xllamacpp), through
a counting proxy per stage (tests/engines/loopback.py). Each sample request carries its derived seed, so
the proxy's log says exactly which (prompt_id, sample_idx) keys were asked for:

    first run (2 prompts x K=2)  -> the 4 keys          rerun            -> 0 requests
    prompts.limit 2 -> 3         -> the 2 new keys      K 2 -> 3         -> the 3 new keys
    temperature changed          -> all 9, new fingerprint, never mixed with the old samples
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from factory import config
from factory.run import run
from factory.rundir.hashing import derive_seed
from factory.rundir.schemas import SAMPLES
from factory.rundir.store import RunStore
from tests.engines.loopback import counting_llama

pytestmark = pytest.mark.slow

DEMO = Path(__file__).resolve().parents[2] / "conf" / "demo.yaml"
SEED = 0


@pytest.fixture(scope="module")
def servers():
    yield from counting_llama(1024)


def overrides(servers, out, *extra):
    sampler, judge = servers
    return [
        f"output_dir={out}",
        "prompts.limit=2",
        "sampler.k=2",
        f"sampler.sampling.seed={SEED}",
        "sampler.sampling.max_tokens=8",
        "sampler.engine.kind=openai",
        f"sampler.engine.base_url={sampler.url}/v1",
        "sampler.engine.model=smollm2",
        "sampler.engine.max_model_len=1024",
        "sampler.engine.tokenizer=server",
        "sampler.engine.cpus_per_replica=0.5",
        "judge.engine.kind=openai",
        f"judge.engine.base_url={judge.url}/v1",
        "judge.engine.model=smollm2",
        "judge.engine.cpus_per_replica=0.5",
        "judge.sampling.max_tokens=24",
        "judge.max_reasks=0",
        "pairs.filter_before_judge=false",  # the samples are cut at 8 tokens: judge them anyway
        "progress_interval_s=60",
        *extra,
    ]


class Counted:
    """Runs factory and returns what each proxy received during that run."""

    def __init__(self, servers):
        self.servers = servers

    def run(self, out, *extra):
        sampler, judge = self.servers
        before = (len(sampler.chat_requests()), len(judge.chat_requests()))
        manifest = run(config.load(DEMO, overrides(self.servers, out, *extra)))
        sent = sampler.chat_requests()[before[0] :]
        judged = judge.chat_requests()[before[1] :]
        return manifest, sent, judged


def keys_of(sent, prompt_ids, k):
    """(prompt_id, sample_idx) of each request, from its seed."""
    by_seed = {derive_seed(SEED, p, i): (p, i) for p in prompt_ids for i in range(k)}
    return sorted(by_seed[body["seed"]] for body in sent)


@pytest.fixture(scope="module")
def history(servers, tmp_path_factory):
    out = tmp_path_factory.mktemp("resume") / "run"
    counted = Counted(servers)
    steps = {
        "first": counted.run(out),
        "rerun": counted.run(out),
        "more_prompts": counted.run(out, "prompts.limit=3"),
        "more_k": counted.run(out, "prompts.limit=3", "sampler.k=3"),
        "hotter": counted.run(out, "prompts.limit=3", "sampler.k=3", "sampler.sampling.temperature=1.3"),
        "back": counted.run(out, "prompts.limit=3", "sampler.k=3"),
    }
    ids = RunStore(str(out)).read("prompts")["prompt_id"].to_list()
    return out, steps, ids


def test_first_run_asks_for_every_key_once(history):
    _, steps, ids = history
    manifest, sent, judged = steps["first"]
    assert keys_of(sent, ids[:2], 2) == [(p, i) for p in sorted(ids[:2]) for i in range(2)]
    assert manifest["requests"]["sampler"] == len(sent) == 4
    assert manifest["requests"]["judge"] == len(judged) > 0


def test_a_rerun_makes_no_request_at_all(history):
    _, steps, _ = history
    manifest, sent, judged = steps["rerun"]
    assert sent == [] and judged == []
    assert manifest["requests"] == {"sampler": 0, "judge": 0}
    assert manifest["counts"]["samples_ok"] + manifest["counts"]["samples_failed"] == 4


def test_growing_prompts_asks_for_exactly_the_new_prompts_keys(history):
    _, steps, ids = history
    manifest, sent, _ = steps["more_prompts"]
    assert keys_of(sent, ids, 2) == [(ids[2], 0), (ids[2], 1)]
    assert manifest["requests"]["sampler"] == 2 and manifest["counts"]["samples_expected"] == 6


def test_growing_k_asks_for_exactly_the_new_sample_indexes(history):
    _, steps, ids = history
    manifest, sent, _ = steps["more_k"]
    assert keys_of(sent, ids, 3) == sorted((p, 2) for p in ids)
    assert manifest["counts"]["samples_ok"] + manifest["counts"]["samples_failed"] == 9


def test_a_new_sampling_parameter_is_a_new_fingerprint_never_mixed(history):
    out, steps, ids = history
    manifest, sent, _ = steps["hotter"]
    old_fp = steps["more_k"][0]["fingerprints"]["sampler"]
    new_fp = manifest["fingerprints"]["sampler"]
    assert new_fp != old_fp
    assert keys_of(sent, ids, 3) == sorted((p, i) for p in ids for i in range(3))  # all 9 again
    assert all(body["temperature"] == 1.3 for body in sent)
    stored = RunStore(str(out)).read("samples", SAMPLES)
    assert stored.group_by("sampler_fp").len().sort("sampler_fp").to_dicts() == sorted(
        [{"sampler_fp": old_fp, "len": 9}, {"sampler_fp": new_fp, "len": 9}], key=lambda r: r["sampler_fp"]
    )
    # What this run counts and pairs comes from the new fingerprint only.
    assert manifest["counts"]["samples_ok"] + manifest["counts"]["samples_failed"] == 9
    used = manifest.scored
    assert used.height == 9 and set(used["sampler_fp"]) == {new_fp}


def test_going_back_reuses_the_old_samples(history):
    _, steps, _ = history
    manifest, sent, judged = steps["back"]
    assert sent == [] and judged == [] and manifest["requests"] == {"sampler": 0, "judge": 0}


def test_a_prompt_longer_than_the_context_is_a_failed_row_and_the_rest_goes_on(servers, tmp_path):
    lines = (DEMO.parent / "data" / "demo_prompts.jsonl").read_text().splitlines()[:2]
    giant = json.loads(lines[0]) | {"id": "giant", "question": "is it big? " * 900}
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join([*lines, json.dumps(giant)]) + "\n")
    manifest, sent, _ = Counted(servers).run(tmp_path / "run", f"prompts.path={prompts}", "prompts.limit=3")
    samples = pl.from_arrow(RunStore(str(tmp_path / "run")).read("samples", SAMPLES).to_arrow())
    failed = samples.filter(pl.col("error").is_not_null())
    assert failed["prompt_id"].to_list() == ["giant", "giant"]
    assert all(e.startswith("prompt has ") and e.endswith("tokens, max_model_len 1024") for e in failed["error"])
    assert int(failed["error"][0].split()[2]) > 1024
    assert manifest["counts"]["samples_ok"] == 4 and manifest["counts"]["samples_failed"] == 2
    assert len(sent) == 6  # a 400 is not retried: one request per key
