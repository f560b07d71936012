"""shortest_correct and reward strategies, and the strategies side by side (factory.pairs.compare)."""

import polars as pl
import pytest

from factory import pairs
from factory.config import ConfigError, PairsConfig, TermConfig
from factory.pairs.compare import STRATEGIES, compare
from tests.pairs.test_kernel import prompts_for, scored


def with_reward(frame: pl.DataFrame, rewards: list[float | None]) -> pl.DataFrame:
    return frame.with_columns(pl.Series("reward_rm", rewards, pl.Float64))


# -- shortest_correct ------------------------------------------------------------------------------
def test_shortest_correct_pairs_the_shortest_and_longest_of_the_samples_passing_the_gate():
    frame = scored(
        [
            ("a", 0, 50, 0.2),  # shortest, but wrong: excluded
            ("a", 1, 120, 0.8),  # shortest correct: chosen
            ("a", 2, 300, 0.9),
            ("a", 3, 500, 0.75),  # longest correct: rejected
            ("a", 4, 900, 0.1),  # longest, wrong
        ]
    )
    decisions, stats = pairs.select(frame, PairsConfig(strategy="shortest_correct", correct_min=0.7))
    kept = decisions.filter(pl.col("outcome") == "kept").row(0, named=True)
    assert (kept["chosen_idx"], kept["rejected_idx"]) == (1, 3)
    assert stats.samples_excluded["not_correct"] == 2 and stats.samples_valid == 3
    assert stats.delta is None and stats.pairs_kept == 1


def test_shortest_correct_counts_groups_without_two_correct_samples_under_the_gate():
    frame = scored([("a", 0, 100, 0.9), ("a", 1, 200, 0.3), ("b", 0, 100, 0.9), ("b", 1, 300, 0.95)])
    _, stats = pairs.select(frame, PairsConfig(strategy="shortest_correct", correct_min=0.5))
    assert stats.groups_by_outcome["fewer_than_2_valid"] == 1 and stats.groups_too_few_by_reason == {"not_correct": 1}
    assert stats.pairs_kept == 1
    assert stats.samples_total == stats.samples_valid + sum(stats.samples_excluded.values())


def test_shortest_correct_gates_on_a_named_column_and_its_nulls_are_unjudged():
    frame = with_reward(
        scored([("a", 0, 100, 0.1), ("a", 1, 200, 0.1), ("a", 2, 300, 0.1), ("a", 3, 50, 0.1)]), [1.0, 1.0, 1.0, None]
    )
    cfg = PairsConfig(strategy="shortest_correct", correct_column="reward_rm", correct_min=0.5)
    decisions, stats = pairs.select(frame, cfg)
    kept = decisions.filter(pl.col("outcome") == "kept").row(0, named=True)
    assert (kept["chosen_idx"], kept["rejected_idx"]) == (0, 2)
    assert stats.samples_excluded["no_judgment"] == 1 and stats.samples_excluded["not_correct"] == 0


def test_shortest_correct_with_equal_lengths_is_a_tie_and_never_kept():
    frame = scored([("a", 0, 100, 0.9), ("a", 1, 100, 0.8)])
    _, stats = pairs.select(frame, PairsConfig(strategy="shortest_correct"))
    assert stats.pairs_kept == 0 and stats.pairs_by_outcome["tied"] == 1


def test_a_missing_gate_column_fails_naming_its_key():
    with pytest.raises(ConfigError, match="pairs.correct_column"):
        pairs.select(
            scored([("a", 0, 1, 0.5), ("a", 1, 2, 0.5)]),
            PairsConfig(strategy="shortest_correct", correct_column="verify_ref"),
        )
    with pytest.raises(ConfigError, match="pairs.correct_min"):
        PairsConfig(strategy="shortest_correct", correct_min=float("nan"))
    with pytest.raises(ConfigError, match="pairs.reward_column"):
        PairsConfig(strategy="reward", reward_column="not a column")


