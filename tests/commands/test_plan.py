"""`factory plan` (= `factory run --dry-run`): numbers from the stages' own planning, checked against the run
that follows on the in-process executor with a fake engine; nothing is sent and no engine is built."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from factory import config as config_mod
from factory.cli import main
from factory.commands.plan import make_plan
from factory.run import run
from tests.fakes import FakeEngine
from tests.synthetic import write_prompts

DEMO = Path(__file__).resolve().parents[2] / "conf" / "demo.yaml"


@pytest.fixture()
def no_engine(monkeypatch):
    """Any engine built or model loaded fails the test."""

    def refuse(*_a, **_k):
        raise AssertionError("a plan must not build an engine")

    monkeypatch.setattr("factory.engines.build_engine", refuse)
    monkeypatch.setattr("factory.engines.llamacpp.LlamaCppEngine.__init__", refuse)
    monkeypatch.setattr("factory.engines.openai.OpenAIEngine.__init__", refuse)


def by_stage(plan):
    return {p["stage"]: p for p in plan["stages"]}


def test_a_plan_of_the_demo_builds_no_engine_and_writes_plan_json(tmp_path, no_engine):
    plan = make_plan(config_mod.load(DEMO, [f"output_dir={tmp_path / 'run'}"]))
    sample, judge = by_stage(plan)["sample"], by_stage(plan)["judge"]
    assert (sample["requests"], sample["requests_estimated"]) == (30 * 4, 0)
    assert (judge["requests_exact"], judge["requests_estimated"]) == (0, 120)
    assert "assumed, no sample stored yet" in judge["notes"][0]
    assert sample["completion_tokens"] == 120 * 256 and "upper bound" in sample["completion_tokens_how"]
    assert sample["prompt_tokens_how"].startswith("est. chars")
    assert plan["requests_sent"] == 0 and plan["run_directory"] == "new"
    stored = json.loads((tmp_path / "run" / "plan.json").read_text())
    assert stored["total"]["requests"] == 240 and stored["stages"][0]["stage"] == "sample"


def cfg_for(tmp_path, *extra):
    rubric = tmp_path / "rubric.txt"
    rubric.write_text("Rate {answer} from 0 to {scale_max}.")
    return config_mod.load(
        None,
        [f"output_dir={tmp_path / 'run'}", f"prompts.path={write_prompts(tmp_path / 'p.jsonl', 6)}", "sampler.k=2",
         f"judge.rubric_file={rubric}", "judge.max_reasks=0", "progress_interval_s=60",
         "cost.sampler.input_usd_per_m=2", "cost.sampler.output_usd_per_m=8", *extra],
    )  # fmt: skip


def test_planned_requests_are_the_requests_the_run_then_makes(tmp_path):
    engine = FakeEngine(script={("p0", 0): "<think>never closed"})  # one empty answer: not judged
    steps = [
        ("first", []),
        ("more_k", ["sampler.k=3"]),
        ("new_rubric_settings", ["sampler.k=3", "judge.sampling.max_tokens=50"]),
        ("rerun", ["sampler.k=3", "judge.sampling.max_tokens=50"]),
    ]
    seen = {}
    for name, extra in steps:
        cfg = cfg_for(tmp_path, *extra)
        plan = by_stage(make_plan(cfg))
        manifest = run(cfg, backend="local", build=lambda _c: engine)
        seen[name] = (plan, manifest["requests"])
        assert plan["sample"]["requests"] == manifest["requests"]["sampler"], name
    first, made = seen["first"]
    assert first["sample"]["requests"] == 12 and first["judge"]["requests_estimated"] == 12
    assert made["judge"] == 11  # the estimate assumed every sample judgeable, it says so
    more, made = seen["more_k"]
    assert (
        more["sample"]["requests"] == 6 and "92% judgeable (observed on 12 stored samples)" in more["judge"]["notes"][0]
    )
    assert more["judge"]["requests"] == made["judge"] == 6
    assert more["sample"]["completion_tokens_how"].startswith("observed mean")
    assert more["sample"]["prompt_tokens_how"].startswith("est. chars x")  # the ratio the engine's usage showed
    rejudge, made = seen["new_rubric_settings"]
    # only stored samples to judge again: an exact plan, no estimate
    assert rejudge["sample"]["requests"] == 0 and rejudge["judge"]["requests_estimated"] == 0
    # 17 usable samples; 2 are copies of an earlier sample of their group (pairs.dedupe), found once
    # whole groups are planned: excluded before judging (pairs.filter_before_judge)
    assert rejudge["judge"]["requests"] == made["judge"] == 15
    assert "2 excluded before judging by the pair filters (duplicate 2)" in " ".join(rejudge["judge"]["notes"])
    plan, made = seen["rerun"]
    assert plan["sample"]["requests"] == plan["judge"]["requests"] == 0 and made == {"sampler": 0, "judge": 0}


def test_dollars_follow_the_tokens_and_the_prices(tmp_path):
    plan = make_plan(cfg_for(tmp_path, "cost.judge.output_usd_per_m=1"))
    sample, judge = by_stage(plan)["sample"], by_stage(plan)["judge"]
    assert sample["usd"] == pytest.approx((sample["prompt_tokens"] * 2 + sample["completion_tokens"] * 8) / 1e6)
    assert judge["usd"] == pytest.approx(judge["completion_tokens"] / 1e6)
    assert plan["total"]["usd"] == pytest.approx(sample["usd"] + judge["usd"])


def test_prompt_tokens_are_counted_with_a_tokenizer_file_when_given(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.train_from_iterator(["a b c"], trainers.WordLevelTrainer(special_tokens=["[UNK]"]))
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    cfg = cfg_for(tmp_path, f"sampler.engine.tokenizer={tmp_path / 'tokenizer.json'}")
    sample = by_stage(make_plan(cfg))["sample"]
    # one user message per prompt, "Product info:\n..." words: each whitespace word is one token (+ the template's)
    from factory.prompts import load_prompts

    prompts, _ = load_prompts(cfg.prompts)
    words = sum(len(m["content"].split()) for ms in prompts["messages"].to_list() for m in ms)
    messages = sum(len(ms) for ms in prompts["messages"].to_list())
    expected = 2 * (words + 5 * messages + 3 * prompts.height)
    assert sample["prompt_tokens_how"] == "counted (tokenizer)" and sample["prompt_tokens"] == expected


def test_gpu_hours_and_wall_time_at_the_configured_throughput(tmp_path):
    cfg = cfg_for(
        tmp_path, "sampler.engine.kind=vllm", "sampler.engine.model=deepseek-ai/DeepSeek-R1",
        "sampler.engine.tensor_parallel_size=8", "sampler.engine.pipeline_parallel_size=2", "sampler.engine.replicas=2",
        "cost.sampler.tokens_per_s=100",
    )  # fmt: skip
    sample = by_stage(make_plan(cfg))["sample"]
    assert sample["gpus_per_replica"] == 16
    assert sample["gpu_hours"] == pytest.approx(sample["completion_tokens"] / 100 / 3600 * 16)
    assert sample["wall_s"] == pytest.approx(sample["completion_tokens"] / 200)


def test_pairs_target_plans_the_prompts_needed_at_the_observed_survival_rate(tmp_path):
    big = tmp_path / "big.jsonl"
    write_prompts(big, 2000)
    cfg = cfg_for(tmp_path, f"prompts.path={big}", "pairs.target=300")
    fresh = make_plan(cfg)
    assert fresh["target"]["prompt_rows"] == math.ceil(1.2 * 300 / 0.7) and "assumed" in fresh["target"]["why"]
    counts = {"pairs_kept": 30, "prompts_in": 100}  # a factory manifest's keys (the guard refuses another tool's)
    (tmp_path / "run" / "manifest.json").write_text(json.dumps({"config": None, "fingerprints": {}, "counts": counts}))
    seen = make_plan(cfg)
    assert seen["target"]["prompt_rows"] == 100 + math.ceil(1.1 * 270 * 100 / 30)
    assert seen["prompts"]["valid"] + seen["prompts"]["invalid"] == 1090
    assert by_stage(seen)["sample"]["requests"] == 2 * seen["prompts"]["valid"]
    short = make_plan(cfg_for(tmp_path, "pairs.target=300"))  # a pool of 7 rows
    assert "holds only 7 rows" in short["target"]["short"]


def test_plan_and_run_dry_run_are_one_command(tmp_path, capsys, no_engine):
    out = tmp_path / "run"
    assert main(["plan", str(DEMO), f"output_dir={out}", "prompts.limit=3"]) == 0
    first = json.loads((out / "plan.json").read_text())
    text = capsys.readouterr().out
    assert "nothing was sent" in text and "| sample " in text and "| total " in text
    assert main(["run", str(DEMO), "--dry-run", f"output_dir={out}", "prompts.limit=3"]) == 0
    second = json.loads((out / "plan.json").read_text())
    for volatile in ("at", "seconds"):
        first.pop(volatile), second.pop(volatile)
    assert first == second and first["total"]["requests"] == 24
    assert not (out / "samples").exists() and not (out / "manifest.json").exists()


def test_a_plan_needs_no_api_key(tmp_path, monkeypatch, no_engine):
    monkeypatch.delenv("FACTORY_PLAN_KEY", raising=False)
    cfg = cfg_for(
        tmp_path, "sampler.engine.kind=openai", "sampler.engine.base_url=http://127.0.0.1:9/v1",
        "sampler.engine.model=r1", "sampler.engine.api_key_env=FACTORY_PLAN_KEY",
    )  # fmt: skip
    assert by_stage(make_plan(cfg))["sample"]["requests"] == 12


def test_a_what_if_plan_leaves_the_runs_plan_json_as_it_is(tmp_path, capsys):
    out = tmp_path / "run"
    cfg = cfg_for(tmp_path)
    make_plan(cfg)
    run(cfg, backend="local", build=lambda _c: FakeEngine())
    own = make_plan(cfg)  # the config of the run the directory holds: its plan
    assert "whatif" not in own and own["written"] == f"{out}/plan.json"
    before = (out / "plan.json").read_bytes()
    whatif = make_plan(cfg_for(tmp_path, "sampler.k=3", "cost.sampler.output_usd_per_m=9"))
    assert (out / "plan.json").read_bytes() == before
    assert whatif["whatif"] == ["cost.sampler.output_usd_per_m", "sampler.k"]
    assert whatif["written"] == f"{out}/plan.whatif.json"
    assert json.loads((out / "plan.whatif.json").read_text())["whatif"] == whatif["whatif"]
    assert by_stage(whatif)["sample"]["requests"] == 6
    from factory.commands.plan import format_plan

    text = format_plan(whatif)
    assert f"written: {out}/plan.whatif.json (a what-if: this config differs from the run's in " in text
    assert "plan.json, the plan of the run the directory holds, is untouched" in text


def test_the_plan_reads_the_throughput_of_every_invocation_after_a_rerun(tmp_path):
    """metrics.json of a rerun with nothing to do has no throughput of its own; its totals keep the first run's."""
    engine = FakeEngine(latency=0.002)
    cfg = cfg_for(tmp_path)
    run(cfg, backend="local", build=lambda _c: engine)
    run(cfg, backend="local", build=lambda _c: engine)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["stages"]["sample"]["tokens_per_s"] is None  # this invocation sampled nothing
    observed = metrics["totals"]["stages"]["sample"]["tokens_per_s"]
    sample = by_stage(make_plan(cfg_for(tmp_path, "sampler.k=3")))["sample"]
    assert observed and sample["tokens_per_s_per_replica"] == pytest.approx(observed / cfg.sampler.engine.replicas)
    assert sample["tokens_per_s_how"] == "observed, metrics.json totals" and sample["wall_s"] is not None


