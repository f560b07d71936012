"""The counts and means of a pair build, and the target estimate (how many more prompts pairs.target
needs at the observed survival). The counts always add up:

    samples_total  = samples_valid + sum(samples_excluded)             (one reason per sample)
    groups         = sum(groups_by_outcome)                            (one bucket per group)
    pairs_candidate = sum(pairs_by_outcome)                            (one outcome per candidate pair)

With pairing one a group has one candidate pair, so pairs_kept / pairs_dropped are also groups, as
the paper counts them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from factory.config import PairsConfig
from factory.config.strategies import strategy_of
from factory.pairs.terms import weights

if TYPE_CHECKING:
    from factory.pairs.marks import Prepared

# Pair outcomes, in the priority a group's bucket takes (the first any of its pairs has).
# order_flip (pairs.exclude_order_flips) comes last: numbered after the others, which keep their codes.
OUTCOMES = ("kept", "over_cap", "over_balance", "below_margin", "no_short_sample", "tied", "order_flip")
# Outcomes only a setting can give, left out of the counts when it is off (manifests stay as they were).
OPTIONAL_OUTCOMES = {
    "over_balance": lambda cfg: bool(cfg.balance.column),
    "order_flip": lambda cfg: cfg.exclude_order_flips,
}
# The buckets a group can end in besides kept / below_margin: the old names, kept for the manifest.
GROUP_EXCLUSIONS = ("fewer_than_2_valid", "no_short_sample", "tied")


@dataclass
class PairStats:
    strategy: str = "dp_dpo"
    pairing: str = "one"
    combine: str = "terms"
    groups: int = 0
    groups_candidate: int = 0  # groups with >= 2 valid samples
    pairs_candidate: int = 0
    pairs_kept: int = 0
    pairs_dropped: int = 0  # candidate pairs below delta
    delta: float | None = None
    delta_rule: str | None = None
    samples_total: int = 0
    samples_valid: int = 0
    samples_excluded: dict[str, int] = field(default_factory=dict)
    groups_excluded: dict[str, int] = field(default_factory=dict)
    groups_too_few_by_reason: dict[str, int] = field(default_factory=dict)
    groups_by_outcome: dict[str, int] = field(default_factory=dict)
    pairs_by_outcome: dict[str, int] = field(default_factory=dict)
    terms: list[dict[str, Any]] = field(default_factory=list)
    judge_agreement: dict[str, float | None] = field(default_factory=dict)
    mean_token_gap: float | None = None
    mean_quality_gap: float | None = None
    mean_chosen_tokens: float | None = None
    mean_rejected_tokens: float | None = None
    mean_chosen_quality: float | None = None
    mean_rejected_quality: float | None = None
    target: int | None = None
    prompts_needed_more: int | None = None
    balance: dict[str, Any] = field(default_factory=dict)  # pairs.balance: column, cap, per value
    pairs_repeated: int | None = None  # pairs.balance.floor: the repeat rows written beside the kept pairs
    # judge.orders 2: candidate pairs both orders scored, and those whose chosen and rejected swap between them
    order_pairs: int | None = None
    order_flips: int | None = None

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        if not out["balance"]:
            del out["balance"]
        for name in ("pairs_repeated", "order_pairs", "order_flips"):
            if out[name] is None:
                del out[name]
        return out

    @property
    def pairs_written(self) -> int:
        """The rows of pairs/: every kept pair once, plus its repeats (pairs.balance.floor)."""
        return self.pairs_kept + (self.pairs_repeated or 0)


def summarize(
    prepared: Prepared,
    frame: pl.DataFrame,
    group: np.ndarray,
    codes: np.ndarray,
    delta: float | None,
    rule: str | None,
    cfg: PairsConfig,
    agreement: dict[str, float | None],
    balance_cap: int | None = None,
) -> PairStats:
    """Stats of one decision: `frame` and `codes` hold its candidate pairs, `group` their groups."""
    excluded = prepared.exclusions
    stats = PairStats(strategy=cfg.strategy, pairing=cfg.pairing, combine=cfg.combine, target=cfg.target)
    stats.samples_total, stats.samples_valid = excluded["samples_total"], excluded["samples_valid"]
    stats.samples_excluded = dict(excluded["samples_excluded"])
    stats.groups, stats.groups_too_few_by_reason = excluded["groups"], dict(excluded["too_few_by_reason"])
    stats.groups_candidate, stats.pairs_candidate = int((prepared.counts >= 2).sum()), len(codes)
    stats.delta, stats.delta_rule = delta, rule
    by_pair = np.bincount(codes, minlength=len(OUTCOMES))
    shown = [name for name in OUTCOMES if name not in OPTIONAL_OUTCOMES or OPTIONAL_OUTCOMES[name](cfg)]
    stats.pairs_by_outcome = {name: int(n) for name, n in zip(OUTCOMES, by_pair) if name in shown}
    stats.pairs_kept, stats.pairs_dropped = stats.pairs_by_outcome["kept"], stats.pairs_by_outcome["below_margin"]
    bucket = np.bincount(group_buckets(group, codes)[1], minlength=len(OUTCOMES))
    stats.groups_by_outcome = {"fewer_than_2_valid": excluded["fewer_than_2_valid"]} | {
        name: int(n) for name, n in zip(OUTCOMES, bucket) if name != "over_cap" and name in shown
    }
    stats.groups_excluded = {name: stats.groups_by_outcome[name] for name in GROUP_EXCLUSIONS}
    stats.terms = [
        {"name": t.name, "key": t.key, "source": t.column, "weight": float(w), "norm": _norm_label(t, prepared, cfg),
         "direction": t.direction, "exclude_above": t.exclude_above, "exclude_below": t.exclude_below}
        for t, w in zip(prepared.terms, weights(cfg))
    ]  # fmt: skip
    stats.judge_agreement = agreement
    if cfg.balance.column:
        stats.balance = _balance_counts(frame, cfg, balance_cap)
    if cfg.balance.floor is not None:
        stats.pairs_repeated = int(frame["repeats"].sum())
    _fill_means(stats, frame.filter(pl.col("outcome") == "kept"))
    _fill_target(stats)
    return stats


def group_buckets(group: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(group, bucket) of every group with a candidate pair: its best pair outcome (the lowest code; the
    pairs of a group are contiguous). Groups without one are fewer_than_2_valid."""
    if not len(codes):
        return np.empty(0, np.int64), np.empty(0, np.int64)
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    return group[starts], np.minimum.reduceat(codes, starts).astype(np.int64)


