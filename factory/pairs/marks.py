"""Scored samples -> Prepared: every sample marked valid or excluded (with one reason), and each valid
sample's normalized term values. Done once per build; every decision (weights, threshold, pairing,
and each point of a sweep) is then made from these numbers.

Exclusion reasons, the first that applies. First those that need no judge (`judge_free`; factory
run applies them before any judge is asked, factory/pairs/prejudge.py): engine_error, truncated
(finish_reason "length"), empty_answer, no_token_count, each rule or verifier filter term by name
(answer_chars, format, think, repetition, copies_prompt, repeats_history, verify_*: its raw value above
`exclude_above` or below `exclude_below`), duplicate
(pairs.dedupe: among the samples that pass those, the same normalized text as a lower sample_idx of
the same prompt). Then those a judge decides: no_judgment (a column of pairs.judges or a judge-like
term is null or NaN), missing_dimension (a dim_* term's column is null while the judges gave a
score), then each judge filter term by name (quality_*, reward_*, dim_* with exclude_*).

Memory: the text columns are only read inside streaming polars expressions (rules, duplicate keys),
so a Parquet scan (`pl.scan_parquet`) is never held in memory with its text: what is collected is
one row of numbers per sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from factory.config import ConfigError, PairsConfig
from factory.pairs import rules
from factory.pairs.segments import segments
from factory.pairs.terms import BASE_REASONS, DUPLICATE, NO_JUDGMENT, Term, normalize, required_columns, resolve

_GROUP_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd multipliers: fold the group (and sample_idx) into the text key
_SAMPLE_MIX = np.uint64(0xC2B2AE3D27D4EB4F)
# The primary judge's quality in each order (judge.mode group, judge.orders 2): the kernel counts flips.
ORDER_COLUMNS = ("order0_quality", "order1_quality")
SCORED_COLUMNS = ("prompt_id", "sample_idx", "completion_tokens", "finish_reason", "error", "answer", "quality")


@dataclass(eq=False)
class Prepared:
    """marked: every sample, groups contiguous: row (position in the scored frame, to fetch its text),
    prompt_id, gid (dense group number), sample_idx, completion_tokens, quality, exclusion (null when
    valid). valid: the valid rows of marked. values[i]: term i's normalized value on each valid row."""

    marked: pl.DataFrame
    valid: pl.DataFrame
    terms: list[Term]
    judges: list[Term]
    values: np.ndarray
    judge_values: np.ndarray
    starts: np.ndarray
    counts: np.ndarray
    reasons: tuple[str, ...]
    exclusions: dict[str, Any] = field(default_factory=dict)  # the counts of `_count`

    def __post_init__(self) -> None:
        self.gid = self.valid["gid"].to_numpy()
        self.tokens = self.valid["completion_tokens"].to_numpy()
        self.quality = self.valid["quality"].to_numpy()
        self.sample_idx = self.valid["sample_idx"].to_numpy()


def check_columns(
    names: list[str], terms: list[Term], judges: list[Term], key_from: tuple[str, ...], balance: str = ""
) -> None:
    """A column a configured term needs and the scored samples lack fails naming the config key."""
    lacking = [c for c in SCORED_COLUMNS if c not in names]
    if lacking:
        raise ValueError(f"pairs: input is missing column(s) {lacking}; it has {names}")
    needed = required_columns(terms, judges)
    if balance:
        needed.setdefault(balance, "pairs.balance.column")
    for column in key_from:
        needed.setdefault(column, "pairs.dedupe")
    for column, config_key in needed.items():
        if column not in names:
            raise ConfigError(
                f"{config_key}: needs the column {column!r}, which the scored samples lack (they have {names})"
            )


def balance_value(column: str, schema: pl.Schema) -> pl.Expr:
    """pairs.balance: the value a sample counts under. A list column (the judge's tags): its distinct
    entries sorted and joined by '+' ("long+off_topic"), no entry is null; any other column as a string."""
    if isinstance(schema[column], pl.List):
        joined = pl.col(column).list.eval(pl.element().cast(pl.String)).list.unique().list.sort().list.join("+")
        return pl.when(pl.col(column).list.len() > 0).then(joined).otherwise(None)
    return pl.col(column).cast(pl.String)


