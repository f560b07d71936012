"""The whole run config: every section, output_dir, ray.*, store.*, report.*."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any, Dict, Optional

from factory.config.base import ConfigError, help_, ranges, validate
from factory.config.cost import CostConfig
from factory.config.eval import EvalConfig
from factory.config.export import ExportConfig
from factory.config.judges import JUDGE_NAME, JudgeConfig, RewardModelConfig, SamplerConfig
from factory.config.kinds import JUDGE_KINDS, NOT_JUDGES
from factory.config.pairs import PairsConfig, SweepConfig
from factory.config.prompts import PromptsConfig
from factory.config.verifiers import VerifierConfig


@dataclass
class StoreConfig:
    flush_s: float = help_(
        "Finished rows are written at least this often (seconds), and as soon as a batch of them is in (0.25 s "
        "apart): a kill -9 loses at most these and the requests in flight.",
        5.0,
    )
    part_mb: float = help_("A run's small parts are merged into one Parquet file once they hold this many MiB.", 64.0)
    part_s: float = help_("... or once the oldest of them is this many seconds old (and at the end of the run).", 600.0)
    compact_mb: float = help_("`factory compact`: target size of each merged file, MiB of Arrow data.", 1024.0)

    def __post_init__(self) -> None:
        for name in ("flush_s", "part_mb", "part_s", "compact_mb"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"store.{name}: must be > 0, got {getattr(self, name)}")



@dataclass
class ReportConfig:
    max_page_bytes: int = help_(
        "report/index.html at most this many bytes: a larger page has its texts cut shorter, then fewer rows "
        "in its browsers, and says so at its top (the numbers and plots are never trimmed; every row stays in "
        "the Parquet tables).",
        20_000_000,
    )

    def __post_init__(self) -> None:
        self.check(self, "report.")

    @staticmethod
    def check(c: Any, p: str) -> None:
        ranges(c, p, {"max_page_bytes": ">= 1"})


@dataclass
class RayConfig:
    address: Optional[str] = help_("Ray cluster address; null = start or join a local one (RAY_ADDRESS wins).", None)
    num_cpus: Optional[int] = help_("CPUs for a locally started Ray (null = all).", None)
    placement_timeout_s: Optional[float] = help_(
        "How long a pool with work may have no replica that any node can host (a lost node, a cluster that is "
        "full) before the run gives up: it stores what finished and stops like on Ctrl-C (rerun to resume). "
        "null = wait for ever (an autoscaler may add nodes).",
        600.0,
    )

    def __post_init__(self) -> None:
        self.check(self, "ray.")

    @staticmethod
    def check(c: Any, p: str) -> None:
        ranges(c, p, {"num_cpus": ">= 1 or null", "placement_timeout_s": "> 0 or null"})


@dataclass
class RunConfig:
    output_dir: str = help_("Run directory: a local path or any fsspec URL (s3://, memory://).", "runs/demo")
    prompts: PromptsConfig = help_("Where the prompts are and how they are rendered.", factory=PromptsConfig)
    sampler: SamplerConfig = help_("Teacher sampling.", factory=SamplerConfig)
    judge: JudgeConfig = help_("Judge (generative reward model).", factory=JudgeConfig)
    judges: Dict[str, JudgeConfig] = field(
        default_factory=dict,
        metadata={
            "help": "More generative judges (an ensemble with `judge`): name -> the judge.* keys, e.g. "
            "judges.r1.engine.kind=openai. Each has its own cache (fingerprint) and stage judge_<name>; its "
            "quality is the scored column quality_<name> for pairs.judges and pairs.terms; fields: judges.<name>.*",
            "item": JudgeConfig,
            "item_key": ".<name>.",
        },
    )
    reward_models: Dict[str, RewardModelConfig] = field(
        default_factory=dict,
        metadata={
            "help": "Reward-model judges: name -> {engine, route, label, ...}, e.g. reward_models.rm.engine.kind=vllm. "
            "Each scores every usable sample once (cached per its fingerprint, table rewards/, stage reward_<name>); "
            "its raw score is the scored column reward_<name>; fields: reward_models.<name>.*",
            "item": RewardModelConfig,
            "item_key": ".<name>.",
        },
    )
    verifiers: Dict[str, VerifierConfig] = field(
        default_factory=dict,
        metadata={
            "help": "Judges that make no request (issue 16): name -> {rule, column, ...}, e.g. "
            "verifiers.ref.rule=reference verifiers.ref.column=reference_answer. Each scores every sample by rule "
            "against its prompt's columns, computed when the samples are read (nothing stored, nothing cached); its "
            "verdict is the scored column verify_<name> (0..1) for pairs.terms, pairs.judges and the report; "
            "fields: verifiers.<name>.*",
            "item": VerifierConfig,
            "item_key": ".<name>.",
        },
    )
    pairs: PairsConfig = help_("Pair building.", factory=PairsConfig)
    sweep: SweepConfig = help_("The w_len x drop_ratio grid of `factory sweep`.", factory=SweepConfig)
    ray: RayConfig = help_("Where the work runs.", factory=RayConfig)
    store: StoreConfig = help_("How rows are written to the run directory.", factory=StoreConfig)
    report: ReportConfig = help_("report/index.html, the run's page.", factory=ReportConfig)
    decode_tokens_per_s: float = help_("Decode speed for the RT (response time) estimate, tokens/s.", 62.5)
    progress_interval_s: float = help_("Seconds between progress lines.", 5.0)
    cost: CostConfig = help_(
        "Prices, throughput and an optional budget: `factory plan` and the spend shown while running.",
        factory=CostConfig,
    )
    eval: EvalConfig = help_("`factory eval`: candidate models judged on a held-out prompt set.", factory=EvalConfig)
    export: ExportConfig = help_(
        "The trainer-faithful export under the student's chat template (export/<name>/).", factory=ExportConfig
    )

    def __post_init__(self) -> None:
        self.check(self, "")

    @staticmethod
    def check(c: Any, p: str) -> None:
        ranges(c, p, {"decode_tokens_per_s": "> 0", "progress_interval_s": "> 0"})
        check_names(c, p)
        check_flag_readers(c, p)
        for kind in (k for k in JUDGE_KINDS if k.price):  # a price names a configured judge / reward model
            entries = getattr(c, kind.section)
            for name in getattr(c.cost, kind.price).keys():
                if name not in entries:
                    have = ", ".join(entries.keys()) or "none"
                    raise ConfigError(
                        f"{p}cost.{kind.price}.{name}: no {kind.section}.{name} is configured ({kind.section}: {have})"
                    )


def check_flag_readers(c: Any, p: str) -> None:
    """What reads the teacher's can-answer flag (a can_answer verifier, a flag_contradiction term) needs the
    teacher to be asked for it: without sampler.can_answer every flag is null (no verdict, no contradiction)."""
    if c.sampler.can_answer.enabled:
        return
    for name, entry in c.verifiers.items():
        if entry.rule == "can_answer":
            raise ConfigError(
                f"{p}verifiers.{name}.rule: can_answer reads the teacher's flag; set {p}sampler.can_answer.enabled=true"
            )
    for i, term in enumerate(c.pairs.terms):
        if term.source == "flag_contradiction":
            raise ConfigError(
                f"{p}pairs.terms[{i}].source: flag_contradiction reads the teacher's flag; set "
                f"{p}sampler.can_answer.enabled=true"
            )


def check_names(c: Any, p: str) -> None:
    """Names of every judge kind's entries (judges, reward_models, verifiers: they become stage and column
    names), and every entry's keys."""
    items = {f.name: f.metadata.get("item") for f in fields(RunConfig)}
    for kind in JUDGE_KINDS:
        mapping = kind.section
        for name in getattr(c, mapping).keys():
            if not re.fullmatch(JUDGE_NAME, str(name)):
                raise ConfigError(
                    f"{p}{mapping}.{name}: a name is letters, digits and _ (it names {kind.column}<name>)"
                )
            if kind.column_of(str(name)) in NOT_JUDGES:
                raise ConfigError(
                    f"{p}{mapping}.{name}: {kind.column_of(str(name))} is the primary judge's vote spread; rename it"
                )
            validate(getattr(c, mapping)[name], items[mapping], f"{p}{mapping}.{name}.")
