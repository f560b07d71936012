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
from factory.pairs import export as export_mod  # issue 15
from factory.prompts import load_prompts, read_text
from factory.schemas import INVALID, JUDGMENTS
from factory.secrets import redact_url, scrub, scrub_all, scrub_table, secret_values
from factory.stages import judge as judge_stage
from factory.stages import reward as reward_stage
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


def genrms(cfg: RunConfig) -> list[tuple[str, str, Any]]:
    """(stage name, config key, JudgeConfig) of every generative judge that runs: `judge` (unless
    judge.enabled is false), then judge_<name> for each judges.<name> entry that is enabled."""
    primary = [("judge", "judge", cfg.judge)] if cfg.judge.enabled else []
    return primary + [(f"judge_{n}", f"judges.{n}", j) for n, j in cfg.judges.items() if j.enabled]


def engines_of(cfg: RunConfig) -> list[tuple[str, EngineConfig]]:
    """(config key, engine) of every stage of `factory run`."""
    return [
        ("sampler.engine", cfg.sampler.engine),
        *((f"{key}.engine", judge.engine) for _, key, judge in genrms(cfg)),
        *((f"reward_models.{name}.engine", rm.engine) for name, rm in cfg.reward_models.items()),
    ]


def judge_stages(cfg: RunConfig) -> list[str]:
    """The stage names of the judges, in graph order: judge, judge_<name>..., reward_<name>...
    (also their fingerprint names and their keys in manifest `requests` and metrics.json)."""
    return [stage for stage, _, _ in genrms(cfg)] + [f"reward_{name}" for name in cfg.reward_models]


def scored_columns(cfg: RunConfig) -> dict[str, str]:
    """The judge columns the scored samples will have -> the config key that makes each: quality (judge),
    quality_<name> (judges.<name>), reward_<name> (reward_models.<name>), dim_<d> / dim_<name>_<d>
    (a judge's dimension_names, with dimensions true)."""
    out = {}
    for stage, key, judge in genrms(cfg):
        prefix = "" if stage == "judge" else stage.removeprefix("judge_") + "_"
        out["quality" if stage == "judge" else f"quality_{prefix[:-1]}"] = key
        if judge.dimensions:
            out |= {f"dim_{prefix}{d}": f"{key}.dimension_names" for d in judge.dimension_names}
    return out | {f"reward_{name}": f"reward_models.{name}" for name in cfg.reward_models}


JUDGE_KEYS = {"judge": "judges.", "reward": "reward_models."}  # a judge stage's name prefix -> its config key


def _check_judges(cfg: RunConfig) -> None:
    """Reward models can score by their route; no two judges are one (same fingerprint); every judge
    column the pairs ask for is made by a configured judge."""
    from factory.engines import score_routes

    for name, rm in cfg.reward_models.items():
        routes = score_routes(rm.engine)
        if not routes:
            raise ConfigError(
                f"reward_models.{name}.engine.kind: the {rm.engine.kind} engine cannot score; use vllm (in process, "
                "pooling runner) or openai (a vLLM server's classify/pooling/score routes)"
            )
        if rm.route not in routes:
            raise ConfigError(
                f"reward_models.{name}.route: the {rm.engine.kind} engine serves {', '.join(routes)}, not {rm.route!r}"
            )
    if not judge_stages(cfg):
        raise ConfigError("judge.enabled: false, and no other judge (judges.<name>, reward_models.<name>) is configured")
    fps = fingerprints(cfg)
    seen: dict[str, str] = {}
    for stage in judge_stages(cfg):
        key = stage if stage == "judge" else re.sub(r"^(judge|reward)_", lambda m: JUDGE_KEYS[m.group(1)], stage)
        if fps[stage] in seen:
            raise ConfigError(f"{key}: the same judge as {seen[fps[stage]]} (same model, rubric, settings); drop one")
        seen[fps[stage]] = key
    made = scored_columns(cfg)
    for column, key in pair_kernel.required(cfg.pairs).items():
        judged = re.fullmatch(r"quality(_\w+)?|reward_\w+|dim_\w+", column) and column != "quality_spread"
        if judged and column not in made:
            have = ", ".join(sorted(made)) or "none"
            hint = {"q": "define judges.<name>", "r": "define reward_models.<name>", "d": "set judge.dimensions=true and list it in judge.dimension_names"}[column[0]]  # fmt: skip
            hint = "judge.enabled is false" if column == "quality" else hint
            raise ConfigError(f"{key}: no configured judge makes the column {column!r} ({hint}); judge columns: {have}")


