"""`factory eval CONFIG`: candidate models answer a held-out prompt set, the configured judge scores them,
and the paper's table compares them with a baseline. The stages and the executor of `factory run`:

    sample:<name>   one SampleStage per candidate with an engine (its engine, sampling, eval.k)
    judge:<name>    one JudgeStage per candidate, fed by its sample stage (or by its imported answers file)

Stages with the same engine identity share one pool (two temperatures of one model load it once, and the
judge too when its engine is the same). Every row is keyed as in a run: (prompt_id, sample_idx) under the
candidate's sampler fingerprint, judgments under the judge fingerprint, so adding a candidate samples
only that candidate and a rerun makes 0 requests.

The eval directory (eval.output_dir, default OUTPUT_DIR/eval) is a run directory of its own:
    manifest.json, metrics.json, plan.json (--dry-run)
    prompts/ invalid/ samples/ judgments/        as in a run (samples of every candidate, by fingerprint)
    report/eval.md  eval.json  eval.parquet      the table (one row per model), its notes and numbers; with
                                                 eval.sets, each set's table overall and multi-turn (eval.json splits)
    report/eval_samples.parquet                  one row per (model, prompt, sample): score, tokens, RT, ...
    report/score_vs_rt.png                       mean score against mean RT per model
    report/epochs.md  epochs.json  epochs.png    with --checkpoints: one row per saved checkpoint (§4.9's table;
                                                 factory/evaluation/checkpoints.py)
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import polars as pl

from factory import graph
from factory.config import ConfigError, RunConfig
from factory.evaluation import answers as answers_mod
from factory.evaluation import table as table_mod
from factory.prompts import load_prompts
from factory.rundir.guard import check_run_dir
from factory.rundir.schemas import INVALID, SAMPLES
from factory.stages import judge as judge_stage
from factory.stages import sample as sample_stage
from factory.rundir.store import RunStore
from factory.rundir.manifest import Manifest
from factory.session import Session


def eval_dir(cfg: RunConfig) -> str:
    return cfg.eval.output_dir or f"{cfg.output_dir.rstrip('/')}/eval"


def _check_engine(engine: Any, key: str, secrets: bool) -> None:
    graph.model_id(engine, key)
    if secrets:
        graph.check_credentials(engine, key)


def preflight(cfg: RunConfig, secrets: bool = True) -> None:
    """Everything checkable before a request, each error naming its key (no API key needed when `secrets`
    is False: a plan sends nothing)."""
    e = cfg.eval
    if not e.candidates:
        raise ConfigError(
            "eval.candidates: no candidate model; add some, e.g. eval.candidates.base.sampling.temperature=0.7 "
            "or an eval: section as in conf/eval_demo.yaml"
        )
    if not e.prompts and not e.sets:
        raise ConfigError("eval.prompts: no held-out prompts file given")
    for path, key in prompt_sets(cfg).values():
        if "://" not in path and not Path(path).exists():
            raise ConfigError(f"{key}: not found: {path}")
    for name, candidate in e.candidates.items():
        key = f"eval.candidates.{name}"
        if candidate.answers_path:
            path = candidate.answers_path
            if "://" not in path and not Path(path).is_file():
                raise ConfigError(f"{key}.answers_path: file not found: {path}")
            if not path.lower().endswith(answers_mod.FORMATS):
                raise ConfigError(f"{key}.answers_path: {path} is not a .parquet, .jsonl or .json file")
        else:
            _check_engine(candidate.engine, f"{key}.engine", secrets)
    _check_engine(cfg.judge.engine, "judge.engine", secrets)
    for key, path in (
        ("prompts.system_prompt_file", cfg.prompts.system_prompt_file),
        ("prompts.user_template_file", cfg.prompts.user_template_file),
        ("judge.rubric_file", cfg.judge.rubric_file),
    ):
        if path and "://" not in path and not Path(path).is_file():
            raise ConfigError(f"{key}: file not found: {path}")
    for path, key in prompt_sets(cfg).values():
        graph.check_prompts(cfg, path, key)
    judge = graph.GenRMNode.of(cfg, stored={})  # the run's primary judge node (no model file looked at)
    judge_stage.check_rubric(judge.rubric, f"{judge.key}.rubric_file")


def fingerprints(cfg: RunConfig) -> dict[str, Any]:
    """{"judge": fp, "candidates": {name: fp}}; two candidates that would sample alike are refused."""
    template = graph.template_text(cfg)
    out: dict[str, str] = {}
    for name, c in cfg.eval.candidates.items():
        key = f"eval.candidates.{name}"
        if c.answers_path:
            out[name] = answers_mod.answers_fingerprint(c.answers_path, f"{key}.answers_path")
        else:
            out[name] = sample_stage.sampler_fingerprint(
                c.engine, c.sampling, graph.model_id(c.engine, f"{key}.engine"), template
            )
        twin = next((other for other, fp in out.items() if fp == out[name] and other != name), None)
        if twin is not None:
            raise ConfigError(
                f"{key}: samples exactly as eval.candidates.{twin} (same model, engine kind, sampling and template, "
                "or the same answers file); change one of them or drop it"
            )
    return {"judge": graph.GenRMNode.of(cfg).fingerprint, "candidates": out}


def prompt_sets(cfg: RunConfig) -> dict[str, tuple[str, str]]:
    """The held-out sets: name -> (prompts path, its config key); one unnamed set from eval.prompts
    when eval.sets is not given."""
    if cfg.eval.sets:
        return {name: (path, f"eval.sets.{name}") for name, path in cfg.eval.sets.items()}
    return {"": (cfg.eval.prompts, "eval.prompts")}


def eval_prompts(cfg: RunConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Every set's prompts (eval.sets: each with a `set` column naming it, in the sets' order) and invalid rows."""
    parts, bad, seen = [], [], {}
    for name, (path, key) in prompt_sets(cfg).items():
        prompts, invalid = load_prompts(replace(cfg.prompts, path=path, limit=cfg.eval.limit))
        if not prompts.height:
            raise ConfigError(f"{key}: no valid prompt in {path} ({invalid.height} invalid rows)")
        if not name:
            return prompts, invalid
        for prompt_id in prompts["prompt_id"]:
            if prompt_id in seen:
                raise ConfigError(
                    f"{key}: prompt id {prompt_id!r} is also in eval.sets.{seen[prompt_id]}; "
                    "ids must differ across sets"
                )
            seen[prompt_id] = name
        parts.append(prompts.with_columns(pl.lit(name).alias("set")))
        bad.append(invalid)
    return pl.concat(parts, how="diagonal_relaxed"), pl.concat(bad, how="diagonal_relaxed")


