"""report/index.html: what the page holds (plain tests) and what a person sees in a real headless
Chromium (marked `browser`, skipped where no Chromium is installed; CI's browser tier installs one)."""

from __future__ import annotations

import json
import re

import polars as pl
import pytest

from factory import cli
from factory.commands import page
from factory.commands.page_assets import SCRIPT
from tests.commands.chromium import Chromium, find_chromium
from tests.fakes import FakeEngine
from tests.synthetic import make_run

# Model text that would run or draw something if any of it were parsed as HTML.
HOSTILE = [
    '<think>plan</think><img src=x onerror="window.__pwned=1"> needle-hostile one',
    "<think></think></script><script>window.__pwned=2</script> needle-hostile two, longer answer here",
    "<think>more plan here</think><b>bold?</b> needle-hostile three with a few more words in it",
    "<think>x</think>needle-hostile four <!-- comment --> &amp; <style>body{display:none}</style> words words",
]


def hostile_run(url: str, n_prompts: int = 8) -> None:
    make_run(
        url, n_prompts=n_prompts, k=4, engine=FakeEngine(script={("p0", i): text for i, text in enumerate(HOSTILE)})
    )


def blob(html: str) -> dict:
    match = re.search(r'<script type="application/json" id="page-data">(.*?)</script>', html, re.S)
    assert match, "no data blob"
    return json.loads(match.group(1))


def test_report_writes_one_self_contained_page(tmp_path):
    url = str(tmp_path / "run")
    hostile_run(url)
    assert cli.main(["report", url]) == 0
    html = (tmp_path / "run" / "report" / "index.html").read_text()
    numbers = json.loads((tmp_path / "run" / "report" / "report.json").read_text())
    # Nothing is fetched: no external script, style, image or font.
    assert not re.search(r'(src|href)="(?!data:|#)', html)
    assert html.count("<script") == 2 and html.count("</script>") == 2  # the data and the script, nothing else
    assert html.count('<svg class="plot"') == 3  # lengths, margins, quality
    data = blob(html)
    pairs = pl.read_parquet(tmp_path / "run" / "pairs" / "*.parquet")
    shown = [p for p in data["pairs"] if p["s"] == "dp_dpo"]
    assert len(shown) == pairs.height == numbers["pairs"]["pairs_kept"] == data["pairs_total"]["dp_dpo"]
    assert {(p["p"], p["c"]["i"], p["r"]["i"]) for p in shown} == set(
        pairs.select("prompt_id", "chosen_idx", "rejected_idx").iter_rows()
    )
    by_pair = {(r["prompt_id"], r["chosen_idx"]): r for r in pairs.iter_rows(named=True)}
    for p in shown:
        row = by_pair[(p["p"], p["c"]["i"])]
        assert p["m"] == pytest.approx(row["margin"], abs=1e-4)
        assert p["gap"] == row["rejected_tokens"] - row["chosen_tokens"]
        assert p["c"]["a"] in row["chosen"][0]["content"] and p["r"]["a"] in row["rejected"][0]["content"]
    assert len([p for p in data["pairs"] if p["s"] == "long2short"]) == numbers["long2short"]["groups_succeeded"]
    # Every dropped group and excluded sample, by reason, as the report counts them.
    assert len(data["dropped"]) == numbers["pairs"]["groups"] - numbers["pairs"]["groups_by_outcome"]["kept"]
    excluded = {r: n for r, n in numbers["pairs"]["samples_excluded"].items() if n}
    assert dict(data["excluded_reasons"]) == excluded and len(data["excluded"]) == sum(excluded.values())
    # The hostile text is only ever inside the JSON, escaped: it never closes the data's script element.
    assert "window.__pwned" in json.dumps(data) and "<img src=x" not in html.split('id="page-data">')[0]
    # The funnel names every exclusion reason that happened.
    for reason in excluded:
        assert f"{reason}: {excluded[reason]}" in html


