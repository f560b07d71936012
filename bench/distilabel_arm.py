"""The peer arm of bench_pairs.py: distilabel's DPO pair step (FormatTextGenerationDPO: per prompt, the
generation with the highest rating is chosen and the one with the lowest rejected; nothing else).

    items = distilabel_arm.items(scored, prompts)      # its input: one dict per prompt (not timed)
    distilabel_arm.format_dpo(items)                   # the step's logic in this environment
    python bench/distilabel_arm.py ITEMS.pickle N      # the real step, in an environment with distilabel

Its input is what distilabel's pipeline hands the step: per prompt the instruction (the user message),
the system prompt, the generations (the assistant content the factory writes: reasoning in <think> tags +
answer) and their ratings (the primary judge's quality). Samples with an engine error or no rating are
left out beforehand (the step cannot take a None rating); the step applies no other rule.
"""

from __future__ import annotations

import hashlib
import pickle
import sys
import time
from typing import Any


def items(scored: Any, prompts: Any) -> list[dict[str, Any]]:
    """The step's input rows (built with polars, outside any timing)."""
    import polars as pl

    content = pl.concat_str([pl.lit("<think>\n"), pl.col("reasoning").fill_null(""), pl.lit("\n</think>\n\n"),
                             pl.col("answer").fill_null("")])  # fmt: skip
    rated = (
        scored.filter(pl.col("error").is_null() & pl.col("quality").is_not_null() & pl.col("quality").is_not_nan())
        .group_by("prompt_id", maintain_order=True)
        .agg(content.alias("generations"), pl.col("quality").alias("ratings"))
    )
    text = prompts.select(
        "prompt_id",
        pl.col("messages").list.eval(pl.element().filter(pl.element().struct.field("role") == "user"))
        .list.first().struct.field("content").alias("instruction"),
        pl.col("messages").list.eval(pl.element().filter(pl.element().struct.field("role") == "system"))
        .list.first().struct.field("content").alias("system_prompt"),
    )  # fmt: skip
    return rated.join(text, on="prompt_id", how="inner").drop("prompt_id").to_dicts()


def format_dpo(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """FormatTextGenerationDPO's rule, row by row: highest rating chosen, lowest rejected (the first
    one on a tie: with all ratings equal, chosen and rejected are the same generation)."""
    for row in rows:
        messages = [{"role": "user", "content": row["instruction"]}]
        if isinstance(row.get("system_prompt"), str) and row["system_prompt"]:
            messages.insert(0, {"role": "system", "content": row["system_prompt"]})
        row["prompt"] = row["instruction"]
        row["prompt_id"] = hashlib.sha256(row["prompt"].encode("utf-8")).hexdigest()
        ratings = row["ratings"]
        best = max(range(len(ratings)), key=ratings.__getitem__)
        worst = min(range(len(ratings)), key=ratings.__getitem__)
        row["chosen"] = messages + [{"role": "assistant", "content": row["generations"][best]}]
        row["chosen_rating"] = ratings[best]
        row["rejected"] = messages + [{"role": "assistant", "content": row["generations"][worst]}]
        row["rejected_rating"] = ratings[worst]
    return rows


def _real(path: str, repeats: int) -> None:
    """In an environment with distilabel: the best of `repeats` runs of the real step; prints ms."""
    import gc
    import logging

    logging.disable(logging.WARNING)
    from distilabel.steps import FormatTextGenerationDPO

    with open(path, "rb") as f:
        rows = pickle.load(f)
    step = FormatTextGenerationDPO()
    step.load()
    best = cpu = float("inf")
    for _ in range(repeats):
        gc.collect()
        start, start_cpu = time.perf_counter(), time.process_time()
        out = next(step.process(rows))
        best, cpu = min(best, time.perf_counter() - start), min(cpu, time.process_time() - start_cpu)
    assert len(out) == len(rows) and "chosen" in out[0]
    print(f"{best * 1000:.3f} {cpu * 1000:.3f}")  # wall and CPU milliseconds


if __name__ == "__main__":
    _real(sys.argv[1], int(sys.argv[2]))
