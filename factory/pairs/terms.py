"""Score terms: S = sum over terms of weight x normalized term value.

The terms of a build are `length` (pairs.w_len), `quality` (pairs.w_quality: the mean of the
normalized scores of `pairs.judges`), then every `pairs.terms` entry in order. A term reads a raw
value per sample from a source, normalizes it over the valid samples, and turns it so that higher
is better:

    source            raw value                                      default norm    direction
    length            completion_tokens                              group           lower
    quality[_<j>]     a judge's quality column (0..1)                scale (1)       higher
    dim_<name>        a rubric dimension, on the judge's scale      scale (scale_max) higher
    reward_<name>     a reward model's raw score (unbounded)         group_minmax    higher
    repetition        repeated n-gram ratio of answer or reasoning   none            lower
    answer_chars      answer length in characters                    group           lower
    format            1 when the answer breaks the regex rule        none            lower
    think             1 when the <think> block breaks the rule       none            lower

    norm           unit value u                           when the denominator is 0
    group/global   x / max (per prompt / over the run)    term 0
    *_minmax       (x - min) / (max - min)                term 0
    fixed          (x - lo) / (hi - lo)                   (hi > lo is checked)
    scale          x / the source's scale
    none           x
    term = u (higher is better) or 1 - u (lower is better)

So length is the paper's 1 - L / L_max and quality its Q / Q_max. A term whose `exclude_above` or
`exclude_below` is set is also a filter on the raw value: the sample is excluded under the term's
name. A new source is one entry in SOURCES.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
import polars as pl

from factory.config import ConfigError
from factory.pairs import rules
from factory.pairs.segments import per_group

if TYPE_CHECKING:
    from factory.config import PairsConfig, TermConfig

NORMS = ("group", "global", "group_minmax", "global_minmax", "fixed", "scale", "none")
DIRECTIONS = ("higher", "lower")
# Sample exclusions checked before any term, in this order (the first that applies is counted).
BASE_REASONS = ("engine_error", "truncated", "empty_answer", "no_token_count", "no_judgment")
DUPLICATE = "duplicate"
JUDGE_COLUMN = r"quality(_\w+)?|reward_\w+"
# Scored columns that look like a judge's but are not one: the spread of the primary judge's votes.
NOT_JUDGES = ("quality_spread",)


@dataclass(frozen=True)
class Source:
    """What a term measures. `value(entry, name)` is the raw value's polars expression over the
    scored columns; `reads` the columns it needs; `scale(scale_max)` the divisor of norm `scale`
    (None: that norm is not allowed); `missing` the exclusion reason of a sample without a value."""

    pattern: str
    direction: str
    norm: str
    value: Callable[[TermConfig | None, str], pl.Expr]
    reads: Callable[[TermConfig | None, str], tuple[str, ...]]
    scale: Callable[[float], float] | None = None
    missing: str | None = None


def _column(entry: TermConfig | None, name: str) -> pl.Expr:
    return pl.col(name).cast(pl.Float64)


def _own(entry: TermConfig | None, name: str) -> tuple[str, ...]:
    return (name,)


SOURCES: dict[str, Source] = {
    "length": Source(
        "length", "lower", "group", lambda e, n: pl.col("completion_tokens").cast(pl.Float64),
        lambda e, n: ("completion_tokens",),
    ),
    "quality": Source(r"quality(_\w+)?", "higher", "scale", _column, _own, lambda s: 1.0, "no_judgment"),
    "dim": Source(r"dim_\w+", "higher", "scale", _column, _own, lambda s: s, "no_judgment"),
    "reward": Source(r"reward_\w+", "higher", "group_minmax", _column, _own, None, "no_judgment"),
    "repetition": Source(
        "repetition", "lower", "none", lambda e, n: rules.repetition(e.field, e.n, e.unit),  # type: ignore[union-attr]
        lambda e, n: (e.field,), lambda s: 1.0,  # type: ignore[union-attr]
    ),
    "answer_chars": Source("answer_chars", "lower", "group", lambda e, n: rules.answer_chars(), lambda e, n: ("answer",)),
    "format": Source(
        "format", "lower", "none", lambda e, n: rules.format_violation(e.pattern, e.require),  # type: ignore[union-attr]
        lambda e, n: ("answer",), lambda s: 1.0,
    ),
    "think": Source(
        "think", "lower", "none", lambda e, n: rules.think_violation(e.require),  # type: ignore[union-attr]
        lambda e, n: ("reasoning",), lambda s: 1.0,
    ),
}  # fmt: skip


def source_of(name: str) -> Source | None:
    return next((s for s in SOURCES.values() if re.fullmatch(s.pattern, name)), None)


# A score column no source names (a verifier's, say), read as it is: higher is better, no normalization.
ANY_COLUMN = Source(r"\w+", "higher", "none", _column, _own, lambda s: 1.0, "no_judgment")
NOT_CORRECT = "not_correct"  # shortest_correct's exclusion reason (pairs.correct_min)
RANKED = "ranked"  # the reward strategy's one term (pairs.reward_column)


@dataclass(frozen=True, eq=False)
class Term:
    """A resolved term: `key` is the config key that defines it (named in every error)."""

    name: str
    key: str
    source: Source
    column: str  # the source name: length, quality_b, reward_rm, repetition, ...
    norm: str
    direction: str
    entry: TermConfig | None = None  # the pairs.terms entry (None for length, quality and judges)
    lo: float = 0.0
    hi: float | None = None
    exclude_above: float | None = None
    exclude_below: float | None = None

    @property
    def value(self) -> pl.Expr:
        return self.source.value(self.entry, self.column)

    @property
    def reads(self) -> tuple[str, ...]:
        return self.source.reads(self.entry, self.column)

    @property
    def is_filter(self) -> bool:
        return self.exclude_above is not None or self.exclude_below is not None


def default_name(entry: TermConfig) -> str:
    return entry.name or (f"repetition_{entry.field}" if entry.source == "repetition" else entry.source)


def judge_term(column: str, cfg: PairsConfig) -> Term:
    source = source_of(column)
    assert source is not None  # checked by check_config
    norm = cfg.quality_norm if column == "quality" else source.norm
    return Term(column, "pairs.judges", source, column, norm, "higher")


def resolve(cfg: PairsConfig) -> tuple[list[Term], list[Term]]:
    """(terms of S, judges). The terms are length, quality, then pairs.terms in order; the quality
    term's value is the mean of the judges' normalized values."""
    length_norm = {"group": "group", "global": "global", "fixed": "fixed"}[cfg.length_norm]
    terms = [
        Term("length", "pairs.w_len", SOURCES["length"], "length", length_norm, "lower", hi=cfg.length_max),
        Term("quality", "pairs.w_quality", SOURCES["quality"], "quality", "judges", "higher"),
    ]
    for i, entry in enumerate(cfg.terms):
        source = source_of(entry.source)
        assert source is not None
        terms.append(
            Term(
                default_name(entry), f"pairs.terms[{i}]", source, entry.source, entry.norm or source.norm,
                entry.direction or source.direction, entry, entry.lo, entry.hi, entry.exclude_above, entry.exclude_below,
            )
        )  # fmt: skip
    strategy_term = _strategy_term(cfg)
    if strategy_term is not None:
        terms.append(strategy_term)
    return terms, [judge_term(column, cfg) for column in cfg.judges]


def _strategy_term(cfg: PairsConfig) -> Term | None:
    """The term a strategy adds after pairs.terms: shortest_correct's gate (a filter, weight 0: a sample
    whose correct_column is below correct_min is excluded as not_correct), reward's ranked column (the
    only weighted term). Other strategies add none, so their terms are as before."""
    if cfg.strategy == "shortest_correct":
        column, key, name = cfg.correct_column, "pairs.correct_column", NOT_CORRECT
    elif cfg.strategy == "reward":
        column, key, name = cfg.reward_column or cfg.judges[0], "pairs.reward_column", RANKED
    else:
        return None
    source = source_of(column) or ANY_COLUMN
    below = cfg.correct_min if name == NOT_CORRECT else None
    return Term(name, key, source, column, source.norm, "higher", exclude_below=below)


def weights(cfg: PairsConfig) -> np.ndarray:
    """The weight of each term of `resolve(cfg)`, in order. The strategies fix the two shorthand
    weights (quality: 0 / 1; long2short: length alone, every other weight 0)."""
    extra = [entry.weight for entry in cfg.terms]
    if cfg.strategy == "long2short":
        return np.array([1.0, 0.0] + [0.0] * len(extra))
    if cfg.strategy == "shortest_correct":  # length alone, among the samples the gate lets through
        return np.array([1.0, 0.0] + [0.0] * len(extra) + [0.0])
    if cfg.strategy == "reward":  # the ranked column alone
        return np.array([0.0, 0.0] + [0.0] * len(extra) + [1.0])
    if cfg.strategy == "quality":
        return np.array([0.0, 1.0] + extra)
    return np.array([cfg.w_len, cfg.quality_weight] + extra)


def normalize(raw: np.ndarray, term: Term, starts: np.ndarray, counts: np.ndarray, scale_max: float) -> np.ndarray:
    """Raw values of the valid samples (groups contiguous) -> the term, higher is better."""
    if term.norm in ("group", "global", "group_minmax", "global_minmax"):
        whole = term.norm.startswith("global")
        top = np.full_like(raw, raw.max()) if whole and len(raw) else per_group(raw, np.maximum, starts, counts)
        if term.norm.endswith("minmax"):
            low = np.full_like(raw, raw.min()) if whole and len(raw) else per_group(raw, np.minimum, starts, counts)
            shifted, denominator = raw - low, top - low
        else:
            shifted, denominator = raw, top
        unit = np.divide(shifted, denominator, out=np.zeros_like(raw), where=denominator > 0)
        usable = denominator > 0
    else:
        if term.norm == "fixed":
            unit = (raw - term.lo) / (term.hi - term.lo)  # type: ignore[operator]
        elif term.norm == "scale":
            unit = raw / term.source.scale(scale_max)  # type: ignore[misc]
        else:
            unit = raw
        usable = np.ones(len(raw), dtype=bool)
    value = unit if term.direction == "higher" else 1.0 - unit
    # A zero denominator (every sample of the group alike) gives a zero term, whatever the direction.
    return np.where(usable, value, 0.0)


# -- checks --------------------------------------------------------------------------------------
def check_config(cfg: PairsConfig) -> None:
    """Raise ConfigError naming the key of the first bad pairs.terms entry or pairs.judges value."""
    if not cfg.judges:
        raise ConfigError("pairs.judges: needs at least one judge column (quality is the primary judge)")
    for column in cfg.judges:
        if not re.fullmatch(JUDGE_COLUMN, column) or column in NOT_JUDGES:
            raise ConfigError(
                f"pairs.judges: {column!r} is not a judge column (quality, quality_<judge>, reward_<name>)"
            )
    if len(set(cfg.judges)) != len(cfg.judges):
        raise ConfigError(f"pairs.judges: {cfg.judges} names a judge twice")
    taken = {"length": "pairs.w_len", "quality": "pairs.w_quality", DUPLICATE: "pairs.dedupe"}
    taken |= {reason: "a built-in exclusion reason" for reason in BASE_REASONS}
    if cfg.strategy in ("shortest_correct", "reward"):
        column = cfg.correct_column if cfg.strategy == "shortest_correct" else cfg.reward_column or cfg.judges[0]
        key = "pairs.correct_column" if cfg.strategy == "shortest_correct" else "pairs.reward_column"
        if not re.fullmatch(r"\w+", column) or column in NOT_JUDGES:
            raise ConfigError(f"{key}: {column!r} is not a score column (quality, quality_<judge>, reward_<name>, ...)")
        taken[NOT_CORRECT if cfg.strategy == "shortest_correct" else RANKED] = f"pairs.strategy {cfg.strategy}"
    for i, entry in enumerate(cfg.terms):
        key = f"pairs.terms[{i}]"
        _check_entry(entry, key)
        name = default_name(entry)
        if name in taken:
            raise ConfigError(f"{key}.name: {name!r} is already used by {taken[name]}; give this term a name")
        taken[name] = key


def _check_entry(entry: TermConfig, key: str) -> None:
    source = source_of(entry.source)
    if source is None:
        valid = "length, quality, quality_<judge>, dim_<name>, reward_<name>, repetition, answer_chars, format, think"
        raise ConfigError(f"{key}.source: {entry.source!r} is not a term source ({valid})")
    norm = entry.norm or source.norm
    if norm not in NORMS:
        raise ConfigError(f"{key}.norm: {entry.norm!r} is not one of {', '.join(NORMS)}")
    if norm == "scale" and source.scale is None:
        raise ConfigError(f"{key}.norm: {entry.source} has no fixed scale; use group_minmax, global_minmax or fixed")
    if entry.direction and entry.direction not in DIRECTIONS:
        raise ConfigError(f"{key}.direction: {entry.direction!r} is not one of higher, lower")
    if norm == "fixed" and (entry.hi is None or not entry.hi > entry.lo):
        raise ConfigError(f"{key}.hi: norm fixed needs hi > lo, got lo={entry.lo}, hi={entry.hi}")
    for name in ("weight", "lo", "exclude_above", "exclude_below"):
        value = getattr(entry, name)
        if value is not None and not math.isfinite(value):
            raise ConfigError(f"{key}.{name}: must be a finite number, got {value}")
    if entry.source == "repetition":
        if entry.field not in ("answer", "reasoning"):
            raise ConfigError(f"{key}.field: {entry.field!r} is not one of answer, reasoning")
        if entry.unit not in ("word", "char"):
            raise ConfigError(f"{key}.unit: {entry.unit!r} is not one of word, char")
        if entry.n < 1:
            raise ConfigError(f"{key}.n: must be >= 1, got {entry.n}")
    if entry.source == "format":
        if not entry.pattern:
            raise ConfigError(f"{key}.pattern: required for a format term")
        try:
            pl.Series([""]).str.contains(entry.pattern)
        except pl.exceptions.PolarsError as exc:
            raise ConfigError(f"{key}.pattern: not a valid regex: {str(exc).splitlines()[0]}") from None


def required_columns(terms: list[Term], judges: list[Term]) -> dict[str, str]:
    """Column -> the config key that needs it (every configured term and judge). The run layer may
    check this at preflight; the kernel checks it before any work."""
    needed: dict[str, str] = {}
    for term in terms:
        if term.name != "quality":  # the quality term reads the judges
            for column in term.reads:
                needed.setdefault(column, term.key)
    for judge in judges:
        needed.setdefault(judge.column, "pairs.judges")
    return needed
