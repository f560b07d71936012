"""pairs.* and sweep.*: how pairs are built and swept."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import List, Optional

import polars as pl

from factory.config.base import ConfigError, help_
from factory.config.kinds import (  # noqa: F401 (re-exported: the kernel's vocabulary)
    JUDGE_KINDS,
    MISSING_DIMENSION,
    NO_JUDGMENT,
    NOT_JUDGES,
    SourceSpec,
    is_judge_score,
    judge_column_names,
)
from factory.config.strategies import NOT_CORRECT, PAIR_STRATEGIES, RANKED, strategy_of  # noqa: F401 (re-exported)

PAIRINGS = ("one", "best_vs_each", "all_ranked")
DEDUPE_MODES = ("content", "answer", "off")
COMBINE_MODES = ("terms", "vote")


@dataclass
class TermConfig:
    """One entry of `pairs.terms`: a score term of S (weight), a filter (exclude_above/below), or both.
    The sources' vocabulary (TERM_SOURCES) and the entry's checks are below; factory/pairs/terms.py
    measures them."""

    source: str = help_(
        "What the term measures: length (completion tokens), quality or quality_<judge> (0..1), dim_<name> "
        "(rubric dimension, judge scale), reward_<name> (reward-model raw score), verify_<name> (a verifier's "
        "verdict, 0..1), repetition (repeated n-gram "
        "ratio of `field`), answer_chars (answer length in characters), format (1 when the answer breaks "
        "`pattern`), think (1 when the <think> block breaks `require`), tag_<tag> (1 when the judge's tags "
        "hold <tag>, else 0: exclude_below 1 requires the tag, exclude_above 0 forbids it; after judging), "
        "copies_prompt (share of the answer's n-grams found in the prompt's own text: 1 for an answer copied from "
        "it), repeats_history (share of the answer's n-grams found in the host's earlier turns of its dialogue "
        "history), flag_contradiction (1 when the teacher's can-answer flag, sampler.can_answer, contradicts its "
        "own reply: it says it can answer and the reply refers the viewer to customer service, or it says it "
        "cannot and the reply answers; 0 without a flag; exclude_above 0 excludes them before judging).",
        "",
    )
    name: str = help_("Label in stats, reports and exclusion counts; '' = source (repetition: repetition_<field>).", "")
    weight: float = help_("Weight of the normalized term in S (0 = filter only).", 0.0)
    norm: str = help_(
        "Normalization: group / global (x / max), group_minmax / global_minmax ((x - min) / (max - min)), "
        "fixed ((x - lo) / (hi - lo)), scale (x / the source's scale: 1 for quality and rules, judge.scale_max "
        "for dim_*), none; '' = the source's default.",
        "",
    )
    direction: str = help_("higher or lower is better; '' = the source's default (length and rules: lower).", "")
    lo: float = help_("norm fixed: the lower bound.", 0.0)
    hi: Optional[float] = help_("norm fixed: the upper bound (required).", None)
    field: str = help_("repetition: answer or reasoning.", "answer")
    n: int = help_("repetition, copies_prompt, repeats_history: n-gram size.", 3)
    unit: str = help_(
        "repetition, copies_prompt, repeats_history: word (whitespace tokens) or char (characters, whitespace dropped; "
        "for CJK).",
        "word",
    )
    pattern: str = help_(
        "format: the regex (Rust regex syntax) searched in the answer; flag_contradiction: the regex that marks a "
        "reply as referring the viewer on ('' = factory/referral.py's REFERRAL_PATTERNS, eval's default).",
        "",
    )
    require: bool = help_(
        "format: true = the answer must match `pattern`, false = must not; think: true = a non-empty "
        "reasoning is required, false = forbidden.",
        True,
    )
    exclude_above: Optional[float] = help_(
        "Filter: a sample whose raw value is above this is excluded, counted under the term's name "
        "(format/think values are 0 or 1, so 0 excludes every sample that breaks the rule).",
        None,
    )
    exclude_below: Optional[float] = help_("Filter: a sample whose raw value is below this is excluded.", None)


@dataclass
class BalanceConfig:
    """pairs.balance: pairs balanced across the values of a prompt column (seed 003: categories): a cap on
    the kept pairs of each value, or the share no value may exceed. Checked by PairsConfig."""

    column: str = help_("A prompts column (or scored column) whose values are balanced; '' = no balancing.", "")
    cap: Optional[int] = help_(
        "At most this many kept pairs per value (largest margins first); the rest: over_balance.", None
    )
    target_share: Optional[float] = help_(
        "Instead of cap: the largest per-value cap under which no value holds more than this share of the kept "
        "pairs (in (0, 1]); with too few values to reach it, nothing is dropped and the stats say so.",
        None,
    )
    floor: Optional[int] = help_(
        "Over-sampling (seed 003): a value with fewer kept pairs than this has them repeated, largest margins "
        "first in turn, up to it (each pair written at most 1 + max_repeats times); the repeats are rows of "
        "pairs/ with `repeat` >= 1, counted per value and as pairs_repeated.",
        None,
    )
    max_repeats: int = help_("With floor: the most repeats of one pair (the cap on over-sampling).", 3)


def check_balance(b: BalanceConfig) -> None:
    chosen = [k for k in ("cap", "target_share", "floor") if getattr(b, k) is not None]
    if not b.column and chosen:
        raise ConfigError(f"pairs.balance.column: required with pairs.balance.{chosen[0]}")
    if b.column and not chosen:
        raise ConfigError(
            "pairs.balance.cap: give pairs.balance.cap, pairs.balance.target_share or pairs.balance.floor"
        )
    if b.cap is not None and b.target_share is not None:
        raise ConfigError("pairs.balance.cap: give exactly one of pairs.balance.cap and pairs.balance.target_share")
    if b.cap is not None and b.cap < 1:
        raise ConfigError(f"pairs.balance.cap: must be >= 1, got {b.cap}")
    if b.floor is not None and (b.floor < 1 or (b.cap is not None and b.floor > b.cap)):
        raise ConfigError(f"pairs.balance.floor: must be >= 1 and at most pairs.balance.cap, got {b.floor}")
    if b.max_repeats < 1:
        raise ConfigError(f"pairs.balance.max_repeats: must be >= 1, got {b.max_repeats}")
    share = b.target_share
    if share is not None and not (math.isfinite(share) and 0 < share <= 1):
        raise ConfigError(f"pairs.balance.target_share: must be in (0, 1], got {share}")


@dataclass
class PairsConfig:
    strategy: str = help_(
        "dp_dpo (length+quality), long2short, quality (w_len = 0), shortest_correct (Sky-T1-Flash: among the samples "
        "whose pairs.correct_column >= pairs.correct_min, shortest chosen, longest rejected), reward (highest vs "
        "lowest pairs.reward_column, nothing else). long2short, shortest_correct and reward have no delta.",
        "dp_dpo",
    )
    w_len: float = help_("Weight of the length term in S (the paper's w_len; the term named 'length').", 0.6)
    w_quality: Optional[float] = help_(
        "Weight of the judge quality term (named 'quality': the mean of `pairs.judges`); null = 1 - w_len.", None
    )
    drop_ratio: float = help_(
        "Share of candidate pairs dropped: delta = this quantile of all candidate pairs' margins "
        "(one pair per group with pairing one, so the share of groups).",
        0.3,
    )
    min_margin: Optional[float] = help_("Absolute margin threshold; when set it replaces drop_ratio.", None)
    exclude_order_flips: bool = help_(
        "With judge.mode group and judge.orders 2: a pair whose chosen and rejected swap between the two orders "
        "(the judge prefers each side in one of them) is dropped as order_flip instead of kept. Flips are counted "
        "in the stats (order_flips of order_pairs) either way.",
        False,
    )
    length_norm: str = help_("L_max: group (per prompt), global (whole run) or fixed (length_max).", "group")
    length_max: Optional[float] = help_("L_max when length_norm is fixed.", None)
    quality_norm: str = help_("Q_max: scale (the rubric's scale_max) or group (per prompt max).", "scale")
    terms: List[TermConfig] = field(
        default_factory=list,
        metadata={
            "help": "More score terms and filters after length and quality, e.g. "
            "[{source: answer_chars, exclude_above: 80}, {source: repetition, field: reasoning, weight: 0.2}, "
            "{source: reward_rm, weight: 0.3}]; fields: pairs.terms[].*",
            "item": TermConfig,
        },
    )
    judges: List[str] = help_(
        "Judge score columns of the ensemble: quality (the primary GenRM), quality_<judge>, reward_<name>. "
        "The quality term is their mean (combine terms) or they vote (combine vote); the report shows "
        "their pairwise agreement.",
        factory=lambda: ["quality"],
    )
    combine: str = help_(
        "How `pairs.judges` decide: terms (their normalized scores averaged into S) or vote (each judge "
        "picks chosen/rejected with its own S; majority wins, ties broken by the ensemble S; pairing one only).",
        "terms",
    )
    pairing: str = help_(
        "Pairs per group: one (best vs worst), best_vs_each (best vs every sample below it), all_ranked "
        "(every pair with a margin at or above delta); the tie ban (margin > 0) holds per pair.",
        "one",
    )
    max_pairs_per_group: Optional[int] = help_(
        "Cap on the pairs kept per group (largest margins first); null = no cap.", None
    )
    dedupe: str = help_(
        "Identical samples in a group count once (hash of lower-cased, whitespace-collapsed text; the lowest "
        "sample_idx stays, the copies are excluded as duplicate): content (reasoning + answer when "
        "include_reasoning, else the answer: what the trainer sees), answer, off.",
        "content",
    )
    max_chosen_tokens: int = help_("long2short: the chosen sample must be under this many tokens.", 400)
    correct_column: str = help_(
        "shortest_correct: the score column that says a sample is correct (quality, quality_<judge>, dim_<name>, "
        "reward_<name>, or a verifier's verify_<name>); a sample below pairs.correct_min is excluded as not_correct.",
        "quality",
    )
    correct_min: float = help_(
        "shortest_correct: the gate on pairs.correct_column's raw value (quality is 0..1: 0.7 = 70 of 100).", 0.7
    )
    reward_column: str = help_(
        "reward: the column ranked (highest chosen, lowest rejected; term weights and delta unused, filters apply); "
        "'' = the first of pairs.judges.",
        "",
    )
    balance: BalanceConfig = help_(
        "Balance the kept pairs across a prompt column's values: {column, cap | target_share}; counted in "
        "stats (pairs over_balance, per value).",
        factory=BalanceConfig,
    )
    sft_max_tokens: int = help_("filter-long SFT export keeps samples with at most this many tokens.", 400)
    target: Optional[int] = help_(
        "Wanted number of pairs: the pair build says how many more prompts it needs at the observed survival "
        "rate; `factory run` draws prompts (from prompts.limit, else an estimate) until it is met or the pool ends.",
        None,
    )
    format: str = help_("conversational (list of messages) or standard (plain strings) for TRL.", "conversational")
    include_reasoning: bool = help_("Put the reasoning (in <think> tags) in chosen/rejected.", True)
    sft: list = help_("SFT exports to write: filter_long, dp_sft.", factory=lambda: ["filter_long", "dp_sft"])
    # issue 16: filters before judging
    filter_before_judge: bool = help_(
        "Apply the exclusions that need no judge (engine error, truncated, empty answer, rule filter terms "
        "with exclude_*, duplicates) before the judges and reward models: an excluded sample is never sent to "
        "one (it is still counted under its reason). false: judge every sample (e.g. to study the judge on "
        "the filtered samples too, or to loosen a filter later without new judge requests).",
        True,
    )

    def __post_init__(self) -> None:
        def one_of(key: str, value: str, valid: tuple[str, ...]) -> None:
            if value not in valid:
                raise ConfigError(f"pairs.{key}: {value!r} is not one of {', '.join(valid)}")

        one_of("strategy", self.strategy, PAIR_STRATEGIES)
        if not 0 <= self.w_len <= 1:
            raise ConfigError(f"pairs.w_len: must be in [0, 1], got {self.w_len}")
        if not 0 <= self.drop_ratio < 1:
            raise ConfigError(f"pairs.drop_ratio: must be in [0, 1), got {self.drop_ratio}")
        one_of("length_norm", self.length_norm, ("group", "global", "fixed"))
        if self.length_norm == "fixed" and not self.length_max:
            raise ConfigError("pairs.length_max: required when pairs.length_norm is fixed")
        one_of("quality_norm", self.quality_norm, ("scale", "group"))
        one_of("format", self.format, ("conversational", "standard"))
        one_of("pairing", self.pairing, PAIRINGS)
        one_of("dedupe", self.dedupe, DEDUPE_MODES)
        one_of("combine", self.combine, COMBINE_MODES)
        if self.combine == "vote" and self.pairing != "one":
            raise ConfigError(
                f"pairs.combine: vote picks one pair per group; pairs.pairing must be one, got {self.pairing!r}"
            )
        if self.max_pairs_per_group is not None and self.max_pairs_per_group < 1:
            raise ConfigError(f"pairs.max_pairs_per_group: must be >= 1 or null, got {self.max_pairs_per_group}")
        if self.target is not None and self.target < 1:
            raise ConfigError(f"pairs.target: must be >= 1, got {self.target}")
        if self.min_margin is not None and self.min_margin < 0:
            raise ConfigError(f"pairs.min_margin: must be >= 0, got {self.min_margin}")
        unknown = set(self.sft) - {"filter_long", "dp_sft"}
        if unknown:
            raise ConfigError(f"pairs.sft: unknown export(s) {sorted(unknown)}; valid: filter_long, dp_sft")
        if not math.isfinite(self.correct_min):
            raise ConfigError(f"pairs.correct_min: must be a finite number, got {self.correct_min}")
        check_balance(self.balance)
        check_terms(self)

    @property
    def quality_weight(self) -> float:
        return 1.0 - self.w_len if self.w_quality is None else self.w_quality


@dataclass
class SweepConfig:
    term: str = help_(
        "`factory sweep`: the term whose weight is the grid's first axis: length (the paper: w_len, with "
        "w_quality = 1 - w_len), quality, or the name of a pairs.terms entry.",
        "length",
    )
    w_len_start: float = help_("`factory sweep`: first weight of the grid (w_len when sweep.term is length).", 0.0)
    w_len_stop: float = help_("`factory sweep`: last weight of the grid (included).", 1.0)
    w_len_step: float = help_("`factory sweep`: weight step.", 0.1)
    drop_ratio_start: float = help_("`factory sweep`: first drop_ratio of the grid.", 0.0)
    drop_ratio_stop: float = help_("`factory sweep`: last drop_ratio of the grid (included).", 0.5)
    drop_ratio_step: float = help_("`factory sweep`: drop_ratio step.", 0.1)

    def __post_init__(self) -> None:
        for axis, low, high in (("w_len", 0.0, 1.0), ("drop_ratio", 0.0, 0.999999)):
            start, stop, step = (getattr(self, f"{axis}_{part}") for part in ("start", "stop", "step"))
            if step <= 0:
                raise ConfigError(f"sweep.{axis}_step: must be > 0, got {step}")
            if not low <= start <= stop <= high:
                raise ConfigError(
                    f"sweep.{axis}_start/{axis}_stop: need {low} <= start <= stop <= {high:g}, got {start}, {stop}"
                )
        if not self.term:
            raise ConfigError("sweep.term: empty; use length, quality or a pairs.terms name")

    @staticmethod
    def _grid(start: float, stop: float, step: float) -> list[float]:
        count = int((stop - start) / step + 1e-9) + 1
        return [round(start + i * step, 10) for i in range(count)]

    @property
    def w_lens(self) -> list[float]:
        """The swept weight's values (w_len when sweep.term is length)."""
        return self._grid(self.w_len_start, self.w_len_stop, self.w_len_step)

    @property
    def drop_ratios(self) -> list[float]:
        return self._grid(self.drop_ratio_start, self.drop_ratio_stop, self.drop_ratio_step)


