import math
from dataclasses import replace

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from factory import pairs
from factory.config import ConfigError, PairsConfig, TermConfig, load
from factory.pairs import render
from factory.rundir.schemas import PAIRS


def scored(rows: list[tuple]) -> pl.DataFrame:
    """rows: (prompt_id, sample_idx, tokens, quality, finish_reason="stop", error=None, answer="ok")."""
    full = [r + (None,) * (7 - len(r)) for r in rows]
    return pl.DataFrame(
        {
            "prompt_id": [r[0] for r in full],
            "sample_idx": [r[1] for r in full],
            "completion_tokens": [r[2] for r in full],
            "quality": [r[3] for r in full],
            "finish_reason": [r[4] or "stop" for r in full],
            "error": [r[5] for r in full],
            "answer": [f"answer {r[0]}/{r[1]}" if r[6] is None else r[6] for r in full],
            "reasoning": [f"think {r[0]}/{r[1]}" for r in full],
        },
        schema_overrides={"completion_tokens": pl.Int64, "quality": pl.Float64, "error": pl.String},
    )


def prompts_for(frame: pl.DataFrame) -> pl.DataFrame:
    ids = frame["prompt_id"].unique().sort().to_list()
    return pl.DataFrame(
        {
            "prompt_id": ids,
            "messages": [[{"role": "system", "content": "host"}, {"role": "user", "content": f"q {i}"}] for i in ids],
        }
    )


def bucket_total(stats: pairs.PairStats) -> int:
    return sum(stats.groups_excluded.values()) + stats.pairs_dropped + stats.pairs_kept


# -- scoring and picking ---------------------------------------------------------------------------
def test_scores_follow_the_formula_with_group_length_and_scale_quality():
    frame = scored([("a", 0, 100, 0.9), ("a", 1, 400, 0.8), ("a", 2, 200, 0.5)])
    groups, stats = pairs.select(frame, PairsConfig(w_len=0.6, drop_ratio=0.0))
    row = groups.row(0, named=True)
    s = {i: 0.6 * (1 - t / 400) + 0.4 * q for i, t, q in ((0, 100, 0.9), (1, 400, 0.8), (2, 200, 0.5))}
    assert (row["chosen_idx"], row["rejected_idx"]) == (0, 1)
    assert row["chosen_score"] == pytest.approx(s[0]) and row["rejected_score"] == pytest.approx(s[1])
    assert row["margin"] == pytest.approx(s[0] - s[1])
    assert stats.pairs_kept == 1 and stats.mean_token_gap == 300 and stats.mean_quality_gap == pytest.approx(0.1)


@pytest.mark.parametrize(
    "norm, expected_rejected_score",
    [
        ({"length_norm": "global"}, 0.5 * (1 - 300 / 1000) + 0.5 * 0.8),
        ({"length_norm": "fixed", "length_max": 600}, 0.5 * (1 - 300 / 600) + 0.5 * 0.8),
        ({"quality_norm": "group"}, 0.5 * (1 - 300 / 300) + 0.5 * 0.8 / 0.8),
    ],
)
def test_normalization_options(norm, expected_rejected_score):
    frame = scored([("a", 0, 100, 0.4), ("a", 1, 300, 0.8), ("b", 0, 1000, 0.1), ("b", 1, 10, 0.1)])
    groups, _ = pairs.select(frame, PairsConfig(w_len=0.5, drop_ratio=0.0, **norm))
    a = groups.filter(pl.col("prompt_id") == "a").row(0, named=True)
    scores = {a["chosen_idx"]: a["chosen_score"], a["rejected_idx"]: a["rejected_score"]}
    assert scores[1] == pytest.approx(expected_rejected_score)


def test_w_quality_defaults_to_one_minus_w_len_and_can_be_set():
    assert PairsConfig(w_len=0.3).quality_weight == pytest.approx(0.7)
    frame = scored([("a", 0, 100, 0.2), ("a", 1, 200, 0.9)])
    groups, _ = pairs.select(frame, PairsConfig(w_len=0.5, w_quality=0.0, drop_ratio=0.0))
    assert groups["chosen_idx"][0] == 0  # length alone decides when quality weighs nothing


