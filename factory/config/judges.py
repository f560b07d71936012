"""sampler.*, judge.*, judges.<name>.*, reward_models.<name>.*: the teacher and every judge."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, List, Optional

from factory.config.base import ConfigError, help_, one_of, ranges
from factory.config.engine import EngineConfig, SamplingConfig
from factory.engines import ENGINES, kind_of

# A judge or reward model's name becomes a stage name and a scored column (quality_<name>, reward_<name>).
JUDGE_NAME = r"[A-Za-z0-9_]+"
JUDGE_MODES = ("pointwise", "group")


@dataclass
class AdaptiveConfig:
    enabled: bool = help_(
        "Adaptive K: draw sampler.adaptive.k_min samples per prompt first, judge them, and draw more (step at a "
        "time, up to sampler.k) only for the groups whose pair is still undecided (fewer than 2 valid samples, "
        "no candidate pair above the margin threshold, every sample tied, long2short: none under the cap).",
        False,
    )
    k_min: int = help_("Samples every prompt gets first.", 2)
    step: int = help_("Samples an undecided group gets at each further step.", 2)
    drop_ratio: Optional[float] = help_(
        "Stop rule: a group stops growing once its pair passes the margin threshold at this drop ratio (the "
        "quantile of the judged groups' candidate margins while the run draws); null = pairs.drop_ratio. Higher "
        "is stricter: fewer groups stop early, their pairs' gaps wider.",
        None,
    )
    min_margin: Optional[float] = help_(
        "Stop rule as a fixed margin instead of a quantile; null = pairs.min_margin (when set), else the quantile.",
        None,
    )
    give_up: Optional[float] = help_(
        "Off (null) by default. In (0, 1]: a group that has had at least k_min + step samples and whose best "
        "candidate pair is below give_up x the stop rule's threshold stops growing (given up: its samples are "
        "too alike to separate soon). Saves the samples of groups that keep no pair; not for long2short.",
        None,
    )
    replan_s: float = help_(
        "While the run draws, a group's next step is decided from what is stored at most this often (seconds; "
        "each decision reads the run's stored samples and judgments); the end of a run decides every group.",
        2.0,
    )

    @staticmethod
    def check(c: Any, p: str) -> None:
        ranges(c, p, {"k_min": ">= 1", "step": ">= 1", "min_margin": ">= 0 or null", "replan_s": ">= 0",
                      "give_up": "in (0, 1] or null"})  # fmt: skip
        if c.k_min < 2:
            raise ConfigError(f"{p}k_min: needs at least 2 samples per prompt to make a pair, got {c.k_min}")
        if c.drop_ratio is not None and not 0 <= c.drop_ratio < 1:
            raise ConfigError(f"{p}drop_ratio: must be in [0, 1) or null, got {c.drop_ratio!r}")


@dataclass
class CanAnswerConfig:
    enabled: bool = help_(
        "Ask the teacher for the source's output form (seed 000 section 2.2): a can-answer flag (can the product "
        "info answer the viewer's question?) and the reply. The flag is stored in samples.can_answer (null when "
        "the reply cannot be read in the form: counted as counts.can_answer_unparsed, its text kept as the answer), "
        "the answer holds the reply alone (factory/stages/flag.py). Part of the sampler fingerprint.",
        False,
    )
    structured: bool = help_(
        "JSON {can_answer, reply} under a JSON schema where the teacher's engine kind takes one; false (or an "
        "engine without JSON schema): the line format, a first line `can_answer: yes|no` (or 能回答: 是|否), then "
        "the reply.",
        True,
    )
    language: str = help_("en or zh: the language of the built-in instruction that asks for the form.", "en")
    instruction: str = help_(
        "The text appended to the prompt's last user message to ask for the form; '' = the built-in one of the "
        "form and language.",
        "",
    )

    @staticmethod
    def check(c: Any, p: str) -> None:
        one_of(c, p, "language", ("en", "zh"))


@dataclass
class SamplerConfig:
    k: int = help_("Samples per prompt (with sampler.adaptive: the most a prompt may get).", 4)
    engine: EngineConfig = help_("The teacher engine.", factory=EngineConfig)
    sampling: SamplingConfig = help_("Teacher sampling parameters.", factory=SamplingConfig)
    retry_failed: bool = help_("On a rerun, sample again the stored samples that failed (error set).", False)
    adaptive: AdaptiveConfig = help_(
        "Adaptive K (off by default): fewer samples for the prompts whose pair is decided early.",
        factory=AdaptiveConfig,
    )
    can_answer: CanAnswerConfig = help_(
        "The teacher's can-answer flag with its reply (off by default): samples.can_answer, the can_answer "
        "verifier, the flag_contradiction term and eval's agreement with the teacher.",
        factory=CanAnswerConfig,
    )

    def __post_init__(self) -> None:
        self.check(self, "sampler.")

    @staticmethod
    def check(c: Any, p: str) -> None:
        if c.k < 2:
            raise ConfigError(f"{p}k: needs at least 2 samples per prompt to make a pair, got {c.k}")
        if c.adaptive.enabled and c.adaptive.k_min > c.k:
            raise ConfigError(
                f"{p}adaptive.k_min: {c.adaptive.k_min} is more than {p}k={c.k}, the most a prompt may get"
            )


@dataclass
class JudgeConfig:
    engine: EngineConfig = help_("The judge engine (may differ from the sampler's).", factory=EngineConfig)
    sampling: SamplingConfig = help_(
        "Judge sampling parameters.", factory=lambda: SamplingConfig(temperature=0.2, top_p=1.0, max_tokens=256)
    )
    rubric_file: str = help_(
        "Rubric template with {product_info} {history} {question} {answer} {reasoning} {scale_max}; "
        "'' = conf/rubrics/default_en.txt (conf/rubrics/default_zh.txt is the Chinese one).",
        "",
    )
    scale_max: float = help_("Top of the score scale (scores lie in 0..scale_max).", 100.0)
    votes: int = help_("Judgments per sample (different seeds); quality is their mean, the spread is stored.", 1)
    max_reasks: int = help_("Re-asks of the judge when its output cannot be parsed or is out of range.", 2)
    include_reasoning: bool = help_("Show the judge the sample's reasoning too (default: answer only).", False)
    structured: bool = help_("Constrain the judge output with a JSON schema where the engine supports it.", True)
    dimensions: bool = help_(
        "Ask for a score per dimension (judge.dimension_names, on the judge's scale) in the JSON schema; each "
        "judgment stores them typed in judgments.dims, and the scored samples carry dim_<name> (pairs.terms "
        "sources; the report shows them). The overall score stays the quality.",
        False,
    )
    dimension_names: List[str] = help_(
        "The rubric's dimensions (names of letters, digits and _), asked for when judge.dimensions is true.",
        factory=lambda: ["question", "product_info", "self", "instruction"],
    )
    tags: bool = help_("Ask the judge for a list of tags too (stored in judgments.tags; counted in the report).", False)
    tag_values: List[str] = help_(
        "With judge.tags: the tags the judge may use (the JSON schema's choices; others are dropped); [] = free text.",
        factory=list,
    )
    retry_failed: bool = help_("On a rerun, judge again the stored judgments that failed with engine_error.", False)
    mode: str = help_(
        "pointwise: one request per sample (the rubric filled with its answer); group: one request per prompt "
        "showing its usable samples together as labelled answers A, B, ... in a seeded shuffled order, the judge "
        "scoring each (same scale, dimensions and tags). A group judgment is keyed by the samples it saw: a group "
        "that grows is judged again.",
        "pointwise",
    )
    orders: int = help_(
        "judge.mode group: 2 also asks each group in the reverse order (stored as vote 1; quality is the mean), so "
        "the pairs count the pairs whose chosen and rejected swap between the orders (pairs.exclude_order_flips).",
        1,
    )
    enabled: bool = help_(
        "false: this judge does not run (no stage, no request). For `judge`: the quality column stays empty, so "
        "pairs.judges must name other judges (a reward-model-only run).",
        True,
    )

    def __post_init__(self) -> None:
        self.check(self, "judge.")

    @staticmethod
    def check(c: Any, p: str) -> None:
        ranges(c, p, {"votes": ">= 1", "scale_max": "> 0", "max_reasks": ">= 0"})
        one_of(c, p, "mode", JUDGE_MODES)
        if c.orders not in (1, 2):
            raise ConfigError(f"{p}orders: 1 or 2 (the shuffled order, and its reverse), got {c.orders!r}")
        if c.orders == 2 and c.mode != "group":
            raise ConfigError(f"{p}orders: 2 asks a group in two orders; it needs {p}mode=group")
        if c.mode == "group" and c.votes != 1:
            raise ConfigError(
                f"{p}votes: {p}mode=group asks each group once per order; use {p}orders, not votes={c.votes}"
            )
        names = list(c.dimension_names)
        if c.dimensions and not names:
            raise ConfigError(f"{p}dimension_names: empty, but {p}dimensions is true")
        for name in names:
            if not re.fullmatch(JUDGE_NAME, str(name)):
                raise ConfigError(f"{p}dimension_names: {name!r} is not letters, digits and _ (it names dim_<name>)")
        if len(set(names)) != len(names):
            raise ConfigError(f"{p}dimension_names: {names} names a dimension twice")
        # Local engines are deterministic per seed at temperature 0: every vote would be the same.
        if (
            c.votes > 1
            and c.sampling.temperature == 0
            and c.engine.kind in ENGINES
            and kind_of(c.engine.kind).same_votes_at_zero
        ):
            raise ConfigError(
                f"{p}votes: {c.votes} votes at {p}sampling.temperature 0 would all be identical; "
                "raise the temperature or use votes=1"
            )


SCORE_ROUTES = ("classify", "pooling", "score")


@dataclass
class RewardModelConfig:
    """One entry of `reward_models`: a sequence-classification reward model scoring (prompt, answer)."""

    engine: EngineConfig = help_(
        "The reward model's engine: vllm (in process, vLLM's pooling runner; engine.model a *ForSequenceClassification "
        "checkpoint) or openai (a vLLM server's scoring routes at engine.base_url).",
        factory=EngineConfig,
    )
    route: str = help_(
        "classify: the prompt's messages + the answer as one conversation through the model's chat template, the "
        "head's output `label` (in process, or a server's /classify); pooling: the same through a server's /pooling; "
        "score: a server's /score with the prompt's text against the answer (cross-encoders).",
        "classify",
    )
    label: int = help_("Which output of the classification head is the score (0 for a one-logit reward model).", 0)
    activation: bool = help_(
        "false: the raw logit, the reward model's score (stored raw; pairs normalize it); true: sigmoid (one "
        "label) or softmax.",
        False,
    )
    include_reasoning: bool = help_("Show the model the sample's reasoning too (in <think> tags).", False)
    retry_failed: bool = help_("On a rerun, score again the stored rewards that failed.", False)

    @staticmethod
    def check(c: Any, p: str) -> None:
        one_of(c, p, "route", SCORE_ROUTES)
        ranges(c, p, {"label": ">= 0"})
