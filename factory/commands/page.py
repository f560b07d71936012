"""`report/index.html`: one self-contained page per run that a person reads, with a pair browser.

    info = write_page(store, cfg, manifest, scored)          # what `factory run` calls at its end
    info = write_page(store, cfg, manifest, scored, report=numbers, frames=frames, judgments=j, prompts=p)
                                                              # what `factory report` calls (nothing recomputed)

The page holds, in one HTML file with no network access (styles, script and plots inline: the
report's plots as SVG drawn in milliseconds, stored PNGs as base64): the run at a glance (config essentials, fingerprints, versions, the funnel prompts ->
samples -> valid -> groups -> pairs with every exclusion reason, requests, tokens, spend, engine
starts, wall times), the report's tables and plots (plus sweep/*.png and the eval's score_vs_rt.png
when they exist), the judges and their agreement, and three browsers: the kept pairs (chosen and
rejected side by side; search, sort by margin or token gap, filter by strategy and prompt), the
groups that gave no kept pair (by reason) and the excluded samples (by reason).

What the browsers hold is one JSON document in a `<script type="application/json">` element, drawn by a
small vanilla script that only ever sets text (model text is untrusted: no HTML is parsed from it).
Large runs stay usable: each list embeds at most `max_pairs` rows (MAX_PAIRS, `factory report
--max-pairs N`), taken deterministically: the rows of the prompts first in the order of a hash of
prompt_id (CRC-32), so that every list and every strategy shows the same prompts; the page says how
many of how many it holds. The full set stays in pairs/. A text longer than MAX_TEXT_CHARS is cut
(the page says by how much).

Pairs of the browser: the kept pairs of the run's strategy (what pairs/ holds) and, unless that is
long2short, the kept pairs long2short would make (the report's long2short table), so the strategy
filter compares the two. `max_pairs` counts the run's own pairs; when it cuts them, long2short's pairs
are those of the same prompts (up to the last one shown in hash order).
"""

from __future__ import annotations

import base64
import html
import json
import time
import zlib
from typing import Any

import numpy as np
import polars as pl

from factory.commands.page_assets import CSS, SCRIPT
from factory.commands.page_plots import report_plots

PAGE = "report/index.html"
MAX_PAIRS = 2_000
MAX_TEXT_CHARS = 20_000
SIDE_COLUMNS = ("prompt_id", "sample_idx", "completion_tokens", "finish_reason", "error", "answer", "reasoning")


# -- the data the browsers draw ---------------------------------------------------------------------
def _round(value: Any, digits: int = 4) -> Any:
    if value is None:
        return None
    if isinstance(value, float):
        return round(value, digits) if np.isfinite(value) else None
    return value


def _cut(text: str | None) -> tuple[str, int]:
    """(text, characters cut off): long reasoning would make the page too large to open."""
    if not text:
        return "", 0
    if len(text) <= MAX_TEXT_CHARS:
        return text, 0
    return text[:MAX_TEXT_CHARS], len(text) - MAX_TEXT_CHARS


def _order_key(prompt_id: str) -> tuple[int, str]:
    """The deterministic sampling order of prompts: a hash of prompt_id (CRC-32, the same on every
    machine and version), ties by prompt_id."""
    return zlib.crc32(prompt_id.encode()), prompt_id


def _first_prompts(frame: pl.DataFrame, limit: int) -> pl.DataFrame:
    """The rows of `frame` (which has prompt_id) of the prompts first in hash order, at most `limit`
    rows; rows of one prompt keep their order."""
    if frame.height <= limit:
        return frame
    ids = frame["prompt_id"].unique().to_list()
    rank = {pid: i for i, pid in enumerate(sorted(ids, key=_order_key))}
    ranked = frame.with_columns(
        pl.col("prompt_id").replace_strict(rank, return_dtype=pl.Int64).alias("_rank"),
        pl.int_range(pl.len()).alias("_pos"),
    )
    return ranked.sort("_rank", "_pos").head(limit).drop("_rank", "_pos")


