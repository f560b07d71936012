"""manifest.json as a type (a contract: see the README): what every command records, read and rewritten
without losing the keys a newer version wrote.

    manifest = Manifest.of_config(cfg, fingerprints=..., counts=..., requests=..., output_dir=store.url)
    store.write_json("manifest.json", manifest.to_dict())
    Manifest.from_dict(store.read_json("manifest.json"))
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields
from importlib import metadata
from typing import Any

from factory.config import RunConfig
from factory.rundir.secrets import stored_config


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for package in ("factory", "ray", "polars", "pyarrow", "xllamacpp", "openai", "vllm", "omegaconf", "fsspec"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return out


@dataclass
class Manifest:
    """manifest.json (a contract: see the README). Built by the command, completed by Session.finish;
    `extra` keeps keys this version does not know (a newer run's) when a manifest is read and rewritten."""

    config: dict
    fingerprints: dict
    counts: dict
    requests: dict
    output_dir: str
    versions: dict = field(default_factory=versions)
    timings: dict = field(default_factory=dict)
    command: str | None = None  # "eval" for factory eval
    parse_status: dict | None = None
    judges: dict | None = None
    pairs: dict | None = None
    target: dict | None = None
    pools: Any = None
    spend: dict | None = None
    history: list | None = None
    pairs_build: dict | None = None
    totals: dict | None = None  # what the run directory has cost in all (factory/rundir/ledger.py)
    this_run: dict | None = None  # this invocation's share of it
    adaptive: dict | None = None  # sampler.adaptive: the rule and the groups by samples given and by state
    extra: dict = field(default_factory=dict)

    @classmethod
    def of_config(cls, cfg: RunConfig, **values: Any) -> Manifest:
        """A manifest whose `config` is `cfg` as stored (secrets masked, factory.rundir.secrets.stored_config)."""
        return cls(config=stored_config(cfg), **values)

    @classmethod
    def from_dict(cls, data: dict) -> Manifest:
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(
            **{k: v for k, v in data.items() if k in known}, extra={k: v for k, v in data.items() if k not in known}
        )

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"command": self.command} if self.command else {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name not in ("command", "extra") and value is not None:
                out[f.name] = value
        return out | self.extra
