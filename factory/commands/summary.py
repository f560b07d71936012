"""The short table a run ends with."""

from __future__ import annotations

from typing import Any

import polars as pl

from factory.commands.present import table  # noqa: F401 (commands import it from here too)


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)




def _reasons(counts: dict[str, int]) -> str:
    """'truncated 84, empty_answer 2' (largest first), or '-'."""
    items = sorted(((k, v) for k, v in (counts or {}).items() if v), key=lambda kv: -kv[1])
    return ", ".join(f"{k} {v}" for k, v in items) or "-"


def _setting(config: dict[str, Any], key: str) -> Any:
    """The value of dotted `key` in a stored config, or None."""
    node: Any = config
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _cut_judgments(manifest: dict[str, Any]) -> list[tuple[str, str]]:
    """A row per judge with judgments cut at its own max_tokens: how many, and the key to raise."""
    rows = []
    for name, judge in (manifest.get("judges") or {}).items():
        cut, key = judge.get("truncated"), judge.get("max_tokens_key")
        if cut and key:
            now = _setting(manifest.get("config") or {}, key)
            rows.append((
                f"{name} replies cut at max_tokens",
                f"{cut} of {judge['ok'] + judge['failed']} judgments (failed; their samples no_judgment): raise {key}"
                + (f" (now {now})" if now is not None else ""),
            ))  # fmt: skip
    return rows


def run_summary(manifest: dict[str, Any], scored: pl.DataFrame, title: str = "factory run summary") -> str:
    """The table a run (or a pair build) ends with: what came in, what it cost, why groups did or did
    not become pairs, and where it went. Scores and gaps are in points of the judge's scale."""
    counts, pairs, timings = manifest["counts"], manifest["pairs"], manifest["timings"]
    scale = float(((manifest.get("config") or {}).get("judge") or {}).get("scale_max") or 100.0)
    ok = scored.filter(pl.col("error").is_null()) if scored.height else scored
    tokens = ok["completion_tokens"] if ok.height else pl.Series([], dtype=pl.Int64)
    truncated = ok.filter(pl.col("finish_reason") == "length").height if ok.height else 0
    score = ok["score"].drop_nulls() if ok.height and "score" in ok.columns else pl.Series([], dtype=pl.Float64)
    gap = pairs.get("mean_quality_gap")
    groups = pairs.get("groups_by_outcome") or {}
    too_few = pairs.get("groups_too_few_by_reason") or {}
    not_paired = {k: v for k, v in groups.items() if k != "kept" and v}
    rows = [
        (
            "prompts in / valid / invalid",
            f"{counts['prompts_in']} / {counts.get('prompts_valid', '-')} / {counts['prompts_invalid']}"
            + (
                f" ({counts['prompts_changed']} with a new text, sampled again)"
                if counts.get("prompts_changed")
                else ""
            ),
        ),
        ("samples ok / failed", f"{counts['samples_ok']} / {counts['samples_failed']}"),
        ("completion tokens mean / max", f"{_fmt(tokens.mean())} / {_fmt(tokens.max())} ({truncated} hit max_tokens)"),
        ("judgments ok / failed", f"{counts['judgments_ok']} / {counts['judgments_failed']}"),
        *(
            (f"{name} ok / failed", f"{j['ok']} / {j['failed']}")
            for name, j in manifest.get("judges", {}).items()
            if name != "judge"
        ),
        *_cut_judgments(manifest),
        ("mean judge score", f"{_fmt(score.mean())} / {scale:g}" if score.len() else "-"),
        ("samples excluded, by reason", _reasons(pairs.get("samples_excluded") or {})),
        ("groups not paired, by reason", _reasons(not_paired)),
        ("  fewer than 2 valid, mostly", _reasons(too_few)),
        (
            "pairs kept / dropped below delta",
            f"{counts['pairs_kept']} / {counts['pairs_dropped']} pairs, from {pairs.get('groups', 0)} groups",
        ),
        ("margin threshold (delta)", _fmt(pairs.get("delta"), 3)),
        ("mean token gap (rejected - chosen)", _fmt(pairs.get("mean_token_gap"))),
        ("mean score gap (chosen - rejected)", f"{gap * scale:.1f} / {scale:g}" if gap is not None else "-"),
        # sampler / judge, then each more judge of the run (judge_<name>, reward_<name>)
        ("requests " + " / ".join(manifest["requests"]), " / ".join(str(n) for n in manifest["requests"].values())),
    ]
    totals = manifest.get("totals")
    if totals:  # what the run directory has cost over every invocation (a rerun with nothing to do adds 0)
        from factory.executor.budget import tokens_text, usd_text

        cached = f" ({tokens_text(totals['cached_tokens'])} cached)" if totals.get("cached_tokens") else ""
        rows.append((
            "run directory in all: requests, tokens in / out, USD",
            f"{totals['requests']}, {tokens_text(totals['prompt_tokens'])}{cached} / "
            f"{tokens_text(totals['completion_tokens'])}, {usd_text(totals['usd'])}",
        ))  # fmt: skip
    for name, pool in (manifest.get("pools") or {}).items():
        if not pool.get("starts"):
            continue  # no engine was started by this command (factory pairs, a rerun with nothing to do)
        start = f" ({pool['start_s']:.1f}s to load)" if pool.get("start_s") else ""
        rows.append((f"pool {name}", f"{pool['starts']} start(s){start}, {pool['restarts']} restart(s)"))
    rows += [
        (
            "time prompts / sample / judge / pairs",
            " / ".join(f"{timings.get(k, 0):.1f}s" for k in ("prompts", "sample", "judge", "pairs")),
        ),
        ("time overlapping / total", f"{timings.get('overlap', 0):.1f}s / {timings['total']:.1f}s"),
        ("output", manifest["output_dir"]),
    ]
    return table(rows, title)
