"""`factory calibrate`: how often does the configured judge prefer the clearly better reply?

The calibration set (conf/data/calibration.jsonl) holds hand-written rows of the demo domain, each a
prompt with a clearly better and a clearly worse host reply:

    {"id": "cal-01", "product_info": {...}, "history": [...], "question": "...", "better": "...", "worse": "..."}

Both replies are judged apart (pointwise, as the pipeline judges samples), with the run's judge config:
engine, rubric, scale, votes, re-asks; with judge.mode group, together in one request as answers A and B
(their order shuffled by the seed; judge.orders 2 asks both orders), as a group is judged. A row agrees when
the better reply's quality is strictly higher, ties when both are equal, disagrees when lower, and is unscored
when either side has no usable vote. Nothing is cached: a calibration always asks the judge.

    agreement = agree / rows   (a judge that ignores the reply ties every row: 0; a coin flip: ~0.5)

Writes OUT/calibration.json (the summary), OUT/calibration.csv (one line per row) and
OUT/calibration_judgments.parquet (every judgment with its raw text and parse_status).
"""

from __future__ import annotations

import io
import sys
import time
import uuid
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from factory import defaults
from factory.config import JudgeConfig, RunConfig
from factory.engines.base import Engine
from factory.rundir.hashing import derive_seed
from factory.prompts import InvalidRow, read_rows, render_product_info
from factory.rundir.schemas import JUDGMENTS
from factory.stages import judge as judge_stage
from factory.stages.base import BaseStage
from factory.rundir.store import RunStore

DEFAULT_DATA = defaults.CALIBRATION  # package data (factory/data/calibration.jsonl; conf/data/ links to it)
SIDES = ("better", "worse")  # sample_idx 0 and 1 of each row
CALIBRATION_FP = "calibration"  # stands in for the sampler fingerprint in the judgment rows


def _text(row: dict, name: str) -> str:
    value = row.get(name)
    if not isinstance(value, str) or not value.strip():
        raise InvalidRow(f"missing or empty text field {name!r}")
    return value.strip()


def _history(value: Any) -> list[dict[str, str]]:
    if value is None:
        return []
    ok = isinstance(value, list) and all(
        isinstance(t, dict) and t.get("role") in ("user", "assistant", "system") and isinstance(t.get("content"), str)
        for t in value
    )
    if not ok:
        raise InvalidRow("history is not a list of {role, content}")
    return [{"role": t["role"], "content": t["content"]} for t in value]


def load_calibration(path: str, limit: int | None = None) -> tuple[list[dict], list[dict]]:
    """(rows, invalid): rows carry id, product_info (rendered), history, question, better, worse;
    a row that cannot be used is listed in invalid with its reason, never dropped silently."""
    rows: list[dict] = []
    invalid: list[dict] = []
    seen: set[str] = set()
    for index, row in read_rows(path, limit):
        try:
            if isinstance(row, InvalidRow):
                raise row
            if not isinstance(row, dict):
                raise InvalidRow("row is not an object")
            row_id = str(row.get("id") or f"row-{index}")
            if row_id in seen:
                raise InvalidRow(f"duplicate id {row_id!r}")
            if not row.get("product_info"):
                raise InvalidRow("missing or empty field 'product_info'")
            parsed = {
                "id": row_id,
                "product_info": render_product_info(row["product_info"]),
                "history": _history(row.get("history")),
                "question": _text(row, "question"),
                "better": _text(row, "better"),
                "worse": _text(row, "worse"),
            }
        except InvalidRow as exc:
            invalid.append({"row_index": index, "reason": str(exc)})
            continue
        seen.add(row_id)
        rows.append(parsed)
    return rows, invalid