def preflight(cfg: RunConfig) -> None:
    """Everything that can be checked before a request is made, each error naming its key."""
    for where, engine in engines_of(cfg):
        try:
            model_id(engine)
        except FileNotFoundError as exc:
            raise ConfigError(f"{where}.{str(exc).split('engine.', 1)[-1]}") from None
        if engine.kind == "openai" and engine.api_key_env and engine.api_key_env not in os.environ:
            raise ConfigError(f"{where}.api_key_env: environment variable {engine.api_key_env!r} is not set")
    for key, path in (
        ("prompts.system_prompt_file", cfg.prompts.system_prompt_file),
        ("prompts.user_template_file", cfg.prompts.user_template_file),
        *((f"{key}.rubric_file", judge.rubric_file) for _, key, judge in genrms(cfg)),
    ):
        if path and "://" not in path and not Path(path).is_file():
            raise ConfigError(f"{key}: file not found: {path}")
    for _, key, judge in genrms(cfg):
        judge_stage.check_rubric(rubric_text(cfg, judge), f"{key}.rubric_file")
    _check_judges(cfg)
    if not cfg.prompts.path:
        raise ConfigError("prompts.path: no prompts file given")
    export_mod.preflight(cfg)  # issue 15: a student template loads and renders


def rubric_text(cfg: RunConfig, judge: Any = None) -> str:
    """The rubric of `judge` (default: the primary judge, cfg.judge)."""
    judge = judge if judge is not None else cfg.judge
    return read_text(judge.rubric_file) if judge.rubric_file else DEFAULT_RUBRIC.read_text().strip()


def template_text(cfg: RunConfig) -> str:
    parts = [read_text(p) if p else "" for p in (cfg.prompts.system_prompt_file, cfg.prompts.user_template_file)]
    return "\n---\n".join(parts)


