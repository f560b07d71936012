import json
import re

import polars as pl
import pytest

from factory import cli

from factory.commands import report
from factory.config import PairsConfig, RunConfig, TermConfig
from tests.pairs.test_kernel import scored
from tests.synthetic import make_run


def test_tables_hold_means_maxima_and_response_times():
    frame = scored(
        [
            ("a", 0, 125, 0.9), ("a", 1, 500, 0.5), ("a", 2, 250, 0.7, "length"),
            ("b", 0, 100, 0.8), ("b", 1, 300, 0.6),
        ]
    )  # fmt: skip
    judgments = pl.DataFrame({"parse_status": ["ok", "ok", "ok", "ok", "unparseable"]})
    cfg = RunConfig()
    cfg.pairs.drop_ratio = 0.0
    numbers = report.build_report(frame, judgments, cfg)
    rows = {r["set"]: r for r in numbers["table"]}
    everything = rows["all samples (no engine error)"]
    assert everything["n"] == 5 and everything["max_tokens"] == 500
    assert everything["mean_tokens"] == pytest.approx(255.0)
    assert everything["mean_rt_s"] == pytest.approx(255.0 / 62.5) and everything["max_rt_s"] == pytest.approx(8.0)
    assert rows["valid samples"]["n"] == 4
    assert rows["chosen (dp_dpo)"]["mean_tokens"] == pytest.approx(112.5)
    assert rows["rejected (dp_dpo)"]["mean_score"] == pytest.approx(55.0)
    assert rows["filter-long SFT (<= 400)"]["n"] == 3
    assert numbers["long2short"] == {
        "max_chosen_tokens": 400, "mean_chosen_tokens": 112.5, "mean_rejected_tokens": 400.0,
        "groups_succeeded": 2, "groups_total": 2, "groups_no_short_sample": 0,
        "groups_ran_long": 1, "groups_ran_long_succeeded": 1,  # a: 500 tokens ran long; b did not
        "mean_chosen_tokens_ran_long": 125.0, "mean_rejected_tokens_ran_long": 500.0,
    }  # fmt: skip
    assert numbers["judgments"]["by_status"] == {"ok": 4, "unparseable": 1}
    assert numbers["judgments"]["parse_failure_rate"] == pytest.approx(0.2)
    text = report.render_markdown(numbers, cfg)
    assert "| long2short chosen" in text and "20.0%" in text


def test_report_command_writes_tables_and_plots(tmp_path, capsys):
    url = str(tmp_path / "run")
    make_run(url, n_prompts=8, k=4)
    assert cli.main(["report", url]) == 0
    out = capsys.readouterr().out
    assert "## Samples and pairs" in out and "## long2short" in out and "## Rates" in out
    folder = tmp_path / "run" / "report"
    numbers = json.loads((folder / "report.json").read_text())
    assert numbers["pairs"]["groups"] == 8 and len(numbers["table"]) == 7
    assert (folder / "report.md").read_text() in out
    for name in ("lengths.png", "margins.png", "quality.png"):
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "pairs/ holds" not in out


def test_report_points_out_a_stale_pair_build(tmp_path, capsys):
    url = str(tmp_path / "run")
    make_run(url, n_prompts=8, k=4)
    assert cli.main(["report", url, "pairs.drop_ratio=0.9"]) == 0
    assert "run `factory pairs`" in capsys.readouterr().out


def test_report_shows_terms_rule_reasons_judges_and_pair_outcomes():
    frame = scored(
        [
            ("a", 0, 125, 0.9, "stop", None, "Link 3, yes."), ("a", 1, 500, 0.5), ("a", 2, 250, 0.7),
            ("b", 0, 100, 0.8, "stop", None, "x" * 81), ("b", 1, 300, 0.6), ("b", 2, 200, 0.4),
        ]
    ).with_columns(pl.Series("quality_b", [0.2, 0.9, 0.5, 0.8, 0.6, 0.4]), pl.Series("dim_tone", [4.0, 2, 3, 5, 1, 2]),
                   pl.lit(0.0).alias("quality_spread"))  # fmt: skip
    cfg = RunConfig()
    cfg.pairs = PairsConfig(
        w_len=0.0,  # quality alone: the judges disagree on group a (0 vs 1 chosen) and agree on b
        drop_ratio=0.0,
        pairing="best_vs_each",
        judges=["quality", "quality_b"],
        terms=[TermConfig(source="answer_chars", exclude_above=80), TermConfig(source="dim_tone", weight=0.1)],
    )
    numbers = report.build_report(frame, pl.DataFrame({"parse_status": ["ok"] * 6}), cfg)
    pairs = numbers["pairs"]
    assert pairs["samples_excluded"]["answer_chars"] == 1
    assert pairs["judge_agreement"] == {"quality vs quality_b": 0.5}
    assert {r["column"] for r in numbers["score_columns"]} == {"quality_b", "dim_tone"}
    text = report.render_markdown(numbers, cfg)
    for needle in ("## Terms", "| answer_chars", "> 80", "| dim_tone", "## Judges", "quality vs quality_b",
                   "samples excluded: answer_chars", "candidate pairs: kept", "best_vs_each (none)"):  # fmt: skip
        assert needle in text, needle


