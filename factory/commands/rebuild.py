"""Outputs from what a run directory stores, without any LLM call: `factory run` ends with it and
`factory pairs` is it.

    cfg, store, manifest = open_run("runs/demo", ["pairs.w_len=0.4"])
    outputs = write_outputs(store, RunGraph(cfg, manifest["fingerprints"]), prompts, manifest["fingerprints"])
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any

import polars as pl
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from factory import config as config_mod
from factory.commands import card
from factory.config.load import override_layer
from factory.config import ConfigError, RunConfig
from factory import pairs as pair_kernel
from factory.pairs import export as export_mod
from factory.graph import RunGraph
from factory.rundir import ledger
from factory.rundir.secrets import MASK
from factory.rundir.manifest import Manifest
from factory.stages.judge import USABLE
from factory.rundir.guard import check_run_dir
from factory.rundir.store import RunStore


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
        layers.extend(override_layer(o) for o in overrides)  # one error line naming the key; $NAME expanded
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
        return {k: _unmasked(v) for k, v in value.items() if v != MASK}
    return value


def stored_prompts(store: RunStore) -> pl.DataFrame:
    prompts = store.read("prompts")
    if prompts is None:
        raise ConfigError(f"{store.url}: no prompts/ in this run directory")
    return prompts


def built_with(run_dir: str) -> list[str]:
    """The overrides the run's pairs/ was last built with (`factory pairs RUN_DIR k=v`, recorded as the
    manifest's pairs_build): what a reader of pairs/ (report, --against) applies first, so that it describes
    the pairs on disk. [] after a `factory run` or a plain `factory pairs`."""
    _store, manifest = run_store(run_dir)
    return list((manifest.get("pairs_build") or {}).get("overrides") or [])


@dataclass
class StoredRun:
    """A run directory opened for reading: its config (overrides applied), store, manifest, prompts, and
    the run graph under the stored fingerprints (no model file looked at)."""

    cfg: RunConfig
    store: RunStore
    manifest: dict[str, Any]
    prompts: pl.DataFrame
    graph: RunGraph


def read_run(run_dir: str, overrides: list[str] | None = None) -> StoredRun:
    """What `factory pairs`, `sweep`, `report`, `export` and `pairs --compare` open first."""
    cfg, store, manifest = open_run(run_dir, overrides)
    return StoredRun(cfg, store, manifest, stored_prompts(store), RunGraph(cfg, manifest["fingerprints"]))


@dataclass
class Outputs:
    """What a pair build wrote (pairs/, sft/) and what the manifest and summary take from it."""

    counts: dict[str, int]
    parse_status: dict[str, int]
    judges: dict[str, dict[str, int]]
    stats: Any  # factory.pairs.PairStats
    scored: pl.DataFrame  # with the prompt columns the pairs read (pair_kernel.attach)
    pairs: pl.DataFrame
    built: Any = None  # the factory.pairs.PairBuild itself: the page decides nothing again
    judgments: pl.DataFrame | None = None  # the primary judge's current judgments (their reasons go on the page)
    prompts: pl.DataFrame | None = None  # the prompts the build was made from


def write_outputs(store: RunStore, graph: RunGraph, prompts: pl.DataFrame, fps: dict[str, str]) -> Outputs:
    """pairs/ and sft/ from what is stored: no LLM call."""
    cfg = graph.cfg
    read = graph.scored(store, prompts, fps)
    judgments = read.judgments
    scored = pair_kernel.attach(read.scored, prompts, cfg.pairs)
    built = pair_kernel.build(scored, prompts, cfg.pairs, cfg.judge.scale_max)
    stats, pairs = built.stats, built.pairs
    schema = pair_kernel.pairs_schema(cfg.pairs.format, cfg.pairs.balance.floor is not None)
    store.replace("pairs", pairs.to_arrow().cast(schema))
    store.remove("sft")  # the layout before each export had its own folder (sft/<export>-*.parquet)
    for export in ("filter_long", "dp_sft"):
        if export in built.sft:  # one folder per export, so that sft/<export>/*.parquet is one data set
            store.replace(f"sft/{export}", built.sft[export])
        else:  # an export no longer asked for must not linger as if current
            store.remove(f"sft/{export}")
    export_mod.after_pairs(store, cfg, pairs, scored, prompts)  # export/<name>/ + the reasoning warning
    for note in (pair_kernel.filter_note(stats), pair_kernel.target_note(stats)):
        if note:
            print(note, file=sys.stderr)
    samples = read.samples
    usable = judgments.filter(pl.col("parse_status").is_in(USABLE)).height if judgments.height else 0
    status = (
        dict(zip(*judgments["parse_status"].value_counts().to_dict(as_series=False).values()))
        if judgments.height
        else {}
    )
    counts = {
        "samples_ok": samples.filter(pl.col("error").is_null()).height,
        "samples_failed": samples.filter(pl.col("error").is_not_null()).height,
        "judgments_ok": usable,
        "judgments_failed": judgments.height - usable,
        "groups": stats.groups,
        "pairs_kept": stats.pairs_kept,
        "pairs_dropped": stats.pairs_dropped,
        **({"pairs_repeated": stats.pairs_repeated} if stats.pairs_repeated is not None else {}),
    }
    return Outputs(counts, status, graph.judge_counts(read.frames), stats, scored, pairs, built, judgments, prompts)


def rebuild_pairs(run_dir: str, overrides: list[str] | None = None) -> tuple[dict[str, Any], pl.DataFrame]:
    """`factory pairs`: pairs/ and sft/ from stored samples and judgments; the manifest is updated."""
    t0 = time.perf_counter()
    run = read_run(run_dir, overrides)
    check_run_dir(run.store, "RUN_DIR")  # pairs/ and sft/ are replaced: never through a link out of the run
    store, graph = run.store, run.graph
    outputs = write_outputs(store, graph, run.prompts, run.manifest["fingerprints"])
    manifest = Manifest.from_dict(run.manifest)
    # The run's config stays the manifest's config: overrides shape this build only (recorded below), so a
    # later plain `factory pairs` builds with the run's settings again.
    manifest.pairs_build = {"overrides": list(overrides or []), "at": time.time()}
    manifest.counts.update(outputs.counts)
    manifest.pairs = outputs.stats.as_dict()
    manifest.parse_status = outputs.parse_status
    judges = manifest.judges or {}
    for name, counts in outputs.judges.items():  # stored rows now; this command makes no request
        judges.setdefault(name, {}).update({**counts, "requests": 0})
    for node in graph.judges:  # a run made before the key was recorded gets it too (the summary names it)
        if node.cut_key() and node.stage in judges:
            judges[node.stage]["max_tokens_key"] = node.cut_key()
    manifest.judges = judges
    manifest.requests = {key: 0 for key in graph.request_keys()}
    # The run directory's totals stay as the last requesting command left them; this command adds nothing.
    manifest.this_run = {**ledger.empty(), "requests_by_key": dict(manifest.requests)}
    manifest.output_dir = store.url  # the run may have been copied or moved since `factory run`
    pairs_s = round(time.perf_counter() - t0, 3)
    manifest.timings = {"prompts": 0.0, "sample": 0.0, "judge": 0.0, "pairs": pairs_s, "total": pairs_s}
    manifest.pools = {}  # this command starts no engine (the run's pools are in its metrics.json)
    written = manifest.to_dict()
    store.write_json("manifest.json", written)
    card.write_card(store, written)
    return written, outputs.scored
