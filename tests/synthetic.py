"""A small synthetic run directory made with the real stage functions and a fake engine (no model, no Ray)."""

from __future__ import annotations

import json

import polars as pl
import pyarrow as pa

from factory import config as config_mod
from factory.config import PromptsConfig, RunConfig
from factory.prompts import prepare_prompts
from factory.rebuild import rebuild_pairs
from factory.schemas import JUDGMENTS, SAMPLES
from factory.stages.judge import judge_batch, plan_judgments
from factory.stages.sample import plan_samples, sample_batch
from factory.store import RunStore
from tests.fakes import FakeEngine


def make_run(url: str, n_prompts: int = 6, k: int = 4) -> RunStore:
    cfg = RunConfig(output_dir=url)
    cfg.sampler.k = k
    rows = [
        (i, {"id": f"p{i}", "product_info": {"name": f"thing {i}"}, "history": [], "question": f"q{i}?"})
        for i in range(n_prompts)
    ] + [(n_prompts, {"id": "bad", "question": ""})]
    prompts, invalid = prepare_prompts(rows, PromptsConfig())
    store = RunStore(url)
    store.replace("prompts", prompts)
    store.replace("invalid", invalid)
    plan = plan_samples(prompts, None, k, "sfp", 0)
    samples = sample_batch(FakeEngine(), plan.to_dicts(), cfg.sampler.sampling, "sfp")
    store.append("samples", pa.Table.from_pylist(samples, schema=SAMPLES))
    jplan = plan_judgments(pl.DataFrame(samples), prompts, None, cfg.judge, "jfp", "{answer} {scale_max}")
    script = {i: json.dumps({"score": (i * 37) % 101, "reason": "r"}) for i in range(jplan.height)}
    judgments = judge_batch(FakeEngine(script=script), jplan.to_dicts(), cfg.judge, "jfp")
    store.append("judgments", pa.Table.from_pylist(judgments, schema=JUDGMENTS))
    store.write_json(
        "manifest.json",
        {
            "config": config_mod.to_dict(cfg),
            "fingerprints": {"sampler": "sfp", "judge": "jfp"},
            "counts": {"prompts_in": n_prompts + 1, "prompts_invalid": 1},
            "requests": {"sampler": len(samples), "judge": len(judgments)},
        },
    )
    rebuild_pairs(url)
    return store
