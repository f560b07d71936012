"""What a stage did, measured as it happens: the progress display and metrics.json read the same numbers.

metrics.json (in the run directory), per stage:
    requests       LLM requests actually sent (every attempt, re-asks and retries included)
    rows, ok, failed, retried_calls, prompt_tokens, cached_tokens (of prompt_tokens, served by the server's
    prefix cache), completion_tokens, parts_written, merges
    tokens_per_s, rows_per_s       completion tokens and rows per second of the stage's wall time
    latency_s      {p50, p95, max} of the rows' request latency
    wall_s, started_at, ended_at   first dispatch -> last row stored (seconds since the run began)
and per pool: starts, start_s (engine load seconds), restarts; and the overlap of the stages' walls.

Live, on the Ray backend: the same rows as `ray.util.metrics` counters and a gauge, tagged by stage and pool,
exported as Ray exports its own metrics (each node's metrics_export_port; Prometheus names with Ray's
`ray_` prefix): factory_requests_total, factory_failures_total, factory_tokens_total{kind=prompt|completion},
factory_in_flight (LiveMetrics; ray.RayLiveMetrics records them).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class StageMetrics:
    name: str
    planned: int = 0  # work known so far (grows while an upstream stage feeds this one)
    rows: int = 0
    ok: int = 0
    failed: int = 0
    requests: int = 0
    retried_calls: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    latencies: list[float] = field(default_factory=list)
    first_dispatch: float | None = None
    last_row: float | None = None
    feeding: bool = False  # an upstream stage may still add work
    fed_by: str = ""  # that upstream stage's name: the ETA waits for it while it feeds this one
    parts_written: int = 0  # small parts flushed (durability), before the merges
    merges: int = 0

    def add(
        self,
        ok: bool,
        requests: int,
        prompt_tokens: int,
        completion_tokens: int,
        latency: float | None,
        cached_tokens: int = 0,
    ) -> None:
        self.rows += 1
        self.ok += int(ok)
        self.failed += int(not ok)
        self.requests += requests
        self.prompt_tokens += prompt_tokens
        self.cached_tokens += cached_tokens
        self.completion_tokens += completion_tokens
        if latency:
            self.latencies.append(float(latency))
        self.last_row = time.monotonic()

    def recount(self, was_ok: bool, now_ok: bool) -> None:
        """A row counted as `was_ok` was stored as `now_ok` (the writer replaced a row it could not store)."""
        self.ok += int(now_ok) - int(was_ok)
        self.failed += int(was_ok) - int(now_ok)

    def elapsed(self) -> float:
        if self.first_dispatch is None:
            return 0.0
        end = self.last_row if self.done and self.last_row else time.monotonic()
        return max(end - self.first_dispatch, 1e-9)

    @property
    def done(self) -> bool:
        return not self.feeding and self.rows >= self.planned

    def as_dict(self, t0: float) -> dict[str, Any]:
        wall = self.elapsed()
        lat = np.array(self.latencies) if self.latencies else None
        return {
            "requests": self.requests,
            "planned": self.planned,
            "rows": self.rows,
            "ok": self.ok,
            "failed": self.failed,
            "retried_calls": self.retried_calls,
            "parts_written": self.parts_written,
            "merges": self.merges,
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "completion_tokens": self.completion_tokens,
            "tokens_per_s": round(self.completion_tokens / wall, 2) if wall > 1e-6 else None,
            "rows_per_s": round(self.rows / wall, 3) if wall > 1e-6 else None,
            "latency_s": None
            if lat is None
            else {
                "p50": round(float(np.percentile(lat, 50)), 4),
                "p95": round(float(np.percentile(lat, 95)), 4),
                "max": round(float(lat.max()), 4),
            },
            "wall_s": round(wall, 3) if self.first_dispatch is not None else 0.0,
            "started_at": None if self.first_dispatch is None else round(self.first_dispatch - t0, 3),
            "ended_at": None if self.last_row is None else round(self.last_row - t0, 3),
        }


class LiveMetrics:
    """Where the executor reports each stored row and the requests in flight as they happen. This one drops
    them (the in-process executor); the Ray backend's records them in Ray's metrics (ray.RayLiveMetrics)."""

    def row(self, stage: str, pool: str, ok: bool, requests: int, prompt_tokens: int, completion_tokens: int) -> None:
        pass

    def in_flight(self, stage: str, pool: str, requests: int) -> None:
        pass


def overlap_s(stages: list[dict[str, Any]]) -> float:
    """Seconds during which at least two stages were running (from their started_at / ended_at)."""
    spans = sorted(
        (s["started_at"], s["ended_at"])
        for s in stages
        if s.get("started_at") is not None and s.get("ended_at") is not None
    )
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    total, active, last = 0.0, 0, None
    for at, step in events:
        if active >= 2 and last is not None:
            total += at - last
        active += step
        last = at
    return round(total, 3)
