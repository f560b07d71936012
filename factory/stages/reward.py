"""Reward stage: a sequence-classification reward model scores every usable sample once.

Input columns:  samples  -> prompt_id, sample_idx, sampler_fp, answer, reasoning, error, created_at
                prompts  -> prompt_id, messages (the rendered prompt the sample answered)
                stored   -> prompt_id, sample_idx, sampler_fp, rm_fp, error, sample_created_at, created_at
Output columns: rewards  -> see factory.rundir.schemas.REWARDS

    >>> stage = RewardStage(cfg, "rm", fps, prompts)   # cfg.reward_models["rm"]; fps["reward_rm"] its fingerprint
    >>> work = stage.plan(store)                # the usable samples not yet scored under this fingerprint
    >>> requests = stage.render(work.to_dicts())
    >>> rows = reward_batch(engine, requests, None, cfg.reward_models["rm"], "rm", fps["reward_rm"])
    rows: prompt_id="p1" sample_idx=0 sampler_fp="ab12" rm="rm" rm_fp="c0ffee" score=1.73 error=None attempts=1 ...
    >>> sample_rewards(stage.read(store), "reward_rm")   # prompt_id, sample_idx, reward_rm (null when failed)

Like the GenRM judge (factory/stages/judge/), a reward is keyed by the sample key under the reward
model's fingerprint (model, route, label, activation, what it is shown), and tied to the sample row it
scored (sample_created_at): a rerun asks for nothing, a new model or route scores every sample again,
a sample asked again is scored again. A reward model is deterministic: no votes, no seeds, no re-asks.
The score is stored raw (a logit is unbounded); the pair kernel normalizes it (`reward_<name>` terms).
"""

from __future__ import annotations

import math
import time
from typing import Any

import polars as pl

from factory.config import EngineConfig, RewardModelConfig, RunConfig
from factory.engines import kind_of
from factory.engines.base import Engine, Score, Scorer, ScoreRequest
from factory.pairs.prejudge import Prefilter
from factory.rundir.hashing import stable_hash
from factory.rundir.schemas import REWARDS, require_columns
from factory.stages.base import BaseStage, Batch, Emit, latest, read_status
from factory.stages.sample import current_sample_keys, prompt_hashes
from factory.stages.scored import USABLE_INPUTS, follow_usable, of_current_samples, plan_usable

KEY = ("prompt_id", "sample_idx", "sampler_fp")
# What planning and resume read of the stored rewards: keys and status only.
STATUS_COLUMNS = [*KEY, "rm_fp", "error", "sample_created_at", "created_at"]


def reward_fingerprint(rm: RewardModelConfig, model_id: str) -> str:
    """What makes rewards comparable: the model (and, in process, its dtype and quantization), the route
    and head output read, and what the model is shown. Not the engine's resources or batch sizes."""
    identity: dict[str, Any] = {
        "kind": rm.engine.kind,
        "model": model_id,
        "route": rm.route,
        "label": rm.label,
        "activation": rm.activation,
        "include_reasoning": rm.include_reasoning,
    }
    identity |= kind_of(rm.engine).weights(rm.engine)  # e.g. vLLM's dtype and quantization
    return stable_hash(identity)


def conversation(prompt: list[dict[str, str]], sample: dict[str, Any], include_reasoning: bool) -> list[dict[str, str]]:
    """The prompt's messages with the sample's answer as the assistant's turn (reasoning in <think>
    tags before it when asked): what a chat reward model scores."""
    answer = sample.get("answer") or ""
    reasoning = (sample.get("reasoning") or "").strip() if include_reasoning else ""
    content = f"<think>\n{reasoning}\n</think>\n\n{answer}" if reasoning else answer
    return [*({"role": m["role"], "content": m["content"]} for m in prompt), {"role": "assistant", "content": content}]


