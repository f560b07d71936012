"""Typed run configuration: a module per section, each dataclass with help text and its own `check`,
wrapped by OmegaConf structured configs.

    cfg = load("conf/demo.yaml", ["sampler.k=8"])     # defaults <- YAML <- overrides, every key checked

    base.py      ConfigError, the field helper, range rules, validate (walks the tree, full key names)
    engine.py    engine.* and *.sampling           prompts.py   prompts.*
    judges.py    sampler.*, judge.*, judges.<name>.*, reward_models.<name>.*
    verifiers.py verifiers.<name>.* (judges that make no request)
    pairs.py     pairs.*, sweep.*, the score terms' vocabulary and checks
    cost.py      cost.*                            eval.py      eval.*
    run.py       RunConfig (every section), ray.*, store.*, report.*
    load.py      load, check_keys, to_dict, help_table
"""

from factory.config.base import ConfigError, validate
from factory.config.cost import CostConfig, StageCostConfig
from factory.config.engine import ENGINE_KINDS, EngineConfig, SamplingConfig
from factory.config.export import ExportConfig
from factory.config.eval import CANDIDATE_NAME, CandidateConfig, EvalConfig
from factory.config.judges import (
    JUDGE_NAME,
    SCORE_ROUTES,
    AdaptiveConfig,
    JudgeConfig,
    RewardModelConfig,
    SamplerConfig,
)
from factory.config.load import check_keys, help_table, load, to_dict
from factory.config.pairs import (
    COMBINE_MODES,
    BalanceConfig,
    DEDUPE_MODES,
    PAIR_STRATEGIES,
    PAIRINGS,
    PairsConfig,
    SweepConfig,
    TermConfig,
)
from factory.config.prompts import PromptsConfig
from factory.config.run import RayConfig, ReportConfig, RunConfig, StoreConfig
from factory.config.verifiers import VERIFIER_RULES, VerifierConfig

__all__ = [
    "BalanceConfig",
    "CANDIDATE_NAME",
    "COMBINE_MODES",
    "DEDUPE_MODES",
    "ENGINE_KINDS",
    "JUDGE_NAME",
    "PAIRINGS",
    "PAIR_STRATEGIES",
    "SCORE_ROUTES",
    "CandidateConfig",
    "ConfigError",
    "CostConfig",
    "EngineConfig",
    "EvalConfig",
    "ExportConfig",
    "JudgeConfig",
    "AdaptiveConfig",
    "PairsConfig",
    "PromptsConfig",
    "RayConfig",
    "ReportConfig",
    "RewardModelConfig",
    "RunConfig",
    "VERIFIER_RULES",
    "VerifierConfig",
    "SamplerConfig",
    "SamplingConfig",
    "StageCostConfig",
    "StoreConfig",
    "SweepConfig",
    "TermConfig",
    "check_keys",
    "help_table",
    "load",
    "to_dict",
    "validate",
]
