"""verifiers.<name>.*: judges that make no request: a rule scores each sample against its prompt's columns."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, List

import polars as pl

from factory.config.base import ConfigError, help_, one_of
from factory.referral import REFERRAL_PATTERNS

VERIFIER_RULES = ("reference", "regex", "answerable", "can_answer", "function")
MATCHES = ("exact", "normalized", "contains")


@dataclass
class VerifierConfig:
    """One entry of `verifiers`: its verdict is the scored column verify_<name> (0..1; null when the prompt
    lacks the column the rule reads), computed from the stored samples and prompts whenever they are read."""

    rule: str = help_(
        "reference: the answer matches the prompt's `column` (see match); regex: the answer matches `pattern` "
        "(require true) or does not (require false); answerable: the answer answers when the prompt's `column` "
        "label is true and refers the viewer to customer service (referral_patterns) when false, the rule of "
        "factory eval's answerable agreement; can_answer: the teacher's own can-answer flag (samples.can_answer, "
        "sampler.can_answer) equals the prompt's `column` label (null when either is missing): the flag's "
        "agreement with the hand label; function: the Python callable `function` decides.",
        "reference",
    )
    column: str = help_(
        "reference / answerable / can_answer: the prompts' column holding the reference answer / the label.", ""
    )
    match: str = help_(
        "reference: exact (the same text), normalized (the same once lower-cased and whitespace-collapsed, as "
        "pairs.dedupe compares), contains (the normalized reference occurs in the normalized answer).",
        "normalized",
    )
    pattern: str = help_("regex: the regex (Rust regex syntax) searched in the sample's `field`.", "")
    require: bool = help_("regex: true = must match `pattern` (1 when it does), false = must not.", True)
    referral_patterns: List[str] = help_(
        "answerable: regexes (case-insensitive) that mark a reply as referring to customer service.",
        factory=lambda: list(REFERRAL_PATTERNS),
    )
    function: str = help_(
        "function: 'module:function', called once per sample as f(sample: dict, prompt: dict) -> a float in 0..1, "
        "a bool, or None (no verdict). sample: prompt_id, sample_idx, answer, reasoning; prompt: its columns.",
        "",
    )
    field: str = help_("The sample text the rule reads: answer or reasoning.", "answer")

    @staticmethod
    def check(c: Any, p: str) -> None:
        one_of(c, p, "rule", VERIFIER_RULES)
        one_of(c, p, "match", MATCHES)
        one_of(c, p, "field", ("answer", "reasoning"))
        if c.rule in ("reference", "answerable", "can_answer") and not c.column:
            raise ConfigError(f"{p}column: the {c.rule} rule needs the prompts' column to read")
        if c.rule == "regex":
            if not c.pattern:
                raise ConfigError(f"{p}pattern: required for the regex rule")
            _regex(c.pattern, f"{p}pattern")
        if c.rule == "answerable":
            if not list(c.referral_patterns):
                raise ConfigError(f"{p}referral_patterns: the answerable rule needs at least one")
            for pattern in c.referral_patterns:
                _regex(pattern, f"{p}referral_patterns")
        if c.rule == "function" and not re.fullmatch(r"[\w.]+:[\w.]+", c.function or ""):
            raise ConfigError(f"{p}function: {c.function!r} is not 'module:function'")


def _regex(pattern: str, key: str) -> None:
    try:
        pl.Series([""]).str.contains(pattern)
    except pl.exceptions.PolarsError as exc:
        raise ConfigError(f"{key}: not a valid regex: {str(exc).splitlines()[0]}") from None
