"""Any OpenAI-compatible chat API (DeepSeek, OpenAI, a vLLM / SGLang / llama.cpp server) through the
`openai` async client.

    engine = OpenAIEngine(EngineConfig(kind="openai", base_url="http://127.0.0.1:8000/v1", model="r1"))
    engine.generate([Request(messages=[{"role": "user", "content": "hi"}], max_tokens=64, seed=7)])
    -> [Completion(text="Hello!", reasoning=None, finish_reason="stop", prompt_tokens=9, ...)]

Per replica: at most `parallel` requests in flight, paced to `rpm` / `tpm` (split over the replicas). A reply
is untrusted: each attempt has `request_timeout_s` for the whole reply (a server that keeps sending is cut off
at the deadline, not only one that stalls) and reads at most `max_reply_bytes` of its body (more is that
request's error at once, not retried: the connection is closed); what it says is then checked like every
engine's reply (factory.engines.base.checked). Every failure is one request's own: a 429 (its Retry-After
honoured), a 5xx, a timeout, a dropped connection, or a 200 that is not usable (a body that is not JSON,
`choices: []`, `content: null` with no reasoning) is retried alone, `max_retries` times with exponential
backoff and full jitter; any other error (a 400), or the last retry's, becomes that request's `error` and the
rest of the batch goes on, never re-sent. `Completion.attempts` counts the attempts sent. A 401/403 is the one
error that is not per request: the key is refused, so generate() raises FatalEngineError after that one
attempt and sends nothing more. Error texts are one line with every secret value (the API key, base_url
credentials) replaced by ***, so a server that echoes the key cannot get it stored. `engine_kwargs.extra_body`
(a mapping) is sent with every request, for server-specific fields. DeepSeek's `reasoning_content` and
`usage.completion_tokens_details.reasoning_tokens` are read when the server sends them; otherwise the sample
stage finds `<think>` in the content and splits the tokens with `engine.tokenizer`. The prompt tokens a
server's prefix cache served are read from `usage.prompt_tokens_details.cached_tokens` (OpenAI, vLLM) or
`usage.prompt_cache_hit_tokens` (DeepSeek): `Completion.cached_tokens`, priced at `cost.*.cached_input_per_m`.

Batch mode (`engine.batch: true`): generate() sends its requests as one provider batch instead
(factory/engines/openai_batch.py: submit, poll, collect, the batch ids kept in the run's batches/).

Scoring (a reward model behind a vLLM server, `vllm serve RM --runner pooling`): `score()` posts each
ScoreRequest to the server's root (base_url without /v1), with the same slots, limits, retries and
error rules as a chat request:
    classify  POST /classify  {model, messages, use_activation}               -> data[0].probs[label]
    pooling   POST /pooling   {model, messages, task: classify, use_activation} -> data[0].data[label]
    score     POST /score     {model, text_1: the prompt's text, text_2: the answer, use_activation} -> data[0].score
The server applies the model's chat template to `messages` (the prompt and the answer as the last,
assistant, turn; no generation prompt).
"""

from __future__ import annotations

import asyncio
import email.utils
import importlib
import json
import os
import random
import re
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from factory.config import ConfigError, EngineConfig
from factory.engines.base import (
    Completion,
    EngineKind,
    FatalEngineError,
    OnDone,
    OnScored,
    Request,
    Score,
    ScoreRequest,
    gather,
    local_token_counter,
    token_count,
)
from factory.rundir.secrets import redact_url, scrub, secret_values

# The routes of a vLLM server's pooling API this engine scores with (ScoreRequest.route).
SCORE_ROUTES = ("classify", "pooling", "score")
MAX_BACKOFF_S = 60.0
MAX_RETRY_AFTER_S = 600.0  # a server asking for more is taken to ask for this (the watchdog is next)
_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
# Transport errors raised before a byte of the request is sent: such an attempt is not counted. Named,
# not imported: the openai client's HTTP library is httpx or, in newer releases, its fork httpx2.
_NOT_SENT = frozenset({"ConnectError", "ConnectTimeout", "PoolTimeout"})
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
# How servers word a prompt that does not fit: vLLM ("... your prompt contains at least 2049 input tokens",
# older: "(2049 in the messages, ...)"), llama.cpp (JSON fields n_prompt_tokens / n_ctx).
_PROMPT_TOKENS = re.compile(r"(\d+)\s+(?:input tokens|in the messages|tokens in the prompt)")
_CONTEXT = re.compile(r"maximum context length is (\d+)")


