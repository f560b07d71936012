"""FROZEN REFERENCE ORACLE, not product code: factory/stages/pairs.py as it was at commit d8814a3,
before issue 10 turned it into the factory.pairs kernel. Only this paragraph was added. The tests
compare the two-term shorthand (pairs.w_len / pairs.w_quality) of the new kernel against it; do not
edit it to make a test pass (tests/pairs/test_legacy.py also checks it against the frozen fixture).

Pair stage, the decision: normalized length + quality -> weighted score S -> chosen/rejected per
group -> margin threshold. Vectorized (polars frames, numpy reductions over each group's contiguous
rows), no Python loop per group, no LLM call. factory.stages.pairs_output turns the decision into
pairs/ and sft/ rows.

Input columns:  scored  -> prompt_id, sample_idx, completion_tokens, finish_reason, error, answer,
                           quality (mean usable judge vote, 0..1, null when none)
Output columns: groups  -> one row per group with >= 2 valid samples: prompt_id, chosen_/rejected_
                           idx, row, tokens, quality, score; margin; outcome (kept, below_margin,
                           tied, no_short_sample)

    rows in (scored):  prompt_id  sample_idx  completion_tokens  finish_reason  quality  answer ...
                       p1         0           120                stop           0.9      "..."
                       p1         1           380                stop           0.8      "..."
                       p1         2           512                length         null     "..."
    row out (pairs):   prompt_id=p1  chosen_idx=0  rejected_idx=1  margin=...   (sample 2 is excluded
                       as truncated and counted under that reason)

    S_i    = w_len * (1 - L_i / L_max) + w_q * (Q_i / Q_max)
    chosen = argmax S, rejected = argmin S, margin = S_chosen - S_rejected
    kept   = margin >= delta and margin > 0

delta is the drop_ratio quantile of the margins of every group with >= 2 valid samples (tied groups
included), with linear interpolation between the two nearest order statistics: for n sorted margins
m_0..m_{n-1}, h = (n - 1) * drop_ratio and delta = m_floor(h) + (h - floor(h)) * (m_ceil(h) - m_floor(h))
(numpy's default "linear" method, R's type 7). `pairs.min_margin`, when set, is delta instead.
long2short has no margin threshold: the shortest valid sample is chosen when it has fewer than
`max_chosen_tokens` tokens, the longest is rejected.

Valid samples: no engine error, not truncated (finish_reason != "length"), non-empty answer, a token
count, and a usable judgment. Every other sample is counted under the first reason that applies,
and every group ends in exactly one bucket (fewer_than_2_valid, no_short_sample, tied, dropped below
delta, kept), so the counts always add up. A truncated sample is therefore never chosen.

Ties are broken deterministically: chosen is the highest S, then fewest tokens, then highest
quality, then lowest sample_idx; rejected is the lowest S, then most tokens, then lowest quality,
then highest sample_idx. The second order is the exact reverse of the first, so with n >= 2 valid
samples (distinct sample_idx) the two never pick the same sample, and a group whose best and worst S
are equal (margin 0, no preference) is never kept.

Memory: the decision is made from numbers only (`mark_samples` keeps prompt_id, sample_idx, tokens,
quality and the exclusion reason); reasoning and answer text are fetched for the kept pairs only
(pairs_output), so a LazyFrame over Parquet (`pl.scan_parquet`) is never held in memory with its text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from factory.config import PairsConfig
from factory.rundir.schemas import require_columns

SCORED_COLUMNS = (
    "prompt_id",
    "sample_idx",
    "completion_tokens",
    "finish_reason",
    "error",
    "answer",
    "reasoning",
    "quality",
)
EXCLUSION_REASONS = ("engine_error", "truncated", "empty_answer", "no_token_count", "no_judgment")
# Every group lands in exactly one of these buckets or among the dropped/kept pairs.
GROUP_EXCLUSIONS = ("fewer_than_2_valid", "no_short_sample", "tied")
# Tie-break keys: among samples of equal S, the chosen one has the fewest tokens, then the highest
# quality, then the lowest sample_idx; the rejected one is picked in exactly the reverse order.
TIE_KEYS = ["completion_tokens", "quality", "sample_idx"]
CHOSEN_ORDER = [False, True, False]
REJECTED_ORDER = [True, False, True]


@dataclass
class PairStats:
    strategy: str = "dp_dpo"
    groups: int = 0
    groups_candidate: int = 0
    pairs_kept: int = 0
    pairs_dropped: int = 0
    delta: float | None = None
    delta_rule: str | None = None
    samples_total: int = 0
    samples_valid: int = 0
    samples_excluded: dict[str, int] = field(default_factory=dict)
    groups_excluded: dict[str, int] = field(default_factory=dict)
    groups_too_few_by_reason: dict[str, int] = field(default_factory=dict)
    mean_token_gap: float | None = None
    mean_quality_gap: float | None = None
    mean_chosen_tokens: float | None = None
    mean_rejected_tokens: float | None = None
    mean_chosen_quality: float | None = None
    mean_rejected_quality: float | None = None
    target: int | None = None
    prompts_needed_more: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# -- validity ----------------------------------------------------------------------------------
def mark_samples(scored: pl.LazyFrame) -> pl.LazyFrame:
    """Scored samples -> the slim frame every decision is made from.

    Output columns: row (the sample's position in `scored`, to fetch its text later), prompt_id,
    sample_idx (i64), completion_tokens (i64), quality (f64), exclusion (Enum of EXCLUSION_REASONS;
    null for a valid sample). The answer text is read only to test that it is not blank, so no text
    column survives this step.
    """
    has_answer = pl.col("answer").str.contains(r"\S").fill_null(False)
    quality = pl.col("quality").cast(pl.Float64)
    exclusion = (
        pl.when(pl.col("error").is_not_null())
        .then(pl.lit("engine_error"))
        .when(pl.col("finish_reason") == "length")
        .then(pl.lit("truncated"))
        .when(~has_answer)
        .then(pl.lit("empty_answer"))
        .when(pl.col("completion_tokens").is_null())
        .then(pl.lit("no_token_count"))
        .when(quality.is_null() | quality.is_nan())
        .then(pl.lit("no_judgment"))
        .otherwise(None)
    )
    return scored.with_row_index("row").select(
        "row",
        "prompt_id",
        pl.col("sample_idx").cast(pl.Int64),
        pl.col("completion_tokens").cast(pl.Int64),
        quality.alias("quality"),
        exclusion.cast(pl.Enum(EXCLUSION_REASONS)).alias("exclusion"),
    )


def group_keys(marked: pl.DataFrame) -> pl.DataFrame:
    """Adds `gid` (u32, dense): every grouping runs on it rather than on the prompt_id string. Rows
    are put in prompt_id order first when they are not (the stored samples already are)."""
    if not marked["prompt_id"].is_sorted():
        marked = marked.sort("prompt_id", maintain_order=True)
    return marked.with_columns(pl.col("prompt_id").rle_id().alias("gid"))


def _exclusion_counts(marked: pl.DataFrame, stats: PairStats) -> pl.DataFrame:
    """Fills the sample counts and the fewer_than_2_valid group counts; returns the valid samples."""
    stats.samples_total = marked.height
    excluded = marked["exclusion"].drop_nulls().value_counts()
    stats.samples_excluded = {r: 0 for r in EXCLUSION_REASONS} | {
        str(r): int(n) for r, n in zip(excluded["exclusion"], excluded["count"])
    }
    stats.samples_valid = marked.height - sum(stats.samples_excluded.values())
    is_valid = marked["exclusion"].is_null()
    starts, _ = segments(marked["gid"])
    n_valid = np.add.reduceat(is_valid.to_numpy().astype(np.int64), starts) if len(starts) else starts
    stats.groups = len(starts)
    stats.groups_excluded = {name: 0 for name in GROUP_EXCLUSIONS}
    stats.groups_excluded["fewer_than_2_valid"] = int((n_valid < 2).sum())
    stats.groups_too_few_by_reason = {}
    if stats.groups_excluded["fewer_than_2_valid"]:
        too_few = pl.DataFrame({"gid": marked["gid"].gather(starts[n_valid < 2])})
        stats.groups_too_few_by_reason = _too_few_reasons(marked, too_few)
    return marked.filter(is_valid).drop("exclusion")


def _too_few_reasons(marked: pl.DataFrame, too_few: pl.DataFrame) -> dict[str, int]:
    """A group with too few valid samples is counted under its most frequent sample exclusion
    (ties: the earlier reason in EXCLUSION_REASONS); one with nothing excluded had < 2 samples."""
    commonest = (
        marked.join(too_few, on="gid", how="semi")
        .filter(pl.col("exclusion").is_not_null())
        .group_by("gid", "exclusion")
        .len()
        .sort(["len", "exclusion"], descending=[True, False])
        .unique("gid", keep="first")
    )
    reasons = too_few.join(commonest, on="gid", how="left").select(
        pl.col("exclusion").cast(pl.String).fill_null("fewer_than_2_samples")
    )
    counts = reasons["exclusion"].value_counts()
    return {str(r): int(n) for r, n in zip(counts["exclusion"], counts["count"])}


# -- scoring -----------------------------------------------------------------------------------
def weights(cfg: PairsConfig) -> tuple[float, float]:
    if cfg.strategy == "quality":
        return 0.0, 1.0
    if cfg.strategy == "long2short":
        return 1.0, 0.0
    return cfg.w_len, cfg.quality_weight


def segments(gid: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """(first row, row count) of each group: after `group_keys` a group's rows are contiguous."""
    keys = gid.to_numpy()
    if not len(keys):
        return np.empty(0, np.int64), np.empty(0, np.int64)
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return starts, np.diff(np.r_[starts, len(keys)])


def per_group(values: np.ndarray, reduce: np.ufunc, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The group's max/min (`reduce`) repeated on each of its rows: a window function over
    contiguous groups, done with numpy's reduceat because tiny groups are where polars' windows are slow."""
    return np.repeat(reduce.reduceat(values, starts), counts) if len(values) else values


def add_terms(valid: pl.DataFrame, cfg: PairsConfig) -> pl.DataFrame:
    """Valid samples (gid-contiguous) -> plus len_term = 1 - L/L_max and q_term = Q/Q_max, so that
    S = w_len * len_term + w_q * q_term for any weights. A zero maximum gives a zero term."""
    starts, counts = segments(valid["gid"])
    tokens = valid["completion_tokens"].to_numpy().astype(np.float64)
    quality = valid["quality"].to_numpy().astype(np.float64)
    if cfg.length_norm == "group":
        l_max = per_group(tokens, np.maximum, starts, counts)
    elif cfg.length_norm == "global":
        l_max = np.full_like(tokens, tokens.max() if len(tokens) else 0.0)
    else:  # fixed: a sample longer than length_max gets a negative length term, which still orders right
        l_max = np.full_like(tokens, float(cfg.length_max))  # type: ignore[arg-type]
    len_term = 1.0 - np.divide(tokens, l_max, out=np.ones_like(tokens), where=l_max > 0)
    if cfg.quality_norm == "group":
        q_max = per_group(quality, np.maximum, starts, counts)
        q_term = np.divide(quality, q_max, out=np.zeros_like(quality), where=q_max > 0)
    else:  # quality is already score / scale_max
        q_term = quality
    return valid.with_columns(pl.Series("len_term", len_term), pl.Series("q_term", q_term))


def with_score(terms: pl.DataFrame, w_len: float, w_q: float) -> pl.DataFrame:
    return terms.with_columns((w_len * pl.col("len_term") + w_q * pl.col("q_term")).alias("S"))


def pick_sides(valid: pl.DataFrame) -> pl.DataFrame:
    """Valid samples (gid-contiguous) with their S -> one row per group with >= 2 of them.

    Output columns: gid, prompt_id, n_valid, chosen_/rejected_ idx, row, tokens, quality, score;
    margin; one row per group in gid order. Only the samples at their group's best (or worst) S are
    sorted by the tie-break keys (and only when some group has a tie there), which is far less work
    than sorting every sample and picks the same.
    """
    starts, counts = segments(valid["gid"])
    score = valid["S"].to_numpy()
    eligible = np.repeat(counts >= 2, counts)
    n_groups = int((counts >= 2).sum())
    sides = []
    for side, best, order in (("chosen", np.maximum, CHOSEN_ORDER), ("rejected", np.minimum, REJECTED_ORDER)):
        at_best = np.flatnonzero(eligible & (score == per_group(score, best, starts, counts)))
        if len(at_best) > n_groups:  # some group has a tie at its best (worst) S
            at_best = _break_ties(valid, at_best, order)
        picked = valid[at_best]
        columns = (
            [picked["gid"], picked["prompt_id"], pl.Series("n_valid", counts[counts >= 2])] if side == "chosen" else []
        )
        columns += [
            picked["sample_idx"].alias(f"{side}_idx"),
            picked["row"].alias(f"{side}_row"),
            picked["completion_tokens"].alias(f"{side}_tokens"),
            picked["quality"].alias(f"{side}_quality"),
            picked["S"].alias(f"{side}_score"),
        ]
        sides.append(pl.DataFrame(columns))
    # Both sides hold exactly one row per candidate group, in gid order: they sit side by side.
    return pl.concat(sides, how="horizontal").with_columns(
        (pl.col("chosen_score") - pl.col("rejected_score")).alias("margin")
    )


def _break_ties(valid: pl.DataFrame, at_best: np.ndarray, descending: list[bool]) -> np.ndarray:
    """Row positions at a group's best S (several in a tied group) -> one per group, by TIE_KEYS."""
    gid = valid["gid"].to_numpy()[at_best]
    repeated = gid[1:] == gid[:-1]  # positions ascend, so a group's rows sit next to each other
    tied = np.r_[repeated, False] | np.r_[False, repeated]
    rows = at_best[tied]
    keys = []
    for name, desc in zip(TIE_KEYS, descending):
        values = valid[name].to_numpy()[rows]
        keys.append(-values if desc else values)
    # lexsort sorts by the last key first: group, then the tie keys in order.
    ordered = rows[np.lexsort((*reversed(keys), gid[tied]))]
    first = np.r_[True, valid["gid"].to_numpy()[ordered][1:] != valid["gid"].to_numpy()[ordered][:-1]]
    return np.sort(np.r_[at_best[~tied], ordered[first]])


def margin_quantile(sorted_margins: np.ndarray, drop_ratio: float) -> float | None:
    """delta: the drop_ratio quantile of the (ascending) group margins, linear interpolation between
    the nearest order statistics (see module doc). One function for `pairs` and `sweep`, so the two
    agree to the last bit."""
    n = len(sorted_margins)
    if not n:
        return None
    h = (n - 1) * drop_ratio
    lo = math.floor(h)
    hi = min(lo + 1, n - 1)
    return float(sorted_margins[lo] + (h - lo) * (sorted_margins[hi] - sorted_margins[lo]))


# -- deciding the pairs ------------------------------------------------------------------------
def select_pairs(scored: pl.LazyFrame | pl.DataFrame, cfg: PairsConfig) -> tuple[pl.DataFrame, PairStats]:
    """Scored samples -> (one row per group with >= 2 valid samples, stats). Numbers only.

    Output columns: those of `pick_sides` plus `outcome`: kept, below_margin, tied, no_short_sample.
    """
    require_columns(scored, [c for c in SCORED_COLUMNS if c != "reasoning"], "pairs")
    stats = PairStats(strategy=cfg.strategy, target=cfg.target)
    # A Parquet scan streams (only the slim columns are held); an in-memory frame needs no streaming.
    engine = "in-memory" if isinstance(scored, pl.DataFrame) else "streaming"
    marked = group_keys(mark_samples(scored.lazy()).collect(engine=engine))
    valid = _exclusion_counts(marked, stats)
    w_len, w_q = weights(cfg)
    groups = pick_sides(with_score(add_terms(valid, cfg), w_len, w_q))
    stats.groups_candidate = groups.height
    clash = groups.filter(pl.col("chosen_idx") == pl.col("rejected_idx"))
    if clash.height:  # only possible when a (prompt_id, sample_idx) key is stored twice
        raise ValueError(
            f"pairs: sample_idx repeats within prompt {clash['prompt_id'][0]!r}; deduplicate the samples first"
        )

    tied = pl.col("margin") <= 0
    if cfg.strategy == "long2short":
        short = pl.col("chosen_tokens") < cfg.max_chosen_tokens
        outcome = (
            pl.when(~short).then(pl.lit("no_short_sample")).when(tied).then(pl.lit("tied")).otherwise(pl.lit("kept"))
        )
    else:
        if cfg.min_margin is not None:
            stats.delta, stats.delta_rule = float(cfg.min_margin), "min_margin"
        else:
            stats.delta, stats.delta_rule = (
                margin_quantile(np.sort(groups["margin"].to_numpy()), cfg.drop_ratio),
                "quantile",
            )
        above = pl.col("margin") >= (stats.delta if stats.delta is not None else 0.0)
        outcome = pl.when(tied).then(pl.lit("tied")).when(~above).then(pl.lit("below_margin")).otherwise(pl.lit("kept"))
    groups = groups.with_columns(outcome.alias("outcome")).drop("gid")  # gid order is prompt_id order
    counts = dict(groups["outcome"].value_counts().iter_rows())
    for name in ("no_short_sample", "tied"):
        stats.groups_excluded[name] = int(counts.get(name, 0))
    stats.pairs_kept = int(counts.get("kept", 0))
    stats.pairs_dropped = int(counts.get("below_margin", 0))
    _fill_means(stats, groups.filter(pl.col("outcome") == "kept"))
    _fill_target(stats)
    return groups, stats


def _fill_means(stats: PairStats, kept: pl.DataFrame) -> None:
    if not kept.height:
        return
    means = kept.select(
        (pl.col("rejected_tokens") - pl.col("chosen_tokens")).mean().alias("mean_token_gap"),
        (pl.col("chosen_quality") - pl.col("rejected_quality")).mean().alias("mean_quality_gap"),
        pl.col("chosen_tokens").mean().alias("mean_chosen_tokens"),
        pl.col("rejected_tokens").mean().alias("mean_rejected_tokens"),
        pl.col("chosen_quality").mean().alias("mean_chosen_quality"),
        pl.col("rejected_quality").mean().alias("mean_rejected_quality"),
    ).row(0, named=True)
    for name, value in means.items():
        setattr(stats, name, float(value))


def _fill_target(stats: PairStats) -> None:
    """At the observed survival rate (pairs kept per prompt), how many more prompts the target needs."""
    if not stats.target or stats.pairs_kept >= stats.target:
        stats.prompts_needed_more = 0 if stats.target else None
        return
    if stats.pairs_kept == 0 or stats.groups == 0:
        stats.prompts_needed_more = None  # no survival observed: no estimate
        return
    survival = stats.pairs_kept / stats.groups
    stats.prompts_needed_more = math.ceil((stats.target - stats.pairs_kept) / survival)


def target_note(stats: PairStats | dict[str, Any]) -> str | None:
    """One line for the user when pairs.target is set, else None."""
    s = stats if isinstance(stats, dict) else stats.as_dict()
    target, kept, groups = s.get("target"), s["pairs_kept"], s["groups"]
    if not target:
        return None
    if kept >= target:
        return f"[pairs] target met: {kept} pairs kept >= target {target}"
    if s.get("prompts_needed_more") is None:
        return (
            f"[pairs] target {target} not met: no pair survived from {groups} prompts, so no estimate of the "
            "prompts needed"
        )
    return (
        f"[pairs] target {target} not met: {kept} pairs from {groups} prompts (survival {kept / groups:.1%}); "
        f"about {s['prompts_needed_more']} more prompts are needed at this rate"
    )