class _Sides:
    """Sample records fetched by their row in the scored frame, each fetched once."""

    def __init__(self, scored: pl.DataFrame, cfg: Any, reasons: pl.DataFrame | None):
        from factory.report import SCORE_COLUMNS
        from factory.pairs.terms import NOT_JUDGES

        self.scored = scored
        self.scale = cfg.judge.scale_max
        self.extra = [c for c in scored.select(pl.col(SCORE_COLUMNS)).columns if c not in NOT_JUDGES]
        self.reasons = reasons
        self.records: dict[int, dict[str, Any]] = {}

    def fetch(self, rows: list[int], exclusion: dict[int, str] | None = None) -> None:
        wanted = sorted({r for r in rows if r not in self.records})
        if not wanted:
            return
        present = [c for c in (*SIDE_COLUMNS, "quality", *self.extra, "tags") if c in self.scored.columns]
        frame = self.scored.select(present)[wanted].with_columns(pl.Series("_row", wanted))
        if self.reasons is not None:
            frame = frame.join(self.reasons, on=["prompt_id", "sample_idx"], how="left")
        for row in frame.iter_rows(named=True):
            answer, answer_cut = _cut(row.get("answer"))
            reasoning, reasoning_cut = _cut(row.get("reasoning"))
            quality = row.get("quality")
            record: dict[str, Any] = {
                "i": row["sample_idx"],
                "t": row["completion_tokens"],
                "q": None if quality is None else _round(quality * self.scale, 2),
                "a": answer,
                "r": reasoning,
                "f": row.get("finish_reason"),
            }
            if answer_cut or reasoning_cut:
                record["cut"] = answer_cut + reasoning_cut
            if row.get("error"):
                record["e"] = str(row["error"])[:2000]
            extra = {c: _round(row[c]) for c in self.extra if row.get(c) is not None}
            if extra:
                record["x"] = extra
            if row.get("tags"):
                record["g"] = list(row["tags"])
            if row.get("judge_reason"):
                record["j"] = _cut(row["judge_reason"])[0]
            self.records[row["_row"]] = record
        for row, reason in (exclusion or {}).items():
            self.records[row]["w"] = reason

    def side(self, row: int, score: float | None = None) -> dict[str, Any]:
        record = dict(self.records[row])
        if score is not None:
            record["S"] = _round(score)
        return record


def judge_reasons(judgments: pl.DataFrame | None) -> pl.DataFrame | None:
    """The primary judge's reason per sample (its first usable vote), or None."""
    if judgments is None or not judgments.height or "reason" not in judgments.columns:
        return None
    from factory.stages.judge import USABLE

    return (
        judgments.filter(pl.col("parse_status").is_in(USABLE) & pl.col("reason").is_not_null())
        .sort("prompt_id", "sample_idx", "vote")
        .group_by("prompt_id", "sample_idx", maintain_order=True)
        .agg(pl.col("reason").first().alias("judge_reason"))
    )