def judge_free_reasons(cfg: PairsConfig) -> set[str]:
    """The exclusion reasons that need no judge (decided on the samples alone): a sample excluded for one
    of them is out of its pair whatever a judge would say."""
    terms, _ = resolve(cfg)
    free = {"engine_error", "truncated", "empty_answer", "no_token_count", DUPLICATE}
    return free | {t.name for t in terms if t.is_filter and judge_free(t)}


def value_column(i: int, term: Term) -> str:
    """Where term i's raw value sits in the collected frame: a score column under its own name (so a
    judge that is also a term is held once), length as completion_tokens, a rule as raw_<i>."""
    if term.column == "length":
        return "completion_tokens"
    return term.column if term.source.missing else f"raw_{i}"


def _score_columns(terms: list[Term], judges: list[Term]) -> set[str]:
    """The judge and judge-like columns read (quality, quality_*, dim_*, reward_*): null means unjudged."""
    return {j.column for j in judges} | {t.column for t in terms if t.name != "quality" and t.source.missing}


def judge_free(term: Term) -> bool:
    """A term whose value needs no judge request (length, the text rules, verifiers): as a filter it
    applies before judging. A tag term reads the judge's reply: after."""
    spec = term.source.spec
    return (term.source.missing is None and not spec.judged) or spec.free


def _missing_reasons(terms: list[Term], judges: list[Term]) -> dict[str, list[str]]:
    """Exclusion reason -> the score columns whose null value means it: no_judgment for the judges
    and judge-like terms, the source's own reason (missing_dimension) for the others."""
    by_reason: dict[str, list[str]] = {}
    for column in sorted(_score_columns(terms, judges)):
        source = next((t.source for t in [*judges, *terms] if t.column == column), None)
        reason = source.missing if source is not None and column not in {j.column for j in judges} else NO_JUDGMENT
        by_reason.setdefault(reason or NO_JUDGMENT, []).append(column)
    return dict(sorted(by_reason.items(), key=lambda item: item[0] != NO_JUDGMENT))


def _reason(name: str, reasons: tuple[str, ...]) -> pl.Expr:
    """An exclusion reason as an Enum literal (no string per sample to cast afterwards)."""
    return pl.lit(name, pl.Enum(reasons))


def _filters(chain: pl.Expr | None, terms: list[Term], free: bool, reasons: tuple[str, ...]) -> pl.Expr | None:
    """`chain` continued with the filter terms that need no judge (free) or need one."""
    for i, term in enumerate(terms):
        if term.is_filter and judge_free(term) == free:
            raw = pl.col(value_column(i, term))
            broken = pl.lit(False)
            if term.exclude_above is not None:
                broken |= raw > term.exclude_above
            if term.exclude_below is not None:
                broken |= raw < term.exclude_below
            named = _reason(term.name, reasons)
            chain = (pl.when(broken) if chain is None else chain.when(broken)).then(named)  # type: ignore[attr-defined]
    return chain


def _exclusion(terms: list[Term], judges: list[Term], reasons: tuple[str, ...], judged: bool) -> pl.Expr:
    """The first reason that applies among those that need no judge (judged false) or those a judge
    decides (judged true); null when none does. Duplicates are marked in between (_mark_duplicates)."""

    def missing(column: str) -> pl.Expr:
        return pl.col(column).is_null() | pl.col(column).is_nan()

    def reason(name: str) -> pl.Expr:
        return _reason(name, reasons)

    if not judged:
        chain = (
            pl.when(pl.col("_engine_error"))
            .then(reason("engine_error"))
            .when(pl.col("_truncated"))
            .then(reason("truncated"))
            .when(~pl.col("_has_answer"))
            .then(reason("empty_answer"))
            .when(pl.col("completion_tokens").is_null())
            .then(reason("no_token_count"))
        )
        chain = _filters(chain, terms, free=True, reasons=reasons)
    else:
        # The columns the build reads (pairs.judges and judge-like terms; quality by default): a sample
        # without one of them is unjudged. The quality column alone is not read when no judge names it.
        chain = None
        for name, columns in _missing_reasons(terms, judges).items():
            absent = pl.lit(False)
            for column in columns:
                absent |= missing(column)
            chain = (pl.when(absent) if chain is None else chain.when(absent)).then(reason(name))  # type: ignore[attr-defined]
        chain = _filters(chain, terms, free=False, reasons=reasons)
    if chain is None:
        return pl.lit(None, pl.Enum(reasons))
    return chain.otherwise(None).cast(pl.Enum(reasons))  # type: ignore[attr-defined]


