"""`factory report RUN_DIR`: the paper's tables and plots for any run, from what is stored, no LLM call.

Writes to RUN_DIR/report/:
    report.md      the tables below, as Markdown (also printed)
    report.json    the same numbers, for scripts
    lengths.png    histogram of decoded tokens per sample, with the filter-long line (400)
    margins.png    histogram of the group margins, with the delta line of the current settings
    quality.png    histogram of judge scores: all valid samples, chosen, rejected

Table "samples and pairs" (the source's Table 4.6 shape), one row per data set:
    set                  n     mean score  mean tokens  max tokens  mean RT (s)  max RT (s)
    all samples          ...   (score on the rubric's scale; RT = tokens / decode_tokens_per_s)
    valid samples, chosen, rejected (current strategy), filter-long SFT, long2short chosen/rejected
Table "long2short": mean chosen / rejected tokens, groups succeeded / total.
Table "terms": each term of S (name, source, weight, normalization, direction, filter bounds).
Table "score columns": mean of every quality_*, dim_* and reward_* column on valid, chosen, rejected.
Table "judges": every judge of the run (judge, judges.<name>, reward_models.<name>): its kind, the
scored column it makes, its stored rows ok / failed; with two or more pairs.judges, their pairwise
agreement: the share of groups where two judges pick the same chosen and the same rejected sample.
Table "tags" (when the judge gives tags, judge.tags): each tag's share of valid, chosen, rejected samples.
Table "rates": judge parse statuses, sample exclusions by reason (rule filters and duplicates
included), groups by bucket, candidate pairs by outcome.
The pair decisions are recomputed with the run's stored config (and any key=value given) by the
pair kernel `factory pairs` runs (factory.pairs); a stale pairs/ folder is pointed out.
"""

from __future__ import annotations

import io
import json
from dataclasses import replace
from typing import Any

import numpy as np
import polars as pl

from factory import pairs as pair_kernel
from factory.config import RunConfig
from factory.pairs.terms import NOT_JUDGES
from factory.stages import judge as judge_stage

SCORE_COLUMNS = r"^(quality_\w+|dim_\w+|reward_\w+)$"