def test_invalid_samples_are_counted_by_reason_and_never_chosen():
    frame = scored(
        [
            ("a", 0, 5, 1.0, "length"),  # shortest and best, but truncated
            ("a", 1, 50, 0.9, "error", "boom"),
            ("a", 2, 60, 0.9, "stop", None, "   "),  # blank answer
            ("a", 3, None, 0.9),  # no token count
            ("a", 4, 70, None),  # no judgment
            ("a", 5, 80, float("nan")),  # judged, score unusable
            ("a", 6, 300, 0.5),
            ("a", 7, 100, 0.6),
            ("b", 0, 10, 0.7, "length"),
            ("b", 1, 20, 0.7, "length"),
            ("b", 2, 30, 0.7),  # one valid sample: no pair
            ("c", 0, 30, 0.7),  # a group of one sample
        ]
    )
    groups, stats = pairs.select(frame, PairsConfig(drop_ratio=0.0))
    assert stats.samples_excluded == {
        "engine_error": 1, "truncated": 3, "empty_answer": 1, "no_token_count": 1, "no_judgment": 2, "duplicate": 0,
    }  # fmt: skip
    assert stats.samples_valid + sum(stats.samples_excluded.values()) == stats.samples_total == 12
    assert stats.groups == 3 and stats.groups_excluded["fewer_than_2_valid"] == 2
    assert stats.groups_too_few_by_reason == {"truncated": 1, "fewer_than_2_samples": 1}
    assert bucket_total(stats) == stats.groups
    row = groups.row(0, named=True)
    assert (row["chosen_idx"], row["rejected_idx"]) == (7, 6)


def test_all_equal_group_never_pairs_a_sample_with_itself_and_is_counted_tied():
    frame = scored([("a", i, 100, 0.5) for i in range(4)] + [("b", 0, 10, 0.9), ("b", 1, 90, 0.1)])
    groups, stats = pairs.select(frame, PairsConfig(drop_ratio=0.0))
    a = groups.filter(pl.col("prompt_id") == "a").row(0, named=True)
    assert (a["chosen_idx"], a["rejected_idx"]) == (0, 3)  # documented: lowest vs highest sample_idx
    assert a["margin"] == 0 and a["outcome"] == "tied"
    assert stats.groups_excluded["tied"] == 1 and stats.pairs_kept == 1 and bucket_total(stats) == 2


def test_tie_break_order_tokens_then_quality_then_index():
    # w_len = 0: S is quality only. Chosen among the 0.9s: fewest tokens (idx 2, then 1 vs 3 by index).
    frame = scored([("a", 0, 50, 0.1), ("a", 1, 80, 0.9), ("a", 2, 70, 0.9), ("a", 3, 70, 0.9), ("a", 4, 60, 0.1)])
    groups, _ = pairs.select(frame, PairsConfig(strategy="quality", drop_ratio=0.0))
    row = groups.row(0, named=True)
    assert row["chosen_idx"] == 2  # fewest tokens among best S, then lowest index
    assert row["rejected_idx"] == 4  # most tokens among worst S
    # Same tokens and S: quality decides (here w_len = 1, so S ignores quality).
    frame = scored([("a", 0, 50, 0.2), ("a", 1, 50, 0.7), ("a", 2, 90, 0.4), ("a", 3, 90, 0.3)])
    row = pairs.select(frame, PairsConfig(w_len=1.0, drop_ratio=0.0))[0].row(0, named=True)
    assert (row["chosen_idx"], row["rejected_idx"]) == (1, 3)


def test_repeated_sample_index_is_refused_by_name():
    frame = scored([("a", 0, 10, 0.9), ("a", 0, 500, 0.1)])
    with pytest.raises(ValueError, match="'a'"):
        pairs.select(frame, PairsConfig(drop_ratio=0.0))


def test_missing_column_is_named():
    with pytest.raises(ValueError, match="quality"):
        pairs.select(scored([("a", 0, 1, 0.5)]).drop("quality"), PairsConfig())