def test_report_shows_every_judge_their_agreement_dimensions_and_tags(tmp_path, capsys):
    from tests.test_run import RM, local_run, synthetic_cfg

    cfg = synthetic_cfg(
        tmp_path, 6, "sampler.k=4", "judges.b.sampling.seed=1", *RM, "pairs.judges=[quality,quality_b,reward_rm]",
        "judge.dimensions=true", "judge.tags=true", "judge.tag_values=[short,long]",
    )  # fmt: skip
    local_run(cfg)
    assert cli.main(["report", cfg.output_dir]) == 0
    out = capsys.readouterr().out
    numbers = json.loads((tmp_path / "run" / "report" / "report.json").read_text())
    # every sample but the duplicates (excluded before judging, pairs.filter_before_judge) is judged
    judged = 24 - numbers["pairs"]["samples_excluded"]["duplicate"]
    assert [(j["stage"], j["column"], j["ok"], j["failed"]) for j in numbers["judges"]] == [
        ("judge", "quality", judged, 0), ("judge_b", "quality_b", judged, 0), ("reward_rm", "reward_rm", judged, 0),
    ]  # fmt: skip
    agreement = numbers["pairs"]["judge_agreement"]
    assert set(agreement) == {"quality vs quality_b", "quality vs reward_rm", "quality_b vs reward_rm"}
    assert all(0.0 <= v <= 1.0 for v in agreement.values())
    columns = {r["column"] for r in numbers["score_columns"]}
    assert {"quality_b", "reward_rm", "dim_question", "dim_product_info", "dim_self", "dim_instruction"} <= columns
    assert {r["tag"] for r in numbers["tags"]} == {"short", "long"}
    valid_share = {r["tag"]: r["valid"] for r in numbers["tags"]}
    assert valid_share["short"] + valid_share["long"] == pytest.approx(1.0)  # one tag per judgment
    for line in ("## Judges", "| reward_rm ", "| reward_model", "quality_b vs reward_rm", "## Tags", "| dim_question"):
        assert line in out, line
    # issue 25: each dimension's distribution on the valid samples
    dims = {r["column"]: r for r in numbers["dimensions"]}
    assert set(dims) == {"dim_question", "dim_product_info", "dim_self", "dim_instruction"}
    for row in dims.values():
        assert sum(row["histogram"]) == row["n"] == numbers["pairs"]["samples_valid"]
        assert row["p10"] <= row["p25"] <= row["p50"] <= row["p75"] <= row["p90"]
    assert "## Dimensions" in out


def test_dimension_distributions_bin_over_the_judge_scale():
    frame = scored([("a", 0, 100, 0.9), ("a", 1, 200, 0.5), ("a", 2, 300, 0.5, "length")]).with_columns(
        pl.Series("dim_question", [100.0, 15.0, 50.0])
    )
    numbers = report.build_report(frame, pl.DataFrame({"parse_status": ["ok"] * 3}), RunConfig())
    (row,) = numbers["dimensions"]
    # the truncated sample is not valid: 15 in bin 1, 100 (the top of the scale) in the last bin
    assert row["n"] == 2 and row["histogram"] == [0, 1, 0, 0, 0, 0, 0, 0, 0, 1] and row["mean"] == 57.5
    assert row["p50"] == pytest.approx(57.5)
    text = report.render_markdown(numbers, RunConfig())
    assert "## Dimensions" in text and "| dim_question | 2 " in text


def test_a_run_with_one_judge_and_no_tags_reports_as_before():
    frame = scored([("a", 0, 125, 0.9), ("a", 1, 500, 0.5)])
    numbers = report.build_report(frame, pl.DataFrame({"parse_status": ["ok", "ok"]}), RunConfig())
    assert numbers["tags"] == [] and [j["stage"] for j in numbers["judges"]] == ["judge"]
    text = report.render_markdown(numbers, RunConfig())
    assert "## Tags" not in text and "Agreement" not in text


