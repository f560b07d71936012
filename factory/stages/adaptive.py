"""Adaptive K (sampler.adaptive): how many samples each prompt gets, decided from what is stored.

Every prompt starts at `k_min` samples. A group whose current step is complete (each of its samples
stored, each one the pair build may use judged by every requesting judge) is decided or not by the
pair kernel itself (factory.pairs.decided) under the stop rule: the pairs config with the stop rule's
drop_ratio / min_margin. An undecided group gets `step` more samples (up to sampler.k); a decided one
gets none. Groups still waiting for a sample or a judgment stay where they are.

    adaptive = AdaptiveK(cfg, view)            # view(store) -> (scored samples, judged keys): the graph's
    levels = adaptive.levels(store, prompt_ids)
    levels:  prompt_id  level  state
             p0         2      decided      (its first pair passed the stop rule: 2 samples, no more)
             p1         6      exhausted    (undecided at sampler.k=6: it got every sample it may)
             p2         4      waiting      (grown to 4; samples 2, 3 not stored or not judged yet)

The levels are re-planned from the stored rows every time (never from memory), so a resume, a larger
sampler.k or another stop rule asks only for what the rule now says: sample i of a prompt is the same
key and seed whichever step draws it (factory/stages/sample.py).

The threshold while the run draws: with a quantile rule, delta is the kernel's quantile of the
candidate margins of the groups complete at that moment (each at its current step); it moves as more
groups are judged and as undecided groups grow. A group that stopped under an earlier estimate is
asked again at every re-plan, and the end of a run re-plans every group (Stage.settle), so when the
run ends each group is either decided under the threshold of the groups as stored, or at sampler.k.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import polars as pl

from factory import pairs as pair_kernel
from factory.config import PairsConfig, RunConfig

KEY = ["prompt_id", "sample_idx"]
View = Callable[[Any], tuple[pl.DataFrame, pl.DataFrame | None]]  # store -> (scored samples, judged keys)
STATES = ("waiting", "decided", "exhausted")


def stop_config(cfg: RunConfig) -> PairsConfig:
    """The pairs config whose decision stops a group: pairs.* with the stop rule in place of its threshold
    (sampler.adaptive.min_margin, else sampler.adaptive.drop_ratio as a quantile, else pairs' own)."""
    rule, pairs = cfg.sampler.adaptive, cfg.pairs
    if rule.min_margin is not None:
        return replace(pairs, min_margin=rule.min_margin, target=None)
    if rule.drop_ratio is not None:
        return replace(pairs, drop_ratio=rule.drop_ratio, min_margin=None, target=None)
    return replace(pairs, target=None)


class AdaptiveK:
    """The levels of sampler.adaptive (see the module doc). `view(store)`: the scored samples of the run
    (pair-kernel columns, idx < sampler.k) and the (prompt_id, sample_idx) every requesting judge has
    finished (None: no judge sends requests)."""

    def __init__(self, cfg: RunConfig, view: View, follows: tuple[str, ...]):
        rule = cfg.sampler.adaptive
        self.k_min, self.step, self.k = rule.k_min, rule.step, cfg.sampler.k
        self.replan_s = rule.replan_s
        self.retry_failed = cfg.sampler.retry_failed
        self.pairs = stop_config(cfg)
        self.scale_max = cfg.judge.scale_max
        self.view = view
        self.follows = follows  # the stages whose stored rows may decide a group: the sampler and every judge
        self.last = 0.0
        self.decisions = 0

    def due(self) -> bool:
        """Whether a re-plan while the run draws is due (at most every replan_s seconds)."""
        return time.monotonic() - self.last >= self.replan_s

    def levels(self, store: Any, prompt_ids: pl.Series) -> pl.DataFrame:
        """prompt_id, level (the samples the rule gives it now), state (STATES), one row per prompt.

        From k_min for every prompt: the groups complete at their level are decided together (one
        threshold over all of them); an undecided one below sampler.k grows by `step`, and the groups are
        decided again while one grew into samples that are already stored (a resume, a larger k)."""
        self.last = time.monotonic()
        self.decisions += 1
        scored, judged = self.view(store)
        scored = scored.filter(pl.col("prompt_id").is_in(prompt_ids.implode()))
        level = pl.DataFrame({"prompt_id": prompt_ids, "level": pl.repeat(self.k_min, len(prompt_ids), dtype=pl.Int64, eager=True)})
        while True:
            at = scored.join(level, on="prompt_id").filter(pl.col("sample_idx") < pl.col("level")).drop("level")
            complete = self._complete(at, level, judged)
            done = pl.Series("prompt_id", [], pl.String)
            if complete.height:
                ours = at.join(complete, on="prompt_id", how="semi")
                done = pair_kernel.decided(pair_kernel.prepare(ours, self.pairs, self.scale_max), self.pairs)
            is_complete = pl.col("prompt_id").is_in(complete["prompt_id"].implode())
            level = level.with_columns(
                pl.when(~is_complete).then(pl.lit("waiting"))
                .when(pl.col("prompt_id").is_in(done.implode())).then(pl.lit("decided"))
                .when(pl.col("level") >= self.k).then(pl.lit("exhausted"))
                .otherwise(pl.lit("grow")).alias("state")
            )  # fmt: skip
            grow = pl.col("state") == "grow"
            if not level.select(grow.any()).item():
                break
            level = level.with_columns(
                pl.when(grow).then(pl.min_horizontal(pl.col("level") + self.step, pl.lit(self.k))).otherwise("level").alias("level")
            ).drop("state")  # fmt: skip
        return level.with_columns(pl.col("state").cast(pl.Enum(STATES)))

    def _complete(self, at: pl.DataFrame, level: pl.DataFrame, judged: pl.DataFrame | None) -> pl.DataFrame:
        """prompt_id of the groups whose current step is complete: every sample below its level stored (a
        failed one counts, unless sampler.retry_failed asks for it again) and every sample the pair build
        may use (not excluded by a judge-free rule) judged by every requesting judge."""
        stored = at if not self.retry_failed else at.filter(pl.col("error").is_null())
        n = stored.group_by("prompt_id").agg(pl.len().alias("n"))
        full = level.join(n, on="prompt_id").filter(pl.col("n") >= pl.col("level")).select("prompt_id")
        if not full.height or judged is None:
            return full
        ours = at.join(full, on="prompt_id", how="semi")
        prepared = pair_kernel.prepare(ours, self.pairs, self.scale_max)
        free = list(pair_kernel.judge_free_reasons(prepared))
        marked = prepared.marked.select("prompt_id", pl.col("sample_idx").cast(pl.Int64), pl.col("exclusion").cast(pl.String))
        needs = marked.filter(pl.col("exclusion").is_null() | ~pl.col("exclusion").is_in(free))
        awaiting = needs.join(judged.select(KEY), on=KEY, how="anti").select("prompt_id").unique()
        return full.join(awaiting, on="prompt_id", how="anti")

    def summary(self, levels: pl.DataFrame) -> dict[str, Any]:
        """The manifest's `adaptive` entry: the rule, and the groups by samples given and by state."""
        by_level = levels.group_by("level").agg(pl.len().alias("n")).sort("level")
        by_state = levels.group_by("state").agg(pl.len().alias("n"))
        return {
            "k_min": self.k_min, "step": self.step, "k": self.k,
            "stop_rule": {"drop_ratio": self.pairs.drop_ratio, "min_margin": self.pairs.min_margin},
            "samples_asked": int(levels["level"].sum()),
            "groups_by_samples": {str(k): int(n) for k, n in by_level.iter_rows()},
            "groups_by_state": {s: int(dict(by_state.iter_rows()).get(s, 0)) for s in STATES},
        }  # fmt: skip

    def growth_estimate(self, levels: pl.DataFrame) -> tuple[int, str]:
        """(samples beyond the current levels the rule will likely ask for, how): for `factory plan`. Each
        waiting group is expected to end where the stored groups that got at least as far ended (their mean
        level), else at sampler.k (an upper bound)."""
        ended = levels.filter(pl.col("state") != "waiting")["level"]
        waiting = levels.filter(pl.col("state") == "waiting")["level"]
        if not waiting.len():
            return 0, ""
        if not ended.len():
            extra = int((self.k - waiting).sum())
            return extra, f"<= {extra} more samples if every waiting group grows to k={self.k} (no stored decision yet)"
        extra = 0.0
        for at, n in waiting.value_counts().iter_rows():
            further = ended.filter(ended >= at)
            extra += n * ((float(further.mean()) if further.len() else float(self.k)) - at)  # type: ignore[arg-type]
        return round(extra), (
            f"~{round(extra)} more samples estimated for {waiting.len()} waiting group(s), at the levels where "
            f"{ended.len()} stored group(s) stopped (mean {float(ended.mean()):.2f} samples)"  # type: ignore[arg-type]
        )