def _group_keys(marked: pl.DataFrame) -> pl.DataFrame:
    """Adds `gid` (u32, dense); rows are put in prompt_id order first when they are not (stored
    samples already are), keeping each group's own order."""
    if not marked["prompt_id"].is_sorted():
        marked = marked.sort("prompt_id", maintain_order=True)
    return marked.with_columns(pl.col("prompt_id").rle_id().alias("gid"))


def _exact_keys(
    marked: pl.DataFrame, scored: pl.DataFrame, columns: tuple[str, ...]
) -> tuple[pl.DataFrame, np.ndarray]:
    """`key` holds an answer-level key (rules.text_signature, or the hash of the normalized answer: equal
    for equal normalized answers, not only then): among the rows otherwise valid, those whose signature
    repeats in their group get the hash of their normalized texts (rules.duplicate_key), as the streaming path
    computes for every row. A row whose signature is alone in its group has no duplicate, so its signature
    stands for it (equal to a hash of the others by chance at 2^-64). Returns the frame and which rows may be
    duplicates (the only rows the duplicate marking needs to look at)."""
    valid = marked["exclusion"].is_null().to_numpy()
    with np.errstate(over="ignore"):
        in_group = marked["key"].to_numpy().astype(np.uint64) ^ (
            marked["gid"].to_numpy().astype(np.uint64) * _GROUP_MIX
        )
    repeats = np.zeros(marked.height, dtype=bool)
    repeats[valid] = _repeated(in_group[valid])
    if not repeats.any():
        return marked.with_columns(pl.col("key").cast(pl.UInt64)), repeats
    rows = marked["row"].filter(pl.Series(repeats))
    texts = scored.select(pl.col(list(columns)).gather(rows))
    exact = texts.with_columns(*rules.normalized_columns(set(columns))).select(rules.duplicate_key(columns))
    key = marked["key"].to_numpy().astype(np.uint64)
    key[repeats] = exact.to_series().to_numpy()
    return marked.with_columns(pl.Series("key", key)), repeats


def _repeated(values: np.ndarray) -> np.ndarray:
    """Whether each value occurs more than once (one sort; several times faster than a hash here)."""
    order = np.argsort(values)
    ordered = values[order]
    same = ordered[1:] == ordered[:-1]
    out = np.empty(len(values), dtype=bool)
    out[order] = np.r_[same, False] | np.r_[False, same]
    return out


def _mark_duplicates(marked: pl.DataFrame, reasons: tuple[str, ...], among: np.ndarray | None = None) -> pl.DataFrame:
    """Among the rows otherwise valid (and in `among`, when given: the rows that may be duplicates),
    every copy after the lowest sample_idx of the same key."""
    valid = marked["exclusion"].is_null().to_numpy()
    position = np.flatnonzero(valid if among is None else valid & among)
    gid = marked["gid"].to_numpy()[position].astype(np.uint64)
    idx = marked["sample_idx"].to_numpy()[position]
    if not np.all((idx[1:] > idx[:-1]) | (gid[1:] != gid[:-1])):  # stored samples are already in order
        order = np.lexsort((idx, gid))
        position, gid, idx = position[order], gid[order], idx[order]
    key = marked["key"].to_numpy()[position]
    with np.errstate(over="ignore"):  # one u64 per (group, text) and per (group, text, sample_idx)
        in_group = key ^ (gid * _GROUP_MIX)
        same_sample = in_group ^ (idx.astype(np.uint64) * _SAMPLE_MIX)
    # A repeat of the whole (group, key, sample_idx) is one sample stored twice, not a duplicate: it
    # stays, and the kernel refuses it by name if it is ever paired with itself.
    later = ~pl.Series(in_group).is_first_distinct().to_numpy() & pl.Series(same_sample).is_first_distinct().to_numpy()
    is_copy = np.zeros(marked.height, dtype=bool)
    is_copy[position[later]] = True
    return marked.with_columns(
        pl.when(pl.Series(is_copy)).then(_reason(DUPLICATE, reasons)).otherwise(pl.col("exclusion")).alias("exclusion")
    ).drop("key")