def reward_batch(
    engine: Engine, rows: list[dict[str, Any]], emit: Emit | None, cfg: RewardModelConfig, name: str, rm_fp: str
) -> list[dict]:
    """Score a batch of request rows (keys + messages) -> reward rows, one per request row, in order;
    each row is also handed to `emit` as soon as its score is back."""
    if not isinstance(engine, Scorer):
        raise TypeError(f"reward_models.{name}.engine: the {type(engine).__name__} engine cannot score")
    by_tag = {tuple(row[k] for k in KEY): row for row in rows}
    requests = [
        ScoreRequest(messages=row["messages"], route=cfg.route, label=cfg.label, activation=cfg.activation, tag=tag)
        for tag, row in by_tag.items()
    ]
    batch = Batch(emit)
    engine.score(requests, on_done=lambda s: batch.add(s.tag, reward_row(by_tag[s.tag], s, name, rm_fp)))  # type: ignore[attr-defined]
    return batch.rows(by_tag, "score(s)")


def reward_row(row: dict[str, Any], score: Score, name: str, rm_fp: str) -> dict:
    value = score.value if score.error is None else None
    error = score.error
    if error is None and (value is None or not math.isfinite(value)):
        error, value = f"the reward model returned no finite score ({value})", None
    return {
        "prompt_id": row["prompt_id"],
        "sample_idx": row["sample_idx"],
        "sampler_fp": row["sampler_fp"],
        "rm": name,
        "rm_fp": rm_fp,
        "sample_created_at": row.get("sample_created_at"),
        "score": value,
        "error": error,
        "attempts": score.attempts,
        "prompt_tokens": score.prompt_tokens,
        "latency_s": score.latency_s,
        "created_at": time.time(),
    }


def failed_rewards(requests: list[dict], reason: str, name: str, rm_fp: str, attempts: int = 0) -> list[dict]:
    """The rows stored for requests that could not be served (their replica kept failing)."""
    return [reward_row(r, Score(tag=None, error=reason, attempts=attempts), name, rm_fp) for r in requests]


def pending_keys(
    samples: pl.DataFrame, stored: pl.DataFrame | None, rm_fp: str, retry_failed: bool = False
) -> pl.DataFrame:
    """The sample keys not yet scored under `rm_fp` (samples: prompt_id, sample_idx, sampler_fp, and
    created_at, which ties a reward to the sample row it scored). With `retry_failed`, keys whose
    latest reward failed are planned again (the new row supersedes it when rewards are read)."""
    key = list(KEY)
    wanted = samples.select(key)
    if stored is not None and stored.height:
        require_columns(stored, (*key, "rm_fp", "error", "created_at"), "reward.plan")
        done = of_current_samples(stored.filter(pl.col("rm_fp") == rm_fp), samples)
        if retry_failed:
            done = latest(done, key).filter(pl.col("error").is_null())
        wanted = wanted.join(done.select(key).unique(), on=key, how="anti", maintain_order="left")
    return wanted


def current_rewards(stored: pl.DataFrame | None, rm_fp: str, samples: pl.DataFrame) -> pl.DataFrame:
    """The rewards of `samples` under `rm_fp`, one row per sample key: the latest stored."""
    if stored is None or not samples.height:
        return pl.from_arrow(REWARDS.empty_table())  # type: ignore[return-value]
    mine = of_current_samples(stored.filter(pl.col("rm_fp") == rm_fp), samples)
    return latest(mine, list(KEY))


def sample_rewards(rewards: pl.DataFrame, column: str) -> pl.DataFrame:
    """Rewards -> prompt_id, sample_idx, `column` (the raw score; null when the model failed)."""
    require_columns(rewards, ("prompt_id", "sample_idx", "score", "error"), "reward.aggregate")
    score = pl.when(pl.col("error").is_null()).then(pl.col("score")).otherwise(None).cast(pl.Float64)
    return latest(rewards, ["prompt_id", "sample_idx"]).select("prompt_id", "sample_idx", score.alias(column))


