"""sampler.adaptive: a prompt gets k_min samples, and more (step at a time, up to sampler.k) only while the
pair kernel says its group is undecided; resume, growth and `factory plan` plan from the stored keys.

The world: the teacher's answer says its quality ("score 90 ..."), the judge reads it back, S is quality alone
(w_len 0) and a pair needs a margin of 0.3 (pairs.min_margin), so each group's fate is known beforehand:

    p0  90 10 ..            decided at 2 samples
    p1  50 50 90 50 ..      tied at 2, decided at 4
    p2  50 50 50 50 50 50   tied at every step: grows to k=6
    p3  55 50 52 51 53 54   below the margin at every step: grows to k=6
"""

from __future__ import annotations

import json
import re

import polars as pl
import pytest

from factory import config
from factory.engines.base import FatalEngineError
from factory.executor.core import FatalRunError
from factory.run import run
from factory.rundir.store import RunStore
from tests.fakes import FakeEngine, Raise
from tests.synthetic import write_prompts

QUALITY = {
    "p0": [90, 10, 50, 50, 50, 50],
    "p1": [50, 50, 90, 50, 50, 50],
    "p2": [50, 50, 50, 50, 50, 50],
    "p3": [55, 50, 52, 51, 53, 54],
}
EXPECTED = {"p0": 2, "p1": 4, "p2": 6, "p3": 6}  # samples each prompt gets under the rule, k=6


def reply(request) -> str:
    if request.json_schema is not None:  # the judge: the score the answer states
        text = " ".join(m["content"] for m in request.messages)
        return json.dumps({"score": int(re.search(r"score (\d+)", text).group(1)), "reason": "r"})
    prompt_id, idx = request.tag
    quality = QUALITY[f"p{int(prompt_id[1:]) % 4}"][idx]  # p4 is p0 again, p5 p1, ...
    return f"<think>thinking {idx}</think>score {quality} says sample {idx} of {prompt_id}"


def cfg_of(tmp_path, *extra, n=4):
    prompts = write_prompts(tmp_path / "prompts.jsonl", n)
    rubric = tmp_path / "rubric.txt"
    rubric.write_text("Rate {answer} from 0 to {scale_max}.")
    return config.load(
        None,
        [f"output_dir={tmp_path / 'run'}", f"prompts.path={prompts}", f"judge.rubric_file={rubric}", "sampler.k=6",
         "sampler.adaptive.enabled=true", "sampler.adaptive.k_min=2", "sampler.adaptive.step=2",
         "sampler.adaptive.replan_s=0", "pairs.w_len=0", "pairs.min_margin=0.3", "progress_interval_s=60", *extra],
    )  # fmt: skip


def sampled(engine, since=0):
    return [r.tag for r in engine.requests[since:] if r.json_schema is None]


def per_prompt(tags):
    out: dict[str, list[int]] = {}
    for prompt_id, idx in tags:
        out.setdefault(prompt_id, []).append(idx)
    return {p: sorted(v) for p, v in sorted(out.items())}


def stored_keys(tmp_path):
    samples = RunStore(str(tmp_path / "run")).read("samples")
    return sorted(samples.select("prompt_id", "sample_idx").iter_rows())


def test_each_prompt_gets_the_samples_its_rule_asks_for_and_no_more(tmp_path):
    engine = FakeEngine(reply=reply)
    manifest = run(cfg_of(tmp_path), backend="local", build=lambda _c: engine, command="t")
    asked = sampled(engine)
    assert len(asked) == len(set(asked)) == sum(EXPECTED.values()) == manifest["requests"]["sampler"]
    assert per_prompt(asked) == {p: list(range(n)) for p, n in EXPECTED.items()}
    assert manifest["requests"]["judge"] == sum(EXPECTED.values())  # every sample judged once
    assert manifest["counts"]["samples_expected"] == sum(EXPECTED.values())
    assert manifest["adaptive"]["groups_by_samples"] == {"2": 1, "4": 1, "6": 2}
    assert manifest["adaptive"]["groups_by_state"] == {"waiting": 0, "decided": 2, "exhausted": 2, "given_up": 0}
    pairs = RunStore(str(tmp_path / "run")).read("pairs")
    assert sorted(pairs["prompt_id"].to_list()) == ["p0", "p1"]
    # sample i of a prompt carries the seed it has in a fixed-K run, whichever step drew it
    from factory.rundir.hashing import derive_seed

    seeds = {r.tag: r.seed for r in engine.requests if r.json_schema is None}
    assert all(seed == derive_seed(0, p, i) for (p, i), seed in seeds.items())