@pytest.mark.parametrize("pairing", ["one", "best_vs_each", "all_ranked"])
def test_unsorted_and_lazy_input_give_the_same_pairs(tmp_path, pairing):
    rng = np.random.default_rng(3)
    frame = scored([(f"p{g}", i, int(rng.integers(10, 900)), float(rng.random())) for g in range(40) for i in range(4)])
    prompts = prompts_for(frame)
    cfg = PairsConfig(pairing=pairing, terms=[TermConfig(source="repetition", field="reasoning", n=1, weight=0.1)])
    built = pairs.build(frame, prompts, cfg)
    expected, stats = built.pairs, built.stats
    shuffled = pairs.build(frame.sample(fraction=1.0, shuffle=True, seed=1), prompts, cfg).pairs
    frame.sample(fraction=1.0, shuffle=True, seed=2).write_parquet(tmp_path / "scored.parquet")
    lazy_built = pairs.build(pl.scan_parquet(tmp_path / "scored.parquet"), prompts.lazy(), cfg)
    lazy, lazy_stats = lazy_built.pairs, lazy_built.stats
    assert shuffled.equals(expected) and lazy.equals(expected)
    assert lazy_stats.as_dict() == stats.as_dict()
    groups, _ = pairs.select(pl.scan_parquet(tmp_path / "scored.parquet"), cfg)
    out = str(tmp_path / "pairs.parquet")
    written = pairs.sink_pairs(groups, pl.scan_parquet(tmp_path / "scored.parquet"), prompts.lazy(), cfg, out, batch=7)
    assert written == expected.height and pl.read_parquet(out).equals(expected)


# -- the threshold -------------------------------------------------------------------------------------
def test_delta_is_the_linear_quantile_of_all_margins_including_ties():
    tokens = [(100, 110), (100, 150), (100, 200), (100, 300), (100, 100)]
    frame = scored([(f"g{i}", j, t, 0.5) for i, pair in enumerate(tokens) for j, t in enumerate(pair)])
    groups, stats = pairs.select(frame, PairsConfig(w_len=1.0, drop_ratio=0.3))
    margins = groups["margin"].to_numpy()
    assert stats.delta == pytest.approx(float(np.quantile(margins, 0.3)))
    assert stats.delta_rule == "quantile"
    assert set(groups.filter(pl.col("outcome") == "kept")["prompt_id"]) == {"g1", "g2", "g3"}
    assert stats.groups_excluded["tied"] == 1 and stats.pairs_dropped == 1


def test_min_margin_replaces_the_quantile():
    frame = scored([("a", 0, 100, 0.9), ("a", 1, 120, 0.8), ("b", 0, 100, 0.9), ("b", 1, 400, 0.2)])
    groups, stats = pairs.select(frame, PairsConfig(drop_ratio=0.0, min_margin=0.2))
    assert stats.delta == 0.2 and stats.delta_rule == "min_margin"
    assert groups.filter(pl.col("outcome") == "kept")["prompt_id"].to_list() == ["b"]


@given(values=st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=60), p=st.floats(0, 0.99))
def test_margin_quantile_matches_numpy_linear(values, p):
    ordered = np.sort(np.array(values))
    assert pairs.margin_quantile(ordered, p) == pytest.approx(float(np.quantile(ordered, p)), abs=1e-12)


# -- strategies ----------------------------------------------------------------------------------------
def test_long2short_picks_shortest_under_the_limit_and_reports_the_rest():
    frame = scored(
        [
            ("a", 0, 350, 0.2), ("a", 1, 900, 0.9), ("a", 2, 500, 0.9),
            ("b", 0, 450, 0.9), ("b", 1, 800, 0.1),  # nothing under 400
            ("c", 0, 120, 0.9), ("c", 1, 120, 0.3),  # equally short: tied
        ]
    )  # fmt: skip
    groups, stats = pairs.select(frame, PairsConfig(strategy="long2short"))
    kept = groups.filter(pl.col("outcome") == "kept")
    assert kept.select("prompt_id", "chosen_idx", "rejected_idx").rows() == [("a", 0, 1)]
    assert stats.groups_excluded["no_short_sample"] == 1 and stats.groups_excluded["tied"] == 1
    assert stats.delta is None and stats.mean_chosen_tokens == 350 and stats.mean_rejected_tokens == 900
    assert bucket_total(stats) == stats.groups == 3


def test_quality_strategy_ignores_w_len():
    frame = scored([("a", 0, 10, 0.3), ("a", 1, 900, 0.95), ("a", 2, 500, 0.5)])
    row = pairs.select(frame, PairsConfig(strategy="quality", w_len=0.9, drop_ratio=0.0))[0].row(0, named=True)
    assert (row["chosen_idx"], row["rejected_idx"]) == (1, 0)


