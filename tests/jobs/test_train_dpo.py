"""jobs/train_dpo.py without training: its TRL config (the SFT term on chosen), where it reads pairs, and its
warning for conversational pairs under a template that drops reasoning. Training itself:
tests/system/test_closed_loop.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.synthetic import make_run

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.vllm, pytest.mark.skipif(not importlib.util.find_spec("trl"), reason="needs trl (vllm tier)")]


@pytest.fixture(scope="module")
def recipe():
    spec = importlib.util.spec_from_file_location("train_dpo", ROOT / "jobs" / "train_dpo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_sft_term_on_chosen_is_in_the_loss_with_its_weight(recipe, tmp_path):
    args = recipe.parse_args(["--data", "x", "--out", str(tmp_path), "--rpo-alpha", "0.5", "--beta", "0.2"])
    config = recipe.dpo_config(args, output_dir=str(tmp_path))
    assert config.beta == 0.2 and config.gradient_checkpointing is False
    if hasattr(config, "rpo_alpha"):
        assert config.rpo_alpha == 0.5
    else:  # TRL without rpo_alpha: the same loss as sigmoid + alpha x NLL on chosen
        assert list(config.loss_type) == ["sigmoid", "sft"] and list(config.loss_weights) == [1.0, 0.5]
    assert recipe.sft_term(config) != "none"
    plain = recipe.dpo_config(
        recipe.parse_args(["--data", "x", "--out", str(tmp_path), "--rpo-alpha", "0"]), output_dir=str(tmp_path)
    )
    assert recipe.sft_term(plain) == "none"


def test_pairs_are_read_from_an_export_or_a_run_directory(recipe, tmp_path, capsys):
    from factory.cli import main

    run = tmp_path / "run"
    make_run(str(run), n_prompts=6, k=4)
    conversational = recipe.load_pairs(str(run))  # a run directory: its pairs/
    assert conversational.column_names == ["prompt", "chosen", "rejected"] and isinstance(
        conversational[0]["prompt"], list
    )
    template = ROOT / "tests" / "pairs" / "fixtures" / "templates" / "deepseek_r1"
    assert main(["export", str(run), "--template", str(template), "--name", "r1"]) == 0
    standard = recipe.load_pairs(str(run / "export" / "r1"), limit=2)
    assert standard.num_rows == 2 and isinstance(standard[0]["prompt"], str)
    capsys.readouterr()
    recipe.warn_conversational(conversational, template)  # the student's template drops the reasoning of pairs/
    assert "keeps only the text after </think>" in capsys.readouterr().err
    recipe.warn_conversational(standard, template)  # the export: nothing to say
    assert capsys.readouterr().err == ""
    with pytest.raises(SystemExit, match="no Parquet file"):
        recipe.load_pairs(str(tmp_path))