def page_data(
    scored: pl.DataFrame,
    cfg: Any,
    frames: dict[str, Any],
    prompts: pl.DataFrame | None,
    judgments: pl.DataFrame | None = None,
    max_pairs: int = MAX_PAIRS,
) -> dict[str, Any]:
    """The JSON document of the browsers: pairs, dropped groups, excluded samples, the prompts they
    name (messages with their texts held once), and how many of each the run has."""
    prepared, decisions = frames["prepared"], frames["decisions"]
    strategy = cfg.pairs.strategy
    by_strategy = {strategy: decisions}
    if strategy != "long2short" and frames.get("long2short") is not None:
        by_strategy["long2short"] = frames["long2short"]
    kept = {
        s: d.filter(pl.col("outcome") == "kept").with_columns(pl.lit(s).alias("strategy"))
        for s, d in by_strategy.items()
    }
    totals = {s: frame.height for s, frame in kept.items()}
    # max_pairs counts the run's own pairs; the other strategy's pairs come for the same prompts (those up
    # to the last one shown in hash order), so that the two compare on the same prompts.
    main = _first_prompts(kept[strategy], max_pairs)
    last = (
        max(map(_order_key, main["prompt_id"].unique().to_list()), default=None)
        if main.height < totals[strategy]
        else None
    )
    shown = [main]
    for other, frame in kept.items():
        if other != strategy:
            if last is not None:
                frame = frame.filter(
                    pl.col("prompt_id").map_elements(lambda p: _order_key(p) <= last, return_dtype=pl.Boolean)
                )
            shown.append(_first_prompts(frame, max_pairs))
    kept_shown = pl.concat(shown, how="vertical_relaxed")

    # Groups that gave no kept pair: their best candidate pair (the first in the group's order) and the
    # group's bucket; groups with fewer than two valid samples show their samples.
    with_pairs = decisions.with_columns(pl.col("outcome").to_physical().alias("_code"))
    groups = with_pairs.group_by("prompt_id", maintain_order=True).agg(
        pl.all().first(), pl.col("_code").min().alias("_best")
    )
    outcome_names = decisions["outcome"].dtype.categories.to_list()  # type: ignore[union-attr]
    dropped_pairs = groups.filter(pl.col("_best") != outcome_names.index("kept")).with_columns(
        pl.col("_best").map_elements(lambda c: outcome_names[c], return_dtype=pl.String).alias("reason")
    )
    marked = prepared.marked
    paired = set(decisions["prompt_id"].unique().to_list())
    too_few = marked.filter(~pl.col("prompt_id").is_in(list(paired)))
    too_few_groups = too_few.select("prompt_id").unique(maintain_order=True)
    dropped = pl.concat(
        [
            dropped_pairs.select("prompt_id", "reason"),
            too_few_groups.with_columns(pl.lit("fewer_than_2_valid").alias("reason")),
        ]
    )
    dropped_shown = _first_prompts(dropped, max_pairs)
    excluded = marked.filter(pl.col("exclusion").is_not_null()).select(
        "prompt_id", "row", pl.col("exclusion").cast(pl.String)
    )
    excluded_shown = _first_prompts(excluded, max_pairs)

    sides = _Sides(scored, cfg, judge_reasons(judgments))
    sides.fetch(kept_shown["chosen_row"].to_list() + kept_shown["rejected_row"].to_list())
    shown_ids = set(dropped_shown["prompt_id"].to_list())
    dropped_detail = dropped_pairs.filter(pl.col("prompt_id").is_in(list(shown_ids)))
    sides.fetch(dropped_detail["chosen_row"].to_list() + dropped_detail["rejected_row"].to_list())
    too_few_rows = too_few.filter(pl.col("prompt_id").is_in(list(shown_ids)))
    reason_of = dict(zip(marked["row"].to_list(), marked["exclusion"].cast(pl.String).to_list()))
    sides.fetch(too_few_rows["row"].to_list(), {r: reason_of[r] for r in too_few_rows["row"].to_list() if reason_of[r]})
    sides.fetch(
        excluded_shown["row"].to_list(),
        dict(zip(excluded_shown["row"].to_list(), excluded_shown["exclusion"].to_list())),
    )

    pairs = [
        {
            "p": row["prompt_id"],
            "s": row["strategy"],
            "m": _round(row["margin"]),
            "gap": row["rejected_tokens"] - row["chosen_tokens"],
            "c": sides.side(row["chosen_row"], row["chosen_score"]),
            "r": sides.side(row["rejected_row"], row["rejected_score"]),
        }
        for row in kept_shown.iter_rows(named=True)
    ]
    detail = {row["prompt_id"]: row for row in dropped_detail.iter_rows(named=True)}
    samples_of: dict[str, list[int]] = {}
    for pid, row in too_few_rows.select("prompt_id", "row").iter_rows():
        samples_of.setdefault(pid, []).append(row)
    dropped_rows = []
    for pid, reason in dropped_shown.iter_rows():
        record: dict[str, Any] = {"p": pid, "why": reason}
        if pid in detail:
            d = detail[pid]
            record.update(
                m=_round(d["margin"]), gap=d["rejected_tokens"] - d["chosen_tokens"], n=d["n_valid"],
                c=sides.side(d["chosen_row"], d["chosen_score"]), r=sides.side(d["rejected_row"], d["rejected_score"]),
            )  # fmt: skip
        else:
            record["samples"] = [sides.side(r) for r in samples_of.get(pid, [])]
            record["n"] = sum(1 for r in samples_of.get(pid, []) if "w" not in sides.records[r])
        dropped_rows.append(record)
    excluded_rows = [{"p": pid, "why": why, "x": sides.side(row)} for pid, row, why in excluded_shown.iter_rows()]

    named = {r["p"] for r in pairs} | {r["p"] for r in dropped_rows} | {r["p"] for r in excluded_rows}
    strings: list[str] = []
    index: dict[str, int] = {}
    conversations: dict[str, list[list[Any]]] = {}
    if prompts is not None and named:
        for pid, messages in (
            prompts.filter(pl.col("prompt_id").is_in(list(named))).select("prompt_id", "messages").iter_rows()
        ):
            turns = []
            for message in messages or []:
                text = _cut(message.get("content"))[0]
                if text not in index:  # a system prompt is held once, not once per prompt
                    index[text] = len(strings)
                    strings.append(text)
                turns.append([message.get("role"), index[text]])
            conversations[pid] = turns
    return {
        "strategy": strategy,
        "scale": cfg.judge.scale_max,
        "max_pairs": max_pairs,
        "max_text_chars": MAX_TEXT_CHARS,
        "pairs": pairs,
        "pairs_total": totals,
        "dropped": dropped_rows,
        "dropped_total": dropped.height,
        "dropped_reasons": dropped["reason"].value_counts(sort=True).rows(),
        "excluded": excluded_rows,
        "excluded_total": excluded.height,
        "excluded_reasons": excluded["exclusion"].value_counts(sort=True).rows(),
        "prompts": conversations,
        "strings": strings,
    }


