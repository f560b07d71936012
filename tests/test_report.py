import json

import polars as pl
import pytest

from factory import cli, report
from factory.config import RunConfig
from tests.stages.test_pairs import scored
from tests.synthetic import make_run


def test_tables_hold_means_maxima_and_response_times():
    frame = scored(
        [
            ("a", 0, 125, 0.9), ("a", 1, 500, 0.5), ("a", 2, 250, 0.7, "length"),
            ("b", 0, 100, 0.8), ("b", 1, 300, 0.6),
        ]
    )  # fmt: skip
    judgments = pl.DataFrame({"parse_status": ["ok", "ok", "ok", "ok", "unparsable"]})
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
    }  # fmt: skip
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