# -- the score terms' vocabulary: what a pairs.terms source may be and how it defaults ------------------
NORMS = ("group", "global", "group_minmax", "global_minmax", "fixed", "scale", "none")
DIRECTIONS = ("higher", "lower")
# Sample exclusions checked before any term, in this order (the first that applies is counted).
BASE_REASONS = ("engine_error", "truncated", "empty_answer", "no_token_count", "no_judgment")
DUPLICATE = "duplicate"
# The judge kinds' columns (factory/config/kinds.py) between length and the text rules.
TERM_SOURCES: dict[str, SourceSpec] = {
    "length": SourceSpec("length", "lower", "group"),
    **{name: spec for kind in JUDGE_KINDS for name, spec in kind.sources.items()},
    "repetition": SourceSpec("repetition", "lower", "none", "one"),
    "answer_chars": SourceSpec("answer_chars", "lower", "group"),
    "format": SourceSpec("format", "lower", "none", "one"),
    "think": SourceSpec("think", "lower", "none", "one"),
    "tag": SourceSpec(r"tag_.+", "higher", "none", "one", judged=True),
    "copies_prompt": SourceSpec("copies_prompt", "lower", "none", "one"),
    "repeats_history": SourceSpec("repeats_history", "lower", "none", "one"),
    "flag_contradiction": SourceSpec("flag_contradiction", "lower", "none", "one"),
}
# The n-gram sources: `n` and `unit` apply (checked below).
NGRAM_SOURCES = ("repetition", "copies_prompt", "repeats_history")


