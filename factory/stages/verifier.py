"""Verifier: a judge that makes no request. A rule scores each sample against its prompt's own columns;
the verdict (0..1) is the scored column verify_<name>, like any judge's (a pairs term, a filter, a
member of pairs.judges, a row of the report's judge table).

Input columns:  samples -> prompt_id, sample_idx, answer, reasoning, error
                prompts -> prompt_id and the columns the rule reads (verifiers.<name>.column)
Output columns: prompt_id, sample_idx, verify_<name> (Float64; null: no verdict)

    rule        verdict 1.0 when                                                 null when
    reference   the answer equals the prompt's reference (match exact /          the prompt has no reference
                normalized: lower-cased, whitespace collapsed / contains)
    regex       the answer matches `pattern` (require) / does not (not require)  -
    answerable  it answers (no referral pattern) an answerable prompt or refers  the prompt has no label
                an unanswerable one (factory/referral.py: eval's rule)
    function    module:function(sample, prompt) says so (a float 0..1 or a bool) it returns None

    rows in:   prompt_id=p1 sample_idx=0 answer="Please contact customer service."   prompts: p1 answerable=false
    row out:   prompt_id=p1 sample_idx=0 verify_ans=1.0

It is cheap and deterministic, so it is computed whenever the scored samples are read (graph.scored):
nothing stored, nothing to resume; a sample with an engine error gets no verdict.
"""

from __future__ import annotations

import importlib
import math
from typing import Any, Callable

import polars as pl

from factory.config import ConfigError, VerifierConfig
from factory import referral
from factory.pairs.rules import normalized
from factory.rundir.hashing import stable_hash

KEYS = ["prompt_id", "sample_idx"]


def verifier_fingerprint(cfg: VerifierConfig) -> str:
    """The rule and everything it reads (the manifest's record of what made the column)."""
    return stable_hash({"kind": "verifier", **{k: v for k, v in vars(cfg).items()}})


def load_function(path: str, key: str) -> Callable[[dict, dict], Any]:
    """'module:function' -> the callable, or a ConfigError naming `key`."""
    module_name, _, name = path.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in name.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{key}: cannot load {path!r}: {exc}") from None
    if not callable(target):
        raise ConfigError(f"{key}: {path!r} is not callable")
    return target


def check(cfg: VerifierConfig, key: str, prompts: pl.DataFrame | None = None) -> None:
    """Preflight: the callable loads; the prompts (when given) have the column the rule reads."""
    if cfg.rule == "function":
        load_function(cfg.function, f"{key}.function")
    if prompts is not None and cfg.rule in ("reference", "answerable") and cfg.column not in prompts.columns:
        raise ConfigError(f"{key}.column: the prompts have no column {cfg.column!r} (they have {prompts.columns})")


def verdicts(samples: pl.DataFrame, prompts: pl.DataFrame, cfg: VerifierConfig, column: str, key: str) -> pl.DataFrame:
    """Samples + prompts -> prompt_id, sample_idx, `column` (see the module doc). A prompt column the
    rule needs and the prompts lack gives no verdict (null) rather than an error: the pair build then
    counts those samples under no_judgment, by name (`factory run` and `factory plan` refuse such a config
    before any request: RunGraph.check_reads)."""
    ok = pl.col("error").is_null() if "error" in samples.columns else pl.lit(True)
    text = pl.col(cfg.field)
    frame = samples.select(*KEYS, cfg.field, ok.alias("_ok"))
    if cfg.rule == "function":
        return _by_function(samples, prompts, cfg, column, key)
    if cfg.rule == "regex":
        hit = text.fill_null("").str.contains(cfg.pattern)
        verdict = hit if cfg.require else ~hit
        return _out(frame, verdict, column)
    if cfg.column not in prompts.columns:
        return _out(frame, pl.lit(None, pl.Boolean), column)
    if cfg.rule == "answerable":
        labels = prompts.select("prompt_id", referral.answerable_flags(prompts[cfg.column]).alias("_label"))
        frame = frame.join(labels, on="prompt_id", how="left")
        return _out(
            frame, referral.agrees(pl.col("_label"), referral.refers(text, list(cfg.referral_patterns))), column
        )
    reference = prompts.select("prompt_id", pl.col(cfg.column).cast(pl.String).alias("_reference"))
    frame = frame.join(reference, on="prompt_id", how="left")
    ref = pl.col("_reference")
    if cfg.match == "exact":
        same = text.fill_null("") == ref
    elif cfg.match == "normalized":
        same = normalized(text) == normalized(ref)
    else:
        same = normalized(text).str.contains(normalized(ref), literal=True)
    return _out(frame, pl.when(ref.is_not_null()).then(same), column)


def _out(frame: pl.DataFrame, verdict: pl.Expr, column: str) -> pl.DataFrame:
    return frame.select(*KEYS, pl.when(pl.col("_ok")).then(verdict.cast(pl.Float64)).alias(column))


def _by_function(
    samples: pl.DataFrame, prompts: pl.DataFrame, cfg: VerifierConfig, column: str, key: str
) -> pl.DataFrame:
    fn = load_function(cfg.function, f"{key}.function")
    by_id = {row["prompt_id"]: row for row in prompts.iter_rows(named=True)}
    values: list[float | None] = []
    for row in samples.select(*KEYS, "answer", "reasoning", "error").iter_rows(named=True):
        if row["error"] is not None:
            values.append(None)
            continue
        try:
            value = fn({k: row[k] for k in (*KEYS, "answer", "reasoning")}, by_id.get(row["prompt_id"], {}))
        except Exception as exc:  # a user's rule: name it and the sample
            raise ValueError(
                f"{key}.function: {cfg.function} raised {exc!r} on {row['prompt_id']}/{row['sample_idx']}"
            ) from exc
        if value is not None:
            value = float(value)
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ValueError(
                    f"{key}.function: {cfg.function} returned {value} (not in 0..1) on "
                    f"{row['prompt_id']}/{row['sample_idx']}"
                )
        values.append(value)
    return samples.select(*KEYS).with_columns(pl.Series(column, values, dtype=pl.Float64))