# -- output --------------------------------------------------------------------------------------------
def test_conversational_output_matches_the_contract_with_think_tags_on_both_sides():
    frame = scored([("a", 0, 10, 0.9), ("a", 1, 500, 0.2)])
    out = pairs.build(frame, prompts_for(frame), PairsConfig(drop_ratio=0.0)).pairs
    table = out.to_arrow().cast(PAIRS)
    assert table.schema.names == PAIRS.names
    row = out.row(0, named=True)
    assert row["prompt"][1] == {"role": "user", "content": "q a"}
    assert row["chosen"] == [{"role": "assistant", "content": "<think>\nthink a/0\n</think>\n\nanswer a/0"}]
    assert row["rejected"] == [{"role": "assistant", "content": "<think>\nthink a/1\n</think>\n\nanswer a/1"}]
    assert row["strategy"] == "dp_dpo"


def test_standard_format_and_leaving_reasoning_out():
    frame = scored([("a", 0, 10, 0.9), ("a", 1, 500, 0.2)])
    cfg = PairsConfig(drop_ratio=0.0, format="standard", include_reasoning=False)
    out = pairs.build(frame, prompts_for(frame), cfg).pairs
    table = out.to_arrow().cast(pairs.pairs_schema("standard"))
    assert table.schema.field("chosen").type == pa.string()
    row = out.row(0, named=True)
    assert (row["prompt"], row["chosen"], row["rejected"]) == ("host\n\nq a", "answer a/0", "answer a/1")


def test_sft_exports_filter_long_and_dp_sft():
    frame = scored(
        [("a", 0, 100, 0.9), ("a", 1, 400, 0.5), ("a", 2, 401, 0.9), ("a", 3, 50, 0.9, "length"), ("b", 0, 30, 0.4)]
    )
    prompts = prompts_for(frame)
    cfg = PairsConfig(drop_ratio=0.0)
    prepared = pairs.prepare(frame, cfg)
    long = render.sft_filter_long(prepared, frame, prompts, cfg)
    assert long.select("prompt_id", "sample_idx").rows() == [("a", 0), ("a", 1), ("b", 0)]
    assert long["messages"][0].to_list()[-1]["content"].endswith("answer a/0")
    groups, _ = pairs.select(frame, cfg)
    dp = render.sft_dp(groups, frame, prompts, cfg)
    assert dp.select("prompt_id", "sample_idx", "source").rows() == [("a", 0, "dp_sft")]
    standard = render.sft_dp(groups, frame, prompts, replace(cfg, format="standard"))
    assert standard.columns[:4] == ["prompt_id", "sample_idx", "prompt", "completion"]


# -- target --------------------------------------------------------------------------------------------
def test_target_reports_the_prompts_still_needed_at_the_observed_survival():
    frame = scored([(f"g{i}", j, 100 + 100 * j, 0.5) for i in range(10) for j in range(2)])
    _, stats = pairs.select(frame, PairsConfig(w_len=1.0, drop_ratio=0.0, target=25))
    assert stats.pairs_kept == 10 and stats.prompts_needed_more == 15  # survival 1.0
    assert "15 more prompts" in pairs.target_note(stats)
    _, stats = pairs.select(frame, PairsConfig(w_len=1.0, drop_ratio=0.5, target=25))
    assert stats.prompts_needed_more == math.ceil((25 - stats.pairs_kept) / (stats.pairs_kept / 10))
    _, met = pairs.select(frame, PairsConfig(w_len=1.0, drop_ratio=0.0, target=5))
    assert met.prompts_needed_more == 0 and "target met" in pairs.target_note(met)
    assert pairs.target_note(pairs.select(frame, PairsConfig())[1]) is None


def test_target_must_be_positive():
    with pytest.raises(ConfigError, match="pairs.target"):
        load(None, ["pairs.target=0"])


# -- properties ----------------------------------------------------------------------------------------
SAMPLE = st.tuples(
    st.integers(1, 1000),  # tokens
    st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0, 0.6, 0.61]),  # quality, coarse so that ties happen
    st.sampled_from(["stop"] * 6 + ["length"]),
)
GROUPS = st.lists(st.lists(SAMPLE, min_size=1, max_size=8), min_size=1, max_size=30)


def frame_of(groups: list[list[tuple]]) -> pl.DataFrame:
    return scored(
        [(f"g{g:03d}", i, t, q, f) for g, samples in enumerate(groups) for i, (t, q, f) in enumerate(samples)]
    )


