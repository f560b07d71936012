"""Filters before judging: `factory run` on the in-process executor with a fake engine sends the judge
(and the reward models) only the samples that pass the pair build's judge-free exclusions, and the
pair build counts the others exactly as when every sample was judged."""

import polars as pl

from factory import config
from factory.graph import RunGraph
from factory.pairs import prejudge
from factory.rundir.schemas import SAMPLES
from factory.rundir.store import RunStore
from tests.fakes import FakeEngine
from tests.synthetic import write_prompts


def cfg_of(tmp_path, out, *extra):
    prompts = write_prompts(tmp_path / "prompts.jsonl", 6)
    rubric = tmp_path / "rubric.txt"
    rubric.write_text("Rate {answer} from 0 to {scale_max}.")
    return config.load(
        None,
        [f"output_dir={tmp_path / out}", f"prompts.path={prompts}", "sampler.k=4", f"judge.rubric_file={rubric}",
         "progress_interval_s=60", "pairs.sft=[]", *extra],
    )  # fmt: skip


def local_run(cfg, engine):
    from factory.run import run

    return run(cfg, backend="local", build=lambda _cfg: engine, command="factory run test")


def judged(engine):
    return sorted((r.tag) for r in engine.requests if r.json_schema is not None)


RULE = "pairs.terms=[{source: answer_chars, exclude_above: 25}]"


def test_the_judge_gets_only_the_surviving_samples_and_the_counts_stay(tmp_path):
    late, early = FakeEngine(), FakeEngine()
    after = local_run(cfg_of(tmp_path, "after", RULE), early)
    before = local_run(cfg_of(tmp_path, "before", RULE, "pairs.filter_before_judge=false"), late)
    samples = RunStore(str(tmp_path / "after")).read("samples", SAMPLES)
    surviving = prejudge.passing(samples, RunGraph(cfg_of(tmp_path, "after", RULE)).cfg.pairs)
    survivors = surviving.filter(pl.col("exclusion").is_null()).height
    assert 0 < survivors < samples.height  # the rule bites, and something is left
    assert before["requests"]["judge"] == samples.height
    assert after["requests"]["judge"] == survivors == len(judged(early))
    # The same samples (same seeds), the same pair build: every count equal, nothing left unjudged.
    assert after["pairs"]["samples_excluded"] == before["pairs"]["samples_excluded"]
    assert after["pairs"]["samples_excluded"]["no_judgment"] == 0
    assert after["pairs"]["samples_excluded"]["answer_chars"] > 0
    assert after["counts"]["pairs_kept"] == before["counts"]["pairs_kept"]


def test_loosening_the_filter_later_asks_only_for_the_judgments_now_missing(tmp_path):
    first = local_run(cfg_of(tmp_path, "run", RULE), FakeEngine())
    engine = FakeEngine()
    looser = local_run(cfg_of(tmp_path, "run", "pairs.terms=[{source: answer_chars, exclude_above: 35}]"), engine)
    samples = RunStore(str(tmp_path / "run")).read("samples", SAMPLES)
    passes = {
        limit: set(
            prejudge.passing(
                samples,
                cfg_of(tmp_path, "run", f"pairs.terms=[{{source: answer_chars, exclude_above: {limit}}}]").pairs,
            )
            .filter(pl.col("exclusion").is_null())
            .select("prompt_id", "sample_idx")
            .iter_rows()
        )
        for limit in (25, 35)
    }
    assert passes[25] < passes[35]
    assert looser["requests"] == {"sampler": 0, "judge": len(passes[35] - passes[25])}
    assert len(judged(engine)) == len(passes[35] - passes[25])
    assert first["requests"]["judge"] == len(passes[25])
    # tighter again: nothing to ask
    assert local_run(cfg_of(tmp_path, "run", RULE), FakeEngine())["requests"] == {"sampler": 0, "judge": 0}


def test_factory_plan_shows_the_saving(tmp_path):
    from factory.commands.plan import plan_stage

    cfg = cfg_of(tmp_path, "run", RULE)
    local_run(cfg, FakeEngine())
    store = RunStore(cfg.output_dir)
    store.remove("judgments")  # as if sampled only: plan the judge
    prompts = store.read("prompts")
    samples = store.read("samples", SAMPLES)
    survivors = prejudge.passing(samples, cfg.pairs).filter(pl.col("exclusion").is_null()).height
    filtered = plan_stage(RunGraph(cfg).stages(prompts)[1], store, None, None, None)
    unfiltered_cfg = cfg_of(tmp_path, "run", RULE, "pairs.filter_before_judge=false")
    unfiltered = plan_stage(RunGraph(unfiltered_cfg).stages(prompts)[1], store, None, None, None)
    assert unfiltered["requests"] == samples.height and filtered["requests"] == survivors
    saved = samples.height - survivors
    assert any(
        n.startswith(f"{saved} excluded before judging by the pair filters (answer_chars") for n in filtered["notes"]
    )


def test_factory_plan_estimates_future_judge_requests_at_the_observed_pass_share(tmp_path):
    from factory.commands.plan import plan_stage

    cfg = cfg_of(tmp_path, "run", RULE)
    local_run(cfg, FakeEngine())
    store = RunStore(cfg.output_dir)
    samples = store.read("samples", SAMPLES)
    share = prejudge.passing(samples, cfg.pairs)["exclusion"].is_null().mean()
    upstream_requests = 40  # say a growth step will sample 40 more
    grown = RunGraph(cfg).stages(store.read("prompts"))
    upstream = {"requests": upstream_requests, "fingerprint": grown[0].sampler_fp, "stage": "sample",
                "share": (1.0, "assumed"), "_work": store.read("prompts").select("prompt_id"),
                "answer_tokens": 5.0, "reasoning_tokens": 0.0, "answer_how": "observed"}  # fmt: skip
    plan = plan_stage(grown[1], store, upstream, None, None)
    assert plan["requests_estimated"] == round(upstream_requests * share)
    assert any("passing the pair filters before judging (observed on 24)" in n for n in plan["notes"])