def plan_calibration(
    rows: list[dict], cfg: JudgeConfig, rubric: str, speakers: dict[str, str] | None = None
) -> list[dict]:
    """Judge plan rows (the shape judge_batch takes): every row x side x vote."""
    judge_stage.check_rubric(rubric)
    plan = []
    for row in rows:
        for sample_idx, side in enumerate(SIDES):
            for vote in range(cfg.votes):
                plan.append(
                    {
                        "prompt_id": row["id"],
                        "sample_idx": sample_idx,
                        "sampler_fp": CALIBRATION_FP,
                        "vote": vote,
                        "seed": derive_seed(cfg.sampling.seed, "calibration", row["id"], sample_idx, vote),
                        "messages": judge_stage.render_rubric(
                            rubric, row, {"answer": row[side], "reasoning": ""}, cfg, speakers
                        ),
                    }
                )
    return plan


def plan_group_calibration(
    rows: list[dict], cfg: JudgeConfig, rubric: str, speakers: dict[str, str] | None = None
) -> list[dict]:
    """judge.mode group: one group request per row and order, the two replies as answers A and B."""
    from factory.stages.judge.group import group_key, shown_order

    judge_stage.check_rubric(rubric)
    plan = []
    for row in rows:
        for order in range(cfg.orders):
            members = shown_order(cfg.sampling.seed, row["id"], [0, 1], order)
            answers = [{"answer": row[SIDES[i]], "reasoning": ""} for i in members]
            plan.append({
                "prompt_id": row["id"], "sampler_fp": CALIBRATION_FP, "vote": order, "members": members,
                "created": [None, None], "group_pool": CALIBRATION_FP,
                "group_key": group_key(row["id"], [(i, None) for i in members], order),
                "seed": derive_seed(cfg.sampling.seed, "calibration", row["id"], order),
                "messages": judge_stage.render_group(rubric, row, answers, cfg, speakers),
            })  # fmt: skip
    return plan


