import numpy as np
import polars as pl
import pytest

from factory import pairs
from factory.config import ConfigError, PairsConfig, TermConfig, help_table, load
from factory.pairs import terms as T
from tests.pairs.test_kernel import scored


def with_reward(rows: list[tuple], reward: list[float | None], **extra: list) -> pl.DataFrame:
    return scored(rows).with_columns(
        pl.Series("reward_rm", reward, pl.Float64), *[pl.Series(k, v) for k, v in extra.items()]
    )


def score_of(decisions: pl.DataFrame, prompt_id: str) -> dict[int, float]:
    row = decisions.filter(pl.col("prompt_id") == prompt_id).row(0, named=True)
    return {row["chosen_idx"]: row["chosen_score"], row["rejected_idx"]: row["rejected_score"]}


def test_four_terms_sum_weight_times_normalized_value():
    frame = with_reward(
        [("a", 0, 100, 0.9, "stop", None, "yes yes yes yes"), ("a", 1, 400, 0.5, "stop", None, "link 3 is in stock")],
        [2.0, -1.0],
    )
    cfg = PairsConfig(
        w_len=0.5,
        w_quality=0.2,
        drop_ratio=0.0,
        terms=[TermConfig(source="reward_rm", weight=0.3), TermConfig(source="repetition", n=1, weight=0.4)],
    )
    decisions, stats = pairs.select(frame, cfg)
    # length 1 - L/400; quality as is; reward min-max in the group; repetition 1-gram ratio, lower is better
    s0 = 0.5 * (1 - 100 / 400) + 0.2 * 0.9 + 0.3 * 1.0 + 0.4 * (1 - (1 - 1 / 4))
    s1 = 0.5 * 0.0 + 0.2 * 0.5 + 0.3 * 0.0 + 0.4 * 1.0
    assert score_of(decisions, "a") == {0: pytest.approx(s0), 1: pytest.approx(s1)}
    assert [t["name"] for t in stats.terms] == ["length", "quality", "reward_rm", "repetition_answer"]


@pytest.mark.parametrize(
    "entry, expected",
    [
        ({"norm": "group_minmax"}, {0: 1.0, 1: 0.0, 2: 0.25}),
        ({"norm": "global_minmax"}, {0: 1.0, 1: 0.0, 2: 0.25}),  # the other group spans the same range
        ({"norm": "fixed", "lo": -10.0, "hi": 10.0}, {0: 0.5, 1: 0.3, 2: 0.35}),
        ({"norm": "none"}, {0: 0.0, 1: -4.0, 2: -3.0}),
        ({"norm": "group_minmax", "direction": "lower"}, {0: 0.0, 1: 1.0, 2: 0.75}),
        ({"norm": "global"}, {0: 0.0, 1: 0.0, 2: 0.0}),  # x / global max, and that max is 0: a zero term
    ],
)
def test_normalizations_and_directions(entry, expected):
    rows = [("a", 0, 100, 0.5), ("a", 1, 100, 0.5), ("a", 2, 100, 0.5), ("b", 0, 100, 0.5), ("b", 1, 100, 0.5)]
    frame = with_reward(rows, [0.0, -4.0, -3.0, 0.0, -4.0])
    cfg = PairsConfig(w_len=0.0, w_quality=0.0, terms=[TermConfig(source="reward_rm", weight=1.0, **entry)])
    prepared = pairs.prepare(frame, cfg)
    values = prepared.values[2][:3]  # group a's three samples
    assert values.tolist() == pytest.approx([expected[i] for i in range(3)])


def test_dimension_scale_is_the_judge_scale_and_a_flat_group_gives_zero():
    frame = scored([("a", 0, 100, 0.5), ("a", 1, 100, 0.5), ("b", 0, 10, 0.5), ("b", 1, 10, 0.5)]).with_columns(
        pl.Series("dim_product_info", [4.0, 2.0, 3.0, 3.0])
    )
    cfg = PairsConfig(w_len=0.0, w_quality=0.0, terms=[TermConfig(source="dim_product_info", weight=1.0)])
    assert pairs.prepare(frame, cfg, scale_max=5.0).values[2].tolist() == pytest.approx([0.8, 0.4, 0.6, 0.6])
    flat = PairsConfig(w_len=0.0, w_quality=0.0, terms=[TermConfig(source="dim_product_info", norm="group_minmax")])
    assert pairs.prepare(frame, flat).values[2].tolist() == [1.0, 0.0, 0.0, 0.0]  # group b: max == min


