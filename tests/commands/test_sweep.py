from dataclasses import replace

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factory import cli

from factory.commands import sweep
from factory.config import ConfigError, PairsConfig, SweepConfig, TermConfig, load
from factory import pairs
from tests.pairs.test_kernel import frame_of, scored
from tests.synthetic import make_run

SAMPLE = st.tuples(
    st.integers(1, 600), st.sampled_from([0.1, 0.5, 0.5, 0.9, 0.95, 1.0]), st.sampled_from(["stop"] * 5 + ["length"])
)


@settings(max_examples=60, deadline=None)
@given(
    groups=st.lists(st.lists(SAMPLE, min_size=1, max_size=6), min_size=1, max_size=25),
    norm=st.sampled_from([{}, {"length_norm": "global"}, {"length_norm": "fixed", "length_max": 300.0},
                          {"quality_norm": "group"}]),
    pairing=st.sampled_from([{}, {"pairing": "best_vs_each"}, {"pairing": "all_ranked", "max_pairs_per_group": 2}]),
)  # fmt: skip
def test_every_sweep_point_equals_a_pair_build(groups, norm, pairing):
    frame = frame_of(groups)
    w_lens, drops = [0.0, 0.25, 0.6, 1.0], [0.0, 0.3, 0.5]
    table = sweep.sweep_table(frame, PairsConfig(**norm, **pairing), w_lens, drops, scale_max=10.0)
    assert table.height == len(w_lens) * len(drops)
    for row in table.iter_rows(named=True):
        cfg = PairsConfig(w_len=row["w_len"], drop_ratio=row["drop_ratio"], **norm, **pairing)
        assert_point_equals_build(row, frame, cfg, 10.0)


def assert_point_equals_build(row: dict, frame: pl.DataFrame, cfg: PairsConfig, scale_max: float) -> None:
    groups_df, stats = pairs.select(frame, cfg)
    assert (row["pairs_kept"], row["pairs_dropped"], row["tied"], row["pairs_candidate"]) == (
        stats.pairs_kept, stats.pairs_dropped, stats.pairs_by_outcome["tied"], stats.pairs_candidate,
    )  # fmt: skip
    assert row["delta"] == stats.delta
    assert (row["mean_token_gap"] is None) == (stats.mean_token_gap is None)
    assert row["mean_token_gap"] == (None if stats.mean_token_gap is None else pytest.approx(stats.mean_token_gap))
    expected_gap = None if stats.mean_quality_gap is None else pytest.approx(stats.mean_quality_gap * scale_max)
    assert row["mean_score_gap"] == expected_gap


@settings(max_examples=25, deadline=None)
@given(
    groups=st.lists(st.lists(SAMPLE, min_size=1, max_size=6), min_size=1, max_size=20),
    rewards=st.lists(st.floats(-3, 3, allow_nan=False), min_size=150, max_size=150),
    combine=st.sampled_from(["terms", "vote"]),
)
def test_sweeping_another_term_equals_pair_builds(groups, rewards, combine):
    frame = frame_of(groups)
    frame = frame.with_columns(pl.Series("reward_rm", rewards[: frame.height]))
    base = PairsConfig(
        w_len=0.5, terms=[TermConfig(source="reward_rm", weight=0.1)], judges=["quality", "reward_rm"], combine=combine
    )
    table = sweep.sweep_table(frame, base, [0.0, 0.5, 1.0], [0.0, 0.4], scale_max=10.0, term="reward_rm")
    assert set(table["term"]) == {"reward_rm"} and set(table["w_len"]) == {0.5}
    for row in table.iter_rows(named=True):
        cfg = replace(base, drop_ratio=row["drop_ratio"], terms=[TermConfig(source="reward_rm", weight=row["weight"])])
        assert_point_equals_build(row, frame, cfg, 10.0)


def test_an_unknown_sweep_term_names_the_key():
    frame = scored([("a", 0, 100, 0.9), ("a", 1, 300, 0.1)])
    with pytest.raises(ConfigError, match=r"sweep\.term.*length, quality"):
        sweep.sweep_table(frame, PairsConfig(), [0.5], [0.0], term="repetition_answer")


def test_default_grid_is_66_points_and_steps_are_configurable():
    assert len(SweepConfig().w_lens) * len(SweepConfig().drop_ratios) == 66
    cfg = load(None, ["sweep.w_len_step=0.05", "sweep.drop_ratio_stop=0.3"])
    assert cfg.sweep.w_lens[:3] == [0.0, 0.05, 0.1] and len(cfg.sweep.w_lens) == 21
    assert cfg.sweep.drop_ratios == [0.0, 0.1, 0.2, 0.3]
    with pytest.raises(ConfigError, match="sweep.w_len_step"):
        load(None, ["sweep.w_len_step=0"])
    with pytest.raises(ConfigError, match="sweep.drop_ratio"):
        load(None, ["sweep.drop_ratio_stop=1.5"])


def test_crossing_of_scaled_curves():
    w = [0.0, 0.5, 1.0]
    assert sweep.crossing(w, [0.0, 50.0, 100.0], [10.0, 5.0, 0.0]) == pytest.approx(0.5)
    assert sweep.crossing(w, [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == 0.0
    assert sweep.crossing(w, [10.0, 20.0, 30.0], [0.0, 0.0, 0.0]) is None


def test_w_len_one_row_measures_shortest_vs_longest():
    frame = scored([("a", 0, 100, 0.9), ("a", 1, 300, 0.1), ("b", 0, 50, 0.2), ("b", 1, 450, 0.8)])
    table = sweep.sweep_table(frame, PairsConfig(), [1.0], [0.0])
    assert table.row(0, named=True)["mean_token_gap"] == pytest.approx(((300 - 100) + (450 - 50)) / 2)


def test_sweep_command_writes_csv_and_pngs(tmp_path, capsys):
    url = str(tmp_path / "run")
    store = make_run(url, n_prompts=8, k=4)
    before = store.read_json("manifest.json")
    assert cli.main(["sweep", url, "sweep.w_len_step=0.25"]) == 0
    out = capsys.readouterr().out
    assert "30 points" in out and "0 LLM requests" in out
    table = pl.read_csv(tmp_path / "run" / "sweep" / "sweep.csv")
    assert table.height == 5 * 6 and {"pairs_kept", "mean_token_gap", "mean_quality_gap"} <= set(table.columns)
    for name in ("heatmap_token_gap.png", "heatmap_quality_gap.png", "gaps_vs_w_len.png"):
        assert (tmp_path / "run" / "sweep" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert store.read_json("manifest.json") == before  # a sweep changes nothing of the run
    shares = table.select((pl.col("pairs_kept") / pl.col("groups_candidate")).alias("expected"), "kept_share")
    assert table["groups_candidate"].min() > 0 and (shares["expected"] - shares["kept_share"]).abs().max() < 1e-12


def test_sweep_command_names_a_bad_key(tmp_path, capsys):
    url = str(tmp_path / "run")
    make_run(url, n_prompts=3, k=2)
    assert cli.main(["sweep", url, "sweep.w_len_stepp=0.5"]) == 2
    err = capsys.readouterr().err
    assert "sweep.w_len_stepp" in err and "did you mean 'sweep.w_len_step'" in err