def source_name(column: str) -> Optional[str]:
    """The TERM_SOURCES entry whose pattern `column` matches (quality_b -> quality), or None."""
    return next((name for name, spec in TERM_SOURCES.items() if re.fullmatch(spec.pattern, column)), None)


def default_name(entry: TermConfig) -> str:
    return entry.name or (f"repetition_{entry.field}" if entry.source == "repetition" else entry.source)


def check_terms(cfg: PairsConfig) -> None:
    """Raise ConfigError naming the key of the first bad pairs.terms entry or pairs.judges value."""
    if not cfg.judges:
        raise ConfigError("pairs.judges: needs at least one judge column (quality is the primary judge)")
    for column in cfg.judges:
        if not is_judge_score(column):
            raise ConfigError(f"pairs.judges: {column!r} is not a judge column ({', '.join(judge_column_names())})")
    if len(set(cfg.judges)) != len(cfg.judges):
        raise ConfigError(f"pairs.judges: {cfg.judges} names a judge twice")
    taken = {"length": "pairs.w_len", "quality": "pairs.w_quality", DUPLICATE: "pairs.dedupe"}
    taken |= {reason: "a built-in exclusion reason" for reason in (*BASE_REASONS, MISSING_DIMENSION)}
    own = strategy_of(cfg).own_term
    if own is not None:
        column = own.column(cfg)
        if not re.fullmatch(r"\w+", column) or column in NOT_JUDGES:
            raise ConfigError(
                f"{own.key}: {column!r} is not a score column (quality, quality_<judge>, reward_<name>, ...)"
            )
        taken[own.name] = f"pairs.strategy {cfg.strategy}"
    for i, entry in enumerate(cfg.terms):
        key = f"pairs.terms[{i}]"
        _check_entry(entry, key)
        name = default_name(entry)
        if name in taken:
            raise ConfigError(f"{key}.name: {name!r} is already used by {taken[name]}; give this term a name")
        taken[name] = key