def stages(cfg: RunConfig, prompts: pl.DataFrame, fps: dict[str, Any]) -> list:
    """One sample stage per candidate with an engine, then one judge stage per candidate."""
    e, rubric = cfg.eval, graph.GenRMNode.of(cfg, stored={}).rubric
    samplers, judges = [], []
    for name, c in e.candidates.items():
        fp = fps["candidates"][name]
        if not c.answers_path:
            samplers.append(sample_stage.SampleStage(
                cfg, fp, prompts, engine=c.engine, sampling=c.sampling, k=e.k, retry_failed=e.retry_failed,
                name=f"sample:{name}",
            ))  # fmt: skip
        group = {"resample_failed": e.retry_failed} if cfg.judge.mode == "group" else {}  # one group per prompt
        judge_class = judge_stage.GroupJudgeStage if group else judge_stage.JudgeStage
        judges.append(judge_class(
            cfg, {f"judge:{name}": fps["judge"], "sampler": fp}, prompts, rubric, k=e.k, name=f"judge:{name}",
            upstream=None if c.answers_path else f"sample:{name}", **group,
        ))  # fmt: skip
    return samplers + judges


def prices(cfg: RunConfig) -> dict[str, Any]:
    from factory.executor.budget import at_rate

    out = {f"sample:{name}": at_rate(c.cost, c.engine) for name, c in cfg.eval.candidates.items()}
    return out | {f"judge:{name}": at_rate(cfg.cost.judge, cfg.judge.engine) for name in cfg.eval.candidates}


def price_keys(cfg: RunConfig) -> dict[str, str]:
    """Stage -> the config key of its prices (named where a paid stage has none)."""
    judge = graph.GenRMNode.of(cfg, stored={}).price_key
    return {
        k: v
        for name in cfg.eval.candidates
        for k, v in ((f"sample:{name}", f"eval.candidates.{name}.cost"), (f"judge:{name}", judge))
    }


def _samples_of(store: RunStore, fp: str, prompts: pl.DataFrame, k: int) -> pl.DataFrame:
    stored = store.read("samples", SAMPLES)
    samples = sample_stage.current_samples(stored, fp, prompts["prompt_id"], k, sample_stage.prompt_hashes(prompts))
    return samples if samples.height else pl.from_arrow(SAMPLES.empty_table())  # type: ignore[return-value]


