"""Work on a finished run directory without any LLM call: reload its config and rebuild outputs.

    cfg, store, manifest = open_run("runs/demo", ["pairs.w_len=0.4"])
"""

from __future__ import annotations

import time
from typing import Any

import polars as pl
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from factory import config as config_mod
from factory.config import ConfigError, RunConfig
from factory.store import RunStore


def run_store(run_dir: str) -> tuple[RunStore, dict[str, Any]]:
    """The store and manifest of an existing run directory, or one error saying it is not one."""
    store = RunStore(run_dir, create=False)
    manifest = store.read_json("manifest.json")
    if manifest is None:
        raise ConfigError(f"{run_dir}: no manifest.json; is this a run directory made by `factory run`?")
    return store, manifest


def open_run(run_dir: str, overrides: list[str] | None = None) -> tuple[RunConfig, RunStore, dict[str, Any]]:
    """The run's stored config with `overrides` applied (checked like any config)."""
    store, manifest = run_store(run_dir)
    stored = _unmasked(manifest["config"])
    layers = [OmegaConf.structured(RunConfig), OmegaConf.create(stored)]
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        config_mod.check_keys([item.split("=", 1)[0]], "the command line")
    if overrides:
        layers.extend(config_mod._parse_override(o) for o in overrides)  # one error line naming the key
    try:
        cfg = OmegaConf.to_object(OmegaConf.merge(*layers))
    except ConfigError:
        raise
    except (OmegaConfBaseException, ValueError, TypeError) as exc:  # a bad override value names its key
        key = getattr(exc, "full_key", None) or ""
        msg = (getattr(exc, "msg", None) or str(exc)).splitlines()[0]
        raise ConfigError(f"{key}: {msg}" if key else msg) from None
    return cfg, store, manifest  # type: ignore[return-value]


def _unmasked(value: Any) -> Any:
    """The stored config without masked values ("***"): those keys fall back to their defaults, since a
    secret is never stored (older runs also masked harmless keys such as max_tokens)."""
    if isinstance(value, dict):
        return {k: _unmasked(v) for k, v in value.items() if v != "***"}
    return value


def stored_prompts(store: RunStore) -> pl.DataFrame:
    prompts = store.read("prompts")
    if prompts is None:
        raise ConfigError(f"{store.url}: no prompts/ in this run directory")
    return prompts


def rebuild_pairs(run_dir: str, overrides: list[str] | None = None) -> tuple[dict[str, Any], pl.DataFrame]:
    """`factory pairs`: pairs/ and sft/ from stored samples and judgments; the manifest is updated."""
    from factory import run as run_graph

    t0 = time.perf_counter()
    cfg, store, manifest = open_run(run_dir, overrides)
    prompts = stored_prompts(store)
    outputs = run_graph.build_outputs(store, cfg, prompts, manifest["fingerprints"])
    scored = outputs.pop("_scored")
    outputs.pop("_pairs")
    # The run's config stays the manifest's config: overrides shape this build only (recorded below), so a
    # later plain `factory pairs` builds with the run's settings again.
    manifest["pairs_build"] = {"overrides": list(overrides or []), "at": time.time()}
    manifest["counts"].update({k: v for k, v in outputs.items() if k not in ("pairs", "parse_status", "judges")})
    manifest["pairs"] = outputs["pairs"]
    manifest["parse_status"] = outputs["parse_status"]
    for name, counts in outputs["judges"].items():  # stored rows now; this command makes no request
        manifest.setdefault("judges", {}).setdefault(name, {}).update({**counts, "requests": 0})
    manifest["requests"] = {key: 0 for key in run_graph.request_keys(cfg)}
    manifest["pools"] = {}  # this command starts no engine (the run's pools are in its metrics.json)
    manifest["output_dir"] = store.url  # the run may have been copied or moved since `factory run`
    manifest["timings"] = {"prompts": 0.0, "sample": 0.0, "judge": 0.0, "pairs": round(time.perf_counter() - t0, 3)}
    manifest["timings"]["total"] = manifest["timings"]["pairs"]
    store.write_json("manifest.json", manifest)
    return manifest, scored