def test_a_fixed_k_run_of_the_same_prompts_asks_for_every_key(tmp_path):
    engine = FakeEngine(reply=reply)
    run(cfg_of(tmp_path, "sampler.adaptive.enabled=false"), backend="local", build=lambda _c: engine, command="t")
    assert len(sampled(engine)) == 4 * 6


def test_a_group_steps_up_while_the_run_still_draws(tmp_path):
    """The next step of a group starts from the follow of its stored judgments, not only at the end."""
    from factory.executor.core import Executor
    from factory.graph import RunGraph
    from factory.prompts import load_prompts

    cfg = cfg_of(tmp_path, "store.flush_s=0.05")
    engine = FakeEngine(reply=reply, latency=0.2)
    prompts, _ = load_prompts(cfg.prompts)
    stages = RunGraph(cfg).stages(prompts)
    store = RunStore(cfg.output_dir)
    with Executor(store, cfg, backend="local", build=lambda _c: engine) as executor:
        executor.run(stages)
    assert stages[0].grown_early > 0
    assert per_prompt(sampled(engine)) == {p: list(range(n)) for p, n in EXPECTED.items()}


def test_a_kill_mid_step_resumes_with_every_key_once(tmp_path):
    cfg = cfg_of(tmp_path)
    broken = FakeEngine(reply=reply, script={("p2", 3): Raise(FatalEngineError("HTTP 401: the key was revoked"))})
    with pytest.raises(FatalRunError):
        run(cfg, backend="local", build=lambda _c: broken, command="t")
    kept = stored_keys(tmp_path)
    assert ("p2", 3) not in kept and len(kept) < sum(EXPECTED.values())
    engine = FakeEngine(reply=reply)
    manifest = run(cfg, backend="local", build=lambda _c: engine, command="t")
    resumed = sampled(engine)
    assert len(resumed) == len(set(resumed)) and not set(resumed) & set(kept)  # only the missing keys
    final = stored_keys(tmp_path)
    assert len(final) == len(set(final)) == sum(EXPECTED.values())
    assert per_prompt(final) == {p: list(range(n)) for p, n in EXPECTED.items()}
    assert manifest["requests"]["sampler"] == len(resumed) == sum(EXPECTED.values()) - len(kept)


def test_a_later_larger_k_asks_only_the_new_keys(tmp_path):
    engine = FakeEngine(reply=reply)
    run(cfg_of(tmp_path, "sampler.k=4"), backend="local", build=lambda _c: engine, command="t")
    assert per_prompt(sampled(engine)) == {"p0": [0, 1], "p1": [0, 1, 2, 3], "p2": [0, 1, 2, 3], "p3": [0, 1, 2, 3]}
    before = len(engine.requests)
    manifest = run(cfg_of(tmp_path), backend="local", build=lambda _c: engine, command="t")
    assert per_prompt(sampled(engine, before)) == {"p2": [4, 5], "p3": [4, 5]}
    assert manifest["requests"] == {"sampler": 4, "judge": 4}
    again = len(engine.requests)
    rerun = run(cfg_of(tmp_path), backend="local", build=lambda _c: engine, command="t")
    assert rerun["requests"] == {"sampler": 0, "judge": 0} and len(engine.requests) == again


def test_a_looser_stop_rule_asks_nothing_and_a_stricter_one_only_its_new_steps(tmp_path):
    engine = FakeEngine(reply=reply)
    run(cfg_of(tmp_path), backend="local", build=lambda _c: engine, command="t")
    before = len(engine.requests)
    looser_cfg = cfg_of(tmp_path, "sampler.adaptive.min_margin=0.01")
    looser = run(looser_cfg, backend="local", build=lambda _c: engine, command="t")
    assert looser["requests"]["sampler"] == 0 and len(engine.requests) == before
    # stricter than p1's 0.4 at 4 samples but not p0's 0.8 at 2: p1 grows to k, nothing else is asked
    stricter = run(
        cfg_of(tmp_path, "sampler.adaptive.min_margin=0.5"), backend="local", build=lambda _c: engine, command="t"
    )
    assert per_prompt(sampled(engine, before)) == {"p1": [4, 5]} and stricter["requests"]["sampler"] == 2


