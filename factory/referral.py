"""The seed's rule for an unanswerable question: refer the viewer to customer service. These regexes
(case-insensitive) mark a reply that does; `eval.referral_patterns` defaults to them. The rule itself
(a label, whether a reply refers, whether the two agree) is here once, for factory eval's answerable
agreement and its agreement with the teacher's flags, for the answerable verifier (factory/stages/verifier.py)
and for the flag_contradiction term (a teacher's can-answer flag against its own reply, factory/pairs/terms.py)."""

from __future__ import annotations

import polars as pl

REFERRAL_PATTERNS = [
    r"customer (service|support|care)",
    r"(contact|ask|message|check with) (the |our )?(seller|shop|store|support|service)",
    r"客服",
    r"售后",
]


def answerable_flags(values: pl.Series) -> pl.Series:
    """true/false from bools or text (true/yes/1, false/no/0); anything else null."""
    text = values.cast(pl.String).str.strip_chars().str.to_lowercase()
    return (
        pl.select(
            pl.when(text.is_in(["true", "yes", "1"])).then(True).when(text.is_in(["false", "no", "0"])).then(False)
        )
        .to_series()
        .alias("answerable")
    )


def refers(text: pl.Expr, patterns: list[str]) -> pl.Expr:
    """True where the reply matches one of `patterns` (case-insensitive): it refers the viewer on."""
    if not patterns:
        return pl.lit(False)
    return text.fill_null("").str.contains("(?i)" + "|".join(f"(?:{p})" for p in patterns))


def agrees(answerable: pl.Expr, referred: pl.Expr) -> pl.Expr:
    """The reply's decision is right: it answers an answerable question or refers an unanswerable one
    (null where the label is)."""
    return pl.when(answerable.is_not_null()).then(answerable != referred)


def contradicts(flag: pl.Expr, referred: pl.Expr) -> pl.Expr:
    """The teacher's can-answer flag and its own reply disagree (the flag taken as the label of `agrees`):
    it says it can answer and refers the viewer on, or says it cannot and answers. False where the flag is
    null (nothing to contradict)."""
    return agrees(flag, referred).not_().fill_null(False)
