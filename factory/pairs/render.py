"""The output of a pair build: the decided pairs (factory.pairs.kernel) -> pairs rows per the pairs/
contract, and the SFT exports. Text is fetched only for the samples that are used.

    rows in (decisions): prompt_id=p1  chosen_idx=0  chosen_row=0  rejected_idx=1  rejected_row=1  margin ...
    row out (pairs):  prompt=[{system}, {user}]  chosen=[{assistant: "<think>\\n...\\n</think>\\n\\nanswer"}]
                      rejected=[...]  prompt_id=p1  chosen_idx=0 ... margin  strategy=dp_dpo

Formats: conversational (factory.rundir.schemas.PAIRS, what TRL's DPOTrainer loads as is) or standard
(prompt/chosen/rejected as plain strings); `include_reasoning: false` leaves the <think> part out, and a
sample without reasoning is its answer alone (never an empty think block). The student's own chat
template is applied by factory.pairs.export (export/<name>/).
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from factory.config import PairsConfig
from factory.pairs.marks import Prepared
from factory.pairs.rules import has_reasoning
from factory.rundir.schemas import PAIRS


# -- rendering ---------------------------------------------------------------------------------
def pairs_schema(fmt: str, repeat: bool = False) -> pa.Schema:
    """PAIRS for the conversational format; prompt/chosen/rejected as plain strings for standard.
    `repeat` (pairs.balance.floor): a last int64 column, 0 on a pair's own row, 1.. on its repeats."""
    schema = PAIRS
    if fmt != "conversational":
        schema = pa.schema(
            [pa.field(f.name, pa.string()) if f.name in ("prompt", "chosen", "rejected") else f for f in PAIRS]
        )
    return schema.append(pa.field("repeat", pa.int64())) if repeat else schema


def assistant_content(reasoning: pl.Expr, answer: pl.Expr, include_reasoning: bool) -> pl.Expr:
    """The assistant turn's text: `<think>\\nreasoning\\n</think>\\n\\nanswer` (R1's own form), or the answer
    alone when the sample has no reasoning or `include_reasoning` is false: never an empty think block,
    which a trainer would teach the student to emit."""
    if not include_reasoning:
        return answer.fill_null("")
    think = pl.concat_str(
        [pl.lit("<think>\n"), reasoning.fill_null(""), pl.lit("\n</think>\n\n"), answer.fill_null("")]
    )
    return pl.when(has_reasoning(reasoning)).then(think).otherwise(answer.fill_null(""))


def as_messages(content: pl.Expr) -> pl.Expr:
    return pl.concat_list(pl.struct(pl.lit("assistant").alias("role"), content.alias("content")))


def _arrow(series: pl.Series) -> pa.Array:
    array = series.to_arrow()
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def conversations(prompt_messages: pl.Series, at: np.ndarray, content: pa.Array | None, name: str) -> pl.Series:
    """Row i: the messages of prompt `at[i]` (positions in `prompt_messages`), then, when `content` is
    given (`fetch_content`'s Arrow strings), one assistant message holding content[i]. Built as one Arrow
    gather of the messages' structs (what `pl.concat_list` of a list and a struct per row gives, without
    a list built per row)."""
    lists = _arrow(prompt_messages)
    offsets = lists.offsets.to_numpy().astype(np.int64)  # of the unsliced values, as .values is
    values = lists.values
    extra = 0 if content is None else 1
    lengths = offsets[at + 1] - offsets[at] + extra
    new_offsets = np.zeros(len(at) + 1, np.int64)
    np.cumsum(lengths, out=new_offsets[1:])
    take = np.arange(new_offsets[-1], dtype=np.int64) - np.repeat(new_offsets[:-1] - offsets[at], lengths)
    if content is not None:
        take[new_offsets[1:] - 1] = len(values) + np.arange(len(at))
        role = pl.repeat("assistant", len(at), eager=True, dtype=pl.String)
        added = pa.StructArray.from_arrays([_arrow(role), content], fields=list(values.type))
        values = pa.concat_arrays([values, added])
    merged = pa.LargeListArray.from_arrays(pa.array(new_offsets), values.take(pa.array(take)))
    return pl.Series(name, merged)


def assistant_messages(content: pa.Array, name: str) -> pl.Series:
    """One assistant message per row: [{role: assistant, content}] (as `as_messages`, built in Arrow)."""
    role = pl.repeat("assistant", len(content), eager=True, dtype=pl.String)
    struct = pa.StructArray.from_arrays([_arrow(role), content], names=["role", "content"])
    offsets = pa.array(np.arange(len(content) + 1, dtype=np.int64))
    return pl.Series(name, pa.LargeListArray.from_arrays(offsets, struct))