CACHED = ["cost.sampler.cached_input_per_m=0.5", "cost.judge.input_usd_per_m=1", "cost.judge.cached_input_per_m=0.1"]


def test_the_plan_estimates_cached_prompt_tokens_then_reads_the_share_observed(tmp_path):
    """Before any run: the K requests of a prompt after its first share its prompt, a judge's requests of one
    prompt after its first share the rubric and prompt; priced at cached_input_per_m. After a run whose server
    reported cached tokens: the share it reported."""
    fresh = by_stage(make_plan(cfg_for(tmp_path, *CACHED)))
    sample, judge = fresh["sample"], fresh["judge"]
    assert sample["requests"] == 12 and sample["cached_tokens"] == round(sample["prompt_tokens"] * 6 / 12)
    assert sample["cached_tokens_how"].startswith("est. up to")
    assert sample["usd_input"] == pytest.approx(
        ((sample["prompt_tokens"] - sample["cached_tokens"]) * 2 + sample["cached_tokens"] * 0.5) / 1e6, rel=1e-2
    )
    assert 0 < judge["cached_tokens"] < judge["prompt_tokens"] * 6 / 12  # the prefix only: not the answers

    def usage(request, text):  # a server whose cache served 4 of every 10 prompt tokens
        return {"prompt_tokens": 10, "cached_tokens": 4, "completion_tokens": len(text.split()), "latency_s": 0.001}

    run(cfg_for(tmp_path, *CACHED), backend="local", build=lambda _c: FakeEngine(usage=usage))
    seen = by_stage(make_plan(cfg_for(tmp_path, *CACHED, "sampler.k=3")))["sample"]
    assert seen["cached_tokens_how"] == "observed share 40% over 12 stored rows"
    assert seen["cached_tokens"] == round(seen["prompt_tokens"] * 0.4)
