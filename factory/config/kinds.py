"""The judge kinds' vocabulary: each kind (GenRM, reward model, verifier) declares once its config section,
its stage, column, dims and price names, its table, its scale and the term sources of its columns. The config's
column checks, the pair kernel's, the report's, the prices and the run graph's nodes (factory/graph.py) all
derive from these entries instead of writing the names again.

    GENRM.column_of("b") -> "quality_b"     GENRM.stage_of("b") -> "judge_b"    GENRM.key_of("b") -> "judges.b"
    GENRM.price_key("b") -> "cost.judges.b"  GENRM.dims_of("b") -> "dim_b_"
    GENRM.column_of(None) -> "quality"       (the primary entry, `judge`: stage judge, key judge, price cost.judge)
    judge_kind("reward_rm") -> REWARD_MODEL  is_judge_column("dim_b_style") -> True

JUDGE_KINDS lists them in graph order. A new judge kind: its entry here, its config section (a module of
factory/config/ and its RunConfig field; a CostConfig field if it is priced), its node in factory/graph.py and
its stage in factory/stages/.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional

NO_JUDGMENT = "no_judgment"
MISSING_DIMENSION = "missing_dimension"  # a dim_* term's column is null on a judged sample
# Scored columns that look like a judge's but are not one: the spread of the primary judge's votes.
NOT_JUDGES = ("quality_spread",)


@dataclass(frozen=True)
class SourceSpec:
    """A term source's name pattern and defaults. `scale`: the divisor of norm `scale` ("one": 1,
    "judge": judge.scale_max, None: norm scale is not allowed); `missing`: the exclusion reason of a
    sample without a value; `free`: known without any request (the rules, and verifiers): as a filter it
    applies before judging; `judged`: read from the judge's reply though not a score column (tags): as a
    filter it applies after judging. factory/pairs/terms.py gives each one its polars measurement."""

    pattern: str
    direction: str
    norm: str
    scale: Optional[str] = None
    missing: Optional[str] = None
    free: bool = False
    judged: bool = False


@dataclass(frozen=True)
class JudgeKind:
    """One judge kind. Entry <name> of `cfg.<section>` is key `<section>.<name>`, stage `<stage><name>`
    (its fingerprint and manifest entry), scored column `<column><name>`, dims `<dims><name>_<d>`, priced
    by `cost.<price>.<name>`. `primary`: the key of an entry outside the mapping (GenRM's `judge`: stage judge,
    column quality, dims dim_, price cost.judge). `sources`: term source name -> spec, the kind's column
    first, then its dims'. `scale`: "judge" (0..1, from the judge's scale_max), "unit" (0..1) or "raw"
    (unbounded: the report shows no scale). `audited`: the report's judge audit covers its columns."""

    name: str
    section: str
    stage: str
    column: str
    sources: dict[str, SourceSpec]
    table: str = ""
    price: str = ""
    primary: str = ""
    dims: str = ""
    scale: str = "unit"
    audited: bool = True

    def stage_of(self, name: str | None) -> str:
        return self.primary if name is None else f"{self.stage}{name}"

    def key_of(self, name: str | None) -> str:
        return self.primary if name is None else f"{self.section}.{name}"

    def column_of(self, name: str | None) -> str:
        return self.column.rstrip("_") if name is None else f"{self.column}{name}"

    def dims_of(self, name: str | None) -> str:
        return self.dims if name is None else f"{self.dims}{name}_"

    def price_key(self, name: str | None) -> str:
        """The config key of an entry's prices ('' for a kind that makes no request)."""
        if not self.price:
            return ""
        return f"cost.{self.primary}" if name is None else f"cost.{self.price}.{name}"

    def price_of(self, cost: Any, name: str | None) -> Any:
        """The StageCostConfig of an entry (None: no price set, or a kind that makes no request)."""
        if not self.price:
            return None
        return getattr(cost, self.primary) if name is None else getattr(cost, self.price).get(name)

    @property
    def source(self) -> str:
        """The term source of the kind's own column (quality, reward, verify)."""
        return next(iter(self.sources))

    def owns(self, column: str) -> str | None:
        """The source name of this kind's that `column` matches, else None."""
        return next((n for n, s in self.sources.items() if re.fullmatch(s.pattern, column)), None)

    def hint(self, column: str) -> str:
        """How to make `column`, for preflight's 'no configured judge makes the column ...'."""
        if self.owns(column) != self.source:
            return f"set {self.primary}.dimensions=true and list it in {self.primary}.dimension_names"
        if self.primary and column == self.column_of(None):
            return f"{self.primary}.enabled is false"
        return f"define {self.section}.<name>"