def test_a_large_run_embeds_a_deterministic_sample_and_says_so(tmp_path):
    url = str(tmp_path / "run")
    make_run(url, n_prompts=30, k=4)
    store, manifest = page_store(url)
    from factory.graph import RunGraph

    cfg, _, _ = open_run(url)
    scored = RunGraph(cfg).scored(store, store.read("prompts"), manifest["fingerprints"]).scored
    first = page.write_page(store, cfg, manifest, scored, max_pairs=5)
    data = blob((tmp_path / "run" / "report" / "index.html").read_text())
    assert first["pairs_shown"] == len([p for p in data["pairs"] if p["s"] == "dp_dpo"]) == 5 < first["pairs_total"]
    assert len(data["dropped"]) <= 5 and len(data["excluded"]) <= 5
    # The pairs shown are those of the prompts first in the hash order; the same on a second write.
    kept = sorted(store.read("pairs")["prompt_id"].to_list(), key=page._order_key)
    shown = [p["p"] for p in data["pairs"] if p["s"] == "dp_dpo"]
    assert shown and sorted(shown, key=page._order_key) == kept[: len(shown)]
    # long2short's pairs are of the same prompts: none after the last one shown in hash order.
    others = [p["p"] for p in data["pairs"] if p["s"] == "long2short"]
    assert others and max(map(page._order_key, others)) <= max(map(page._order_key, shown))
    excluded = [p["p"] for p in data["excluded"]]
    assert excluded == sorted(excluded, key=page._order_key)
    page.write_page(store, cfg, manifest, scored, max_pairs=5)
    again = blob((tmp_path / "run" / "report" / "index.html").read_text())
    assert [(p["p"], p["s"]) for p in again["pairs"]] == [(p["p"], p["s"]) for p in data["pairs"]]
    assert "This page holds" in SCRIPT and data["max_pairs"] == 5


def test_the_run_page_is_written_without_the_report(tmp_path):
    """write_page without the report's numbers: numbers, plots and parse statuses from what it has (the
    manifest), the same pairs as `factory report` embeds."""
    url = str(tmp_path / "run")
    make_run(url, n_prompts=8, k=4)
    store, manifest = page_store(url)
    from factory.graph import RunGraph

    cfg, _, _ = open_run(url)
    scored = RunGraph(cfg).scored(store, store.read("prompts"), manifest["fingerprints"]).scored
    info = page.write_page(store, cfg, manifest, scored)
    from_run = blob((tmp_path / "run" / "report" / "index.html").read_text())
    assert info["bytes"] == (tmp_path / "run" / "report" / "index.html").stat().st_size
    assert cli.main(["report", url]) == 0
    from_report = blob((tmp_path / "run" / "report" / "index.html").read_text())
    assert from_run["pairs"] == [{**p, "c": strip(p["c"]), "r": strip(p["r"])} for p in from_report["pairs"]]
    assert "judgment ok" in (tmp_path / "run" / "report" / "index.html").read_text()


def _run_cfg(tmp_path, *extra):
    from factory import config
    from tests.synthetic import write_prompts

    prompts = write_prompts(tmp_path / "prompts.jsonl", 8)
    rubric = tmp_path / "rubric.txt"
    rubric.write_text("Rate {answer} from 0 to {scale_max}.")
    return config.load(
        None,
        [f"output_dir={tmp_path / 'run'}", f"prompts.path={prompts}", "sampler.k=4", f"judge.rubric_file={rubric}",
         "progress_interval_s=60", *extra],
    )  # fmt: skip


def _local_run(cfg):
    from factory.run import run

    engine = FakeEngine()
    return run(cfg, backend="local", build=lambda _c: engine, command="factory run test")


def test_the_run_page_has_what_the_report_page_has_judge_reasons_included(tmp_path):
    _local_run(_run_cfg(tmp_path))
    path = tmp_path / "run" / "report" / "index.html"
    from_run = blob(path.read_text())
    assert any("j" in p["c"] for p in from_run["pairs"])  # the judge's reasons, handed over by the run
    assert cli.main(["report", str(tmp_path / "run")]) == 0
    assert blob(path.read_text()) == from_run


