"""Every judge and reward model has a price (cost.judges.<name>, cost.reward_models.<name>): `factory plan`
prices their stages, the live spend (progress, metrics.json, manifest) charges their rows, cost.max_usd
sees them, and a plan with a per-token stage that has no price says so in its total."""

from __future__ import annotations

import json

import pytest

from factory import config
from factory.config import ConfigError
from factory.evaluation.run import price_keys as eval_price_keys
from factory.graph import RunGraph
from factory.executor.core import BudgetExceeded
from factory.commands.plan import format_plan, make_plan
from factory.run import run
from tests.engines.loopback import FakeModelServer
from tests.synthetic import write_prompts

PRICES = {"sampler": (1.0, 2.0), "judge": (3.0, 4.0), "judges.b": (50.0, 70.0), "reward_models.rm": (110.0, 0.0)}


def overrides(tmp_path, url: str, *extra: str) -> list[str]:
    prompts = write_prompts(tmp_path / "prompts.jsonl", 3)
    (tmp_path / "rubric.txt").write_text("Rate {answer} from 0 to {scale_max}.")
    engine = [f"base_url={url}/v1", "kind=openai", "model=fake", "max_retries=0", "batch_size=2"]
    return [
        f"output_dir={tmp_path / 'run'}", f"prompts.path={prompts}", "sampler.k=2", "progress_interval_s=60",
        f"judge.rubric_file={tmp_path / 'rubric.txt'}", f"judges.b.rubric_file={tmp_path / 'rubric.txt'}",
        "judges.b.sampling.temperature=0.7", "reward_models.rm.route=pooling",
        *(f"{side}.engine.{o}" for side in ("sampler", "judge", "judges.b", "reward_models.rm") for o in engine),
        *extra,
    ]  # fmt: skip


def priced(*keys: str) -> list[str]:
    out = []
    for key in keys:
        inp, outp = PRICES[key]
        out += [f"cost.{key}.input_usd_per_m={inp}", f"cost.{key}.output_usd_per_m={outp}"]
    return out


def test_price_keys_name_the_stage_and_a_price_for_an_unknown_judge_is_refused(tmp_path):
    # The price keys come from the graph's nodes (and factory eval's stages), not from parsing stage names.
    with FakeModelServer(delay=0.0) as server:
        cfg = config.load(None, overrides(tmp_path, server.url, *priced("judges.b", "reward_models.rm"),
                                          "eval.candidates.short.sampling.temperature=0.5"))  # fmt: skip
    graph = RunGraph(cfg)
    keys = graph.price_keys() | eval_price_keys(cfg)
    assert [keys[s] for s in ("sample", "judge", "judge_b", "reward_rm", "sample:short", "judge:short")] == [
        "cost.sampler", "cost.judge", "cost.judges.b", "cost.reward_models.rm", "eval.candidates.short.cost",
        "cost.judge",
    ]  # fmt: skip
    assert set(graph.prices()) == {"sample", "judge", "judge_b", "reward_rm"}
    with pytest.raises(ConfigError, match=r"^cost\.judges\.c: no judges\.c is configured \(judges: b\)"):
        config.load(None, overrides(tmp_path, "http://127.0.0.1:9", "cost.judges.c.input_usd_per_m=1"))
    with pytest.raises(ConfigError, match=r"cost\.reward_models\.rm\.input_usd_per_m: must be >= 0"):
        config.load(None, overrides(tmp_path, "http://127.0.0.1:9", "cost.reward_models.rm.input_usd_per_m=-1"))
    with pytest.raises(ConfigError, match=r"did you mean 'cost\.judges\.b\.output_usd_per_m'"):
        config.load(None, overrides(tmp_path, "http://127.0.0.1:9", "cost.judges.b.outptu_usd_per_m=1"))


def test_the_plan_prices_every_judge_and_says_when_its_total_leaves_one_out(tmp_path):
    url = "http://127.0.0.1:9"  # nothing listens: a plan sends nothing
    plan = make_plan(config.load(None, overrides(tmp_path, url, *priced("sampler", "judge", "judges.b"))))
    stages = {p["stage"]: p for p in plan["stages"]}
    assert set(stages) == {"sample", "judge", "judge_b", "reward_rm"}
    b = stages["judge_b"]
    assert b["usd"] == pytest.approx((b["prompt_tokens"] * 50.0 + b["completion_tokens"] * 70.0) / 1e6, rel=1e-3)
    assert stages["reward_rm"]["usd"] is None and stages["reward_rm"]["completion_tokens"] == 0
    assert plan["total"]["usd_unpriced"] == ["reward_rm"]
    assert plan["total"]["usd"] == pytest.approx(sum(p["usd"] for p in stages.values() if p["usd"] is not None))
    text = format_plan(plan)
    total = next(line for line in text.splitlines() if line.startswith("| total"))
    assert ">= $" in total and "1 unpriced" in total
    assert "USD total leaves out reward_rm (no price: cost.reward_models.rm.input_usd_per_m" in text

    full = make_plan(config.load(None, overrides(tmp_path, url, *priced(*PRICES))))
    rm = {p["stage"]: p for p in full["stages"]}["reward_rm"]
    assert rm["usd"] == pytest.approx(rm["prompt_tokens"] * 110.0 / 1e6, rel=1e-3) and rm["usd"] > 0
    assert full["total"]["usd_unpriced"] == [] and full["total"]["usd"] == pytest.approx(
        plan["total"]["usd"] + rm["usd"]
    )
    assert "unpriced" not in format_plan(full)


def test_the_live_spend_charges_every_judge_and_reward_model_at_its_price(tmp_path):
    with FakeModelServer(delay=0.0) as server:
        manifest = run(config.load(None, overrides(tmp_path, server.url, *priced(*PRICES))), backend="local")
    spend = manifest["spend"]["stages"]
    assert set(spend) == {"sample", "judge", "judge_b", "reward_rm"}
    for stage, key in (
        ("sample", "sampler"),
        ("judge", "judge"),
        ("judge_b", "judges.b"),
        ("reward_rm", "reward_models.rm"),
    ):
        inp, outp = PRICES[key]
        s = spend[stage]
        assert s["prompt_tokens"] > 0
        assert s["usd"] == pytest.approx((s["prompt_tokens"] * inp + s["completion_tokens"] * outp) / 1e6, rel=1e-4)
    assert spend["reward_rm"]["completion_tokens"] == 0 and spend["reward_rm"]["usd"] > 0
    assert manifest["spend"]["usd"] == pytest.approx(sum(s["usd"] for s in spend.values()), rel=1e-4)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["spend"] == manifest["spend"]


def test_the_budget_sees_a_judge_priced_alone(tmp_path):
    """Only judges.b has a price: the budget is accepted and stops the run once judge_b's rows reach it."""
    budget = ["cost.judges.b.input_usd_per_m=1000", "cost.judges.b.output_usd_per_m=1000", "cost.max_usd=0.02"]
    with FakeModelServer(delay=0.05) as server:
        cfg = config.load(None, overrides(tmp_path, server.url, *budget))
        with pytest.raises(BudgetExceeded, match=r"budget reached: cost\.max_usd=0\.02.*judge_b \$"):
            run(cfg, backend="local")
        judged_b = [r for r in server.judge_requests() if r.get("temperature") == 0.7]
    assert 1 <= len(judged_b) < 6
