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
scored column it makes, its stored rows ok / failed, a GenRM's mode (pointwise, group) and prompt tokens
per judgment (a group request's split over its samples); with two or more pairs.judges, their pairwise
agreement: the share of groups where two judges pick the same chosen and the same rejected sample.
Table "tags" (when the judge gives tags, judge.tags): each tag's share of valid, chosen, rejected samples.
Table "dimensions" (when the judge scores dimensions, judge.dimensions): each dim_* column's distribution
on the valid samples: n, mean, p10 / p25 / median / p75 / p90 and a 10-bin histogram over 0..scale_max.
`--against RUN_B`: tables "against" with B's counts, tag shares and dimension means beside this run's.
Table "strategies" (issue 16): dp_dpo, quality, long2short, shortest_correct and reward on the same
samples (factory.pairs.compare): pairs kept, mean token and quality gaps, share with the chosen shorter.
Table "bias audit": per judge and reward model, the within-group rank correlation of score with length,
how often its pick is the longer sample, the token gaps of its own pairs, its score histogram
(factory.pairs.audit).
Table "rates": judge parse statuses, sample exclusions by reason (rule filters and duplicates
included), groups by bucket, candidate pairs by outcome.
The pair decisions are recomputed with the run's stored config (and any key=value given) by the
pair kernel `factory pairs` runs (factory.pairs); a stale pairs/ folder is pointed out.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from typing import Any

import numpy as np
import polars as pl

from factory import pairs as pair_kernel
from factory.commands.present import Table, markdown_tables, num, png, pyplot
from factory.config import RunConfig, kinds
from factory.config.strategies import LONG2SHORT
from factory.pairs import audit, compare, long2short
from factory.stages import judge as judge_stage


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
    for column in kinds.score_columns(scored.columns):
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


def dimension_distributions(
    scored: pl.DataFrame, prepared: pair_kernel.Prepared, scale_max: float
) -> list[dict[str, Any]]:
    """Each dim_* column on the valid samples: n, mean, quantiles and a histogram of 10 equal bins over
    0..scale_max (a score at scale_max falls in the last bin)."""
    rows = []
    for column in [c for c in scored.columns if c.startswith("dim_")]:
        values = scored[column].cast(pl.Float64).gather(prepared.valid["row"]).drop_nulls().fill_nan(None).drop_nulls()
        array = values.to_numpy()
        quantiles = np.quantile(array, [0.1, 0.25, 0.5, 0.75, 0.9]).tolist() if len(array) else [None] * 5
        bins = np.clip((array / scale_max * 10).astype(np.int64), 0, 9) if len(array) else np.empty(0, np.int64)
        rows.append(
            {"column": column, "n": len(array), "mean": float(array.mean()) if len(array) else None,
             **dict(zip(("p10", "p25", "p50", "p75", "p90"), quantiles)),
             "histogram": np.bincount(bins, minlength=10).tolist()}
        )  # fmt: skip
    return rows


def build_report(
    scored: pl.DataFrame,
    judgments: pl.DataFrame,
    cfg: RunConfig,
    judges: dict[str, dict[str, int]] | None = None,
    frames: dict[str, Any] | None = None,
    built: pair_kernel.PairBuild | None = None,
) -> dict[str, Any]:
    """All the numbers of the report (plots aside) from scored samples and judgments; `judges`: stored
    rows ok / failed per judge stage (factory.graph.RunGraph.judge_counts). A `frames` dict is filled with
    the decisions behind them (prepared, decisions, long2short), for the page's pair browser. `built`: the
    pair build of these samples under `cfg.pairs` (`factory run` hands its own over), so the kernel does not
    decide them again."""
    if built is not None:
        prepared, groups, stats = built.prepared, built.decisions, built.stats
    else:
        prepared = pair_kernel.prepare(scored, cfg.pairs, cfg.judge.scale_max)
        groups, stats = pair_kernel.decide(prepared, cfg.pairs)
    base = pair_kernel.unfiltered(prepared, scored, cfg.pairs, cfg.judge.scale_max)
    l2s_groups, l2s = pair_kernel.decide(base, replace(cfg.pairs, strategy=LONG2SHORT))
    if frames is not None:  # the page reuses these decisions instead of making them again
        frames.update(prepared=prepared, decisions=groups, long2short=l2s_groups)
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
        "dimensions": dimension_distributions(scored, prepared, cfg.judge.scale_max),
        "judges": judge_rows(cfg, judges or {}),
        "strategies": compare.compare(scored, cfg.pairs, cfg.judge.scale_max, prepared=base),  # issue 16
        "bias_audit": audit.bias_audit(
            scored, prepared, groups, cfg.pairs, cfg.judge.scale_max, kinds.judge_scales(cfg)
        ),
        "long2short": {
            "max_chosen_tokens": cfg.pairs.max_chosen_tokens,
            "mean_chosen_tokens": l2s.mean_chosen_tokens,
            "mean_rejected_tokens": l2s.mean_rejected_tokens,
            "groups_succeeded": l2s.groups_by_outcome["kept"],
            "groups_total": l2s.groups,
            "groups_no_short_sample": l2s.groups_excluded.get("no_short_sample", 0),
            **long2short.source_counts(l2s_groups, cfg.pairs),  # issue 16: the source's 4650 of 4915
        },
        "judgments": {
            "total": judged,
            "by_status": parse,
            "parse_failures": failed,
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


def report_tables(report: dict[str, Any], cfg: RunConfig) -> list[Table]:
    """Every table of the report, once, as data: report.md and the page (factory/commands/page_html.py)
    render these same tables."""
    pairs, l2s = report["pairs"], report["long2short"]
    scale = f"/{cfg.judge.scale_max:g}"
    tables = [
        Table(
            "Samples and pairs",
            ["set", "n", f"mean score {scale}", "mean tokens", "max tokens", "mean RT (s)", "max RT (s)"],
            [
                [r["set"], r["n"], r["mean_score"], r["mean_tokens"], r["max_tokens"], r["mean_rt_s"], r["max_rt_s"]]
                for r in report["table"]
            ],
            after=f"RT = decoded tokens / {cfg.decode_tokens_per_s:g} tokens/s (decode_tokens_per_s).",
        )  # fmt: skip
    ]
    threshold = "-" if pairs["delta"] is None else f"{pairs['delta']:.4f} ({pairs['delta_rule']})"
    cap = cfg.pairs.max_pairs_per_group
    gap = None if pairs["mean_quality_gap"] is None else pairs["mean_quality_gap"] * cfg.judge.scale_max
    tables.append(Table("Pairs", ["setting or count", "value"], [
        ["strategy", report["strategy"]],
        ["pairing (cap per group)", f"{pairs['pairing']} ({'none' if cap is None else cap})"],
        ["judges (combine)", f"{', '.join(cfg.pairs.judges)} ({pairs['combine']})"],
        ["drop_ratio / delta", f"{cfg.pairs.drop_ratio:g} / {threshold}"],
        ["groups (prompts with samples)", pairs["groups"]],
        ["groups with a kept pair", pairs["groups_by_outcome"]["kept"]],
        ["pairs kept / dropped below delta", f"{pairs['pairs_kept']} / {pairs['pairs_dropped']}"],
        ["mean token gap (rejected - chosen)", pairs["mean_token_gap"]],
        [f"mean score gap (chosen - rejected, {scale})", gap],
    ]))  # fmt: skip
    tables.append(
        Table(
            "Terms",
            ["term", "source", "weight", "norm", "direction", "excluded when", "key"],
            [
                [t["name"], t["source"], f"{t['weight']:g}", t["norm"], t["direction"], _bounds(t), t["key"]]
                for t in pairs["terms"]
            ],
            note="S = sum of weight x term; a term with bounds also excludes samples (its name is the reason).",
        )
    )
    if report["score_columns"]:
        tables.append(
            Table(
                "Score columns",
                ["column", "mean on valid", "mean chosen", "mean rejected"],
                [
                    [r["column"], num(r["valid"], 3), num(r["chosen"], 3), num(r["rejected"], 3)]
                    for r in report["score_columns"]
                ],
                place="judges",
            )
        )
    if report.get("tags"):
        tables.append(Table(
            "Tags", ["tag", "valid", "chosen", "rejected"],
            [[r["tag"], *(_rate_value(r[s]) for s in ("valid", "chosen", "rejected"))] for r in report["tags"]],
            note="Share of samples whose judgment carries the tag.", place="judges",
        ))  # fmt: skip
    if report.get("dimensions"):
        keys = ("n", "mean", "p10", "p25", "p50", "p75", "p90")
        headers = ["dimension", "n", "mean", "p10", "p25", "median", "p75", "p90", "histogram (10 bins, 0 -> max)"]
        tables.append(Table(
            "Dimensions", headers,
            [[r["column"], *(r[k] for k in keys), " ".join(map(str, r["histogram"]))] for r in report["dimensions"]],
            note=f"Each rubric dimension's scores ({scale}) on the valid samples.", place="judges",
        ))  # fmt: skip
    title = "Judges"
    if report.get("judges"):
        tables.append(
            Table(
                title,
                ["judge", "kind", "column", "ok", "failed", "key", "mode", "prompt tokens / judgment"],
                [
                    [
                        j["stage"],
                        j["kind"],
                        j["column"],
                        j["ok"],
                        j["failed"],
                        j["key"],
                        j.get("mode") or "-",
                        "-"
                        if j.get("prompt_tokens_per_judgment") is None
                        else f"{j['prompt_tokens_per_judgment']:.0f}",
                    ]
                    for j in report["judges"]
                ],  # fmt: skip
                place="judges",
            )
        )
        title = ""
    if pairs["judge_agreement"]:
        tables.append(
            Table(
                title,
                ["judges", "agreement"],
                [[k, _rate_value(v)] for k, v in pairs["judge_agreement"].items()],
                note="Agreement: share of groups where both judges pick the same chosen and rejected sample.",
                place="judges",
            )
        )
    tables += balance_tables(pairs.get("balance"))  # issue 16
    tables.append(strategies_table(report["strategies"], cfg))
    tables += bias_tables(report["bias_audit"])
    ran_long = ""
    if l2s.get("groups_ran_long") is not None:  # issue 16
        ran_long = (
            f"Groups that ran long (a sample at or above {l2s['max_chosen_tokens']} tokens): "
            f"{l2s['groups_ran_long']}, of which succeeded (a sample under it: shortest chosen, longest "
            f"rejected): {l2s['groups_ran_long_succeeded']}; mean chosen / rejected tokens there "
            f"{num(l2s['mean_chosen_tokens_ran_long'])} / {num(l2s['mean_rejected_tokens_ran_long'])}. "
            "The source's re-sampling of only these prompts: `factory pairs RUN_DIR --long-prompts FILE`, then "
            "a run on FILE (factory/pairs/long2short.py)."
        )
    tables.append(
        Table(
            "long2short",
            ["mean chosen tokens", "mean rejected tokens", "groups succeeded / total", "no sample under limit"],
            [
                [
                    l2s["mean_chosen_tokens"],
                    l2s["mean_rejected_tokens"],
                    f"{l2s['groups_succeeded']} / {l2s['groups_total']}",
                    f"{l2s['groups_no_short_sample']} (limit < {l2s['max_chosen_tokens']} tokens)",
                ]
            ],
            after=ran_long,
        )
    )
    tables.append(Table("Rates", ["what", "count", "rate"], rate_rows(report)))
    return tables + against_tables(report.get("against"))


def rate_rows(report: dict[str, Any]) -> list[list[Any]]:
    """Judge statuses, sample exclusions, group buckets and candidate pair outcomes, every one of them
    (a zero row says the check ran; the page lists the same rows)."""
    pairs, judged = report["pairs"], report["judgments"]
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
    return rows


def render_markdown(report: dict[str, Any], cfg: RunConfig, note: str | None = None) -> str:
    out = [f"# factory report: {cfg.output_dir}", ""]
    if note:
        out += [f"> {note}", ""]
    out.append(markdown_tables(report_tables(report, cfg)))
    out += ["Plots: lengths.png, margins.png, quality.png.", ""]
    return "\n".join(out)


# -- issue 16: strategies side by side, the judges' bias audit ---------------------------------------
def balance_tables(balance: dict[str, Any] | None) -> list[Table]:
    """pairs.balance: the cap in force and the pairs kept / dropped per value."""
    if not balance:
        return []
    unreached = " (target share not reachable)" if balance["target_share"] else ""
    cap = balance["cap"] if balance["cap"] is not None else "none" + unreached
    share = "" if balance["target_share"] is None else f", target share {balance['target_share']:g}"
    floor = balance.get("floor")  # pairs.balance.floor: over-sampling
    over = (
        ""
        if floor is None
        else f" Floor per value: {floor} (each pair repeated at most {balance['max_repeats']} times)."
    )
    headers = ["value", "pairs kept", "over_balance", *(["repeated"] if floor is not None else [])]
    rows = [[value, c["kept"], c["over_balance"], *([c["repeated"]] if floor is not None else [])]
            for value, c in balance["by_value"].items()]  # fmt: skip
    return [Table(f"Balance by {balance['column']}", headers, rows, note=f"Cap per value: {cap}{share}.{over}")]


def strategies_table(rows: list[dict[str, Any]], cfg: RunConfig) -> Table:
    """The strategies table (factory.pairs.compare)."""
    scale = cfg.judge.scale_max
    return Table(
        "Strategies on the same samples",
        ["strategy", "setting", "pairs kept", "mean token gap", f"mean quality gap /{scale:g}", "chosen shorter",
         "mean chosen tokens"],
        [[r["strategy"], r["setting"], r["pairs_kept"], r["mean_token_gap"],
          None if r["mean_quality_gap"] is None else r["mean_quality_gap"] * scale, _rate_value(r["chosen_shorter"]),
          r["mean_chosen_tokens"]] for r in rows],
        note="Each recipe through the same kernel, with the run's filters, dedupe, pairing and judges; "
        f"quality gap on the primary judge's scale (/{scale:g}); no LLM call.",
    )  # fmt: skip


def bias_tables(audit_numbers: dict[str, Any]) -> list[Table]:
    """The bias audit (factory.pairs.audit): length bias, token gaps, score distributions."""
    if not audit_numbers["length_bias"]:
        return []
    return [
        Table(
            "Bias audit",
            ["judge", "samples", "groups", "spearman (mean)", "picks longer", "picks shorter", "groups preferring"],
            [[r["judge"], r["samples"], r["groups"], num(r["spearman"], 3), _rate_value(r["picks_longer"]),
              _rate_value(r["picks_shorter"]), r["groups_preferring"]] for r in audit_numbers["length_bias"]],
            note="Within each group of valid samples: the rank correlation of each judge's score with length (> 0: "
            "longer scores higher), and the share of groups where the judge's top-scored sample is longer "
            '(what "always pick the longer" agrees with) or shorter than its bottom-scored one.',
            place="judges",
        ),
        Table(
            "", ["pairs", "n", "mean", "p10", "p25", "median", "p75", "p90", "chosen shorter"],
            [[r["pairs"], r["n"], r["mean"], r["p10"], r["p25"], r["p50"], r["p75"], r["p90"],
              _rate_value(r["chosen_shorter"])] for r in audit_numbers["gaps"]],
            note="Token gap (rejected - chosen) of the kept pairs: this build's, and each judge's own pairs "
            "(highest vs lowest score, no length term).",
            place="judges",
        ),
        Table(
            "", ["judge", "n", "distinct", "range", "at bottom", "at top", "histogram (low -> high)"],
            [[r["judge"], r["n"], r["distinct"], r["range"], _rate_value(r["at_bottom"]), _rate_value(r["at_top"]),
              " ".join(str(c) for c in r["histogram"])] for r in audit_numbers["scores"]],
            note="Score distribution: every stored score; 10 equal bins over the range (a judge that gives the "
            "bottom or the top of its scale to most samples shows at a glance).",
            place="judges",
        ),
    ]  # fmt: skip


def run_compare(run_dir: str, overrides: list[str] | None = None) -> str:
    """`factory pairs RUN_DIR --compare`: the strategies table of a run, printed; nothing is written."""
    from factory.commands import rebuild

    run = rebuild.read_run(run_dir, overrides)
    cfg, prompts = run.cfg, run.prompts
    scored = run.graph.scored(run.store, prompts).scored
    rows = compare.compare(pair_kernel.attach(scored, prompts, cfg.pairs), cfg.pairs, cfg.judge.scale_max)
    return markdown_tables([strategies_table(rows, cfg)]).strip() + "\n"


def write_long_prompts(run_dir: str, path: str, overrides: list[str] | None = None) -> str:
    """`factory pairs RUN_DIR --long-prompts FILE`: the prompts whose samples ran long, as JSONL (any
    fsspec URL); returns a line saying how many."""
    import fsspec

    from factory.commands import rebuild

    run = rebuild.read_run(run_dir, overrides)
    cfg, prompts = run.cfg, run.prompts
    scored = run.graph.scored(run.store, prompts).scored
    rows = long2short.long_prompts(scored, prompts, cfg.pairs)
    with fsspec.open(path, "wb") as handle:
        rows.write_ndjson(handle)
    return (
        f"{rows.height} of {prompts.height} prompts ran long (a sample over {cfg.pairs.sft_max_tokens} tokens) -> "
        f"{path}; sample them again: factory run CONFIG prompts.path={path} sampler.k=16 pairs.strategy=long2short "
        "output_dir=NEW_DIR"
    )


# -- issue 25: `factory report A --against B` (seed 002's version comparison) -----------------------
def _numbers_of(run_dir: str) -> tuple[dict[str, Any], RunConfig]:
    """Another run's report numbers, with its own stored config; nothing is written there."""
    from factory.commands import rebuild

    run = rebuild.read_run(run_dir, rebuild.built_with(run_dir))  # the settings its pairs/ was built with
    read = run.graph.scored(run.store, run.prompts)
    scored = pair_kernel.attach(read.scored, run.prompts, run.cfg.pairs)
    return build_report(scored, read.judgments, run.cfg, None), run.cfg


def against_numbers(
    a: dict[str, Any], cfg_a: RunConfig, b: dict[str, Any], cfg_b: RunConfig, name: str
) -> dict[str, Any]:
    """This run (A) beside run B: headline counts, each tag's share of valid and chosen samples, each
    dimension's n, mean and median on the valid samples (on each run's judge scale). A tag or dimension
    one run lacks is null there."""
    totals = [
        {"what": key, "a": a["pairs"][key], "b": b["pairs"][key]}
        for key in ("samples_total", "samples_valid", "groups", "pairs_kept")
    ]
    runs = (("a", a), ("b", b))
    tags_of = {run: {r["tag"]: r for r in rep["tags"]} for run, rep in runs}
    def pick(rows: dict[str, Any], key: str, field: str) -> Any:
        return (rows.get(key) or {}).get(field)

    tags = [
        {"tag": tag, **{f"{side}_{run}": pick(tags_of[run], tag, side) for side in ("valid", "chosen") for run in "ab"}}
        for tag in sorted(set(tags_of["a"]) | set(tags_of["b"]))
    ]  # fmt: skip
    dims_of = {run: {r["column"]: r for r in rep.get("dimensions", [])} for run, rep in runs}
    dimensions = [
        {"column": col, **{f"{k}_{run}": pick(dims_of[run], col, k) for k in ("n", "mean", "p50") for run in "ab"}}
        for col in sorted(set(dims_of["a"]) | set(dims_of["b"]))
    ]  # fmt: skip
    scales = {"a": cfg_a.judge.scale_max, "b": cfg_b.judge.scale_max}
    return {"run": name, "totals": totals, "tags": tags, "dimensions": dimensions, "scale_max": scales}


def against_tables(against: dict[str, Any] | None) -> list[Table]:
    """The comparison's tables (place "against": report.md and the page's own section)."""
    if not against:
        return []
    scales = against["scale_max"]
    out = [Table(
        f"Against {against['run']}", ["count", "A (this run)", "B", "B - A"],
        [[r["what"], r["a"], r["b"], r["b"] - r["a"]] for r in against["totals"]],
        note=f"A is this run, B the other (each with its own stored config and last pair build; judge scales "
        f"/{scales['a']:g} and /{scales['b']:g}).", place="against",
    )]  # fmt: skip
    if against["tags"]:
        rows = [[r["tag"], _rate_value(r["valid_a"]), _rate_value(r["valid_b"]), _points(r["valid_a"], r["valid_b"]),
                 _rate_value(r["chosen_a"]), _rate_value(r["chosen_b"])] for r in against["tags"]]  # fmt: skip
        headers = ["tag", "valid A", "valid B", "B - A (points)", "chosen A", "chosen B"]
        out.append(Table("", headers, rows, note="Tags (share of samples):", place="against"))
    if against["dimensions"]:
        rows = [[r["column"], r["n_a"], r["n_b"], num(r["mean_a"], 2), num(r["mean_b"], 2),
                 None if r["mean_a"] is None or r["mean_b"] is None else num(r["mean_b"] - r["mean_a"], 2),
                 num(r["p50_a"], 2), num(r["p50_b"], 2)] for r in against["dimensions"]]  # fmt: skip
        headers = ["dimension", "n A", "n B", "mean A", "mean B", "B - A", "median A", "median B"]
        out.append(Table("", headers, rows, note="Dimensions (valid samples):", place="against"))
    return out


def _points(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None else f"{100 * (b - a):+.1f}"


def judge_rows(cfg: RunConfig, counts: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    """One row per judge of the run (the run graph's entries): stage, kind, scored column, config key,
    stored rows ok / failed."""
    from factory.graph import RunGraph

    return [
        {
            "stage": j.stage,
            "kind": j.kind,
            "column": j.column,
            "key": j.key,
            **counts.get(j.stage, {"ok": 0, "failed": 0}),
        }
        for j in RunGraph(cfg, stored={}).judges
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


def lengths_png(report: dict[str, Any], cfg: RunConfig) -> bytes:
    plt = pyplot()
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
    return png(fig)


def margins_png(report: dict[str, Any], cfg: RunConfig) -> bytes:
    plt = pyplot()
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
    return png(fig)


def quality_png(report: dict[str, Any], cfg: RunConfig) -> bytes:
    plt = pyplot()
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
    return png(fig)


# -- the command ---------------------------------------------------------------------------------
def run_report(
    run_dir: str, overrides: list[str] | None = None, against: str | None = None
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """`factory report`: report/ in the run directory; returns (markdown, numbers, the page's inputs:
    factory.commands.page.write_page(**inputs) writes report/index.html from the same numbers).
    `against` (`--against RUN_B`): another run directory, read with its own stored config (nothing is
    written there); its tag and dimension shares are shown beside this run's."""
    from factory.commands import rebuild
    from factory.rundir.guard import check_run_dir

    # The settings pairs/ was last built with come first (`factory pairs RUN k=v`), then this command's own:
    # the report describes the pairs on disk unless asked otherwise.
    built = rebuild.built_with(run_dir)
    if built:
        print(f"[report] pairs/ was built with {' '.join(built)} (factory pairs): applied", file=sys.stderr)
    run = rebuild.read_run(run_dir, [*built, *(overrides or [])])
    cfg, store, manifest, prompts, graph = run.cfg, run.store, run.manifest, run.prompts, run.graph
    check_run_dir(store, "RUN_DIR")  # report/ is replaced: never through a link out of the run
    cfg.output_dir = store.url
    read = graph.scored(store, prompts)
    scored, frames = pair_kernel.attach(read.scored, prompts, cfg.pairs), read.frames  # balance: a prompt column
    decided: dict[str, Any] = {}
    report = build_report(scored, read.judgments, cfg, graph.judge_counts(frames), decided)
    if against is not None:  # seed 002: this version's shares beside another run's
        report["against"] = against_numbers(report, cfg, *_numbers_of(against), against)
    stored = store.read("pairs")
    stored_n = 0 if stored is None else stored.height
    note = None
    written = report["pairs"]["pairs_kept"] + (report["pairs"].get("pairs_repeated") or 0)  # balance.floor repeats
    if stored_n != written:
        note = (
            f"pairs/ holds {stored_n} pairs but these settings write {written}: "
            "run `factory pairs` with the same keys to rebuild it"
        )
    text = render_markdown(report, cfg, note)
    numbers = {k: v for k, v in report.items() if k not in ("margins", "lengths", "quality")}
    store.write_bytes("report/report.md", text.encode())
    store.write_bytes("report/report.json", json.dumps(numbers, indent=2, default=str).encode())
    store.write_bytes("report/lengths.png", lengths_png(report, cfg))
    store.write_bytes("report/margins.png", margins_png(report, cfg))
    store.write_bytes("report/quality.png", quality_png(report, cfg))
    page = {
        "store": store, "cfg": cfg, "manifest": manifest, "scored": scored, "prompts": prompts,
        "judgments": frames.get("judge"), "report": report, "frames": decided, "note": note,
    }  # fmt: skip
    return text, numbers, page