GENRM = JudgeKind(
    "genrm", "judges", "judge_", "quality_",
    {"quality": SourceSpec(r"quality(_\w+)?", "higher", "scale", "one", NO_JUDGMENT),
     "dim": SourceSpec(r"dim_\w+", "higher", "scale", "judge", MISSING_DIMENSION)},
    table="judgments", price="judges", primary="judge", dims="dim_", scale="judge",
)  # fmt: skip
REWARD_MODEL = JudgeKind(
    "reward_model", "reward_models", "reward_", "reward_",
    {"reward": SourceSpec(r"reward_\w+", "higher", "group_minmax", None, NO_JUDGMENT)},
    table="rewards", price="reward_models", scale="raw",
)  # fmt: skip
VERIFIER = JudgeKind(  # no request: no table, no price; computed from the samples and prompts when read
    "verifier", "verifiers", "verify_", "verify_",
    {"verify": SourceSpec(r"verify_\w+", "higher", "scale", "one", NO_JUDGMENT, free=True)},
    audited=False,
)  # fmt: skip
JUDGE_KINDS: list[JudgeKind] = [GENRM, REWARD_MODEL, VERIFIER]


def judge_kind(column: str) -> JudgeKind | None:
    """The kind whose columns `column` is one of (quality_b -> GENRM, dim_style -> GENRM), else None."""
    if column in NOT_JUDGES:
        return None
    return next((k for k in JUDGE_KINDS if k.owns(column)), None)


def is_judge_column(column: str) -> bool:
    """A column some judge makes (quality[_<judge>], dim_<name>, reward_<name>, verify_<name>), not a rule's
    or the sample's."""
    return judge_kind(column) is not None


def is_judge_score(column: str) -> bool:
    """A judge's own score column (not a dimension): what pairs.judges may name."""
    kind = judge_kind(column)
    return kind is not None and kind.owns(column) == kind.source


def judge_column_names(dims: bool = False) -> list[str]:
    """The judge columns' names for messages: quality, quality_<judge>, reward_<name>, verify_<name> (and
    dim_<name> after the kind that makes dims)."""
    names: list[str] = []
    for kind in JUDGE_KINDS:
        names += [kind.column_of(None)] if kind.primary else []
        names.append(f"{kind.column}<{'judge' if kind.primary else 'name'}>")
        names += [f"{kind.dims}<name>"] if dims and kind.dims else []
    return names


def primary_columns() -> set[str]:
    return {k.column_of(None) for k in JUDGE_KINDS if k.primary}


def score_columns(names: list[str]) -> list[str]:
    """The judge columns among `names` but the primary judge's quality (the report's score columns table
    and the page's extra columns), in their order."""
    primaries = primary_columns()
    return [c for c in names if is_judge_column(c) and c not in primaries]


def audited_columns(names: list[str]) -> list[str]:
    """The own score columns of the audited kinds (GenRMs, reward models) among `names`: the primary judge
    first, then kind by kind, by name."""
    order = {k.name: i for i, k in enumerate(JUDGE_KINDS)}
    primaries = primary_columns()
    found = [(c, judge_kind(c)) for c in names if is_judge_score(c)]
    picked = [(c, k) for c, k in found if k is not None and k.audited]
    return [c for c, k in sorted(picked, key=lambda ck: (ck[0] not in primaries, order[ck[1].name], ck[0]))]


def judge_scales(cfg: Any) -> dict[str, float]:
    """Every column on a judge's scale (a GenRM's quality, quality_<name>) -> that judge's scale_max."""
    out: dict[str, float] = {}
    for kind in (k for k in JUDGE_KINDS if k.scale == "judge"):
        if kind.primary:
            out[kind.column_of(None)] = getattr(cfg, kind.primary).scale_max
        out |= {kind.column_of(n): entry.scale_max for n, entry in getattr(cfg, kind.section).items()}
    return out