def _num(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[v if isinstance(v, str) else _num(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    # Names sit left, numbers right.
    lines += [
        "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) + " |"
        for row in cells[1:]
    ]
    return "\n".join(lines)


def set_stats(name: str, tokens: pl.Series, quality: pl.Series, cfg: RunConfig) -> dict[str, Any]:
    """One row of the samples-and-pairs table."""
    tokens = tokens.drop_nulls().cast(pl.Float64)
    quality = quality.drop_nulls().fill_nan(None).drop_nulls()
    speed = cfg.decode_tokens_per_s
    mean_tokens = tokens.mean() if tokens.len() else None
    max_tokens = int(tokens.max()) if tokens.len() else None  # type: ignore[arg-type]
    return {
        "set": name,
        "n": tokens.len(),
        "mean_score": float(quality.mean() * cfg.judge.scale_max) if quality.len() else None,  # type: ignore[operator]
        "mean_tokens": mean_tokens,
        "max_tokens": max_tokens,
        "mean_rt_s": None if mean_tokens is None else mean_tokens / speed,  # type: ignore[operator]
        "max_rt_s": None if max_tokens is None else max_tokens / speed,  # type: ignore[operator]
    }


def side_stats(name: str, groups: pl.DataFrame, side: str, cfg: RunConfig) -> dict[str, Any]:
    kept = groups.filter(pl.col("outcome") == "kept")
    return set_stats(name, kept[f"{side}_tokens"], kept[f"{side}_quality"], cfg)


def score_columns(scored: pl.DataFrame, prepared: pair_kernel.Prepared, groups: pl.DataFrame) -> list[dict[str, Any]]:
    """Mean of each extra judge, dimension and reward column on valid samples and on the kept pairs'
    chosen and rejected sides."""
    kept = groups.filter(pl.col("outcome") == "kept")
    rows = []
    for column in [c for c in scored.select(pl.col(SCORE_COLUMNS)).columns if c not in NOT_JUDGES]:
        values = scored[column].cast(pl.Float64)

        def mean(positions: pl.Series, values: pl.Series = values) -> float | None:
            picked = values.gather(positions).drop_nulls().fill_nan(None).drop_nulls()
            return float(picked.mean()) if picked.len() else None  # type: ignore[arg-type]

        rows.append(
            {
                "column": column,
                "valid": mean(prepared.valid["row"]),
                "chosen": mean(kept["chosen_row"]),
                "rejected": mean(kept["rejected_row"]),
            }
        )
    return rows


def tag_shares(scored: pl.DataFrame, prepared: pair_kernel.Prepared, groups: pl.DataFrame) -> list[dict[str, Any]]:
    """Each tag the judge gave: the share of valid samples, kept chosen and kept rejected sides that carry it."""
    if "tags" not in scored.columns or scored["tags"].drop_nulls().list.len().sum() == 0:
        return []
    kept = groups.filter(pl.col("outcome") == "kept")
    sides = {"valid": prepared.valid["row"], "chosen": kept["chosen_row"], "rejected": kept["rejected_row"]}
    tags = scored["tags"]
    rows = []
    for tag in sorted(set(tags.explode().drop_nulls())):
        row: dict[str, Any] = {"tag": tag}
        for side, positions in sides.items():
            picked = tags.gather(positions)
            row[side] = float(picked.list.contains(tag).fill_null(False).mean()) if picked.len() else None
        rows.append(row)
    return rows


def build_report(
    scored: pl.DataFrame, judgments: pl.DataFrame, cfg: RunConfig, judges: dict[str, dict[str, int]] | None = None
) -> dict[str, Any]:
    """All the numbers of the report (plots aside) from scored samples and judgments; `judges`: stored
    rows ok / failed per judge stage (factory.run.judge_counts)."""
    prepared = pair_kernel.prepare(scored, cfg.pairs, cfg.judge.scale_max)
    groups, stats = pair_kernel.decide(prepared, cfg.pairs)
    l2s_groups, l2s = pair_kernel.decide(prepared, replace(cfg.pairs, strategy="long2short"))
    marked = prepared.marked
    ok = marked.filter(pl.col("exclusion").cast(pl.String).fill_null("") != "engine_error")
    valid = prepared.valid
    short = valid.filter(pl.col("completion_tokens") <= cfg.pairs.sft_max_tokens)
    strategy = cfg.pairs.strategy
    table = [
        set_stats("all samples (no engine error)", ok["completion_tokens"], ok["quality"], cfg),
        set_stats("valid samples", valid["completion_tokens"], valid["quality"], cfg),
        side_stats(f"chosen ({strategy})", groups, "chosen", cfg),
        side_stats(f"rejected ({strategy})", groups, "rejected", cfg),
        set_stats(
            f"filter-long SFT (<= {cfg.pairs.sft_max_tokens})", short["completion_tokens"], short["quality"], cfg
        ),
        side_stats("long2short chosen", l2s_groups, "chosen", cfg),
        side_stats("long2short rejected", l2s_groups, "rejected", cfg),
    ]
    status = judgments["parse_status"].value_counts() if judgments.height else None
    parse = {str(k): int(v) for k, v in status.iter_rows()} if status is not None else {}
    judged = sum(parse.values())
    failed = sum(v for k, v in parse.items() if k not in judge_stage.USABLE)
    return {
        "strategy": strategy,
        "pairs": stats.as_dict(),
        "table": table,
        "score_columns": score_columns(scored, prepared, groups),
        "tags": tag_shares(scored, prepared, groups),
        "judges": judge_rows(cfg, judges or {}),
        "long2short": {
            "max_chosen_tokens": cfg.pairs.max_chosen_tokens,
            "mean_chosen_tokens": l2s.mean_chosen_tokens,
            "mean_rejected_tokens": l2s.mean_rejected_tokens,
            "groups_succeeded": l2s.groups_by_outcome["kept"],
            "groups_total": l2s.groups,
            "groups_no_short_sample": l2s.groups_excluded.get("no_short_sample", 0),
        },
        "judgments": {
            "total": judged, "by_status": parse, "parse_failures": failed,
            "parse_failure_rate": failed / judged if judged else None,
        },  # fmt: skip
        "margins": groups["margin"].to_list(),
        "lengths": {
            "valid": valid["completion_tokens"].to_list(),
            "excluded": ok.filter(pl.col("exclusion").is_not_null())["completion_tokens"].drop_nulls().to_list(),
        },
        "quality": {
            "valid": valid["quality"].to_list(),
            "chosen": groups.filter(pl.col("outcome") == "kept")["chosen_quality"].to_list(),
            "rejected": groups.filter(pl.col("outcome") == "kept")["rejected_quality"].to_list(),
        },
    }


def render_markdown(report: dict[str, Any], cfg: RunConfig, note: str | None = None) -> str:
    pairs, l2s = report["pairs"], report["long2short"]
    scale = f"/{cfg.judge.scale_max:g}"
    out = [f"# factory report: {cfg.output_dir}", ""]
    if note:
        out += [f"> {note}", ""]
    out += ["## Samples and pairs", ""]
    out.append(
        markdown(
            ["set", "n", f"mean score {scale}", "mean tokens", "max tokens", "mean RT (s)", "max RT (s)"],
            [
                [r["set"], r["n"], r["mean_score"], r["mean_tokens"], r["max_tokens"], r["mean_rt_s"], r["max_rt_s"]]
                for r in report["table"]
            ],
        )
    )
    out += ["", f"RT = decoded tokens / {cfg.decode_tokens_per_s:g} tokens/s (decode_tokens_per_s).", ""]
    threshold = "-" if pairs["delta"] is None else f"{pairs['delta']:.4f} ({pairs['delta_rule']})"
    cap = cfg.pairs.max_pairs_per_group
    out += ["## Pairs", ""]
    out.append(
        markdown(
            ["setting or count", "value"],
            [
                ["strategy", report["strategy"]],
                ["pairing (cap per group)", f"{pairs['pairing']} ({'none' if cap is None else cap})"],
                ["judges (combine)", f"{', '.join(cfg.pairs.judges)} ({pairs['combine']})"],
                ["drop_ratio / delta", f"{cfg.pairs.drop_ratio:g} / {threshold}"],
                ["groups (prompts with samples)", pairs["groups"]],
                ["groups with a kept pair", pairs["groups_by_outcome"]["kept"]],
                ["pairs kept / dropped below delta", f"{pairs['pairs_kept']} / {pairs['pairs_dropped']}"],
                ["mean token gap (rejected - chosen)", pairs["mean_token_gap"]],
                [
                    f"mean score gap (chosen - rejected, {scale})",
                    None if pairs["mean_quality_gap"] is None else pairs["mean_quality_gap"] * cfg.judge.scale_max,
                ],
            ],
        )
    )
    out += [
        "",
        "## Terms",
        "",
        "S = sum of weight x term; a term with bounds also excludes samples (its name is the reason).",
        "",
    ]
    out.append(
        markdown(
            ["term", "source", "weight", "norm", "direction", "excluded when", "key"],
            [
                [t["name"], t["source"], f"{t['weight']:g}", t["norm"], t["direction"], _bounds(t), t["key"]]
                for t in pairs["terms"]
            ],
        )
    )
    if report["score_columns"]:
        out += ["", "## Score columns", ""]
        out.append(
            markdown(
                ["column", "mean on valid", "mean chosen", "mean rejected"],
                [
                    [r["column"], _num(r["valid"], 3), _num(r["chosen"], 3), _num(r["rejected"], 3)]
                    for r in report["score_columns"]
                ],
            )
        )
    if report.get("tags"):
        out += ["", "## Tags", "", "Share of samples whose judgment carries the tag.", ""]
        out.append(
            markdown(
                ["tag", "valid", "chosen", "rejected"],
                [
                    [r["tag"], _rate_value(r["valid"]), _rate_value(r["chosen"]), _rate_value(r["rejected"])]
                    for r in report["tags"]
                ],
            )
        )
    if report.get("judges") or pairs["judge_agreement"]:
        out += ["", "## Judges", ""]
    if report.get("judges"):
        out.append(
            markdown(
                ["judge", "kind", "column", "ok", "failed", "key"],
                [[j["stage"], j["kind"], j["column"], j["ok"], j["failed"], j["key"]] for j in report["judges"]],
            )
        )
        out.append("")
    if pairs["judge_agreement"]:
        out += ["Agreement: share of groups where both judges pick the same chosen and rejected sample.", ""]
        out.append(
            markdown(["judges", "agreement"], [[k, _rate_value(v)] for k, v in pairs["judge_agreement"].items()])
        )
    out += ["", "## long2short", ""]
    out.append(
        markdown(
            ["mean chosen tokens", "mean rejected tokens", "groups succeeded / total", "no sample under limit"],
            [
                [
                    l2s["mean_chosen_tokens"],
                    l2s["mean_rejected_tokens"],
                    f"{l2s['groups_succeeded']} / {l2s['groups_total']}",
                    f"{l2s['groups_no_short_sample']} (limit < {l2s['max_chosen_tokens']} tokens)",
                ]
            ],
        )
    )
    out += ["", "## Rates", ""]
    judged = report["judgments"]
    rows = [[f"judgment {status}", n, _rate(n, judged["total"])] for status, n in sorted(judged["by_status"].items())]
    failures = judged.get("parse_failures")  # reports written before it had the count: from the statuses
    if failures is None:
        failures = sum(n for status, n in judged["by_status"].items() if status not in judge_stage.USABLE)
    rows.append(["judge parse failures (not ok)", failures, _rate_value(judged["parse_failure_rate"])])
    for reason, n in pairs["samples_excluded"].items():
        rows.append([f"samples excluded: {reason}", n, _rate(n, pairs["samples_total"])])
    rows.append(["samples valid", pairs["samples_valid"], _rate(pairs["samples_valid"], pairs["samples_total"])])
    buckets = pairs["groups_by_outcome"]
    for bucket in ("fewer_than_2_valid", "no_short_sample", "tied"):
        rows.append([f"groups excluded: {bucket}", buckets[bucket], _rate(buckets[bucket], pairs["groups"])])
        if bucket == "fewer_than_2_valid":
            for cause, count in sorted(pairs["groups_too_few_by_reason"].items()):
                rows.append([f"  of which mostly {cause}", count, _rate(count, pairs["groups"])])
    rows.append(
        ["groups dropped below delta", buckets["below_margin"], _rate(buckets["below_margin"], pairs["groups"])]
    )
    rows.append(["groups kept (a pair or more)", buckets["kept"], _rate(buckets["kept"], pairs["groups"])])
    for outcome, n in pairs["pairs_by_outcome"].items():
        rows.append([f"candidate pairs: {outcome}", n, _rate(n, pairs["pairs_candidate"])])
    out.append(markdown(["what", "count", "rate"], rows))
    out += ["", "Plots: lengths.png, margins.png, quality.png.", ""]
    return "\n".join(out)


def judge_rows(cfg: RunConfig, counts: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    """One row per judge of the run: stage, kind, scored column, config key, stored rows ok / failed."""
    judges = [("judge", "genrm", "quality", "judge")] if cfg.judge.enabled else []
    judges += [(f"judge_{n}", "genrm", f"quality_{n}", f"judges.{n}") for n, j in cfg.judges.items() if j.enabled]
    judges += [(f"reward_{n}", "reward_model", f"reward_{n}", f"reward_models.{n}") for n in cfg.reward_models]
    return [
        {"stage": stage, "kind": kind, "column": column, "key": key, **counts.get(stage, {"ok": 0, "failed": 0})}
        for stage, kind, column, key in judges
    ]


def _bounds(term: dict[str, Any]) -> str:
    parts = []
    if term["exclude_above"] is not None:
        parts.append(f"> {term['exclude_above']:g}")
    if term["exclude_below"] is not None:
        parts.append(f"< {term['exclude_below']:g}")
    return " or ".join(parts) or "-"


def _rate(n: int, total: int) -> str:
    return f"{100 * n / total:.1f}%" if total else "-"


def _rate_value(rate: float | None) -> str:
    return "-" if rate is None else f"{100 * rate:.1f}%"


# -- plots ---------------------------------------------------------------------------------------
def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return buffer.getvalue()


def lengths_png(report: dict[str, Any], cfg: RunConfig) -> bytes:
    plt = _pyplot()
    valid, excluded = report["lengths"]["valid"], report["lengths"]["excluded"]
    fig, ax = plt.subplots(figsize=(7, 4))
    everything = valid + excluded
    bins = np.histogram_bin_edges(everything or [0, 1], bins=40)
    ax.hist([valid, excluded], bins=bins, stacked=True, label=["valid", "excluded (truncated, empty, unjudged)"])
    ax.axvline(cfg.pairs.sft_max_tokens, color="red", ls="--", label=f"{cfg.pairs.sft_max_tokens} tokens (filter-long)")
    ax.set_xlabel("decoded tokens per sample (reasoning + answer)")
    ax.set_ylabel("samples")
    ax.set_title("Sample lengths")
    ax.legend(fontsize=8)
    return _png(fig)


def margins_png(report: dict[str, Any], cfg: RunConfig) -> bytes:
    plt = _pyplot()
    margins, delta = report["margins"], report["pairs"]["delta"]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(margins or [0.0], bins=40, color="tab:green", alpha=0.8 if margins else 0.0)
    if delta is not None:
        ax.axvline(delta, color="red", ls="--", label=f"delta = {delta:.3f} ({report['pairs']['delta_rule']})")
        ax.legend(fontsize=8)
    ax.set_xlabel("candidate pair margin S_chosen - S_rejected")
    ax.set_ylabel("candidate pairs")
    ax.set_title(
        f"Margins ({report['strategy']}, {report['pairs']['pairing']}, w_len {cfg.pairs.w_len:g}, "
        f"drop_ratio {cfg.pairs.drop_ratio:g})"
    )
    return _png(fig)


def quality_png(report: dict[str, Any], cfg: RunConfig) -> bytes:
    plt = _pyplot()
    scale = cfg.judge.scale_max
    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.linspace(0, scale, 21)
    for name, style in (("valid", "stepfilled"), ("chosen", "step"), ("rejected", "step")):
        values = [q * scale for q in report["quality"][name] if q is not None and np.isfinite(q)]
        if values:
            ax.hist(values, bins=bins, histtype=style, alpha=0.35 if style == "stepfilled" else 1.0, lw=1.5, label=name)
    ax.set_xlabel(f"judge score (0..{scale:g})")
    ax.set_ylabel("samples")
    ax.set_title("Quality")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return _png(fig)


# -- the command ---------------------------------------------------------------------------------
def run_report(run_dir: str, overrides: list[str] | None = None) -> tuple[str, dict[str, Any]]:
    """`factory report`: report/ in the run directory; returns (markdown, numbers)."""
    from factory import rebuild, run

    cfg, store, manifest = rebuild.open_run(run_dir, overrides)
    cfg.output_dir = store.url
    prompts = rebuild.stored_prompts(store)
    samples, frames = run.stored_judgments(store, cfg, prompts, manifest["fingerprints"])
    scored = run.scored_frame(samples, frames, cfg)
    report = build_report(scored, frames.get("judge", run.NO_JUDGMENTS), cfg, run.judge_counts(frames))
    stored = store.read("pairs")
    stored_n = 0 if stored is None else stored.height
    note = None
    if stored_n != report["pairs"]["pairs_kept"]:
        note = (
            f"pairs/ holds {stored_n} pairs but these settings keep {report['pairs']['pairs_kept']}: "
            "run `factory pairs` with the same keys to rebuild it"
        )
    text = render_markdown(report, cfg, note)
    numbers = {k: v for k, v in report.items() if k not in ("margins", "lengths", "quality")}
    store.write_bytes("report/report.md", text.encode())
    store.write_bytes("report/report.json", json.dumps(numbers, indent=2, default=str).encode())
    store.write_bytes("report/lengths.png", lengths_png(report, cfg))
    store.write_bytes("report/margins.png", margins_png(report, cfg))
    store.write_bytes("report/quality.png", quality_png(report, cfg))
    return text, numbers
