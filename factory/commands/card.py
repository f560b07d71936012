"""README.md at the run directory's root: a Hugging Face dataset card, so `datasets` loads the run's tables
by name and a reader sees where they came from.

    write_card(store, manifest)     # after manifest.json is written (factory run, factory pairs, factory export)

    ---
    configs:
    - config_name: pairs
      data_files:
      - split: train
        path: pairs/*.parquet
      default: true
    - config_name: sft_dp_sft          # each sft/<name>/ and export/<name>/ holding Parquet
      ...
    ---
    <!-- factory dataset card ... -->
    # factory run: runs/demo
    (the config's essentials, fingerprints, counts, the funnel, the strategy)

    datasets.load_dataset(RUN_DIR, "pairs")["train"]

Everything below the front matter comes from manifest.json as written, so it holds what the manifest holds
and no more: the same redaction and scrub keep secrets out. A README.md without the card's mark line is
someone else's: it is never replaced (a warning says so and the run goes on); deleting the mark line from
the factory's card keeps your edits too.
"""

from __future__ import annotations

import logging
from typing import Any

import yaml

from factory.commands.run_facts import essentials, funnel_steps
from factory.commands.present import markdown
from factory.rundir.store import RunStore

CARD = "README.md"
MARK = "<!-- factory dataset card: rewritten by factory run / pairs / export; delete this line to keep your edits -->"
TREES = {"sft": "sft", "export": "export"}  # folder -> config name prefix: sft/<name>/ -> sft_<name>


def configs(store: RunStore) -> list[tuple[str, str]]:
    """(config name, folder) of each table the card names that holds Parquet now: pairs, sft/<name>, export/<name>."""
    found = [("pairs", "pairs")] if store.parts("pairs") else []
    for tree, prefix in TREES.items():
        try:
            entries: list[Any] = store.fs.ls(store.path(tree), detail=True)
        except (FileNotFoundError, NotADirectoryError):
            continue
        names = sorted(e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e.get("type") == "directory")
        found += [(f"{prefix}_{name}", f"{tree}/{name}") for name in names if store.parts(f"{tree}/{name}")]
    return found


def front_matter(tables: list[tuple[str, str]]) -> str:
    entries = []
    for name, folder in tables:
        entry: dict[str, Any] = {"config_name": name, "data_files": [{"split": "train", "path": f"{folder}/*.parquet"}]}
        if name == "pairs":
            entry["default"] = True
        entries.append(entry)
    return "---\n" + yaml.safe_dump({"configs": entries}, sort_keys=False, allow_unicode=True) + "---\n"


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    return markdown(headers, rows).splitlines()  # the reports' one Markdown table renderer


def render(manifest: dict[str, Any], tables: list[tuple[str, str]]) -> str:
    """The card's text from a written manifest and the tables found (configs)."""
    conf = manifest.get("config") or {}
    stats = manifest.get("pairs") or {}
    counts = manifest.get("counts") or {}
    lines = [front_matter(tables) + MARK, "", f"# factory run: {manifest.get('output_dir', '')}", ""]
    lines += [
        "Preference pairs made by rejection sampling: K samples per prompt from a teacher, each scored by a judge;",
        "pairs (chosen, rejected) chosen by the strategy below. Written by `factory`; manifest.json holds all of it.",
        "",
        "```python",
        "from datasets import load_dataset",
        f'pairs = load_dataset("RUN_DIR", "{tables[0][0] if tables else "pairs"}")["train"]',
        "```",
        "",
        "## Configs",
        "",
        *_table(["config", "data files", "what it holds"], [[n, f"{f}/*.parquet", _what(f)] for n, f in tables]),
        "",
    ]
    if conf:
        lines += ["## Generating config", ""]
        lines += _table(
            ["setting", "value"], essentials(conf, stats.get("terms") or [], manifest.get("output_dir", ""))
        )
        lines += [""]
    p = conf.get("pairs") or {}
    if p:
        lines += ["## Strategy", "", f"`{p.get('strategy')}`: pairing `{p.get('pairing')}`, w_len {p.get('w_len')}, "
                  f"drop_ratio {p.get('drop_ratio')}, min_margin {p.get('min_margin')}.", ""]  # fmt: skip
    if stats:
        lines += ["## Funnel", ""]
        steps = funnel_steps(stats, manifest, [])
        lines += _table(
            ["step", "count", "lost"],
            [[s, n, ", ".join(f"{r} {c}" for r, c in why if c) or "-"] for s, n, why in steps],
        )
        lines += [""]
    if counts:
        lines += [
            "## Counts",
            "",
            *_table(["count", "value"], [[k, v] for k, v in counts.items() if not isinstance(v, dict)]),
            "",
        ]
    fingerprints = manifest.get("fingerprints") or {}
    if fingerprints:
        lines += [
            "## Fingerprints",
            "",
            *_table(["stage", "fingerprint"], [[k, v] for k, v in fingerprints.items()]),
            "",
        ]
    versions = manifest.get("versions") or {}
    if versions:
        lines += ["## Versions", "", ", ".join(f"{k} {v}" for k, v in versions.items()), ""]
    return "\n".join(lines)


def _what(folder: str) -> str:
    if folder == "pairs":
        return "the current pair build (TRL conversational: prompt, chosen, rejected, scores, margin)"
    if folder.startswith("sft/"):
        return "an SFT export (one chosen answer per prompt)"
    return "a trainer export under the student's chat template (TRL standard format)"


def is_factory_card(text: str) -> bool:
    return text.startswith("---\n") and MARK in text


def write_card(store: RunStore, manifest: dict[str, Any]) -> bool:
    """Write README.md unless a README.md that is not the factory's card is there (then a warning, False)."""
    if store.exists(CARD):
        with store.fs.open(store.path(CARD), "rb") as handle:
            present = handle.read(64 * 1024).decode("utf-8", errors="replace")
        if not is_factory_card(present):
            logging.getLogger("factory").warning(
                "%s is not the factory's dataset card (no mark line); it is left as it is and no card is written",
                store.display(CARD),
            )
            return False
    store.write_bytes(CARD, render(manifest, configs(store)).encode())
    return True
