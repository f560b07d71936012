"""`factory sweep RUN_DIR`: the paper's weight x drop_ratio analysis from what is stored, no LLM call.

    table = sweep_table(scored, cfg.pairs, weights=[0.0, 0.1, ..., 1.0], drop_ratios=[0.0, ..., 0.5])

    rows out: term    weight  w_len  w_quality  drop_ratio  delta  groups_candidate  pairs_candidate
              length  0.6     0.6    0.4        0.3         0.41   15000             15000
              pairs_kept  pairs_dropped  tied  kept_share  mean_token_gap  mean_quality_gap  ...
              10500       4500           0     0.7         ...

The swept weight is `sweep.term`'s: `length` (the default, the paper's axis: w_len, with w_quality =
1 - w_len), `quality` (w_quality alone), or the name of a pairs.terms entry (its weight alone). Every
point is the dp_dpo strategy with the run's other pair settings (terms, judges, pairing, cap); the
drop ratio is the other axis, so pairs.min_margin is not used.

No second implementation: the samples are prepared once (factory.pairs.prepare: exclusions, term
values), then every weight is one `factory.pairs.candidates` call and every drop ratio one
`threshold` + `outcomes` call of the kernel `factory pairs` uses, so a point equals a pair build with
those settings (tests check it point by point) and the 66 default points cost about one build.

Writes sweep/sweep.csv, sweep/heatmap_token_gap.png, sweep/heatmap_quality_gap.png and
sweep/gaps_vs_w_len.png (both gaps against the weight at the smallest drop ratio, where they cross).
"""

from __future__ import annotations

import io
from dataclasses import replace
from typing import Any

import numpy as np
import polars as pl

from factory.commands.present import png, pyplot
from factory.config import ConfigError, PairsConfig
from factory.config.strategies import DP_DPO
from factory.pairs import attach, kernel
from factory.pairs.marks import Prepared, prepare
from factory.pairs.terms import weights as term_weights

SWEEP_COLUMNS = (
    "term", "weight", "w_len", "w_quality", "drop_ratio", "delta", "groups_candidate", "pairs_candidate",
    "pairs_kept", "pairs_dropped", "tied", "kept_share", "mean_token_gap", "mean_quality_gap", "mean_score_gap",
    "mean_chosen_tokens", "mean_rejected_tokens", "mean_chosen_quality", "mean_rejected_quality",
)  # fmt: skip
COUNTS = ("groups_candidate", "pairs_candidate", "pairs_kept", "pairs_dropped", "tied")


def point_config(cfg: PairsConfig, prepared: Prepared, term: str, weight: float) -> PairsConfig:
    """The pair settings of one grid row: dp_dpo with `term`'s weight set to `weight`."""
    names = [t.name for t in prepared.terms]
    if term not in names:
        raise ConfigError(f"sweep.term: {term!r} is not a pair term; the terms are {', '.join(names)}")
    index = names.index(term)
    base = replace(cfg, strategy=DP_DPO, min_margin=None)
    if term == "length":
        return replace(base, w_len=weight, w_quality=None)
    if term == "quality":
        return replace(base, w_quality=weight)
    entries = list(cfg.terms)
    entries[index - 2] = replace(entries[index - 2], weight=weight)
    return replace(base, terms=entries)


