"""long2short as the source did it: the prompts whose samples ran long, sampled again in a run of their
own (factory/pairs/long2short.py), and the source's counts in the report."""

import json

import polars as pl

from factory import cli, config

from factory.commands import report
from factory.config import PairsConfig
from factory.pairs import long2short
from factory.run import run
from tests.fakes import FakeEngine
from tests.pairs.test_kernel import scored
from tests.synthetic import make_run


def test_long_prompts_are_those_with_a_sample_over_the_filter_long_limit():
    frame = scored(
        [("a", 0, 100, 0.5), ("a", 1, 401, 0.5), ("b", 0, 100, 0.5), ("b", 1, 400, 0.5),
         ("c", 0, 900, 0.5, "length"), ("d", 0, 999, 0.5, "error", "boom")]
    )  # fmt: skip
    assert long2short.long_prompt_ids(frame, PairsConfig()).to_list() == ["a", "c"]


def test_source_counts_of_a_long2short_decision():
    frame = scored(
        [("a", 0, 300, 0.5), ("a", 1, 500, 0.5),  # ran long, succeeded
         ("b", 0, 450, 0.5), ("b", 1, 600, 0.5),  # ran long, no sample under 400
         ("c", 0, 100, 0.5), ("c", 1, 200, 0.5)]  # never ran long
    )  # fmt: skip
    from factory import pairs

    decisions, _ = pairs.select(frame, PairsConfig(strategy="long2short"))
    counts = long2short.source_counts(decisions, PairsConfig())
    assert counts["groups_ran_long"] == 2 and counts["groups_ran_long_succeeded"] == 1
    assert counts["mean_chosen_tokens_ran_long"] == 300 and counts["mean_rejected_tokens_ran_long"] == 500


def test_the_long_prompts_sampled_again_keep_their_prompt_text_and_ids(tmp_path, capsys):
    first = str(tmp_path / "first")
    make_run(first, n_prompts=8, k=2)
    path = str(tmp_path / "long.jsonl")
    keys = ["pairs.sft_max_tokens=7"]  # the fake engine's samples have 4..9 tokens
    assert cli.main(["pairs", first, "--long-prompts", path, *keys]) == 0
    assert "ran long" in capsys.readouterr().out
    rows = [json.loads(line) for line in open(path)]
    samples = pl.read_parquet(f"{first}/samples/*.parquet")
    expected = sorted(set(samples.filter(pl.col("completion_tokens") > 7)["prompt_id"]))
    assert [r["id"] for r in rows] == expected and 0 < len(rows) < 8
    manifest = json.loads(open(f"{first}/manifest.json").read())
    second = str(tmp_path / "second")
    cfg = config.load(
        None,
        [f"output_dir={second}", f"prompts.path={path}", "sampler.k=6", "pairs.strategy=long2short",
         f"judge.rubric_file={manifest['config']['judge']['rubric_file']}", "progress_interval_s=60",
         "pairs.max_chosen_tokens=7"],
    )  # fmt: skip
    run(cfg, backend="local", build=lambda _cfg: FakeEngine())
    again = pl.read_parquet(f"{second}/prompts/*.parquet")
    before = pl.read_parquet(f"{first}/prompts/*.parquet").filter(pl.col("prompt_id").is_in(expected))
    assert again.sort("prompt_id")["messages"].to_list() == before.sort("prompt_id")["messages"].to_list()
    assert sorted(again["prompt_id"]) == expected
    text, numbers, _ = report.run_report(second)
    l2s = numbers["long2short"]
    assert l2s["groups_total"] == len(expected) and l2s["groups_ran_long"] <= l2s["groups_total"]
    assert "Groups that ran long" in text