class RatePacer:
    """Spaces out work to `per_minute` units (GCRA): a request of `amount` units moves the earliest next
    start by amount * 60 / per_minute seconds. Over-estimates are handed back with `refund`, so a request
    charged at prompt + max_tokens ends up costing what the server says it used."""

    def __init__(self, per_minute: float):
        self.interval = 60.0 / per_minute
        self.next_start = 0.0
        self.lock = asyncio.Lock()

    async def acquire(self, amount: float = 1.0) -> None:
        async with self.lock:  # waiters go in arrival order
            now = time.monotonic()
            start = max(self.next_start, now)
            if start > now:
                await asyncio.sleep(start - now)
            self.next_start = start + amount * self.interval

    def refund(self, amount: float) -> None:
        self.next_start -= amount * self.interval


def retry_after_s(headers: Any) -> float | None:
    """Seconds asked for by `retry-after-ms` / `Retry-After` (seconds or an HTTP date), if any."""
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def backoff_s(attempt: int, base: float, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**(attempt-1))]."""
    return rng.uniform(0, min(MAX_BACKOFF_S, base * 2 ** (attempt - 1)))


def context_error(message: str, body: Any, max_model_len: int) -> str | None:
    """'prompt has N tokens, max_model_len M' when an HTTP 400 says the prompt does not fit, else None."""
    err = body.get("error", body) if isinstance(body, dict) else {}
    if isinstance(err, dict) and err.get("n_prompt_tokens") is not None:
        return f"prompt has {err['n_prompt_tokens']} tokens, max_model_len {err.get('n_ctx') or max_model_len}"
    found = _PROMPT_TOKENS.search(message)
    if found and ("context" in message or "max_model_len" in message):
        limit = _CONTEXT.search(message)
        return f"prompt has {found.group(1)} tokens, max_model_len {limit.group(1) if limit else max_model_len}"
    return None


def _estimate_prompt_tokens(messages: list[dict[str, str]]) -> int:
    # Used only to pace `tpm` before the server reports usage: about 2 characters per token is on the
    # safe side for English and Chinese alike; the difference is refunded from the real usage.
    return sum(len(m.get("content") or "") for m in messages) // 2 + 4 * len(messages)


class _Tokenizer:
    """Counts tokens of plain texts: a tokenizer.json / HF folder, or the server's /tokenize."""

    def __init__(self, spec: str, base_url: str, model: str):
        self.spec, self.model = spec, model
        self.root = re.sub(r"/v1/?$", "", base_url.rstrip("/"))
        self.local = None
        if spec and spec != "server":
            path = Path(spec).expanduser()
            path = path / "tokenizer.json" if path.is_dir() else path
            if not path.is_file():
                raise ConfigError(f"engine.tokenizer: no tokenizer.json at {path}")
            from factory.engines import requires

            requires("tokenizers", "openai", "pip install tokenizers (to count tokens with engine.tokenizer)")
            from tokenizers import Tokenizer

            self.local = Tokenizer.from_file(str(path))

    def count(self, text: str) -> int:
        if not text:
            return 0
        if self.local is not None:
            return len(self.local.encode(text, add_special_tokens=False).ids)
        # llama.cpp reads `content`, vLLM reads `prompt`; each ignores the other's fields.
        body = {"content": text, "add_special": False, "model": self.model, "prompt": text, "add_special_tokens": False}
        req = urllib.request.Request(
            f"{self.root}/tokenize", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with _NO_PROXY.open(req, timeout=60) as response:
            reply = json.loads(response.read())
        return int(reply["count"]) if "count" in reply else len(reply["tokens"])


class OpenAIEngine:
    supports_json_schema = True
    concurrent_batches = True  # generate() is thread-safe: batches of one replica share its slots

    def __init__(self, cfg: EngineConfig, client: Any = None):
        import openai

        self.cfg = cfg
        self.model_name = cfg.model
        self.finished = 0  # requests answered so far (the executor's watchdog reads it)
        self._openai = openai
        self._secrets = secret_values(cfg)  # scrubbed from every error this engine returns
        self._fatal: str | None = None  # set by a 401/403: every later request raises it unsent
        self._rng = random.Random()
        self._tokenizer = _Tokenizer(cfg.tokenizer, cfg.base_url, cfg.model) if cfg.tokenizer else None
        self._root = re.sub(r"/v1/?$", "", cfg.base_url.rstrip("/"))  # the scoring routes sit at the server root
        # One event loop per engine in a thread of its own: generate() stays a plain call for Ray actors
        # and stages, and concurrent batches share one connection pool and one set of limits.
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="openai-engine", daemon=True)
        self._thread.start()
        self.client = client or self._call(self._make_client())
        self._slots, self._rpm, self._tpm = self._call(self._make_limits())
        self._batch = None
        if cfg.batch:
            from factory.engines.openai_batch import BatchSender

            self._batch = BatchSender(self)

    def bind_run_dir(self, url: str) -> None:
        """Batch mode keeps its batch ids in the run directory (batches/): the executor hands it over."""
        if self._batch is not None:
            from factory.rundir.store import RunStore

            self._batch.bind(RunStore(url))

    @property
    def polls(self) -> int:
        """Successful polls of running batches: a replica's heartbeat while its batch runs at the provider."""
        return self._batch.polls if self._batch is not None else 0

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def _make_client(self) -> Any:
        api_key = os.environ.get(self.cfg.api_key_env, "") if self.cfg.api_key_env else ""
        host = urllib.parse.urlsplit(self.cfg.base_url).hostname or ""
        cap = self.cfg.max_reply_bytes
        client_class = self._openai.DefaultAsyncHttpxClient
        # httpx or, in newer openai releases, its fork httpx2: the library the client is built on.
        http = importlib.import_module(client_class.__mro__[1].__module__.split(".")[0])
        capped_stream = capped_stream_class(http.AsyncByteStream)

        async def capped(response: Any) -> None:  # before the body is read: count what it reads
            response.stream = capped_stream(response.stream, cap)
            encoding = response.headers.get("content-encoding", "").strip().lower()
            if encoding not in ("", "identity") and hasattr(response, "_get_content_decoder"):
                # A compressed body is capped once decoded too (a small gzip can decode to gigabytes). The
                # client's decoder is private API: where it is absent, the raw bytes' cap is what holds.
                response._decoder = _CappedDecoder(response._get_content_decoder(), cap)

        http_client = client_class(
            trust_env=host not in _LOOPBACK,  # a loopback server is never reached through a proxy of the environment
            event_hooks={"response": [capped]},
        )
        return self._openai.AsyncOpenAI(
            base_url=self.cfg.base_url,
            api_key=api_key or "EMPTY",  # local servers take any key; the client refuses none
            max_retries=0,  # retries are ours: backoff with jitter, counted per request
            timeout=self.cfg.request_timeout_s,
            http_client=http_client,
        )

    async def _make_limits(self) -> tuple[asyncio.Semaphore, RatePacer | None, RatePacer | None]:
        replicas = max(1, self.cfg.replicas)  # every replica paces its share of the limits
        rpm = RatePacer(self.cfg.rpm / replicas) if self.cfg.rpm else None
        tpm = RatePacer(self.cfg.tpm / replicas) if self.cfg.tpm else None
        return asyncio.Semaphore(self.cfg.parallel), rpm, tpm

    # -- one request -----------------------------------------------------------------------------
    def _body(self, request: Request) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.cfg.model, **request.chat_body()}
        if request.json_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": request.json_schema, "strict": True},
            }
        extra = self.cfg.engine_kwargs.get("extra_body")
        if extra:
            body["extra_body"] = dict(extra)
        return body

    async def _one(self, request: Request) -> Completion:
        body = self._body(request)
        estimate = _estimate_prompt_tokens(request.messages) + request.max_tokens

        def finish(response: Any, latency: float, sent: int) -> Completion:
            return self._completion(request, response, latency, sent)

        return await self._retrying(
            lambda: self.client.chat.completions.create(**body, timeout=self.cfg.request_timeout_s),
            finish,
            estimate,
            lambda error, sent: Completion(tag=request.tag, error=error, attempts=sent),
        )

    async def _retrying(self, call: Any, finish: Any, estimate: int, failed: Any) -> Any:
        """One request's attempts: `call()` sends it, `finish(response, latency_s, attempts sent)` makes
        the result of a 200 (raising _BadReply or ValueError when it holds no usable answer), `failed(error,
        attempts sent)` the result of a request that could not be served. The rules are the module doc's."""
        error = "no attempt made"
        attempts = self.cfg.max_retries + 1
        sent = 0  # attempts that reached the wire (a refused or timed-out connect sends nothing)
        for attempt in range(1, attempts + 1):
            wait = None
            async with self._slots:
                if self._fatal is not None:  # another request met a refused key: send nothing more
                    raise FatalEngineError(self._fatal)
                if self._rpm:
                    await self._rpm.acquire(1)
                if self._tpm:
                    await self._tpm.acquire(estimate)
                start = time.perf_counter()
                used = estimate  # tokens charged to `tpm` when the server does not say
                sent += 1
                try:
                    try:
                        response = await asyncio.wait_for(call(), self.cfg.request_timeout_s)
                    except asyncio.TimeoutError:
                        raise _Deadline(
                            f"timeout after {time.perf_counter() - start:.1f}s: no whole reply within "
                            f"engine.request_timeout_s ({self.cfg.request_timeout_s:g}s)"
                        ) from None
                    used = _used_tokens(response, estimate)
                    completion = finish(response, time.perf_counter() - start, sent)
                except self._openai.APIStatusError as exc:
                    used = 0
                    error = self._scrub(_status_message(exc))
                    if exc.status_code in (401, 403):
                        self._fatal = self._fatal_message(exc.status_code, error)
                        raise FatalEngineError(self._fatal) from None
                    if exc.status_code not in (408, 409, 429) and exc.status_code < 500:
                        fits = context_error(str(exc), exc.body, self.cfg.max_model_len)
                        return self._done(failed(fits or error, sent))
                    wait = retry_after_s(exc.response.headers)
                    wait = min(wait, MAX_RETRY_AFTER_S) if wait is not None else None
                except self._openai.APIConnectionError as exc:  # includes APITimeoutError
                    used = 0
                    if _NOT_SENT & {cls.__name__ for cls in type(exc.__cause__).__mro__}:
                        sent -= 1
                    kind = "timeout" if isinstance(exc, self._openai.APITimeoutError) else "connection error"
                    error = self._scrub(f"{kind} after {time.perf_counter() - start:.1f}s: {exc}")
                except _Deadline as exc:  # retried like a timeout of the client
                    used = 0
                    error = self._scrub(str(exc))
                except ReplyTooLarge as exc:  # not retried: a server that sent this much would again
                    return self._done(failed(self._scrub(str(exc)), sent))
                except _BadReply as exc:  # a 200 that holds no usable answer: no choices, null content
                    error = self._scrub(str(exc))
                except ValueError as exc:  # a 200 whose body is not the JSON of a chat completion
                    error = self._scrub(f"malformed reply: {type(exc).__name__}: {exc}")
                except Exception as exc:  # anything else is still this request's failure, not the batch's
                    error = self._scrub(f"{type(exc).__name__}: {exc}")
                else:
                    return self._done(completion)
                finally:
                    if self._tpm:
                        self._tpm.refund(estimate - used)
            if attempt < attempts:  # wait outside the slot: other requests go on meanwhile
                await asyncio.sleep(wait if wait is not None else backoff_s(attempt, self.cfg.backoff_s, self._rng))
        tries = f"{attempts} attempts" if sent == attempts else f"{attempts} attempts, {sent or 'none'} sent"
        return self._done(failed(f"{error} (after {tries})", sent))

    def _done(self, result: Any) -> Any:
        self.finished += 1
        return result

    def _scrub(self, text: str) -> str:
        return scrub(" ".join(text.split()), self._secrets)  # one line, no secret

    def _fatal_message(self, status: int, error: str) -> str:
        where = f"{redact_url(self.cfg.base_url)} (model {self.cfg.model!r})"
        if self.cfg.api_key_env:
            fix = f"check the key in the environment variable {self.cfg.api_key_env!r}, named by engine.api_key_env"
        else:
            fix = "engine.api_key_env is empty: set it to the NAME of the environment variable holding the key"
        detail = error.split(": ", 1)[-1]  # the server's words, without the "HTTP 401: " already said
        return f"HTTP {status} from {where}: the server refuses the credentials ({detail}); {fix}"

    def _completion(self, request: Request, response: Any, latency: float, attempt: int) -> Completion:
        """The Completion of a 200 reply; raises _BadReply when it holds no usable answer."""
        if not response.choices:
            raise _BadReply("the API returned no choices")
        choice = response.choices[0]
        message = choice.message
        extra = getattr(message, "model_extra", None) or {}
        # DeepSeek: reasoning_content; newer vLLM servers: reasoning.
        reasoning = (
            getattr(message, "reasoning_content", None) or extra.get("reasoning_content") or extra.get("reasoning")
        )
        if message.content is None and not reasoning:
            raise _BadReply(f"the API returned no content (content null, finish_reason {choice.finish_reason!r})")
        usage = response.usage
        details = getattr(usage, "completion_tokens_details", None) if usage else None
        reasoning_tokens = getattr(details, "reasoning_tokens", None) if details else None
        if reasoning_tokens == 0 and (
            reasoning or "<think>" in (message.content or "") or "</think>" in (message.content or "")
        ):
            reasoning_tokens = None  # a server that reports 0 while it did reason: count it ourselves
        return Completion(
            tag=request.tag,
            text=message.content or "",
            reasoning=reasoning or None,
            finish_reason=choice.finish_reason or "",
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            reasoning_tokens=reasoning_tokens,
            cached_tokens=cached_prompt_tokens(usage),
            latency_s=latency,
            attempts=attempt,
        )

    # -- scoring (a reward model behind a server's pooling routes) ------------------------------
    def _score_body(self, request: ScoreRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.cfg.model, "use_activation": request.activation}
        if request.route == "score":
            *prompt, answer = request.messages
            body |= {"text_1": "\n\n".join(m["content"] for m in prompt), "text_2": answer["content"]}
        else:
            body["messages"] = request.messages
            if request.route == "pooling":
                body["task"] = "classify"
        body.update(self.cfg.engine_kwargs.get("extra_body") or {})
        return body

    async def _score_one(self, request: ScoreRequest) -> Score:
        if request.route not in SCORE_ROUTES:
            return self._done(Score(tag=request.tag, error=f"unknown score route {request.route!r}", attempts=0))
        body = self._score_body(request)
        url = f"{self._root}/{request.route}"

        def finish(reply: Any, latency: float, sent: int) -> Score:
            value, prompt_tokens = score_value(request.route, reply, request.label)
            return Score(tag=request.tag, value=value, prompt_tokens=prompt_tokens, latency_s=latency, attempts=sent)

        return await self._retrying(
            lambda: self.client.post(url, cast_to=object, body=body, options={"timeout": self.cfg.request_timeout_s}),
            finish,
            _estimate_prompt_tokens(request.messages),
            lambda error, sent: Score(tag=request.tag, error=error, attempts=sent),
        )

    def score(self, requests: list[ScoreRequest], on_done: OnScored | None = None) -> list[Score]:
        futures = [asyncio.run_coroutine_threadsafe(self._score_one(r), self._loop) for r in requests]
        return gather(requests, futures, on_done)  # type: ignore[arg-type]

    # -- the Engine protocol ---------------------------------------------------------------------
    def generate(self, requests: list[Request], on_done: OnDone | None = None) -> list[Completion]:
        if self._batch is not None:
            return self._batch.generate(requests, on_done)
        futures = [asyncio.run_coroutine_threadsafe(self._one(r), self._loop) for r in requests]
        return gather(requests, futures, on_done)

    def count_tokens(self, texts: list[str]) -> list[int] | None:
        if self._tokenizer is None:
            return None
        return [self._tokenizer.count(text) for text in texts]

    def stop_waiting(self) -> None:
        """The run stops: calls waiting on batches return now (the batches stay stored and are polled again)."""
        if self._batch is not None:
            self._batch.stop.set()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self.stop_waiting()
        try:
            self._call(self.client.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()


class _BadReply(Exception):
    """A 200 reply without a usable answer: one request's failure, retried like a 5xx."""


def cached_prompt_tokens(usage: Any) -> int | None:
    """The prompt tokens a server says its prefix cache served: `prompt_tokens_details.cached_tokens`, else
    DeepSeek's `prompt_cache_hit_tokens`; None when it says neither, or says something that is not a count
    within the prompt's tokens (a lying server's figure is never priced at the cached rate)."""
    if usage is None:
        return None
    details = getattr(usage, "prompt_tokens_details", None)
    value = getattr(details, "cached_tokens", None) if details is not None else None
    if value is None:
        value = (getattr(usage, "model_extra", None) or {}).get("prompt_cache_hit_tokens")
    prompt = getattr(usage, "prompt_tokens", None)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    if isinstance(prompt, int) and value > prompt:
        return None
    return value


class _Deadline(Exception):
    """No whole reply within engine.request_timeout_s: retried like a timeout."""


class ReplyTooLarge(Exception):
    """A reply body over engine.max_reply_bytes: that request's error, not retried."""


def capped_stream_class(byte_stream: type) -> type:
    """A response body stream (a subclass of the HTTP library's AsyncByteStream) that stops with
    ReplyTooLarge once more than `cap` bytes came (the raw bytes on the wire), so a body that never ends
    costs at most `cap` bytes of memory."""

    class CappedStream(byte_stream):  # type: ignore[misc, valid-type]
        def __init__(self, stream: Any, cap: int):
            self.stream, self.cap = stream, cap

        async def __aiter__(self) -> Any:
            read = 0
            async for chunk in self.stream:
                read += len(chunk)
                if read > self.cap:
                    cap = f"engine.max_reply_bytes ({self.cap} bytes)"
                    raise ReplyTooLarge(f"reply body over {cap}: the server sent more; not read further")
                yield chunk

        async def aclose(self) -> None:
            await self.stream.aclose()

    return CappedStream


class _CappedDecoder:
    """The HTTP library's content decoder, stopping with ReplyTooLarge once it decoded more than `cap` bytes
    (its decode/flush return bytes in httpx, an iterator of bytes in httpx2: either is counted)."""

    def __init__(self, inner: Any, cap: int):
        self.inner, self.cap, self.read = inner, cap, 0

    def _add(self, size: int) -> None:
        self.read += size
        if self.read > self.cap:
            cap = f"engine.max_reply_bytes ({self.cap} bytes)"
            raise ReplyTooLarge(f"reply body over {cap} once decompressed; not read further")

    def _count(self, out: Any) -> Any:
        if isinstance(out, (bytes, bytearray)):
            self._add(len(out))
            return out
        return self._counted(out)

    def _counted(self, parts: Any) -> Any:
        for part in parts:
            self._add(len(part))
            yield part

    def decode(self, data: bytes) -> Any:
        return self._count(self.inner.decode(data))

    def flush(self) -> Any:
        return self._count(self.inner.flush())


def _used_tokens(response: Any, estimate: int) -> int:
    """Tokens to charge `tpm` with: the reply's usage.total_tokens; the estimate when it has none, or one
    that is not a token count (a lie never moves the pacer)."""
    if isinstance(response, dict):  # a scoring route's JSON
        usage = response.get("usage")
        return token_count(usage.get("total_tokens") if isinstance(usage, dict) else None) or estimate
    usage = getattr(response, "usage", None)
    if usage is None:
        return estimate
    total = getattr(usage, "total_tokens", None)
    return 0 if total is None else (token_count(total) if token_count(total) is not None else estimate)


def score_value(route: str, reply: Any, label: int) -> tuple[float, int | None]:
    """(score, prompt tokens) from a 200 reply of a scoring route; raises _BadReply when it holds none."""
    data = reply.get("data") if isinstance(reply, dict) else None
    if not isinstance(data, list) or not data or not isinstance(data[0], dict):
        raise _BadReply(f"the /{route} reply holds no data: {str(reply)[:200]}")
    item = data[0]
    values = [item.get("score")] if route == "score" else item.get("probs" if route == "classify" else "data")
    if not isinstance(values, list) or label >= len(values):
        raise _BadReply(f"the /{route} reply has no output {label} (label): {str(item)[:200]}")
    value = values[label]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _BadReply(f"the /{route} reply's output {label} is not a number: {value!r}")
    usage = reply.get("usage")
    prompt_tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    return float(value), prompt_tokens if isinstance(prompt_tokens, int) else None


def _status_message(exc: Any) -> str:
    body = exc.body
    detail = body.get("message") if isinstance(body, dict) else None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        detail = body["error"].get("message") or detail
    return f"HTTP {exc.status_code}: {detail or exc.message}"


class OpenAIKind(EngineKind):
    name = "openai"
    score_routes = SCORE_ROUTES
    billed_per_token = True  # an API, or a server someone runs
    required = ("base_url",)
    batch_api = True
    same_votes_at_zero = False  # a server's sampling need not be deterministic per seed

    def engine_class(self) -> type:
        return OpenAIEngine

    def missing_credentials(self, cfg: EngineConfig) -> str | None:
        if cfg.api_key_env and cfg.api_key_env not in os.environ:
            return f"api_key_env: environment variable {cfg.api_key_env!r} is not set"
        return None

    def token_counter(self, cfg: EngineConfig) -> tuple[Any, str]:
        """engine.tokenizer 'server': the server's /tokenize; else a local tokenizer.json."""
        if cfg.tokenizer == "server":
            return _Tokenizer("server", cfg.base_url, cfg.model).count, "counted (server /tokenize)"
        return local_token_counter(cfg.tokenizer)


KIND = OpenAIKind()
