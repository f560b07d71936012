"""What a run directory has cost: every invocation's requests, tokens, dollars and time, added up.

    this = invocation(metrics)              # one invocation's share, from its metrics.json numbers
    totals = add(base_totals(metrics_before, manifest_before), this)
    metrics["totals"] = totals              # metrics.json and manifest.json keep both

The rows are the ledger's lines: every stored sample and judgment keeps the billed tokens of its request
(prompt_tokens, cached_tokens, completion_tokens, attempts), and a row is paid once (a rerun asks only for
missing keys). The totals are their running sum, kept beside the rows: each invocation adds its share to the
totals it found (metrics.json's, written on every way an invocation ends: done, stopped by a signal or the
budget, a fatal engine error; and every few seconds while requests run, factory/executor/core.py
METRICS_CHECKPOINT_S; else the manifest's), so a rerun with nothing to do adds zero and removes nothing. An
invocation killed outright (SIGKILL, a lost driver) keeps its rows (never paid again) and the share its last
checkpoint wrote: what it was paid for in the seconds after that is missing from the totals.

A ledger (both `totals` and `this_run`):
    requests, prompt_tokens, cached_tokens, completion_tokens, usd     summed over the stages
    wall_s       seconds of the invocations that sent requests (an invocation with nothing to do adds 0)
    stages       per stage: requests, rows, ok, failed, prompt_tokens, cached_tokens, completion_tokens,
                 usd, wall_s (first dispatch -> last row stored, summed), tokens_per_s (completion tokens /
                 wall_s: what `factory plan` reads as the observed throughput)
    pools        per pool: starts, start_s (engine loads)
"""

from __future__ import annotations

from typing import Any

COUNTS = ("requests", "rows", "ok", "failed", "prompt_tokens", "cached_tokens", "completion_tokens")
SUMS = ("requests", "prompt_tokens", "cached_tokens", "completion_tokens")


def empty() -> dict[str, Any]:
    return {**{k: 0 for k in SUMS}, "usd": 0.0, "wall_s": 0.0, "stages": {}, "pools": {}}


def invocation(metrics: dict[str, Any]) -> dict[str, Any]:
    """One invocation's ledger from its metrics.json dict (stages, pools, wall_s, spend)."""
    spend = (metrics.get("spend") or {}).get("stages") or {}
    stages = {}
    for name, m in (metrics.get("stages") or {}).items():
        stage = {k: int(m.get(k) or 0) for k in COUNTS}
        stage["usd"] = float((spend.get(name) or {}).get("usd") or 0.0)
        stage["wall_s"] = float(m.get("wall_s") or 0.0) if stage["requests"] or stage["rows"] else 0.0
        stages[name] = stage
    pools = {
        name: {"starts": int(p.get("starts") or 0), "start_s": float(p.get("start_s") or 0.0)}
        for name, p in (metrics.get("pools") or {}).items()
    }
    requested = any(s["requests"] or s["rows"] for s in stages.values())
    out = _summed(
        {"stages": stages, "pools": pools, "wall_s": float(metrics.get("wall_s") or 0.0) if requested else 0.0}
    )
    return out


def add(base: dict[str, Any] | None, more: dict[str, Any]) -> dict[str, Any]:
    """The ledger of both (per stage and per pool, by name)."""
    base = base or empty()
    stages: dict[str, dict[str, Any]] = {}
    for source in (base.get("stages") or {}, more.get("stages") or {}):
        for name, s in source.items():
            into = stages.setdefault(name, {**{k: 0 for k in COUNTS}, "usd": 0.0, "wall_s": 0.0})
            for key in COUNTS:
                into[key] += int(s.get(key) or 0)
            into["usd"] += float(s.get("usd") or 0.0)
            into["wall_s"] += float(s.get("wall_s") or 0.0)
    pools: dict[str, dict[str, Any]] = {}
    for source in (base.get("pools") or {}, more.get("pools") or {}):
        for name, p in source.items():
            into = pools.setdefault(name, {"starts": 0, "start_s": 0.0})
            into["starts"] += int(p.get("starts") or 0)
            into["start_s"] += float(p.get("start_s") or 0.0)
    return _summed(
        {
            "stages": stages,
            "pools": pools,
            "wall_s": float(base.get("wall_s") or 0.0) + float(more.get("wall_s") or 0.0),
        }
    )


def _summed(ledger: dict[str, Any]) -> dict[str, Any]:
    """Rounded, with the sums over the stages and each stage's throughput."""
    stages = ledger["stages"]
    for s in stages.values():
        s["usd"] = round(s["usd"], 6)
        s["wall_s"] = round(s["wall_s"], 3)
        s["tokens_per_s"] = round(s["completion_tokens"] / s["wall_s"], 2) if s["wall_s"] > 1e-6 else None
    for p in ledger["pools"].values():
        p["start_s"] = round(p["start_s"], 3)
    return {
        **{k: sum(s[k] for s in stages.values()) for k in SUMS},
        "usd": round(sum(s["usd"] for s in stages.values()), 6),
        "wall_s": round(ledger["wall_s"], 3),
        "stages": stages,
        "pools": ledger["pools"],
    }


def base_totals(metrics: dict[str, Any] | None, manifest: dict[str, Any] | None) -> dict[str, Any]:
    """The totals an invocation starts from: metrics.json's (written however an invocation ends), else the
    manifest's, else none (a new directory, or one written before totals were kept)."""
    for source in (metrics, manifest):
        totals = (source or {}).get("totals")
        if isinstance(totals, dict) and isinstance(totals.get("stages"), dict):
            return totals
    return empty()


def requests_by_key(ledger: dict[str, Any], keys: list[str]) -> dict[str, int]:
    """The ledger's requests under the manifest's `requests` keys (`sampler` is the sample stage)."""
    stages = ledger.get("stages") or {}
    return {key: int((stages.get("sample" if key == "sampler" else key) or {}).get("requests") or 0) for key in keys}
