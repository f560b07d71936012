"""cost.*: prices, throughput and the budget (`factory plan`, the spend shown while running)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from factory.config.base import help_, ranges, validate
from factory.config.kinds import JUDGE_KINDS


@dataclass
class StageCostConfig:
    input_usd_per_m: float = help_("USD per 1M prompt (input) tokens; 0 = not priced.", 0.0)
    output_usd_per_m: float = help_("USD per 1M completion (output) tokens, reasoning included; 0 = not priced.", 0.0)
    cached_input_per_m: Optional[float] = help_(
        "USD per 1M prompt tokens served from the server's prefix cache (the cached tokens its usage reports: "
        "usage.prompt_tokens_details.cached_tokens, DeepSeek's prompt_cache_hit_tokens); null = input_usd_per_m "
        "(no discount).",
        None,
    )
    batch_discount: float = help_(
        "Share taken off every price (input, cached input, output) for a request sent by batch (its engine has "
        "engine.batch: true); 0.5 = "
        "the batch rate of OpenAI and most providers. Spend, the budget and `factory plan` use it.",
        0.5,
    )
    tokens_per_s: Optional[float] = help_(
        "Completion tokens per second one replica decodes (all its concurrent sequences together), for "
        "GPU-hours and wall time in `factory plan`; null = as observed in the run's metrics.json.",
        None,
    )

    def __post_init__(self) -> None:
        self.check(self, "cost.")

    @staticmethod
    def check(c: Any, p: str) -> None:
        ranges(
            c,
            p,
            {
                "input_usd_per_m": ">= 0",
                "output_usd_per_m": ">= 0",
                "cached_input_per_m": ">= 0 or null",
                "batch_discount": "in [0, 1]",
                "tokens_per_s": "> 0 or null",
            },
        )


@dataclass
class CostConfig:
    sampler: StageCostConfig = help_("Prices and throughput of the sampler engine.", factory=StageCostConfig)
    judge: StageCostConfig = help_("Prices and throughput of the judge engine.", factory=StageCostConfig)
    max_usd: Optional[float] = help_(
        "Budget of one invocation (`factory run` or `factory eval`), USD at the prices above: once what the "
        "stored rows cost reaches it, no new request is sent, every finished row is stored and the command "
        "exits 5 (rerun to go on). Requests already in flight finish, so it can be passed by at most those.",
        None,
    )
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

    def __post_init__(self) -> None:
        self.check(self, "cost.")

    @staticmethod
    def check(c: Any, p: str) -> None:
        ranges(c, p, {"max_usd": "> 0 or null"})
        for mapping in (k.price for k in JUDGE_KINDS if k.price):  # per judge and reward model prices
            for name in getattr(c, mapping, {}).keys():
                validate(getattr(c, mapping)[name], StageCostConfig, f"{p}{mapping}.{name}.")