def test_report_shows_the_strategies_and_the_bias_audit_and_pairs_compare_prints_the_same_table(tmp_path, capsys):
    url = str(tmp_path / "run")
    make_run(url, n_prompts=8, k=4)
    assert cli.main(["report", url]) == 0
    out = capsys.readouterr().out
    assert "## Strategies on the same samples" in out and "## Bias audit" in out
    numbers = json.loads((tmp_path / "run" / "report" / "report.json").read_text())
    strategies = {r["strategy"]: r for r in numbers["strategies"]}
    assert list(strategies) == ["dp_dpo", "quality", "long2short", "shortest_correct", "reward"]
    assert strategies["dp_dpo"]["pairs_kept"] == numbers["pairs"]["pairs_kept"]
    assert strategies["long2short"]["pairs_kept"] == numbers["long2short"]["groups_succeeded"]
    audit = numbers["bias_audit"]
    assert [r["judge"] for r in audit["length_bias"]] == ["quality"]
    assert sum(audit["scores"][0]["histogram"]) == audit["scores"][0]["n"] > 0
    assert audit["gaps"][0]["n"] == numbers["pairs"]["pairs_kept"]
    pairs_before = sorted(p.name for p in (tmp_path / "run" / "pairs").iterdir())
    manifest_before = (tmp_path / "run" / "manifest.json").read_bytes()
    assert cli.main(["pairs", url, "--compare"]) == 0
    table = capsys.readouterr().out
    section = out.split("## Strategies on the same samples")[1].split("## Bias audit")[0].strip()
    assert section in table  # the same function, the same numbers
    assert sorted(p.name for p in (tmp_path / "run" / "pairs").iterdir()) == pairs_before
    assert (tmp_path / "run" / "manifest.json").read_bytes() == manifest_before  # nothing written


def test_report_and_sweep_balance_by_a_prompt_column(tmp_path, capsys):
    url = str(tmp_path / "run")
    make_run(url, n_prompts=6, k=4)
    keys = ["pairs.balance.column=question", "pairs.balance.cap=1", "pairs.drop_ratio=0"]
    text, numbers, _ = report.run_report(url, keys)
    balance = numbers["pairs"]["balance"]
    assert "## Balance by question" in text and balance["cap"] == 1
    assert sum(v["kept"] for v in balance["by_value"].values()) == numbers["pairs"]["pairs_kept"]
    assert cli.main(["sweep", url, *keys]) == 0


def test_report_against_another_run_prints_both_runs_tag_and_dimension_shares(tmp_path, capsys):
    from tests.test_run import local_run, synthetic_cfg

    def version(name: str, *extra: str) -> str:
        folder = tmp_path / name
        folder.mkdir()
        cfg = synthetic_cfg(folder, 6, "sampler.k=4", "judge.dimensions=true", "judge.tags=true", *extra)
        local_run(cfg)
        return cfg.output_dir

    a = version("a", "judge.tag_values=[short,long]")
    b = version("b", "judge.tag_values=[short,long,rude]", "sampler.k=3")
    assert cli.main(["report", b]) == 0  # B's own report, to compare with
    own_b = json.loads((tmp_path / "b" / "run" / "report" / "report.json").read_text())
    before_b = sorted(p.name for p in (tmp_path / "b" / "run").rglob("*"))
    capsys.readouterr()
    assert cli.main(["report", a, "--against", b]) == 0
    out = capsys.readouterr().out
    numbers = json.loads((tmp_path / "a" / "run" / "report" / "report.json").read_text())
    against = numbers["against"]
    assert against["run"] == b
    tags = {r["tag"]: r for r in against["tags"]}
    assert set(tags) == {"short", "long", "rude"} and tags["rude"]["valid_a"] is None
    for row in numbers["tags"]:  # A's side is A's own report, B's side is B's
        assert tags[row["tag"]]["valid_a"] == row["valid"]
    for row in own_b["tags"]:
        assert tags[row["tag"]]["valid_b"] == row["valid"]
    dims = {r["column"]: r for r in against["dimensions"]}
    assert {r["column"]: r["mean"] for r in own_b["dimensions"]} == {c: r["mean_b"] for c, r in dims.items()}
    assert {r["column"]: r["mean"] for r in numbers["dimensions"]} == {c: r["mean_a"] for c, r in dims.items()}
    assert f"## Against {b}" in out and "Tags (share of samples):" in out
    assert re.search(r"\| rude +\| +- +\| +\d+\.\d%", out)  # a tag only B has: A's share is -
    assert "Dimensions (valid samples):" in out and "| dim_question     |  21 |  16 |" in out
    assert sorted(p.name for p in (tmp_path / "b" / "run").rglob("*")) == before_b  # nothing written in B
    page = (tmp_path / "a" / "run" / "report" / "index.html").read_text()
    assert f"Against {b}" in page and 'href="#against"' in page and "<th>valid B</th>" in page