def collect(
    store: RunStore, cfg: RunConfig, prompts: pl.DataFrame, fps: dict[str, Any], graph: list
) -> tuple[pl.DataFrame, dict[str, pl.DataFrame]]:
    """(every candidate's scored samples with a candidate column, each candidate's judgments) as stored."""
    judges = {s.name: s for s in graph if isinstance(s, judge_stage.JudgeStage)}
    frames, judgments = [], {}
    for name in cfg.eval.candidates:
        samples = _samples_of(store, fps["candidates"][name], prompts, cfg.eval.k)
        judged = judges[f"judge:{name}"].read(store, samples)
        judgments[name] = judged
        scored = judge_stage.with_quality(samples, judged)
        frames.append(scored.with_columns(pl.lit(name).alias("candidate")))
    columns = [
        "candidate",
        "prompt_id",
        "sample_idx",
        "sampler_fp",
        "error",
        "finish_reason",
        "reasoning",
        "answer",
        "completion_tokens",
        "reasoning_tokens",
        "answer_tokens",
        "score",
        "quality",
        "votes_ok",
        "votes",
    ]
    return pl.concat([f.select(columns) for f in frames], how="vertical_relaxed"), judgments


def write_outputs(
    store: RunStore,
    cfg: RunConfig,
    samples: pl.DataFrame,
    judgments: dict,
    prompts: pl.DataFrame,
    extra_notes: list[str],
) -> dict[str, Any]:
    """report/: the table as Markdown, JSON and Parquet, the per-sample Parquet and the PNG."""
    names = list(cfg.eval.candidates)
    detail = table_mod.per_sample(samples, prompts, cfg)
    rows = table_mod.build_table(detail, judgments, names, cfg, prompts.height)
    answerable = any(r["answerable_labelled"] for r in rows)
    notes = table_mod.notes(cfg, rows, extra_notes)
    splits = table_mod.split_tables(detail, judgments, names, cfg, prompts)
    text = "\n".join(
        [f"# factory eval: {store.url}", "", table_mod.markdown_table(rows, cfg, answerable), ""]
        + table_mod.splits_markdown(splits, cfg, answerable)
        + [f"- {n}" for n in notes]
        + ["", "Files: eval.parquet, eval.json, eval_samples.parquet, score_vs_rt.png", ""]
    )
    store.write_bytes("report/eval.md", text.encode())
    store.write_bytes("report/eval.parquet", table_mod.parquet_bytes(pl.DataFrame(rows, infer_schema_length=None)))
    store.write_bytes("report/eval_samples.parquet", table_mod.parquet_bytes(detail.drop("reasoning")))
    numbers = {
        "baseline": rows[0]["baseline"],
        "decode_tokens_per_s": cfg.decode_tokens_per_s,
        "scale_max": cfg.judge.scale_max,
        "k": cfg.eval.k,
        "bootstrap": cfg.eval.bootstrap,
        "seed": cfg.eval.seed,
        "answerable_method": "rule: eval.referral_patterns on the reply text" if answerable else None,
        "models": rows,
        "notes": notes,
        "splits": splits,
    }
    store.write_bytes("report/eval.json", json.dumps(numbers, indent=2, default=str).encode())
    store.write_bytes("report/score_vs_rt.png", table_mod.score_rt_png(rows, detail, cfg))
    return {"rows": rows, "markdown": text, "notes": notes}