def test_the_pair_kernel_decides_once_at_the_end_of_a_run(tmp_path, monkeypatch):
    """The page is handed the run's pair build: the samples are prepared and decided under the run's strategy
    once (the report's long2short table is its own decision)."""
    from factory import pairs as pair_kernel

    prepared, decided = [], []
    real_prepare, real_decide = pair_kernel.prepare, pair_kernel.decide
    monkeypatch.setattr(pair_kernel, "prepare", lambda *a, **k: prepared.append(1) or real_prepare(*a, **k))
    monkeypatch.setattr(pair_kernel, "decide", lambda p, c: decided.append(c.strategy) or real_decide(p, c))
    _local_run(_run_cfg(tmp_path))
    assert (tmp_path / "run" / "report" / "index.html").exists()
    assert len(prepared) == 1 and decided.count("dp_dpo") == 1 and decided.count("long2short") == 1


def test_a_rerun_with_nothing_new_leaves_the_page_as_it_is(tmp_path):
    path = tmp_path / "run" / "report" / "index.html"
    _local_run(_run_cfg(tmp_path))
    before, content = path.stat(), path.read_bytes()
    again = _local_run(_run_cfg(tmp_path))
    assert again["requests"] == {"sampler": 0, "judge": 0}
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns) and path.read_bytes() == content
    _local_run(_run_cfg(tmp_path, "pairs.w_len=0.3"))  # other pairs, still no request: a new page
    assert path.stat().st_mtime_ns != before.st_mtime_ns and path.read_bytes() != content
    assert page.page_inputs(page_store(str(tmp_path / "run"))[0]) is not None


def strip(side: dict) -> dict:
    """A side without the judge's reason (the report reads the judgments; write_page without them does not)."""
    return {k: v for k, v in side.items() if k != "j"}


def page_store(url: str):
    from factory.commands.rebuild import run_store

    return run_store(url)


def open_run(url: str):
    from factory.commands.rebuild import open_run as opened

    return opened(url)


