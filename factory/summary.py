"""The short table a run ends with."""

from __future__ import annotations

from typing import Any

import polars as pl


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(rows: list[tuple[str, str]], title: str = "") -> str:
    width = max(len(k) for k, _ in rows)
    value_width = max(len(v) for _, v in rows)
    line = "+" + "-" * (width + 2) + "+" + "-" * (value_width + 2) + "+"
    out = [title] if title else []
    out.append(line)
    out += [f"| {k.ljust(width)} | {v.rjust(value_width)} |" for k, v in rows]
    out.append(line)
    return "\n".join(out)


def run_summary(manifest: dict[str, Any], scored: pl.DataFrame) -> str:
    counts, pairs, timings = manifest["counts"], manifest["pairs"], manifest["timings"]
    ok = scored.filter(pl.col("error").is_null()) if scored.height else scored
    tokens = ok["completion_tokens"] if ok.height else pl.Series([], dtype=pl.Int64)
    score = ok["score"].drop_nulls() if ok.height and "score" in ok.columns else pl.Series([], dtype=pl.Float64)
    rows = [
        ("prompts in / invalid", f"{counts['prompts_in']} / {counts['prompts_invalid']}"),
        ("samples ok / failed", f"{counts['samples_ok']} / {counts['samples_failed']}"),
        ("completion tokens mean / max", f"{_fmt(tokens.mean())} / {_fmt(tokens.max())}"),
        ("judgments ok / failed", f"{counts['judgments_ok']} / {counts['judgments_failed']}"),
        *((f"{name} ok / failed", f"{j['ok']} / {j['failed']}") for name, j in manifest.get("judges", {}).items() if name != "judge"),
        ("mean judge score", _fmt(score.mean())),
        ("pairs kept / dropped", f"{counts['pairs_kept']} / {counts['pairs_dropped']}"),
        ("margin threshold (delta)", _fmt(pairs.get("delta"), 3)),
        ("mean token gap (rej - cho)", _fmt(pairs.get("mean_token_gap"))),
        ("mean quality gap (cho - rej)", _fmt(pairs.get("mean_quality_gap"), 3)),
        # sampler / judge, then each more judge of the run (judge_<name>, reward_<name>)
        ("requests " + " / ".join(manifest["requests"]), " / ".join(str(n) for n in manifest["requests"].values())),
        ("time prompts / sample / judge / pairs", " / ".join(f"{timings.get(k, 0):.1f}s" for k in ("prompts", "sample", "judge", "pairs"))),
        ("time total", f"{timings['total']:.1f}s"),
        ("output", manifest["output_dir"]),
    ]
    return table(rows, "factory run summary")
