"""The graph of `factory run`: prompts -> sample -> judges -> pairs, resuming what is stored, and the
`pairs.target` rounds on the same pools.

    result = run(load("conf/demo.yaml"))        # on Ray; run(cfg, backend="local") in process
    result.manifest["counts"], result.scored, result.pairs

Who runs, under which fingerprints and columns: factory/graph.py. What every requesting command does
around it (preflight, output, secrets, lease, budget, executor, metrics, manifest): factory/session.py.
The pair build from what is stored: factory/commands/rebuild.py (`factory pairs` is the same call).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import polars as pl

from factory import pairs as pair_kernel
from factory.commands.page import write_run_page
from factory.commands.card import write_card
from factory.commands.rebuild import Outputs, write_outputs
from factory.config import ConfigError, RunConfig
from factory.graph import RunGraph
from factory.prompts import load_prompts
from factory.rundir.schemas import INVALID
from factory.rundir.manifest import Manifest
from factory.session import Session
from factory.stages import sample as sample_stage


@dataclass
class RunResult(Mapping):
    """What `factory run` returns: the manifest as written (also readable as the mapping itself:
    result["counts"]), and the frames its summary shows, which are not manifest keys."""

    manifest: dict[str, Any]
    scored: pl.DataFrame
    pairs: pl.DataFrame

    def __getitem__(self, key: str) -> Any:
        return self.manifest[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.manifest)

    def __len__(self) -> int:
        return len(self.manifest)


REASONING_NOTICE = (
    "[export] the teacher returns reasoning and no student chat template is set (export.template): pairs/ and "
    "sft/ are conversational, and a template such as R1's or the R1 distills' keeps only the text after </think> of "
    "them; set export.template=<the student's tokenizer folder> to also write export/<name>/ and "
    "sft/<export>.<name>/ under it, reasoning kept (or `factory export RUN_DIR --template PATH` afterwards)"
)


def run(
    cfg: RunConfig,
    backend: str = "ray",
    build: Any = None,
    take_over: bool = False,
    allow_fewer_prompts: bool = False,
    command: str | None = None,
) -> RunResult:
    """One `factory run`: the stage graph on pools that live for the whole run (every `pairs.target`
    round included). Before any request the config is checked, the output directory shown writable and
    its lease taken (`take_over` takes a live-looking lease). A run with no valid prompt, or with fewer
    than the stored outputs were built from (unless `allow_fewer_prompts`), fails before Ray starts,
    without replacing anything."""
    graph = RunGraph(cfg)
    session = Session(
        cfg, cfg.output_dir, preflight=graph.preflight, prices=graph.prices(), price_keys=graph.price_keys(),
        backend=backend, build=build, take_over=take_over, command=command,
    )  # fmt: skip
    with session:
        guard = _PromptGuard(session.previous, allow_fewer_prompts)
        if cfg.pairs.target:
            manifest, outputs = _to_target(graph, session, guard)
        else:
            manifest, outputs = _round(graph, session, guard)
        written = session.finish(manifest)
        write_card(session.store, written)  # README.md, the dataset card (factory.commands.card)
        write_run_page(session.store, cfg, written, outputs)  # report/index.html (factory.commands.page)
    return RunResult(written, outputs.scored, outputs.pairs)


class _PromptGuard:
    """Refuses a round that would replace the stored outputs with ones built from fewer prompts."""

    def __init__(self, previous: dict[str, Any], allow_fewer: bool):
        self.before = int((previous.get("counts") or {}).get("prompts_valid") or 0)
        self.allow_fewer = allow_fewer

    def check(self, cfg: RunConfig, valid: int, invalid: int) -> None:
        if valid == 0:
            seen = f"{invalid} row(s) recorded as invalid, see above" if invalid else "the file holds no row"
            raise ConfigError(
                f"prompts.path: no valid prompt in {cfg.prompts.path} ({seen}); nothing was requested and nothing in "
                "output_dir was replaced"
            )
        if valid < self.before and not self.allow_fewer:
            raise ConfigError(
                f"prompts: this run has {valid} valid prompt(s) but the outputs in {cfg.output_dir} were built from "
                f"{self.before} (prompts.path / prompts.limit changed?); refusing to replace prompts/, pairs/ and sft/ "
                "with a smaller set. Run with --allow-fewer-prompts to do it anyway (stored samples stay either way)"
            )


def _to_target(graph: RunGraph, session: Session, guard: _PromptGuard) -> tuple[Manifest, Outputs]:
    """pairs.target: run on a first draw of prompt rows (prompts.limit, else from the survival rate the
    run directory already shows, else an estimate from the target and drop_ratio), then raise prompts.limit to
    what the observed survival rate (pairs kept per prompt row) says is needed, +10%, and run again on the
    same pools: only the new prompts are sampled and judged. Stops when the target is met or the pool has no
    more rows; with no pair yet, the draw doubles."""
    cfg = graph.cfg
    target = int(cfg.pairs.target or 0)
    # The first draw: prompts.limit, else from the survival rate stored in the directory (as `factory plan`
    # says); a grown run never draws fewer prompts than its outputs were built from.
    start, _ = pair_kernel.target_start(cfg.pairs, session.previous.get("counts"))
    limit = max(cfg.prompts.limit or start, guard.before)
    requests = {key: 0 for key in graph.request_keys()}
    draws: list[dict[str, int]] = []
    changed = 0
    while True:
        drawn = replace(cfg, prompts=replace(cfg.prompts, limit=limit))
        manifest, outputs = _round(graph, session, guard, drawn)
        for key, n in manifest.requests.items():
            requests[key] = requests.get(key, 0) + n
        changed += manifest.counts["prompts_changed"]  # each round against the round before it
        kept, rows = manifest.counts["pairs_kept"], manifest.counts["prompts_in"]
        draws.append({"limit": limit, "prompts_in": rows, "pairs_kept": kept})
        session.progress.pairs_target(kept, target, session.budget.total_label())  # the live pairs bar
        if kept >= target or rows < limit:  # met, or the pool ran out of rows
            break
        limit = pair_kernel.target_draw(cfg.pairs, kept, rows, limit)
        session.say(f"[target] {kept} of {target} pairs from {rows} prompt rows; drawing up to {limit}")
    manifest.requests = requests
    manifest.counts["prompts_changed"] = changed
    for name, judge in (manifest.judges or {}).items():  # every round's requests, as `requests`
        judge["requests"] = requests.get(name, 0)
    manifest.target = {"target": target, "met": kept >= target, "draws": draws}
    return manifest, outputs


def _changed_prompts(session: Session, prompts: pl.DataFrame) -> list[str]:
    """Before prompts/ is replaced: stamp the samples stored without their prompt's text hash with the text
    of prompts/ (the one they answered), then name the prompts whose text changed under the same id since
    (they are sampled and judged again; their old samples stay stored, unused)."""
    store = session.store
    stamped = sample_stage.stamp_prompt_hashes(store)
    if stamped:
        session.say(f"[samples] {stamped} stored sample(s) had no prompt_hash (stored by an older version): "
                    "stamped with the prompt text in prompts/")  # fmt: skip
    previous = store.read("prompts", columns=["prompt_id", "messages", "prompt_hash"])
    changed = sample_stage.changed_texts(previous, prompts)
    if changed:
        shown = ", ".join(map(repr, changed[:5])) + (", ..." if len(changed) > 5 else "")
        session.say(
            f"[prompts] {len(changed)} prompt(s) changed text under the same prompt_id since the last run ({shown}): "
            "sampled and judged again for the new text; their old samples stay stored, unused"
        )
    return changed


def _round(
    graph: RunGraph, session: Session, guard: _PromptGuard, drawn: RunConfig | None = None
) -> tuple[Manifest, Outputs]:
    """Prompts -> the stage graph on the session's pools -> pairs; the manifest of this round. `drawn`:
    the config with this round's prompts.limit (a pairs.target round), as the manifest records it."""
    cfg, store = drawn or graph.cfg, session.store
    timings: dict[str, float] = {}
    t = time.perf_counter()
    prompts, invalid = load_prompts(cfg.prompts)
    for row in invalid.iter_rows(named=True):
        where = f"row {row['row_index']}" if row["row_index"] is not None else "file"
        session.say(f"[prompts] {where} invalid: {row['reason']}")
    guard.check(cfg, prompts.height, invalid.height)  # before the executor: a refusal never waits for Ray
    graph.check_reads(prompts)  # a column the pair build reads and nothing will hold: refused before any request
    changed = _changed_prompts(session, prompts)
    store.replace("prompts", prompts)
    if invalid.height:
        store.replace("invalid", invalid.to_arrow().cast(INVALID))
    timings["prompts"] = time.perf_counter() - t
    session.say(f"[prompts] {prompts.height} valid, {invalid.height} invalid")

    stages = graph.stages(prompts)
    if not cfg.export.template:  # the sampler says when its first reasoning is stored
        stages[0].on_reasoning = lambda: session.say_once("reasoning", REASONING_NOTICE)
    done = session.run(stages)
    sampler = stages[0]  # its levels, under sampler.adaptive: the samples each prompt was given
    timings["sample"] = done["sample"].elapsed()
    for node in graph.requesting:
        timings[node.stage] = done[node.stage].elapsed()

    t = time.perf_counter()
    outputs = write_outputs(store, graph, prompts, graph.fingerprints)
    timings["pairs"] = time.perf_counter() - t
    counts = {
        "prompts_in": prompts.height + invalid.height,
        "prompts_valid": prompts.height,
        "prompts_invalid": invalid.height,
        "prompts_changed": len(changed),
        "samples_expected": sampler.expected,
        **outputs.counts,
    }
    requests = {"sampler": done["sample"].requests, **{j.stage: done[j.stage].requests for j in graph.requesting}}
    manifest = Manifest.of_config(
        cfg,
        fingerprints=graph.fingerprints,
        counts=counts,
        requests=requests,
        timings={k: round(v, 3) for k, v in timings.items()},
        parse_status=outputs.parse_status,
        judges=graph.judges_manifest(outputs.judges, requests),
        pairs=outputs.stats.as_dict(),
        output_dir=store.url,
        adaptive=sampler.adaptive.summary(sampler.current)
        if sampler.adaptive and sampler.current is not None
        else None,
    )
    return manifest, outputs
