"""Rule values over the text columns, evaluated while the scored samples stream (a Parquet scan is read
in batches and only the numbers they produce are kept), never a Python loop per row.

    rows in:  answer="Link 3 is in stock, link 3 is in stock."  reasoning=""
    values:   repetition (answer, n=3, word) = 1 - distinct 3-grams / 3-grams = 1 - 6/8
              answer_chars = 40      think (require=true) = 1 (no reasoning: breaks the rule)
              format (pattern "[Ll]ink \\d", require=true) = 0 (matches)

Normalized text (duplicate keys, words): lower-cased, every run of whitespace (Unicode White_Space)
made one space, ends stripped. Words are the space-separated tokens of the normalized text; `unit:
char` takes the characters instead, whitespace dropped (for Chinese, which has no spaces between
words). Two samples are duplicates when their normalized texts are equal (64-bit hash).

The repeated n-gram ratio reads the normalized text (`normalized_columns`) one batch at a time: polars
splits and hashes the tokens, numpy forms the n-gram hashes over the batch's flat token array, and
polars counts distinct n-grams per row. Two different n-grams share a 64-bit hash with negligible
probability. The overlap rules (copies_prompt, repeats_history) compare the same n-gram hashes of the
answer with those of a prompt-side text, which `factory.pairs.attach` makes once per prompt.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import polars as pl
import pyarrow as pa

# Any whitespace other than a plain space, or a run of two or more: replacing these by one space
# collapses whitespace like `\s+` does, about 3x faster (most spaces are single and need no rewrite).
_WHITESPACE_RUN = r"\s\s+|[^\S ]"
_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit multiplier: combines token hashes into an n-gram hash
_EMPTY = np.uint64(pl.Series([""]).hash()[0])  # the one token an empty text splits into


def normalized(text: pl.Expr) -> pl.Expr:
    """Lower case, whitespace collapsed, ends stripped (null -> "")."""
    return text.fill_null("").str.to_lowercase().str.replace_all(_WHITESPACE_RUN, " ").str.strip_chars()


def normalized_column(column: str) -> str:
    return f"_normalized_{column}"


def normalized_columns(columns: set[str]) -> list[pl.Expr]:
    """The normalized text of each column in `columns`, added once before the rules read it."""
    return [normalized(pl.col(c)).alias(normalized_column(c)) for c in sorted(columns)]


def ngram_hashes(text: pl.Series, n: int, unit: str) -> pl.Series:
    """Each normalized text's n-gram hashes, in order (none with fewer than n tokens), one batch at a time
    with no loop over rows: polars splits and hashes the tokens, numpy forms the n-gram hashes over the
    batch's flat token array."""
    tokens = text.str.replace_all(" ", "", literal=True).str.split("") if unit == "char" else text.str.split(" ")
    arrow = tokens.list.eval(pl.element().hash()).to_arrow()
    if isinstance(arrow, pa.ChunkedArray):
        arrow = arrow.combine_chunks()
    offsets = arrow.offsets.to_numpy().astype(np.int64)
    offsets -= offsets[0]
    flat = arrow.values.to_numpy(zero_copy_only=False).astype(np.uint64, copy=False)[: offsets[-1]]
    starts, lengths = offsets[:-1], np.diff(offsets)
    if len(flat):  # an empty text splits into one empty token: it has none. Any other row's tokens are all words.
        lengths[(lengths == 1) & (flat[np.minimum(starts, len(flat) - 1)] == _EMPTY)] = 0
    grams = np.maximum(lengths - (n - 1), 0)
    total = int(grams.sum())
    gram_offsets = np.r_[0, np.cumsum(grams)]
    if total == 0:
        return pl.Series(text.name, pa.LargeListArray.from_arrays(pa.array(gram_offsets), pa.array([], pa.uint64())))
    span = len(flat) - (n - 1)
    with np.errstate(over="ignore"):
        gram_hash = flat[:span].copy()
        for k in range(1, n):
            gram_hash = gram_hash * _MIX + flat[k : k + span]
    # Row r's n-grams start at starts[r] .. starts[r] + grams[r] - 1: none crosses into the next row.
    take = np.repeat(starts - gram_offsets[:-1], grams) + np.arange(total)
    return pl.Series(text.name, pa.LargeListArray.from_arrays(pa.array(gram_offsets), pa.array(gram_hash[take])))


def repeated_ngram_ratio(text: pl.Series, n: int, unit: str) -> pl.Series:
    """1 - distinct n-grams / n-grams of each normalized text (0 with fewer than n tokens)."""
    per_row = ngram_hashes(text, n, unit)
    grams = per_row.list.len().to_numpy().astype(np.float64)
    distinct = per_row.list.n_unique().to_numpy().astype(np.float64)
    return pl.Series(text.name, np.where(grams > 0, 1.0 - distinct / np.maximum(grams, 1), 0.0))


def repetition(column: str, n: int, unit: str) -> pl.Expr:
    """repeated_ngram_ratio of a text column, read from its normalized column (`normalized_columns`),
    as an elementwise expression (it streams with the scan)."""
    return pl.col(normalized_column(column)).map_batches(
        partial(repeated_ngram_ratio, n=n, unit=unit), return_dtype=pl.Float64, is_elementwise=True
    )