def test_give_up_stops_the_groups_with_no_pair_near_the_threshold_after_one_more_step(tmp_path):
    """give_up 0.5: after 4 samples a group needs a pair at 0.15 to go on; p2 (tied) and p3 (0.05) stop."""
    engine = FakeEngine(reply=reply)
    manifest = run(
        cfg_of(tmp_path, "sampler.adaptive.give_up=0.5"), backend="local", build=lambda _c: engine, command="t"
    )
    assert per_prompt(sampled(engine)) == {"p0": [0, 1], "p1": [0, 1, 2, 3], "p2": [0, 1, 2, 3], "p3": [0, 1, 2, 3]}
    assert manifest["adaptive"]["groups_by_state"] == {"waiting": 0, "decided": 2, "exhausted": 0, "given_up": 2}
    assert sorted(RunStore(str(tmp_path / "run")).read("pairs")["prompt_id"].to_list()) == ["p0", "p1"]
    with pytest.raises(config.ConfigError, match=r"sampler.adaptive.give_up: must be in \(0, 1\] or null"):
        cfg_of(tmp_path, "sampler.adaptive.give_up=1.5")


def test_target_rounds_grow_the_prompts_on_the_same_pool_with_each_key_once(tmp_path):
    engine, builds = FakeEngine(reply=reply), []
    cfg = cfg_of(tmp_path, "prompts.limit=4", "pairs.target=6", n=12)
    manifest = run(cfg, backend="local", build=lambda _c: builds.append(1) or engine, command="t")
    assert manifest["target"]["met"] and len(manifest["target"]["draws"]) == 2 and len(builds) == 1
    asked = sampled(engine)
    assert len(asked) == len(set(asked)) == 3 * sum(EXPECTED.values()) == manifest["requests"]["sampler"]
    assert manifest["counts"]["pairs_kept"] == 6


def test_a_quantile_stop_rule_ends_with_every_group_decided_or_at_k(tmp_path):
    """No min_margin: the threshold is estimated from the judged groups while the run draws; when the run
    ends, a group with fewer than k samples is one the final threshold keeps."""
    engine = FakeEngine(reply=reply)
    cfg = cfg_of(tmp_path, "pairs.min_margin=null", "pairs.drop_ratio=0.5", n=4)
    manifest = run(cfg, backend="local", build=lambda _c: engine, command="t")
    counts = (
        pl.DataFrame(stored_keys(tmp_path), schema=["prompt_id", "sample_idx"], orient="row")
        .group_by("prompt_id")
        .len()
    )
    pairs = set(RunStore(str(tmp_path / "run")).read("pairs")["prompt_id"])
    short = set(counts.filter(pl.col("len") < 6)["prompt_id"])
    assert short and short <= pairs
    assert manifest["adaptive"]["groups_by_state"]["waiting"] == 0


def test_plan_estimates_the_growth_from_the_stored_decisions(tmp_path):
    from factory.commands.plan import make_plan

    fresh = make_plan(cfg_of(tmp_path))["stages"][0]
    assert fresh["requests_exact"] == 4 * 2 and fresh["requests_estimated"] == 4 * 4  # upper bound: all grow to k
    assert any("no stored decision yet" in note for note in fresh["notes"])
    engine = FakeEngine(reply=reply)
    run(cfg_of(tmp_path), backend="local", build=lambda _c: engine, command="t")
    grown = make_plan(cfg_of(tmp_path, n=8))["stages"][0]
    # 4 new prompts at k_min, each expected to end at the stored mean of (2 + 4 + 6 + 6) / 4 = 4.5 samples
    assert grown["requests_exact"] == 4 * 2 and grown["requests_estimated"] == round(4 * 2.5)
    assert any("estimated" in note and "stopped" in note for note in grown["notes"])


@pytest.mark.slow
def test_the_same_samples_on_ray(tmp_path):
    """The Ray executor drives the same follow and settle: the same keys as in process."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    cfg = cfg_of(tmp_path, "sampler.engine.cpus_per_replica=0.5", "judge.engine.cpus_per_replica=0.5")
    manifest = run(cfg, backend="ray", build=lambda _c: FakeEngine(reply=reply), command="t")
    assert per_prompt(stored_keys(tmp_path)) == {p: list(range(n)) for p, n in EXPECTED.items()}
    assert manifest["requests"] == {"sampler": sum(EXPECTED.values()), "judge": sum(EXPECTED.values())}


_SHOWN = re.compile(r"\[Answer ([A-Z]+)\]\n(?:<think>.*?</think>\n)?score (\d+) says sample (\d+) of (\w+)", re.S)


def group_reply(request) -> str:
    """The group judge: each labelled answer's score is the one it states."""
    if request.json_schema is None:
        return reply(request)
    shown = _SHOWN.findall(request.messages[0]["content"])
    return json.dumps({label: {"score": int(score), "reason": "r"} for label, score, _i, _p in shown})


def group_asked(engine, since=0):
    """(prompt_id, the sample_idx shown in order) of each group request."""
    out = []
    for r in engine.requests[since:]:
        if r.json_schema is not None:
            shown = _SHOWN.findall(r.messages[0]["content"])
            out.append((shown[0][3], tuple(int(i) for *_x, i, _p in shown)))
    return out