def test_shorthand_weights_follow_the_strategy():
    cfg = PairsConfig(w_len=0.3, terms=[TermConfig(source="reward_rm", weight=0.2)])
    assert T.weights(cfg).tolist() == pytest.approx([0.3, 0.7, 0.2])
    assert T.weights(PairsConfig(strategy="quality", terms=cfg.terms)).tolist() == [0.0, 1.0, 0.2]
    assert T.weights(PairsConfig(strategy="long2short", terms=cfg.terms)).tolist() == [1.0, 0.0, 0.0]


# -- filters ---------------------------------------------------------------------------------------------
def test_filters_exclude_with_their_reason_and_the_counts_add_up():
    long_answer = "x" * 81
    frame = scored(
        [
            ("a", 0, 10, 0.9, "stop", None, long_answer),  # too long: answer_chars
            ("a", 1, 20, 0.8, "stop", None, "Link 3 has it"),
            ("a", 2, 30, 0.7, "stop", None, "no link number"),  # breaks the format rule
            ("a", 3, 40, 0.6, "length", None, long_answer),  # truncated first: one reason per sample
            ("a", 4, 50, 0.5, "stop", None, "Link 4 has it"),
            ("b", 0, 10, 0.9, "stop", None, long_answer),
            ("b", 1, 10, 0.9, "stop", None, "Link 1 ok"),
        ]
    )
    cfg = PairsConfig(
        drop_ratio=0.0,
        terms=[
            TermConfig(source="answer_chars", exclude_above=80),
            TermConfig(source="format", pattern=r"Link \d", exclude_above=0),
        ],
    )
    decisions, stats = pairs.select(frame, cfg)
    assert stats.samples_excluded == {
        "engine_error": 0, "truncated": 1, "empty_answer": 0, "no_token_count": 0, "no_judgment": 0,
        "answer_chars": 2, "format": 1, "duplicate": 0,
    }  # fmt: skip
    assert stats.samples_valid + sum(stats.samples_excluded.values()) == stats.samples_total == 7
    assert decisions.filter(pl.col("prompt_id") == "a").select("chosen_idx", "rejected_idx").row(0) == (1, 4)
    assert stats.groups_by_outcome["fewer_than_2_valid"] == 1 and stats.groups_too_few_by_reason == {"answer_chars": 1}
    assert sum(stats.groups_by_outcome.values()) == stats.groups == 2


def test_think_rule_as_filter_and_as_penalty():
    frame = scored([("a", 0, 10, 0.9), ("a", 1, 500, 0.2), ("a", 2, 300, 0.5)]).with_columns(
        pl.Series("reasoning", ["", "thinking", "  "])
    )
    required = PairsConfig(drop_ratio=0.0, terms=[TermConfig(source="think", exclude_above=0)])
    _, stats = pairs.select(frame, required)
    assert stats.samples_excluded["think"] == 2 and stats.groups_by_outcome["fewer_than_2_valid"] == 1
    penalty = PairsConfig(w_len=0.0, w_quality=0.0, drop_ratio=0.0, terms=[TermConfig(source="think", weight=1.0)])
    decisions, _ = pairs.select(frame, penalty)
    assert decisions.row(0, named=True)["chosen_idx"] == 1  # the only sample with a <think> block


def test_a_sample_without_a_reward_score_is_unjudged():
    frame = with_reward([("a", 0, 10, 0.9), ("a", 1, 20, 0.8), ("a", 2, 30, 0.7)], [1.0, None, float("nan")])
    _, stats = pairs.select(frame, PairsConfig(terms=[TermConfig(source="reward_rm", weight=0.1)]))
    assert stats.samples_excluded["no_judgment"] == 2


# -- errors name the key -----------------------------------------------------------------------------------
def test_a_missing_column_names_the_key_that_needs_it():
    frame = scored([("a", 0, 10, 0.9), ("a", 1, 20, 0.8)])
    with pytest.raises(ConfigError, match=r"pairs\.terms\[1\].*'reward_rm'"):
        pairs.select(frame, PairsConfig(terms=[TermConfig(source="answer_chars"), TermConfig(source="reward_rm")]))
    with pytest.raises(ConfigError, match=r"pairs\.judges.*'quality_b'"):
        pairs.select(frame, PairsConfig(judges=["quality", "quality_b"]))
    assert pairs.required(PairsConfig(terms=[TermConfig(source="reward_rm")]))["reward_rm"] == "pairs.terms[0]"