# -- reward ----------------------------------------------------------------------------------------
def test_reward_picks_the_highest_and_lowest_of_its_column_whatever_the_lengths():
    frame = with_reward(scored([("a", 0, 900, 0.1), ("a", 1, 100, 0.9), ("a", 2, 500, 0.5)]), [3.0, -1.0, 0.5])
    cfg = PairsConfig(strategy="reward", reward_column="reward_rm", drop_ratio=0.9)
    decisions, stats = pairs.select(frame, cfg)
    kept = decisions.filter(pl.col("outcome") == "kept").row(0, named=True)
    assert (kept["chosen_idx"], kept["rejected_idx"]) == (0, 1)
    assert kept["margin"] == pytest.approx(1.0)  # reward terms are group min-max: 1 - 0
    assert stats.delta is None and [t["weight"] for t in stats.terms] == [0.0, 0.0, 1.0]


def test_reward_defaults_to_the_first_judge_and_ignores_the_term_weights_but_not_the_filters():
    frame = scored([("a", 0, 100, 0.9, None, None, "x" * 90), ("a", 1, 300, 0.8), ("a", 2, 200, 0.2)])
    cfg = PairsConfig(strategy="reward", terms=[TermConfig(source="answer_chars", weight=5.0, exclude_above=80)])
    decisions, stats = pairs.select(frame, cfg)
    kept = decisions.filter(pl.col("outcome") == "kept").row(0, named=True)
    assert (kept["chosen_idx"], kept["rejected_idx"]) == (1, 2)
    assert stats.samples_excluded["answer_chars"] == 1


def test_existing_strategies_keep_their_terms():
    for strategy in ("dp_dpo", "quality", "long2short"):
        _, stats = pairs.select(scored([("a", 0, 1, 0.5), ("a", 1, 2, 0.4)]), PairsConfig(strategy=strategy))
        assert [t["name"] for t in stats.terms] == ["length", "quality"]


def test_build_writes_the_strategy_and_its_dp_sft_from_the_unfiltered_samples():
    frame = scored([("a", 0, 100, 0.9), ("a", 1, 300, 0.2), ("a", 2, 200, 0.95)])
    built = pairs.build(frame, prompts_for(frame), PairsConfig(strategy="shortest_correct", drop_ratio=0.0))
    assert built.pairs["strategy"].to_list() == ["shortest_correct"]
    assert built.pairs.select("chosen_idx", "rejected_idx").row(0) == (0, 2)
    dp_dpo = pairs.build(frame, prompts_for(frame), PairsConfig(drop_ratio=0.0)).sft["dp_sft"]
    assert built.sft["dp_sft"].equals(dp_dpo)  # the gate does not leak into the dp_dpo export


# -- side by side ----------------------------------------------------------------------------------
def test_compare_gives_one_row_per_strategy_each_equal_to_its_own_build():
    frame = with_reward(
        scored(
            [
                ("a", 0, 100, 0.9),
                ("a", 1, 400, 0.8),
                ("a", 2, 250, 0.3),
                ("b", 0, 500, 0.95),
                ("b", 1, 200, 0.6),
                ("b", 2, 350, 0.75),
                ("c", 0, 300, 0.5),
                ("c", 1, 310, 0.5),
            ]
        ),  # fmt: skip
        [1.0, 2.0, 0.0, 3.0, 1.0, 2.0, 0.5, 0.4],
    )
    cfg = PairsConfig(drop_ratio=0.3, reward_column="reward_rm")
    rows = compare(frame, cfg)
    assert [r["strategy"] for r in rows] == list(STRATEGIES)
    for row in rows:
        own = PairsConfig(strategy=row["strategy"], drop_ratio=0.3, reward_column="reward_rm")
        decisions, stats = pairs.select(frame, own)
        kept = decisions.filter(pl.col("outcome") == "kept")
        assert row["pairs_kept"] == stats.pairs_kept == kept.height
        assert row["mean_token_gap"] == pytest.approx(stats.mean_token_gap)
        assert row["mean_quality_gap"] == pytest.approx(stats.mean_quality_gap)
        shorter = (kept["chosen_tokens"] < kept["rejected_tokens"]).mean()
        assert row["chosen_shorter"] == pytest.approx(shorter)
    by = {r["strategy"]: r for r in rows}
    assert by["long2short"]["chosen_shorter"] == 1.0 and by["shortest_correct"]["chosen_shorter"] == 1.0
    # reward by reward_rm: a: 1 (400) vs 2 (250), b: 0 (500) vs 1 (200), c: 0 (300) vs 1 (310)
    assert by["reward"]["pairs_kept"] == 3 and by["reward"]["chosen_shorter"] == pytest.approx(1 / 3)
    assert by["reward"]["mean_token_gap"] == pytest.approx(((250 - 400) + (200 - 500) + (310 - 300)) / 3)


