"""long2short as the source did it (Kimi k1.5's long2short DPO, reproduced in the source's section 4.4):
the prompts whose samples ran long (decoded tokens above the filter-long limit, 400) are sampled again
several times; where a sample comes in under 400 tokens, the shortest is chosen and the longest
rejected. The source: 4915 such prompts, 4650 succeeded, chosen 300.1 vs rejected 515.8 tokens.

On the factory's keys this is two runs, no new machinery:

    factory run conf.yaml                                     # K samples of every prompt
    factory pairs RUN_DIR --long-prompts long.jsonl           # the prompts whose samples ran long
    factory run conf.yaml prompts.path=long.jsonl sampler.k=16 pairs.strategy=long2short \\
        output_dir=runs/long2short                           # only those prompts, 16 fresh samples each

The second run's report ("long2short" table) gives the source's counts: prompts that ran long,
succeeded (a sample under pairs.max_chosen_tokens), mean chosen and rejected tokens. The prompts file
holds each prompt's rendered messages under its own prompt_id as the id, so the second run samples
exactly the same prompt text (a ready `messages` column is used as it is).

    rows in (samples):  p1: 380, 520 tokens (ran long)      p2: 120, 300 (did not)
    long.jsonl:         {"id": "p1", "messages": [...], ...the prompt's input fields}
"""

from __future__ import annotations

from typing import Any

import polars as pl

from factory.config import PairsConfig


def long_prompt_ids(scored: pl.DataFrame | pl.LazyFrame, cfg: PairsConfig) -> pl.Series:
    """Prompt ids with a sample (no engine error) of more than pairs.sft_max_tokens decoded tokens:
    what the filter-long SFT baseline drops (truncated samples included: they ran long)."""
    over = pl.col("error").is_null() & (pl.col("completion_tokens") > cfg.sft_max_tokens)
    ids = scored.lazy().filter(over).select(pl.col("prompt_id").unique(maintain_order=True)).collect()
    return ids.to_series().sort()


def long_prompts(scored: pl.DataFrame | pl.LazyFrame, prompts: pl.DataFrame, cfg: PairsConfig) -> pl.DataFrame:
    """The prompts rows of `long_prompt_ids`, ready to be a prompts file: id (= prompt_id), messages
    (as rendered), and the input's other fields."""
    ids = long_prompt_ids(scored, cfg)
    rows = prompts.filter(pl.col("prompt_id").is_in(ids.implode()))
    fields = [c for c in rows.columns if c not in ("prompt_id", "row_index", "messages", "id")]
    return rows.select(pl.col("prompt_id").alias("id"), "messages", *fields).sort("id")


def source_counts(decisions: pl.DataFrame, cfg: PairsConfig) -> dict[str, Any]:
    """From a long2short decision (one pair per group): the groups that ran long (their longest valid
    sample at or above max_chosen_tokens) and how many of them succeeded (a kept pair: a sample under
    the limit), the source's "4650 of 4915"."""
    long = decisions.filter(pl.col("rejected_tokens") >= cfg.max_chosen_tokens)
    succeeded = long.filter(pl.col("outcome") == "kept")
    return {
        "groups_ran_long": long.height,
        "groups_ran_long_succeeded": succeeded.height,
        "mean_chosen_tokens_ran_long": succeeded["chosen_tokens"].cast(pl.Float64).mean() if succeeded.height else None,
        "mean_rejected_tokens_ran_long": succeeded["rejected_tokens"].cast(pl.Float64).mean()
        if succeeded.height
        else None,
    }
