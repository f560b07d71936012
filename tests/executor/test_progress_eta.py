"""An ETA only for a stage whose total is known: a stage its upstream still feeds says what it waits for."""

from __future__ import annotations

import io
import time

from factory.executor.metrics import StageMetrics
from factory.executor.progress import Progress, line


def judged(feeding: bool) -> StageMetrics:
    m = StageMetrics("judge", planned=35, feeding=feeding, fed_by="sample")
    m.first_dispatch = time.monotonic() - 10
    for _ in range(30):
        m.add(True, 1, 10, 10, 0.1)
    return m


def test_a_fed_stage_says_it_waits_for_its_upstream_and_shows_no_eta():
    text = line(judged(feeding=True))
    assert text.startswith("[judge] 30/35+ (86%)") and text.endswith("| waiting for sample")
    assert "ETA" not in text


def test_a_stage_with_a_known_total_has_an_eta():
    text = line(judged(feeding=False))
    assert text.startswith("[judge] 30/35 (86%)") and "| ETA 2s" in text and "waiting" not in text


def test_the_live_bar_says_the_same():
    out = io.StringIO()
    progress = Progress(1, stream=out, live=True)
    fed, known = judged(feeding=True), judged(feeding=False)
    known.name = "sample"
    progress.track(known)
    progress.track(fed)
    progress.tick()
    progress.close()
    rendered = out.getvalue()
    assert "waiting for sample" in rendered
    judge_line = next(row for row in rendered.splitlines() if "judge" in row and "30/35+" in row)
    assert "0:00" not in judge_line and "ETA" not in judge_line
