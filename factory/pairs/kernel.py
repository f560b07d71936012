"""The pair kernel: S -> candidate pairs of each group -> threshold delta -> the outcome of each pair.
`factory pairs`, `factory sweep`, the report and the target estimate all decide through `candidates`,
`threshold` and `outcomes` below; there is no other copy of these rules.

    pairing        candidate pairs of a group of n valid samples        pairs
    one            (first, last) of the group order (picks.py)         1
    best_vs_each   (first, each other sample), worst first             n - 1
    all_ranked     (a, b) for every a before b, largest margin first   n (n - 1) / 2

    margin = S_chosen - S_rejected (>= 0: chosen comes first in the order)
    delta  = the drop_ratio quantile of the margins of every candidate pair of the build (tied ones
             included, before the cap); pairing one has one candidate per group, so this is the
             paper's "drop ratio 0.3 drops the 30% of groups with the smallest margins", and in the
             multi-pair modes drop_ratio is the share of candidate pairs dropped. pairs.min_margin,
             when set, is delta instead.

Outcome of each candidate pair (the first that applies):
    no_short_sample  long2short only (its outcome rule, factory/config/strategies.py): the chosen side has
                     max_chosen_tokens tokens or more
    tied             margin <= 0: no preference (the tie ban, per pair)
    below_margin     margin < delta (long2short, shortest_correct and reward have no delta)
    over_cap         kept, but after max_pairs_per_group pairs of its group (largest margins first)
    over_balance     kept, but past pairs.balance's cap for its value of the balance column
    order_flip       pairs.exclude_order_flips: it would be kept, but the judge's two orders (judge.orders 2)
                     prefer its sides the other way round (checked before the caps)
    kept
A kept pair of a value with fewer kept pairs than pairs.balance.floor is written more than once
(`repeats` extra copies, `_oversample`): an outcome still counts it once.
A group's bucket is its best pair outcome in the order kept, over_balance (only with pairs.balance),
below_margin, no_short_sample, tied
(or fewer_than_2_valid), so every group is in exactly one bucket and every candidate pair in one outcome.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import polars as pl

from factory.config import PairsConfig
from factory.config.strategies import strategy_of
from factory.pairs import vote as votes
from factory.pairs.marks import ORDER_COLUMNS, Prepared, prepare
from factory.pairs.picks import extremes, margin_quantile, ranking, score
from factory.pairs.segments import segments
from factory.pairs.stats import OUTCOMES, PairStats, group_buckets, summarize
from factory.pairs.terms import weights as term_weights

KEPT, OVER_CAP, OVER_BALANCE, BELOW_MARGIN, NO_SHORT_SAMPLE, TIED, ORDER_FLIP = range(len(OUTCOMES))
_OUTCOME_VALUES = pl.Series("outcome", OUTCOMES, pl.Enum(OUTCOMES))  # gathered by code: no string per pair


@dataclass(eq=False)
class Candidates:
    """Candidate pairs, those of a group contiguous and in the group's pair order (largest margin
    first). chosen/rejected are positions in prepared.valid; group indexes prepared.starts."""

    group: np.ndarray
    chosen: np.ndarray
    rejected: np.ndarray
    margin: np.ndarray
    score: np.ndarray  # S of every valid sample
    balance_cap: int | None = None  # pairs.balance: the per-value cap in force (set by `outcomes`)
    repeats: np.ndarray | None = None  # pairs.balance.floor: extra copies of each candidate pair (set by `outcomes`)

    @cached_property
    def sorted_margins(self) -> np.ndarray:
        """Ascending, computed once however many thresholds are asked (a sweep asks many)."""
        return np.sort(self.margin)


def candidates(prepared: Prepared, cfg: PairsConfig, weights: np.ndarray | None = None) -> Candidates:
    """Every candidate pair of the build at these weights (default: the config's)."""
    weights = term_weights(cfg) if weights is None else weights
    if cfg.combine == "vote":
        group, chosen, rejected, s = votes.vote(prepared, weights)
    else:
        s = score(prepared, weights)
        if cfg.pairing == "one":
            group, chosen, rejected = extremes(prepared, s)
        else:
            group, chosen, rejected = _ranked_pairs(prepared, s, cfg.pairing)
    clash = np.flatnonzero(prepared.sample_idx[chosen] == prepared.sample_idx[rejected])
    if len(clash):  # only possible when a (prompt_id, sample_idx) key is stored twice
        prompt = prepared.valid["prompt_id"][int(chosen[clash[0]])]
        raise ValueError(f"pairs: sample_idx repeats within prompt {prompt!r}; deduplicate the samples first")
    return Candidates(group, chosen, rejected, s[chosen] - s[rejected], s)


def _ranked_pairs(prepared: Prepared, s: np.ndarray, pairing: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """best_vs_each / all_ranked pairs of every group with >= 2 valid samples: the groups of each
    size are done together (a loop over group sizes, never over groups)."""
    order = ranking(prepared, s)
    eligible = np.flatnonzero(prepared.counts >= 2)
    sizes = prepared.counts[eligible]
    parts = []
    for n in np.unique(sizes):
        groups = eligible[sizes == n]
        if pairing == "best_vs_each":
            first, second = np.zeros(n - 1, np.int64), np.arange(n - 1, 0, -1)
        else:
            first, second = np.triu_indices(n, 1)
        base = prepared.starts[groups][:, None]
        parts.append(
            (np.repeat(groups, len(first)), order[base + first].ravel(), order[base + second].ravel(),
             np.tile(first, len(groups)), np.tile(second, len(groups)))
        )  # fmt: skip
    if not parts:
        empty = np.empty(0, np.int64)
        return empty, empty, empty
    group, chosen, rejected, first, second = (np.concatenate(p) for p in zip(*parts))
    margin = s[chosen] - s[rejected]
    # In each group: largest margin first, then the earlier chosen, then the later rejected.
    keep = np.lexsort((-second, first, -margin, group))
    return group[keep], chosen[keep], rejected[keep]


def threshold(cands: Candidates, cfg: PairsConfig) -> tuple[float | None, str | None]:
    """(delta, how it was set): pairs.min_margin, else the drop_ratio quantile of all candidate
    margins; a strategy without a margin threshold (the recipes as published: only the tie ban holds) has none."""
    if not strategy_of(cfg).delta:
        return None, None
    if cfg.min_margin is not None:
        return float(cfg.min_margin), "min_margin"
    return margin_quantile(cands.sorted_margins, cfg.drop_ratio), "quantile"


def outcomes(prepared: Prepared, cands: Candidates, delta: float | None, cfg: PairsConfig) -> np.ndarray:
    """The outcome (an index into OUTCOMES) of every candidate pair; see the module doc."""
    tied = cands.margin <= 0
    if strategy_of(cfg).chosen_max_tokens:
        short = prepared.tokens[cands.chosen] < cfg.max_chosen_tokens
        code = np.where(~short, NO_SHORT_SAMPLE, np.where(tied, TIED, KEPT))
    else:
        above = cands.margin >= (delta if delta is not None else 0.0)
        code = np.where(tied, TIED, np.where(above, KEPT, BELOW_MARGIN))
    if cfg.exclude_order_flips and len(code):
        flipped, _ = order_flips(prepared, cands)
        code = np.where((code == KEPT) & flipped, ORDER_FLIP, code)
    if cfg.max_pairs_per_group is not None and len(code):
        kept = (code == KEPT).astype(np.int64)
        running = np.cumsum(kept)  # kept pairs so far; minus those of earlier groups = rank in the group
        starts, counts = segments(cands.group)
        before = np.repeat(running[starts] - kept[starts], counts)
        code = np.where((kept == 1) & (running - before > cfg.max_pairs_per_group), OVER_CAP, code)
    if cfg.balance.column and (cfg.balance.cap is not None or cfg.balance.target_share is not None):
        code, cands.balance_cap = _balance(prepared, cands, code, cfg)
    if cfg.balance.floor is not None:
        cands.repeats = _oversample(prepared, cands, code, cfg)
    return code.astype(np.int8)


def _value_ranks(prepared: Prepared, cands: Candidates, kept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Of the kept pairs (positions in cands): the dense id of each one's balance value (nulls: 0) and its
    rank within the value (largest margins first, then the pair order)."""
    values = prepared.valid["_balance"].gather(cands.chosen[kept])
    ids = values.rank("dense").fill_null(0).to_numpy().astype(np.int64)
    order = np.lexsort((kept, -cands.margin[kept], ids))
    sorted_ids = ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    return ids, rank


def _oversample(prepared: Prepared, cands: Candidates, code: np.ndarray, cfg: PairsConfig) -> np.ndarray:
    """pairs.balance.floor: the extra copies of each candidate pair (0 unless kept). A value with m kept
    pairs, 0 < m < floor, needs floor - m more rows: they go to its pairs in turn, largest margins first
    (pair r gets (need // m) + (r < need % m)), each pair at most max_repeats."""
    repeats = np.zeros(len(code), np.int64)
    kept = np.flatnonzero(code == KEPT)
    if not len(kept):
        return repeats
    ids, rank = _value_ranks(prepared, cands, kept)
    m = np.bincount(ids)[ids]
    need = np.maximum(cfg.balance.floor - m, 0)  # type: ignore[operator]
    repeats[kept] = np.minimum(need // m + (rank < need % m), cfg.balance.max_repeats)
    return repeats


def order_flips(prepared: Prepared, cands: Candidates) -> tuple[np.ndarray, np.ndarray]:
    """(flipped, scored) per candidate pair: scored when both orders gave both sides a quality; flipped
    when the chosen side is preferred in one order and the rejected side in the other (a strict swap)."""
    if not all(c in prepared.valid.columns for c in ORDER_COLUMNS):
        none = np.zeros(len(cands.chosen), bool)
        return none, none
    first, second = (prepared.valid[c].fill_null(np.nan).to_numpy() for c in ORDER_COLUMNS)
    d0 = first[cands.chosen] - first[cands.rejected]
    d1 = second[cands.chosen] - second[cands.rejected]
    scored = np.isfinite(d0) & np.isfinite(d1)
    return scored & (d0 * d1 < 0), scored


def _balance(
    prepared: Prepared, cands: Candidates, code: np.ndarray, cfg: PairsConfig
) -> tuple[np.ndarray, int | None]:
    """pairs.balance: of the kept pairs of each value of the balance column (null is a value), those past
    the cap (largest margins first, then the pair order) become over_balance. target_share sets the cap:
    the largest c with c <= share x (kept pairs after capping every value at c); None when no c reaches it
    (fewer values than 1 / share), and then nothing is dropped."""
    kept = np.flatnonzero(code == KEPT)
    if not len(kept):
        return code, cfg.balance.cap
    ids, rank = _value_ranks(prepared, cands, kept)
    counts = np.bincount(ids)
    cap = cfg.balance.cap
    if cap is None:
        sizes = np.sort(counts[counts > 0])
        c = np.arange(1, sizes[-1] + 1)
        below = np.searchsorted(sizes, c, "left")  # values with fewer than c pairs keep them all
        total = np.r_[0, np.cumsum(sizes)][below] + c * (len(sizes) - below)
        fits = np.flatnonzero(c <= cfg.balance.target_share * total)  # type: ignore[operator]
        if not len(fits):
            return code, None
        cap = int(c[fits[-1]])
    code = code.copy()
    code[kept[rank >= cap]] = OVER_BALANCE
    return code, cap


def decisions_frame(prepared: Prepared, cands: Candidates, codes: np.ndarray) -> pl.DataFrame:
    """One row per candidate pair, groups in prompt_id order: prompt_id, n_valid, chosen_/rejected_
    idx, row, tokens, quality, score; margin; outcome."""
    valid = prepared.valid
    columns = [valid["prompt_id"].gather(cands.chosen), pl.Series("n_valid", prepared.counts[cands.group])]
    for side, pos in (("chosen", cands.chosen), ("rejected", cands.rejected)):
        columns += [
            valid["sample_idx"].gather(pos).alias(f"{side}_idx"),
            valid["row"].gather(pos).alias(f"{side}_row"),
            valid["completion_tokens"].gather(pos).alias(f"{side}_tokens"),
            valid["quality"].gather(pos).alias(f"{side}_quality"),
            pl.Series(f"{side}_score", cands.score[pos]),
        ]
    columns += [pl.Series("margin", cands.margin), _OUTCOME_VALUES.gather(codes).alias("outcome")]
    if "_balance" in valid.columns:  # pairs.balance: the value each pair counts under
        columns.append(valid["_balance"].gather(cands.chosen).alias("balance_value"))
    if cands.repeats is not None:  # pairs.balance.floor: the copies written after the pair itself
        columns.append(pl.Series("repeats", cands.repeats, pl.Int64))
    return pl.DataFrame(columns)


def decide(prepared: Prepared, cfg: PairsConfig) -> tuple[pl.DataFrame, PairStats]:
    """Prepared samples -> (one row per candidate pair, stats)."""
    cands = candidates(prepared, cfg)
    delta, rule = threshold(cands, cfg)
    codes = outcomes(prepared, cands, delta, cfg)
    frame = decisions_frame(prepared, cands, codes)
    agreement = votes.agreement(prepared, term_weights(cfg))
    stats = summarize(prepared, frame, cands.group, codes, delta, rule, cfg, agreement, cands.balance_cap)
    if all(c in prepared.valid.columns for c in ORDER_COLUMNS):
        flipped, scored = order_flips(prepared, cands)
        stats.order_pairs, stats.order_flips = int(scored.sum()), int(flipped.sum())
    return frame, stats


# The group buckets whose pair the build keeps: more samples cannot give such a group a pair it lacks.
DECIDED = (KEPT, OVER_CAP, OVER_BALANCE)


def decided(prepared: Prepared, cfg: PairsConfig, delta: float | None = None) -> pl.Series:
    """The prompt_ids whose group is decided under `cfg`: its bucket is kept (or over_cap, over_balance).
    The others are undecided: fewer_than_2_valid, below_margin (no candidate pair at or above delta),
    tied, no_short_sample (long2short). `delta`: the threshold to decide at (sampler.adaptive passes the
    one of every judged group); None: these groups' own (`threshold`). sampler.adaptive asks this of the
    judged groups to know which get more samples."""
    cands = candidates(prepared, cfg)
    if delta is None:
        delta, _ = threshold(cands, cfg)
    groups, bucket = group_buckets(cands.group, outcomes(prepared, cands, delta, cfg))
    done = groups[np.isin(bucket, DECIDED)]
    return prepared.valid["prompt_id"].gather(prepared.starts[done])


def select(
    scored: pl.LazyFrame | pl.DataFrame, cfg: PairsConfig, scale_max: float = 100.0
) -> tuple[pl.DataFrame, PairStats]:
    """Scored samples -> (one row per candidate pair with its outcome, stats). Numbers only."""
    return decide(prepare(scored, cfg, scale_max), cfg)
