"""Where a run may write: what is checked of the output directory before a run takes its lease.

    check_run_dir(store, "output_dir")     # ConfigError naming the key and the files, else nothing

A run replaces manifest.json, metrics.json, plan.json, report/index.html and the parts of prompts/,
invalid/, pairs/, sft/ and export/. It refuses a directory that holds such a file of another tool (a
manifest.json that is no factory run's, a report/index.html that is not a factory page, a Parquet file the
factory did not name), and a home folder or the file system's root as a whole. A folder the run writes
into may not be a symbolic link leading out of the run directory (its deletes and replaces would happen
in the link's target). Only local directories have links; an object store is checked for files alone.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from factory.rundir.store import RunStore, _is_local

# Tables whose parts a run replaces or removes (sft/ and export/ hold one folder per export).
REPLACED_TABLES = ("prompts", "invalid", "pairs")
REPLACED_TREES = ("sft", "export")
# The names the factory gives its parts (RunStore.append and merge; a merge in progress lists its hidden parts).
FACTORY_PART = re.compile(r"(part|_merged)-\d+-[0-9a-f]{8}(-\d{3})?\.parquet")
# A factory file is told by its keys (or a page by its title).
FACTORY_JSON = {
    "manifest.json": ("config", "fingerprints", "counts"),
    "metrics.json": ("stages",),
    "plan.json": ("command", "output_dir"),
}
PAGE = "report/index.html"
PAGE_TITLE = "<title>factory "


def check_run_dir(store: RunStore, key: str = "output_dir") -> None:
    """Refuse (ConfigError naming `key`) a directory the run would write where it should not: see the module doc."""
    from factory.config import ConfigError

    local = _is_local(store.fs)
    if local:
        root = Path(store.root).resolve()
        if root == Path.home().resolve() or root == Path(root.anchor):
            where = "your home folder" if root == Path.home().resolve() else "the file system's root"
            raise ConfigError(
                f"{key}: {store.url} is {where}; a run writes manifest.json, prompts/, samples/, pairs/, report/ ... "
                "into it and replaces them on every run: name a folder of its own (e.g. "
                f"{key}={store.url.rstrip('/')}/runs/NAME)"
            )
        _check_links(store, root, key)
    if _is_factory_json(store, "manifest.json"):
        return
    foreign = [name for name in FACTORY_JSON if store.exists(name) and not _is_factory_json(store, name)]
    if store.exists(PAGE) and not _is_factory_page(store):
        foreign.append(PAGE)
    foreign += _foreign_parts(store)
    if foreign:
        shown = ", ".join(foreign[:6]) + (f" and {len(foreign) - 6} more" if len(foreign) > 6 else "")
        raise ConfigError(
            f"{key}: {store.url} holds files a run would replace ({shown}) and no manifest of a factory run; "
            f"nothing was written. Choose a new or empty directory ({key}=...), or move those files away"
        )


def _is_factory_json(store: RunStore, name: str) -> bool:
    try:
        value = store.read_json(name)
    except (OSError, ValueError):
        return False
    return isinstance(value, dict) and all(k in value for k in FACTORY_JSON[name])


def _is_factory_page(store: RunStore) -> bool:
    try:
        with store.fs.open(store.path(PAGE), "rb") as handle:
            head = handle.read(4096).decode("utf-8", errors="replace")
    except OSError:
        return False
    return PAGE_TITLE in head


def _foreign_parts(store: RunStore) -> list[str]:
    """The Parquet files of the replaced tables that the factory did not name (another tool's data)."""
    folders = list(REPLACED_TABLES)
    for tree in REPLACED_TREES:
        folders.append(tree)
        folders += [f"{tree}/{name}" for name in _subfolders(store, tree)]
    found = []
    for folder in folders:
        for path in store.parts(folder):
            name = path.rstrip("/").rsplit("/", 1)[-1]
            if not FACTORY_PART.fullmatch(name):
                found.append(f"{folder}/{name}")
    return found


def _subfolders(store: RunStore, name: str) -> list[str]:
    try:
        entries: list[Any] = store.fs.ls(store.path(name), detail=True)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e.get("type") == "directory"]


def _check_links(store: RunStore, root: Path, key: str) -> None:
    """A symbolic link inside the run directory that leads out of it (or nowhere) is refused, naming it. One
    scandir per folder (a link is told from the entry's own type, no stat per part)."""
    from factory.config import ConfigError

    folders = [str(root)] if root.is_dir() else []
    while folders:
        with os.scandir(folders.pop()) as entries:
            for entry in entries:
                if not entry.is_symlink():
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(entry.path)
                    continue
                target = Path(entry.path).resolve()
                if entry.is_file() and target.exists():
                    continue  # a file link is replaced as a whole by the atomic write (rename), never written through
                if target == root or root in target.parents:
                    continue
                shown = Path(entry.path).relative_to(root).as_posix()
                raise ConfigError(
                    f"{key}: {store.url}/{shown} is a symbolic link to {os.readlink(entry.path)}, out of the run "
                    f"directory; a run would delete and replace files there. Replace the link with a folder (or "
                    f"point {key} at the link's target)"
                )