def answer_chars() -> pl.Expr:
    return pl.col("answer").fill_null("").str.len_chars().cast(pl.Float64)


def format_violation(pattern: str, require: bool) -> pl.Expr:
    """1.0 when the answer breaks the rule (require: must match `pattern`; else: must not), else 0.0."""
    found = pl.col("answer").fill_null("").str.contains(pattern)
    return (~found if require else found).cast(pl.Float64)


def think_violation(require: bool) -> pl.Expr:
    """1.0 when the <think> block (the reasoning, non-blank) is missing and required, or present and
    forbidden."""
    present = has_reasoning(pl.col("reasoning"))
    return (~present if require else present).cast(pl.Float64)


def has_tag(tag: str) -> pl.Expr:
    """1.0 when the judge's tags (the `tags` list column) hold `tag`, else 0.0 (no tags: 0.0)."""
    return pl.col("tags").list.contains(pl.lit(tag, pl.String)).fill_null(False).cast(pl.Float64)


def has_reasoning(reasoning: pl.Expr) -> pl.Expr:
    """True when a sample has reasoning: non-blank text. The think term and the exports (a think block
    only where this holds) share it."""
    return reasoning.fill_null("").str.contains(r"\S")


def key_columns(mode: str, include_reasoning: bool) -> tuple[str, ...]:
    """The text columns a duplicate is judged by: `content` = what the trainer sees (reasoning and
    answer when include_reasoning, else the answer), `answer`; none for `off`."""
    if mode == "off":
        return ()
    return ("reasoning", "answer") if mode == "content" and include_reasoning else ("answer",)


def duplicate_key(columns: tuple[str, ...]) -> pl.Expr:
    """u64 hash of the normalized text of `columns`, read from `normalized_columns` (added in a step
    of their own: the streaming engine then holds far less text at once than with the normalization
    inside this expression)."""
    texts = [pl.col(normalized_column(c)).alias(c) for c in columns]
    return texts[0].hash() if len(texts) == 1 else pl.struct(texts).hash()


# -- a cheap necessary condition for duplicates (in-memory frames) ----------------------------------
_CJK_MIX = np.uint64(0x9E3779B97F4A7C15)
_SIGNATURE_BYTES = 1 << 18  # bytes handled at once: the scratch buffers stay in cache and are reused


def text_signature(text: pl.Series) -> np.ndarray:
    """A u64 per row that is equal for any two texts whose normalized forms (`normalized`) are equal.
    It counts only characters that neither lower-casing nor whitespace collapsing changes or makes: ASCII
    characters above the space except i and k (which the lower case of U+0130 and of the Kelvin sign produce),
    case folded (byte | 0x20), by the sum of their bytes; and the CJK characters U+4000..U+9FFF (UTF-8 lead
    byte 0xE4..0xE9: no case, not whitespace), by the sum of a hash of each. Any other character counts
    nothing, so equal signatures are only a necessary condition: the duplicate check compares the normalized
    texts of the rows whose signatures repeat in their group. Five uint8 passes over the bytes into two
    scratch buffers (no array allocated per pass), several times cheaper than normalizing the text."""
    array = text.cast(pl.String).to_arrow()
    array = array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
    if array.type != pa.large_string():
        array = array.cast(pa.large_string())
    _, offset_buffer, data = array.buffers()
    offsets = np.frombuffer(offset_buffer, np.int64)[array.offset : array.offset + len(array) + 1]
    raw = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
    out = np.zeros(len(array), np.uint64)
    scratch = _scratch(_SIGNATURE_BYTES)
    row = 0
    while row < len(array):  # in slices of about _SIGNATURE_BYTES bytes (a row never split)
        end = int(np.searchsorted(offsets, offsets[row] + _SIGNATURE_BYTES, "right")) - 1
        end = min(max(end, row + 1), len(array))
        lo = offsets[row]
        chunk = raw[lo : offsets[end]]
        if len(chunk) > len(scratch[0]):  # one row longer than a slice
            scratch = _scratch(len(chunk))
        value, counted, other = (buffer[: len(chunk)] for buffer in scratch)
        np.subtract(chunk, np.uint8(0x21), out=value)
        np.less(value, np.uint8(0x5F), out=counted)  # 0x21..0x7F, by uint8 wrap-around
        np.bitwise_or(chunk, np.uint8(0x22), out=value)  # I, K, i, k (and only they) -> 0x6B
        np.not_equal(value, np.uint8(0x6B), out=other)
        counted &= other
        np.bitwise_or(chunk, np.uint8(0x20), out=value)  # case folded
        np.multiply(value, counted, out=value)
        starts = offsets[row:end] - lo
        filled = np.flatnonzero(offsets[row + 1 : end + 1] > offsets[row:end])
        if len(filled):  # each segment runs to the next non-empty row's start: empty rows hold no byte
            out[row + filled] = np.add.reduceat(value, starts[filled], dtype=np.uint32)
        if len(chunk) > 2 and chunk.max() >= 0xE4:  # some characters of 3 or 4 bytes
            lead = np.flatnonzero((chunk[:-2] - np.uint8(0xE4)) <= 5)  # 0xE4..0xE9, by uint8 wrap-around
            code = chunk[lead].astype(np.uint64) << 16 | chunk[lead + 1].astype(np.uint64) << 8 | chunk[lead + 2]
            with np.errstate(over="ignore"):
                spread = ((code + np.uint64(1)) * _CJK_MIX) >> np.uint64(40)  # < 2^24: float sums stay exact
            owner = np.searchsorted(starts, lead, "right") - 1
            cjk = np.bincount(owner, weights=spread.astype(np.float64), minlength=end - row).astype(np.uint64)
            with np.errstate(over="ignore"):
                out[row:end] ^= cjk * _CJK_MIX
        row = end
    return out