# -- in a real browser -----------------------------------------------------------------------------
CHROMIUM = find_chromium()


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium found (FACTORY_BROWSER=1 bash scripts/setup.sh installs it)")
def test_the_page_in_headless_chromium(tmp_path):
    url = str(tmp_path / "run")
    hostile_run(url)
    assert cli.main(["report", url]) == 0
    numbers = json.loads((tmp_path / "run" / "report" / "report.json").read_text())
    kept, l2s = numbers["pairs"]["pairs_kept"], numbers["long2short"]["groups_succeeded"]
    pairs = pl.read_parquet(tmp_path / "run" / "pairs" / "*.parquet")
    assert pairs.height == kept and kept != l2s  # so that the strategy filter must change the count
    known = pairs.row(0, named=True)
    question = known["prompt"][-1]["content"].rsplit("Viewer comment:", 1)[-1].strip()

    with Chromium.start(CHROMIUM, tmp_path / "profile") as browser:
        browser.open((tmp_path / "run" / "report" / "index.html").as_uri())

        def count(kind: str) -> int:
            return int(browser.evaluate(f"document.getElementById('{kind}-count').dataset.n"))

        def cards(kind: str) -> int:
            return browser.evaluate(f"document.querySelectorAll('#{kind}-list > .item').length")

        def set_control(element: str, value: str) -> None:
            browser.evaluate(
                f"(() => {{ const e = document.getElementById({json.dumps(element)}); e.value = {json.dumps(value)};"
                " e.dispatchEvent(new Event('input')); })()"
            )

        # The run's strategy first: exactly the pairs of pairs/, each chosen beside its rejected.
        assert count("pairs") == kept and cards("pairs") == min(kept, 20)
        assert browser.evaluate("document.querySelectorAll('#pairs-list .side.chosen + .side.rejected').length") == min(
            kept, 20
        )
        assert "funnel" in browser.evaluate("document.getElementById('funnel').innerText").lower()
        # A filter changes the number: long2short, then every strategy.
        set_control("pairs-strategy", "long2short")
        assert count("pairs") == l2s
        set_control("pairs-strategy", "")
        assert count("pairs") == kept + l2s
        set_control("pairs-strategy", "dp_dpo")
        # Search finds the known pair (by its viewer comment), and only it; clearing it brings all back.
        set_control("pairs-search", f"comment: {question}")
        assert count("pairs") == 1
        assert browser.evaluate("document.querySelector('#pairs-list .pair').dataset.prompt") == known["prompt_id"]
        set_control("pairs-search", "")
        set_control("pairs-prompt", known["prompt_id"])
        assert count("pairs") == 1
        set_control("pairs-prompt", "")
        assert count("pairs") == kept
        # Sort by token gap puts the largest gap first.
        set_control("pairs-sort", "gap-desc")
        first_gap = browser.evaluate("document.querySelector('#pairs-list .pair').innerText")
        assert f"token gap {max(pairs['rejected_tokens'] - pairs['chosen_tokens'])}" in first_gap
        # Dropped groups and excluded samples, by reason.
        dropped = numbers["pairs"]["groups"] - numbers["pairs"]["groups_by_outcome"]["kept"]
        assert count("dropped") == dropped
        set_control("dropped-reason", "below_margin")
        assert count("dropped") == numbers["pairs"]["groups_by_outcome"]["below_margin"]
        excluded = {r: n for r, n in numbers["pairs"]["samples_excluded"].items() if n}
        assert count("excluded") == sum(excluded.values())
        reason = next(iter(excluded))
        set_control("excluded-reason", reason)
        assert count("excluded") == excluded[reason]
        # The hostile model text is shown as text: nothing ran, no element was made from it.
        set_control("pairs-strategy", "")
        set_control("pairs-search", "needle-hostile")
        assert count("pairs") >= 1
        assert browser.evaluate("window.__pwned === undefined")
        assert browser.evaluate("document.querySelectorAll('#pairs-list b').length") == browser.evaluate(
            "document.querySelectorAll('#pairs-list .item-head > b, #pairs-list .side-head > b').length"
        )
        assert browser.evaluate("document.querySelectorAll('img').length") == 0  # the plots are SVG
        assert "<img src=x" in browser.evaluate("document.getElementById('pairs-list').innerText")
        set_control("pairs-search", "")
        set_control("pairs-strategy", "dp_dpo")
        shot = browser.screenshot(tmp_path / "page.png")
        assert browser.errors == []
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
    print(f"screenshot: {shot}")


def test_sweep_heatmaps_and_the_eval_plot_are_embedded_when_they_exist(tmp_path):
    url = str(tmp_path / "run")
    make_run(url, n_prompts=6, k=4)
    store, manifest = page_store(url)
    from factory.graph import RunGraph
    from factory.rundir.store import RunStore

    png = b"\x89PNG\r\n\x1a\n" + b"fake image"
    store.write_bytes("sweep/heatmap_token_gap.png", png)
    store.write_bytes("sweep/sweep.csv", b"w_len,drop_ratio\n")  # not a plot
    RunStore(f"{url}/eval").write_bytes("report/score_vs_rt.png", png)
    cfg, _, _ = open_run(url)
    scored = RunGraph(cfg).scored(store, store.read("prompts"), manifest["fingerprints"]).scored
    page.write_page(store, cfg, manifest, scored)
    html = (tmp_path / "run" / "report" / "index.html").read_text()
    assert html.count('src="data:image/png;base64,') == 2
    assert "sweep: heatmap_token_gap.png" in html and "eval: score vs response time" in html


