"""`factory sweep RUN_DIR`: the paper's w_len x drop_ratio analysis from what is stored, no LLM call.

    table = sweep_table(scored, cfg.pairs, w_lens=[0.0, 0.1, ..., 1.0], drop_ratios=[0.0, ..., 0.5])

    rows out: w_len  w_quality  drop_ratio  delta  groups_candidate  pairs_kept  pairs_dropped  tied
              kept_share  mean_token_gap  mean_quality_gap  mean_score_gap  mean_chosen_tokens ...
              0.6    0.4        0.3         0.41   15000             10500       4500           0 ...

The data is loaded and prepared once: samples are marked, the length and quality terms computed,
and each group's valid samples laid out as one row of a (groups x K) matrix. Every w_len is then a
handful of numpy operations on that matrix (S, row max/min, the tie-break among equal S) and every
drop_ratio a quantile of the sorted margins plus a suffix-sum lookup, so the 66 default points cost
about one pair build. The picks equal `factory.stages.pairs.select_pairs` (dp_dpo, w_quality = 1 - w_len,
the configured length/quality normalization); tests check that point by point. pairs.min_margin
is not used: drop_ratio is the sweep's axis.

Writes sweep/sweep.csv, sweep/heatmap_token_gap.png, sweep/heatmap_quality_gap.png and
sweep/gaps_vs_w_len.png (both gaps against w_len at drop_ratio 0, where they cross).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from factory.config import PairsConfig
from factory.stages import pairs as pairs_stage

SWEEP_COLUMNS = (
    "w_len", "w_quality", "drop_ratio", "delta", "groups_candidate", "pairs_kept", "pairs_dropped", "tied",
    "kept_share", "mean_token_gap", "mean_quality_gap", "mean_score_gap", "mean_chosen_tokens",
    "mean_rejected_tokens", "mean_chosen_quality", "mean_rejected_quality",
)  # fmt: skip


@dataclass
class GroupMatrix:
    """Each candidate group's valid samples as one column, padded to the largest group. Slots run
    down the rows so that a max over a group is K elementwise operations on long rows (fast),
    not a reduction along G tiny rows (slow in numpy)."""

    len_term: np.ndarray  # (K, groups) float, NaN where padded
    q_term: np.ndarray
    tokens: np.ndarray
    quality: np.ndarray
    sample_idx: np.ndarray
    filled: np.ndarray  # (K, groups) bool


def group_matrix(scored: pl.DataFrame | pl.LazyFrame, cfg: PairsConfig) -> GroupMatrix:
    """Scored samples -> GroupMatrix of the groups with >= 2 valid samples. Done once per sweep."""
    engine = "in-memory" if isinstance(scored, pl.DataFrame) else "streaming"
    marked = pairs_stage.group_keys(pairs_stage.mark_samples(scored.lazy()).collect(engine=engine))
    valid = pairs_stage._exclusion_counts(marked, pairs_stage.PairStats())
    terms = pairs_stage.add_terms(valid, cfg)
    starts, counts = pairs_stage.segments(terms["gid"])
    terms = terms.filter(pl.Series(np.repeat(counts >= 2, counts)))
    starts, counts = pairs_stage.segments(terms["gid"])
    groups, width = len(starts), int(counts.max()) if len(counts) else 0
    group = np.repeat(np.arange(groups), counts)
    slot = np.arange(terms.height) - np.repeat(starts, counts)

    def matrix(column: str) -> np.ndarray:
        out = np.full((width, groups), np.nan)
        out[slot, group] = terms[column].to_numpy().astype(np.float64)
        return out

    filled = np.zeros((width, groups), dtype=bool)
    filled[slot, group] = True
    return GroupMatrix(
        matrix("len_term"),
        matrix("q_term"),
        matrix("completion_tokens"),
        matrix("quality"),
        matrix("sample_idx"),
        filled,
    )


def _first(mask: np.ndarray) -> np.ndarray:
    """Per group (column), the first slot where `mask` holds (every column has one): slots weigh
    K, K-1, ..., 1, so the heaviest marked slot is the first, found by one elementwise max."""
    width = mask.shape[0]
    weight = np.arange(width, 0, -1, dtype=np.int16)[:, None]
    return width - (mask * weight).max(axis=0, initial=0).astype(np.int64)


def _resolve(m: GroupMatrix, candidates: np.ndarray, descending: list[bool]) -> np.ndarray:
    """Slot of the one sample per group among `candidates` (those at the best or worst S) that the
    tie-break keys pick: pairs.TIE_KEYS in order, each narrowing the tied set."""
    pick = _first(candidates)
    tied = np.flatnonzero(candidates.sum(axis=0) > 1)
    if len(tied):
        left = candidates[:, tied]
        for values, desc in zip((m.tokens[:, tied], m.quality[:, tied], m.sample_idx[:, tied]), descending):
            masked = np.where(left, values, -np.inf if desc else np.inf)
            best = masked.max(axis=0) if desc else masked.min(axis=0)
            left &= values == best
        pick[tied] = _first(left)
    return pick


def _picks(m: GroupMatrix, w_len: float, w_q: float) -> dict[str, np.ndarray]:
    """chosen/rejected tokens and quality, and the margin, of every group at these weights."""
    score = w_len * m.len_term + w_q * m.q_term  # the same arithmetic as pairs.with_score
    best = np.where(m.filled, score, -np.inf).max(axis=0, initial=-np.inf)
    worst = np.where(m.filled, score, np.inf).min(axis=0, initial=np.inf)
    chosen = _resolve(m, m.filled & (score == best), pairs_stage.CHOSEN_ORDER)
    rejected = _resolve(m, m.filled & (score == worst), pairs_stage.REJECTED_ORDER)
    columns = np.arange(score.shape[1])

    def at(values: np.ndarray, index: np.ndarray) -> np.ndarray:
        return values[index, columns]

    return {
        "margin": best - worst,
        "chosen_tokens": at(m.tokens, chosen),
        "rejected_tokens": at(m.tokens, rejected),
        "chosen_quality": at(m.quality, chosen),
        "rejected_quality": at(m.quality, rejected),
    }


SUMMED = ("chosen_tokens", "rejected_tokens", "chosen_quality", "rejected_quality")


def sweep_points(
    m: GroupMatrix, w_lens: list[float], drop_ratios: list[float], scale_max: float
) -> list[dict[str, Any]]:
    """One row per (w_len, drop_ratio). Per w_len the groups are ordered by margin once; the kept
    pairs of any delta are then a suffix of that order, so each drop_ratio is a lookup in suffix sums."""
    rows = []
    n = m.filled.shape[1]
    for w_len in w_lens:
        w_q = 1.0 - w_len
        picks = _picks(m, w_len, w_q)
        order = np.argsort(picks["margin"])  # equal margins fall on the same side of any delta
        margin = picks["margin"][order]
        # suffix[j, i] = sum of SUMMED[j] over the groups at sorted positions i..n-1
        stacked = np.stack([picks[k] for k in SUMMED])[:, order[::-1]]
        suffix = np.concatenate([np.cumsum(stacked, axis=1)[:, ::-1], np.zeros((len(SUMMED), 1))], axis=1)
        tied = int(np.searchsorted(margin, 0.0, side="right"))  # margins <= 0 come first
        for drop_ratio in drop_ratios:
            delta = pairs_stage.margin_quantile(margin, drop_ratio)
            first = max(tied, int(np.searchsorted(margin, delta, side="left"))) if delta is not None else n
            kept = n - first
            mean = dict(zip(SUMMED, (suffix[:, first] / max(kept, 1)).tolist()))
            token_gap = mean["rejected_tokens"] - mean["chosen_tokens"]
            quality_gap = mean["chosen_quality"] - mean["rejected_quality"]
            rows.append(
                {
                    "w_len": w_len,
                    "w_quality": round(w_q, 10),
                    "drop_ratio": drop_ratio,
                    "delta": delta,
                    "groups_candidate": n,
                    "pairs_kept": kept,
                    "pairs_dropped": first - tied,
                    "tied": tied,
                    "kept_share": kept / n if n else None,
                    # no kept pair: no mean (None), never a misleading 0
                    "mean_token_gap": token_gap if kept else None,
                    "mean_quality_gap": quality_gap if kept else None,
                    "mean_score_gap": quality_gap * scale_max if kept else None,
                    **{f"mean_{k}": (mean[k] if kept else None) for k in SUMMED},
                }
            )
    return rows


def sweep_table(
    scored: pl.DataFrame | pl.LazyFrame,
    cfg: PairsConfig,
    w_lens: list[float],
    drop_ratios: list[float],
    scale_max: float = 100.0,
) -> pl.DataFrame:
    """The whole grid from one load of the data (see module doc)."""
    matrix = group_matrix(scored, cfg)
    rows = sweep_points(matrix, w_lens, drop_ratios, scale_max)
    schema = {
        c: (pl.Int64 if c in ("groups_candidate", "pairs_kept", "pairs_dropped", "tied") else pl.Float64)
        for c in SWEEP_COLUMNS
    }
    return pl.DataFrame(rows, schema=schema)


# -- plots ---------------------------------------------------------------------------------------
def _figure_bytes(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def heatmap_png(table: pl.DataFrame, column: str, title: str, fmt: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w_lens = sorted(set(table["w_len"].to_list()))
    drops = sorted(set(table["drop_ratio"].to_list()))
    grid = np.full((len(w_lens), len(drops)), np.nan)
    for row in table.iter_rows(named=True):
        value = row[column]
        grid[w_lens.index(row["w_len"]), drops.index(row["drop_ratio"])] = np.nan if value is None else value
    fig, ax = plt.subplots(figsize=(1.1 * len(drops) + 2.5, 0.45 * len(w_lens) + 1.8))
    image = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(drops)), [f"{d:g}" for d in drops])
    ax.set_yticks(range(len(w_lens)), [f"{w:g}" for w in w_lens])
    ax.set_xlabel("drop_ratio")
    ax.set_ylabel("w_len")
    ax.set_title(title)
    finite = grid[np.isfinite(grid)]
    middle = (finite.min() + finite.max()) / 2 if len(finite) else 0.0
    for i in range(len(w_lens)):
        for j in range(len(drops)):
            if np.isfinite(grid[i, j]):
                color = "black" if grid[i, j] > middle else "white"
                ax.text(j, i, format(grid[i, j], fmt), ha="center", va="center", fontsize=7, color=color)
    fig.colorbar(image, ax=ax)
    data = _figure_bytes(fig)
    plt.close(fig)
    return data


def crossing(w_lens: list[float], a: list[float], b: list[float]) -> float | None:
    """The first w_len where curves a and b (each scaled by its largest absolute value) cross."""
    a_arr, b_arr = np.array(a, dtype=float), np.array(b, dtype=float)
    if not len(a_arr) or not np.all(np.isfinite(a_arr)) or not np.all(np.isfinite(b_arr)):
        return None
    a_norm = a_arr / (np.abs(a_arr).max() or 1.0)
    b_norm = b_arr / (np.abs(b_arr).max() or 1.0)
    diff = a_norm - b_norm
    for i in range(len(diff) - 1):
        if diff[i] == 0:
            return w_lens[i]
        if diff[i] * diff[i + 1] < 0:
            t = diff[i] / (diff[i] - diff[i + 1])
            return float(w_lens[i] + t * (w_lens[i + 1] - w_lens[i]))
    return None


def gaps_png(table: pl.DataFrame, scale_max: float) -> bytes:
    """Mean token gap and mean quality gap (in score points) against w_len at the smallest drop
    ratio; the two y-axes are scaled so that each curve's largest value sits at the same height,
    so where the lines cross is where the normalized gaps are equal (the paper's figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drop = min(table["drop_ratio"])
    line = table.filter(pl.col("drop_ratio") == drop).sort("w_len").drop_nulls(["mean_token_gap", "mean_score_gap"])
    w_lens = line["w_len"].to_list()
    tokens, scores = line["mean_token_gap"].to_list(), line["mean_score_gap"].to_list()
    fig, left = plt.subplots(figsize=(7, 4.2))
    right = left.twinx()
    left.plot(w_lens, tokens, "o-", color="tab:blue", label="token gap (rejected - chosen)")
    right.plot(w_lens, scores, "s-", color="tab:red", label=f"quality gap (chosen - rejected, /{scale_max:g})")
    top_t = max([abs(v) for v in tokens] or [1.0]) or 1.0
    top_s = max([abs(v) for v in scores] or [1.0]) or 1.0
    low = min([0.0] + [v / top_t for v in tokens] + [v / top_s for v in scores]) - 0.08
    left.set_ylim(low * top_t, 1.12 * top_t)
    right.set_ylim(low * top_s, 1.12 * top_s)
    left.axhline(0, color="grey", lw=0.6)
    cross = crossing(w_lens, tokens, scores)
    if cross is not None:
        left.axvline(cross, color="grey", ls=":", lw=1)
        left.text(cross, 1.05 * top_t, f" crossing w_len ~ {cross:.2f}", fontsize=8, va="top")
    left.set_xlabel("w_len (w_quality = 1 - w_len)")
    left.set_ylabel("mean token gap (tokens)", color="tab:blue")
    right.set_ylabel("mean quality gap (score points)", color="tab:red")
    left.set_title(f"Chosen vs rejected gaps at drop_ratio {drop:g}")
    handles = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    labels = left.get_legend_handles_labels()[1] + right.get_legend_handles_labels()[1]
    left.legend(handles, labels, loc="center left", fontsize=8)
    data = _figure_bytes(fig)
    plt.close(fig)
    return data


def format_table(table: pl.DataFrame) -> str:
    """A compact text table: one row per w_len, pairs kept / token gap / score gap per drop ratio."""
    drops = sorted(set(table["drop_ratio"].to_list()))
    head = "w_len | " + " | ".join(f"drop {d:g}: kept tok_gap q_gap" for d in drops)
    lines = [head, "-" * len(head)]
    for w_len in sorted(set(table["w_len"].to_list())):
        cells = []
        for d in drops:
            row = table.filter((pl.col("w_len") == w_len) & (pl.col("drop_ratio") == d)).row(0, named=True)
            gap = "-" if row["mean_token_gap"] is None else f"{row['mean_token_gap']:.1f}"
            score = "-" if row["mean_score_gap"] is None else f"{row['mean_score_gap']:.2f}"
            cells.append(f"{row['pairs_kept']:>5} {gap:>7} {score:>6}")
        lines.append(f"{w_len:5.2f} | " + " | ".join(cells))
    return "\n".join(lines)


# -- the command ---------------------------------------------------------------------------------
def run_sweep(run_dir: str, overrides: list[str] | None = None) -> tuple[pl.DataFrame, dict[str, Any]]:
    """`factory sweep`: sweep/ in the run directory; returns (table, info)."""
    import time

    from factory import rebuild, run

    t0 = time.perf_counter()
    cfg, store, manifest = rebuild.open_run(run_dir, overrides)
    prompts = rebuild.stored_prompts(store)
    _, _, scored = run.stored_scored(store, cfg, prompts, manifest["fingerprints"])
    t_load = time.perf_counter()
    table = sweep_table(scored, cfg.pairs, cfg.sweep.w_lens, cfg.sweep.drop_ratios, cfg.judge.scale_max)
    t_table = time.perf_counter()
    buffer = io.BytesIO()
    table.write_csv(buffer, float_precision=6)
    store.write_bytes("sweep/sweep.csv", buffer.getvalue())
    store.write_bytes(
        "sweep/heatmap_token_gap.png", heatmap_png(table, "mean_token_gap", "Mean token gap (rejected - chosen)", ".0f")
    )
    store.write_bytes(
        "sweep/heatmap_quality_gap.png",
        heatmap_png(
            table,
            "mean_score_gap",
            f"Mean quality gap (chosen - rejected, score /{cfg.judge.scale_max:g})",
            ".2f",
        ),
    )
    store.write_bytes("sweep/gaps_vs_w_len.png", gaps_png(table, cfg.judge.scale_max))
    line = table.filter(pl.col("drop_ratio") == min(cfg.sweep.drop_ratios)).sort("w_len")
    info = {
        "points": table.height,
        "crossing_w_len": crossing(line["w_len"].to_list(), line["mean_token_gap"].fill_null(np.nan).to_list(),
                                   line["mean_score_gap"].fill_null(np.nan).to_list()),
        "seconds": {"load": round(t_load - t0, 3), "table": round(t_table - t_load, 3),
                    "plots": round(time.perf_counter() - t_table, 3)},
        "files": [store.display("sweep", name) for name in
                  ("sweep.csv", "heatmap_token_gap.png", "heatmap_quality_gap.png", "gaps_vs_w_len.png")],
    }  # fmt: skip
    return table, info