# -- the static part: tables, funnel, plots ------------------------------------------------------------
def _text(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if not np.isfinite(value):
            return "-"
        return f"{value:,.{digits}f}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(v) for v in value) or "-"
    return str(value)


def _table(headers: list[str], rows: list[list[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td class="{"n" if isinstance(v, (int, float)) and not isinstance(v, bool) else ""}">'
                         f"{html.escape(_text(v))}</td>" for v in row) + "</tr>"
        for row in rows
    )  # fmt: skip
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _section(anchor: str, title: str, body: str, note: str = "") -> str:
    note_html = f'<p class="note">{html.escape(note)}</p>' if note else ""
    return f'<section id="{anchor}"><h2>{html.escape(title)}</h2>{note_html}{body}</section>'


def _rate(n: int, total: int) -> str:
    return f"{100 * n / total:.1f}%" if total else "-"


def funnel(report: dict[str, Any], manifest: dict[str, Any], invalid: list[tuple[str, int]]) -> str:
    """prompts -> samples -> valid samples -> groups -> candidate pairs -> kept pairs, each step with
    what it lost and why, as bars scaled to the first step."""
    pairs = report["pairs"]
    counts = manifest.get("counts", {})
    k = (manifest.get("config") or {}).get("sampler", {}).get("k")
    steps: list[tuple[str, int, list[tuple[str, int]]]] = []
    if counts.get("prompts_in") is not None:
        steps.append(("prompt rows in", counts["prompts_in"], []))
        steps.append(
            (
                "valid prompts",
                counts.get("prompts_valid", 0),
                invalid or [("invalid", counts.get("prompts_invalid", 0))],
            )
        )
    if counts.get("samples_expected") is not None:
        steps.append((f"samples asked (x K={k})" if k else "samples asked", counts["samples_expected"], []))
    stored = pairs["samples_total"]
    failed = pairs["samples_excluded"].get("engine_error", 0)
    missing = max(counts.get("samples_expected", stored) - stored, 0)
    steps.append(("samples stored", stored, [("not stored (stopped, budget)", missing)] if missing else []))
    reasons = [(r, n) for r, n in pairs["samples_excluded"].items() if n]
    steps.append(("valid samples", pairs["samples_valid"], reasons))
    del failed
    buckets = pairs["groups_by_outcome"]
    too_few = [
        (f"fewer_than_2_valid, mostly {c}", n) for c, n in sorted(pairs["groups_too_few_by_reason"].items()) if n
    ]
    steps.append(("groups (prompts with samples)", pairs["groups"], []))
    steps.append(
        (
            "groups with >= 2 valid",
            pairs["groups_candidate"],
            too_few or [("fewer_than_2_valid", buckets.get("fewer_than_2_valid", 0))],
        )
    )
    steps.append(("candidate pairs", pairs["pairs_candidate"], []))
    lost = [(o, n) for o, n in pairs["pairs_by_outcome"].items() if o != "kept" and n]
    steps.append(("kept pairs", pairs["pairs_kept"], lost))
    groups_lost = [(f"groups {b}", n) for b, n in buckets.items() if b not in ("kept", "fewer_than_2_valid") and n]
    steps.append(("groups with a kept pair", buckets.get("kept", 0), groups_lost))
    top = max([n for _, n, _ in steps] + [1])
    out = ['<div class="funnel">']
    for name, n, why in steps:
        width = max(100.0 * n / top, 0.5)
        lost_html = "".join(f'<span class="lost">{html.escape(r)}: {n_:,}</span>' for r, n_ in why if n_)
        out.append(
            f'<div class="step"><div class="label">{html.escape(name)}</div>'
            f'<div class="bar"><span style="width:{width:.1f}%"></span><b>{n:,}</b></div>'
            f'<div class="why">{lost_html}</div></div>'
        )
    out.append("</div>")
    return "".join(out)


def glance(cfg: Any, manifest: dict[str, Any], report: dict[str, Any], metrics: dict[str, Any] | None) -> str:
    """Cards of the headline numbers, then config essentials, requests / tokens / spend / time per stage,
    engine pools, fingerprints and versions."""
    from factory import config as config_mod
    from factory.run import redact

    pairs = report["pairs"]
    spend = manifest.get("spend") or {}
    timings = manifest.get("timings") or {}
    requests = manifest.get("requests") or {}
    cards = [
        ("pairs kept", _text(pairs["pairs_kept"])),
        ("prompts", _text((manifest.get("counts") or {}).get("prompts_valid", pairs["groups"]))),
        ("valid samples", f"{pairs['samples_valid']:,} / {pairs['samples_total']:,}"),
        ("delta", _text(pairs["delta"], 4)),
        ("requests (this invocation)", _text(sum(v for v in requests.values() if isinstance(v, int)))),
        ("tokens in / out", f"{_text(spend.get('prompt_tokens'))} / {_text(spend.get('completion_tokens'))}"),
        ("spend", "-" if spend.get("usd") is None else f"${spend['usd']:.4f}"),
        ("wall time", "-" if timings.get("total") is None else f"{timings['total']:.1f} s"),
    ]
    out = ['<div class="cards">']
    out += [
        f'<div class="card"><div class="v">{html.escape(v)}</div><div class="k">{html.escape(k)}</div></div>'
        for k, v in cards
    ]
    out.append("</div>")

    conf = redact(config_mod.to_dict(cfg))
    sampler, judge, p = conf["sampler"], conf["judge"], conf["pairs"]
    rows = [
        ["prompts", f"{conf['prompts']['path']} (limit {conf['prompts']['limit']})"],
        ["sampler", f"{sampler['engine']['kind']}:{sampler['engine']['model'] or 'embedded'} x{sampler['engine']['replicas']}"],
        ["sampling", f"K={sampler['k']}, temperature {sampler['sampling']['temperature']}, top_p {sampler['sampling']['top_p']}, "
                     f"max_tokens {sampler['sampling']['max_tokens']}, stop {sampler['sampling']['stop']}"],
        ["judge", f"{judge['engine']['kind']}:{judge['engine']['model'] or 'embedded'}, votes {judge['votes']}, "
                  f"scale 0..{judge['scale_max']:g}, rubric {judge['rubric_file'] or 'default'}" if cfg.judge.enabled else "off"],
        ["other judges", ", ".join([f"judges.{n}" for n in conf["judges"]] + [f"reward_models.{n}" for n in conf["reward_models"]]) or "-"],
        ["pairs", f"{p['strategy']}, pairing {p['pairing']}, w_len {p['w_len']}, w_quality {p['w_quality']}, "
                  f"drop_ratio {p['drop_ratio']}, min_margin {p['min_margin']}, cap {p['max_pairs_per_group']}"],
        ["judges of S", f"{', '.join(p['judges'])} (combine {p['combine']}), dedupe {p['dedupe']}"],
        ["terms", ", ".join(t["name"] for t in pairs["terms"])],
        ["output", manifest.get("output_dir", cfg.output_dir)],
    ]  # fmt: skip
    out.append(_table(["setting", "value"], rows, "kv"))

    stage_metrics = (metrics or {}).get("stages") or {}
    spend_stages = spend.get("stages") or {}
    names = list(dict.fromkeys([*stage_metrics, *spend_stages]))
    if names:
        stage_rows = []
        for name in names:
            m, s = stage_metrics.get(name, {}), spend_stages.get(name, {})
            latency = m.get("latency_s") or {}
            stage_rows.append([
                name, m.get("requests"), m.get("ok"), m.get("failed"), s.get("prompt_tokens", m.get("prompt_tokens")),
                s.get("completion_tokens", m.get("completion_tokens")), s.get("usd"), m.get("tokens_per_s"),
                latency.get("p50"), latency.get("p95"), m.get("wall_s"),
            ])  # fmt: skip
        out.append("<h3>Stages (last invocation, metrics.json)</h3>")
        out.append(_table(["stage", "requests", "ok", "failed", "tokens in", "tokens out", "USD", "tok/s",
                           "latency p50 (s)", "p95 (s)", "wall (s)"], stage_rows))  # fmt: skip
    out.append('<div class="row"><div>')
    pools = manifest.get("pools") or (metrics or {}).get("pools") or {}
    if pools:
        out.append("<h3>Engine pools</h3>")
        out.append(_table(["pool", "engine", "replicas", "starts", "restarts", "start (s)"],
                          [[n, v.get("engine"), v.get("replicas"), v.get("starts"), v.get("restarts"), v.get("start_s")]
                           for n, v in pools.items()]))  # fmt: skip
    if timings:
        out.append("<h3>Wall times (s)</h3>")
        out.append(_table(list(timings), [[float(v) if isinstance(v, (int, float)) else v for v in timings.values()]]))
    fps = manifest.get("fingerprints") or {}
    versions = manifest.get("versions") or {}
    out.append("</div><div>")
    out.append("<h3>Fingerprints</h3>")
    out.append(_table(["stage", "fingerprint"], [[k, v] for k, v in fps.items()], "kv"))
    out.append("</div><div>")
    out.append("<h3>Versions</h3>")
    out.append(_table(["package", "version"], [[k, v] for k, v in versions.items()], "kv"))
    out.append("</div></div>")
    return "".join(out)


def report_tables(report: dict[str, Any], cfg: Any) -> str:
    """The tables of `factory report`, from its numbers."""
    scale = cfg.judge.scale_max
    out = [_table(["set", "n", f"mean score /{scale:g}", "mean tokens", "max tokens", "mean RT (s)", "max RT (s)"],
                  [[r["set"], r["n"], r["mean_score"], r["mean_tokens"], r["max_tokens"], r["mean_rt_s"], r["max_rt_s"]]
                   for r in report["table"]])]  # fmt: skip
    out.append(f'<p class="note">RT = decoded tokens / {cfg.decode_tokens_per_s:g} tokens/s (decode_tokens_per_s).</p>')
    pairs = report["pairs"]
    out.append("<h3>Terms of S</h3>")
    out.append(_table(["term", "source", "weight", "norm", "direction", "exclude above", "exclude below"],
                      [[t["name"], t["source"], t["weight"], t["norm"], t["direction"], t["exclude_above"], t["exclude_below"]]
                       for t in pairs["terms"]]))  # fmt: skip
    l2s = report["long2short"]
    out.append("<h3>long2short</h3>")
    out.append(_table(["mean chosen tokens", "mean rejected tokens", "groups succeeded", "groups", "no sample under limit"],
                      [[l2s["mean_chosen_tokens"], l2s["mean_rejected_tokens"], l2s["groups_succeeded"], l2s["groups_total"],
                        f"{l2s['groups_no_short_sample']} (limit {l2s['max_chosen_tokens']} tokens)"]]))  # fmt: skip
    judged = report["judgments"]
    rows = [[f"judgment {s}", n, _rate(n, judged["total"])] for s, n in sorted(judged["by_status"].items())]
    rows += [
        [f"samples excluded: {r}", n, _rate(n, pairs["samples_total"])] for r, n in pairs["samples_excluded"].items()
    ]
    rows += [[f"groups: {b}", n, _rate(n, pairs["groups"])] for b, n in pairs["groups_by_outcome"].items()]
    rows += [
        [f"candidate pairs: {o}", n, _rate(n, pairs["pairs_candidate"])] for o, n in pairs["pairs_by_outcome"].items()
    ]
    out.append("<h3>Rates</h3>")
    out.append(_table(["what", "count", "rate"], [r for r in rows if r[1]]))
    out.append('<p class="note">Reasons, buckets and outcomes with a count of 0 are left out (report.md lists them).</p>')
    return "".join(out)


def judges_section(report: dict[str, Any]) -> str:
    out = []
    if report.get("judges"):
        out.append(_table(["judge", "kind", "column", "ok", "failed", "key"],
                          [[j["stage"], j["kind"], j["column"], j["ok"], j["failed"], j["key"]] for j in report["judges"]]))  # fmt: skip
    agreement = report["pairs"].get("judge_agreement") or {}
    if agreement:
        out.append(
            '<p class="note">Agreement: the share of groups where both judges pick the same chosen and rejected sample.</p>'
        )
        out.append(
            _table(
                ["judges", "agreement"], [[k, "-" if v is None else f"{100 * v:.1f}%"] for k, v in agreement.items()]
            )
        )
    if report.get("score_columns"):
        out.append("<h3>Score columns (mean)</h3>")
        out.append(_table(["column", "valid", "chosen", "rejected"],
                          [[r["column"], r["valid"], r["chosen"], r["rejected"]] for r in report["score_columns"]]))  # fmt: skip
    if report.get("tags"):
        out.append("<h3>Tags (share of samples)</h3>")
        out.append(_table(["tag", "valid", "chosen", "rejected"],
                          [[r["tag"], *("-" if r[s] is None else f"{100 * r[s]:.1f}%" for s in ("valid", "chosen", "rejected"))]
                           for r in report["tags"]]))  # fmt: skip
    return "".join(out) or '<p class="note">No judge rows.</p>'


def _image(title: str, png: bytes) -> str:
    data = base64.b64encode(png).decode()
    return f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(title)}</figcaption></figure>'


def _figure(title: str, svg: str) -> str:
    return f"<figure>{svg}<figcaption>{html.escape(title)}</figcaption></figure>"


def stored_plots(store: Any, cfg: Any) -> dict[str, bytes]:
    """sweep/*.png of the run and the eval's score_vs_rt.png, where they exist (read through fsspec)."""
    from factory.store import RunStore

    found: dict[str, bytes] = {}
    try:
        for path in sorted(store.fs.ls(store.path("sweep"), detail=False)):
            if path.endswith(".png"):
                found[f"sweep: {path.rsplit('/', 1)[-1]}"] = store.fs.cat_file(path)
    except (FileNotFoundError, NotADirectoryError):
        pass
    eval_dir = cfg.eval.output_dir or f"{store.url}/eval"
    try:
        eval_store = RunStore(eval_dir, create=False)
        if eval_store.exists("report/score_vs_rt.png"):
            found["eval: score vs response time"] = eval_store.fs.cat_file(eval_store.path("report/score_vs_rt.png"))
    except (OSError, ValueError, ImportError):  # an eval directory that cannot be read is not this page's error
        pass
    return found


def render_html(title: str, sections: list[str], data: dict[str, Any], nav: list[tuple[str, str]]) -> str:
    """The page: sections (HTML made here, every value escaped) + the data blob + the script."""
    # "<" never appears raw inside the JSON, so no text can close the script element.
    blob = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
    links = "".join(f'<a href="#{a}">{html.escape(t)}</a>' for a, t in nav)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">"
        '<link rel="icon" href="data:,">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{html.escape(title)}</h1><nav>{links}</nav></header><main>"
        + "".join(sections)
        + f'</main><script type="application/json" id="page-data">{blob}</script><script>{SCRIPT}</script></body></html>'
    )


