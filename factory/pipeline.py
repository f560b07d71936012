"""One invocation of the factory: prompts -> sample -> judge -> pairs, resuming what is stored.

The driver plans the missing keys of each stage from the run directory, hands them to a Ray
engine pool, and writes each finished batch as its own Parquet part, so an interrupted run loses
at most the batches in flight. `factory pairs` reuses `build_outputs` with no LLM at all.
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
import time
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from factory import config as config_mod
from factory import pairs as pair_kernel
from factory.config import ConfigError, EngineConfig, RunConfig
from factory.prompts import load_prompts, read_text
from factory.schemas import INVALID, JUDGMENTS, SAMPLES
from factory.stages import judge as judge_stage
from factory.stages import sample as sample_stage
from factory.store import RunStore

log = logging.getLogger("factory")

DEFAULT_RUBRIC = Path(__file__).resolve().parent.parent / "conf" / "rubrics" / "default_en.txt"
# Names that hold credentials (api_key, hf_token, secret); not counts such as max_tokens.
_SECRET = re.compile(r"(^|_)(api_?key|key|token|secret|password)$", re.IGNORECASE)


# -- preflight ----------------------------------------------------------------------------------
def model_id(cfg: EngineConfig) -> str:
    """The model's identity in fingerprints: for a GGUF its file name and size, not its folder, so
    the same model on another machine reuses the stored rows."""
    if cfg.kind == "llamacpp":
        from factory.engines.llamacpp import resolve_model

        path = resolve_model(cfg)
        return f"{path.name}:{path.stat().st_size}"
    return cfg.model


def preflight(cfg: RunConfig) -> None:
    """Everything that can be checked before a request is made, each error naming its key."""
    for where, engine in (("sampler.engine", cfg.sampler.engine), ("judge.engine", cfg.judge.engine)):
        try:
            model_id(engine)
        except FileNotFoundError as exc:
            raise ConfigError(f"{where}.{str(exc).split('engine.', 1)[-1]}") from None
        if engine.kind == "openai" and engine.api_key_env and engine.api_key_env not in os.environ:
            raise ConfigError(f"{where}.api_key_env: environment variable {engine.api_key_env!r} is not set")
    for key, path in (
        ("prompts.system_prompt_file", cfg.prompts.system_prompt_file),
        ("prompts.user_template_file", cfg.prompts.user_template_file),
        ("judge.rubric_file", cfg.judge.rubric_file),
    ):
        if path and "://" not in path and not Path(path).is_file():
            raise ConfigError(f"{key}: file not found: {path}")
    judge_stage.check_rubric(rubric_text(cfg), "judge.rubric_file")
    if not cfg.prompts.path:
        raise ConfigError("prompts.path: no prompts file given")


def rubric_text(cfg: RunConfig) -> str:
    return read_text(cfg.judge.rubric_file) if cfg.judge.rubric_file else DEFAULT_RUBRIC.read_text().strip()


def template_text(cfg: RunConfig) -> str:
    parts = [read_text(p) if p else "" for p in (cfg.prompts.system_prompt_file, cfg.prompts.user_template_file)]
    return "\n---\n".join(parts)


def fingerprints(cfg: RunConfig) -> dict[str, str]:
    return {
        "sampler": sample_stage.sampler_fingerprint(
            cfg.sampler.engine, cfg.sampler.sampling, model_id(cfg.sampler.engine), template_text(cfg)
        ),
        "judge": judge_stage.judge_fingerprint(cfg.judge, model_id(cfg.judge.engine), rubric_text(cfg)),
    }


def redact(value: Any) -> Any:
    """The config as stored: any mapping key that looks like a secret has its value masked."""
    if isinstance(value, dict):
        return {k: ("***" if _SECRET.search(str(k)) and k != "api_key_env" and v else redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for package in ("factory", "ray", "polars", "pyarrow", "xllamacpp", "openai", "vllm", "omegaconf", "fsspec"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return out


# -- the stages on Ray --------------------------------------------------------------------------
class _PartWriter:
    """Buffers finished rows and writes a Parquet part every `every` rows (and at the end)."""

    def __init__(self, store: RunStore, name: str, schema: pa.Schema, every: int):
        self.store, self.name, self.schema, self.every = store, name, schema, every
        self.rows: list[dict] = []

    def add(self, rows: list[dict]) -> None:
        self.rows.extend(rows)
        if len(self.rows) >= self.every:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self.store.append(self.name, pa.Table.from_pylist(self.rows, schema=self.schema))
            self.rows = []


def _run_stage(
    label: str,
    engine_cfg: EngineConfig,
    cfg: RunConfig,
    plan_rows: list[dict],
    fn: Any,
    args: tuple,
    store: RunStore,
    name: str,
    schema: pa.Schema,
    on_fail: Any,
    is_failed: Any,
    tokens_of: Any,
) -> dict[str, Any]:
    """Run one stage's plan on a fresh engine pool; returns requests made, restarts, seconds."""
    from factory.runner import EnginePool, Progress, init_ray

    if not plan_rows:
        print(f"[{label}] nothing to do: every key is already stored", file=sys.stderr)
        return {"requests": 0, "restarts": 0, "seconds": 0.0, "rows": 0}
    start = time.perf_counter()
    init_ray(cfg.ray)
    print(f"[{label}] {len(plan_rows)} requests to make; starting {engine_cfg.replicas} {engine_cfg.kind} replica(s)", file=sys.stderr)
    pool = EnginePool(engine_cfg, label)
    writer = _PartWriter(store, name, schema, every=max(engine_cfg.batch_size, 32))
    progress = Progress(label, len(plan_rows), cfg.progress_interval_s)
    requests = 0

    def on_result(batch: list[dict], results: list[dict]) -> None:
        nonlocal requests
        if len(results) != len(batch):
            raise RuntimeError(f"{label}: a batch of {len(batch)} came back with {len(results)} rows")
        writer.add(results)
        requests += sum(int(r.get("attempts") or 1) for r in results)
        progress.update(len(results), tokens=sum(tokens_of(r) for r in results), failed=sum(map(is_failed, results)))

    try:
        pool.map_batches(fn, plan_rows, args, on_result=on_result, on_fail=on_fail)
    finally:
        writer.flush()
        restarts = pool.restarts
        pool.shutdown()
    return {"requests": requests, "restarts": restarts, "seconds": time.perf_counter() - start, "rows": len(plan_rows)}


