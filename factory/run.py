"""The graph of `factory run`: prompts -> sample -> judge -> pairs, resuming what is stored.

    manifest = run(load("conf/demo.yaml"))        # on Ray; run(cfg, backend="local") in process

The stages (factory/stages) plan what is missing from the run directory's keys; the executor
(factory/executor) runs them on engine pools that live for the whole run and stores every finished
row within `store.flush_s`. `factory pairs` reuses `build_outputs` with no LLM at all.
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

from factory import config as config_mod
from factory import pairs as pair_kernel
from factory.config import ConfigError, EngineConfig, RunConfig
from factory.cost import Budget, run_prices
from factory.executor import Executor
from factory.lease import Lease
from factory.prompts import load_prompts, read_text
from factory.schemas import INVALID
from factory.secrets import redact_url, scrub, scrub_all, scrub_table, secret_values
from factory.stages import judge as judge_stage
from factory.stages import sample as sample_stage
from factory.store import RunStore, open_output

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
    """The config as stored: any mapping key that looks like a secret has its value masked, and
    credentials written into a URL (https://user:pass@host) are too."""
    if isinstance(value, dict):
        return {k: ("***" if _SECRET.search(str(k)) and k != "api_key_env" and v else redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str) and "://" in value and "@" in value:
        return redact_url(value)
    return value


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for package in ("factory", "ray", "polars", "pyarrow", "xllamacpp", "openai", "vllm", "omegaconf", "fsspec"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return out


# -- reading what is stored ---------------------------------------------------------------------
def scored_samples(samples: pl.DataFrame, judgments: pl.DataFrame) -> pl.DataFrame:
    """Samples with their aggregated judge quality (null when no usable vote)."""
    quality = judge_stage.sample_quality(judgments) if judgments.height else None
    if quality is None:
        return samples.with_columns(
            pl.lit(None, pl.Float64).alias("quality"), pl.lit(None, pl.Float64).alias("score"),
            pl.lit(0.0).alias("quality_spread"), pl.lit(0, pl.Int64).alias("votes_ok"), pl.lit(0, pl.Int64).alias("votes"),
        )  # fmt: skip
    return samples.join(quality, on=["prompt_id", "sample_idx"], how="left")


def stages(cfg: RunConfig, prompts: pl.DataFrame, fps: dict[str, str]) -> list:
    """The stage graph of `factory run`: sample -> judge (the judge is fed by stored samples)."""
    return [
        sample_stage.SampleStage(cfg, fps["sampler"], prompts),
        judge_stage.JudgeStage(cfg, fps, prompts, rubric_text(cfg)),
    ]


def stored_scored(
    store: RunStore, cfg: RunConfig, prompts: pl.DataFrame, fps: dict[str, str]
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(samples, judgments, scored samples) of this run's fingerprints and prompts, as stored."""
    sample, judge = stages(cfg, prompts, fps)
    samples = sample.read(store)
    judgments = judge.read(store, samples)
    return samples, judgments, scored_samples(samples, judgments)


def build_outputs(store: RunStore, cfg: RunConfig, prompts: pl.DataFrame, fps: dict[str, str]) -> dict[str, Any]:
    """pairs/ and sft/ from what is stored: no LLM call. Returns counts for the manifest."""
    samples, judgments, scored = stored_scored(store, cfg, prompts, fps)
    built = pair_kernel.build(scored, prompts, cfg.pairs, cfg.judge.scale_max)
    stats, pairs = built.stats, built.pairs
    store.replace("pairs", pairs.to_arrow().cast(pair_kernel.pairs_schema(cfg.pairs.format)))
    store.remove("sft")  # the layout before each export had its own folder (sft/<export>-*.parquet)
    for export in ("filter_long", "dp_sft"):
        if export in built.sft:  # one folder per export, so that sft/<export>/*.parquet is one data set
            store.replace(f"sft/{export}", built.sft[export])
        else:  # an export no longer asked for must not linger as if current
            store.remove(f"sft/{export}")
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
def run(
    cfg: RunConfig,
    backend: str = "ray",
    build: Any = None,
    take_over: bool = False,
    allow_fewer_prompts: bool = False,
    command: str | None = None,
) -> dict[str, Any]:
    """One `factory run`: the stage graph on pools that live for the whole run (every `pairs.target`
    round included); returns the manifest (plus `_scored` and `_pairs` frames for the summary).

    Before any request: the config is checked (preflight), the output directory is shown writable and
    its lease taken (one writer per run directory; `take_over` takes a live-looking lease). A run
    with no valid prompt, or with fewer than the stored outputs were built from (unless
    `allow_fewer_prompts`), fails without replacing anything."""
    t0 = time.perf_counter()
    preflight(cfg)
    fps = fingerprints(cfg)
    store = open_output(cfg.output_dir)
    secrets = secret_values(cfg)
    command = scrub(command or " ".join(["factory", *sys.argv[1:]]), secrets)
    with Lease(store, command, take_over=take_over) as lease:
        previous = store.read_json("manifest.json") or {}
        scrubber = (lambda table: scrub_table(table, secrets)) if secrets else None
        budget = Budget(run_prices(cfg), cfg.cost.max_usd)
        with Executor(store, cfg, backend=backend, build=build, scrub=scrubber, budget=budget) as executor:
            executor.lease = lease
            guard = _PromptGuard(previous, allow_fewer_prompts)
            try:
                if cfg.pairs.target:
                    manifest = _to_target(cfg, store, fps, executor, guard)
                else:
                    manifest = _round(cfg, store, fps, executor, guard)
            finally:
                metrics = executor.metrics_json()
                store.write_json("metrics.json", scrub_all(metrics, secrets))
        manifest.update(
            {
                "pools": metrics["pools"],
                "spend": budget.as_dict(),
                "timings": {**manifest["timings"], "overlap": metrics["overlap_s"], "total": round(time.perf_counter() - t0, 3)},
                "history": (previous.get("history") or [])
                + [{"at": time.time(), "requests": manifest["requests"], "counts": manifest["counts"]}],
            }
        )
        scored, pairs = manifest.pop("_scored"), manifest.pop("_pairs")
        manifest = scrub_all(manifest, secrets)
        store.write_json("manifest.json", manifest)
    manifest["_scored"], manifest["_pairs"] = scored, pairs
    return manifest


class _PromptGuard:
    """Refuses a round that would replace the stored outputs with ones built from fewer prompts."""

    def __init__(self, previous: dict[str, Any], allow_fewer: bool):
        self.before = int((previous.get("counts") or {}).get("prompts_valid") or 0)
        self.allow_fewer = allow_fewer

    def check(self, cfg: RunConfig, valid: int, invalid: int) -> None:
        if valid == 0:
            raise ConfigError(
                f"prompts.path: no valid prompt in {cfg.prompts.path} ({invalid} row(s) recorded as invalid, see "
                "above); nothing was requested and nothing in output_dir was replaced"
            )
        if valid < self.before and not self.allow_fewer:
            raise ConfigError(
                f"prompts: this run has {valid} valid prompt(s) but the outputs in {cfg.output_dir} were built from "
                f"{self.before} (prompts.path / prompts.limit changed?); refusing to replace prompts/, pairs/ and sft/ "
                "with a smaller set. Run with --allow-fewer-prompts to do it anyway (stored samples stay either way)"
            )


def _to_target(
    cfg: RunConfig, store: RunStore, fps: dict[str, str], executor: Executor, guard: _PromptGuard
) -> dict[str, Any]:
    """pairs.target: run on a first draw of prompt rows (prompts.limit, else an estimate from the
    target and drop_ratio), then raise prompts.limit to what the observed survival rate (pairs kept
    per prompt row) says is needed, +10%, and run again on the same pools: only the new prompts are
    sampled and judged. Stops when the target is met or the pool has no more rows; with no pair yet,
    the draw doubles."""
    target = int(cfg.pairs.target or 0)
    # A grown run never draws fewer prompts than its outputs were built from.
    limit = max(cfg.prompts.limit or target_draw(cfg.pairs), guard.before)
    requests = {"sampler": 0, "judge": 0}
    draws: list[dict[str, int]] = []
    while True:
        manifest = _round(replace(cfg, prompts=replace(cfg.prompts, limit=limit)), store, fps, executor, guard)
        for key in requests:
            requests[key] += manifest["requests"][key]
        kept, rows = manifest["counts"]["pairs_kept"], manifest["counts"]["prompts_in"]
        draws.append({"limit": limit, "prompts_in": rows, "pairs_kept": kept})
        if kept >= target or rows < limit:  # met, or the pool ran out of rows
            break
        limit = target_draw(cfg.pairs, kept, rows, limit)
        executor.progress.say(f"[target] {kept} of {target} pairs from {rows} prompt rows; drawing up to {limit}")
    manifest["requests"] = requests
    manifest["target"] = {"target": target, "met": kept >= target, "draws": draws}
    return manifest


def target_draw(pairs: Any, kept: int | None = None, rows: int | None = None, limit: int | None = None) -> int:
    """The prompt rows to draw for `pairs.target`: with nothing observed, target / (1 - drop_ratio) + 20%;
    after a round that kept `kept` pairs of `rows` prompt rows, enough more at that survival rate + 10%
    (twice `limit` when no pair survived). `factory plan` estimates with the same rule."""
    target = int(pairs.target or 0)
    if kept is None or rows is None:
        drop = pairs.drop_ratio if pairs.strategy != "long2short" and pairs.min_margin is None else 0.0
        return math.ceil(1.2 * target / (1.0 - drop))
    more = (limit or rows) if kept == 0 else math.ceil(1.1 * (target - kept) * rows / kept)
    return rows + max(more, 1)


def _round(
    cfg: RunConfig, store: RunStore, fps: dict[str, str], executor: Executor, guard: _PromptGuard
) -> dict[str, Any]:
    """Prompts -> the stage graph on the executor's pools -> pairs; the manifest of this round."""
    timings: dict[str, float] = {}
    t = time.perf_counter()
    prompts, invalid = load_prompts(cfg.prompts)
    guard.check(cfg, prompts.height, invalid.height)
    store.replace("prompts", prompts)
    if invalid.height:
        store.replace("invalid", invalid.to_arrow().cast(INVALID))
    for row in invalid.iter_rows(named=True):
        where = f"row {row['row_index']}" if row["row_index"] is not None else "file"
        executor.progress.say(f"[prompts] {where} invalid: {row['reason']}")
    timings["prompts"] = time.perf_counter() - t
    executor.progress.say(f"[prompts] {prompts.height} valid, {invalid.height} invalid")

    done = executor.run(stages(cfg, prompts, fps))
    timings["sample"], timings["judge"] = done["sample"].elapsed(), done["judge"].elapsed()

    t = time.perf_counter()
    outputs = build_outputs(store, cfg, prompts, fps)
    timings["pairs"] = time.perf_counter() - t
    scored, pairs = outputs.pop("_scored"), outputs.pop("_pairs")
    counts = {
        "prompts_in": prompts.height + invalid.height,
        "prompts_valid": prompts.height,
        "prompts_invalid": invalid.height,
        "samples_expected": prompts.height * cfg.sampler.k,
        **{k: v for k, v in outputs.items() if k not in ("pairs", "parse_status")},
    }
    return {
        "config": redact(config_mod.to_dict(cfg)),
        "fingerprints": fps,
        "versions": versions(),
        "counts": counts,
        "requests": {"sampler": done["sample"].requests, "judge": done["judge"].requests},
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "parse_status": outputs["parse_status"],
        "pairs": outputs["pairs"],
        "output_dir": store.url,
        "_scored": scored,
        "_pairs": pairs,
    }
