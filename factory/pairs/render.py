"""The output of a pair build: the decided pairs (factory.pairs.kernel) -> pairs rows per the pairs/
contract, and the SFT exports. Text is fetched only for the samples that are used.

    rows in (decisions): prompt_id=p1  chosen_idx=0  chosen_row=0  rejected_idx=1  rejected_row=1  margin ...
    row out (pairs):  prompt=[{system}, {user}]  chosen=[{assistant: "<think>\\n...\\n</think>\\n\\nanswer"}]
                      rejected=[...]  prompt_id=p1  chosen_idx=0 ... margin  strategy=dp_dpo

Formats: conversational (factory.schemas.PAIRS, what TRL's DPOTrainer loads as is) or standard
(prompt/chosen/rejected as plain strings); `include_reasoning: false` leaves the <think> part out, and a
sample without reasoning is its answer alone (never an empty think block). The student's own chat
template is applied by factory.pairs.export (export/<name>/).
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from factory.config import PairsConfig
from factory.pairs.marks import Prepared
from factory.pairs.rules import has_reasoning
from factory.schemas import PAIRS


# -- rendering ---------------------------------------------------------------------------------
def pairs_schema(fmt: str) -> pa.Schema:
    """PAIRS for the conversational format; prompt/chosen/rejected as plain strings for standard."""
    if fmt == "conversational":
        return PAIRS
    return pa.schema(
        [pa.field(f.name, pa.string()) if f.name in ("prompt", "chosen", "rejected") else f for f in PAIRS]
    )


def assistant_content(reasoning: pl.Expr, answer: pl.Expr, include_reasoning: bool) -> pl.Expr:
    """The assistant turn's text: `<think>\\nreasoning\\n</think>\\n\\nanswer` (R1's own form), or the answer
    alone when the sample has no reasoning or `include_reasoning` is false: never an empty think block,
    which a trainer would teach the student to emit."""
    if not include_reasoning:
        return answer.fill_null("")
    think = pl.concat_str([pl.lit("<think>\n"), reasoning.fill_null(""), pl.lit("\n</think>\n\n"), answer.fill_null("")])
    return pl.when(has_reasoning(reasoning)).then(think).otherwise(answer.fill_null(""))


def as_messages(content: pl.Expr) -> pl.Expr:
    return pl.concat_list(pl.struct(pl.lit("assistant").alias("role"), content.alias("content")))


def prompt_text(messages: pl.Expr) -> pl.Expr:
    """Standard (string) format prompt: the messages' contents joined by blank lines, system first.
    No chat template is applied: that belongs to the trainer's tokenizer."""
    return messages.list.eval(pl.element().struct.field("content")).list.join("\n\n")


def fetch_content(scored: pl.LazyFrame | pl.DataFrame, rows: pl.Series, cfg: PairsConfig) -> pl.Series:
    """The assistant content of the samples at positions `rows` of `scored`, in that order. In
    memory this is a gather; over a LazyFrame (Parquet scan) only those rows' text is kept."""
    content = assistant_content(pl.col("reasoning"), pl.col("answer"), cfg.include_reasoning).alias("content")
    if isinstance(scored, pl.DataFrame):
        return scored.select(pl.col("reasoning", "answer").gather(rows)).select(content).to_series()
    if not rows.len():
        return pl.Series("content", [], pl.String)
    # Only the row range in question is read (slice pushdown), and a streaming filter keeps just the
    # wanted rows' text; a join here could hash the whole scan.
    first, last = int(rows.min()), int(rows.max())  # type: ignore[arg-type]
    found = (
        scored.slice(first, last - first + 1)
        .with_row_index("row", offset=first)
        .filter(pl.col("row").is_in(rows.implode()))
        .select("row", content)
        .collect(engine="streaming")
    )
    wanted = pl.DataFrame({"row": rows})
    return wanted.join(found, on="row", how="left", maintain_order="left")["content"]


