"""The static part of report/index.html (factory.commands.page): the run at a glance, the funnel, the
report's tables, the judges, the figures and the browsers' controls, as HTML in which every value is
escaped; `render_html` puts them, the data blob and the inline style and script into one document."""

from __future__ import annotations

import base64
import html
import json
import time
from typing import Any

import numpy as np

from factory.commands.page_assets import CSS, SCRIPT
from factory.commands.present import Table
from factory.commands.report import report_tables
from factory.commands.run_facts import essentials, funnel_steps


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


def funnel(report: dict[str, Any], manifest: dict[str, Any], invalid: list[tuple[str, int]]) -> str:
    """The funnel's steps (funnel_steps), each with what it lost and why, as bars scaled to the first step."""
    steps = funnel_steps(report["pairs"], manifest, invalid)
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
    from factory.rundir.secrets import stored_config

    pairs = report["pairs"]
    timings = manifest.get("timings") or {}
    # What the run directory has cost in all (every invocation; a rerun with nothing to do adds nothing).
    totals = manifest.get("totals") or (metrics or {}).get("totals") or {}
    cached = f" ({_text(totals.get('cached_tokens'))} cached)" if totals.get("cached_tokens") else ""
    cards = [
        ("pairs kept", _text(pairs["pairs_kept"])),
        ("prompts", _text((manifest.get("counts") or {}).get("prompts_valid", pairs["groups"]))),
        ("valid samples", f"{pairs['samples_valid']:,} / {pairs['samples_total']:,}"),
        ("delta", _text(pairs["delta"], 4)),
        ("requests (all invocations)", _text(totals.get("requests"))),
        ("tokens in / out", f"{_text(totals.get('prompt_tokens'))}{cached} / {_text(totals.get('completion_tokens'))}"),
        ("spend", "-" if totals.get("usd") is None else f"${totals['usd']:.4f}"),
        ("requesting time", "-" if totals.get("wall_s") is None else f"{totals['wall_s']:.1f} s"),
    ]
    out = ['<div class="cards">']
    out += [
        f'<div class="card"><div class="v">{html.escape(v)}</div><div class="k">{html.escape(k)}</div></div>'
        for k, v in cards
    ]
    out.append("</div>")

    conf = stored_config(cfg)  # the manifest's scrub: a value holding a key shows as ***
    rows = essentials(conf, pairs["terms"], manifest.get("output_dir", cfg.output_dir))
    out.append(_table(["setting", "value"], rows, "kv"))

    stages = totals.get("stages") or {}
    if stages:
        stage_rows = [
            [name, s.get("requests"), s.get("ok"), s.get("failed"), s.get("prompt_tokens"), s.get("cached_tokens"),
             s.get("completion_tokens"), s.get("usd"), s.get("tokens_per_s"), s.get("wall_s")]
            for name, s in stages.items()
        ]  # fmt: skip
        out.append("<h3>Stages (every invocation of this run directory: metrics.json totals)</h3>")
        out.append(_table(["stage", "requests", "ok", "failed", "tokens in", "cached in", "tokens out", "USD", "tok/s",
                           "wall (s)"], stage_rows))  # fmt: skip
    out.append('<div class="row"><div>')
    pools = manifest.get("pools") or (metrics or {}).get("pools") or {}
    if pools:
        out.append("<h3>Engine pools (the invocation that wrote this page)</h3>")
        out.append(_table(["pool", "engine", "replicas", "starts", "restarts", "start (s)"],
                          [[n, v.get("engine"), v.get("replicas"), v.get("starts"), v.get("restarts"), v.get("start_s")]
                           for n, v in pools.items()]))  # fmt: skip
    if timings:
        out.append("<h3>Wall times (s) of the invocation that wrote this page</h3>")
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


def tables_html(tables: list[Table]) -> str:
    """Report tables (factory.commands.report.report_tables) as HTML: each under its <h3> title, its note
    before it, its after-sentence below; every value escaped."""
    out = []
    for t in tables:
        out += [f"<h3>{html.escape(t.title)}</h3>"] if t.title else []
        out += [f'<p class="note">{html.escape(t.note)}</p>'] if t.note else []
        out.append(_table(t.headers, t.rows))
        out += [f'<p class="note">{html.escape(t.after)}</p>'] if t.after else []
    return "".join(out)


def image(title: str, png: bytes) -> str:
    data = base64.b64encode(png).decode()
    return (
        f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(title)}</figcaption></figure>"
    )


def figure(title: str, svg: str) -> str:
    return f"<figure>{svg}<figcaption>{html.escape(title)}</figcaption></figure>"


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
        + f'</main><script type="application/json" id="page-data">{blob}</script>'
        + f"<script>{SCRIPT}</script></body></html>"
    )


def _browser(kind: str, label: str) -> str:
    """The controls and the list of one browser; the script fills them."""
    controls = {
        "pairs": '<input type="search" id="pairs-search" placeholder="search prompt, answers, reasoning">'
        '<label>sort <select id="pairs-sort"><option value="margin-desc">margin, largest first</option>'
        '<option value="margin-asc">margin, smallest first</option><option value="gap-desc">token gap, largest '
        "first</option>"
        '<option value="gap-asc">token gap, smallest first</option><option value="prompt">prompt '
        "id</option></select></label>"
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
        f'<div class="pager" id="{kind}-pager-top"></div><div class="list" id="{kind}-list" '
        f'aria-label="{html.escape(label)}"></div>'
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
    tables = report_tables(report, cfg)  # the same tables as report.md
    warning = f'<p class="warn">{html.escape(note)}</p>' if note else ""
    generated = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    sections = [
        _section(
            "glance",
            "The run at a glance",
            warning + glance(cfg, manifest, report, metrics),
            f"Page written {generated}; pair numbers are the pair kernel's with this report's settings.",
        ),
        _section(
            "funnel",
            "Funnel",
            funnel(report, manifest, invalid or []),
            "Each step with what it lost and why; bars are scaled to the largest step.",
        ),
        _section("tables", "Samples and pairs", tables_html([t for t in tables if t.place == "tables"])),
        _section("plots", "Plots", '<div class="plots">' + "".join(figures) + "</div>"),
        _section(
            "judges",
            "Judges",
            tables_html([t for t in tables if t.place == "judges"]) or '<p class="note">No judge rows.</p>',
        ),
        _section(
            "pairs",
            "Pairs",
            _browser("pairs", "kept pairs"),
            "Chosen (left) and rejected (right); the reasoning is folded. Token gap = rejected - chosen tokens.",
        ),
        _section(
            "dropped",
            "Groups without a kept pair",
            _browser("dropped", "dropped groups"),
            "Each group's best candidate pair and why it was not kept; groups with fewer than 2 valid samples show "
            "their samples.",
        ),
        _section("excluded", "Excluded samples", _browser("excluded", "excluded samples")),
        '<datalist id="prompt-ids"></datalist>',
    ]
    nav = [
        ("glance", "at a glance"),
        ("funnel", "funnel"),
        ("tables", "tables"),
        ("plots", "plots"),
        ("judges", "judges"),
        ("pairs", "pairs"),
        ("dropped", "dropped groups"),
        ("excluded", "excluded samples"),
    ]
    against = [t for t in tables if t.place == "against"]  # `factory report A --against B`
    if against:
        sections.insert(5, _section("against", "Against another run", tables_html(against)))
        nav.insert(5, ("against", "against"))
    return render_html(title, sections, data, nav)
