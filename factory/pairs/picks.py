"""S, and the order of the samples within a group: the one tie-break rule of every pairing.

A group's valid samples are ordered best first: highest S, then fewest tokens, then highest quality
(the primary judge's column), then lowest sample_idx. A pair's chosen side always comes before its
rejected side in this order; `one` pairs the first with the last. The order is total (sample_idx
differ), so chosen != rejected whenever a group has two samples, and when every S of a group is
equal the pair is (lowest, highest sample_idx) with margin 0, which the tie ban never keeps.
"""

from __future__ import annotations

import math

import numpy as np

from factory.pairs.marks import Prepared
from factory.pairs.segments import per_group

TIE_KEYS = ("completion_tokens", "quality", "sample_idx")  # after S, in this order (see module doc)


def score(prepared: Prepared, weights: np.ndarray, quality: np.ndarray | None = None) -> np.ndarray:
    """S per valid sample: the sum, in term order, of weight x term over the terms whose weight is not
    0 (so two terms give w_len * length + w_q * quality, exactly as the paper writes it). `quality`
    replaces the quality term's values (one judge's, for a vote)."""
    total = None
    for i, weight in enumerate(weights):
        if weight == 0:
            continue
        values = quality if quality is not None and prepared.terms[i].name == "quality" else prepared.values[i]
        total = weight * values if total is None else total + weight * values
    return np.zeros(prepared.valid.height) if total is None else total


def _sort_keys(prepared: Prepared, score: np.ndarray, rows: np.ndarray) -> list[np.ndarray]:
    """np.lexsort keys (last = primary) putting `rows` in group order, best first."""
    return [prepared.sample_idx[rows], -prepared.quality[rows], prepared.tokens[rows], -score[rows], prepared.gid[rows]]


def ranking(prepared: Prepared, score: np.ndarray, lead: np.ndarray | None = None) -> np.ndarray:
    """Every valid position, groups in order and each group best first. `lead`, when given, is a key
    sorted on before S (ascending): the vote puts its tallies there."""
    rows = np.arange(prepared.valid.height)
    keys = _sort_keys(prepared, score, rows)
    if lead is not None:
        keys.insert(4, lead)
    return np.lexsort(keys)


def extremes(prepared: Prepared, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(group number, first position, last position) in the group order of every group with >= 2
    valid samples: what `ranking` gives at each group's ends, without sorting every sample. Only the
    samples at a group's best (worst) S are ordered by the tie keys, and only when some group has a
    tie there."""
    starts, counts = prepared.starts, prepared.counts
    eligible = np.repeat(counts >= 2, counts)
    n_groups = int((counts >= 2).sum())
    ends = []
    for reduce, last in ((np.maximum, False), (np.minimum, True)):
        at_end = np.flatnonzero(eligible & (score == per_group(score, reduce, starts, counts)))
        if len(at_end) > n_groups:  # some group has a tie at its best (worst) S
            at_end = _break_ties(prepared, score, at_end, last)
        ends.append(at_end)
    return np.flatnonzero(counts >= 2), ends[0], ends[1]


def _break_ties(prepared: Prepared, score: np.ndarray, at_end: np.ndarray, last: bool) -> np.ndarray:
    """Positions at a group's best (worst) S, several in a tied group -> one per group: the first
    (last) of them in the group order."""
    gid = prepared.gid[at_end]
    repeated = gid[1:] == gid[:-1]  # positions ascend, so a group's rows sit next to each other
    tied = np.r_[repeated, False] | np.r_[False, repeated]
    rows = at_end[tied]
    ordered = rows[np.lexsort(_sort_keys(prepared, score, rows))]
    group = prepared.gid[ordered]
    if last:
        pick = np.r_[group[1:] != group[:-1], True]
    else:
        pick = np.r_[True, group[1:] != group[:-1]]
    return np.sort(np.r_[at_end[~tied], ordered[pick]])


def margin_quantile(sorted_margins: np.ndarray, drop_ratio: float) -> float | None:
    """delta: the drop_ratio quantile of the (ascending) margins, with linear interpolation between the
    two nearest order statistics: h = (n - 1) * drop_ratio, delta = m[floor h] + (h - floor h) *
    (m[ceil h] - m[floor h]) (numpy's default "linear" method, R's type 7)."""
    n = len(sorted_margins)
    if not n:
        return None
    h = (n - 1) * drop_ratio
    lo = math.floor(h)
    hi = min(lo + 1, n - 1)
    return float(sorted_margins[lo] + (h - lo) * (sorted_margins[hi] - sorted_margins[lo]))
