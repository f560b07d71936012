"""Judge stage: a generative reward model scores every usable sample on the rubric.

Input columns:  samples   -> prompt_id, sample_idx, sampler_fp, answer, reasoning, error
                prompts   -> prompt_id, product_info, history, question
                stored    -> prompt_id, sample_idx, sampler_fp, vote, judge_fp, parse_status (already judged)
Output columns: judgments -> see factory.rundir.schemas.JUDGMENTS

    >>> plan = plan_judgments(samples, prompts, stored, cfg, judge_fp, rubric)   # only what is missing
    >>> rows = judge_batch(engine, plan.to_dicts(), cfg, judge_fp)             # inside a judge actor
    >>> sample_quality(judgments)   # prompt_id, sample_idx, quality, score, quality_spread, votes_ok, votes

Every judgment is a score or a reason: parse_status is one of
ok | retried_ok (parsed after a re-ask) | unparseable | out_of_range | missing_dimensions (a
dimension asked for is absent) | truncated (cut at max_tokens) | engine_error, and the judge's raw
text is kept next to it; only ok and retried_ok count.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import polars as pl

from factory.config import JudgeConfig, RunConfig
from factory.engines.base import Engine
from factory.pairs.prejudge import Prefilter
from factory.rundir.hashing import derive_seed, stable_hash
from factory.rundir.schemas import JUDGMENTS, require_columns
from factory.stages.base import BaseStage, Batch, Emit, PromptRows, latest, read_status
from factory.stages.judge import reask
from factory.stages.judge.parse import USABLE, parse_judgment, parse_tags
from factory.stages.judge.read import current_judgments
from factory.stages.judge.rubric import DIMENSIONS, check_rubric, judge_schema, reask_messages, render_rubric
from factory.stages.sample import current_sample_keys, prompt_hashes
from factory.stages.scored import SAMPLE_KEY, USABLE_INPUTS, follow_usable, judgeable, of_current_samples, plan_usable

KEY = ("prompt_id", "sample_idx", "sampler_fp", "vote")
# What planning and resume read of the stored judgments: keys and status, never the text.
STATUS_COLUMNS = [*KEY, "judge_fp", "parse_status", "sample_created_at", "created_at"]


def judge_fingerprint(cfg: JudgeConfig, model_id: str, rubric: str) -> str:
    """What makes judgments comparable: judge model, rubric text, scale, output format and judge sampling.
    `votes` and `max_reasks` are not in it: growing votes 1 -> 3 reuses vote 0 of every sample."""
    identity = {
        "kind": cfg.engine.kind,
        "model": model_id,
        "rubric": rubric,
        "scale_max": cfg.scale_max,
        "include_reasoning": cfg.include_reasoning,
        "structured": cfg.structured,
        "temperature": cfg.sampling.temperature,
        "top_p": cfg.sampling.top_p,
        "max_tokens": cfg.sampling.max_tokens,
        "seed": cfg.sampling.seed,
    }
    # Each only when set, so judgments stored before the option existed keep their key.
    if cfg.sampling.stop:
        identity["stop"] = list(cfg.sampling.stop)
    if cfg.dimensions:
        identity["dimensions"] = True
        if tuple(cfg.dimension_names) != DIMENSIONS:
            identity["dimension_names"] = list(cfg.dimension_names)
    if cfg.tags:
        identity["tags"] = list(cfg.tag_values) or True
    if cfg.mode != "pointwise":  # a group judgment saw other answers beside this one
        identity["mode"] = cfg.mode
    return stable_hash(identity)


def pending_keys(
    samples: pl.DataFrame, stored: pl.DataFrame | None, votes: int, judge_fp: str, retry_failed: bool = False
) -> pl.DataFrame:
    """(prompt_id, sample_idx, sampler_fp, vote) of every vote not yet judged under `judge_fp`.

    Input: samples -> prompt_id, sample_idx, sampler_fp (the ones to judge; and created_at, which ties
                      a judgment to the very sample row it judged);
           stored  -> prompt_id, sample_idx, sampler_fp, vote, judge_fp, parse_status, created_at
                      (and sample_created_at).
    The same rubric plans nothing, a changed rubric (new judge_fp) plans every vote again. With
    `retry_failed`, stored engine_error judgments are planned again (the new row supersedes)."""
    key = list(KEY)
    wanted = samples.select(SAMPLE_KEY).join(
        pl.DataFrame({"vote": list(range(votes))}, schema={"vote": pl.Int64}), how="cross"
    )
    if stored is not None and stored.height:
        require_columns(stored, (*key, "judge_fp", "parse_status", "created_at"), "judge.plan")
        done = of_current_samples(stored.filter(pl.col("judge_fp") == judge_fp), samples)
        if retry_failed:  # the latest row of a key decides, as when the judgments are read
            done = latest(done, key).filter(pl.col("parse_status") != "engine_error")
        wanted = wanted.join(done.select(key).unique(), on=key, how="anti", maintain_order="left")
    return wanted


def plan_judgments(
    samples: pl.DataFrame,
    prompts: pl.DataFrame,
    stored: pl.DataFrame | None,
    cfg: JudgeConfig,
    judge_fp: str,
    rubric: str,
) -> pl.DataFrame:
    """Every (usable sample, vote) not yet judged under `judge_fp`, rendered: the request rows
    judge_batch takes (prompt_id, sample_idx, sampler_fp, vote, seed, messages)."""
    require_columns(samples, ("prompt_id", "sample_idx", "sampler_fp", "answer", "reasoning", "error"), "judge.plan")
    check_rubric(rubric)
    work = judgeable(samples).select(
        *SAMPLE_KEY, "answer", "reasoning", *(["created_at"] if "created_at" in samples.columns else [])
    )
    keys = pending_keys(work, stored, cfg.votes, judge_fp, cfg.retry_failed)
    if "created_at" in work.columns:
        work = work.rename({"created_at": "sample_created_at"})
    work = keys.join(work, on=["prompt_id", "sample_idx", "sampler_fp"], how="left", maintain_order="left")
    rows = render_requests(work.to_dicts(), prompt_fields(prompts), rubric, cfg)
    return pl.DataFrame(rows, schema=REQUEST_SCHEMA)


REQUEST_SCHEMA = {
    "prompt_id": pl.String,
    "sample_idx": pl.Int64,
    "sampler_fp": pl.String,
    "vote": pl.Int64,
    "sample_created_at": pl.Float64,
    "seed": pl.Int64,
    "messages": pl.List(pl.Struct({"role": pl.String, "content": pl.String})),
}


def prompt_fields(prompts: pl.DataFrame) -> Mapping[str, dict]:
    """prompt_id -> the fields a rubric shows (product_info, history, question)."""
    require_columns(prompts, ("prompt_id", "product_info", "history", "question"), "judge")
    return PromptRows(prompts, ["product_info", "history", "question"])


def render_requests(work: list[dict], prompts: Mapping[str, dict], rubric: str, cfg: JudgeConfig) -> list[dict]:
    """Work rows (keys + answer, reasoning) -> request rows with their derived seed and rubric messages."""
    orphans = {row["prompt_id"] for row in work if row["prompt_id"] not in prompts}
    if orphans:
        raise ValueError(f"judge.plan: samples of {len(orphans)} prompt(s) not in prompts, e.g. {sorted(orphans)[:3]}")
    return [
        {
            "prompt_id": row["prompt_id"],
            "sample_idx": row["sample_idx"],
            "sampler_fp": row["sampler_fp"],
            "vote": row["vote"],
            "sample_created_at": row.get("sample_created_at"),
            "seed": derive_seed(cfg.sampling.seed, "judge", row["prompt_id"], row["sample_idx"], row["vote"]),
            "messages": render_rubric(rubric, prompts[row["prompt_id"]], row, cfg),
        }
        for row in work
    ]


def judge_batch(
    engine: Engine, rows: list[dict[str, Any]], emit: Emit | None, cfg: JudgeConfig, judge_fp: str
) -> list[dict]:
    """Judge a batch of planned rows -> judgment rows (one per plan row, same order); each row is
    also handed to `emit` as soon as it is final.

    A row whose output cannot be parsed (unparseable, out_of_range, missing_dimensions, truncated) is
    re-asked up to max_reasks times with a new seed and the correction above; parsed on a re-ask ->
    retried_ok. An engine error is not re-asked here (the engine already retried it). `attempts` counts
    the LLM requests made, `completion_tokens` and `latency_s` add up over them; `raw` is the last reply
    (the loop is the group judge's too: factory/stages/judge/reask.py)."""
    schema = (
        judge_schema(cfg.scale_max, cfg.dimensions, cfg.dimension_names, cfg.tags, cfg.tag_values)
        if cfg.structured and engine.supports_json_schema
        else None
    )
    states = [reask.start(row["messages"], [ONE]) for row in rows]
    batch = Batch(emit)

    def again(i: int, reply: str | None, failing: list[str]) -> list[dict]:
        return reask_messages(rows[i]["messages"], reply, states[i]["results"][ONE]["reason"], cfg)

    def final(i: int) -> None:
        state = states[i]
        result = {**state["results"][ONE], "raw": state["raw"], "error": state["error"]}
        batch.add(i, judgment_row(rows[i], {**state, "result": result}, cfg, judge_fp))

    reask.ask(engine, rows, states, cfg, lambda i: schema, _parse(cfg), again, final)
    return batch.rows(range(len(rows)), "judge completion(s) (by row)")


ONE = ""  # the key of a pointwise reply's one score (a group reply's are its answer labels)


def _parse(cfg: JudgeConfig) -> reask.Parse:
    return lambda state, text: {ONE: parse_judgment(text, cfg.scale_max)}


def judgment_row(row: dict, current: dict, cfg: JudgeConfig, judge_fp: str) -> dict:
    result = current["result"]
    usable = result["status"] in USABLE
    return {
        "prompt_id": row["prompt_id"],
        "sample_idx": row["sample_idx"],
        "sampler_fp": row["sampler_fp"],
        "vote": row["vote"],
        "judge_fp": judge_fp,
        "sample_created_at": row.get("sample_created_at"),
        "score": result["score"],
        "quality": result["score"] / cfg.scale_max if usable else None,
        "parse_status": result["status"],
        "reason": result["reason"],
        "dimensions": None,  # the JSON form of `dims`, kept in the schema for runs made before `dims`
        "dims": [{"name": k, "score": v} for k, v in result["dimensions"].items()] if result["dimensions"] else None,
        "tags": parse_tags(result["raw"], cfg.tag_values) if cfg.tags and usable else None,
        "raw": result["raw"],
        "attempts": current["attempts"],
        "reasks": current["reasks"],
        "completion_tokens": current["tokens"],
        "prompt_tokens": current.get("prompt_tokens"),
        "cached_tokens": current.get("cached_tokens"),
        "error": result["error"],
        "latency_s": current["latency"],
        "created_at": time.time(),
    }


def failed_judgments(requests: list[dict], reason: str, judge_fp: str, attempts: int = 0) -> list[dict]:
    """The rows stored for judge requests that could not be served (their replica kept failing):
    judgment_row's fields, with parse_status engine_error."""
    current = {"attempts": attempts, "reasks": 0, "tokens": None, "latency": 0.0}
    result = {
        "score": None,
        "status": "engine_error",
        "reason": reason,
        "dimensions": None,
        "raw": None,
        "error": reason,
    }
    return [judgment_row(r, {**current, "result": result}, JudgeConfig(), judge_fp) for r in requests]


class JudgeStage(BaseStage):
    """The judge stage as the executor drives it (factory/stages/base.py): fed by stored samples.
    `factory run` has one per judge: `judge` (cfg.judge) and `judge_<name>` for each cfg.judges entry,
    each under its own fingerprint fps[<stage name>], all writing judgments/."""

    name = "judge"
    table = "judgments"
    key = KEY
    schema = JUDGMENTS
    upstream = "sample"
    inputs = USABLE_INPUTS
    batch_fields = ("cfg", "judge_fp")
    run_batch = staticmethod(judge_batch)

    def __init__(
        self,
        cfg: RunConfig,
        fps: dict[str, str],
        prompts: pl.DataFrame,
        rubric: str,
        *,
        k: int | None = None,
        name: str = "judge",
        upstream: str | None = "sample",
        judge: JudgeConfig | None = None,
        prefilter: Prefilter | None = None,
    ):
        """`name`: the stage (and fingerprint) name; `judge`: its config (default cfg.judge). `factory eval`
        passes a candidate's k and its sample stage as upstream (None for a candidate's imported answers).
        `prefilter`: only samples that pass these pairs' judge-free exclusions are judged (factory run)."""
        self.prefilter = prefilter
        check_rubric(rubric)
        self.name, self.upstream = name, upstream
        self.cfg = judge if judge is not None else cfg.judge
        self.judge_fp, self.sampler_fp, self.rubric = fps[name], fps["sampler"], rubric
        self.k = k if k is not None else cfg.sampler.k
        self.engine = self.cfg.engine
        self.prompts = prompt_fields(prompts)
        self.prompt_ids = prompts["prompt_id"]
        self.hashes = prompt_hashes(prompts)  # which stored samples answered the current text
        self.note = ""

    @property
    def fanout(self) -> int:
        """Judge requests per usable upstream sample (`factory plan` estimates with it)."""
        return self.cfg.votes


    def plan(self, store: Any) -> pl.DataFrame:
        """Keys first (samples' status, judgments' status, prompt ids as integer codes), then the answer
        text of the pending samples only (factory/stages/scored.py)."""
        ours = (pl.col("judge_fp") == self.judge_fp) & (pl.col("sampler_fp") == self.sampler_fp)

        def pending(samples: pl.DataFrame) -> pl.DataFrame:
            stored = read_status(store, "judgments", JUDGMENTS, STATUS_COLUMNS, self.prompt_ids, ours)
            return pending_keys(samples, stored, self.cfg.votes, self.judge_fp, self.cfg.retry_failed)

        work, self.note = plan_usable(
            store, self.prompt_ids, self.sampler_fp, self.k, pending, self.cfg.votes, prefilter=self.prefilter,
            hashes=self.hashes,
        )
        return work.sort(KEY[0], KEY[1], KEY[3], maintain_order=True)  # a prompt's requests together: see follow

    def follow(self, rows: list[dict]) -> list[dict]:
        """Samples just stored -> their judge work (every vote of each usable one), a prompt's requests next to
        each other in dispatch order: they share the rubric and the prompt, a prefix a server's cache can serve."""
        work = []
        for row in follow_usable(rows, self.sampler_fp, self.k, self.prompts, self.prefilter):
            for vote in range(self.cfg.votes):
                work.append({**{k: row[k] for k in SAMPLE_KEY}, "vote": vote, "answer": row["answer"],
                             "reasoning": row["reasoning"], "sample_created_at": row["created_at"]})  # fmt: skip
        return sorted(work, key=lambda w: (w["prompt_id"], w["sample_idx"], w["vote"]))


    def render(self, work: list[dict]) -> list[dict]:
        return render_requests(work, self.prompts, self.rubric, self.cfg)

    def failed(self, requests: list[dict], reason: str) -> list[dict]:
        return failed_judgments(requests, reason, self.judge_fp)

    # (stored judgments, judge_fp, samples) -> the current ones: the group judge's are its latest groups
    current_rows = staticmethod(current_judgments)

    def read(self, store: Any, samples: pl.DataFrame | None = None) -> pl.DataFrame:
        """The current judgments of `samples` (default: this run's stored samples)."""
        if samples is None:
            samples = current_sample_keys(store, self.sampler_fp, self.prompt_ids, self.k, self.hashes)
        return self.current_rows(store.read("judgments", JUDGMENTS), self.judge_fp, samples)

    def ok(self, row: dict) -> bool:
        return row["parse_status"] in USABLE
