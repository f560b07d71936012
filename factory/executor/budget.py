"""What requests cost: prices per stage, the spend of a running command and its optional budget.

    budget = Budget(graph.prices(), max_usd=cfg.cost.max_usd, keys=graph.price_keys())  # factory/graph.py
    Executor(store, cfg, budget=budget)        # charges each stored row: stage.tokens(row) at its prices
    budget.exceeded()                           # True once the charged dollars reach max_usd
    budget.as_dict()                            # metrics.json / manifest "spend"

Dollars are what the stored rows say they used (prompt and completion tokens, reasoning included, re-asks
summed), at `input_usd_per_m` / `output_usd_per_m` per million tokens; the prompt tokens the server's prefix
cache served (the row's `cached_tokens`) at `cached_input_per_m` (null: the input price). A request that
failed for good stores no token count and is charged nothing (APIs do not bill errors). A stage whose engine
sends by batch (`engine.batch: true`) is priced at the batch rate: `batch_discount` off both prices (`at_rate`).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from factory.config import ConfigError, StageCostConfig

BUDGET_EXIT = 5  # the exit status of a command stopped by cost.max_usd (3: lease held, 4: fatal, 130: signal)


def usd(prompt_tokens: float, completion_tokens: float, price: StageCostConfig, cached_tokens: float = 0) -> float:
    """Dollars of these tokens; `cached_tokens` (a part of `prompt_tokens`) at the cached input price."""
    cached = min(max(cached_tokens, 0), prompt_tokens)
    cached_price = price.input_usd_per_m if price.cached_input_per_m is None else price.cached_input_per_m
    missed = (prompt_tokens - cached) * price.input_usd_per_m
    return (missed + cached * cached_price + completion_tokens * price.output_usd_per_m) / 1e6


def priced(price: StageCostConfig) -> bool:
    return bool(price.input_usd_per_m or price.output_usd_per_m or price.cached_input_per_m)


def tokens_text(n: float) -> str:
    """12 -> '12', 12345 -> '12.3k', 4.2e6 -> '4.20M'."""
    if n >= 1e9:
        return f"{n / 1e9:.2f}G"
    if n >= 1e6:
        return f"{n / 1e6:.2f}M"
    if n >= 1e4:
        return f"{n / 1e3:.1f}k"
    return f"{n:.0f}"


def usd_text(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value >= 100:
        return f"${value:,.0f}"
    return f"${value:.2f}" if value >= 1 else f"${value:.4f}"


def _nothing() -> dict[str, float]:
    return {"prompt_tokens": 0, "cached_tokens": 0, "completion_tokens": 0, "usd": 0.0}


class Budget:
    """Tokens and dollars charged per stage as rows are stored; `exceeded()` once `max_usd` is reached.

    The executor calls `charge` for every row it stores and `exceeded` before it dispatches; stages with
    no price entry are charged tokens only."""

    def __init__(
        self, prices: dict[str, StageCostConfig], max_usd: float | None = None, keys: dict[str, str] | None = None
    ):
        """`prices`: stage -> its prices; `keys`: stage -> the config key of its prices (named in warnings)."""
        if max_usd is not None and not any(priced(p) for p in prices.values()):
            raise ConfigError(
                f"cost.max_usd: {max_usd:g} is set but no stage has a price (cost.sampler.*_usd_per_m, "
                "cost.judge.*_usd_per_m, cost.judges.<name>.*, cost.reward_models.<name>.*, "
                "eval.candidates.<name>.cost.*), so the budget could never be reached"
            )
        self.prices = prices
        self.keys = keys or {}
        self.max_usd = max_usd
        self.stages: dict[str, dict[str, float]] = {}

    def key(self, stage: str) -> str:
        """The config key that prices `stage` (cost.sampler, cost.judges.b, eval.candidates.x.cost, ...)."""
        return self.keys.get(stage, f"cost.{stage}")

    def charge(self, stage: str, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> None:
        spent = self.stages.setdefault(stage, _nothing())
        spent["prompt_tokens"] += prompt_tokens
        spent["cached_tokens"] += cached_tokens
        spent["completion_tokens"] += completion_tokens
        price = self.prices.get(stage)
        if price is not None:
            spent["usd"] += usd(prompt_tokens, completion_tokens, price, cached_tokens)

    @property
    def usd(self) -> float:
        return sum(s["usd"] for s in self.stages.values())

    def exceeded(self) -> bool:
        return self.max_usd is not None and self.usd >= self.max_usd

    def label(self, stage: str) -> str:
        """The progress line's spend field: 'in 12.3k out 4.5k tok $0.0123 (all $0.05 of $1.00)'."""
        spent = self.stages.get(stage, _nothing())
        cached = f" ({tokens_text(spent['cached_tokens'])} cached)" if spent.get("cached_tokens") else ""
        text = f"in {tokens_text(spent['prompt_tokens'])}{cached} out {tokens_text(spent['completion_tokens'])} tok"
        if any(priced(p) for p in self.prices.values()):
            text += f" {usd_text(spent['usd'])}"
            total = usd_text(self.usd) + (f" of {usd_text(self.max_usd)}" if self.max_usd is not None else "")
            text += f" (all {total})"
        return text

    def total_label(self) -> str:
        """The whole invocation's spend, for the pairs.target bar: 'spent $0.05 of $1.00' ('' with no price)."""
        if not any(priced(p) for p in self.prices.values()):
            return ""
        return f"spent {usd_text(self.usd)}" + (f" of {usd_text(self.max_usd)}" if self.max_usd is not None else "")

    def as_dict(self) -> dict[str, Any]:
        return {
            "usd": round(self.usd, 6),
            "max_usd": self.max_usd,
            "prompt_tokens": int(sum(s["prompt_tokens"] for s in self.stages.values())),
            "cached_tokens": int(sum(s["cached_tokens"] for s in self.stages.values())),
            "completion_tokens": int(sum(s["completion_tokens"] for s in self.stages.values())),
            "stages": {
                name: {
                    "prompt_tokens": int(s["prompt_tokens"]),
                    "cached_tokens": int(s["cached_tokens"]),
                    "completion_tokens": int(s["completion_tokens"]),
                    "usd": round(s["usd"], 6),
                }
                for name, s in self.stages.items()
            },  # fmt: skip
        }

    def stop_message(self) -> str:
        by_stage = ", ".join(f"{name} {usd_text(s['usd'])}" for name, s in self.stages.items())
        return (
            f"budget reached: cost.max_usd={self.max_usd:g}, this invocation spent {usd_text(self.usd)} ({by_stage}); "
            "no new request was sent and every finished row is stored. Run the same command again to go on "
            "(only the missing keys are requested; it may spend up to cost.max_usd again), or raise or drop "
            "cost.max_usd"
        )


def at_rate(price: StageCostConfig, engine: Any) -> StageCostConfig:
    """What one request of `engine` pays: the list prices, or `batch_discount` off both when it sends by batch."""
    if not getattr(engine, "batch", False) or not price.batch_discount:
        return price
    keep = 1.0 - price.batch_discount
    cached = None if price.cached_input_per_m is None else price.cached_input_per_m * keep
    return replace(
        price, input_usd_per_m=price.input_usd_per_m * keep, output_usd_per_m=price.output_usd_per_m * keep,
        cached_input_per_m=cached,
    )  # fmt: skip


def billed_per_token(engine: Any) -> bool:
    """An engine whose requests go to a server that may bill per token (the openai kind: an API, or a
    server someone runs); llama.cpp and vLLM in process cost GPU-hours, not tokens."""
    from factory.engines import kind_of

    return kind_of(engine).billed_per_token


def unpriced_paid(stages: list[tuple[str, Any, int]], prices: dict[str, StageCostConfig]) -> list[str]:
    """Of (stage name, engine, requests): the stages with requests to a per-token server and no price."""
    return [
        name
        for name, engine, requests in stages
        if requests and billed_per_token(engine) and not (name in prices and priced(prices[name]))
    ]
