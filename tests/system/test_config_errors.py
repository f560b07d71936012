"""A value YAML cannot read, in an override or in the config file, is one error line naming the key (or
the file and line) and exit 2, from every command that takes overrides, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from factory import config
from factory.cli import main
from factory.config import ConfigError

DEMO = str(Path(__file__).resolve().parents[2] / "conf" / "demo.yaml")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("sampler.k=[", r"^sampler\.k: cannot read the value '\[': did not find expected node content"),
        ("sampler.k={a", r"^sampler\.k: cannot read the value '\{a': did not find expected ','"),
        (
            'pairs.terms=[{source: format, pattern: "\\d+", exclude_above: 0}]',
            r"^pairs\.terms: cannot read the value .*found unknown escape character .*write '\\d\+' in single quotes",
        ),
        ("sampler.k=abc", r"^sampler\.k: Value 'abc' of type 'str' could not be converted to Integer$"),
    ],
)
def test_a_malformed_override_is_one_line_naming_its_key(override, message):
    with pytest.raises(ConfigError, match=message):
        config.load(DEMO, [override])


@pytest.mark.parametrize("command", ["plan", "run"])
def test_the_cli_prints_one_error_line_and_exits_2(command, capsys, tmp_path):
    assert main([command, DEMO, "sampler.k=[", f"output_dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [err[0]] and err[0].startswith("factory: error: sampler.k: cannot read the value '['")
    assert not (tmp_path / "run").exists()


def test_a_yaml_file_that_does_not_parse_names_the_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text('sampler:\n  k: 2\npairs:\n  terms:\n    - {source: format, pattern: "\\d+"}\n')
    with pytest.raises(
        ConfigError, match=r"bad\.yaml: not valid YAML: found unknown escape character \(line 5, column"
    ):
        config.load(bad)
    assert main(["plan", str(bad)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_a_good_pattern_in_single_quotes_reads(tmp_path):
    cfg = config.load(DEMO, ["pairs.terms=[{source: format, pattern: '\\d+', exclude_above: 0}]"])
    assert cfg.pairs.terms[0].pattern == "\\d+"


def test_factory_pairs_takes_the_same_rule(tmp_path, capsys):
    import json

    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"config": {"output_dir": str(run)}}))
    assert main(["pairs", str(run), "pairs.w_len=["]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("factory: error: pairs.w_len: cannot read the value '['")
