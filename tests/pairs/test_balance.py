"""pairs.balance: kept pairs balanced across a prompt column's values (cap or target share), counted."""

import polars as pl
import pytest

from factory import pairs
from factory.config import BalanceConfig, ConfigError, PairsConfig, load
from tests.pairs.test_kernel import prompts_for, scored


def frame_and_prompts(categories: dict[str, str | None]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One group per prompt, two samples each; group g's margin grows with its number."""
    rows = []
    for g, name in enumerate(categories):
        rows += [(name, 0, 100, 0.9), (name, 1, 100 + 10 * (g + 1), 0.1)]
    frame = scored(rows)
    prompts = prompts_for(frame).with_columns(
        pl.col("prompt_id").replace_strict(categories, return_dtype=pl.String).alias("category")
    )
    return frame, prompts


CATEGORIES = {f"k{i}": "kitchen" for i in range(6)} | {"b0": "beauty", "b1": "beauty", "n0": None}


def test_a_cap_keeps_the_largest_margins_of_each_value_and_counts_the_rest():
    frame, prompts = frame_and_prompts(CATEGORIES)
    built = pairs.build(frame, prompts, PairsConfig(drop_ratio=0.0, balance=BalanceConfig(column="category", cap=2)))
    kept = built.pairs["prompt_id"].to_list()
    assert kept == ["b0", "b1", "k4", "k5", "n0"]  # kitchen: k4, k5 have the largest margins
    stats = built.stats
    assert stats.pairs_by_outcome["over_balance"] == 4 and stats.groups_by_outcome["over_balance"] == 4
    assert stats.balance["by_value"] == {
        "beauty": {"kept": 2, "over_balance": 0},
        "kitchen": {"kept": 2, "over_balance": 4},
        "(null)": {"kept": 1, "over_balance": 0},
    }
    assert sum(stats.groups_by_outcome.values()) == stats.groups


def test_a_target_share_finds_the_largest_cap_no_value_exceeds():
    frame, prompts = frame_and_prompts(CATEGORIES)
    cfg = PairsConfig(drop_ratio=0.0, balance=BalanceConfig(column="category", target_share=0.5))
    stats = pairs.build(frame, prompts, cfg).stats
    # cap 3: kitchen 3 of 3 + 2 + 1 = 6 pairs: exactly half; cap 4 would be 4 of 7
    assert stats.balance["cap"] == 3 and stats.pairs_kept == 6 and stats.balance["reachable"] is True
    unreachable = PairsConfig(drop_ratio=0.0, balance=BalanceConfig(column="category", target_share=0.2))
    stats = pairs.build(frame, prompts, unreachable).stats
    assert stats.balance["cap"] is None and stats.pairs_kept == 9 and stats.pairs_by_outcome["over_balance"] == 0


def test_without_balance_the_counts_have_no_balance_entries():
    frame, prompts = frame_and_prompts(CATEGORIES)
    stats = pairs.build(frame, prompts, PairsConfig(drop_ratio=0.0)).stats
    assert "over_balance" not in stats.pairs_by_outcome and "balance" not in stats.as_dict()


def test_balance_config_errors_name_their_key():
    with pytest.raises(ConfigError, match="pairs.balance.column"):
        load(None, ["pairs.balance.cap=3"])
    with pytest.raises(ConfigError, match="pairs.balance.target_share"):
        load(None, ["pairs.balance.column=c", "pairs.balance.target_share=1.5"])
    frame, prompts = frame_and_prompts(CATEGORIES)
    with pytest.raises(ConfigError, match="pairs.balance.column: 'shelf'"):
        pairs.build(frame, prompts, PairsConfig(balance=BalanceConfig(column="shelf", cap=1)))


def test_factory_run_balances_on_a_prompts_column_with_the_filters_before_judging(tmp_path):
    """The judges' pre-filter decides on samples alone (no prompts column): balancing is the build's, after."""
    import json

    from factory.rundir.store import RunStore
    from tests.test_run import local_run, synthetic_cfg

    path = tmp_path / "prompts.jsonl"
    rows = [
        {"id": f"p{i}", "product_info": {"name": f"thing {i}"}, "question": f"q{i}?", "category": "ab"[i % 2]}
        for i in range(6)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = synthetic_cfg(
        tmp_path, 1, f"prompts.path={path}", "pairs.filter_before_judge=true", "pairs.drop_ratio=0",
        "pairs.balance.column=category", "pairs.balance.cap=1",
    )  # fmt: skip
    manifest = local_run(cfg)
    assert manifest["requests"]["judge"] > 0
    by_value = manifest["pairs"]["balance"]["by_value"]
    assert set(by_value) == {"a", "b"} and all(v["kept"] == 1 for v in by_value.values())
    pairs_out = RunStore(str(tmp_path / "run")).read("pairs")
    assert pairs_out.height == manifest["counts"]["pairs_kept"] == 2


# -- issue 25: over-sampling to a floor ------------------------------------------------------------
def test_a_floor_repeats_the_pairs_of_rare_values_marked_counted_and_capped():
    frame, prompts = frame_and_prompts(CATEGORIES)
    cfg = PairsConfig(drop_ratio=0.0, balance=BalanceConfig(column="category", floor=4, max_repeats=1))
    built = pairs.build(frame, prompts, cfg)
    rows = built.pairs.select("prompt_id", "repeat").rows()
    # beauty (2 pairs) reaches 4: b0 and b1 once more each; null (1 pair, at most 1 repeat) reaches 2;
    # kitchen (6 pairs) is above the floor: written once
    assert rows == [("b0", 0), ("b0", 1), ("b1", 0), ("b1", 1), *[(f"k{i}", 0) for i in range(6)], ("n0", 0), ("n0", 1)]
    repeated = built.pairs.filter(pl.col("repeat") == 1)
    original = built.pairs.filter(pl.col("repeat") == 0, pl.col("prompt_id").is_in(["b0", "b1", "n0"]))
    assert repeated.drop("repeat").equals(original.drop("repeat"))  # a repeat is the same pair
    stats = built.stats
    assert stats.pairs_kept == 9 and stats.pairs_repeated == 3 and stats.pairs_written == built.pairs.height == 12
    assert stats.balance["by_value"]["beauty"] == {"kept": 2, "over_balance": 0, "repeated": 2}
    assert stats.balance["by_value"]["(null)"]["repeated"] == 1  # the cap: 2 more were wanted
    assert stats.as_dict()["pairs_repeated"] == 3 and sum(stats.pairs_by_outcome.values()) == stats.pairs_candidate


def test_a_floor_goes_in_turn_largest_margins_first_beside_a_cap():
    frame, prompts = frame_and_prompts(
        {"a0": "a", "a1": "a", "a2": "a", "b0": "b", "b1": "b", "b2": "b", "b3": "b", "b4": "b"}
    )
    cfg = PairsConfig(drop_ratio=0.0, balance=BalanceConfig(column="category", cap=4, floor=4))
    built = pairs.build(frame, prompts, cfg)
    counts = built.pairs.group_by("prompt_id").len().sort("prompt_id").rows()
    # a: 3 pairs, one more for the largest margin (a2); b: capped at 4 (b0 over_balance), no repeat
    assert counts == [("a0", 1), ("a1", 1), ("a2", 2), ("b1", 1), ("b2", 1), ("b3", 1), ("b4", 1)]
    assert built.stats.balance["by_value"]["b"] == {"kept": 4, "over_balance": 1, "repeated": 0}
    with pytest.raises(ConfigError, match="pairs.balance.floor"):
        load(None, ["pairs.balance.column=c", "pairs.balance.cap=2", "pairs.balance.floor=3"])
    assert "repeat" not in pairs.build(frame, prompts, PairsConfig(drop_ratio=0.0)).pairs.columns


def test_factory_run_writes_the_repeats_to_pairs_and_counts_them_in_the_manifest(tmp_path):
    import json

    from factory.rundir.store import RunStore
    from tests.test_run import local_run, synthetic_cfg

    path = tmp_path / "prompts.jsonl"
    rows = [
        {"id": f"p{i}", "product_info": {"name": f"t{i}"}, "question": f"q{i}?", "category": "aab"[i % 3]}
        for i in range(6)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = synthetic_cfg(
        tmp_path, 1, f"prompts.path={path}", "sampler.k=4", "pairs.drop_ratio=0",
        "pairs.balance.column=category", "pairs.balance.floor=4",
    )  # fmt: skip
    manifest = local_run(cfg)
    by_value, counts = manifest["pairs"]["balance"]["by_value"], manifest["counts"]
    assert by_value["a"]["repeated"] == 0 and by_value["b"]["kept"] + by_value["b"]["repeated"] == 4
    pairs_out = RunStore(str(tmp_path / "run")).read("pairs")
    assert (
        pairs_out.height == counts["pairs_kept"] + counts["pairs_repeated"]
        and counts["pairs_repeated"] == by_value["b"]["repeated"]
    )
    assert pairs_out.filter(pl.col("repeat") > 0)["prompt_id"].is_in(["p2", "p5"]).all()


def test_the_report_shows_the_floor_and_the_repeats_per_value():
    from factory.commands import report
    from factory.config import RunConfig

    frame, prompts = frame_and_prompts(CATEGORIES)
    cfg = RunConfig()
    cfg.pairs = PairsConfig(drop_ratio=0.0, balance=BalanceConfig(column="category", floor=3))
    scored_with = pairs.attach(frame, prompts, cfg.pairs)
    numbers = report.build_report(scored_with, pl.DataFrame({"parse_status": ["ok"]}), cfg)
    text = report.render_markdown(numbers, cfg)
    assert numbers["pairs"]["pairs_repeated"] == 1 + 2  # beauty 2 -> 3, null 1 -> 3
    assert "Floor per value: 3 (each pair repeated at most 3 times)." in text
    assert "| value   | pairs kept | over_balance | repeated |" in text


@pytest.mark.parametrize("column", ["shelf", "quality_b", "dim_style"])
def test_a_balance_column_nothing_holds_is_refused_before_any_request(tmp_path, column):
    # Before: the run paid every sample and judgment, then the pair build failed on the column.
    from factory.commands.plan import make_plan
    from tests.fakes import FakeEngine
    from tests.test_run import local_run, synthetic_cfg

    cfg = synthetic_cfg(tmp_path, 3, f"pairs.balance.column={column}", "pairs.balance.cap=1")
    engine = FakeEngine()
    message = rf"^pairs.balance.column: '{column}' is in neither the prompts nor the scored samples \(prompts have "
    with pytest.raises(ConfigError, match=message) as refused:
        local_run(cfg, engine)
    assert not engine.requests and not (tmp_path / "run" / "samples").exists()
    assert "'question'" in str(refused.value) and "'completion_tokens', " in str(refused.value)  # what there is
    with pytest.raises(ConfigError, match=message):
        make_plan(cfg)  # the plan refuses it as the run would


def test_a_balance_column_of_the_prompts_or_the_scored_samples_passes_the_check(tmp_path):
    from factory.graph import RunGraph
    from factory.prompts import load_prompts
    from tests.test_run import synthetic_cfg

    for column in ("question", "finish_reason", "quality", "votes"):
        cfg = synthetic_cfg(tmp_path, 3, f"pairs.balance.column={column}", "pairs.balance.cap=1")
        RunGraph(cfg).check_reads(load_prompts(cfg.prompts)[0])  # no error
