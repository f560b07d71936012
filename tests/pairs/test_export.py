"""factory.pairs.export: the pairs under a student's chat template (export/<name>/), the warning when a template
drops pairs/' reasoning, and no empty think block in any output. Templates: tests/pairs/fixtures/templates/
(DeepSeek-R1, R1-Distill, Qwen3, Llama-3, ChatML, SmolLM2's own). No model, no Ray, no hub."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest

from factory.cli import main
from factory.config import ConfigError
from factory.pairs.export import continuation, keeps_reasoning, load_template, prompt_text, templated_pairs
from tests.synthetic import make_run

TEMPLATES = Path(__file__).resolve().parent / "fixtures" / "templates"
ALL = {
    "deepseek_r1": TEMPLATES / "deepseek_r1",
    "deepseek_r1_distill": TEMPLATES / "deepseek_r1_distill" / "tokenizer_config.json",
    "qwen3": TEMPLATES / "qwen3",
    "llama3": TEMPLATES / "llama3",
    "chatml": TEMPLATES / "chatml.jinja",
    "smollm2": TEMPLATES / "smollm2" / "chat_template.jinja",
}
MESSAGES = [{"role": "system", "content": "You are a host."}, {"role": "user", "content": "Is link 3 in stock?"}]
R1_BOS, R1_EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"

# (prompt with the generation prompt, continuation with reasoning "stock is 12", answer "Yes, link 3!")
EXPECTED = {
    "deepseek_r1": (
        "You are a host.<｜User｜>Is link 3 in stock?<｜Assistant｜><think>\n",
        f"stock is 12\n</think>\n\nYes, link 3!{R1_EOS}",
    ),
    "deepseek_r1_distill": (
        "You are a host.<｜User｜>Is link 3 in stock?<｜Assistant｜>",
        f"<think>\nstock is 12\n</think>\n\nYes, link 3!{R1_EOS}",
    ),
    "qwen3": (
        "<|im_start|>system\nYou are a host.<|im_end|>\n<|im_start|>user\nIs link 3 in "
        "stock?<|im_end|>\n<|im_start|>assistant\n",
        "<think>\nstock is 12\n</think>\n\nYes, link 3!<|im_end|>",
    ),
    "llama3": (
        "<|start_header_id|>system<|end_header_id|>\n\nYou are a "
        "host.<|eot_id|><|start_header_id|>user<|end_header_id|>"
        "\n\nIs link 3 in stock?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
        "<think>\nstock is 12\n</think>\n\nYes, link 3!<|eot_id|>",
    ),
    "chatml": (
        "<|im_start|>system\nYou are a host.<|im_end|>\n<|im_start|>user\nIs link 3 in "
        "stock?<|im_end|>\n<|im_start|>assistant\n",
        "<think>\nstock is 12\n</think>\n\nYes, link 3!<|im_end|>",
    ),
    "smollm2": (
        "<|im_start|>system\nYou are a host.<|im_end|>\n<|im_start|>user\nIs link 3 in "
        "stock?<|im_end|>\n<|im_start|>assistant\n",
        "<think>\nstock is 12\n</think>\n\nYes, link 3!<|im_end|>",
    ),
}
# A side without reasoning: the answer alone, unless the student's own template writes a think block there.
NO_REASONING = {
    # its generation prompt opened <think>\n: the student closes it
    "deepseek_r1": f"\n</think>\n\nYes, link 3!{R1_EOS}",
    "deepseek_r1_distill": f"Yes, link 3!{R1_EOS}",
    "qwen3": "<think>\n\n</think>\n\nYes, link 3!<|im_end|>",  # Qwen3 writes this on every last turn (no-think)
    "llama3": "Yes, link 3!<|eot_id|>",
    "chatml": "Yes, link 3!<|im_end|>",
    "smollm2": "Yes, link 3!<|im_end|>",
}


@pytest.mark.parametrize("name", sorted(ALL))
def test_each_template_gives_the_prompt_and_the_exact_continuation(name):
    template = load_template(str(ALL[name]))
    prompt, side = EXPECTED[name]
    assert prompt_text(template, MESSAGES) == prompt
    assert continuation(template, MESSAGES, "stock is 12", "Yes, link 3!") == side
    assert continuation(template, MESSAGES, None, "Yes, link 3!") == NO_REASONING[name]
    assert continuation(template, MESSAGES, "  \n", "Yes, link 3!") == NO_REASONING[name]  # blank reasoning is none
    # What the template itself writes for the whole conversation starts with prompt + side (keeping templates)
    if keeps_reasoning(template):
        full = template.render(
            [*MESSAGES, {"role": "assistant", "content": template.content("stock is 12", "Yes, link 3!")}], False
        )
        bos = template.bos_token if template.writes_bos() else ""
        assert full.startswith(bos + prompt + side)


def test_r1_templates_drop_reasoning_and_the_others_keep_it():
    kept = {name: keeps_reasoning(load_template(str(path))) for name, path in ALL.items()}
    assert kept == {
        "deepseek_r1": False,
        "deepseek_r1_distill": False,
        "qwen3": True,
        "llama3": True,
        "chatml": True,
        "smollm2": True,
    }


def test_bos_is_left_to_the_tokenizer_unless_asked():
    r1 = load_template(str(ALL["deepseek_r1"]))
    assert r1.bos_token == R1_BOS and r1.eos_token == R1_EOS  # read from the AddedToken form of tokenizer_config.json
    assert prompt_text(r1, MESSAGES, keep_bos=True) == R1_BOS + EXPECTED["deepseek_r1"][0]
    assert not prompt_text(r1, MESSAGES).startswith(R1_BOS)


def test_a_template_without_an_end_of_turn_gets_the_eos_token(tmp_path):
    (tmp_path / "plain.jinja").write_text("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                                          "{% if add_generation_prompt %}assistant: {% endif %}")  # fmt: skip
    (tmp_path / "tokenizer_config.json").write_text('{"eos_token": "</s>"}')
    template = load_template(str(tmp_path / "plain.jinja"))
    assert continuation(template, MESSAGES, None, "Yes!") == "Yes!\n</s>"


def test_custom_think_markers_are_taken_from_the_template_or_the_config(tmp_path):
    seed = tmp_path / "seed.jinja"
    seed.write_text(
        "{% for m in messages %}<{{ m['role'] }}>{% if m['role'] == 'assistant' and '</seed:think>' in m['content'] %}"
        "{{ m['content'].split('</seed:think>')[-1] }}{% else %}{{ m['content'] }}{% endif %}</s>{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    template = load_template(str(seed))
    assert (template.think_open, template.think_close) == ("<seed:think>", "</seed:think>")
    assert not keeps_reasoning(template)
    assert continuation(template, MESSAGES, "r", "a") == "<seed:think>\nr\n</seed:think>\n\na</s>"
    chatml = load_template(str(ALL["chatml"]), think_open="<reasoning>", think_close="</reasoning>")
    assert continuation(chatml, MESSAGES, "r", "a") == "<reasoning>\nr\n</reasoning>\n\na<|im_end|>"


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda p: None, "not found"),
        (lambda p: p.mkdir(), "no chat template"),
        (lambda p: (p.mkdir(), (p / "tokenizer_config.json").write_text("{nope")), "not readable JSON"),
        (lambda p: (p.mkdir(), (p / "chat_template.jinja").write_text("{% for m in messages %}")), "does not render"),
        (lambda p: (p.mkdir(), (p / "chat_template.jinja").write_text("{{ raise_exception('roles must alternate') }}")),
         "roles must alternate"),
    ],
)  # fmt: skip
def test_a_bad_template_is_one_error_naming_the_key(tmp_path, setup, message):
    path = tmp_path / "student"
    setup(path)
    with pytest.raises(ConfigError, match=f"^export.template: .*{message}"):
        load_template(str(path))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    url = str(tmp_path_factory.mktemp("export") / "run")
    make_run(url, n_prompts=8, k=4)
    return url


def _sides(url):
    samples = pl.read_parquet(f"{url}/samples/*.parquet")
    return {(r["prompt_id"], r["sample_idx"]): r for r in samples.iter_rows(named=True)}


def test_factory_export_writes_the_templated_pairs_with_their_metadata(run_dir, capsys):
    assert main(["export", run_dir, "--template", str(ALL["deepseek_r1"]), "--name", "r1"]) == 0
    out = capsys.readouterr()
    assert "export/r1" in out.out and "keeps only the text after </think>" in out.err  # R1 warns about pairs/
    assert "SFT rows -> " in out.out and "sft/filter_long.r1/" in out.out and "sft/dp_sft.r1/" in out.out
    export = pl.read_parquet(f"{run_dir}/export/r1/*.parquet")
    pairs = pl.read_parquet(f"{run_dir}/pairs/*.parquet")
    assert export.columns[:3] == ["prompt", "chosen", "rejected"] and export.height == pairs.height > 0
    assert export.drop("prompt", "chosen", "rejected").equals(pairs.drop("prompt", "chosen", "rejected"))
    samples = _sides(run_dir)
    with_reasoning = 0
    for row in export.iter_rows(named=True):
        assert row["prompt"].endswith("<｜Assistant｜><think>\n") and "<｜User｜>" in row["prompt"]
        for side in ("chosen", "rejected"):
            sample = samples[(row["prompt_id"], row[f"{side}_idx"])]
            text, reasoning = row[side], sample["reasoning"].strip()
            assert text.endswith(sample["answer"] + R1_EOS)
            if reasoning:  # every side's reasoning is in the export, in R1's markers
                with_reasoning += 1
                assert text == f"{sample['reasoning']}\n</think>\n\n{sample['answer']}{R1_EOS}"
            else:
                assert text == f"\n</think>\n\n{sample['answer']}{R1_EOS}"
    assert with_reasoning > 0
    record = pl.read_json(f"{run_dir}/export/r1/_export.json")
    assert record["rows"][0] == export.height and record["keeps_reasoning_in_conversational"][0] is False


def test_factory_pairs_with_a_student_template_writes_the_export_and_warns_only_when_reasoning_is_dropped(
    run_dir, capsys
):
    assert main(["pairs", run_dir, f"export.template={ALL['chatml']}"]) == 0
    err = capsys.readouterr().err
    assert "warning" not in err and "export/chatml/" in err
    export = pl.read_parquet(f"{run_dir}/export/chatml/*.parquet")
    assert export.height == pl.read_parquet(f"{run_dir}/pairs/*.parquet").height
    assert main(["pairs", run_dir, f"export.template={ALL['deepseek_r1_distill']}", "export.enabled=false"]) == 0
    err = capsys.readouterr().err
    assert err.count("warning: the student's chat template") == 1 and "export/deepseek_r1_distill/" in err
    assert not Path(run_dir, "export", "deepseek_r1_distill").exists()  # enabled=false: warned, not written


def test_export_errors_name_the_key(run_dir, tmp_path, capsys):
    assert main(["export", run_dir]) == 2
    assert "export.template: no student chat template" in capsys.readouterr().err
    assert main(["export", run_dir, "--template", str(tmp_path / "missing")]) == 2
    assert "export.template: not found" in capsys.readouterr().err
    assert main(["export", run_dir, "--template", str(ALL["chatml"]), "--name", "a/b"]) == 2
    assert "export.name" in capsys.readouterr().err


def test_no_output_holds_an_empty_think_block(run_dir):
    """pairs/ (conversational and standard), sft/ and every export of a template that does not write one itself."""
    assert main(["pairs", run_dir]) == 0
    empty = re.compile(r"<think>\s*</think>")
    samples = _sides(run_dir)
    assert any(not s["reasoning"].strip() for s in samples.values())  # the fake engine makes reasoning-less samples
    pairs = pl.read_parquet(f"{run_dir}/pairs/*.parquet")
    texts = [m["content"] for col in ("chosen", "rejected") for ms in pairs[col] for m in ms]
    for folder in ("filter_long", "dp_sft"):
        sft = pl.read_parquet(f"{run_dir}/sft/{folder}/*.parquet")
        texts += [m["content"] for ms in sft["messages"] for m in ms if m["role"] == "assistant"]
    assert texts and not [t for t in texts if empty.search(t)]
    assert any(t.startswith("<think>\n") for t in texts) and any("<think>" not in t for t in texts)
    prompts = pl.read_parquet(f"{run_dir}/prompts/*.parquet")
    for name in ("deepseek_r1_distill", "llama3", "chatml", "smollm2"):
        rows = templated_pairs(
            pairs, pl.read_parquet(f"{run_dir}/samples/*.parquet"), prompts, load_template(str(ALL[name]))
        )
        assert not [t for t in rows["chosen"].to_list() + rows["rejected"].to_list() if empty.search(t)], name
    assert main(["pairs", run_dir, "pairs.format=standard"]) == 0
    standard = pl.read_parquet(f"{run_dir}/pairs/*.parquet")
    assert not [t for t in standard["chosen"].to_list() + standard["rejected"].to_list() if empty.search(t)]
    assert main(["pairs", run_dir]) == 0  # back to the run's own settings for the other tests


def test_pairs_whose_samples_are_not_stored_are_one_error_not_a_silent_drop(run_dir):
    pairs = pl.read_parquet(f"{run_dir}/pairs/*.parquet")
    samples = pl.read_parquet(f"{run_dir}/samples/*.parquet")
    prompts = pl.read_parquet(f"{run_dir}/prompts/*.parquet")
    first = pairs.row(0, named=True)
    gone = samples.filter(
        ~((pl.col("prompt_id") == first["prompt_id"]) & (pl.col("sample_idx") == first["chosen_idx"]))
    )
    with pytest.raises(
        ConfigError, match=f"1 pair\\(s\\) whose prompt or samples are not stored.*{first['prompt_id']}"
    ):
        templated_pairs(pairs, gone, prompts, load_template(str(ALL["chatml"])))
    empty = samples.with_columns(pl.lit(None, pl.String).alias("answer"))  # stored, but no answer text: written as ""
    rows = templated_pairs(pairs, empty, prompts, load_template(str(ALL["chatml"])))
    assert rows.height == pairs.height


def test_the_sft_exports_are_written_under_the_student_template_beside_the_conversational_form(run_dir, capsys):
    """sft/filter_long.<name>/ and sft/dp_sft.<name>/: one prompt/completion row per conversational SFT row, the
    completion exactly what the student produces (R1: reasoning then </think>, answer, end of sentence)."""
    assert main(["pairs", run_dir, f"export.template={ALL['deepseek_r1']}", "export.name=r1"]) == 0
    err = capsys.readouterr().err
    assert "sft/filter_long/ and sft/dp_sft/ trains on the answers alone" in err  # the conversational SFT: warned
    assert "sft/filter_long.r1/" in err and "sft/dp_sft.r1/" in err
    samples = _sides(run_dir)
    for export in ("filter_long", "dp_sft"):
        conversational = pl.read_parquet(f"{run_dir}/sft/{export}/*.parquet")
        templated = pl.read_parquet(f"{run_dir}/sft/{export}.r1/*.parquet")
        assert templated.columns[:2] == ["prompt", "completion"] and templated.height == conversational.height > 0
        assert templated.drop("prompt", "completion").equals(conversational.drop("messages"))
        with_reasoning = 0
        for row in templated.iter_rows(named=True):
            sample = samples[(row["prompt_id"], row["sample_idx"])]
            assert row["prompt"].endswith("<｜Assistant｜><think>\n") and not row["prompt"].startswith(R1_BOS)
            if sample["reasoning"].strip():
                with_reasoning += 1
                assert row["completion"] == f"{sample['reasoning']}\n</think>\n\n{sample['answer']}{R1_EOS}"
            else:
                assert row["completion"] == f"\n</think>\n\n{sample['answer']}{R1_EOS}"
        assert with_reasoning > 0, export
    record = pl.read_json(f"{run_dir}/export/r1/_export.json")
    assert record["sft"][0]["filter_long"]["rows"] == pl.read_parquet(f"{run_dir}/sft/filter_long.r1/*.parquet").height
    # an SFT export no longer asked for goes, its templated form too (nothing lingers as if current)
    assert (
        main(["pairs", run_dir, f"export.template={ALL['deepseek_r1']}", "export.name=r1", "pairs.sft=[filter_long]"])
        == 0
    )
    assert not list(Path(run_dir, "sft", "dp_sft.r1").glob("*.parquet"))
    assert list(Path(run_dir, "sft", "filter_long.r1").glob("*.parquet"))
    assert main(["pairs", run_dir]) == 0  # back to the run's own settings for the other tests