def sweep_points(
    prepared: Prepared,
    cfg: PairsConfig,
    weights: list[float],
    drop_ratios: list[float],
    scale_max: float,
    term: str = "length",
) -> list[dict[str, Any]]:
    """One row per (weight, drop_ratio): the kernel's candidates once per weight, its threshold and
    outcomes once per drop ratio."""
    rows = []
    groups_candidate = int((prepared.counts >= 2).sum())
    for weight in weights:
        at_weight = point_config(cfg, prepared, term, weight)
        w = term_weights(at_weight)
        cands = kernel.candidates(prepared, at_weight, w)
        sides = {
            "chosen_tokens": prepared.tokens[cands.chosen].astype(np.float64),
            "rejected_tokens": prepared.tokens[cands.rejected].astype(np.float64),
            "chosen_quality": prepared.quality[cands.chosen],
            "rejected_quality": prepared.quality[cands.rejected],
        }
        for drop_ratio in drop_ratios:
            point = replace(at_weight, drop_ratio=drop_ratio)
            delta, _ = kernel.threshold(cands, point)
            codes = kernel.outcomes(prepared, cands, delta, point)
            kept_mask = codes == kernel.KEPT
            kept = int(kept_mask.sum())
            mean = {k: float(v[kept_mask].mean()) if kept else None for k, v in sides.items()}
            token_gap = mean["rejected_tokens"] - mean["chosen_tokens"] if kept else None  # type: ignore[operator]
            quality_gap = mean["chosen_quality"] - mean["rejected_quality"] if kept else None  # type: ignore[operator]
            rows.append(
                {
                    "term": term,
                    "weight": weight,
                    "w_len": float(w[0]),
                    "w_quality": round(float(w[1]), 10),
                    "drop_ratio": drop_ratio,
                    "delta": delta,
                    "groups_candidate": groups_candidate,
                    "pairs_candidate": len(codes),
                    "pairs_kept": kept,
                    "pairs_dropped": int((codes == kernel.BELOW_MARGIN).sum()),
                    "tied": int((codes == kernel.TIED).sum()),
                    "kept_share": kept / len(codes) if len(codes) else None,
                    # no kept pair: no mean (None), never a misleading 0
                    "mean_token_gap": token_gap,
                    "mean_quality_gap": quality_gap,
                    "mean_score_gap": quality_gap * scale_max if kept else None,  # type: ignore[operator]
                    **{f"mean_{k}": v for k, v in mean.items()},
                }
            )
    return rows


def sweep_table(
    scored: pl.DataFrame | pl.LazyFrame,
    cfg: PairsConfig,
    weights: list[float],
    drop_ratios: list[float],
    scale_max: float = 100.0,
    term: str = "length",
) -> pl.DataFrame:
    """The whole grid from one load of the data (see module doc)."""
    cfg = replace(cfg, strategy=DP_DPO)  # every point is dp_dpo: no strategy's own gate or term (issue 16)
    prepared = prepare(scored, cfg, scale_max)
    rows = sweep_points(prepared, cfg, weights, drop_ratios, scale_max, term)
    schema = {c: (pl.String if c == "term" else pl.Int64 if c in COUNTS else pl.Float64) for c in SWEEP_COLUMNS}
    return pl.DataFrame(rows, schema=schema)


# -- plots ---------------------------------------------------------------------------------------
def heatmap_png(table: pl.DataFrame, column: str, title: str, fmt: str) -> bytes:
    plt = pyplot()

    w_lens = sorted(set(table["weight"].to_list()))
    drops = sorted(set(table["drop_ratio"].to_list()))
    grid = np.full((len(w_lens), len(drops)), np.nan)
    for row in table.iter_rows(named=True):
        value = row[column]
        grid[w_lens.index(row["weight"]), drops.index(row["drop_ratio"])] = np.nan if value is None else value
    fig, ax = plt.subplots(figsize=(1.1 * len(drops) + 2.5, 0.45 * len(w_lens) + 1.8))
    image = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(drops)), [f"{d:g}" for d in drops])
    ax.set_yticks(range(len(w_lens)), [f"{w:g}" for w in w_lens])
    ax.set_xlabel("drop_ratio")
    ax.set_ylabel(axis_label(table))
    ax.set_title(title)
    finite = grid[np.isfinite(grid)]
    middle = (finite.min() + finite.max()) / 2 if len(finite) else 0.0
    for i in range(len(w_lens)):
        for j in range(len(drops)):
            if np.isfinite(grid[i, j]):
                color = "black" if grid[i, j] > middle else "white"
                ax.text(j, i, format(grid[i, j], fmt), ha="center", va="center", fontsize=7, color=color)
    fig.colorbar(image, ax=ax)
    data = png(fig)
    return data


def axis_label(table: pl.DataFrame) -> str:
    term = table["term"][0] if table.height else "length"
    return "w_len" if term == "length" else f"weight of {term}"