def test_a_sweep_of_a_run_with_its_own_strategy_term_sweeps_dp_dpo_on_every_sample():
    from factory.commands.sweep import sweep_table

    frame = scored([("a", 0, 100, 0.9), ("a", 1, 300, 0.2), ("a", 2, 200, 0.95), ("b", 0, 50, 0.1), ("b", 1, 80, 0.3)])
    grid = ([0.0, 0.5, 1.0], [0.0, 0.3])
    plain = sweep_table(frame, PairsConfig(), *grid)
    for strategy in ("shortest_correct", "reward"):
        assert sweep_table(frame, PairsConfig(strategy=strategy), *grid).equals(plain)


# -- the strategies table (factory/config/strategies.py) -------------------------------------------
@pytest.mark.parametrize("strategy, draw", [("dp_dpo", 172), ("quality", 172), ("long2short", 120),
                                            ("shortest_correct", 120), ("reward", 120)])  # fmt: skip
def test_the_first_target_draw_leaves_out_drop_ratio_for_every_strategy_without_a_margin_threshold(strategy, draw):
    # 1.2 x target / (1 - drop_ratio); the strategies that drop nothing by margin draw 1.2 x target (it was
    # 172 for shortest_correct and reward: only long2short was exempted, while the kernel exempts all three).
    from factory.pairs.stats import target_draw

    assert target_draw(PairsConfig(strategy=strategy, target=100, drop_ratio=0.3)) == draw
    kept = pairs.select(scored([("a", 0, 50, 0.2), ("a", 1, 120, 0.8)]), PairsConfig(strategy=strategy))[1]
    assert (kept.delta is None) == (draw == 120)


def strategy_comparisons(tree) -> list[int]:
    """Lines that compare something named *strategy* with a string literal (or a tuple of them), or pass a
    literal as `strategy=`."""
    import ast

    def names_strategy(node) -> bool:
        return "strategy" in ast.unparse(node).lower() and not isinstance(node, ast.Constant)

    def literal(node) -> bool:
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return any(literal(e) for e in node.elts)
        return isinstance(node, ast.Constant) and isinstance(node.value, str)

    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(names_strategy(o) for o in operands) and any(literal(o) for o in operands):
                lines.append(node.lineno)
        elif isinstance(node, ast.keyword) and node.arg == "strategy" and literal(node.value):
            lines.append(node.value.lineno)
    return lines


def test_strategy_names_are_compared_only_in_the_strategies_table():
    import ast
    from pathlib import Path

    package = Path(pairs.__file__).resolve().parent.parent
    found = {
        str(path.relative_to(package.parent)): strategy_comparisons(ast.parse(path.read_text()))
        for path in package.rglob("*.py")
        if path.name != "strategies.py"
    }
    assert len(found) > 50
    assert {path: lines for path, lines in found.items() if lines} == {}


def test_the_strategy_scan_finds_a_comparison():
    import ast

    code = (
        'if cfg.strategy == "long2short": pass\nx = cfg.pairs.strategy in ("reward", "dp_dpo")\n'
        'replace(cfg, strategy="quality")\n'
    )
    assert strategy_comparisons(ast.parse(code)) == [1, 2, 3]
    assert strategy_comparisons(ast.parse('if term.name == "quality": pass\nif strategy_of(cfg).delta: pass')) == []