def _balance_counts(frame: pl.DataFrame, cfg: PairsConfig, cap: int | None) -> dict[str, Any]:
    """pairs.balance: the cap in force and, per value, the pairs kept and dropped as over_balance."""
    floor = cfg.balance.floor
    repeats = [pl.col("repeats").sum().alias("repeated")] if floor is not None else []
    counts = (
        frame.group_by("balance_value")
        .agg(
            (pl.col("outcome") == "kept").sum().alias("kept"),
            (pl.col("outcome") == "over_balance").sum().alias("over_balance"),
            *repeats,
        )
        .sort("balance_value", nulls_last=True)
    )
    share = cfg.balance.target_share
    out = {
        "column": cfg.balance.column,
        "cap": cap,
        "target_share": share,
        "reachable": None if share is None else cap is not None,
        "by_value": {
            "(null)" if row[0] is None else str(row[0]): {
                "kept": int(row[1]),
                "over_balance": int(row[2]),
                **({"repeated": int(row[3])} if repeats else {}),
            }
            for row in counts.iter_rows()
        },  # fmt: skip
    }
    if floor is not None:
        out |= {"floor": floor, "max_repeats": cfg.balance.max_repeats}
    return out


def _norm_label(term: Any, prepared: Prepared, cfg: PairsConfig) -> str:
    """The quality term's normalization is its judges': "quality (scale)", "mean of quality (scale),
    reward_rm (group_minmax)" or "vote of ..."."""
    if term.name != "quality":
        return term.norm
    judges = ", ".join(f"{j.column} ({j.norm})" for j in prepared.judges)
    if len(prepared.judges) == 1:
        return judges
    return f"{'vote' if cfg.combine == 'vote' else 'mean'} of {judges}"


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
        setattr(stats, name, None if value is None else float(value))  # quality is null without the primary judge


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


def filter_note(stats: PairStats | dict[str, Any]) -> str | None:
    """One line when no sample is left valid and filter terms excluded samples (a rule that excludes
    everything: a regex for another language's answers, a bound on the wrong side), naming each such term."""
    s = stats if isinstance(stats, dict) else stats.as_dict()
    excluded = s.get("samples_excluded") or {}
    filters = [
        t for t in s.get("terms") or [] if t.get("exclude_above") is not None or t.get("exclude_below") is not None
    ]
    hit = [(t, excluded.get(t["name"], 0)) for t in filters if excluded.get(t["name"], 0)]
    if s.get("samples_valid") or not hit:
        return None
    named = "; ".join(
        f"{t['key']} ({t['name']}"
        + "".join(f", {k} {t[k]:g}" for k in ("exclude_above", "exclude_below") if t.get(k) is not None)
        + f") excluded {n}"
        for t, n in hit
    )
    return (
        f"[pairs] warning: no sample is valid, and the filter {named} of the {s['samples_total']} samples: "
        "no pair can be made; check the filter's rule (or weight it instead of excluding)"
    )


def target_draw(pairs: PairsConfig, kept: int | None = None, rows: int | None = None, limit: int | None = None) -> int:
    """The prompt rows to draw for `pairs.target`: with nothing observed, target / (1 - drop_ratio) + 20%;
    after a round that kept `kept` pairs of `rows` prompt rows, enough more at that survival rate + 10%
    (twice `limit` when no pair survived). `factory run` draws and `factory plan` estimates with it."""
    target = int(pairs.target or 0)
    if kept is None or rows is None:
        drop = pairs.drop_ratio if strategy_of(pairs).delta and pairs.min_margin is None else 0.0
        return math.ceil(1.2 * target / (1.0 - drop))
    more = (limit or rows) if kept == 0 else math.ceil(1.1 * (target - kept) * rows / kept)
    return rows + max(more, 1)


def target_start(pairs: PairsConfig, counts: dict[str, Any] | None = None) -> tuple[int, str]:
    """(prompt rows, why): where `pairs.target` starts. A run directory whose manifest `counts` hold kept
    pairs starts from the survival rate stored there (target_draw after that round: what is still missing
    at that rate, +10%; its own rows when the target is met already); else the first estimate.
    `factory run` draws this many first and `factory plan` plans for it: one number."""
    counts = counts or {}
    kept, rows, target = counts.get("pairs_kept"), counts.get("prompts_in"), int(pairs.target or 0)
    if kept and rows:
        needed = target_draw(pairs, kept, rows) if kept < target else int(rows)
        return needed, (
            f"survival {kept}/{rows} = {kept / rows:.3f} pairs per prompt row (stored in the run directory), "
            "+10% as `factory run` draws"
        )
    return target_draw(pairs), (
        "no pair stored yet: assumed one group per prompt row, drop_ratio of them dropped, +20% (the first draw of "
        "`factory run`)"
    )