def evaluate(
    cfg: RunConfig, backend: str = "ray", build: Any = None, take_over: bool = False, checkpoints: list | None = None
) -> dict[str, Any]:
    """One `factory eval`: returns {"manifest", "rows", "markdown", "notes"} (the table is also in report/).
    `checkpoints` (factory.evaluation.checkpoints.with_checkpoints): also report/epochs.*, returned as "epochs".
    As `factory run`, inside a Session: checked before any request, the eval directory shown writable and
    its lease taken, secrets scrubbed from every stored part, metrics and manifest."""
    fps: dict[str, Any] = {}

    def check() -> None:
        preflight(cfg)
        fps.update(fingerprints(cfg))

    session = Session(
        cfg,
        eval_dir(cfg),
        output_key="eval.output_dir",
        preflight=check,
        prices=prices(cfg),
        price_keys=price_keys(cfg),
        backend=backend,
        build=build,
        take_over=take_over,
    )
    with session:
        store = session.store
        prompts, invalid = eval_prompts(cfg)
        sample_stage.stamp_prompt_hashes(store)  # samples stored before prompt_hash: from prompts/, before it goes
        store.replace("prompts", prompts)
        if invalid.height:
            store.replace("invalid", invalid.to_arrow().cast(INVALID))
        id_column = cfg.prompts.id_column
        imported = {
            name: answers_mod.import_answers(store, c, name, prompts, id_column, cfg.eval.k, fps["candidates"][name])
            for name, c in cfg.eval.candidates.items()
            if c.answers_path
        }
        stage_graph = stages(cfg, prompts, fps)
        session.say(f"[eval] {prompts.height} held-out prompts, {len(cfg.eval.candidates)} candidates -> {store.url}")
        for name, counts in imported.items():
            session.say(
                f"[eval] {name}: {counts['to_import']} answers imported from its file ({counts['tokens']} token counts)"
            )
        done = session.run(stage_graph)
        samples, judgments = collect(store, cfg, prompts, fps, stage_graph)
        extra = [
            f"{name}: answers from {cfg.eval.candidates[name].answers_path}; token counts {c['tokens']}"
            + (f"; {c['unknown_prompt']} rows for prompts not in the set left out" if c["unknown_prompt"] else "")
            + (f"; {c['beyond_k']} rows with sample_idx >= eval.k left out" if c["beyond_k"] else "")
            for name, c in imported.items()
        ]
        outputs = write_outputs(store, cfg, samples, judgments, prompts, extra)
        if checkpoints:
            from factory.evaluation import checkpoints as checkpoints_mod

            outputs["epochs"] = checkpoints_mod.write_epochs(store, outputs["rows"], checkpoints)
        manifest = Manifest.of_config(
            cfg,
            command="eval",
            fingerprints=fps,
            counts={
                "prompts_in": prompts.height + invalid.height,
                "prompts_valid": prompts.height,
                "prompts_invalid": invalid.height,
                "answers_imported": imported,
                "samples": {name: int((samples["candidate"] == name).sum()) for name in cfg.eval.candidates},
            },
            requests={name: m.requests for name, m in done.items()},
            output_dir=store.url,
        )
        written = session.finish(manifest)
    print(f"eval: {store.url}/report/eval.md", file=sys.stderr)
    return {"manifest": written, **outputs}


def eval_plan(cfg: RunConfig) -> dict[str, Any]:
    """`factory eval --dry-run`: the plan of every stage (factory/commands/plan.py), nothing sent, only
    plan.json written."""
    from factory.commands import plan as plan_mod

    t0 = time.perf_counter()
    preflight(cfg, secrets=False)
    fps = fingerprints(cfg)
    store = RunStore(eval_dir(cfg), create=False)
    check_run_dir(store, "eval.output_dir")  # plan.json is written there: the same refusal as the eval's
    prompts, invalid = eval_prompts(cfg)
    feeds = {}
    for name, c in cfg.eval.candidates.items():
        if c.answers_path:
            rows, _ = answers_mod.pending_answers(
                store, c, name, prompts, cfg.prompts.id_column, cfg.eval.k, fps["candidates"][name]
            )
            judgeable = rows.filter(pl.col("answer").str.strip_chars().str.len_chars() > 0)
            feeds[f"judge:{name}"] = {
                "stage": f"answers of {name}", "requests": rows.height, "fingerprint": fps["candidates"][name],
                "_work": rows, "share": (judgeable.height / rows.height if rows.height else 1.0, "the answers file"),
                "answer_tokens": float(judgeable["answer_tokens"].mean() or 0.0) if judgeable.height else 0.0,  # type: ignore[arg-type]
                "reasoning_tokens": float(judgeable["reasoning_tokens"].mean() or 0.0) if judgeable.height else 0.0,  # type: ignore[arg-type]
                "answer_how": "the answers file",
            }  # fmt: skip
    plans = plan_mod.plan_stages(store, stages(cfg, prompts, fps), prices(cfg), feeds, price_keys(cfg))
    head = {
        "command": "eval",
        "output_dir": store.url,
        "run_directory": "exists" if store.exists("manifest.json") or store.parts("samples") else "new",
        "prompts": {
            "valid": prompts.height,
            "invalid": invalid.height,
            "path": cfg.eval.prompts or dict(cfg.eval.sets),
        },
        "target": None,
        "fingerprints": fps,
        "max_usd": cfg.cost.max_usd,
    }
    return plan_mod.finish(head, plans, store, t0)
