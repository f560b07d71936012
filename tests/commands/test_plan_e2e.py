"""`factory plan` against real servers: the embedded model behind a counting proxy per stage
(tests/engines/loopback.py). The plan sends no LLM request; the run that follows makes exactly the
requests planned, stage by stage, as the run directory grows:

    fresh (3 prompts x K=2)      sample 6 exact, judge estimated (every sample assumed judgeable)
    prompts.limit 3 -> 4         sample 2 exact
    judge settings changed       judge exact: every judgeable stored sample again, nothing sampled
    rerun                        0 and 0
"""

from __future__ import annotations

from pathlib import Path


from factory.pairs.prejudge import passing
import pytest

from factory import config
from factory.commands.plan import make_plan
from factory.run import run
from factory.rundir.schemas import SAMPLES
from factory.rundir.store import RunStore
from tests.engines.loopback import counting_llama

pytestmark = pytest.mark.slow

DEMO = Path(__file__).resolve().parents[2] / "conf" / "demo.yaml"


@pytest.fixture(scope="module")
def servers():
    yield from counting_llama(2048)


def overrides(servers, out, *extra):
    sampler, judge = servers
    engine = ["kind=openai", "model=smollm2", "max_model_len=2048", "tokenizer=server", "cpus_per_replica=0.5"]
    return [
        f"output_dir={out}", "prompts.limit=3", "sampler.k=2", "sampler.sampling.max_tokens=24",
        f"sampler.engine.base_url={sampler.url}/v1", *[f"sampler.engine.{e}" for e in engine],
        f"judge.engine.base_url={judge.url}/v1", *[f"judge.engine.{e}" for e in engine],
        "judge.sampling.max_tokens=48", "judge.max_reasks=0", "progress_interval_s=60", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def steps(servers, tmp_path_factory):
    out = tmp_path_factory.mktemp("plan") / "run"
    sampler, judge = servers
    done = {}
    for name, extra in (
        ("fresh", []),
        ("more_prompts", ["prompts.limit=4"]),
        ("judge_changed", ["prompts.limit=4", "judge.sampling.max_tokens=40"]),
        ("rerun", ["prompts.limit=4", "judge.sampling.max_tokens=40"]),
    ):
        cfg = config.load(DEMO, overrides(servers, out, *extra))
        before = (len(sampler.chat_requests()), len(judge.chat_requests()))
        plan = {p["stage"]: p for p in make_plan(cfg)["stages"]}
        planned_sent = (len(sampler.chat_requests()) - before[0], len(judge.chat_requests()) - before[1])
        manifest = run(cfg)
        made = (len(sampler.chat_requests()) - before[0], len(judge.chat_requests()) - before[1])
        done[name] = {"plan": plan, "sent_by_plan": planned_sent, "made": made, "manifest": manifest}
    return out, done


def test_a_plan_sends_no_llm_request(steps):
    _, done = steps
    assert all(step["sent_by_plan"] == (0, 0) for step in done.values())


def test_the_sampler_makes_exactly_the_planned_requests(steps):
    _, done = steps
    for name, step in done.items():
        assert step["plan"]["sample"]["requests"] == step["made"][0] == step["manifest"]["requests"]["sampler"], name
    assert [done[n]["made"][0] for n in done] == [6, 2, 0, 0]


def test_the_judge_makes_exactly_the_planned_requests_once_its_samples_are_stored(steps):
    _, done = steps
    changed = done["judge_changed"]
    assert changed["plan"]["judge"]["requests_estimated"] == 0
    scored = changed["manifest"].scored
    # the samples the pair filters that need no judge let through (truncated ones are never judged)
    judgeable = passing(scored, config.load(DEMO).pairs)["exclusion"].is_null().sum()
    assert changed["plan"]["judge"]["requests"] == changed["made"][1] == judgeable > 0
    assert done["rerun"]["plan"]["judge"]["requests"] == done["rerun"]["made"][1] == 0
    fresh = done["fresh"]
    # before any sample exists the judge's share is an estimate (all judgeable): an upper bound of what it made
    assert fresh["plan"]["judge"]["requests_estimated"] == 6 and fresh["made"][1] <= 6


def test_prompt_tokens_counted_by_the_server_match_what_it_reported(steps):
    out, done = steps
    fresh = done["fresh"]["plan"]["sample"]
    assert fresh["prompt_tokens_how"] == "counted (server /tokenize)"
    samples = RunStore(str(out)).read("samples", SAMPLES)
    first = samples.sort("created_at").head(6)
    reported = int(first["prompt_tokens"].sum())
    assert abs(fresh["prompt_tokens"] - reported) <= 0.05 * reported, (fresh["prompt_tokens"], reported)
