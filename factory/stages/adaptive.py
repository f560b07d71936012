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
             p3         4      given_up     (sampler.adaptive.give_up: no pair near the threshold at 4)

The levels are re-planned from the stored rows every time (never from memory), so a resume, a larger
sampler.k or another stop rule asks only for what the rule now says: sample i of a prompt is the same
key and seed whichever step draws it (factory/stages/sample.py).

The threshold while the run draws (a quantile rule): the kernel's delta over the candidate pairs of
every group with a complete step, each with the samples of its last complete step: the threshold the
pair build would set if it ran now on what is judged. It moves as groups are judged and grow; every
group is decided again at each re-plan at the threshold of that moment, and the end of a run re-plans
every group (Stage.settle), so when a run ends each group is decided at the threshold of the groups as
stored, or has sampler.k samples. A sample drawn under an earlier estimate stays (paid for, used by the
pair build). A min_margin rule is fixed: a group's samples then depend on its own samples alone.
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
STATES = ("waiting", "decided", "exhausted", "given_up")


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
        self.replan_s, self.give_up = rule.replan_s, rule.give_up
        self.retry_failed = cfg.sampler.retry_failed
        self.pairs = stop_config(cfg)
        self.scale_max = cfg.judge.scale_max
        self.view = view
        self.follows = follows  # the stages whose stored rows may decide a group: the sampler and every judge
        self.last = self.cost = 0.0  # when the last decision was made, and how long it took (s)
        self.delta: float | None = None  # the stop rule's threshold at the last decision
        self.decisions = 0

    def due(self) -> bool:
        """Whether a re-plan while the run draws is due: replan_s seconds after the last, and at least four
        times as long as the last one took (the driver that dispatches spends at most a fifth of its time
        deciding, however large the run directory grows)."""
        return time.monotonic() - self.last >= max(self.replan_s, 4 * self.cost)

    def levels(self, store: Any, prompt_ids: pl.Series) -> pl.DataFrame:
        """prompt_id, level (the samples the rule gives it now), state (STATES), one row per prompt.

        First the threshold: the kernel's, over the candidate pairs of every group with a complete step
        (each with the samples of its last complete step; the stop rule's min_margin when it sets one).
        Then every group walks up from k_min at that one threshold: decided at a complete step, it stops;
        undecided, it takes the next step (up to sampler.k); at a step not complete yet, it waits."""
        t0 = self.last = time.monotonic()
        self.decisions += 1
        try:
            return self._levels(store, prompt_ids)
        finally:
            self.cost = time.monotonic() - t0

    def _levels(self, store: Any, prompt_ids: pl.Series) -> pl.DataFrame:
        scored, judged = self.view(store)
        scored = scored.filter(pl.col("prompt_id").is_in(prompt_ids.implode()))
        ladder = list(range(self.k_min, self.k, self.step)) + [self.k]
        reached = self._complete_prefix(scored, judged, prompt_ids, ladder)
        delta = self.delta = self._threshold(scored, reached)
        level = reached.select(
            "prompt_id", pl.lit(self.k_min, pl.Int64).alias("level"), pl.lit("waiting").alias("state")
        )
        for at in ladder:
            walking = reached.join(
                level.filter((pl.col("state") == "waiting") & (pl.col("level") == at)), on="prompt_id"
            )
            walking = walking.filter(pl.col("reached") >= at)  # complete at this step: decide it
            if not walking.height:
                break
            ours = scored.join(walking.select("prompt_id"), on="prompt_id", how="semi").filter(
                pl.col("sample_idx") < at
            )
            prepared = pair_kernel.prepare(ours, self.pairs, self.scale_max)
            done = pair_kernel.decided(prepared, self.pairs, delta)
            hopeless = pl.lit(False)
            if self.give_up is not None and delta is not None and at >= self.k_min + self.step:
                # not even a pair at give_up x delta after a step more than k_min: given up
                near = pair_kernel.decided(prepared, self.pairs, self.give_up * delta)
                hopeless = ~pl.col("prompt_id").is_in(near.implode())
            step = pl.col("prompt_id").is_in(walking["prompt_id"].implode())
            level = level.with_columns(
                pl.when(~step).then("state")
                .when(pl.col("prompt_id").is_in(done.implode())).then(pl.lit("decided"))
                .when(pl.col("level") >= self.k).then(pl.lit("exhausted"))
                .when(hopeless).then(pl.lit("given_up"))
                .otherwise(pl.lit("waiting")).alias("state"),
            )  # fmt: skip
            grow = step & (pl.col("state") == "waiting")
            level = level.with_columns(
                pl.when(grow)
                .then(pl.min_horizontal(pl.col("level") + self.step, pl.lit(self.k)))
                .otherwise("level")
                .alias("level")
            )
        return level.with_columns(pl.col("state").cast(pl.Enum(STATES)))

    def _complete_prefix(
        self, scored: pl.DataFrame, judged: pl.DataFrame | None, prompt_ids: pl.Series, ladder: list[int]
    ) -> pl.DataFrame:
        """prompt_id, reached: the largest step of the ladder at which the group is complete (0: none),
        i.e. every sample below it settled: stored (a failed one counts, unless sampler.retry_failed asks
        for it again) and, unless a judge-free rule excludes it from the pair build, judged by every
        requesting judge (all its votes)."""
        settled = pl.DataFrame(schema={"prompt_id": pl.String, "sample_idx": pl.Int64})
        if scored.height:
            marked = pair_kernel.prepare(scored, self.pairs, self.scale_max).marked
            marked = marked.select(
                "prompt_id", pl.col("sample_idx").cast(pl.Int64), pl.col("exclusion").cast(pl.String)
            )
            marked = marked.join(scored.select(*KEY, "error"), on=KEY, how="left")
            if self.retry_failed:  # a failed sample is asked again in this run: not settled yet
                marked = marked.filter(pl.col("error").is_null())
            free = pl.col("exclusion").is_in(list(pair_kernel.judge_free_reasons(self.pairs))).fill_null(False)
            rest = marked.filter(~free).select(KEY)
            if judged is not None:
                rest = rest.join(judged.select(KEY), on=KEY, how="semi")
            settled = pl.concat([marked.filter(free).select(KEY), rest])
        prefix = (  # the settled samples 0, 1, 2, ... of each group, up to the first gap
            settled.sort(KEY).group_by("prompt_id")
            .agg((pl.col("sample_idx") == pl.int_range(pl.len())).cum_min().sum().alias("prefix"))
        )  # fmt: skip
        out = pl.DataFrame({"prompt_id": prompt_ids}).join(prefix, on="prompt_id", how="left", maintain_order="left")
        steps = [0, *ladder]
        reached = [max(s for s in steps if s <= n) for n in out["prefix"].fill_null(0)]
        return out.select("prompt_id", pl.Series("reached", reached, pl.Int64))

    def _threshold(self, scored: pl.DataFrame, reached: pl.DataFrame) -> float | None:
        """The stop rule's delta now (see `levels`)."""
        complete = reached.filter(pl.col("reached") > 0)
        ours = scored.join(complete, on="prompt_id").filter(pl.col("sample_idx") < pl.col("reached")).drop("reached")
        if not ours.height:
            return self.pairs.min_margin
        prepared = pair_kernel.prepare(ours, self.pairs, self.scale_max)
        return pair_kernel.threshold(pair_kernel.candidates(prepared, self.pairs), self.pairs)[0]

    def summary(self, levels: pl.DataFrame) -> dict[str, Any]:
        """The manifest's `adaptive` entry: the rule, and the groups by samples given and by state."""
        by_level = levels.group_by("level").agg(pl.len().alias("n")).sort("level")
        by_state = levels.group_by("state").agg(pl.len().alias("n"))
        return {
            "k_min": self.k_min,
            "step": self.step,
            "k": self.k,
            "stop_rule": {
                "drop_ratio": self.pairs.drop_ratio,
                "min_margin": self.pairs.min_margin,
                "give_up": self.give_up,
            },
            "samples_asked": int(levels["level"].sum()),
            "groups_by_samples": {str(k): int(n) for k, n in by_level.iter_rows()},
            "groups_by_state": {s: int(dict(by_state.iter_rows()).get(s, 0)) for s in STATES},
        }

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
