"""Paired statistics for comparing a candidate with a baseline on the same prompts (the closed loop's table,
bench/closed_loop.py), with no LLM call: each function takes plain arrays or text and is tested with known
inputs (tests/evaluation/test_paired.py).

    paired_ids        the prompts every model has a usable score for (the table's one paired set), and the
                      prompts left out, each with its first reason (sample error, judge unparsed, ...)
    ratio_interval    candidate / baseline ratio of mean tokens on paired prompts, with a paired bootstrap
                      95% interval (the same resampled prompts on both sides)
    non_inferior      quality as non-inferiority: the score difference's interval lower end above -margin,
                      the margin fixed before the run (bench/closed_loop.py NON_INFERIORITY_MARGIN)
    degenerate        why a reply is degenerate: empty, copies the prompt (placeholders, the question, the
                      product info), or only a few words; null when it is not
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Mapping

import numpy as np
import polars as pl

from factory.evaluation.table import CHUNK
from factory.pairs.rules import overlap

COPY_SHARE = 0.8  # share of the reply's word 3-grams found in the prompt's text at which it is a copy
FEW_WORDS = 3  # replies with fewer words than this are degenerate ("ok!", "link 3")


def ratio_interval(
    candidate: Iterable[float], base: Iterable[float], resamples: int, seed: int
) -> tuple[float | None, float | None, float | None]:
    """(ratio, low, high): mean(candidate) / mean(base) over paired prompts (position i of both is prompt i),
    with the 2.5 and 97.5 percentiles of the same ratio over `resamples` bootstrap resamples of the prompts
    (one index draw for both sides, so the pairing is kept). (None, None, None) with no prompt or a zero
    base mean; the interval is None under 2 prompts. Resamples whose base mean is 0 are left out."""
    cand, ref = np.asarray(list(candidate), dtype=float), np.asarray(list(base), dtype=float)
    if cand.shape != ref.shape:
        raise ValueError(f"ratio_interval: {cand.size} candidate values against {ref.size} baseline values")
    if not cand.size or not ref.mean() > 0:
        return None, None, None
    ratio = float(cand.mean() / ref.mean())
    if cand.size < 2:
        return ratio, None, None
    rng = np.random.default_rng(seed)
    ratios = []
    for start in range(0, resamples, CHUNK):
        idx = rng.integers(0, cand.size, size=(min(CHUNK, resamples - start), cand.size))
        num, den = cand[idx].mean(axis=1), ref[idx].mean(axis=1)
        ratios.append(num[den > 0] / den[den > 0])
    low, high = np.percentile(np.concatenate(ratios), [2.5, 97.5])
    return ratio, float(low), float(high)


def non_inferior(low: float | None, margin: float) -> bool | None:
    """True when the difference's interval lower end is above -margin (the candidate is at most `margin`
    worse, at 95%); None without an interval."""
    if margin < 0:
        raise ValueError(f"non_inferior: the margin is a size (>= 0), got {margin}")
    return None if low is None else bool(low > -margin)


def paired_ids(status: Mapping[str, Mapping[str, str | None]], prompt_ids: Iterable[str]) -> tuple[list[str], dict]:
    """status: model -> {prompt_id: None (usable score) or the reason it has none}. Returns (the prompts
    every model has a score for, in `prompt_ids` order; {model: {reason: prompts}}), a prompt missing
    from a model's map counting under "not sampled". A prompt left out is counted once per model that
    lacks a score for it, under that model's reason, so the counts say which model lost which prompts."""
    paired, lost = [], {model: Counter() for model in status}
    for pid in prompt_ids:
        reasons = {model: by_prompt.get(pid, "not sampled") for model, by_prompt in status.items()}
        if all(r is None for r in reasons.values()):
            paired.append(pid)
            continue
        for model, reason in reasons.items():
            if reason is not None:
                lost[model][reason] += 1
    return paired, {model: dict(counts) for model, counts in lost.items()}


def degenerate(answers: pl.Series, prompt_texts: pl.Series, few_words: int = FEW_WORDS) -> pl.Series:
    """Per reply, why it is degenerate, or null: "empty" (nothing after the reasoning), "copies prompt" (at
    least COPY_SHARE of its word 3-grams occur in its prompt's text, or the whole reply does: a template
    placeholder such as "(none)" or the question echoed; factory.pairs.rules.overlap, the copies_prompt
    rule), "few words" (under `few_words` words). `prompt_texts[i]` is the text the model saw for reply i."""
    frame = pl.DataFrame({"answer": answers.cast(pl.String), "_prompt": prompt_texts.cast(pl.String)})
    words = (
        pl.col("answer")
        .fill_null("")
        .str.strip_chars()
        .str.split(" ")
        .list.eval(pl.element().filter(pl.element().str.len_chars() > 0))
        .list.len()
    )
    return frame.select(
        pl.when(pl.col("answer").fill_null("").str.strip_chars().str.len_chars() == 0).then(pl.lit("empty"))
        .when(overlap("_prompt", 3, "word") >= COPY_SHARE).then(pl.lit("copies prompt"))
        .when(words < few_words).then(pl.lit("few words"))
        .otherwise(pl.lit(None, pl.String)).alias("degenerate")
    ).to_series()  # fmt: skip


def shares(reasons: pl.Series) -> dict[str, float]:
    """{reason: share of the replies} of a degenerate() column, and "any"; {} for no reply."""
    n = reasons.len()
    if not n:
        return {}
    counts = reasons.drop_nulls().value_counts()
    out = {row["degenerate"]: row["count"] / n for row in counts.rename({counts.columns[0]: "degenerate"}).to_dicts()}
    return {"any": reasons.is_not_null().sum() / n, **dict(sorted(out.items()))}
