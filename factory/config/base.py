"""What every config section shares: the error, the field helper and the range rules.

Each check takes the node to check (a config object, or the merged OmegaConf tree before it becomes
one) and the node's dotted prefix. A nested config does not know where it sits (sampler.sampling or
judge.sampling), so `validate` walks the whole tree from the root with full prefixes before any object
is built; __post_init__ runs the same check with the node's short name for configs built in code.
A section's check is its class's static `check(node, prefix)`.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, field, fields, is_dataclass
from typing import Any


class ConfigError(ValueError):
    """A bad configuration: the message names the offending key."""


def help_(text: str, default: Any = None, factory: Any = None) -> Any:
    if factory is not None:
        return field(default_factory=factory, metadata={"help": text})
    return field(default=default, metadata={"help": text})


RULES = {
    ">= 0": lambda v: v >= 0,
    "> 0": lambda v: v > 0,
    ">= 1": lambda v: v >= 1,
    "in (0, 1]": lambda v: 0 < v <= 1,
    "in [0, 1]": lambda v: 0 <= v <= 1,
}


def ranges(node: Any, prefix: str, rules: dict[str, str]) -> None:
    """`rules`: key -> one of RULES, with " or null" when the key may be null. Numbers must be finite."""
    for name, rule in rules.items():
        value = getattr(node, name)
        nullable = rule.endswith(" or null")
        if value is None and nullable:
            continue
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not (number and RULES[rule.removesuffix(" or null")](value)):
            raise ConfigError(f"{prefix}{name}: must be {rule}, got {value!r}")


def one_of(node: Any, prefix: str, name: str, choices: tuple[str, ...]) -> None:
    if getattr(node, name) not in choices:
        raise ConfigError(f"{prefix}{name}: {getattr(node, name)!r} is not one of {', '.join(choices)}")



def validate(node: Any, cls: type, prefix: str = "") -> None:
    """Check every key under `node` (a config object, or the merged OmegaConf tree), innermost first, each
    error naming the full dotted key: `sampler.sampling.temperature: must be >= 0, got -1`.
    PairsConfig and SweepConfig check themselves (their keys sit at the top, so they know their names)."""
    for f in fields(cls):
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        if is_dataclass(default):
            validate(getattr(node, f.name), type(default), f"{prefix}{f.name}.")
    check = getattr(cls, "check", None)
    if check is not None:
        check(node, prefix)