def reference_picks(frame: pl.DataFrame, w_len: float) -> dict[str, tuple[int, int]]:
    """A plain Python statement of the documented rule."""
    out = {}
    for (pid,), group in frame.filter(pl.col("finish_reason") == "stop").group_by(["prompt_id"]):
        rows = group.to_dicts()
        if len(rows) < 2:
            continue
        l_max = max(r["completion_tokens"] for r in rows)
        for r in rows:
            r["S"] = w_len * (1 - r["completion_tokens"] / l_max) + (1 - w_len) * r["quality"]
        order = sorted(rows, key=lambda r: (-r["S"], r["completion_tokens"], -r["quality"], r["sample_idx"]))
        out[pid] = (order[0]["sample_idx"], order[-1]["sample_idx"])
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(groups=GROUPS, w_len=st.sampled_from([0.0, 0.3, 0.6, 1.0]), drop=st.floats(0, 0.9))
def test_properties_of_any_pair_build(groups, w_len, drop):
    frame = frame_of(groups)
    result, stats = pairs.select(frame, PairsConfig(w_len=w_len, drop_ratio=drop))
    kept = result.filter(pl.col("outcome") == "kept")
    assert (result["chosen_idx"] != result["rejected_idx"]).all()
    assert stats.delta is not None or result.height == 0
    assert kept.height == 0 or ((kept["margin"] >= stats.delta).all() and (kept["margin"] > 0).all())
    assert bucket_total(stats) == stats.groups == len(groups)
    picks = {r["prompt_id"]: (r["chosen_idx"], r["rejected_idx"]) for r in result.iter_rows(named=True)}
    assert picks == reference_picks(frame, w_len)


# Distinct margins by construction: each group's margin is a distinct multiple of 1e-4 on top of its own
# base quality, and a coin says which sample holds the better one.
DISTINCT_MARGIN_GROUPS = st.lists(
    st.tuples(st.integers(1, 5000), st.floats(0, 0.5), st.booleans()),
    min_size=5,
    max_size=200,
    unique_by=lambda g: g[0],
)


@settings(max_examples=60, deadline=None)
@given(groups=DISTINCT_MARGIN_GROUPS, drop=st.floats(0, 0.9))
def test_kept_share_is_about_one_minus_drop_ratio(groups, drop):
    # Margins all distinct and none zero: the quantile leaves (n-1)*drop of them below, up to one for rounding.
    rows = []
    for g, (steps, base, better_first) in enumerate(groups):
        low, high = base, base + steps / 10_000
        for i, q in enumerate((high, low) if better_first else (low, high)):
            rows.append((f"g{g}", i, 100, q))
    result, stats = pairs.select(scored(rows), PairsConfig(w_len=0.0, drop_ratio=drop))
    n = result.height
    assert n == len(groups) and stats.groups_excluded["tied"] == 0
    assert result["margin"].n_unique() == n  # the construction holds: the property below always runs
    assert abs(stats.pairs_kept - (n - (n - 1) * drop)) <= 1


@settings(max_examples=100, deadline=None)
@given(groups=GROUPS)
def test_w_len_one_picks_shortest_and_longest_and_zero_best_and_worst(groups):
    frame = frame_of(groups)
    valid = frame.filter(pl.col("finish_reason") == "stop")
    for w_len, column, pick_min in ((1.0, "completion_tokens", True), (0.0, "quality", False)):
        result, _ = pairs.select(frame, PairsConfig(w_len=w_len, drop_ratio=0.0))
        for row in result.iter_rows(named=True):
            values = valid.filter(pl.col("prompt_id") == row["prompt_id"])[column]
            chosen = row["chosen_tokens"] if column == "completion_tokens" else row["chosen_quality"]
            rejected = row["rejected_tokens"] if column == "completion_tokens" else row["rejected_quality"]
            best, worst = (values.min(), values.max()) if pick_min else (values.max(), values.min())
            assert (chosen, rejected) == (best, worst)