def agreement(rows: list[dict], judgments: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Per-row outcome and the summary counts.

    Output rows: id, better_score, worse_score (mean usable raw score, null when none),
                 better_spread, worse_spread, better_votes_ok, worse_votes_ok, outcome
                 (agree | tie | disagree | unscored)."""
    quality = judge_stage.sample_quality(judgments) if judgments.height else None
    by_key = {(r["prompt_id"], r["sample_idx"]): r for r in quality.to_dicts()} if quality is not None else {}
    out = []
    for row in rows:
        better = by_key.get((row["id"], 0), {})
        worse = by_key.get((row["id"], 1), {})
        b, w = better.get("quality"), worse.get("quality")
        if b is None or w is None:
            outcome = "unscored"
        else:
            outcome = "agree" if b > w else "tie" if b == w else "disagree"
        out.append(
            {
                "id": row["id"],
                "better_score": better.get("score"),
                "worse_score": worse.get("score"),
                "better_spread": better.get("quality_spread"),
                "worse_spread": worse.get("quality_spread"),
                "better_votes_ok": better.get("votes_ok", 0),
                "worse_votes_ok": worse.get("votes_ok", 0),
                "outcome": outcome,
            }
        )
    schema = {
        "id": pl.String, "better_score": pl.Float64, "worse_score": pl.Float64, "better_spread": pl.Float64,
        "worse_spread": pl.Float64, "better_votes_ok": pl.Int64, "worse_votes_ok": pl.Int64, "outcome": pl.String,
    }  # fmt: skip
    per_row = pl.DataFrame(out, schema=schema)
    n = per_row.height
    counts = {k: per_row.filter(pl.col("outcome") == k).height for k in ("agree", "tie", "disagree", "unscored")}
    scored = n - counts["unscored"]
    statuses = judgments["parse_status"].value_counts(sort=True).to_dicts() if judgments.height else []
    summary = {
        "rows": n,
        **counts,
        "agreement": counts["agree"] / n if n else None,
        "agreement_of_scored": counts["agree"] / scored if scored else None,
        "tie_rate": counts["tie"] / n if n else None,
        "mean_score_better": per_row["better_score"].mean(),
        "mean_score_worse": per_row["worse_score"].mean(),
        "judgments": judgments.height,
        "parse_status": {s["parse_status"]: s["count"] for s in statuses},
    }
    return per_row, summary


class CalibrationStage(BaseStage):
    """Judges the calibration plan (stage contract, factory/stages/base.py); nothing is cached, so
    its plan is every request, whatever is stored."""

    name = "calibrate"
    table = "judgments"
    key = judge_stage.KEY
    schema = JUDGMENTS
    batch_fields = ("cfg", "judge_fp")  # its plan is given whole: no inputs, no upstream
    run_batch = staticmethod(judge_stage.judge_batch)

    def __init__(self, plan: list[dict], cfg: JudgeConfig, judge_fp: str):
        self.requests, self.cfg, self.judge_fp, self.engine = plan, cfg, judge_fp, cfg.engine
        self.group = cfg.mode == "group"
        if self.group:  # one request answers both replies of a row
            self.run_batch = judge_stage.group_judge_batch
            self.answers = lambda r: [(r["prompt_id"], i, r["sampler_fp"], r["vote"]) for i in r["members"]]
            self.rows_of = lambda work: 2 * (work.height if isinstance(work, pl.DataFrame) else len(work))

    def plan(self, store: Any) -> pl.DataFrame:
        if self.group:
            return pl.DataFrame(self.requests)
        return pl.DataFrame(self.requests, schema=judge_stage.REQUEST_SCHEMA)

    def render(self, work: list[dict]) -> list[dict]:
        return work  # planned already rendered

    def failed(self, requests: list[dict], reason: str) -> list[dict]:
        if self.group:
            return judge_stage.group_failed(requests, reason, self.cfg, self.judge_fp)
        return judge_stage.failed_judgments(requests, reason, self.judge_fp)

    def read(self, store: Any) -> pl.DataFrame:
        stored = store.read("judgments", JUDGMENTS)
        return stored if stored is not None else pl.from_arrow(JUDGMENTS.empty_table())  # type: ignore[return-value]

    def ok(self, row: dict) -> bool:
        return row["parse_status"] in judge_stage.USABLE

    def tokens(self, row: dict) -> tuple[int, int]:
        return 0, int(row.get("completion_tokens") or 0)


def calibrate(
    rows: list[dict], cfg: RunConfig, rubric: str, judge_fp: str, build: Any = None, close_engines: bool = True
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """(judgments, per_row, summary) of the judge on the calibration rows, on the in-process executor;
    `build(engine_cfg) -> Engine` makes the judge engine (the registry's builder by default)."""
    from factory.executor import Executor

    plan_of = plan_group_calibration if cfg.judge.mode == "group" else plan_calibration
    plan = plan_of(rows, cfg.judge, rubric, dict(cfg.prompts.speakers or {}))
    stage = CalibrationStage(plan, cfg.judge, judge_fp)
    scratch = RunStore(f"memory://factory-calibration-{uuid.uuid4().hex}")
    try:
        with Executor(scratch, cfg, backend="local", build=build) as executor:
            executor.backend.close_engines = close_engines
            executor.run([stage])
        judgments = stage.read(scratch).sort("prompt_id", "sample_idx", "vote")
    finally:
        scratch.fs.rm(scratch.root, recursive=True)
    per_row, summary = agreement(rows, judgments)
    summary["requests"] = int(judgments["attempts"].sum()) if judgments.height else 0
    summary["completion_tokens"] = int(judgments["completion_tokens"].fill_null(0).sum()) if judgments.height else 0
    summary["prompt_tokens"] = int(judgments["prompt_tokens"].fill_null(0).sum()) if judgments.height else 0
    # what judging one reply cost in prompt tokens: group mode sends the rubric once for both replies
    summary["prompt_tokens_per_judgment"] = summary["prompt_tokens"] / judgments.height if judgments.height else None
    return judgments, per_row, summary


def run_calibration(
    cfg: RunConfig,
    data: str | None = None,
    out: str | None = None,
    limit: int | None = None,
    engine: Engine | None = None,
) -> dict[str, Any]:
    """`factory calibrate`: judge the calibration set with the config's judge and write the results.
    Runs the judge engine in this process (a calibration is ~40 requests); `engine` replaces it."""
    from factory import graph

    t0 = time.perf_counter()
    data = data or str(DEFAULT_DATA)
    out = out or f"{cfg.output_dir.rstrip('/')}/calibration"
    node = graph.GenRMNode.of(cfg)  # the run's primary judge: its rubric and fingerprint
    rubric, judge_fp = node.rubric, node.fingerprint
    judge_stage.check_rubric(rubric, f"{node.key}.rubric_file")
    model = graph.model_id(cfg.judge.engine, "judge.engine")
    rows, invalid = load_calibration(data, limit)
    for bad in invalid:
        print(f"[calibrate] row {bad['row_index']} invalid: {bad['reason']}", file=sys.stderr)
    total = len(rows) * len(SIDES) * cfg.judge.votes * cfg.judge.orders
    print(
        f"[calibrate] {len(rows)} rows -> {total} judgments with {cfg.judge.engine.kind} judge {model}", file=sys.stderr
    )
    build = None if engine is None else (lambda _cfg: engine)
    judgments, per_row, summary = calibrate(rows, cfg, rubric, judge_fp, build, close_engines=engine is None)
    summary.update(
        {
            "rows_invalid": len(invalid),
            "invalid": invalid,
            "judge_fp": judge_fp,
            "model": model,
            "engine": cfg.judge.engine.kind,
            "rubric_file": cfg.judge.rubric_file or str(graph.DEFAULT_RUBRIC),
            "votes": cfg.judge.votes,
            "mode": cfg.judge.mode,
            "orders": cfg.judge.orders,
            "scale_max": cfg.judge.scale_max,
            "structured": cfg.judge.structured,
            "data": data,
            "seconds": round(time.perf_counter() - t0, 3),
            "output": out,
        }
    )
    store = RunStore(out)
    store.write_json("calibration.json", summary)
    store.write_bytes("calibration.csv", per_row.write_csv().encode())
    sink = io.BytesIO()
    pq.write_table(judgments.to_arrow(), sink, compression="zstd")
    store.write_bytes("calibration_judgments.parquet", sink.getvalue())
    return summary


def summary_table(summary: dict[str, Any]) -> str:
    from factory.commands.present import table

    def share(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    def score(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    statuses = ", ".join(f"{k} {v}" for k, v in summary["parse_status"].items()) or "-"
    rows = [
        ("judge", f"{summary['engine']} {summary['model']}"),
        ("rows (invalid)", f"{summary['rows']} ({summary['rows_invalid']})"),
        (
            "agree / tie / disagree / unscored",
            f"{summary['agree']} / {summary['tie']} / {summary['disagree']} / {summary['unscored']}",
        ),
        ("agreement (all rows)", share(summary["agreement"])),
        ("agreement (scored rows)", share(summary["agreement_of_scored"])),
        ("mean score better / worse", f"{score(summary['mean_score_better'])} / {score(summary['mean_score_worse'])}"),
        ("judgments by parse_status", statuses),
        (
            "judge mode",
            f"{summary.get('mode', 'pointwise')}"
            + (f", {summary['orders']} orders" if summary.get("orders", 1) > 1 else ""),
        ),
        ("LLM requests", str(summary["requests"])),
        (
            "prompt tokens per judgment",
            "-"
            if summary.get("prompt_tokens_per_judgment") is None
            else f"{summary['prompt_tokens_per_judgment']:.0f}",
        ),
        ("time", f"{summary['seconds']:.1f}s"),
        ("output", summary["output"]),
    ]
    return table(rows, "factory calibrate")
