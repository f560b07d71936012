import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factory.pairs import rules

WORDS = st.sampled_from(["link", "Link", "3", "stock", "is", "in", "好", "货", "的"])
SPACES = st.sampled_from([" ", " ", " ", "  ", "\n", "\t", " \n "])
TEXTS = st.lists(st.tuples(WORDS, SPACES), max_size=30).map(lambda parts: "".join(w + s for w, s in parts))


def reference_ratio(text: str, n: int, unit: str) -> float:
    """The rule in plain Python: lower-case, whitespace split; n-grams of words (or characters)."""
    words = text.lower().split()
    tokens = list("".join(words)) if unit == "char" else words
    grams = list(zip(*(tokens[i:] for i in range(n))))
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def ratios(texts: list[str | None], n: int, unit: str) -> list[float]:
    frame = pl.DataFrame({"answer": texts}, schema={"answer": pl.String})
    return (
        frame.select(rules.normalized_columns({"answer"}))
        .select(rules.repetition("answer", n, unit))["_normalized_answer"]
        .to_list()
    )


@settings(max_examples=150, deadline=None)
@given(texts=st.lists(TEXTS, min_size=1, max_size=12), n=st.integers(1, 4), unit=st.sampled_from(["word", "char"]))
def test_repeated_ngram_ratio_equals_the_plain_rule(texts, n, unit):
    assert ratios(texts, n, unit) == [reference_ratio(t, n, unit) for t in texts]


def test_repetition_examples():
    text = "Link 3 is in stock, link 3 is in stock."
    # 3-grams: link 3 is / 3 is in / is in stock, / in stock, link / stock, link 3 / link 3 is / 3 is in / is in stock.
    assert ratios([text, "", None, "one two"], 3, "word") == [pytest.approx(1 - 6 / 8), 0.0, 0.0, 0.0]
    assert ratios(["哈哈哈哈"], 2, "char") == [pytest.approx(1 - 1 / 3)]


def test_answer_chars_format_and_think():
    frame = pl.DataFrame({"answer": ["3号链接有货", "Link 3, yes", None], "reasoning": ["想一想", "  ", None]})
    values = frame.select(
        rules.answer_chars().alias("chars"),
        rules.format_violation(r"\d号链接", require=True).alias("must"),
        rules.format_violation(r"(?i)link", require=False).alias("must_not"),
        rules.think_violation(require=True).alias("think_required"),
        rules.think_violation(require=False).alias("think_forbidden"),
    )
    assert values.to_dict(as_series=False) == {
        "chars": [6.0, 11.0, 0.0],
        "must": [0.0, 1.0, 1.0],
        "must_not": [0.0, 1.0, 0.0],
        "think_required": [0.0, 1.0, 1.0],
        "think_forbidden": [1.0, 0.0, 0.0],
    }


def test_duplicate_keys_ignore_case_and_whitespace_only():
    frame = pl.DataFrame(
        {
            "answer": ["Link 3 is in stock.", "  link 3\nIS in  stock. ", "Link 3 is in stock!", "Link 3 is in stock."],
            "reasoning": ["a", "A", "a", "b"],
        }
    )
    keys = frame.with_columns(rules.normalized_columns({"answer", "reasoning"}))
    answer = keys.select(rules.duplicate_key(("answer",))).to_series().to_list()
    content = keys.select(rules.duplicate_key(("reasoning", "answer"))).to_series().to_list()
    assert answer[0] == answer[1] == answer[3] and answer[2] != answer[0]
    assert content[0] == content[1] and len({content[0], content[2], content[3]}) == 3
    assert rules.key_columns("content", True) == ("reasoning", "answer")
    assert rules.key_columns("content", False) == rules.key_columns("answer", True) == ("answer",)
    assert rules.key_columns("off", True) == ()


# -- the signature that finds duplicate candidates in memory (issue 16) ------------------------------
CASED = st.sampled_from(["a", "A", "b", "B", "i", "I", "İ", "k", "K", "\u212a", "Ä", "ä", "好", "货", "1", ".", "，"])
ANY_SPACE = st.sampled_from(["", " ", "  ", "\n", "\t", "\u3000", "\u00a0", "\u2028", "\x85"])
VARIANTS = st.lists(st.tuples(CASED, ANY_SPACE), max_size=12).map(lambda parts: "".join(c + s for c, s in parts))


@settings(max_examples=300, deadline=None)
@given(st.lists(VARIANTS, min_size=2, max_size=40))
def test_texts_with_equal_normalized_forms_have_equal_signatures(texts):
    series = pl.Series(texts + [None], dtype=pl.String)
    signatures = rules.text_signature(series)
    normalized = pl.DataFrame({"t": series}).select(rules.normalized(pl.col("t")))["t"].to_list()
    first: dict[str, int] = {}
    for text, signature in zip(normalized, signatures):
        assert first.setdefault(text, int(signature)) == int(signature)


def test_signatures_of_a_sliced_column_and_of_texts_that_differ():
    series = pl.Series(["x", "Link 3  IS in stock", "link 3 is\tin stock", "link 4 is in stock", "好货", "货好 "])
    signatures = rules.text_signature(series.slice(1))
    assert signatures[0] == signatures[1] and signatures[0] != signatures[2]
    assert signatures[3] == signatures[4]  # the same characters: a candidate, then compared in full


def test_signatures_do_not_depend_on_how_the_bytes_are_sliced(monkeypatch):
    texts = ["Link 3  IS in stock", "", None, "好货 " * 9, "a" * 70, "x", "Kk iI  \t", "货好", "z" * 33]
    series = pl.Series(texts * 5, dtype=pl.String)
    whole = rules.text_signature(series)
    monkeypatch.setattr(rules, "_SIGNATURE_BYTES", 16)  # many slices, and rows longer than a slice
    sliced = rules.text_signature(series)
    assert whole.tolist() == sliced.tolist()
    assert whole[1] == whole[2] == 0 and whole[0] != whole[6]
