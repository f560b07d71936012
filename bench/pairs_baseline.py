"""The straightforward way to build pairs: rows into a dict of groups, a Python loop per group.

This is the baseline `bench_pairs.py` measures the factory.pairs kernel against (the shape of
distilabel's per-row DPO formatting, with its chosen == rejected bug fixed). It follows the same
rules as factory/pairs (validity, duplicates, score terms, tie-break, linear-interpolated delta) for
what the benchmark configures: pairing one, the length and quality terms, reward_<name> terms
(group min-max) and repetition terms (word n-grams of the answer or the reasoning).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Any

import polars as pl

from factory.config import PairsConfig

REASONS = ("engine_error", "truncated", "empty_answer", "no_token_count", "no_judgment")


def normalized(text: str | None) -> str:
    return " ".join((text or "").lower().split())


def repetition(text: str | None, n: int) -> float:
    tokens = normalized(text).split()
    grams = list(zip(*(tokens[i:] for i in range(n))))
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def exclusion(row: dict[str, Any]) -> str | None:
    """The reasons that need no judge (the kernel decides duplicates among the rows that pass these,
    before any judge is asked; the judge's own reason comes after: `unjudged`)."""
    if row["error"] is not None:
        return "engine_error"
    if row["finish_reason"] == "length":
        return "truncated"
    if not (row["answer"] or "").strip():
        return "empty_answer"
    if row["completion_tokens"] is None:
        return "no_token_count"
    return None


def unjudged(row: dict[str, Any], judge_columns: list[str]) -> bool:
    return any(row[c] is None or math.isnan(row[c]) for c in ["quality", *judge_columns])


def quantile(values: list[float], p: float) -> float:
    """Linear interpolation between the nearest order statistics (numpy's default)."""
    ordered = sorted(values)
    h = (len(ordered) - 1) * p
    lo, hi = math.floor(h), math.ceil(h)
    return ordered[lo] + (h - lo) * (ordered[hi] - ordered[lo])


def content(row: dict[str, Any], include_reasoning: bool) -> str:
    answer = row["answer"] or ""
    has_reasoning = bool((row["reasoning"] or "").strip())  # never an empty think block
    return f"<think>\n{row['reasoning']}\n</think>\n\n{answer}" if include_reasoning and has_reasoning else answer


def duplicate_key(row: dict[str, Any], cfg: PairsConfig) -> tuple[str, ...]:
    if cfg.dedupe == "content" and cfg.include_reasoning:
        return normalized(row["reasoning"]), normalized(row["answer"])
    return (normalized(row["answer"]),)


def extra_terms(rows: list[dict[str, Any]], cfg: PairsConfig) -> list[list[float]]:
    """Each extra term's value on each row of a group (higher is better)."""
    out = []
    for term in cfg.terms:
        if term.source.startswith("reward_"):
            raw = [r[term.source] for r in rows]
            low, high = min(raw), max(raw)
            out.append([(x - low) / (high - low) if high > low else 0.0 for x in raw])
        elif term.source == "repetition":
            out.append([1.0 - repetition(r[term.field], term.n) for r in rows])
        else:
            raise NotImplementedError(term.source)
    return out


def build_pairs(scored: pl.DataFrame, prompts: pl.DataFrame, cfg: PairsConfig) -> tuple[pl.DataFrame, dict[str, Any]]:
    """dp_dpo / quality pairs, conversational format, pairing one; returns (pairs, counts)."""
    w_len, w_q = (0.0, 1.0) if cfg.strategy == "quality" else (cfg.w_len, cfg.quality_weight)
    weights = [w_len, w_q] + [t.weight for t in cfg.terms]
    judge_columns = [t.source for t in cfg.terms if t.source.startswith("reward_")]
    messages = {row["prompt_id"]: row["messages"] for row in prompts.iter_rows(named=True)}
    groups: dict[str, list[dict]] = defaultdict(list)
    excluded: Counter[str] = Counter()
    for row in scored.iter_rows(named=True):
        reason = exclusion(row)
        group = groups[row["prompt_id"]]  # every group is counted, even one with nothing valid
        if reason is None:
            group.append(row)
        else:
            excluded[reason] += 1
    if cfg.dedupe != "off":
        for prompt_id, rows in groups.items():
            seen, kept = set(), []
            for row in sorted(rows, key=lambda r: r["sample_idx"]):
                key = duplicate_key(row, cfg)
                if key in seen:
                    excluded["duplicate"] += 1
                else:
                    seen.add(key)
                    kept.append(row)
            groups[prompt_id] = kept
    for prompt_id, rows in groups.items():
        judged = [row for row in rows if not unjudged(row, judge_columns)]
        excluded["no_judgment"] += len(rows) - len(judged)
        groups[prompt_id] = judged
    global_max = max((r["completion_tokens"] for rows in groups.values() for r in rows), default=0)
    candidates = []
    for prompt_id, rows in groups.items():
        if len(rows) < 2:
            continue
        if cfg.length_norm == "group":
            l_max = max(r["completion_tokens"] for r in rows)
        elif cfg.length_norm == "global":
            l_max = global_max
        else:
            l_max = cfg.length_max
        q_max = max(r["quality"] for r in rows)
        extras = extra_terms(rows, cfg)
        scored_rows = []
        for i, r in enumerate(rows):
            length_term = 1.0 - r["completion_tokens"] / l_max if l_max > 0 else 0.0
            if cfg.quality_norm == "group":
                q_term = r["quality"] / q_max if q_max > 0 else 0.0
            else:
                q_term = r["quality"]
            s = None
            for weight, value in zip(weights, [length_term, q_term] + [column[i] for column in extras]):
                if weight != 0:
                    s = weight * value if s is None else s + weight * value
            scored_rows.append((0.0 if s is None else s, r))
        order = sorted(
            scored_rows, key=lambda sr: (-sr[0], sr[1]["completion_tokens"], -sr[1]["quality"], sr[1]["sample_idx"])
        )
        (s_chosen, chosen), (s_rejected, rejected) = order[0], order[-1]
        candidates.append((prompt_id, s_chosen - s_rejected, s_chosen, s_rejected, chosen, rejected))
    if cfg.min_margin is not None:
        delta = cfg.min_margin
    else:
        delta = quantile([c[1] for c in candidates], cfg.drop_ratio) if candidates else None
    rows_out, tied, dropped = [], 0, 0
    for prompt_id, margin, s_chosen, s_rejected, chosen, rejected in candidates:
        if margin <= 0:
            tied += 1
            continue
        if delta is not None and margin < delta:
            dropped += 1
            continue
        rows_out.append(
            {
                "prompt": messages.get(prompt_id),
                "chosen": [{"role": "assistant", "content": content(chosen, cfg.include_reasoning)}],
                "rejected": [{"role": "assistant", "content": content(rejected, cfg.include_reasoning)}],
                "prompt_id": prompt_id,
                "chosen_idx": chosen["sample_idx"],
                "rejected_idx": rejected["sample_idx"],
                "chosen_tokens": chosen["completion_tokens"],
                "rejected_tokens": rejected["completion_tokens"],
                "chosen_quality": chosen["quality"],
                "rejected_quality": rejected["quality"],
                "chosen_score": s_chosen,
                "rejected_score": s_rejected,
                "margin": margin,
                "strategy": cfg.strategy,
            }
        )
    rows_out.sort(key=lambda r: r["prompt_id"])
    counts = {
        "groups": len(groups),
        "pairs_kept": len(rows_out),
        "pairs_dropped": dropped,
        "tied": tied,
        "delta": delta,
        "samples_excluded": {
            r: excluded[r] for r in (*REASONS, "duplicate") if r != "duplicate" or cfg.dedupe != "off"
        },
    }
    return pl.DataFrame(rows_out), counts
