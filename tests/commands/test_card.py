"""README.md, the run directory's dataset card (factory/commands/card.py): `datasets` loads every config it
names, the text holds the run's essentials and no secret, and a README.md that is not the card is never
replaced."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import polars as pl
import pytest
import yaml

from factory.cli import main
from factory.commands import card
from tests.synthetic import make_run

CHATML = Path(__file__).resolve().parents[1] / "pairs" / "fixtures" / "templates" / "chatml.jinja"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    url = str(tmp_path_factory.mktemp("card") / "run")
    make_run(url, n_prompts=6, k=4)
    assert main(["export", url, "--template", str(CHATML)]) == 0  # export/chatml/, named by the card
    return url


def front(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_the_card_names_pairs_each_sft_export_and_each_trainer_export(run_dir):
    text = Path(run_dir, "README.md").read_text()
    names = {c["config_name"]: c["data_files"][0]["path"] for c in front(text)["configs"]}
    assert names == {
        "pairs": "pairs/*.parquet",
        "sft_dp_sft": "sft/dp_sft/*.parquet",
        "sft_filter_long": "sft/filter_long/*.parquet",
        "export_chatml": "export/chatml/*.parquet",
        # the SFT exports under the student's template (factory export writes them beside export/chatml/)
        "sft_dp_sft.chatml": "sft/dp_sft.chatml/*.parquet",
        "sft_filter_long.chatml": "sft/filter_long.chatml/*.parquet",
    }
    manifest = pl.read_json(f"{run_dir}/manifest.json").to_dicts()[0]
    for fp in manifest["fingerprints"].values():
        assert fp in text
    assert re.search(rf"\| pairs_kept +\| +{manifest['counts']['pairs_kept']} \|", text)
    assert "## Funnel" in text and re.search(r"\| kept pairs +\|", text) and "`dp_dpo`" in text


def test_datasets_loads_each_config(run_dir):
    datasets = pytest.importorskip("datasets")
    for config in front(Path(run_dir, "README.md").read_text())["configs"]:
        folder = config["data_files"][0]["path"].removesuffix("/*.parquet")
        loaded = datasets.load_dataset(run_dir, config["config_name"], cache_dir=str(Path(run_dir).parent / "hf"))
        assert loaded["train"].num_rows == pl.read_parquet(f"{run_dir}/{folder}/*.parquet").height > 0
    pairs = datasets.load_dataset(run_dir, "pairs", cache_dir=str(Path(run_dir).parent / "hf"))["train"]
    assert {"prompt", "chosen", "rejected"} <= set(pairs.column_names)


def test_no_secret_in_the_card(tmp_path, monkeypatch):
    """The card renders the manifest as written, with its scrub: the API key's value, here also in the
    prompts' folder name (a row the card shows), is masked; credentials in a base_url are not shown."""
    from factory import config as config_mod
    from factory.run import run
    from factory.rundir.secrets import MASK
    from tests.fakes import FakeEngine
    from tests.synthetic import write_prompts

    monkeypatch.setenv("CARD_TEST_KEY", "sk-card-secret-123456")
    rubric = tmp_path / "rubric.txt"
    rubric.write_text("Rate {answer} from 0 to {scale_max}.")
    folder = tmp_path / "sk-card-secret-123456"
    folder.mkdir()
    overrides = [f"output_dir={tmp_path / 'run'}", f"prompts.path={write_prompts(folder / 'p.jsonl', 3)}",
                 "sampler.k=2", f"judge.rubric_file={rubric}", "sampler.engine.kind=openai",
                 "sampler.engine.base_url=http://user:pw-in-url-987@127.0.0.1:9/v1",
                 "sampler.engine.api_key_env=CARD_TEST_KEY", "progress_interval_s=60"]  # fmt: skip
    engine = FakeEngine()
    run(config_mod.load(None, overrides), backend="local", build=lambda _cfg: engine)
    text = (tmp_path / "run" / "README.md").read_text()
    assert "sk-card-secret-123456" not in text and "pw-in-url-987" not in text
    assert "openai:" in text and f"{tmp_path}/{MASK}/p.jsonl" in text  # the rows are there, masked


def test_a_foreign_readme_is_never_replaced_and_the_card_is_rewritten(run_dir, tmp_path, caplog):
    own = Path(run_dir, "README.md").read_text()
    assert card.is_factory_card(own)
    assert main(["pairs", run_dir, "pairs.sft=[dp_sft]"]) == 0  # the card follows the build: filter_long is gone
    names = [c["config_name"] for c in front(Path(run_dir, "README.md").read_text())["configs"]]
    assert "sft_filter_long" not in names and "sft_dp_sft" in names

    foreign = "# My notes about this run\n\nDo not lose me.\n"
    Path(run_dir, "README.md").write_text(foreign)
    with caplog.at_level(logging.WARNING, logger="factory"):
        assert main(["pairs", run_dir]) == 0
    assert Path(run_dir, "README.md").read_text() == foreign
    assert "not the factory's dataset card" in caplog.text
    Path(run_dir, "README.md").write_text(own)  # leave the module's run as it was
