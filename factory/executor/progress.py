"""Progress people expect: a live bar per stage on a terminal, plain lines in job logs.

On a TTY (rich): one bar per stage, refreshed twice a second:
    sample  ━━━━━━━━━━━━━━━━━╸━━━━━━━━  80/120 failed 1 | 93.1 tok/s | 0.42 rows/s | ETA 1:35
Not a TTY (Ray job logs, CI): a line per stage every `interval` seconds, and one when it ends:
    [sample] 80/120 (67%) failed 1 | 93.1 tok/s | 0.42 rows/s | elapsed 3m10s | ETA 1m35s
A stage that an upstream stage still feeds shows its total as "80/96+".
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO

from factory.executor.metrics import StageMetrics


def duration(seconds: float) -> str:
    if math.isnan(seconds) or math.isinf(seconds):
        return "?"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _eta(m: StageMetrics) -> float:
    elapsed = m.elapsed()
    rate = m.rows / elapsed if elapsed > 0 else 0.0
    return (m.planned - m.rows) / rate if rate > 0 else float("nan")


def eta_text(m: StageMetrics) -> str:
    """'ETA 1m35s' for a stage whose total is known; 'waiting for sample' while its upstream still feeds it
    (its total grows: a time left from it would be wrong)."""
    if m.feeding:
        return f"waiting for {m.fed_by or 'its upstream stage'}"
    return f"ETA {duration(_eta(m))}"


def line(m: StageMetrics, extra: str = "") -> str:
    elapsed = m.elapsed()
    total = f"{m.planned}{'+' if m.feeding else ''}"
    pct = 100.0 * m.rows / m.planned if m.planned else 100.0
    return (
        f"[{m.name}] {m.rows}/{total} ({pct:.0f}%) failed {m.failed} | "
        f"{m.completion_tokens / elapsed if elapsed > 0 else 0.0:.1f} tok/s | "
        f"{m.rows / elapsed if elapsed > 0 else 0.0:.2f} rows/s | elapsed {duration(elapsed)} | {eta_text(m)}"
        + (f" | {extra}" if extra else "")
    )


class Progress:
    def __init__(self, interval_s: float = 5.0, stream: TextIO | None = None, live: bool | None = None):
        self.stream = stream or sys.stderr
        self.interval = interval_s
        self.live = self.stream.isatty() if live is None else live
        self.stages: list[StageMetrics] = []
        self.extra: dict[str, str] = {}
        self._last = time.monotonic()
        self._ended: set[str] = set()
        self._rich: Any = None
        self._tasks: dict[str, Any] = {}

    def track(self, metrics: StageMetrics) -> None:
        self.stages.append(metrics)
        if self.live:
            self._bar(metrics)

    def _bar(self, m: StageMetrics) -> None:
        if self._rich is None:
            from rich.console import Console
            from rich.progress import BarColumn, Progress as RichProgress, TextColumn

            self._rich = RichProgress(
                TextColumn("{task.description:<8}"),
                BarColumn(),
                TextColumn("{task.fields[count]}"),
                TextColumn("failed {task.fields[failed]}"),
                TextColumn("| {task.fields[speed]}"),
                TextColumn("{task.fields[eta]}"),
                TextColumn("{task.fields[extra]}"),
                console=Console(file=self.stream),
                refresh_per_second=2,
                transient=False,
            )
            self._rich.start()
        self._tasks[m.name] = self._rich.add_task(
            m.name, total=max(m.planned, 1), count="", failed=0, speed="", extra="", eta=""
        )

    def tick(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.live:
            for m in self.stages:
                elapsed = m.elapsed()
                tok_s, rows_s = (m.completion_tokens / elapsed, m.rows / elapsed) if elapsed > 0 else (0, 0)
                speed = f"{tok_s:.1f} tok/s {rows_s:.2f} rows/s"
                self._rich.update(
                    self._tasks[m.name], total=max(m.planned, 1), completed=m.rows,
                    count=f"{m.rows}/{m.planned}{'+' if m.feeding else ''}", failed=m.failed, speed=speed,
                    extra=self.extra.get(m.name, ""), eta=eta_text(m) if m.first_dispatch is not None else "",
                )  # fmt: skip
            return
        periodic = force or now - self._last >= self.interval
        for m in self.stages:
            ended = m.done and m.name not in self._ended and m.first_dispatch is not None
            if (periodic and m.first_dispatch is not None and m.name not in self._ended) or ended:
                self.stream.write(line(m, self.extra.get(m.name, "")) + "\n")
            if ended:
                self._ended.add(m.name)
        if periodic:
            self._last = now
        self.stream.flush()

    def pairs_target(self, kept: int, target: int, spend: str = "") -> None:
        """pairs.target (issue 18): the pairs kept so far against the target and what the run has spent, as
        a bar of its own under the stage bars on a terminal ("pairs ━━━╸━━ 1200/15000 | 13800 still
        needed | spent $1.23 of $5.00"), a line in logs ("[pairs] 1200/15000 kept, 13800 still needed | spent
        $1.23 of $5.00"); `spend` is Budget.total_label() ('' with no price)."""
        needed = max(target - kept, 0)
        text = f"{needed} still needed" if needed else "target met"
        text += f" | {spend}" if spend else ""
        if self._rich is None:
            self.say(f"[pairs] {kept}/{target} kept, {text}")
            return
        fields = {"count": f"{kept}/{target}", "failed": 0, "speed": text, "extra": "", "eta": ""}
        if "pairs" not in self._tasks:
            self._tasks["pairs"] = self._rich.add_task("pairs", total=max(target, 1), **fields)
        self._rich.update(self._tasks["pairs"], total=max(target, 1), completed=min(kept, target), **fields)

    def say(self, text: str) -> None:
        """A message between the bars (or a plain line)."""
        if self._rich is not None:
            self._rich.console.print(text, markup=False, highlight=False)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self._rich is not None:
            self.tick()
            self._rich.stop()
            self._rich = None
        else:
            for m in self.stages:
                if m.first_dispatch is not None and m.name not in self._ended:
                    self.stream.write(line(m, self.extra.get(m.name, "")) + "\n")
                    self._ended.add(m.name)
            self.stream.flush()
