"""Scored samples -> DPO pairs (and SFT exports), through one kernel. No Ray, no engine, no LLM call:
`factory run`, `factory pairs`, `factory sweep`, the report and the target estimate all come here.

    from factory import pairs
    built = pairs.build(scored, prompts, cfg.pairs, scale_max=cfg.judge.scale_max)
    built.pairs       pairs rows (factory.rundir.schemas.PAIRS; plain strings with pairs.format=standard)
    built.sft         {"filter_long": frame, "dp_sft": frame}, those pairs.sft asks for
    built.stats       PairStats: samples by exclusion reason, groups by bucket, pairs by outcome,
                      delta, means, judge agreement, target estimate (`pairs.target_note(stats)`)
    built.decisions   one row per candidate pair with its outcome (report, notebooks)

Input columns (scored, one row per sample; a DataFrame or a LazyFrame such as a Parquet scan):
prompt_id, sample_idx, completion_tokens, finish_reason, error, answer, reasoning, quality (the
primary judge, 0..1, null when unjudged); optional: quality_<judge> (0..1), dim_<name> (judge scale),
reward_<name> (raw), which terms and `pairs.judges` may name. prompts: prompt_id, messages.

    rows in (scored):  prompt_id  sample_idx  completion_tokens  finish_reason  quality  answer
                       p1         0           120                stop           0.9      "Link 3, yes!"
                       p1         1           380                stop           0.8      "Link 3 is ..."
                       p1         2           512                length         null     "..."
                       p1         3           140                stop           0.7      "link 3,  YES!"
    decisions:         p1: chosen 0, rejected 1 (S = 0.6 * (1 - L / 380) + 0.4 * Q), margin 0.45;
                       sample 2 excluded as truncated, sample 3 as a duplicate of 0 (say both have
                       the same reasoning: the same text once lower-cased and whitespace-collapsed;
                       the lowest sample_idx stays)
    row out (pairs):   prompt=[{system}, {user}]  chosen=[{assistant: "<think>\\n...\\n</think>\\n\\nLink 3, yes!"}]
                       rejected=[...]  prompt_id=p1  chosen_idx=0  rejected_idx=1 ... margin=0.45  strategy=dp_dpo

The steps, one module each:
    rules    text rules as streaming polars expressions (repetition, answer characters, format, think)
    terms    the score terms: sources, normalizations, directions, weights; config checks
    marks    validity (one exclusion reason per sample, filters, duplicates) and normalized term values
    picks    S and the group order (the one tie-break rule)
    vote     several judges: their picks, majority vote, agreement
    kernel   candidate pairs per pairing mode -> delta -> outcome per pair (the rules the docs state)
    stats    counts that add up, means, target estimate
    render   pairs/ rows, sink for big runs, SFT exports
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import polars as pl

from factory.config import ConfigError, PairsConfig
from factory.config import kinds
from factory.config.strategies import DP_DPO, strategy_of
from factory.pairs import rules
from factory.pairs.kernel import DECIDED, Candidates, candidates, decide, decided, outcomes, select, threshold
from factory.pairs.marks import SCORED_COLUMNS, Prepared, check_columns, judge_free_reasons, prepare
from factory.pairs.picks import margin_quantile
from factory.pairs.render import pairs_schema, render_pairs, sft_dp, sft_filter_long, sink_pairs
from factory.pairs.stats import OUTCOMES, PairStats, filter_note, target_draw, target_note, target_start
from factory.pairs.terms import required_columns, resolve
from factory.rundir.schemas import require_columns

__all__ = [
    "is_judge_column",
    "DECIDED",
    "OUTCOMES",
    "SCORED_COLUMNS",
    "Candidates",
    "PairBuild",
    "PairStats",
    "Prepared",
    "attach",
    "build",
    "candidates",
    "check_reads",
    "decide",
    "decided",
    "filter_note",
    "judge_free_reasons",
    "margin_quantile",
    "outcomes",
    "pairs_schema",
    "prepare",
    "prompt_side",
    "render_pairs",
    "required",
    "select",
    "sft_dp",
    "sft_filter_long",
    "sink_pairs",
    "target_draw",
    "target_note",
    "target_start",
    "threshold",
    "unfiltered",
]


@dataclass(eq=False)
class PairBuild:
    pairs: pl.DataFrame
    sft: dict[str, pl.DataFrame]
    stats: PairStats
    decisions: pl.DataFrame
    prepared: Prepared


is_judge_column = kinds.is_judge_column  # a column some judge kind makes (factory/config/kinds.py)


def required(cfg: PairsConfig) -> dict[str, str]:
    """The optional scored columns the config needs -> the key that asks for them (for a preflight
    check before any sample is drawn)."""
    return required_columns(*resolve(cfg))


def unfiltered(prepared: Prepared, scored: pl.LazyFrame | pl.DataFrame, cfg: PairsConfig, scale_max: float) -> Prepared:
    """The samples prepared without the strategy's own term (shortest_correct's gate, reward's ranked
    column): what another strategy decides on (dp_sft, the report's long2short table, a comparison)."""
    if strategy_of(cfg).own_term is None:
        return prepared
    return prepare(scored, replace(cfg, strategy=DP_DPO), scale_max)


def prompt_side(cfg: PairsConfig) -> dict[str, tuple[str, str | None, pl.Expr]]:
    """The prompt-side columns the terms read -> (the key that asks for them, the prompts column they are made
    from, their expression): each text of rules.PROMPT_SIDE a term compares answers with, then its n-grams
    (made from the text, once per prompt: None)."""
    out: dict[str, tuple[str, str | None, pl.Expr]] = {}
    for term in resolve(cfg)[0]:
        reference = rules.OVERLAP.get(term.column)
        if reference is None or term.entry is None:
            continue
        source, text = rules.PROMPT_SIDE[reference]
        out.setdefault(reference, (term.key, source, text))
        grams = rules.reference_grams(reference, term.entry.n, term.entry.unit)
        out.setdefault(rules.grams_column(reference, term.entry.n, term.entry.unit), (term.key, None, grams))
    return out


def attach(
    scored: pl.LazyFrame | pl.DataFrame, prompts: pl.LazyFrame | pl.DataFrame, cfg: PairsConfig
) -> pl.LazyFrame | pl.DataFrame:
    """The scored samples with the prompt columns the config reads (pairs.balance.column, and the prompt-side
    texts of the terms and their n-grams: prompt_side), joined by prompt_id in their own row order; as they are
    when none is asked or the samples carry them already."""
    have = scored.lazy().collect_schema().names()
    side, grams = _joined(cfg, have, prompts.lazy().collect_schema().names())
    if not side:
        return scored
    joined = prompts.select("prompt_id", *side).with_columns(*grams)
    if isinstance(scored, pl.LazyFrame):
        return scored.join(joined.lazy(), on="prompt_id", how="left", maintain_order="left")
    joined = joined.collect() if isinstance(joined, pl.LazyFrame) else joined
    return scored.join(joined, on="prompt_id", how="left", maintain_order="left")


def _joined(cfg: PairsConfig, have: list[str], names: list[str]) -> tuple[list[pl.Expr], list[pl.Expr]]:
    """What `attach` joins onto samples with columns `have` from prompts with columns `names`: the prompts'
    columns (the balance column, the prompt-side texts) and the n-grams made from them. A column the config
    names that neither holds is a ConfigError naming its key and the columns there are."""
    side: list[pl.Expr] = []
    column = cfg.balance.column
    if column and column not in have:
        if column not in names:
            raise ConfigError(
                f"pairs.balance.column: {column!r} is in neither the prompts nor the scored samples (prompts have "
                f"{names}; the scored samples have {have})"
            )
        side.append(pl.col(column).cast(pl.String))
    grams: list[pl.Expr] = []
    for derived, (key, source, expression) in prompt_side(cfg).items():
        if derived in have:
            continue
        if source is None:  # n-grams of a text: made once per prompt, from the text
            grams.append(expression.alias(derived))
            continue
        if source not in names:
            raise ConfigError(
                f"{key}: reads the prompts' {source!r} column, which the prompts lack (they have {names})"
            )
        side.append(expression.alias(derived))
    return side, grams


def check_reads(cfg: PairsConfig, scored: list[str], prompts: list[str]) -> None:
    """Before any request (the run and the plan, once the prompts are loaded): every column the pair build
    will read is there, checked as the build checks it (`attach`, then the kernel's marks.check_columns) on the
    column names alone: `scored` the scored samples' columns as the run's graph makes them, `prompts` the
    prompts' columns. A ConfigError names the key and lists the columns there are."""
    side, grams = _joined(cfg, scored, prompts)
    names = [*scored, *(e.meta.output_name() for e in (*side, *grams))]
    terms, judges = resolve(cfg)
    check_columns(names, terms, judges, rules.key_columns(cfg.dedupe, cfg.include_reasoning), cfg.balance.column)


def build(
    scored: pl.LazyFrame | pl.DataFrame,
    prompts: pl.LazyFrame | pl.DataFrame,
    cfg: PairsConfig,
    scale_max: float = 100.0,
) -> PairBuild:
    """Scored samples + prompts -> pairs rows, the SFT exports pairs.sft asks for, and stats.
    `scale_max` is the judge's scale (judge.scale_max): dim_* terms are normalized by it."""
    require_columns(prompts.lazy(), ("prompt_id", "messages"), "pairs")
    scored = attach(scored, prompts, cfg)
    prepared = prepare(scored, cfg, scale_max)
    decisions, stats = decide(prepared, cfg)
    pairs = render_pairs(decisions, scored, prompts, cfg).collect()
    sft = {}
    if "filter_long" in cfg.sft:
        sft["filter_long"] = sft_filter_long(prepared, scored, prompts, cfg)
    if "dp_sft" in cfg.sft:
        dp_cfg = replace(cfg, strategy=DP_DPO)
        dp = decisions if cfg == dp_cfg else decide(unfiltered(prepared, scored, cfg, scale_max), dp_cfg)[0]
        sft["dp_sft"] = sft_dp(dp, scored, prompts, cfg)
    return PairBuild(pairs, sft, stats, decisions, prepared)
