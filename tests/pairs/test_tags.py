"""Issue 25: the judge's tags in selection: a filter (require / forbid), a term of S, a pairs.balance key."""

import polars as pl
import pytest

from factory import pairs
from factory.config import BalanceConfig, ConfigError, PairsConfig, TermConfig
from factory.pairs.marks import judge_free_reasons
from tests.pairs.test_kernel import prompts_for, scored


def tagged(rows: list[tuple], tags: list[list[str] | None]) -> pl.DataFrame:
    return scored(rows).with_columns(pl.Series("tags", tags, pl.List(pl.String)))


# Three groups of three: sample 0 is the shortest and best, sample 2 the longest and worst.
ROWS = [(g, i, 100 + 100 * i, 0.9 - 0.3 * i) for g in ("a", "b", "c") for i in range(3)]
TAGS = [["short"], ["off_topic"], ["long"], ["short"], ["short"], [], ["off_topic", "short"], ["long"], None]


def kept_pairs(frame: pl.DataFrame, cfg: PairsConfig) -> list[tuple[str, int, int]]:
    built = pairs.build(frame, prompts_for(frame), cfg)
    return [
        (r["prompt_id"], r["chosen_idx"], r["rejected_idx"])
        for r in built.decisions.filter(pl.col("outcome") == "kept").iter_rows(named=True)
    ], built.stats  # type: ignore[return-value]


def test_a_forbidden_tag_excludes_its_samples_under_the_term_name_after_judging():
    frame = tagged(ROWS, TAGS)
    base, _ = kept_pairs(frame, PairsConfig(drop_ratio=0.0))
    assert base == [("a", 0, 2), ("b", 0, 2), ("c", 0, 2)]
    cfg = PairsConfig(drop_ratio=0.0, terms=[TermConfig(source="tag_off_topic", exclude_above=0)])
    kept, stats = kept_pairs(frame, cfg)
    assert kept == [("a", 0, 2), ("b", 0, 2), ("c", 1, 2)]  # c's best sample is off topic: c1 is chosen
    assert stats.samples_excluded["tag_off_topic"] == 2  # a1 and c0
    assert stats.samples_valid + sum(stats.samples_excluded.values()) == stats.samples_total
    assert "tag_off_topic" not in judge_free_reasons(cfg)  # it reads the judge's reply: not before judging


def test_a_required_tag_keeps_only_the_samples_that_carry_it():
    frame = tagged(ROWS, TAGS)
    cfg = PairsConfig(drop_ratio=0.0, terms=[TermConfig(source="tag_short", exclude_below=1)])
    kept, stats = kept_pairs(frame, cfg)
    assert kept == [("b", 0, 1)]  # only b has two samples tagged short; a and c have one each
    assert stats.samples_excluded["tag_short"] == 5
    assert stats.groups_by_outcome["fewer_than_2_valid"] == 2


def test_a_tag_term_moves_S():
    frame = tagged(ROWS, TAGS)
    # weight on "long": the long-tagged sample a2 rises to the top of group a (and c1 in c)
    cfg = PairsConfig(w_len=0.0, w_quality=0.1, drop_ratio=0.0, terms=[TermConfig(source="tag_long", weight=1.0)])
    kept, stats = kept_pairs(frame, cfg)
    assert kept == [("a", 2, 1), ("b", 0, 2), ("c", 1, 2)]
    assert [t["name"] for t in stats.terms][-1] == "tag_long"


def test_balance_by_tags_caps_each_tag_set():
    rows = [(f"p{g}", i, 100 + 10 * i * (g + 1), 0.9 - 0.5 * i) for g in range(5) for i in range(2)]
    chosen_tags = [["short"], ["short"], ["short"], ["long", "short"], []]
    frame = tagged(rows, [t for c in chosen_tags for t in (c, ["x"])])
    cfg = PairsConfig(drop_ratio=0.0, balance=BalanceConfig(column="tags", cap=2))
    kept, stats = kept_pairs(frame, cfg)
    # "short" has three pairs: the two largest margins (p1, p2) stay; the tag sets count apart
    assert [k[0] for k in kept] == ["p1", "p2", "p3", "p4"]
    assert stats.balance["by_value"] == {
        "long+short": {"kept": 1, "over_balance": 0},
        "short": {"kept": 2, "over_balance": 1},
        "(null)": {"kept": 1, "over_balance": 0},
    }


def test_a_tag_term_without_tags_fails_naming_the_key():
    frame = scored(ROWS)
    with pytest.raises(ConfigError, match=r"pairs.terms\[0\]: needs the column 'tags'"):
        pairs.select(frame, PairsConfig(terms=[TermConfig(source="tag_x", exclude_above=0)]))


def test_factory_run_filters_on_a_tag_after_judging_and_counts_it(tmp_path):
    import json

    from tests.test_run import local_run, synthetic_cfg

    cfg = synthetic_cfg(
        tmp_path, 6, "sampler.k=4", "judge.tags=true", "judge.tag_values=[short,long]", "pairs.drop_ratio=0",
        "pairs.filter_before_judge=true", "pairs.terms=[{source: tag_long, exclude_above: 0}]",
    )  # fmt: skip
    local_run(cfg)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    excluded = manifest["pairs"]["samples_excluded"]
    duplicates = excluded.get("duplicate", 0)
    assert excluded["tag_long"] > 0  # the fake judge tags by seed: about half are long
    assert excluded["no_judgment"] == 0  # the tag filter does not stop a sample from being judged
    assert (
        manifest["pairs"]["samples_total"] == 24
        and 24 - duplicates - excluded["tag_long"] == manifest["pairs"]["samples_valid"]
    )


def test_a_tag_term_without_judge_tags_fails_at_preflight(tmp_path):
    from tests.test_run import local_run, synthetic_cfg

    cfg = synthetic_cfg(tmp_path, 2, "pairs.terms=[{source: tag_long, exclude_above: 0}]")
    with pytest.raises(ConfigError, match=r"pairs.terms\[0\]: reads the judge's tags.*judge.tags=true"):
        local_run(cfg)
    cfg = synthetic_cfg(tmp_path, 2, "pairs.balance.column=tags", "pairs.balance.cap=1")
    with pytest.raises(ConfigError, match=r"pairs.balance.column: reads the judge's tags"):
        local_run(cfg)


def test_a_tag_term_naming_a_tag_outside_judge_tag_values_fails_at_preflight(tmp_path):
    # The judge's tags outside judge.tag_values are dropped: such a term could never hold (a filter on it would
    # exclude every sample, or none), found only after every judgment was paid.
    from tests.fakes import FakeEngine
    from tests.test_run import local_run, synthetic_cfg

    engine = FakeEngine()
    cfg = synthetic_cfg(
        tmp_path, 2, "judge.tags=true", "judge.tag_values=[short,long]",
        "pairs.terms=[{source: tag_long, weight: 0.1}, {source: tag_off_topic, exclude_above: 0}]",
    )  # fmt: skip
    with pytest.raises(
        ConfigError, match=r"^pairs.terms\[1\]: the tag 'off_topic' is not one of judge.tag_values \['short', 'long'\]"
    ):
        local_run(cfg, engine)
    assert not engine.requests
    free = synthetic_cfg(tmp_path, 2, "judge.tags=true", "pairs.terms=[{source: tag_off_topic, exclude_above: 0}]")
    assert local_run(free, engine)["requests"]["judge"] == 4  # free-text tags (no tag_values): any tag may come
