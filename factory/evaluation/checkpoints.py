"""`factory eval CONFIG --checkpoints TRAIN_OUT`: every checkpoint a recipe saved (jobs/train_*.py --save-every /
--save-per-epoch: TRAIN_OUT/checkpoints/<name>/, then TRAIN_OUT itself, the final one) becomes a candidate, and the
eval also writes §4.9's per-epoch table: epoch (or step), score, mean length, mean RT, one row per checkpoint.

Each checkpoint candidate is a copy of one configured candidate (`--like NAME`, default the last one) with its
engine.model set to the checkpoint folder: the same engine kind, sampling and rendering as the model it is
compared with. A checkpoint is known by its contents (factory.engines.base.folder_digest), so a retrained one is
sampled anew and an unchanged one is read back.

    candidates in:  base (vllm, /models/student), trained (vllm, runs/dpo)      --checkpoints runs/dpo --like trained
    candidates out: base, trained, step-1, step-2   (step-N from runs/dpo/checkpoints/; the final model, runs/dpo,
                    is `trained` already: its row is the table's `final`; a final no candidate loads is added
                    as `final`)
    report/epochs.md, epochs.json:  | checkpoint | epoch | step | score | mean tokens | mean RT (s) |
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

from factory.config import ConfigError, RunConfig

RECORDS = ("train_dpo.json", "train_sft.json")


def _order(name: str) -> tuple[int, str]:
    found = re.search(r"(\d+)$", name)
    return (int(found.group(1)) if found else 0, name)


def saved(folder: str) -> list[dict[str, Any]]:
    """The checkpoints of a recipe's output folder, in training order: {"name", "path", "step", "epoch"} from the
    recipe's record (train_dpo.json / train_sft.json) where it has them; the final model last, named `final`."""
    out = Path(folder).expanduser()
    if not out.is_dir():
        raise ConfigError(f"--checkpoints: not a folder: {folder}")
    record: dict[str, Any] = {}
    for name in RECORDS:
        if (out / name).is_file():
            record = json.loads((out / name).read_text())
            break
    known = {Path(c["path"]).name: c for c in record.get("checkpoints", [])}
    found = []
    inner = out / "checkpoints"
    names = (
        sorted((p.name for p in inner.iterdir() if (p / "config.json").is_file()), key=_order) if inner.is_dir() else []
    )
    for name in names:
        info = known.get(name, {})
        found.append({"name": name, "path": str(inner / name), "step": info.get("step"), "epoch": info.get("epoch")})
    if (out / "config.json").is_file():
        found.append({"name": "final", "path": str(out), "step": record.get("steps"), "epoch": None})
    if not found:
        raise ConfigError(f"--checkpoints: no checkpoint in {folder} (no config.json there nor in {inner}/*/)")
    return found


def with_checkpoints(cfg: RunConfig, folder: str, like: str = "") -> tuple[RunConfig, list[dict[str, Any]]]:
    """`cfg` with one candidate per saved checkpoint (a copy of candidate `like`, engine.model = the checkpoint);
    returns it and the checkpoints (each with its candidate name)."""
    candidates = cfg.eval.candidates
    if not candidates:
        raise ConfigError(
            "eval.candidates: --checkpoints needs a candidate to copy (--like NAME), e.g. eval.candidates.trained"
        )
    like = like or list(candidates)[-1]
    if like not in candidates:
        raise ConfigError(f"--like: {like!r} is not a candidate; candidates: {', '.join(candidates)}")
    if candidates[like].answers_path:
        raise ConfigError(f"--like: eval.candidates.{like} is an answers file, not an engine to load a checkpoint with")
    out = copy.deepcopy(cfg)
    points = saved(folder)

    def folder(model: str) -> str:
        return str(Path(model).expanduser().resolve()) if model else ""

    loaded = {folder(c.engine.model): name for name, c in candidates.items() if not c.answers_path}
    for point in points:
        if folder(point["path"]) in loaded:  # already a candidate (the final model as `trained`): its row
            point["candidate"] = loaded[folder(point["path"])]
            continue
        name = point["name"] if point["name"] not in candidates else f"ckpt-{point['name']}"
        point["candidate"] = name
        candidate = copy.deepcopy(candidates[like])
        candidate.engine.model = point["path"]
        out.eval.candidates[name] = candidate
    return out, points


def epoch_table(rows: list[dict[str, Any]], points: list[dict[str, Any]]) -> dict[str, Any]:
    """§4.9's table from the eval's model rows: one row per checkpoint, in training order."""
    by_model = {r["model"]: r for r in rows}
    table = []
    for point in points:
        row = by_model[point["candidate"]]
        table.append(
            {
                "checkpoint": point["name"],
                "candidate": point["candidate"],
                "epoch": point["epoch"],
                "step": point["step"],
                "score": row["score"],
                "mean_tokens": row["mean_tokens"],
                "mean_rt_s": row["mean_rt_s"],
                "prompts_scored": row["prompts_scored"],
                "prompts": row["prompts"],
            }
        )
    return {"rows": table}


def _f(value: Any, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def epoch_markdown(table: dict[str, Any]) -> str:
    lines = [
        "| checkpoint | epoch | step | score | mean tokens | mean RT (s) | prompts scored |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in table["rows"]:
        lines.append(
            f"| {r['checkpoint']} | {_f(r['epoch'], 2)} | {'-' if r['step'] is None else r['step']} | "
            f"{_f(r['score'], 1)} "
            f"| {_f(r['mean_tokens'], 1)} | {_f(r['mean_rt_s'], 2)} | {r['prompts_scored']}/{r['prompts']} |"
        )
    return "\n".join(lines)


def epoch_png(table: dict[str, Any]) -> bytes:
    """Score and mean tokens per checkpoint (two axes), in training order."""
    from factory.commands.present import png, pyplot

    plt = pyplot()
    rows = table["rows"]
    x = list(range(len(rows)))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(x, [r["score"] if r["score"] is not None else float("nan") for r in rows], "o-", color="C0")
    ax.set_ylabel("score", color="C0")
    ax.set_xticks(x, [r["checkpoint"] for r in rows], rotation=30, ha="right", fontsize=8)
    twin = ax.twinx()
    twin.plot(x, [r["mean_tokens"] if r["mean_tokens"] is not None else float("nan") for r in rows], "s--", color="C1")
    twin.set_ylabel("mean tokens", color="C1")
    ax.set_title("Score and length per checkpoint")
    fig.tight_layout()
    return png(fig)


def write_epochs(store: Any, rows: list[dict[str, Any]], points: list[dict[str, Any]]) -> dict[str, Any]:
    """report/epochs.md, epochs.json and epochs.png in the eval directory; returns the table with its Markdown."""
    table = epoch_table(rows, points)
    text = epoch_markdown(table)
    store.write_bytes("report/epochs.md", (f"# per checkpoint ({len(points)})\n\n{text}\n").encode())
    store.write_bytes("report/epochs.json", json.dumps(table, indent=2).encode())
    store.write_bytes("report/epochs.png", epoch_png(table))
    return {**table, "markdown": text}