def _count(marked: pl.DataFrame, reasons: tuple[str, ...]) -> dict[str, Any]:
    """Samples by reason (every sample in exactly one reason or valid) and the groups with fewer than
    two valid samples, each under its most frequent sample exclusion (ties: the earlier reason), or
    fewer_than_2_samples when none of its samples was excluded. Counted on the reasons' codes."""
    code = marked["exclusion"].to_physical().fill_null(len(reasons)).to_numpy().astype(np.int64)  # valid: last
    by_code = np.bincount(code, minlength=len(reasons) + 1)
    by_reason = {r: int(n) for r, n in zip(reasons, by_code)}
    starts, _ = segments(marked["gid"])
    n_valid = np.add.reduceat((code == len(reasons)).astype(np.int64), starts) if len(starts) else starts
    too_few = np.flatnonzero(n_valid < 2)
    causes: dict[str, int] = {}
    if len(too_few):
        group_of = marked["gid"].to_numpy().astype(np.int64)  # dense, in row order: the group's segment index
        slot = np.full(len(starts), -1, np.int64)
        slot[too_few] = np.arange(len(too_few))
        rows = np.flatnonzero((slot[group_of] >= 0) & (code < len(reasons)))
        table = np.zeros((len(too_few), len(reasons)), np.int64)
        np.add.at(table, (slot[group_of[rows]], code[rows]), 1)
        commonest = np.where(table.max(axis=1) > 0, table.argmax(axis=1), -1)  # argmax: the earlier reason on a tie
        names = np.array([*reasons, "fewer_than_2_samples"], dtype=object)
        values, n = np.unique(commonest, return_counts=True)
        causes = {str(names[v]): int(c) for v, c in sorted(zip(values, n), key=lambda x: (-x[1], x[0]))}
    return {
        "samples_total": marked.height,
        "samples_excluded": by_reason,
        "samples_valid": int(by_code[len(reasons)]),
        "groups": len(starts),
        "fewer_than_2_valid": len(too_few),
        "too_few_by_reason": causes,
    }


