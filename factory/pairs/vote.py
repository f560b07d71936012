"""Several judges (`pairs.judges`): each judge's own picks, their majority vote, and their agreement.

Judge j's S is the build's S with the quality term replaced by judge j's normalized score (every other
term unchanged); its picks are the ends of its group order (factory.pairs.picks). The ensemble S puts
the judges' mean in the quality term.

    combine: vote    chosen   = the sample most judges chose; ties: the ensemble S order
                     rejected = the sample most judges rejected, the chosen one aside; ties: the
                                ensemble S order (its last)
                     margin   = ensemble S_chosen - ensemble S_rejected (threshold and tie ban as usual)

With one judge its vote is its own pick and the ensemble S its S, so the pairs are that judge's.
Agreement of two judges: the share of groups (with >= 2 valid samples) where both pick the same
chosen and the same rejected sample.
"""

from __future__ import annotations

import numpy as np

from factory.pairs.marks import Prepared
from factory.pairs.picks import extremes, ranking, score


def judge_picks(prepared: Prepared, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(group numbers, chosen positions [judges x groups], rejected positions [judges x groups])."""
    picks = [extremes(prepared, score(prepared, weights, quality=values)) for values in prepared.judge_values]
    groups = picks[0][0]
    return groups, np.stack([p[1] for p in picks]), np.stack([p[2] for p in picks])


def vote(prepared: Prepared, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(group numbers, chosen positions, rejected positions, ensemble S) by majority vote."""
    ensemble = score(prepared, weights)
    groups, chosen_by, rejected_by = judge_picks(prepared, weights)
    chosen_votes = np.zeros(prepared.valid.height)
    rejected_votes = np.zeros(prepared.valid.height)
    np.add.at(chosen_votes, chosen_by.ravel(), 1.0)
    np.add.at(rejected_votes, rejected_by.ravel(), 1.0)
    first = prepared.starts[groups]
    last = first + prepared.counts[groups] - 1
    chosen = ranking(prepared, ensemble, lead=-chosen_votes)[first]
    rejected_votes[chosen] = -1.0  # never the chosen sample: it sorts first, the rejected one is last
    rejected = ranking(prepared, ensemble, lead=rejected_votes)[last]
    return groups, chosen, rejected, ensemble


def agreement(prepared: Prepared, weights: np.ndarray) -> dict[str, float | None]:
    """'a vs b' -> share of groups where judges a and b pick the same pair (None without groups)."""
    names = [judge.column for judge in prepared.judges]
    if len(names) < 2:
        return {}
    groups, chosen, rejected = judge_picks(prepared, weights)
    out: dict[str, float | None] = {}
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            same = (chosen[a] == chosen[b]) & (rejected[a] == rejected[b])
            out[f"{names[a]} vs {names[b]}"] = float(same.mean()) if len(groups) else None
    return out
