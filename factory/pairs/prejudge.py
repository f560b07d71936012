"""The exclusions that need no judge, decided before any judge or reward model is asked: the pair
kernel's own rules (marks.py) on the samples alone, so a sample they exclude is never sent to a judge
and the pair build still counts it under the same reason.

    rows in:  prompt_id  sample_idx  completion_tokens  finish_reason  error  answer               reasoning
              p1         0           40                 stop           null   "Link 3, yes."       ""
              p1         1           90                 stop           null   "<120 characters>"   ""
              p1         2           512                length         null   "..."                ""
              p1         3           41                 stop           null   "link 3,  YES."      ""
    passing(rows, pairs)             with pairs.terms=[{source: answer_chars, exclude_above: 80}]
    rows out: prompt_id  sample_idx  exclusion
              p1         0           null               (passes: judge it)
              p1         1           answer_chars
              p1         2           truncated
              p1         3           duplicate          (same normalized text as sample 0)

The reasons: engine_error, truncated, empty_answer, no_token_count, every filter term whose source
needs no judge request (answer_chars, format, think, repetition, copies_prompt, repeats_history,
verify_<name> with exclude_*; the caller adds the verifiers' columns and passes the prompts), duplicate
(among the samples that pass those, within the rows given: the caller passes every stored sample of a group it plans).
Judge-based terms and pairs.judges play no part here: the build decides them after judging.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import polars as pl

from factory.config import BalanceConfig, PairsConfig
from factory.config.strategies import DP_DPO
from factory.pairs.marks import judge_free, prepare
from factory.pairs.terms import resolve

COLUMNS = ("prompt_id", "sample_idx", "completion_tokens", "finish_reason", "error", "answer", "reasoning")
_PLACEHOLDER = "quality"  # a judged-by-everyone column, so that no judge decides anything here


def judge_free_config(cfg: PairsConfig) -> PairsConfig:
    """`cfg` reduced to its judge-free exclusions: the rule filter terms (weights dropped) and dedupe;
    the quality judge stands in for pairs.judges. A strategy's own term (shortest_correct's gate, also on a
    verifier's column) is the pair build's: it has no pairs.terms entry and is left to the build. So is
    pairs.balance: it caps kept pairs per value of a prompts column, a decision on judged groups that
    excludes no sample (and the samples here carry no prompts column)."""
    terms, _ = resolve(cfg)
    rules = [t.entry for t in terms[2:] if t.entry is not None and t.is_filter and judge_free(t)]
    return replace(
        cfg, strategy=DP_DPO, terms=[replace(e, weight=0.0) for e in rules], judges=[_PLACEHOLDER], combine="terms",  # type: ignore[type-var]
        target=None, balance=BalanceConfig(),
    )  # fmt: skip


def verifier_columns(cfg: PairsConfig) -> list[str]:
    """The verify_<name> columns the judge-free filters read (the caller adds them to the samples)."""
    terms, _ = resolve(judge_free_config(cfg))
    return sorted({t.column for t in terms[2:] if t.source.missing is not None})


def passing(samples: pl.DataFrame, cfg: PairsConfig, prompts: pl.DataFrame | None = None) -> pl.DataFrame:
    """samples (COLUMNS, and verifier_columns(cfg); groups as stored) -> prompt_id, sample_idx,
    exclusion (null: send it to the judges; else the reason the pair build will count it under).
    `prompts` (prompt_id, messages, history): what the filters on the prompt's own text read
    (copies_prompt, repeats_history), joined as the pair build joins them (factory.pairs.attach)."""
    if not samples.height:
        return pl.DataFrame(schema={"prompt_id": pl.String, "sample_idx": pl.Int64, "exclusion": pl.String})
    reduced = judge_free_config(cfg)
    from factory.pairs import attach, prompt_side

    side = list(prompt_side(reduced))
    if side and prompts is not None:
        samples = attach(samples, prompts, reduced)  # type: ignore[assignment]
    terms, _ = resolve(reduced)
    read = {c for t in terms[2:] for c in t.reads} - set(COLUMNS) - set(side)  # e.g. can_answer (flag_contradiction)
    sample_side = sorted(c for c in read if c in samples.columns and c not in verifier_columns(cfg))
    frame = samples.select(*COLUMNS, *verifier_columns(cfg), *sample_side, *[c for c in side if c in samples.columns])
    frame = frame.with_columns(pl.lit(1.0).alias(_PLACEHOLDER))
    marked = prepare(frame, reduced).marked
    return marked.select("prompt_id", pl.col("sample_idx").cast(pl.Int64), pl.col("exclusion").cast(pl.String))


@dataclass(eq=False)
class Prefilter:
    """What the judges' stages filter with (pairs.filter_before_judge): the pairs config, and how to
    add the verifiers' columns its filters read (samples -> prompt_id, sample_idx, verify_<name>...)."""

    pairs: PairsConfig
    verdicts: Callable[[pl.DataFrame], pl.DataFrame] | None = None
    prompts: pl.DataFrame | None = None  # what the filters on the prompt's own text read (copies_prompt, ...)

    def passing(self, samples: pl.DataFrame) -> pl.DataFrame:
        if self.verdicts is not None and verifier_columns(self.pairs) and samples.height:
            samples = samples.join(self.verdicts(samples), on=["prompt_id", "sample_idx"], how="left")
        return passing(samples, self.pairs, self.prompts)


def reasons_note(excluded: pl.DataFrame) -> str:
    """'12 excluded before judging (answer_chars 10, duplicate 2)' of passing()'s excluded rows."""
    if not excluded.height:
        return ""
    counts = excluded["exclusion"].value_counts(sort=True)
    parts = ", ".join(f"{r} {n}" for r, n in zip(counts["exclusion"], counts["count"]))
    return f"{excluded.height} excluded before judging by the pair filters ({parts})"
