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
    verify_<name>     a verifier's verdict (0..1, factory/stages/verifier.py) scale (1)  higher
    repetition        repeated n-gram ratio of answer or reasoning   none            lower
    answer_chars      answer length in characters                    group           lower
    format            1 when the answer breaks the regex rule        none            lower
    think             1 when the <think> block breaks the rule       none            lower
    tag_<tag>         1 when the judge's tags hold <tag>, else 0     none            higher
    copies_prompt     share of the answer's n-grams in the prompt   none            lower
                      (1: the whole answer occurs in it)
    repeats_history   share of the answer's n-grams in the history's none            lower
                      host (assistant) turns (1: a whole repeat)
    flag_contradiction 1 when the teacher's can-answer flag          none            lower
                      contradicts its own reply (factory/referral.py: it refers yet says it can answer, or
                      answers yet says it cannot); 0 without a flag

    norm           unit value u                           when the denominator is 0
    group/global   x / max (per prompt / over the run)    term 0
    *_minmax       (x - min) / (max - min)                term 0
    fixed          (x - lo) / (hi - lo)                   (hi > lo is checked)
    scale          x / the source's scale
    none           x
    term = u (higher is better) or 1 - u (lower is better)

So length is the paper's 1 - L / L_max and quality its Q / Q_max. A term whose `exclude_above` or
`exclude_below` is set is also a filter on the raw value: the sample is excluded under the term's
name (a tag filter: exclude_below 1 requires the tag, exclude_above 0 forbids it; it reads the judge's
reply, so it applies after judging like the other judge-based filters). A new source is one entry in
TERM_SOURCES (factory/config/pairs.py) and its measure here; a judge kind's sources are its entry's
(factory/config/kinds.py), read as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
import polars as pl

from factory.config.pairs import (  # noqa: F401 (re-exported: the kernel's vocabulary)
    BASE_REASONS,
    DUPLICATE,
    MISSING_DIMENSION,
    NO_JUDGMENT,
    NOT_CORRECT,
    NOT_JUDGES,
    RANKED,
    TERM_SOURCES,
    SourceSpec,
    default_name,
    source_name,
)
from factory.config.strategies import strategy_of
from factory import referral
from factory.pairs import rules
from factory.pairs.segments import per_group

if TYPE_CHECKING:
    from factory.config import PairsConfig, TermConfig


@dataclass(frozen=True)
class Source:
    """What a term measures: `spec` its name pattern and defaults (factory/config/pairs.py),
    `value(entry, name)` the raw value's polars expression over the scored columns, `reads` the
    columns it needs."""

    spec: SourceSpec
    value: Callable[[TermConfig | None, str], pl.Expr]
    reads: Callable[[TermConfig | None, str], tuple[str, ...]]

    @property
    def direction(self) -> str:
        return self.spec.direction

    @property
    def norm(self) -> str:
        return self.spec.norm

    @property
    def missing(self) -> str | None:
        return self.spec.missing

    def scale(self, scale_max: float) -> float:
        """The divisor of norm `scale` (the config check allows that norm only where spec.scale is set)."""
        return scale_max if self.spec.scale == "judge" else 1.0


def _column(entry: TermConfig | None, name: str) -> pl.Expr:
    return pl.col(name).cast(pl.Float64)


def _own(entry: TermConfig | None, name: str) -> tuple[str, ...]:
    return (name,)


def _overlap(source: str, entry: TermConfig | None) -> pl.Expr:
    assert entry is not None
    reference = rules.OVERLAP[source]
    return rules.overlap(reference, entry.n, entry.unit, rules.grams_column(reference, entry.n, entry.unit))


def _overlap_reads(source: str, entry: TermConfig | None) -> tuple[str, ...]:
    """The answer, the prompt-side text and its n-grams (both joined by factory.pairs.attach)."""
    assert entry is not None
    reference = rules.OVERLAP[source]
    return ("answer", reference, rules.grams_column(reference, entry.n, entry.unit))


def _contradiction(entry: TermConfig | None) -> pl.Expr:
    patterns = [entry.pattern] if entry is not None and entry.pattern else list(referral.REFERRAL_PATTERNS)
    return referral.contradicts(pl.col("can_answer"), referral.refers(pl.col("answer"), patterns)).cast(pl.Float64)


_MEASURES: dict[str, tuple] = {
    "length": (lambda e, n: pl.col("completion_tokens").cast(pl.Float64), lambda e, n: ("completion_tokens",)),
    "repetition": (lambda e, n: rules.repetition(e.field, e.n, e.unit), lambda e, n: (e.field,)),  # type: ignore[union-attr]
    "answer_chars": (lambda e, n: rules.answer_chars(), lambda e, n: ("answer",)),
    "format": (lambda e, n: rules.format_violation(e.pattern, e.require), lambda e, n: ("answer",)),  # type: ignore[union-attr]
    "think": (lambda e, n: rules.think_violation(e.require), lambda e, n: ("reasoning",)),  # type: ignore[union-attr]
    "tag": (lambda e, n: rules.has_tag(n.removeprefix("tag_")), lambda e, n: ("tags",)),
    "copies_prompt": (lambda e, n: _overlap(n, e), lambda e, n: _overlap_reads(n, e)),
    "repeats_history": (lambda e, n: _overlap(n, e), lambda e, n: _overlap_reads(n, e)),
    "flag_contradiction": (lambda e, n: _contradiction(e), lambda e, n: ("answer", "can_answer")),
}
# A judge kind's columns (factory/config/kinds.py) are read as they are.
SOURCES: dict[str, Source] = {
    name: Source(spec, *_MEASURES.get(name, (_column, _own))) for name, spec in TERM_SOURCES.items()
}


def source_of(column: str) -> Source | None:
    name = source_name(column)
    return SOURCES[name] if name is not None else None


# A score column no source names, read as it is: higher is better, no normalization.
ANY_COLUMN = Source(SourceSpec(r"\w+", "higher", "none", "one", "no_judgment"), _column, _own)


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
                default_name(entry),
                f"pairs.terms[{i}]",
                source,
                entry.source,
                entry.norm or source.norm,
                entry.direction or source.direction,
                entry,
                entry.lo,
                entry.hi,
                entry.exclude_above,
                entry.exclude_below,
            )
        )
    strategy_term = _strategy_term(cfg)
    if strategy_term is not None:
        terms.append(strategy_term)
    return terms, [judge_term(column, cfg) for column in cfg.judges]


def _strategy_term(cfg: PairsConfig) -> Term | None:
    """The term a strategy adds after pairs.terms (its table entry's own term, factory/config/strategies.py):
    shortest_correct's gate (a filter, weight 0: a sample whose correct_column is below correct_min is
    excluded as not_correct), reward's ranked column (the only weighted term). Other strategies add none,
    so their terms are as before."""
    own = strategy_of(cfg).own_term
    if own is None:
        return None
    column = own.column(cfg)
    source = source_of(column) or ANY_COLUMN
    return Term(own.name, own.key, source, column, source.norm, "higher", exclude_below=own.exclude_below(cfg))


def weights(cfg: PairsConfig) -> np.ndarray:
    """The weight of each term of `resolve(cfg)`, in order: the strategy's entry fixes them (quality: 0 / 1;
    long2short: length alone, every other weight 0; factory/config/strategies.py)."""
    return np.array(strategy_of(cfg).weights(cfg), dtype=float)


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