def fingerprints(cfg: RunConfig) -> dict[str, str]:
    return {
        "sampler": sample_stage.sampler_fingerprint(
            cfg.sampler.engine, cfg.sampler.sampling, model_id(cfg.sampler.engine), template_text(cfg)
        ),
        **{
            stage: judge_stage.judge_fingerprint(judge, model_id(judge.engine), rubric_text(cfg, judge))
            for stage, _, judge in genrms(cfg)
        },
        **{
            f"reward_{name}": reward_stage.reward_fingerprint(rm, model_id(rm.engine))
            for name, rm in cfg.reward_models.items()
        },
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
    """The stage graph of `factory run`: sample -> every judge (each fed by stored samples): judge,
    judge_<name> per cfg.judges entry, reward_<name> per cfg.reward_models entry. A judge whose
    fingerprint `fps` lacks (a run stored before it was configured) is left out."""
    from factory.engines import scorer_config

    graph: list = [sample_stage.SampleStage(cfg, fps["sampler"], prompts)]
    for stage, _, judge in genrms(cfg):
        if stage in fps:
            graph.append(judge_stage.JudgeStage(cfg, fps, prompts, rubric_text(cfg, judge), name=stage, judge=judge))
    for name, rm in cfg.reward_models.items():
        if f"reward_{name}" in fps:
            graph.append(reward_stage.RewardStage(cfg, name, fps, prompts, engine=scorer_config(rm.engine)))
    return graph


NO_JUDGMENTS = pl.from_arrow(JUDGMENTS.empty_table())  # the primary judge's when judge.enabled is false


def stored_judgments(
    store: RunStore, cfg: RunConfig, prompts: pl.DataFrame, fps: dict[str, str]
) -> tuple[pl.DataFrame, dict[str, pl.DataFrame]]:
    """(samples, {judge stage name: its current judgments or rewards}) of this run, as stored."""
    sample, *judges = stages(cfg, prompts, fps)
    samples = sample.read(store)
    return samples, {stage.name: stage.read(store, samples) for stage in judges}


def scored_frame(samples: pl.DataFrame, frames: dict[str, pl.DataFrame], cfg: RunConfig) -> pl.DataFrame:
    """Samples with every judge's columns, in the names the pair kernel reads: quality (and score,
    quality_spread, votes) of the primary judge, dim_<d> and tags from its judgments, quality_<name> and
    dim_<name>_<d> of each judges.<name>, reward_<name> (raw) of each reward model; null where unjudged."""
    keys = ["prompt_id", "sample_idx"]
    judgments = frames.get("judge", NO_JUDGMENTS)
    scored = scored_samples(samples, judgments)
    parts = [judge_stage.sample_dims(judgments), judge_stage.sample_tags(judgments)]
    for name in cfg.judges:
        frame = frames.get(f"judge_{name}")
        if frame is not None and frame.height:
            parts.append(judge_stage.sample_quality(frame).select(*keys, pl.col("quality").alias(f"quality_{name}")))
            parts.append(judge_stage.sample_dims(frame, f"dim_{name}_"))
        elif frame is not None:
            scored = scored.with_columns(pl.lit(None, pl.Float64).alias(f"quality_{name}"))
    for name in cfg.reward_models:
        frame = frames.get(f"reward_{name}")
        if frame is not None:
            parts.append(reward_stage.sample_rewards(frame, f"reward_{name}"))
    for part in parts:
        if len(part.columns) > len(keys):
            scored = scored.join(part, on=keys, how="left")
    return scored


def judge_counts(frames: dict[str, pl.DataFrame]) -> dict[str, dict[str, int]]:
    """Per judge stage: stored rows of this run's samples that are usable (ok) or not (failed)."""
    out = {}
    for name, frame in frames.items():
        reward = name.startswith("reward_")
        ok = pl.col("error").is_null() if reward else pl.col("parse_status").is_in(judge_stage.USABLE)
        usable = frame.filter(ok).height if frame.height else 0
        out[name] = {"ok": usable, "failed": frame.height - usable}
    return out


def stored_scored(
    store: RunStore, cfg: RunConfig, prompts: pl.DataFrame, fps: dict[str, str]
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(samples, the primary judge's judgments, scored samples) of this run's fingerprints and prompts."""
    samples, frames = stored_judgments(store, cfg, prompts, fps)
    return samples, frames.get("judge", NO_JUDGMENTS), scored_frame(samples, frames, cfg)


def build_outputs(store: RunStore, cfg: RunConfig, prompts: pl.DataFrame, fps: dict[str, str]) -> dict[str, Any]:
    """pairs/ and sft/ from what is stored: no LLM call. Returns counts for the manifest."""
    samples, frames = stored_judgments(store, cfg, prompts, fps)
    judgments, scored = frames.get("judge", NO_JUDGMENTS), scored_frame(samples, frames, cfg)
    built = pair_kernel.build(scored, prompts, cfg.pairs, cfg.judge.scale_max)
    stats, pairs = built.stats, built.pairs
    store.replace("pairs", pairs.to_arrow().cast(pair_kernel.pairs_schema(cfg.pairs.format)))
    store.remove("sft")  # the layout before each export had its own folder (sft/<export>-*.parquet)
    for export in ("filter_long", "dp_sft"):
        if export in built.sft:  # one folder per export, so that sft/<export>/*.parquet is one data set
            store.replace(f"sft/{export}", built.sft[export])
        else:  # an export no longer asked for must not linger as if current
            store.remove(f"sft/{export}")
    export_mod.after_pairs(store, cfg, pairs, scored, prompts)  # issue 15: export/<name>/ + the reasoning warning
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
        "judges": judge_counts(frames),
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


def request_keys(cfg: RunConfig) -> list[str]:
    """The keys of manifest `requests`: sampler, then each judge stage (judge, judge_<name>, reward_<name>)."""
    return ["sampler", *judge_stages(cfg)]


def _judges_manifest(cfg: RunConfig, fps: dict[str, str], counts: dict[str, dict[str, int]], done: Any) -> dict:
    """manifest `judges`: per judge stage its kind, the scored column it makes, fingerprint, stored
    rows ok / failed and the requests this invocation made."""
    columns = {"judge": "quality", **{f"judge_{n}": f"quality_{n}" for n in cfg.judges}}
    columns |= {f"reward_{n}": f"reward_{n}" for n in cfg.reward_models}
    return {
        name: {
            "kind": "reward_model" if name.startswith("reward_") else "genrm",
            "column": columns[name],
            "fingerprint": fps[name],
            **counts.get(name, {"ok": 0, "failed": 0}),
            "requests": done[name].requests if done is not None else 0,
        }
        for name in judge_stages(cfg)
    }


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
    requests = {key: 0 for key in request_keys(cfg)}
    draws: list[dict[str, int]] = []
    while True:
        manifest = _round(replace(cfg, prompts=replace(cfg.prompts, limit=limit)), store, fps, executor, guard)
        for key, n in manifest["requests"].items():
            requests[key] = requests.get(key, 0) + n
        kept, rows = manifest["counts"]["pairs_kept"], manifest["counts"]["prompts_in"]
        draws.append({"limit": limit, "prompts_in": rows, "pairs_kept": kept})
        if kept >= target or rows < limit:  # met, or the pool ran out of rows
            break
        limit = target_draw(cfg.pairs, kept, rows, limit)
        executor.progress.say(f"[target] {kept} of {target} pairs from {rows} prompt rows; drawing up to {limit}")
    manifest["requests"] = requests
    for name, judge in manifest["judges"].items():  # every round's requests, as `requests`
        judge["requests"] = requests.get(name, 0)
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
    timings["sample"] = done["sample"].elapsed()
    for name in judge_stages(cfg):
        timings[name] = done[name].elapsed()

    t = time.perf_counter()
    outputs = build_outputs(store, cfg, prompts, fps)
    timings["pairs"] = time.perf_counter() - t
    scored, pairs = outputs.pop("_scored"), outputs.pop("_pairs")
    counts = {
        "prompts_in": prompts.height + invalid.height,
        "prompts_valid": prompts.height,
        "prompts_invalid": invalid.height,
        "samples_expected": prompts.height * cfg.sampler.k,
        **{k: v for k, v in outputs.items() if k not in ("pairs", "parse_status", "judges")},
    }
    return {
        "config": redact(config_mod.to_dict(cfg)),
        "fingerprints": fps,
        "versions": versions(),
        "counts": counts,
        "requests": {"sampler": done["sample"].requests, **{name: done[name].requests for name in judge_stages(cfg)}},
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "parse_status": outputs["parse_status"],
        "judges": _judges_manifest(cfg, fps, outputs["judges"], done),
        "pairs": outputs["pairs"],
        "output_dir": store.url,
        "_scored": scored,
        "_pairs": pairs,
    }