def test_report_md_escapes_markup_and_table_characters_in_values():
    # issue 22: a judge's tag (or a prompt's text) is any string; raw, a `|` or a newline breaks the table's
    # row and `<` opens markup.
    frame = scored([("a", 0, 125, 0.9), ("a", 1, 500, 0.5), ("b", 0, 100, 0.8), ("b", 1, 300, 0.6)])
    hostile = "sh|ort\nnext <b>line</b>"
    frame = frame.with_columns(pl.Series("tags", [[hostile], ["plain"], [hostile], []], pl.List(pl.String)))
    numbers = report.build_report(frame, pl.DataFrame({"parse_status": ["ok"] * 4}), RunConfig())
    text = report.render_markdown(numbers, RunConfig())
    tags = text.split("## Tags")[1].split("\n## ")[0]
    rows = [line for line in tags.splitlines() if line.startswith("|")]
    assert len(rows) == 2 + 2  # header, rule, one row per tag: the newline did not start a row
    escaped = next(line for line in rows if "sh" in line)
    assert "sh\\|ort<br>next &lt;b>line&lt;/b>" in escaped and "<b>" not in text
    cells = [c for c in re.split(r"(?<!\\)\|", escaped)[1:-1]]
    assert len(cells) == 4  # tag, valid, chosen, rejected: the `|` in the tag is not a column


def test_the_page_and_report_md_render_the_same_tables(tmp_path):
    # One set of tables (report.report_tables), two generic renderers: the page's terms table has report.md's
    # columns, and every rate row report.md lists (zero counts too) is on the page.
    import html

    from factory.commands.page_html import tables_html

    frame = scored([("a", 0, 125, 0.9), ("a", 1, 500, 0.5), ("b", 0, 100, 0.8), ("b", 1, 300, 0.6)])
    cfg = RunConfig()
    cfg.pairs = PairsConfig(terms=[TermConfig(source="answer_chars", exclude_above=80)])
    numbers = report.build_report(frame, pl.DataFrame({"parse_status": ["ok"] * 4}), cfg)
    tables = report.report_tables(numbers, cfg)
    page = tables_html(tables)
    text = report.render_markdown(numbers, cfg)
    for t in tables:
        assert all(f"<th>{html.escape(h)}</th>" in page for h in t.headers) and (not t.title or f"## {t.title}" in text)
    assert "<th>excluded when</th><th>key</th>" in page and "| excluded when |" in text
    rates = next(t for t in tables if t.title == "Rates")
    zero = [r[0] for r in rates.rows if r[1] == 0]
    assert zero and all(f">{html.escape(name)}</td>" in page and f"| {name}" in text for name in zero)


def test_report_describes_the_pairs_on_disk_after_a_pairs_build_with_overrides(tmp_path, capsys):
    """`factory pairs RUN k=v` writes pairs/ under those settings and records them (pairs_build); the report of
    that run, alone or as --against's B, reads the run under them, so its counts are those of pairs/ (a copy
    of a run rebuilt as a second version was reported with the first version's settings)."""
    import shutil

    from factory.rundir.store import RunStore

    a = str(tmp_path / "a")
    make_run(a, n_prompts=8, k=4)
    b = str(tmp_path / "b")
    shutil.copytree(a, b)
    assert cli.main(["pairs", b, "pairs.drop_ratio=0.0", "pairs.pairing=all_ranked"]) == 0
    on_disk = RunStore(b).read("pairs").height
    capsys.readouterr()
    assert cli.main(["report", b]) == 0
    captured = capsys.readouterr()
    numbers = json.loads((tmp_path / "b" / "report" / "report.json").read_text())
    assert numbers["pairs"]["pairs_kept"] == on_disk and "pairs/ holds" not in captured.out
    assert "pairs/ was built with pairs.drop_ratio=0.0 pairs.pairing=all_ranked" in captured.err
    assert cli.main(["report", a, "--against", b]) == 0
    against = json.loads((tmp_path / "a" / "report" / "report.json").read_text())["against"]
    kept = {r["what"]: r for r in against["totals"]}["pairs_kept"]
    assert kept["b"] == on_disk and kept["a"] == RunStore(a).read("pairs").height and kept["a"] < kept["b"]