def prepare(scored: pl.LazyFrame | pl.DataFrame, cfg: PairsConfig, scale_max: float = 100.0) -> Prepared:
    """Scored samples -> Prepared (see the module doc). A LazyFrame (Parquet scan) is read with the
    streaming engine, in a second pass for the repetition terms; only numbers are collected."""
    terms, judges = resolve(cfg)
    frame = scored.lazy()
    names = frame.collect_schema().names()
    key_from = rules.key_columns(cfg.dedupe, cfg.include_reasoning)
    check_columns(names, terms, judges, key_from, cfg.balance.column)
    filters = tuple(t.name for t in terms if t.is_filter)
    missing = tuple(r for r in _missing_reasons(terms, judges) if r not in BASE_REASONS)
    reasons = BASE_REASONS + missing + filters + ((DUPLICATE,) if key_from else ())
    rule_values = {i: t.value.alias(f"raw_{i}") for i, t in enumerate(terms) if value_column(i, t) == f"raw_{i}"}
    batched = [i for i, t in enumerate(terms) if t.column == "repetition"]  # Python batches
    repeated = {terms[i].entry.field for i in batched}  # type: ignore[union-attr]
    key_texts, repeated_texts = set(key_from), repeated
    in_memory = isinstance(scored, pl.DataFrame)
    if in_memory:  # each text read once: rules on normalized text, duplicates first by signature (below)
        # Every duplicate key holds the answer: an answer-level key finds the rows to compare. The hash of
        # the normalized answer when a rule normalizes it anyway, else the answer's (cheaper) signature.
        frame = scored.with_columns(*rules.normalized_columns(repeated)).lazy()  # type: ignore[union-attr]
        if key_from and "answer" in repeated:
            frame = frame.with_columns(pl.col(rules.normalized_column("answer")).hash().alias("key"))
        elif key_from:
            frame = frame.with_columns(pl.Series("key", rules.text_signature(scored["answer"])))  # type: ignore[index]
        key_texts, repeated_texts = set(), set()
    scores = sorted(_score_columns(terms, judges) | {"quality"})
    # Every sample reduced to numbers and flags; the exclusion reasons are decided on those afterwards.
    numbers = (
        frame.with_row_index("row")
        .with_columns(*rules.normalized_columns(key_texts))
        .select(
            "row",
            "prompt_id",
            pl.col("sample_idx").cast(pl.Int64),
            pl.col("completion_tokens").cast(pl.Int64),
            pl.col("error").is_not_null().alias("_engine_error"),
            (pl.col("finish_reason") == "length").fill_null(False).alias("_truncated"),
            # Some non-whitespace character (as r"\S" finds, without a regex: strip removes White_Space)
            (pl.col("answer").str.strip_chars().str.len_bytes() > 0).fill_null(False).alias("_has_answer"),
            *[pl.col(c).cast(pl.Float64) for c in scores],
            *(
                [balance_value(cfg.balance.column, frame.collect_schema()).alias("_balance")]
                if cfg.balance.column
                else []
            ),
            *[pl.col(c).cast(pl.Float64) for c in ORDER_COLUMNS if c in names],  # judge.orders 2: order flips
            *[v for i, v in rule_values.items() if i not in batched],
            *([pl.col("key") if in_memory else rules.duplicate_key(key_from).alias("key")] if key_from else []),
        )
    )
    repetitions = (
        frame.with_row_index("_row")
        .with_columns(*rules.normalized_columns(repeated_texts))
        .select("_row", *[rule_values[i] for i in batched])
    )
    if in_memory:  # one pass
        slim = (pl.concat([numbers, repetitions], how="horizontal") if batched else numbers).collect()
    else:
        # A Parquet scan streams; the repetition batches (Python, one at a time) read it in a pass of
        # their own, so that the other text work never waits for them holding its text in memory.
        slim = numbers.collect(engine="streaming")
        if batched:
            slim = slim.hstack(repetitions.collect(engine="streaming"))  # type: ignore[arg-type]
    if batched and not slim["_row"].equals(slim["row"], check_names=False):
        raise RuntimeError("pairs: the two passes over the scored samples came back in different orders")
    slim = (
        slim.drop("_row", strict=False)
        .with_columns(_exclusion(terms, judges, reasons, judged=False).alias("exclusion"))
        .drop("_engine_error", "_truncated", "_has_answer")
    )
    marked = _group_keys(slim)
    if key_from:  # among the samples that pass the judge-free rules: decidable before judging
        among = None
        if in_memory:
            marked, among = _exact_keys(marked, scored, key_from)  # type: ignore[arg-type]
        marked = _mark_duplicates(marked, reasons, among)
    judged = _exclusion(terms, judges, reasons, judged=True)
    marked = marked.with_columns(pl.coalesce(pl.col("exclusion"), judged).alias("exclusion"))
    valid = marked.filter(pl.col("exclusion").is_null()).drop("exclusion")
    starts, counts = segments(valid["gid"])
    judge_values = np.stack(
        [normalize(valid[judge.column].to_numpy(), judge, starts, counts, scale_max) for judge in judges]
    )
    values = np.empty((len(terms), valid.height))
    for i, term in enumerate(terms):
        if term.name == "quality":  # the judges' mean; one judge is itself, to the last bit
            values[i] = judge_values[0] if len(judges) == 1 else judge_values.mean(axis=0)
        else:
            raw = valid[value_column(i, term)].to_numpy().astype(np.float64)
            values[i] = normalize(raw, term, starts, counts, scale_max)
    held = [c for c in scores if c != "quality"] + [f"raw_{i}" for i in rule_values]
    return Prepared(
        marked=marked.drop(held),
        valid=valid.drop(held),
        terms=terms,
        judges=judges,
        values=values,
        judge_values=judge_values,
        starts=starts,
        counts=counts,
        reasons=reasons,
        exclusions=_count(marked, reasons),
    )
