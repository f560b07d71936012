"""load(): defaults <- YAML <- key=value overrides, every key checked; to_dict(); help_table() for `factory keys`.

`load("conf/demo.yaml", ["sampler.k=8"])` merges the YAML and the `key=value` overrides onto the
defaults, checks every key against the schema (an unknown key names the closest valid one), and
returns a validated `RunConfig`. Relative file paths written in a YAML file are resolved against that
file's folder, so `conf/demo.yaml` works from any working directory.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import MISSING, fields, is_dataclass
from pathlib import Path
from typing import Any, Iterator

from omegaconf import OmegaConf

from factory.config.base import ConfigError, validate
from factory.config.cost import StageCostConfig
from factory.config.eval import CandidateConfig
from factory.config.judges import JudgeConfig, RewardModelConfig
from factory.config.verifiers import VerifierConfig
from factory.config.run import RunConfig

# Keys that hold file paths: a relative path written in a YAML file is taken relative to that file.
_PATH_KEYS = (
    "prompts.path",
    "prompts.system_prompt_file",
    "prompts.user_template_file",
    "judge.rubric_file",
    "eval.prompts",
    "export.template",
)


def _valid_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    for f in fields(cls):
        key = prefix + f.name
        keys.append(key)
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        if is_dataclass(default):
            keys.extend(_valid_keys(type(default), key + "."))
    return keys


# Keys whose value is a mapping of free names (not checked against the schema).
FREE_MAPPINGS = ("engine_kwargs", "prompts.roles", "eval.sets", "prompts.speakers")


def _flatten(tree: Any, prefix: str = "") -> list[str]:
    if not isinstance(tree, dict):
        return [prefix.rstrip(".")]
    out = []
    for key, value in tree.items():
        if isinstance(value, dict) and value and not (prefix + key).endswith(FREE_MAPPINGS):
            out.extend(_flatten(value, f"{prefix}{key}."))
        else:
            out.append(f"{prefix}{key}")
    return out


def check_keys(keys: list[str], where: str) -> None:
    """Raise ConfigError for the first key that is not in the schema, naming the closest valid key."""
    valid = _valid_keys(RunConfig)
    for key in keys:
        if key in valid or any(key.startswith(v + ".") for v in valid if v.endswith(FREE_MAPPINGS)):
            continue
        mapped = _mapping_keys(key)  # judges.NAME.rest, eval.candidates.NAME.rest: rest checked against the item's keys
        if mapped is not None:
            if key in mapped or any(key.startswith(v + ".") for v in mapped if v.endswith(FREE_MAPPINGS)):
                continue
            valid = mapped
        close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown config key {key!r} in {where}{hint}")


# Mappings of dataclasses: key prefix -> the type of each entry (checked by check_keys).
_MAPPINGS: dict[str, type] = {
    "cost.judges": StageCostConfig,
    "cost.reward_models": StageCostConfig,
    "judges": JudgeConfig,
    "reward_models": RewardModelConfig,
    "verifiers": VerifierConfig,
    "eval.candidates": CandidateConfig,
}


def _mapping_keys(key: str) -> list[str] | None:
    """The valid keys of the mapping entry `key` falls in (judges.NAME.*, eval.candidates.NAME.*), or None."""
    for prefix, item in _MAPPINGS.items():
        if key.startswith(prefix + "."):
            name = key[len(prefix) + 1 :].split(".", 1)[0]
            entry = f"{prefix}.{name}"
            return [entry, *_valid_keys(item, entry + ".")]
    return None


def _is_url(path: str) -> bool:
    return "://" in path


# Keys that name where a run writes: not resolved against the YAML file's folder (relative to the current one).
_OUTPUT_KEYS = ("output_dir", "eval.output_dir", "eval.teacher_run")
_ENV_VAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")  # $NAME; ${...} is OmegaConf's (${oc.env:NAME})


def _path_keys(data: dict) -> tuple[str, ...]:
    """Every key of `data` that holds a file path (judges.<name>.rubric_file and the like included)."""
    judges = data.get("judges")
    judge_names = list(judges) if isinstance(judges, dict) else []
    candidates = (data.get("eval") or {}).get("candidates") if isinstance(data.get("eval"), dict) else None
    names = list(candidates) if isinstance(candidates, dict) else []
    more = tuple(f"judges.{n}.rubric_file" for n in judge_names) + tuple(
        f"eval.candidates.{n}.answers_path" for n in names
    )
    return _PATH_KEYS + more


def _path_values(data: dict, keys: tuple[str, ...]) -> Iterator[tuple[str, dict, str]]:
    """(dotted key, its mapping, its last part) of each key of `keys` that holds a non-empty string in `data`."""
    for dotted in keys:
        node: Any = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(parts[-1]), str) and node[parts[-1]]:
            yield dotted, node, parts[-1]


def expand_path(key: str, value: str) -> str:
    """`value` with each `$NAME` replaced by that environment variable and a leading `~` by the home folder;
    a variable that is not set is a ConfigError naming `key` (never a folder literally named `$NAME`)."""

    def variable(match: re.Match) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ConfigError(
                f"{key}: {value!r} uses ${name}, which is not set in the environment; set it, or write the path out"
            )
        return os.environ[name]

    value = _ENV_VAR.sub(variable, value)
    return os.path.expanduser(value) if value.startswith("~") else value


def _engine_keys(node: Any, prefix: str = "") -> tuple[str, ...]:
    """`<...>.engine.model` and `.engine.tokenizer` at any depth (a GGUF file, a model or tokenizer folder)."""
    if not isinstance(node, dict):
        return ()
    found: tuple[str, ...] = ()
    for key, value in node.items():
        if key == "engine" and isinstance(value, dict):
            found += (f"{prefix}engine.model", f"{prefix}engine.tokenizer")
        elif isinstance(value, dict) and not str(key).endswith(FREE_MAPPINGS):
            found += _engine_keys(value, f"{prefix}{key}.")
    return found


def _expand_paths(data: dict) -> dict:
    """Expand `$NAME` and `~` in every path, output and model key of `data` (a YAML file's tree or one
    override's)."""
    for dotted, node, last in _path_values(data, _path_keys(data) + _OUTPUT_KEYS + _engine_keys(data)):
        node[last] = expand_path(dotted, node[last])
    return data


def _resolve_paths(data: dict, base: Path) -> None:
    for _, node, last in _path_values(data, _path_keys(data)):
        value = node[last]
        if not _is_url(value) and not os.path.isabs(value):
            node[last] = str((base / value).resolve())


# -- a value YAML cannot read is one error line naming its key (or file and line) --------------------
def _yaml_problem(exc: Exception) -> str:
    """'found unknown escape character (line 1, column 29)' from a YAML or OmegaConf grammar error."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if problem:
        return problem + (f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else "")
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def parse_override(item: str) -> Any:
    """One `key=value` as an OmegaConf layer; a value YAML cannot read is a ConfigError naming the key."""
    key, value = item.split("=", 1)
    try:
        return OmegaConf.from_dotlist([item])
    except Exception as exc:  # yaml.YAMLError, omegaconf's grammar errors
        hint = " (in YAML a double-quoted string reads backslashes as escapes: write '\\d+' in single quotes)"
        hint = hint if "escape" in _yaml_problem(exc) else ""
        raise ConfigError(f"{key.strip()}: cannot read the value {value!r}: {_yaml_problem(exc)}{hint}") from None


def override_layer(item: str) -> Any:
    """One `key=value` as an OmegaConf layer, with `$NAME` and `~` expanded in its paths as in a YAML file."""
    layer = OmegaConf.to_container(parse_override(item), resolve=False)
    return OmegaConf.create(_expand_paths(layer))  # type: ignore[arg-type]


def _load_yaml(path: Path) -> Any:
    try:
        return OmegaConf.load(path)
    except Exception as exc:  # yaml.YAMLError: a file YAML cannot read
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None


def load(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Defaults <- YAML file <- `key=value` overrides, checked and validated."""
    schema = OmegaConf.structured(RunConfig)
    layers = [schema]
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file not found: {path}")
        data = OmegaConf.to_container(_load_yaml(path), resolve=False) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the config must be a mapping of keys")
        check_keys(_flatten(data), str(path))
        _resolve_paths(_expand_paths(data), path.parent.resolve())
        layers.append(OmegaConf.create(data))
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key = item.split("=", 1)[0].strip().lstrip("+")
        check_keys([key], "the command line")
    layers.extend(override_layer(item.lstrip("+")) for item in overrides or [])  # one error line per bad value
    try:
        merged = OmegaConf.merge(*layers)
        validate(merged, RunConfig)  # before any object is built, so that errors name the full key
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except ConfigError:
        raise
    except Exception as exc:  # omegaconf type errors name the full key
        key = getattr(exc, "full_key", None) or ""
        msg = (getattr(exc, "msg", None) or str(exc)).strip().splitlines()[0]
        raise ConfigError(f"{key}: {msg}" if key else msg) from None


def to_dict(cfg: RunConfig) -> dict:
    """Plain dict of the config, as stored in the manifest (no secrets live in config: only env var names)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]


def help_table(cls: type = RunConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, help) for every key: `factory keys` prints it."""
    rows = []
    for f in fields(cls):
        key = prefix + f.name
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        if is_dataclass(default):
            rows.extend(help_table(type(default), key + "."))
        elif "item" in f.metadata:  # dataclasses in a list (pairs.terms[].x) or a mapping (judges.<name>.x)
            rows.append((key, repr(default), f.metadata.get("help", "")))
            rows.extend(help_table(f.metadata["item"], key + f.metadata.get("item_key", "[].")))
        else:
            rows.append((key, repr(default), f.metadata.get("help", "")))
    return rows