def expected_groups(orders):
    """Per prompt, the sample sets judged, sorted: one per step it reached (2, 4, 6 samples) and order."""
    steps = {p: [tuple(range(at)) for at in range(2, n + 1, 2)] for p, n in EXPECTED.items()}
    return {p: sorted(step for step in sets for _ in range(orders)) for p, sets in steps.items()}


def as_sets(asked):
    out: dict[str, list[tuple]] = {}
    for prompt_id, shown in asked:
        out.setdefault(prompt_id, []).append(tuple(sorted(shown)))
    return {p: sorted(v) for p, v in sorted(out.items())}


@pytest.mark.parametrize("orders", [1, 2])
def test_group_judging_judges_each_step_of_a_group_once_per_order(tmp_path, orders):
    """A group judge under adaptive K: a prompt decided at k_min is judged once per order, an undecided one
    once per step (its set of 2, then 4, then 6 samples), and the decision reads each prompt's latest group."""
    engine = FakeEngine(reply=group_reply)
    cfg = cfg_of(tmp_path, "judge.mode=group", f"judge.orders={orders}")
    manifest = run(cfg, backend="local", build=lambda _c: engine, command="t")
    asked = sampled(engine)
    assert len(asked) == len(set(asked)) == sum(EXPECTED.values()) == manifest["requests"]["sampler"]
    assert per_prompt(asked) == {p: list(range(n)) for p, n in EXPECTED.items()}
    groups = group_asked(engine)
    assert len(groups) == len(set(groups)) == manifest["requests"]["judge"]  # each (set, order) asked once
    assert as_sets(groups) == expected_groups(orders)
    if orders == 2:  # order 1 shows the set in order 0's reverse
        shown: dict[tuple, list[tuple]] = {}
        for prompt_id, order in groups:
            shown.setdefault((prompt_id, tuple(sorted(order))), []).append(order)
        assert all(len(two) == 2 and two[0] == two[1][::-1] for two in shown.values())
    judgments = RunStore(str(tmp_path / "run")).read("judgments")
    assert judgments["group_key"].n_unique() == len(groups)  # the smaller sets' rows stay stored
    pairs = RunStore(str(tmp_path / "run")).read("pairs")
    assert sorted(pairs["prompt_id"].to_list()) == ["p0", "p1"]


def test_group_judging_under_adaptive_k_resumes_with_every_key_once(tmp_path):
    cfg = cfg_of(tmp_path, "judge.mode=group")
    broken = FakeEngine(reply=group_reply, script={("p2", 3): Raise(FatalEngineError("HTTP 401: the key was revoked"))})
    with pytest.raises(FatalRunError):
        run(cfg, backend="local", build=lambda _c: broken, command="t")
    first_samples, first_groups = stored_keys(tmp_path), group_asked(broken)
    assert len(first_samples) < sum(EXPECTED.values())
    engine = FakeEngine(reply=group_reply)
    run(cfg, backend="local", build=lambda _c: engine, command="t")
    resumed = sampled(engine)
    assert not set(resumed) & set(first_samples) and len(resumed) == len(set(resumed))
    assert per_prompt(stored_keys(tmp_path)) == {p: list(range(n)) for p, n in EXPECTED.items()}
    again = group_asked(engine)
    assert not set(again) & set(first_groups)  # a group judged before the kill is not asked again
    both = first_groups + again
    assert len(both) == len(set(both))
    assert as_sets(both) == expected_groups(1)


def test_group_judging_under_a_later_larger_k_judges_only_the_grown_groups(tmp_path):
    engine = FakeEngine(reply=group_reply)
    run(cfg_of(tmp_path, "judge.mode=group", "sampler.k=4"), backend="local", build=lambda _c: engine, command="t")
    assert as_sets(group_asked(engine)) == {"p0": [(0, 1)], **{p: [(0, 1), (0, 1, 2, 3)] for p in ("p1", "p2", "p3")}}
    before = len(engine.requests)
    manifest = run(cfg_of(tmp_path, "judge.mode=group"), backend="local", build=lambda _c: engine, command="t")
    assert per_prompt(sampled(engine, before)) == {"p2": [4, 5], "p3": [4, 5]}
    assert as_sets(group_asked(engine, before)) == {"p2": [tuple(range(6))], "p3": [tuple(range(6))]}
    assert manifest["requests"] == {"sampler": 4, "judge": 2}
    again = len(engine.requests)
    rerun = run(cfg_of(tmp_path, "judge.mode=group"), backend="local", build=lambda _c: engine, command="t")
    assert rerun["requests"] == {"sampler": 0, "judge": 0} and len(engine.requests) == again
