"""eval.*: `factory eval`, candidate models judged on a held-out prompt set."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from factory.config.base import ConfigError, help_, ranges, validate
from factory.config.cost import StageCostConfig
from factory.config.engine import EngineConfig, SamplingConfig
from factory.referral import REFERRAL_PATTERNS


@dataclass
class CandidateConfig:
    engine: EngineConfig = help_("The candidate's engine (any kind), as sampler.engine.", factory=EngineConfig)
    sampling: SamplingConfig = help_("The candidate's sampling parameters.", factory=SamplingConfig)
    answers_path: str = help_(
        "Instead of an engine: a Parquet/JSONL file of answers the model already produced (columns prompt_id "
        "or the prompts' id column, answer or text, optional reasoning, sample_idx, completion_tokens, "
        "reasoning_tokens, answer_tokens, finish_reason). No request is made for it; only judged.",
        "",
    )
    cost: StageCostConfig = help_("Prices and throughput of this candidate's engine.", factory=StageCostConfig)
    decode_tokens_per_s: Optional[float] = help_(
        "This candidate's decode speed for its RT (e.g. the same model in bf16 and in int8); "
        "null = decode_tokens_per_s.",
        None,
    )


# Candidate names become stage names and file names.
CANDIDATE_NAME = r"[A-Za-z0-9][A-Za-z0-9_.+-]*"


@dataclass
class EvalConfig:
    output_dir: str = help_("Eval directory (its own samples/, judgments/, report/); '' = OUTPUT_DIR/eval.", "")
    prompts: str = help_(
        "Held-out prompts file or folder (same format and prompts.* rendering as the run's prompts).", ""
    )
    limit: Optional[int] = help_("Use only the first N held-out prompts.", None)
    sets: Dict[str, str] = help_(
        "Several held-out sets in one eval: name -> prompts file, e.g. {val: val.jsonl, traffic: later.jsonl} "
        "(instead of eval.prompts; eval.limit applies to each). Each set gets its table, overall and "
        "multi-turn (the prompts with a history); a prompt id in two sets is refused.",
        factory=dict,
    )
    k: int = help_("Samples per prompt and candidate; a prompt's score is the mean of its K.", 1)
    candidates: Dict[str, CandidateConfig] = field(
        default_factory=dict,
        metadata={
            "help": "Models to compare: name -> {engine, sampling, cost} or {answers_path}, e.g. "
            "eval.candidates.short.sampling.max_tokens=128; fields: eval.candidates.<name>.*",
            "item": CandidateConfig,
            "item_key": ".<name>.",
        },
    )
    baseline: str = help_("The candidate the others are compared with; '' = the first one.", "")
    bootstrap: int = help_("Bootstrap resamples (paired by prompt) of the score difference's 95% interval.", 2000)
    seed: int = help_("Seed of the bootstrap.", 0)
    answerable_column: str = help_(
        "Prompt column (true/false) saying whether the product info can answer the question; '' = none.",
        "answerable",
    )
    referral_patterns: List[str] = help_(
        "Regexes (case-insensitive) that mark a reply as referring the viewer to customer service; the rule "
        "behind the answerable agreement.",
        factory=lambda: list(REFERRAL_PATTERNS),
    )
    teacher_run: str = help_(
        "The run directory whose samples hold the teacher's can-answer flags (sampler.can_answer) for the held-out "
        "prompts: each candidate's refusal agreement with them (a prompt's flag: the majority of its samples' "
        "flags under that run's sampler fingerprint, for the same prompt text; a tie gives none); '' = output_dir "
        "(the run of this config). Prompts without a flag are left out of that column.",
        "",
    )
    empty_answer_score: Optional[float] = help_(
        "Score of a reply with an empty answer (not sent to the judge, e.g. cut inside <think>); "
        "null = left out of the mean like a judge failure.",
        0.0,
    )
    retry_failed: bool = help_("On a rerun, sample again the candidates' samples that failed.", False)

    def __post_init__(self) -> None:
        self.check(self, "eval.")

    @staticmethod
    def check(c: Any, p: str) -> None:
        ranges(c, p, {"limit": ">= 1 or null", "k": ">= 1", "bootstrap": ">= 1", "empty_answer_score": ">= 0 or null"})
        names = list(c.candidates.keys())
        for name in names:
            if not re.fullmatch(CANDIDATE_NAME, str(name)):
                raise ConfigError(f"{p}candidates.{name}: a candidate name is letters, digits and _ . + - only")
            validate(c.candidates[name], CandidateConfig, f"{p}candidates.{name}.")
            speed = c.candidates[name].decode_tokens_per_s
            if speed is not None and not speed > 0:
                raise ConfigError(f"{p}candidates.{name}.decode_tokens_per_s: must be > 0 or null, got {speed}")
        if c.sets and c.prompts:
            raise ConfigError(f"{p}sets: give eval.sets or eval.prompts, not both")
        for name, path in c.sets.items():
            if not re.fullmatch(CANDIDATE_NAME, str(name)) or not isinstance(path, str) or not path:
                raise ConfigError(f"{p}sets.{name}: a set is name (letters, digits, _ . + -) -> a prompts file path")
        if c.baseline and c.baseline not in names:
            raise ConfigError(
                f"{p}baseline: {c.baseline!r} is not a candidate; candidates: {', '.join(names) or 'none'}"
            )
        for i, pattern in enumerate(c.referral_patterns):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"{p}referral_patterns[{i}]: not a valid regex ({exc})") from None