def _browser(kind: str, label: str) -> str:
    """The controls and the list of one browser; the script fills them."""
    controls = {
        "pairs": '<input type="search" id="pairs-search" placeholder="search prompt, answers, reasoning">'
        '<label>sort <select id="pairs-sort"><option value="margin-desc">margin, largest first</option>'
        '<option value="margin-asc">margin, smallest first</option><option value="gap-desc">token gap, largest first</option>'
        '<option value="gap-asc">token gap, smallest first</option><option value="prompt">prompt id</option></select></label>'
        '<label>strategy <select id="pairs-strategy"></select></label>'
        '<label>prompt <input id="pairs-prompt" list="prompt-ids" placeholder="prompt_id"></label>',
        "dropped": '<input type="search" id="dropped-search" placeholder="search text">'
        '<label>reason <select id="dropped-reason"></select></label>'
        '<label>prompt <input id="dropped-prompt" list="prompt-ids" placeholder="prompt_id"></label>',
        "excluded": '<input type="search" id="excluded-search" placeholder="search text">'
        '<label>reason <select id="excluded-reason"></select></label>'
        '<label>prompt <input id="excluded-prompt" list="prompt-ids" placeholder="prompt_id"></label>',
    }[kind]
    return (
        f'<div class="controls" id="{kind}-controls">{controls}</div>'
        f'<p class="count"><span id="{kind}-count" data-n="0"></span> <span id="{kind}-note" class="note"></span></p>'
        f'<div class="pager" id="{kind}-pager-top"></div><div class="list" id="{kind}-list" aria-label="{html.escape(label)}"></div>'
        f'<div class="pager" id="{kind}-pager"></div>'
    )