def _failed_samples(sampler_fp: str):
    def on_fail(batch: list[dict], reason: str) -> list[dict]:
        now = time.time()
        return [
            {
                "prompt_id": r["prompt_id"], "sample_idx": r["sample_idx"], "sampler_fp": sampler_fp, "seed": r["seed"],
                "reasoning": "", "answer": "", "text": "", "reasoning_tokens": 0, "answer_tokens": 0,
                "completion_tokens": 0, "prompt_tokens": None, "finish_reason": "error", "error": reason,
                "latency_s": 0.0, "attempts": 0, "model": None, "created_at": now,
            }
            for r in batch
        ]  # fmt: skip

    return on_fail


def _failed_judgments(judge_fp: str):
    def on_fail(batch: list[dict], reason: str) -> list[dict]:
        now = time.time()
        return [
            {
                "prompt_id": r["prompt_id"], "sample_idx": r["sample_idx"], "sampler_fp": r["sampler_fp"],
                "vote": r["vote"], "judge_fp": judge_fp, "score": None, "quality": None,
                "parse_status": "engine_error", "reason": reason, "dimensions": None, "raw": None,
                "attempts": 0, "error": reason, "latency_s": 0.0, "created_at": now,
            }
            for r in batch
        ]  # fmt: skip

    return on_fail


# -- reading what is stored ---------------------------------------------------------------------
def current_judgments(store: RunStore, judge_fp: str, samples: pl.DataFrame) -> pl.DataFrame:
    stored = store.read("judgments", JUDGMENTS)
    if stored is None or not samples.height:
        return pl.from_arrow(JUDGMENTS.empty_table())  # type: ignore[return-value]
    keys = samples.select("prompt_id", "sample_idx", "sampler_fp")
    return (
        stored.filter(pl.col("judge_fp") == judge_fp)
        .join(keys, on=["prompt_id", "sample_idx", "sampler_fp"], how="semi")
        .sort("created_at")
        .unique(subset=["prompt_id", "sample_idx", "vote"], keep="last", maintain_order=True)
    )