def _check_entry(entry: TermConfig, key: str) -> None:
    name = source_name(entry.source)
    if name is None:
        valid = ", ".join(
            ["length", *judge_column_names(dims=True), "repetition", "answer_chars", "format", "think", "tag_<tag>",
             "copies_prompt", "repeats_history", "flag_contradiction"]
        )  # fmt: skip
        raise ConfigError(f"{key}.source: {entry.source!r} is not a term source ({valid})")
    source = TERM_SOURCES[name]
    norm = entry.norm or source.norm
    if norm not in NORMS:
        raise ConfigError(f"{key}.norm: {entry.norm!r} is not one of {', '.join(NORMS)}")
    if norm == "scale" and source.scale is None:
        raise ConfigError(f"{key}.norm: {entry.source} has no fixed scale; use group_minmax, global_minmax or fixed")
    if entry.direction and entry.direction not in DIRECTIONS:
        raise ConfigError(f"{key}.direction: {entry.direction!r} is not one of higher, lower")
    if norm == "fixed" and (entry.hi is None or not entry.hi > entry.lo):
        raise ConfigError(f"{key}.hi: norm fixed needs hi > lo, got lo={entry.lo}, hi={entry.hi}")
    for field_name in ("weight", "lo", "exclude_above", "exclude_below"):
        value = getattr(entry, field_name)
        if value is not None and not math.isfinite(value):
            raise ConfigError(f"{key}.{field_name}: must be a finite number, got {value}")
    if entry.source == "repetition" and entry.field not in ("answer", "reasoning"):
        raise ConfigError(f"{key}.field: {entry.field!r} is not one of answer, reasoning")
    if entry.source in NGRAM_SOURCES:
        if entry.unit not in ("word", "char"):
            raise ConfigError(f"{key}.unit: {entry.unit!r} is not one of word, char")
        if entry.n < 1:
            raise ConfigError(f"{key}.n: must be >= 1, got {entry.n}")
    if entry.source == "format" and not entry.pattern:
        raise ConfigError(f"{key}.pattern: required for a format term")
    if entry.source in ("format", "flag_contradiction") and entry.pattern:
        try:
            pl.Series([""]).str.contains(entry.pattern)
        except pl.exceptions.PolarsError as exc:
            raise ConfigError(f"{key}.pattern: not a valid regex: {str(exc).splitlines()[0]}") from None