def build_page(
    cfg: Any,
    manifest: dict[str, Any],
    report: dict[str, Any],
    data: dict[str, Any],
    figures: list[str],
    metrics: dict[str, Any] | None = None,
    invalid: list[tuple[str, int]] | None = None,
    note: str | None = None,
) -> str:
    title = f"factory run: {manifest.get('output_dir') or cfg.output_dir}"
    warning = f'<p class="warn">{html.escape(note)}</p>' if note else ""
    generated = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    sections = [
        _section("glance", "The run at a glance", warning + glance(cfg, manifest, report, metrics),
                 f"Page written {generated}; pair numbers are the pair kernel's with this report's settings."),
        _section("funnel", "Funnel", funnel(report, manifest, invalid or []),
                 "Each step with what it lost and why; bars are scaled to the largest step."),
        _section("tables", "Samples and pairs", report_tables(report, cfg)),
        _section("plots", "Plots", '<div class="plots">' + "".join(figures) + "</div>"),
        _section("judges", "Judges", judges_section(report)),
        _section("pairs", "Pairs", _browser("pairs", "kept pairs"),
                 "Chosen (left) and rejected (right); the reasoning is folded. Token gap = rejected - chosen tokens."),
        _section("dropped", "Groups without a kept pair", _browser("dropped", "dropped groups"),
                 "Each group's best candidate pair and why it was not kept; groups with fewer than 2 valid samples show their samples."),
        _section("excluded", "Excluded samples", _browser("excluded", "excluded samples")),
        '<datalist id="prompt-ids"></datalist>',
    ]  # fmt: skip
    nav = [("glance", "at a glance"), ("funnel", "funnel"), ("tables", "tables"), ("plots", "plots"), ("judges", "judges"),
           ("pairs", "pairs"), ("dropped", "dropped groups"), ("excluded", "excluded samples")]  # fmt: skip
    return render_html(title, sections, data, nav)