def scored_samples(samples: pl.DataFrame, judgments: pl.DataFrame) -> pl.DataFrame:
    """Samples with their aggregated judge quality (null when no usable vote)."""
    quality = judge_stage.sample_quality(judgments) if judgments.height else None
    if quality is None:
        return samples.with_columns(
            pl.lit(None, pl.Float64).alias("quality"), pl.lit(None, pl.Float64).alias("score"),
            pl.lit(0.0).alias("quality_spread"), pl.lit(0, pl.Int64).alias("votes_ok"), pl.lit(0, pl.Int64).alias("votes"),
        )  # fmt: skip
    return samples.join(quality, on=["prompt_id", "sample_idx"], how="left")


def stored_scored(
    store: RunStore, cfg: RunConfig, prompts: pl.DataFrame, fps: dict[str, str]
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(samples, judgments, scored samples) of this run's fingerprints and prompts, as stored."""
    samples = sample_stage.current_samples(store.read("samples", SAMPLES), fps["sampler"], prompts["prompt_id"], cfg.sampler.k)
    if not samples.height:
        samples = pl.from_arrow(SAMPLES.empty_table())  # type: ignore[assignment]
    judgments = current_judgments(store, fps["judge"], samples)
    return samples, judgments, scored_samples(samples, judgments)


def build_outputs(store: RunStore, cfg: RunConfig, prompts: pl.DataFrame, fps: dict[str, str]) -> dict[str, Any]:
    """pairs/ and sft/ from what is stored: no LLM call. Returns counts for the manifest."""
    samples, judgments, scored = stored_scored(store, cfg, prompts, fps)
    built = pair_kernel.build(scored, prompts, cfg.pairs, cfg.judge.scale_max)
    stats, pairs = built.stats, built.pairs
    store.replace("pairs", pairs.to_arrow().cast(pair_kernel.pairs_schema(cfg.pairs.format)))
    for export in ("filter_long", "dp_sft"):
        if export in built.sft:
            store.replace("sft", built.sft[export], prefix=export)
        else:  # an export no longer asked for must not linger as if current
            for path in [p for p in store.parts("sft") if p.rsplit("/", 1)[-1].startswith(export + "-")]:
                store.fs.rm(path)
    note = pair_kernel.target_note(stats)
    if note:
        print(note, file=sys.stderr)
    usable = judgments.filter(pl.col("parse_status").is_in(judge_stage.USABLE)).height if judgments.height else 0
    status = dict(zip(*judgments["parse_status"].value_counts().to_dict(as_series=False).values())) if judgments.height else {}
    return {
        "samples_ok": samples.filter(pl.col("error").is_null()).height,
        "samples_failed": samples.filter(pl.col("error").is_not_null()).height,
        "judgments_ok": usable,
        "judgments_failed": judgments.height - usable,
        "parse_status": status,
        "groups": stats.groups,
        "pairs_kept": stats.pairs_kept,
        "pairs_dropped": stats.pairs_dropped,
        "pairs": stats.as_dict(),
        "_scored": scored,
        "_pairs": pairs,
    }


# -- the whole run --------------------------------------------------------------------------------
def run(cfg: RunConfig) -> dict[str, Any]:
    """One `factory run`; with pairs.target set, prompts are drawn until the target is met."""
    return run_to_target(cfg) if cfg.pairs.target else _run_once(cfg)


def run_to_target(cfg: RunConfig) -> dict[str, Any]:
    """pairs.target: run on a first draw of prompt rows (prompts.limit, else an estimate from the
    target and drop_ratio), then raise prompts.limit to what the observed survival rate (pairs kept
    per prompt row) says is needed, +10%, and run again: only the new prompts are sampled and judged.
    Stops when the target is met or the pool has no more rows; with no pair yet, the draw doubles."""
    target = int(cfg.pairs.target or 0)
    drop = cfg.pairs.drop_ratio if cfg.pairs.strategy != "long2short" and cfg.pairs.min_margin is None else 0.0
    limit = cfg.prompts.limit or math.ceil(1.2 * target / (1.0 - drop))
    requests = {"sampler": 0, "judge": 0}
    draws: list[dict[str, int]] = []
    while True:
        manifest = _run_once(replace(cfg, prompts=replace(cfg.prompts, limit=limit)))
        for key in requests:
            requests[key] += manifest["requests"][key]
        kept, rows = manifest["counts"]["pairs_kept"], manifest["counts"]["prompts_in"]
        draws.append({"limit": limit, "prompts_in": rows, "pairs_kept": kept})
        if kept >= target or rows < limit:  # met, or the pool ran out of rows
            break
        more = limit if kept == 0 else math.ceil(1.1 * (target - kept) * rows / kept)
        limit = rows + max(more, 1)
        print(f"[target] {kept} of {target} pairs from {rows} prompt rows; drawing up to {limit}", file=sys.stderr)
    scored, pairs = manifest.pop("_scored"), manifest.pop("_pairs")
    manifest["requests"] = requests
    manifest["target"] = {"target": target, "met": kept >= target, "draws": draws}
    RunStore(cfg.output_dir).write_json("manifest.json", manifest)
    manifest["_scored"], manifest["_pairs"] = scored, pairs
    return manifest


def _run_once(cfg: RunConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    preflight(cfg)
    fps = fingerprints(cfg)
    store = RunStore(cfg.output_dir)
    previous = store.read_json("manifest.json") or {}

    t = time.perf_counter()
    prompts, invalid = load_prompts(cfg.prompts)
    store.replace("prompts", prompts)
    if invalid.height:
        store.replace("invalid", invalid.to_arrow().cast(INVALID))
    for row in invalid.iter_rows(named=True):
        print(f"[prompts] row {row['row_index']} invalid: {row['reason']}", file=sys.stderr)
    timings["prompts"] = time.perf_counter() - t
    print(f"[prompts] {prompts.height} valid, {invalid.height} invalid", file=sys.stderr)

    # sample
    plan = sample_stage.plan_samples(
        prompts, store.read("samples", SAMPLES), cfg.sampler.k, fps["sampler"], cfg.sampler.sampling.seed,
        retry_failed=cfg.sampler.retry_failed,
    )  # fmt: skip
    sample_run = _run_stage(
        "sample", cfg.sampler.engine, cfg, plan.to_dicts(), sample_stage.sample_batch,
        (cfg.sampler.sampling, fps["sampler"]), store, "samples", SAMPLES,
        _failed_samples(fps["sampler"]), lambda r: r["error"] is not None, lambda r: r["completion_tokens"] or 0,
    )  # fmt: skip
    timings["sample"] = sample_run["seconds"]

    # judge
    samples = sample_stage.current_samples(store.read("samples", SAMPLES), fps["sampler"], prompts["prompt_id"], cfg.sampler.k)
    judge_plan = (
        judge_stage.plan_judgments(samples, prompts, store.read("judgments", JUDGMENTS), cfg.judge, fps["judge"], rubric_text(cfg))
        if samples.height
        else pl.DataFrame()
    )
    judge_run = _run_stage(
        "judge", cfg.judge.engine, cfg, judge_plan.to_dicts(), judge_stage.judge_batch,
        (cfg.judge, fps["judge"]), store, "judgments", JUDGMENTS,
        _failed_judgments(fps["judge"]), lambda r: r["parse_status"] not in judge_stage.USABLE,
        lambda r: r.get("completion_tokens") or 0,
    )  # fmt: skip
    timings["judge"] = judge_run["seconds"]

    t = time.perf_counter()
    outputs = build_outputs(store, cfg, prompts, fps)
    timings["pairs"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0

    scored = outputs.pop("_scored")
    pairs = outputs.pop("_pairs")
    counts = {
        "prompts_in": prompts.height + invalid.height,
        "prompts_valid": prompts.height,
        "prompts_invalid": invalid.height,
        "samples_expected": prompts.height * cfg.sampler.k,
        **{k: v for k, v in outputs.items() if k not in ("pairs", "parse_status")},
    }
    manifest = {
        "config": redact(config_mod.to_dict(cfg)),
        "fingerprints": fps,
        "versions": versions(),
        "counts": counts,
        "requests": {"sampler": sample_run["requests"], "judge": judge_run["requests"]},
        "restarts": {"sampler": sample_run["restarts"], "judge": judge_run["restarts"]},
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "parse_status": outputs["parse_status"],
        "pairs": outputs["pairs"],
        "history": (previous.get("history") or [])
        + [{"at": time.time(), "requests": {"sampler": sample_run["requests"], "judge": judge_run["requests"]}, "counts": counts}],
        "output_dir": store.url,
    }
    store.write_json("manifest.json", manifest)
    manifest["_scored"], manifest["_pairs"] = scored, pairs
    return manifest