class RewardStage(BaseStage):
    """One reward model as the executor drives it (factory/stages/base.py): fed by stored samples.
    Stage `reward_<name>`, table rewards/ (every reward model's rows, told apart by rm_fp)."""

    table = "rewards"
    key = KEY
    schema = REWARDS
    upstream = "sample"
    inputs = USABLE_INPUTS
    batch_fields = ("cfg", "rm_name", "rm_fp")
    run_batch = staticmethod(reward_batch)

    def __init__(
        self,
        cfg: RunConfig,
        name: str,
        fps: dict[str, str],
        prompts: pl.DataFrame,
        *,
        engine: EngineConfig | None = None,
        upstream: str | None = "sample",
        prefilter: Prefilter | None = None,
    ):
        """`engine`: the config the pool is built from (run.py passes the engine module's scoring variant,
        e.g. vLLM's pooling runner); default the reward model's own. `prefilter`: only samples that pass
        these pairs' judge-free exclusions are scored."""
        self.prefilter = prefilter
        require_columns(prompts, ("prompt_id", "messages"), "reward")
        self.rm_name, self.cfg = name, cfg.reward_models[name]
        self.name, self.upstream = f"reward_{name}", upstream
        self.rm_fp, self.sampler_fp, self.k = fps[f"reward_{name}"], fps["sampler"], cfg.sampler.k
        self.engine = engine if engine is not None else self.cfg.engine
        self._messages = dict(zip(prompts["prompt_id"].to_list(), prompts["messages"].to_list()))
        self.prompt_ids = prompts["prompt_id"]
        self.hashes = prompt_hashes(prompts)  # which stored samples answered the current text
        self.note = ""

    @property
    def fanout(self) -> int:
        """Requests per usable upstream sample."""
        return 1

    def plan(self, store: Any) -> pl.DataFrame:
        """Keys first (samples' and rewards' status, prompt ids as integer codes), then the text of the
        pending samples only (factory/stages/scored.py)."""
        ours = (pl.col("rm_fp") == self.rm_fp) & (pl.col("sampler_fp") == self.sampler_fp)

        def pending(samples: pl.DataFrame) -> pl.DataFrame:
            stored = read_status(store, "rewards", REWARDS, STATUS_COLUMNS, self.prompt_ids, ours)
            return pending_keys(samples, stored, self.rm_fp, self.cfg.retry_failed)

        work, self.note = plan_usable(
            store, self.prompt_ids, self.sampler_fp, self.k, pending, verb="scored", prefilter=self.prefilter,
            hashes=self.hashes,
        )
        return work

    def follow(self, rows: list[dict]) -> list[dict]:
        """Samples just stored -> their reward work (usable ones only)."""
        return [
            {**{k: row[k] for k in KEY}, "answer": row["answer"], "reasoning": row["reasoning"],
             "sample_created_at": row["created_at"]}
            for row in follow_usable(rows, self.sampler_fp, self.k, self._messages, self.prefilter)
        ]  # fmt: skip

    def render(self, work: list[dict]) -> list[dict]:
        orphans = {row["prompt_id"] for row in work} - set(self._messages)
        if orphans:
            raise ValueError(
                f"reward.plan: samples of {len(orphans)} prompt(s) not in prompts, e.g. {sorted(orphans)[:3]}"
            )
        return [
            {**{k: row[k] for k in KEY}, "sample_created_at": row.get("sample_created_at"),
             "messages": conversation(self._messages[row["prompt_id"]], row, self.cfg.include_reasoning)}
            for row in work
        ]  # fmt: skip

    def failed(self, requests: list[dict], reason: str) -> list[dict]:
        return failed_rewards(requests, reason, self.rm_name, self.rm_fp)

    def read(self, store: Any, samples: pl.DataFrame | None = None) -> pl.DataFrame:
        """The current rewards of `samples` (default: this run's stored samples)."""
        if samples is None:
            samples = current_sample_keys(store, self.sampler_fp, self.prompt_ids, self.k, self.hashes)
        return current_rewards(store.read("rewards", REWARDS), self.rm_fp, samples)

    def tokens(self, row: dict) -> tuple[int, int]:
        return int(row.get("prompt_tokens") or 0), 0  # a score request has prompt tokens only