def crossing(w_lens: list[float], a: list[float], b: list[float]) -> float | None:
    """The first weight where curves a and b (each scaled by its largest absolute value) cross."""
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
    """Mean token gap and mean quality gap (in score points) against the weight at the smallest drop
    ratio; the two y-axes are scaled so that each curve's largest value sits at the same height,
    so where the lines cross is where the normalized gaps are equal (the paper's figure)."""
    plt = pyplot()

    drop = min(table["drop_ratio"])
    line = table.filter(pl.col("drop_ratio") == drop).sort("weight").drop_nulls(["mean_token_gap", "mean_score_gap"])
    w_lens = line["weight"].to_list()
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
        left.text(cross, 1.05 * top_t, f" crossing {axis_label(table)} ~ {cross:.2f}", fontsize=8, va="top")
    label = axis_label(table)
    left.set_xlabel("w_len (w_quality = 1 - w_len)" if label == "w_len" else label)
    left.set_ylabel("mean token gap (tokens)", color="tab:blue")
    right.set_ylabel("mean quality gap (score points)", color="tab:red")
    left.set_title(f"Chosen vs rejected gaps at drop_ratio {drop:g}")
    handles = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    labels = left.get_legend_handles_labels()[1] + right.get_legend_handles_labels()[1]
    left.legend(handles, labels, loc="center left", fontsize=8)
    data = png(fig)
    return data


def format_table(table: pl.DataFrame) -> str:
    """A compact text table: one row per weight, pairs kept / token gap / score gap per drop ratio."""
    drops = sorted(set(table["drop_ratio"].to_list()))
    head = f"{axis_label(table)} | " + " | ".join(f"drop {d:g}: kept tok_gap q_gap" for d in drops)
    lines = [head, "-" * len(head)]
    for w_len in sorted(set(table["weight"].to_list())):
        cells = []
        for d in drops:
            row = table.filter((pl.col("weight") == w_len) & (pl.col("drop_ratio") == d)).row(0, named=True)
            gap = "-" if row["mean_token_gap"] is None else f"{row['mean_token_gap']:.1f}"
            score = "-" if row["mean_score_gap"] is None else f"{row['mean_score_gap']:.2f}"
            cells.append(f"{row['pairs_kept']:>5} {gap:>7} {score:>6}")
        lines.append(f"{w_len:5.2f} | " + " | ".join(cells))
    return "\n".join(lines)


# -- the command ---------------------------------------------------------------------------------
def run_sweep(run_dir: str, overrides: list[str] | None = None) -> tuple[pl.DataFrame, dict[str, Any]]:
    """`factory sweep`: sweep/ in the run directory; returns (table, info)."""
    import time

    from factory.commands import rebuild
    from factory.rundir.guard import check_run_dir

    t0 = time.perf_counter()
    run = rebuild.read_run(run_dir, overrides)
    cfg, store, prompts = run.cfg, run.store, run.prompts
    check_run_dir(store, "RUN_DIR")  # sweep/ is replaced: never through a link out of the run
    scored = attach(run.graph.scored(store, prompts).scored, prompts, cfg.pairs)  # pairs.balance reads a prompt column
    t_load = time.perf_counter()
    table = sweep_table(
        scored, cfg.pairs, cfg.sweep.w_lens, cfg.sweep.drop_ratios, cfg.judge.scale_max, term=cfg.sweep.term
    )
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
    line = table.filter(pl.col("drop_ratio") == min(cfg.sweep.drop_ratios)).sort("weight")
    info = {
        "points": table.height,
        "term": cfg.sweep.term,
        "crossing_w_len": crossing(line["weight"].to_list(), line["mean_token_gap"].fill_null(np.nan).to_list(),
                                   line["mean_score_gap"].fill_null(np.nan).to_list()),
        "seconds": {"load": round(t_load - t0, 3), "table": round(t_table - t_load, 3),
                    "plots": round(time.perf_counter() - t_table, 3)},
        "files": [store.display("sweep", name) for name in
                  ("sweep.csv", "heatmap_token_gap.png", "heatmap_quality_gap.png", "gaps_vs_w_len.png")],
    }  # fmt: skip
    return table, info
