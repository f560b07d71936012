"""`factory export RUN_DIR --template PATH`: the trainer-faithful export (factory/pairs/export.py) of a run's
current pairs/, from what is stored; no LLM call."""

from __future__ import annotations

from typing import Any

from factory.commands import card, rebuild
from factory.config import ConfigError
from factory.pairs.export import export_name, student_template, warn_if_dropped, write_export  # noqa: F401
from factory.rundir.guard import check_run_dir


def export_run(run_dir: str, template: str = "", name: str = "", overrides: list[str] | None = None) -> dict[str, Any]:
    """`factory export RUN_DIR --template PATH [--name NAME] [key=value ...]`: export/<name>/ from the run's
    current pairs/ and its stored samples; no LLM call. Returns the export's record (_export.json)."""
    more = [f"export.template={template}"] if template else []
    more += [f"export.name={name}"] if name else []
    run = rebuild.read_run(run_dir, [*(overrides or []), *more])
    cfg, store = run.cfg, run.store
    check_run_dir(store, "RUN_DIR")  # export/<name>/ is replaced: never through a link out of the run
    chosen = student_template(cfg)
    if chosen is None:
        raise ConfigError("export.template: no student chat template given (--template PATH or export.template=PATH)")
    pairs = store.read("pairs")
    if pairs is None:
        raise ConfigError(f"{store.url}: no pairs/ in this run directory; build them with `factory pairs {run_dir}`")
    samples = run.graph.stages(run.prompts)[0].read(store)  # the sampler's rows
    record = write_export(store, cfg, pairs, samples, run.prompts, chosen)
    record["path"] = store.display(f"export/{record['name']}")
    card.write_card(store, run.manifest)  # the card names the new export
    warn_if_dropped(chosen, cfg.pairs.format, record["name"])
    return record