def test_a_group_with_too_few_valid_samples_shows_its_samples_and_their_reasons(tmp_path):
    url = str(tmp_path / "run")
    script = {("p1", i): RuntimeError("HTTP 500: upstream down") for i in range(3)}
    make_run(url, n_prompts=6, k=4, engine=FakeEngine(script=script))
    assert cli.main(["report", url]) == 0
    data = blob((tmp_path / "run" / "report" / "index.html").read_text())
    (group,) = [d for d in data["dropped"] if d["p"] == "p1"]
    assert group["why"] == "fewer_than_2_valid" and group["n"] == 1
    reasons = sorted(s.get("w", "valid") for s in group["samples"])
    assert reasons == ["engine_error"] * 3 + ["valid"]
    assert all("HTTP 500" in s["e"] for s in group["samples"] if s.get("w") == "engine_error")
    assert dict(data["excluded_reasons"])["engine_error"] == 3


def long_reply(request) -> str:
    """Long reasoning (as a reasoning model's), a judge's JSON when asked for one."""
    from tests.fakes import seeded_reply

    if request.json_schema is not None:
        return seeded_reply(request)
    return f"<think>{'step ' * (600 + request.seed % 50)}</think>" + " ".join(["word"] * (3 + request.seed % 7))


def test_the_page_keeps_to_its_byte_budget_and_says_what_it_trimmed(tmp_path, caplog):
    from dataclasses import replace

    from factory.graph import RunGraph

    url = str(tmp_path / "run")
    make_run(url, n_prompts=40, k=4, engine=FakeEngine(reply=long_reply))
    store, manifest = page_store(url)
    cfg, _, _ = open_run(url)
    scored = RunGraph(cfg).scored(store, store.read("prompts"), manifest["fingerprints"]).scored
    html_path = tmp_path / "run" / "report" / "index.html"
    whole = page.write_page(store, cfg, manifest, scored)
    assert whole["trimmed"] is None and "trimmed to fit" not in html_path.read_text()

    budget = whole["bytes"] // 2
    small = replace(cfg, report=replace(cfg.report, max_page_bytes=budget))
    with caplog.at_level("WARNING", logger="factory"):
        info = page.write_page(store, small, manifest, scored)
    html = html_path.read_text()
    assert info["bytes"] == len(html.encode()) <= budget < whole["bytes"]  # main: rows capped, bytes not
    data = blob(html)
    assert data["max_text_chars"] == info["trimmed"]["max_text_chars"] < page.MAX_TEXT_CHARS
    assert any(side.get("cut") for p in data["pairs"] for side in (p["c"], p["r"]))  # each cut says by how much
    note = f"This page is trimmed to fit report.max_page_bytes={budget:,}"
    assert note in html and f"texts cut at {data['max_text_chars']:,} characters" in html
    assert [r.getMessage() for r in caplog.records if "trimmed to fit" in r.getMessage()]  # and the log, once
    assert len([r for r in caplog.records if "trimmed to fit" in r.getMessage()]) == 1

    # A budget texts alone cannot meet: the lists hold fewer rows, and the page says how many.
    tight = whole["bytes"] // 5
    info = page.write_page(store, replace(cfg, report=replace(cfg.report, max_page_bytes=tight)), manifest, scored)
    data = blob(html_path.read_text())
    rows = info["trimmed"]["max_rows"]
    assert info["bytes"] <= tight and data["max_text_chars"] == page.MIN_TEXT_CHARS
    assert rows < whole["embedded"]["pairs"] and data["max_pairs"] == rows
    assert all(len([p for p in data["pairs"] if p["s"] == s]) <= rows for s in ("dp_dpo", "long2short"))
    assert len(data["dropped"]) <= rows and len(data["excluded"]) <= rows
    assert f"each list holds at most {rows:,} rows" in html_path.read_text()


def test_report_max_page_bytes_is_checked_naming_the_key():
    from factory import config
    from factory.config import ConfigError

    assert config.load(None, []).report.max_page_bytes == 20_000_000
    with pytest.raises(ConfigError, match=r"report\.max_page_bytes: must be >= 1"):
        config.load(None, ["report.max_page_bytes=0"])