# -- `factory pairs` on a stored run ---------------------------------------------------------------------
def test_rebuild_makes_no_request_and_follows_the_new_settings(tmp_path):
    from factory.commands.rebuild import rebuild_pairs
    from factory.rundir.store import RunStore
    from tests.synthetic import make_run

    url = str(tmp_path / "run")
    store = make_run(url, n_prompts=10, k=4)
    manifest = store.read_json("manifest.json")
    manifest["config"]["pairs"]["max_chosen_tokens"] = "***"  # older runs masked such keys
    store.write_json("manifest.json", manifest)

    manifest, _ = rebuild_pairs(url, ["pairs.strategy=quality", "pairs.drop_ratio=0", "pairs.format=standard"])
    assert manifest["requests"] == {"sampler": 0, "judge": 0}
    assert manifest["pairs_build"]["overrides"][0] == "pairs.strategy=quality"
    assert manifest["config"]["pairs"]["strategy"] == "dp_dpo"  # the run's config: overrides do not stick
    pairs = RunStore(url).read("pairs")
    assert pairs.height == manifest["pairs"]["pairs_kept"] > 0 and pairs["prompt"].dtype == pl.String
    assert set(pairs["strategy"]) == {"quality"}
    store = RunStore(url)
    assert len(store.parts("sft/filter_long")) == len(store.parts("sft/dp_sft")) == 1 and store.parts("sft") == []
    again, _ = rebuild_pairs(url)  # a plain rebuild: the run's own settings again
    assert set(RunStore(url).read("pairs")["strategy"]) == {"dp_dpo"} and again["pairs_build"]["overrides"] == []

    rebuild_pairs(url, ["pairs.sft=[]"])
    store = RunStore(url)
    assert (
        store.parts("sft/filter_long") == store.parts("sft/dp_sft") == []
    )  # exports no longer asked for do not linger


def test_duplicates_in_memory_and_over_a_scan_are_the_same(tmp_path):
    # In memory, the answers' signatures pick the rows to compare; a scan hashes every row's normalized
    # text. Both must mark the same duplicates (issue 16's fast path).
    answers = [
        "Link 3 is in stock",
        "link 3  IS in stock",
        "Link 3 is in stock!",
        "3 link is in stock",
        "好货 好货",
        "好货好货",
    ]
    rows = [
        (f"g{g}", i, 100 + 10 * i, 0.5, None, None, answers[(g + i) % len(answers)]) for g in range(8) for i in range(6)
    ]
    frame = scored(rows).with_columns(pl.lit("same thinking").alias("reasoning"))
    frame.write_parquet(tmp_path / "scored.parquet")
    repetition = [TermConfig(source="repetition", field="answer", weight=0.1)]  # the answer normalized anyway
    for dedupe, terms in (("content", []), ("answer", []), ("content", repetition)):
        cfg = PairsConfig(dedupe=dedupe, drop_ratio=0.0, terms=terms)
        memory, memory_stats = pairs.select(frame, cfg)
        scan, scan_stats = pairs.select(pl.scan_parquet(tmp_path / "scored.parquet"), cfg)
        assert memory.equals(scan) and memory_stats.as_dict() == scan_stats.as_dict()
        assert memory_stats.samples_excluded["duplicate"] == 8  # "link 3  IS in stock" in each group


def test_sft_and_pair_messages_are_built_as_polars_would_concatenate_them():
    frame = scored([("a", 0, 100, 0.9), ("a", 1, 300, 0.2), ("b", 0, 50, 0.9), ("b", 1, 60, 0.1)])
    prompts = prompts_for(frame)
    built = pairs.build(frame, prompts, PairsConfig(drop_ratio=0.0))
    long = built.sft["filter_long"]
    content = render.assistant_content(pl.col("reasoning"), pl.col("answer"), True)
    expected = (
        frame.join(prompts, on="prompt_id")
        .select("prompt_id", pl.concat_list("messages", render.as_messages(content)).alias("messages"))
        .sort("prompt_id")
    )
    assert long.select("prompt_id", "messages").equals(expected)
    pair = built.pairs.row(0, named=True)
    assert pair["chosen"] == [{"role": "assistant", "content": "<think>\nthink a/0\n</think>\n\nanswer a/0"}]
    assert pair["prompt"] == prompts.row(0, named=True)["messages"]


def test_a_build_with_nothing_to_export_or_pair_writes_empty_frames_of_the_contract():
    frame = scored([("a", 0, 500, 0.5, "length"), ("a", 1, 600, 0.4, "length"), ("b", 0, 50, None)])
    for strategy in ("dp_dpo", "long2short", "shortest_correct", "reward"):
        built = pairs.build(frame, prompts_for(frame), PairsConfig(strategy=strategy))
        assert built.pairs.height == 0 and built.sft["dp_sft"].height == 0 and built.sft["filter_long"].height == 0
        assert built.pairs.to_arrow().cast(pairs.pairs_schema("conversational")).num_rows == 0
    empty = frame.clear()
    built = pairs.build(empty, prompts_for(frame), PairsConfig())
    assert built.pairs.height == 0 and built.stats.samples_total == 0
