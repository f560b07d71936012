"""jobs/train_sft.py and the two-stage path (§4.8: SFT, then DPO from the SFT checkpoint with it as reference).

Without training: where the recipe reads SFT rows (the templated sft/<export>.<name>/ as prompt/completion, the
conversational sft/<export>/ with the warning), its TRL config. At toy size (slow): the 135M student converted from
the embedded GGUF trains 1 SFT step, then 1 DPO step from that checkpoint; both write plain checkpoints per step."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests.synthetic import make_run

ROOT = Path(__file__).resolve().parents[2]
R1 = ROOT / "tests" / "pairs" / "fixtures" / "templates" / "deepseek_r1"
pytestmark = [pytest.mark.vllm, pytest.mark.skipif(not importlib.util.find_spec("trl"), reason="needs trl (vllm tier)")]


def load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "jobs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from factory.cli import main

    run = tmp_path_factory.mktemp("sft") / "run"
    make_run(str(run), n_prompts=6, k=4)
    assert main(["export", str(run), "--template", str(R1), "--name", "r1"]) == 0
    return run


def test_sft_rows_are_read_from_the_templated_export_or_the_conversational_one_with_a_warning(run_dir, capsys):
    recipe = load("train_sft")
    templated = recipe.load_sft(str(run_dir / "sft" / "filter_long.r1"))
    assert templated.column_names == ["prompt", "completion"] and isinstance(templated[0]["prompt"], str)
    assert recipe.load_sft(str(run_dir / "sft" / "dp_sft.r1"), limit=2).num_rows == 2
    conversational = recipe.load_sft(str(run_dir))  # a run directory: its sft/filter_long/
    assert conversational.column_names == ["messages"] and conversational.num_rows == templated.num_rows
    capsys.readouterr()
    recipe.warn_conversational(conversational, R1)
    assert "keeps only the text after </think>" in capsys.readouterr().err
    recipe.warn_conversational(templated, R1)
    assert capsys.readouterr().err == ""
    with pytest.raises(SystemExit, match="no Parquet file"):
        recipe.load_sft(str(run_dir / "nothing"))
    args = recipe.parse_args(["--data", "x", "--out", "o", "--lr", "3e-5", "--save-every", "2"])
    config = recipe.sft_config(args, output_dir=str(run_dir / "_cfg"))
    assert config.learning_rate == 3e-5 and config.save_strategy == "no" and args.save_every == 2


@pytest.mark.slow
def test_two_stages_sft_then_dpo_from_the_sft_checkpoint_as_reference(run_dir, tmp_path):
    pytest.importorskip("gguf")
    sft, dpo = load("train_sft"), load("train_dpo")
    common = ["--max-steps", "1", "--batch-size", "1", "--max-length", "192", "--threads", "2", "--limit", "2",
              "--save-every", "1"]  # fmt: skip
    stage1 = tmp_path / "sft"
    assert sft.main(["--data", str(run_dir / "sft" / "dp_sft.r1"), "--out", str(stage1), *common]) == 0
    record1 = json.loads((stage1 / "train_sft.json").read_text())
    assert record1["steps"] == 1 and record1["format"] == "prompt-completion"
    assert (stage1 / "config.json").is_file() and list(stage1.glob("*.safetensors"))
    assert [c["name"] for c in record1["checkpoints"]] == ["step-1"]
    assert list((stage1 / "checkpoints" / "step-1").glob("*.safetensors"))

    stage2 = tmp_path / "sft_dpo"
    assert (
        dpo.main(["--data", str(run_dir / "export" / "r1"), "--model", str(stage1), "--out", str(stage2), *common]) == 0
    )
    record2 = json.loads((stage2 / "train_dpo.json").read_text())
    assert record2["base"] == record2["reference"] == str(stage1)  # DPO from the SFT checkpoint, its reference too
    assert record2["steps"] == 1 and (stage2 / "checkpoints" / "step-1" / "config.json").is_file()
    curves = json.loads((stage2 / "reward_curves.json").read_text())
    assert [set(r) for r in curves["rows"]] == [{"step", "epoch", "chosen", "rejected", "margin", "accuracy"}]
    assert curves["warnings"] == record2["reward_warnings"] == []  # one step: no window to fall over
