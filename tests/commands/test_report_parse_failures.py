"""The report's parse-failure row has its count as well as its rate."""

from __future__ import annotations

import polars as pl

from factory.commands import report
from factory.config import RunConfig
from tests.pairs.test_kernel import scored


def test_the_parse_failure_row_holds_its_count_and_rate():
    frame = scored([("a", 0, 125, 0.9), ("a", 1, 500, 0.5), ("b", 0, 100, 0.8), ("b", 1, 300, 0.6)])
    statuses = ["ok", "ok", "unparseable", "out_of_range", "ok", "ok", "ok", "ok"]
    numbers = report.build_report(frame, pl.DataFrame({"parse_status": statuses}), RunConfig())
    assert numbers["judgments"]["parse_failures"] == 2
    text = report.render_markdown(numbers, RunConfig())
    cells = [
        c.strip() for c in next(row for row in text.splitlines() if "judge parse failures" in row).split("|")[1:-1]
    ]
    assert cells == ["judge parse failures (not ok)", "2", "25.0%"]


def test_a_report_json_from_before_the_count_still_fills_the_cell():
    frame = scored([("a", 0, 125, 0.9), ("a", 1, 500, 0.5)])
    numbers = report.build_report(frame, pl.DataFrame({"parse_status": ["ok", "unparseable"]}), RunConfig())
    del numbers["judgments"]["parse_failures"]
    line = next(
        row for row in report.render_markdown(numbers, RunConfig()).splitlines() if "judge parse failures" in row
    )
    assert [c.strip() for c in line.split("|")[1:-1]] == ["judge parse failures (not ok)", "1", "50.0%"]