@pytest.mark.parametrize(
    "override, key",
    [
        ("pairs.terms=[{source: rewards}]", r"pairs\.terms\[0\]\.source"),
        ("pairs.terms=[{source: reward_rm, norm: scale}]", r"pairs\.terms\[0\]\.norm"),
        ("pairs.terms=[{source: length, norm: bucket}]", r"pairs\.terms\[0\]\.norm"),
        ("pairs.terms=[{source: dim_x, direction: up}]", r"pairs\.terms\[0\]\.direction"),
        ("pairs.terms=[{source: reward_rm, norm: fixed}]", r"pairs\.terms\[0\]\.hi"),
        ("pairs.terms=[{source: repetition, field: prompt}]", r"pairs\.terms\[0\]\.field"),
        ("pairs.terms=[{source: repetition, n: 0}]", r"pairs\.terms\[0\]\.n"),
        ("pairs.terms=[{source: repetition, unit: byte}]", r"pairs\.terms\[0\]\.unit"),
        ("pairs.terms=[{source: copies_prompt, unit: byte}]", r"pairs\.terms\[0\]\.unit"),  # issue 25
        ("pairs.terms=[{source: repeats_history, n: 0}]", r"pairs\.terms\[0\]\.n"),
        ("pairs.terms=[{source: format}]", r"pairs\.terms\[0\]\.pattern"),
        ("pairs.terms=[{source: format, pattern: '(?<=x)y'}]", r"pairs\.terms\[0\]\.pattern"),
        ("pairs.terms=[{source: answer_chars}, {source: answer_chars}]", r"pairs\.terms\[1\]\.name"),
        ("pairs.terms=[{source: reward_rm, name: duplicate}]", r"pairs\.terms\[0\]\.name"),
        ("pairs.terms=[{source: quality_b, name: length}]", r"pairs\.terms\[0\]\.name"),
        ("pairs.terms=[{source: reward_rm, wieght: 1}]", "wieght"),
        ("pairs.judges=[]", r"pairs\.judges"),
        ("pairs.judges=[quality, dim_x]", r"pairs\.judges"),
        ("pairs.judges=[quality, quality]", r"pairs\.judges"),
        ("pairs.judges=[quality, quality_spread]", r"pairs\.judges"),
        ("pairs.pairing=every", r"pairs\.pairing"),
        ("pairs.combine=mean", r"pairs\.combine"),
        ("pairs.dedupe=yes", r"pairs\.dedupe"),
        ("pairs.max_pairs_per_group=0", r"pairs\.max_pairs_per_group"),
    ],
)
def test_bad_term_and_pairing_settings_fail_at_load_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key):
        load(None, [override])


def test_vote_needs_pairing_one():
    with pytest.raises(ConfigError, match=r"pairs\.combine"):
        load(None, ["pairs.combine=vote", "pairs.pairing=best_vs_each"])


def test_yaml_terms_load_typed(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "pairs:\n  pairing: best_vs_each\n  max_pairs_per_group: 3\n  terms:\n"
        "    - {source: answer_chars, exclude_above: 80}\n    - {source: repetition, field: reasoning, weight: 0.2}\n"
    )
    cfg = load(path)
    assert cfg.pairs.terms[0].exclude_above == 80.0 and cfg.pairs.terms[1].weight == 0.2
    assert [T.default_name(t) for t in cfg.pairs.terms] == ["answer_chars", "repetition_reasoning"]


def test_factory_keys_lists_the_term_fields_with_help():
    rows = {key: text for key, _, text in help_table()}
    for key in ("pairs.terms", "pairs.terms[].source", "pairs.terms[].exclude_above", "pairs.pairing",
                "pairs.max_pairs_per_group", "pairs.dedupe", "pairs.judges", "pairs.combine",
                "sweep.term"):  # fmt: skip
        assert rows[key], key


def test_normalize_zero_denominator_gives_zero_whatever_the_direction():
    term = T.Term("x", "k", T.SOURCES["reward"], "reward_x", "group_minmax", "lower")
    starts, counts = np.array([0, 2]), np.array([2, 1])
    assert T.normalize(np.array([3.0, 3.0, 7.0]), term, starts, counts, 100.0).tolist() == [0.0, 0.0, 0.0]