def prompt_positions(prompt_id: pl.Series, prompts: pl.DataFrame) -> pl.DataFrame:
    """For each row's prompt_id, its position in `prompts` (null when the prompt is not there)."""
    index = prompts.select("prompt_id").with_row_index("_at")
    return prompt_id.to_frame("prompt_id").join(index, on="prompt_id", how="left", maintain_order="left")


def prompt_text(messages: pl.Expr) -> pl.Expr:
    """Standard (string) format prompt: the messages' contents joined by blank lines, system first.
    No chat template is applied: that belongs to the trainer's tokenizer."""
    return messages.list.eval(pl.element().struct.field("content")).list.join("\n\n")


def fetch_content(scored: pl.LazyFrame | pl.DataFrame, rows: pl.Series, cfg: PairsConfig) -> pa.Array:
    """The assistant content of the samples at positions `rows` of `scored`, in that order, as Arrow
    strings (what the message lists are built from, so the text is not converted back and forth). In
    memory this is a gather; over a LazyFrame (Parquet scan) only those rows' text is kept."""
    content = assistant_content(pl.col("reasoning"), pl.col("answer"), cfg.include_reasoning).alias("content")
    if isinstance(scored, pl.DataFrame):
        picked = scored.select(pl.col("reasoning", "answer").gather(rows))
        if not cfg.include_reasoning:
            return _large(picked.select(content).to_series())
        # The same text as `assistant_content`, joined by Arrow (several times faster than concat_str here).
        text = [pa.scalar(part, pa.large_string()) for part in ("<think>\n", "\n</think>\n\n", "")]
        answer = _large(picked["answer"])
        joined = pc.binary_join_element_wise(
            text[0], _large(picked["reasoning"]), text[1], answer, text[2], null_handling="replace", null_replacement=""
        )
        # No reasoning: the answer alone, never an empty think block (rules.has_reasoning decides, as above).
        has = picked.select(has_reasoning(pl.col("reasoning"))).to_series().to_arrow()
        return pc.if_else(has, joined, pc.fill_null(answer, pa.scalar("", pa.large_string())))
    if not rows.len():
        return pa.array([], pa.large_string())
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
    return _large(wanted.join(found, on="row", how="left", maintain_order="left")["content"])


def _strings(content: pa.Array, name: str) -> pl.Series:
    return pl.Series(name, content, pl.String)


def _large(series: pl.Series) -> pa.Array:
    """A string column as one Arrow large_string array."""
    array = _arrow(series)
    return array if array.type == pa.large_string() else array.cast(pa.large_string())


def render_pairs(
    groups: pl.DataFrame, scored: pl.LazyFrame | pl.DataFrame, prompts: pl.LazyFrame | pl.DataFrame, cfg: PairsConfig
) -> pl.LazyFrame:
    """Kept pairs (of the decisions from `factory.pairs.kernel.decide`, in prompt_id order) -> pairs rows in
    `pairs_schema(cfg.format)`, in prompt_id order. Lazy only where `prompts` is (a Parquet scan
    then streams into sink_parquet); in memory every step runs eagerly, which is faster here."""
    kept = _with_repeats(groups.filter(pl.col("outcome") == "kept"))
    prompt = pl.col("messages") if cfg.format == "conversational" else prompt_text(pl.col("messages"))
    side = as_messages if cfg.format == "conversational" else (lambda content: content)
    content = fetch_content(scored, pl.concat([kept["chosen_row"], kept["rejected_row"]]), cfg)
    chosen, rejected = content[: kept.height], content[kept.height :]
    if isinstance(prompts, pl.DataFrame):  # in memory: gathers by position, messages built in Arrow
        at = prompt_positions(kept["prompt_id"], prompts)["_at"]
        text = prompts["messages"] if cfg.format == "conversational" else prompts.select(prompt).to_series()
        sides = assistant_messages if cfg.format == "conversational" else _strings
        out = kept.with_columns(sides(chosen, "chosen"), sides(rejected, "rejected"), text.gather(at).alias("prompt"))
    else:
        out = kept.with_columns(_strings(chosen, "chosen"), _strings(rejected, "rejected"))
        out = out.with_columns(side(pl.col("chosen")).alias("chosen"), side(pl.col("rejected")).alias("rejected"))
        prompts_side = prompts.select("prompt_id", prompt.alias("prompt"))
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
        *(["repeat"] if "repeat" in kept.columns else []),
    )


