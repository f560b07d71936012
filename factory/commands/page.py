"""`report/index.html`: one self-contained page per run that a person reads, with a pair browser.

    info = write_run_page(store, cfg, manifest, outputs)    # what `factory run` calls at its end: its pair
                                                              # build and judgments handed over, nothing decided again
    info = write_page(store, cfg, manifest, scored, report=numbers, frames=frames, judgments=j, prompts=p)
                                                              # what `factory report` calls (nothing recomputed)

The page names what it was made from (a digest of its inputs in a `<meta name="factory-inputs">`): the config
as shown, the manifest's lasting numbers (counts, pair stats, judges, the run directory's totals; not this
invocation's requests or timings), the scored samples, the judgments, the prompts, the invalid rows, the
stored plots. `factory run` leaves a page made from the same inputs as it is (a rerun with nothing new does
not rewrite it).

The page holds, in one HTML file with no network access (styles, script and plots inline: the report's plots
as SVG drawn in milliseconds, stored PNGs as base64): the run at a glance (config essentials, fingerprints,
versions, the funnel prompts -> samples -> valid -> groups -> pairs with every exclusion reason, requests,
tokens, spend, engine starts, wall times), the report's tables and plots (plus sweep/*.png and the eval's
score_vs_rt.png when they exist), the judges and their agreement, and three browsers: the kept pairs (chosen
and rejected side by side; search, sort by margin or token gap, filter by strategy and prompt), the groups
that gave no kept pair (by reason) and the excluded samples (by reason).

What the browsers hold is one JSON document in a `<script type="application/json">` element, drawn by a
small vanilla script that only ever sets text (model text is untrusted: no HTML is parsed from it).
Large runs stay usable: each list embeds at most `max_pairs` rows (MAX_PAIRS, `factory report
--max-pairs N`), taken deterministically: the rows of the prompts first in the order of a hash of
prompt_id (CRC-32), so that every list and every strategy shows the same prompts; the page says how
many of how many it holds. The full set stays in pairs/. A text longer than MAX_TEXT_CHARS is cut
(the page says by how much).

The page has a byte budget, `report.max_page_bytes` (a page of hundreds of MB does not open): when the
page would be larger, its texts are cut shorter (down to MIN_TEXT_CHARS), then its lists hold fewer
rows, until it fits; the page says at its top what was trimmed (and the log once), the numbers and
plots are never trimmed.

Modules: this one (the data, the entry points), page_html (the static HTML, every value escaped),
page_plots (SVG histograms), page_assets (the inline style and script).

Pairs of the browser: the kept pairs of the run's strategy (what pairs/ holds) and, unless that is
long2short, the kept pairs long2short would make (the report's long2short table), so the strategy
filter compares the two. `max_pairs` counts the run's own pairs; when it cuts them, long2short's pairs
are those of the same prompts (up to the last one shown in hash order).
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
import zlib
from typing import Any

import numpy as np
import polars as pl

from factory.commands.page_html import figure, image, build_page
from factory.commands.page_plots import report_plots
from factory.config.strategies import LONG2SHORT

PAGE = "report/index.html"
INPUTS_META = re.compile(rb'<meta name="factory-inputs" content="([0-9a-f]+)">')
MAX_PAIRS = 2_000
MAX_TEXT_CHARS = 20_000
MIN_TEXT_CHARS = 500  # the shortest a text is cut to for the byte budget before lists lose rows
FIT_TRIES = 5  # pages rendered per trim (texts, rows) before it goes to the floor
SIDE_COLUMNS = ("prompt_id", "sample_idx", "completion_tokens", "finish_reason", "error", "answer", "reasoning")


# -- the data the browsers draw ---------------------------------------------------------------------
def _round(value: Any, digits: int = 4) -> Any:
    if value is None:
        return None
    if isinstance(value, float):
        return round(value, digits) if np.isfinite(value) else None
    return value


def _cut(text: str | None, limit: int = MAX_TEXT_CHARS) -> tuple[str, int]:
    """(text, characters cut off): long reasoning would make the page too large to open."""
    if not text:
        return "", 0
    if len(text) <= limit:
        return text, 0
    return text[:limit], len(text) - limit


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

    def __init__(self, scored: pl.DataFrame, cfg: Any, reasons: pl.DataFrame | None, max_text_chars: int):
        from factory.config.kinds import score_columns

        self.scored = scored
        self.scale = cfg.judge.scale_max
        self.extra = score_columns(scored.columns)
        self.reasons = reasons
        self.limit = max_text_chars
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
            answer, answer_cut = _cut(row.get("answer"), self.limit)
            reasoning, reasoning_cut = _cut(row.get("reasoning"), self.limit)
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
                record["j"] = _cut(row["judge_reason"], self.limit)[0]
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
    max_text_chars: int = MAX_TEXT_CHARS,
) -> dict[str, Any]:
    """The JSON document of the browsers: pairs, dropped groups, excluded samples, the prompts they
    name (messages with their texts held once), and how many of each the run has."""
    prepared, decisions = frames["prepared"], frames["decisions"]
    strategy = cfg.pairs.strategy
    by_strategy = {strategy: decisions}
    if strategy != LONG2SHORT and frames.get("long2short") is not None:
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

    sides = _Sides(scored, cfg, judge_reasons(judgments), max_text_chars)
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
                text = _cut(message.get("content"), max_text_chars)[0]
                if text not in index:  # a system prompt is held once, not once per prompt
                    index[text] = len(strings)
                    strings.append(text)
                turns.append([message.get("role"), index[text]])
            conversations[pid] = turns
    return {
        "strategy": strategy,
        "scale": cfg.judge.scale_max,
        "max_pairs": max_pairs,
        "max_text_chars": max_text_chars,
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


# -- plots stored by other commands ---------------------------------------------------------------
def stored_plots(store: Any, cfg: Any) -> dict[str, bytes]:
    """sweep/*.png of the run and the eval's score_vs_rt.png, where they exist (read through fsspec)."""
    from factory.rundir.store import RunStore

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
    digest: str | None = None,
) -> dict[str, Any]:
    """Write report/index.html through the run store (atomically) and return {path, bytes, seconds,
    pairs_shown, pairs_total (the run's strategy's), embedded (rows of each browser list), trimmed, inputs (the
    digest of its inputs, see the module doc; `digest` when the caller has it already)}. Without
    `report` / `frames`, the numbers are computed here from `scored`
    (the judgments' parse statuses then come from the manifest). The report's plots are drawn here as
    SVG; sweep/ and eval plots are read from the store (PNG) when they exist."""
    from factory.commands import report as report_mod

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
    plots = stored_plots(store, cfg)
    invalid_frame = store.read("invalid", columns=["reason"])
    invalid = invalid_frame["reason"].value_counts(sort=True).rows() if invalid_frame is not None else []
    if digest is None:
        digest = inputs_digest(cfg, manifest, scored, prompts, judgments, invalid, plots, max_pairs, note)
    figures = [figure(title, svg) for title, svg in report_plots(report, cfg).items()]
    figures += [image(title, png) for title, png in plots.items()]
    metrics = store.read_json("metrics.json")
    budget = cfg.report.max_page_bytes

    def render(rows: int, chars: int) -> tuple[dict[str, Any], bytes]:
        data = page_data(scored, cfg, frames, prompts, judgments, rows, chars)
        trimmed = _trim_note(budget, max_pairs, rows, chars, len(data["pairs"]), full) if full else None
        warning = " ".join(n for n in (note, trimmed) if n) or None
        return data, build_page(cfg, manifest, report, data, figures, metrics, invalid, warning).encode()

    full = 0
    data, encoded = render(max_pairs, MAX_TEXT_CHARS)
    trimmed = None
    if len(encoded) > budget:
        full = len(encoded)
        data, encoded, rows, chars = _fit(render, budget, max_pairs, data, full)
        trimmed = {"bytes_untrimmed": full, "max_text_chars": chars, "max_rows": rows}
        logging.getLogger("factory").warning(
            "%s: %s", PAGE, _trim_note(budget, max_pairs, rows, chars, len(data["pairs"]), full, len(encoded))
        )
    encoded = encoded.replace(b'<meta charset="utf-8">', b'<meta charset="utf-8">' + _meta(digest), 1)
    store.write_bytes(PAGE, encoded)
    return {
        "inputs": digest,
        "path": store.display(PAGE),
        "bytes": len(encoded),
        "seconds": round(time.perf_counter() - t0, 3),
        "pairs_shown": sum(1 for p in data["pairs"] if p["s"] == cfg.pairs.strategy),
        "pairs_total": data["pairs_total"][cfg.pairs.strategy],
        "embedded": {"pairs": len(data["pairs"]), "dropped": len(data["dropped"]), "excluded": len(data["excluded"])},
        "trimmed": trimmed,
    }


def _longest(data: dict[str, Any]) -> int:
    """The longest text the browsers' data holds (characters)."""
    sides = [p[s] for p in data["pairs"] for s in ("c", "r")]
    sides += [d[s] for d in data["dropped"] for s in ("c", "r") if s in d]
    sides += [x for d in data["dropped"] for x in d.get("samples", [])] + [e["x"] for e in data["excluded"]]
    texts = [len(side.get(k) or "") for side in sides for k in ("a", "r", "j")] + [len(t) for t in data["strings"]]
    return max(texts, default=0)


def _fit(
    render: Any, budget: int, max_pairs: int, data: dict[str, Any], size: int
) -> tuple[dict[str, Any], bytes, int, int]:
    """From a page of `size` bytes over `budget` (its browsers' `data`): texts cut shorter (down to
    MIN_TEXT_CHARS), then fewer rows per list, until the page fits or holds one row a list."""
    longest = min(MAX_TEXT_CHARS, _longest(data))
    rows, chars, encoded = max_pairs, MAX_TEXT_CHARS, b""
    if longest > MIN_TEXT_CHARS:
        chars, data, encoded, size = _shrink(lambda n: render(rows, n), longest, size, budget, MIN_TEXT_CHARS)
    if size > budget and rows > 1:
        held = max(len(data[k]) for k in ("pairs", "dropped", "excluded"))  # what the lists hold
        rows, data, encoded, size = _shrink(lambda n: render(n, chars), held, size, budget, 1)
    if not encoded:  # nothing to trim (one row a list, short texts): the page as it is, with its note
        data, encoded = render(rows, chars)
    return data, encoded, rows, chars


def _shrink(render: Any, value: int, size: int, budget: int, floor: int) -> tuple[int, dict[str, Any], bytes, int]:
    """The largest-found `value` (a text cut, a row cap) whose page fits `budget`, from a page of `size`
    bytes at `value`: each next guess is where the line through the last two (value, size) points meets
    95% of the budget (the first: in proportion), 10% to 50% lower each time, never below `floor`;
    after FIT_TRIES guesses, `floor`."""
    points = [(value, size)]
    data: dict[str, Any] = {}
    encoded = b""
    while size > budget and value > floor:
        (v1, s1), (v0, s0) = points[-1], points[-2] if len(points) > 1 else (0, 0)
        slope = (s1 - s0) / (v1 - v0) if v1 != v0 else 0.0
        guess = v1 - (s1 - 0.95 * budget) / slope if slope > 0 else v1 * budget / s1 * 0.95
        value = floor if len(points) > FIT_TRIES else max(floor, v1 // 2, min(int(guess), int(v1 * 0.9)))
        data, encoded = render(value)
        size = len(encoded)
        points.append((value, size))
    return value, data, encoded, size


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n:,} bytes"


def _trim_note(
    budget: int, max_pairs: int, rows: int, chars: int, embedded: int, full: int, size: int | None = None
) -> str:
    """What the page says (and the log, with the size reached) when the byte budget trimmed it."""
    what = [f"texts cut at {chars:,} characters (not {MAX_TEXT_CHARS:,})"] if chars < MAX_TEXT_CHARS else []
    if rows < max_pairs:
        what.append(f"each list holds at most {rows:,} rows (not {max_pairs:,}; {embedded:,} pairs embedded)")
    reached = "" if size is None else f"; it is {_size(size)}" + (", over: it cannot be met" if size > budget else "")
    return (
        f"This page is trimmed to fit report.max_page_bytes={budget:,} (it would be {_size(full)}{reached}): "
        f"{'; '.join(what) or 'nothing left to trim'}. Every row and every whole text is in the run's Parquet; "
        "raise report.max_page_bytes for more."
    )


def write_run_page(store: Any, cfg: Any, manifest: dict[str, Any], outputs: Any) -> dict[str, Any] | None:
    """`factory run`'s call at its end, with its pair build (factory.commands.rebuild.Outputs: scored, built,
    judgments, prompts, judges) handed over: the page shows what `factory report`'s shows (judge reasons
    included) and the pair kernel decides nothing again. A page already made from the same inputs is left as it
    is ({"path", "inputs", "unchanged": True}). When the page cannot be made: a warning and None (the run's
    outputs are stored by then; the page is `factory report`'s to redo)."""
    from factory.commands import report as report_mod
    from factory.graph import NO_JUDGMENTS

    try:
        judgments = outputs.judgments if outputs.judgments is not None else NO_JUDGMENTS
        prompts = outputs.prompts
        if prompts is None:
            prompts = store.read("prompts", columns=["prompt_id", "messages"])
        invalid_frame = store.read("invalid", columns=["reason"])
        invalid = invalid_frame["reason"].value_counts(sort=True).rows() if invalid_frame is not None else []
        digest = inputs_digest(cfg, manifest, outputs.scored, prompts, judgments, invalid, stored_plots(store, cfg))
        if page_inputs(store) == digest:
            return {"path": store.display(PAGE), "inputs": digest, "unchanged": True}
        frames: dict[str, Any] = {}
        report = report_mod.build_report(outputs.scored, judgments, cfg, outputs.judges, frames, built=outputs.built)
        return write_page(
            store, cfg, manifest, outputs.scored, prompts=prompts, judgments=judgments, report=report, frames=frames,
            digest=digest,
        )  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - a page must never turn a finished run into a failed one
        logging.getLogger("factory").warning(
            "report/index.html not written (%s: %s); `factory report %s` writes it", type(exc).__name__, exc, store.url
        )
        return None


# -- what a page was made from ------------------------------------------------------------------------
# Manifest keys that change with every invocation without changing what the page shows of the run.
_PER_INVOCATION = ("requests", "timings", "history", "pools", "spend", "this_run", "pairs_build")


def _meta(digest: str) -> bytes:
    return f'<meta name="factory-inputs" content="{digest}">'.encode()


def _frame_digest(frame: pl.DataFrame | None) -> str:
    if frame is None or not frame.height:
        return "-"
    return hashlib.sha256(frame.hash_rows(seed=7).to_numpy().tobytes() + str(frame.schema).encode()).hexdigest()[:16]


def inputs_digest(
    cfg: Any,
    manifest: dict[str, Any],
    scored: pl.DataFrame,
    prompts: pl.DataFrame | None,
    judgments: pl.DataFrame | None,
    invalid: list,
    plots: dict[str, bytes],
    max_pairs: int = MAX_PAIRS,
    note: str | None = None,
) -> str:
    """The digest of what a page is made from (see the module doc)."""
    from factory import config as config_mod
    from factory.rundir.manifest import versions
    from factory.rundir.hashing import stable_hash
    from factory.rundir.secrets import redact

    lasting = {k: v for k, v in manifest.items() if k not in _PER_INVOCATION}
    lasting["judges"] = {
        name: {k: v for k, v in (judge or {}).items() if k != "requests"}
        for name, judge in (manifest.get("judges") or {}).items()
    }
    return stable_hash(
        {
            "config": redact(config_mod.to_dict(cfg)),
            "manifest": lasting,
            "scored": _frame_digest(scored),
            "prompts": _frame_digest(None if prompts is None else prompts.select("prompt_id", "messages")),
            "judgments": _frame_digest(judgments),
            "invalid": invalid,
            "plots": {title: hashlib.sha256(png).hexdigest()[:16] for title, png in plots.items()},
            "max_pairs": max_pairs,
            "note": note,
            "code": versions(),  # a new version may draw the page otherwise
        }
    )


def page_inputs(store: Any) -> str | None:
    """The inputs digest the stored page names, or None (no page, or one written before pages named it)."""
    if not store.exists(PAGE):
        return None
    with store.fs.open(store.path(PAGE), "rb") as handle:
        found = INPUTS_META.search(handle.read(4096))
    return found.group(1).decode() if found else None