def render_pairs(
    groups: pl.DataFrame, scored: pl.LazyFrame | pl.DataFrame, prompts: pl.LazyFrame | pl.DataFrame, cfg: PairsConfig
) -> pl.LazyFrame:
    """Kept pairs (of the decisions from `factory.pairs.kernel.decide`, in prompt_id order) -> pairs rows in
    `pairs_schema(cfg.format)`, in prompt_id order. Lazy only where `prompts` is (a Parquet scan
    then streams into sink_parquet); in memory every step runs eagerly, which is faster here."""
    kept = groups.filter(pl.col("outcome") == "kept")
    prompt = pl.col("messages") if cfg.format == "conversational" else prompt_text(pl.col("messages"))
    side = as_messages if cfg.format == "conversational" else (lambda content: content)
    content = fetch_content(scored, pl.concat([kept["chosen_row"], kept["rejected_row"]]), cfg)
    out = kept.with_columns(content[: kept.height].alias("chosen"), content[kept.height :].alias("rejected"))
    out = out.with_columns(side(pl.col("chosen")).alias("chosen"), side(pl.col("rejected")).alias("rejected"))
    prompts_side = prompts.select("prompt_id", prompt.alias("prompt"))
    if isinstance(prompts_side, pl.DataFrame):
        out = out.join(prompts_side, on="prompt_id", how="left", maintain_order="left")
    else:
        out = out.lazy().join(prompts_side, on="prompt_id", how="left", maintain_order="left")  # type: ignore[assignment]
    return out.lazy().select(
        "prompt",
        "chosen",
        "rejected",
        "prompt_id",
        *[pl.col(f"{s}_{c}").cast(pl.Int64) for c in ("idx", "tokens") for s in ("chosen", "rejected")],
        *[pl.col(f"{s}_{c}").cast(pl.Float64) for c in ("quality", "score") for s in ("chosen", "rejected")],
        "margin",
        pl.lit(cfg.strategy).alias("strategy"),
    )


def sink_pairs(
    groups: pl.DataFrame,
    scored: pl.LazyFrame,
    prompts: pl.LazyFrame,
    cfg: PairsConfig,
    path: str,
    batch: int = 100_000,
) -> int:
    """Kept pairs -> one Parquet file at `path`, `batch` pairs at a time, so that the text held at
    once is one batch's (for runs too big to render in memory). Returns the pairs written."""
    import pyarrow.parquet as pq

    kept = groups.filter(pl.col("outcome") == "kept")
    schema = pairs_schema(cfg.format)
    written = 0
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for start in range(0, max(kept.height, 1), batch):
            part = kept.slice(start, batch)
            table = render_pairs(part, scored, prompts, cfg).collect().to_arrow().cast(schema)
            writer.write_table(table)
            written += table.num_rows
    return written


# -- SFT exports -------------------------------------------------------------------------------
def _sft_frame(rows: pl.LazyFrame, prompts: pl.LazyFrame, source: str, cfg: PairsConfig) -> pl.DataFrame:
    """rows: prompt_id, sample_idx, completion_tokens, quality, content -> one SFT example each.

    Output columns: prompt_id, sample_idx, messages (prompt + assistant) for the conversational
    format, or prompt and completion strings for the standard one; completion_tokens, quality, source.
    """
    joined = rows.join(prompts.select("prompt_id", "messages"), on="prompt_id", how="inner")
    if cfg.format == "conversational":
        text = [pl.concat_list("messages", as_messages(pl.col("content"))).alias("messages")]
    else:
        text = [prompt_text(pl.col("messages")).alias("prompt"), pl.col("content").alias("completion")]
    return (
        joined.select(
            "prompt_id",
            pl.col("sample_idx").cast(pl.Int64),
            *text,
            pl.col("completion_tokens").cast(pl.Int64),
            pl.col("quality").cast(pl.Float64),
            pl.lit(source).alias("source"),
        )
        .sort("prompt_id", "sample_idx")
        .collect()
    )


def sft_filter_long(
    prepared: Prepared, scored: pl.LazyFrame | pl.DataFrame, prompts: pl.LazyFrame | pl.DataFrame, cfg: PairsConfig
) -> pl.DataFrame:
    """Filter-long SFT baseline: every valid sample (the build's exclusions, duplicates and filters
    included) with at most `cfg.sft_max_tokens` decoded tokens."""
    keep = prepared.valid.filter(pl.col("completion_tokens") <= cfg.sft_max_tokens).select(
        "row", "prompt_id", "sample_idx", "completion_tokens", "quality"
    )
    rows = keep.with_columns(fetch_content(scored, keep["row"], cfg).alias("content")).lazy()
    return _sft_frame(rows, prompts.lazy(), "filter_long", cfg)


def sft_dp(
    dp_groups: pl.DataFrame, scored: pl.LazyFrame | pl.DataFrame, prompts: pl.LazyFrame | pl.DataFrame, cfg: PairsConfig
) -> pl.DataFrame:
    """DP-SFT: the chosen side of the kept dp_dpo pairs (`dp_groups`: decisions), each sample once
    (with several pairs per group a chosen sample can head many)."""
    kept = dp_groups.filter(pl.col("outcome") == "kept").unique(["prompt_id", "chosen_idx"], maintain_order=True)
    rows = kept.select(
        "prompt_id",
        pl.col("chosen_idx").alias("sample_idx"),
        pl.col("chosen_tokens").alias("completion_tokens"),
        pl.col("chosen_quality").alias("quality"),
        fetch_content(scored, kept["chosen_row"], cfg).alias("content"),
    ).lazy()
    return _sft_frame(rows, prompts.lazy(), "dp_sft", cfg)