def _with_repeats(kept: pl.DataFrame) -> pl.DataFrame:
    """pairs.balance.floor: each kept pair followed by its `repeats` copies, marked `repeat` 0, 1, ..."""
    if "repeats" not in kept.columns:
        return kept
    times = kept["repeats"].to_numpy() + 1
    at = np.repeat(np.arange(kept.height), times)
    first = np.repeat(np.cumsum(times) - times, times)
    return kept[at].with_columns(pl.Series("repeat", np.arange(len(at)) - first, pl.Int64))


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
    schema = pairs_schema(cfg.format, "repeats" in kept.columns)
    written = 0
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for start in range(0, max(kept.height, 1), batch):
            part = kept.slice(start, batch)
            table = render_pairs(part, scored, prompts, cfg).collect().to_arrow().cast(schema)
            writer.write_table(table)
            written += table.num_rows
    return written


# -- SFT exports -------------------------------------------------------------------------------
def _sft_frame(
    rows: pl.DataFrame, content: pa.Array, prompts: pl.LazyFrame | pl.DataFrame, source: str, cfg: PairsConfig
) -> pl.DataFrame:
    """rows: prompt_id, sample_idx, completion_tokens, quality, with `content` (fetch_content's, row for
    row) -> one SFT example each, in (prompt_id, sample_idx) order; a row whose prompt is not in `prompts`
    is left out.

    Output columns: prompt_id, sample_idx, messages (prompt + assistant) for the conversational
    format, or prompt and completion strings for the standard one; completion_tokens, quality, source.
    The prompt side is gathered by position (no join carrying the messages); the standard format's
    prompt string is made once per prompt.
    """
    prompts = prompts.select("prompt_id", "messages")
    prompts = prompts.collect() if isinstance(prompts, pl.LazyFrame) else prompts
    at = prompt_positions(rows["prompt_id"], prompts)["_at"]
    rows = rows.with_row_index("_content").with_columns(at).filter(pl.col("_at").is_not_null())
    if not _in_order(rows["prompt_id"], rows["sample_idx"]):  # the callers' rows usually are
        rows = rows.sort("prompt_id", "sample_idx")
    order = rows["_content"].to_numpy()
    if len(order) != len(content) or not np.array_equal(order, np.arange(len(order))):  # rows left out or moved
        content = content.take(pa.array(order))
    positions = rows["_at"].to_numpy().astype(np.int64)
    if cfg.format == "conversational":
        text = [conversations(prompts["messages"], positions, content, "messages")]
    else:
        strings = prompts.select(prompt_text(pl.col("messages")))
        text = [strings.to_series().gather(rows["_at"]).alias("prompt"), _strings(content, "completion")]
    return rows.select(
        "prompt_id",
        pl.col("sample_idx").cast(pl.Int64),
        *text,
        pl.col("completion_tokens").cast(pl.Int64),
        pl.col("quality").cast(pl.Float64),
        pl.lit(source).alias("source"),
    )


def _in_order(prompt_id: pl.Series, sample_idx: pl.Series) -> bool:
    """Whether the rows are in (prompt_id, sample_idx) order already."""
    if prompt_id.len() < 2:
        return True
    if not prompt_id.is_sorted():
        return False
    same = (prompt_id.slice(1) == prompt_id.slice(0, prompt_id.len() - 1)).to_numpy()
    idx = sample_idx.to_numpy()
    return bool(np.all(~same | (idx[1:] >= idx[:-1])))


def sft_filter_long(
    prepared: Prepared, scored: pl.LazyFrame | pl.DataFrame, prompts: pl.LazyFrame | pl.DataFrame, cfg: PairsConfig
) -> pl.DataFrame:
    """Filter-long SFT baseline: every valid sample (the build's exclusions, duplicates and filters
    included) with at most `cfg.sft_max_tokens` decoded tokens."""
    keep = (
        prepared.valid.filter(pl.col("completion_tokens") <= cfg.sft_max_tokens)
        .sort("gid", "sample_idx")  # numbers: the (prompt_id, sample_idx) order, before any text is fetched
        .select("row", "prompt_id", "sample_idx", "completion_tokens", "quality")
    )
    return _sft_frame(keep, fetch_content(scored, keep["row"], cfg), prompts, "filter_long", cfg)


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
    )
    return _sft_frame(rows, fetch_content(scored, kept["chosen_row"], cfg), prompts, "dp_sft", cfg)