def _scratch(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.empty(size, np.uint8), np.empty(size, np.bool_), np.empty(size, np.bool_)


# -- overlap with the prompt's own text (copies_prompt, repeats_history) ---------------------------
# The prompt-side texts these rules compare an answer with, made from the prompts' columns by `attach`
# (factory/pairs/__init__.py) and joined to the samples by prompt_id. Parts (messages, host turns) are
# joined by a separator no answer holds, so no n-gram spans two of them.
PROMPT_TEXT = "_prompt_text"  # every message of the rendered prompt (system prompt, template, history, comment)
HOST_TURNS = "_host_turns"  # the history's host (assistant) turns
_PART = "\x1e"


def _contents(column: str, role: str | None = None) -> pl.Expr:
    turns = pl.col(column)
    if role is not None:
        turns = turns.list.eval(pl.element().filter(pl.element().struct.field("role") == role))
    return turns.list.eval(pl.element().struct.field("content")).list.join(f" {_PART} ").fill_null("")


PROMPT_SIDE: dict[str, tuple[str, pl.Expr]] = {
    PROMPT_TEXT: ("messages", normalized(_contents("messages"))),
    HOST_TURNS: ("history", normalized(_contents("history", "assistant"))),
}  # derived column -> (the prompts column it reads, its normalized text: once per prompt)
OVERLAP = {"copies_prompt": PROMPT_TEXT, "repeats_history": HOST_TURNS}  # term source -> the text it compares with


def _grams(text: pl.Expr, n: int, unit: str) -> pl.Expr:
    """Each normalized text's distinct n-gram hashes (ngram_hashes, as the repetition rule forms them)."""
    return text.map_batches(
        partial(ngram_hashes, n=n, unit=unit), return_dtype=pl.List(pl.UInt64), is_elementwise=True
    ).list.unique()


def grams_column(reference: str, n: int, unit: str) -> str:
    """Where `attach` puts the distinct n-gram hashes of a prompt-side text: computed once per prompt, not
    once per sample (a prompt's text is far longer than its K answers)."""
    return f"{reference}_{unit}{n}"


def reference_grams(reference: str, n: int, unit: str) -> pl.Expr:
    """The distinct n-gram hashes of the `reference` column's normalized text, as `overlap` compares them."""
    return _grams(normalized(pl.col(reference)), n, unit)


def _text_of(text: pl.Expr, unit: str) -> pl.Expr:
    out = normalized(text)
    return out.str.replace_all(" ", "", literal=True) if unit == "char" else out


def overlap(reference: str, n: int, unit: str, grams: str | None = None) -> pl.Expr:
    """The share of the answer's distinct n-grams (words, or characters for `unit: char`) that occur in
    the `reference` column's text, both normalized (`normalized`): 1.0 when the whole answer occurs in
    it (also an answer shorter than n tokens: "(none)" copied from the prompt), 0.0 for an answer shorter
    than n tokens that does not, or an empty one.

        answer "(none)"                     reference "... conversation so far: (none) ..."   -> 1.0
        answer "link 3 has it in black"     reference "link 3 has it in black and white"      -> 1.0
        answer "yes, link 3 is in stock"    reference "is it in stock?"                       -> 1/3 (n=3)

    `grams`: a column holding reference_grams of the reference (grams_column, made once per prompt by
    `attach`, beside the reference text already normalized); without it both are made here, per row."""
    answer = _text_of(pl.col("answer"), unit)
    ref = pl.col(reference) if grams else normalized(pl.col(reference))
    ref = ref.str.replace_all(" ", "", literal=True) if unit == "char" else ref
    if unit == "char":
        inside = ref.str.contains(answer, literal=True)
    else:  # whole words: "no" is not inside "(none)"
        inside = (pl.lit(" ") + ref + pl.lit(" ")).str.contains(pl.lit(" ") + answer + pl.lit(" "), literal=True)
    mine = _grams(normalized(pl.col("answer")), n, unit)
    theirs = pl.col(grams) if grams else reference_grams(reference, n, unit)
    total = mine.list.len()
    shared = mine.list.set_intersection(theirs).list.len()
    share = pl.when(total > 0).then(shared.cast(pl.Float64) / total.cast(pl.Float64)).otherwise(0.0)
    return pl.when(answer.str.len_bytes() == 0).then(0.0).when(inside).then(1.0).otherwise(share).cast(pl.Float64)