# -- the entry point --------------------------------------------------------------------------------
def write_page(
    store: Any,
    cfg: Any,
    manifest: dict[str, Any],
    scored: pl.DataFrame,
    *,
    prompts: pl.DataFrame | None = None,
    judgments: pl.DataFrame | None = None,
    report: dict[str, Any] | None = None,
    frames: dict[str, Any] | None = None,
    max_pairs: int = MAX_PAIRS,
    note: str | None = None,
) -> dict[str, Any]:
    """Write report/index.html through the run store (atomically) and return {path, bytes, seconds,
    pairs_shown, pairs_total (the run's strategy's), embedded (rows of each browser list)}. Without
    `report` / `frames`, the numbers are computed here from `scored`
    (the judgments' parse statuses then come from the manifest). The report's plots are drawn here as
    SVG; sweep/ and eval plots are read from the store (PNG) when they exist."""
    from factory import report as report_mod

    if max_pairs < 1:
        from factory.config import ConfigError

        raise ConfigError(f"--max-pairs: must be at least 1, got {max_pairs}")
    t0 = time.perf_counter()
    if report is None or frames is None:
        frames = {}
        if judgments is None:  # `factory run`: the manifest has the statuses of the judgments it stored
            statuses = [s for s, n in (manifest.get("parse_status") or {}).items() for _ in range(int(n))]
            counted = pl.DataFrame({"parse_status": pl.Series(statuses, dtype=pl.String)})
        else:
            counted = judgments
        judges = {
            k: {"ok": v.get("ok", 0), "failed": v.get("failed", 0)} for k, v in (manifest.get("judges") or {}).items()
        }
        report = report_mod.build_report(scored, counted, cfg, judges, frames=frames)
    if prompts is None:
        prompts = store.read("prompts", columns=["prompt_id", "messages"])
    figures = [_figure(title, svg) for title, svg in report_plots(report, cfg).items()]
    figures += [_image(title, png) for title, png in stored_plots(store, cfg).items()]
    data = page_data(scored, cfg, frames, prompts, judgments, max_pairs)
    invalid_frame = store.read("invalid", columns=["reason"])
    invalid = invalid_frame["reason"].value_counts(sort=True).rows() if invalid_frame is not None else []
    page = build_page(cfg, manifest, report, data, figures, store.read_json("metrics.json"), invalid, note)
    encoded = page.encode()
    store.write_bytes(PAGE, encoded)
    return {
        "path": store.display(PAGE),
        "bytes": len(encoded),
        "seconds": round(time.perf_counter() - t0, 3),
        "pairs_shown": sum(1 for p in data["pairs"] if p["s"] == cfg.pairs.strategy),
        "pairs_total": data["pairs_total"][cfg.pairs.strategy],
        "embedded": {"pairs": len(data["pairs"]), "dropped": len(data["dropped"]), "excluded": len(data["excluded"])},
    }


def write_run_page(store: Any, cfg: Any, manifest: dict[str, Any], scored: pl.DataFrame) -> dict[str, Any] | None:
    """`factory run`'s call at its end: the page from what the run holds, or a warning and None when it
    cannot be made (the run's outputs are stored by then; the page is `factory report`'s to redo)."""
    import logging

    try:
        return write_page(store, cfg, manifest, scored)
    except Exception as exc:  # noqa: BLE001 - a page must never turn a finished run into a failed one
        logging.getLogger("factory").warning(
            "report/index.html not written (%s: %s); `factory report %s` writes it", type(exc).__name__, exc, store.url
        )
        return None
