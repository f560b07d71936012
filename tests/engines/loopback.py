"""Real HTTP servers on loopback for engine tests (stdlib only, each in a thread).

- `ScriptedServer`: answers POST /v1/chat/completions from a script, for what a real local model
  server will not do on demand: 429 + Retry-After, 5xx, hangs, a malformed 200 body, a dropped
  connection, `choices: []`, `content: null`, a 401 that echoes the key, and what a lying server says:
  usage it makes up (`lying_usage`), a body that never ends (`endless`). It counts every request.
- `CountingProxy`: forwards every request to a real server and records what it received, so a test
  can count the requests a run made and see which keys (seeds) they were for.
- Scoring: `score_response` is a 200 body of a vLLM server's /classify, /pooling or /score route (the
  shapes of vllm.entrypoints.pooling.*.protocol); ScriptedServer takes it as a step's body, and
  FakeModelServer answers those routes like a reward model (tests.fakes.reward_of of the answer).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from collections.abc import Callable
from typing import Any

from tests.fakes import reward_of

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def chat_response(
    content: str = "ok",
    *,
    reasoning: str | None = None,
    reasoning_tokens: int | None = None,
    cached_tokens: Any = None,
    cache_style: str = "openai",
) -> dict:
    """A 200 body of /v1/chat/completions. `cached_tokens`: the prompt tokens the server says its prefix cache
    served, as OpenAI and vLLM say it (`cache_style` "openai": usage.prompt_tokens_details.cached_tokens) or
    as DeepSeek does ("deepseek": usage.prompt_cache_hit_tokens and prompt_cache_miss_tokens)."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    usage: dict[str, Any] = {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}
    if reasoning_tokens is not None:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
    if cached_tokens is not None:
        set_cached(usage, cached_tokens, cache_style)
    return {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": usage,
    }


def set_cached(usage: dict[str, Any], cached: Any, style: str) -> None:
    if style == "deepseek":
        usage["prompt_cache_hit_tokens"] = cached
        if isinstance(cached, int) and isinstance(usage.get("prompt_tokens"), int):
            usage["prompt_cache_miss_tokens"] = usage["prompt_tokens"] - cached
    else:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}


SCORE_PATHS = ("/classify", "/pooling", "/score")


def score_response(values: float | list[float], route: str = "classify", prompt_tokens: int = 7) -> dict:
    """The 200 body of a vLLM scoring route: `values` are the head's outputs (one float: one label)."""
    values = values if isinstance(values, list) else [values]
    if route == "classify":
        data = [
            {"index": 0, "label": f"LABEL_{values.index(max(values))}", "probs": values, "num_classes": len(values)}
        ]
    elif route == "pooling":
        data = [{"index": 0, "object": "pooling", "data": values}]
    else:
        data = [{"index": 0, "object": "score", "score": values[0]}]
    usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens, "completion_tokens": 0}
    return {"id": "x", "object": "list", "created": 0, "model": "m", "data": data, "usage": usage}


def scored_answer(request: dict) -> str:
    """The answer a scoring request asks about: the last message (classify, pooling) or text_2 (score)."""
    return request["messages"][-1]["content"] if "messages" in request else request["text_2"]


class _HTTPServer(ThreadingHTTPServer):
    # The default listen backlog (5) drops connections of a larger concurrent batch: they would time
    # out connecting and never reach the server, which is a test artefact, not a fault we script.
    request_queue_size = 256
    daemon_threads = True


class _Server:
    def __init__(self, handler: type[BaseHTTPRequestHandler]):
        self.httpd = _HTTPServer(("127.0.0.1", 0), handler)
        self.httpd.owner = self  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.lock = threading.Lock()
        self.received: list[tuple[float, str, dict]] = []  # (time, path, json body)
        self.headers: list[dict[str, str]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def record(self, path: str, body: dict, headers: Any = None) -> None:
        with self.lock:
            self.received.append((time.monotonic(), path, body))
            self.headers.append({k.lower(): v for k, v in (headers or {}).items()})

    def chat_requests(self) -> list[dict]:
        with self.lock:
            return [body for _, path, body in self.received if path.endswith("/chat/completions")]

    def score_requests(self, route: str | None = None) -> list[tuple[str, dict]]:
        """(path, body) of every scoring request received (of one route when given)."""
        with self.lock:
            return [
                (path, body)
                for _, path, body in self.received
                if path in SCORE_PATHS and (route is None or path == f"/{route}")
            ]

    def chat_times(self) -> list[float]:
        with self.lock:
            return [t for t, path, _ in self.received if path.endswith("/chat/completions")]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)


class ScriptedServer(_Server):
    """Answers POST /v1/chat/completions from a script of steps and counts every request it receives
    (`chat_requests()`, dropped and timed-out ones included).

    `script` is a list of steps (each chat request takes the next one; the last repeats), or a dict
    {content: [steps]} giving each request its own sequence of steps, keyed by the content of its
    last message: attempt n of that request takes step n (the last repeats), whatever the order in
    which a concurrent batch arrives, or a function of the request's JSON that returns its step.
    A step is a dict; the helpers below make each fault:
    {"status": 429, "headers": {"Retry-After": "1"}, "body": {...}, "delay": 0.0} plus
    "raw": bytes sent as the body as they are, "drop": close the connection without a reply,
    "hang": seconds to stall before answering (released when the server stops),
    "echo_auth": put the request's Authorization header into the error message,
    "stream": {"chunk": bytes, "every": seconds, "for_s": seconds}: a 200 whose body never ends (a
    Content-Length it never reaches): `chunk` sent every `every` seconds until the client leaves, the
    server stops, or `for_s` seconds passed (then the connection closes: the test is bounded in time)."""

    def __init__(self, script: list[dict] | dict[str, list[dict]] | Callable[[dict], dict]):
        self.script = script
        self.step = 0
        self.steps_by_key: dict[str, int] = {}
        self.stopping = threading.Event()

        class Handler(_Handler):
            def do_POST(self):
                server: ScriptedServer = self.server.owner  # type: ignore[attr-defined]
                raw = self._body()
                request = json.loads(raw or b"{}")
                server.record(self.path, request, self.headers)
                step = server.next_step(request)
                if step.get("drop"):
                    self.close_connection = True  # no status line, no body: the socket just closes
                    return
                server.stopping.wait(step.get("hang", 0.0))
                time.sleep(step.get("delay", 0.0))
                if "stream" in step:
                    self._stream(server, **step["stream"])
                    return
                body = step.get("body", chat_response())
                if step.get("echo_auth"):
                    key = self.headers.get("Authorization", "")
                    body = {"error": {"message": f"Incorrect API key provided: {key}", "type": "invalid_request_error"}}
                payload = step["raw"] if "raw" in step else json.dumps(body).encode()
                try:
                    self._send(step.get("status", 200), payload, step.get("headers"))
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

            def _stream(self, server: ScriptedServer, chunk: bytes, every: float = 0.0, for_s: float = 20.0) -> None:
                self.close_connection = True
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(10**15))  # a body that never ends
                self.end_headers()
                until = time.monotonic() + for_s
                try:
                    self.wfile.write(b'{"id": "x", "choices": [{"index": 0, "message": {"content": "')
                    while time.monotonic() < until and not server.stopping.is_set():
                        self.wfile.write(chunk)
                        self.wfile.flush()
                        with server.lock:
                            server.streamed += len(chunk)
                        if every:
                            server.stopping.wait(every)
                except (BrokenPipeError, ConnectionResetError):  # the client stopped reading: what we want
                    pass

        super().__init__(Handler)
        self.streamed = 0  # body bytes sent by `stream` steps

    def next_step(self, request: dict) -> dict:
        if callable(self.script):  # a rule: the request's JSON -> its step
            return self.script(request)
        with self.lock:
            if isinstance(self.script, dict):
                key = request_key(request)
                steps = self.script[key]
                n = self.steps_by_key.get(key, 0)
                self.steps_by_key[key] = n + 1
            else:
                steps, n = self.script, self.step
                self.step += 1
            return steps[min(n, len(steps) - 1)]

    def count(self, key: str) -> int:
        """Chat requests received for the request whose last message is `key`."""
        return sum(1 for body in self.chat_requests() if request_key(body) == key)

    def __exit__(self, *exc):
        self.stopping.set()  # release hung handlers so the server stops at once
        super().__exit__(*exc)


def request_key(request: dict) -> str:
    return scored_answer(request)


# -- one step per fault ---------------------------------------------------------------------------
def ok(content: str = "ok") -> dict:
    return {"body": chat_response(content)}


def rate_limited(retry_after: str = "1") -> dict:
    return {"status": 429, "headers": {"Retry-After": retry_after}, "body": {"error": {"message": "slow down"}}}


def server_error(status: int = 500) -> dict:
    return {"status": status, "body": {"error": {"message": f"server error {status}"}}}


def hang(seconds: float = 30.0) -> dict:
    return {"hang": seconds}


def malformed() -> dict:
    """Status 200 with a body cut off mid-JSON."""
    return {"raw": b'{"id": "x", "object": "chat.completion", "choices": [{"index": 0, "mess'}


def dropped() -> dict:
    return {"drop": True}


def no_choices() -> dict:
    return {"body": {**chat_response(), "choices": []}}


def null_content() -> dict:
    body = chat_response()
    body["choices"][0]["message"]["content"] = None
    return {"body": body}


def lying_usage(content: str = "ok", **usage: object) -> dict:
    """A 200 whose usage says what the server likes (completion_tokens=-5, prompt_tokens=2**70, ...)."""
    body = chat_response(content)
    body["usage"].update(usage)
    return {"body": body}


def endless(chunk_bytes: int = 65536, every: float = 0.0, for_s: float = 20.0) -> dict:
    """A 200 whose body keeps coming: `chunk_bytes` every `every` seconds (0: as fast as it can)."""
    return {"stream": {"chunk": b"x" * chunk_bytes, "every": every, "for_s": for_s}}


def unauthorized(status: int = 401) -> dict:
    """The refusal of a key, echoing the key it was given (some servers do)."""
    return {"status": status, "echo_auth": True}


class CountingProxy(_Server):
    """Forwards to `target` (a real server) and records every request it passes on."""

    def __init__(self, target: str):
        self.target = target.rstrip("/")

        class Handler(_Handler):
            def _forward(self, method: str) -> None:
                server: CountingProxy = self.server.owner  # type: ignore[attr-defined]
                raw = self._body() if method == "POST" else None
                server.record(self.path, json.loads(raw) if raw else {})
                req = urllib.request.Request(server.target + self.path, data=raw, method=method)
                req.add_header("Content-Type", "application/json")
                try:
                    with _NO_PROXY.open(req, timeout=600) as response:
                        status, body = response.status, response.read()
                except urllib.error.HTTPError as err:
                    status, body = err.code, err.read()
                self._send(status, body)

            def do_POST(self):
                self._forward("POST")

            def do_GET(self):
                self._forward("GET")

        super().__init__(Handler)


def _shared_words(text: str, seen: str) -> int:
    """Words of `text` that lie wholly in the prefix it shares with `seen`."""
    n = 0
    for a, b in zip(text, seen):
        if a != b:
            break
        n += 1
    if n == len(text):
        return len(text.split())
    words = text[:n].split()
    return len(words) - (1 if words and not text[n - 1].isspace() else 0)


class FakeModelServer(_Server):
    """An OpenAI-compatible server that answers like a tiny model, after `delay` seconds: a sample
    (`<think>..</think>answer`, its length from the seed) or, for a request with a JSON schema (a
    judge's), `{"score": seed % 101, "reason": "r"}`; a POST to /classify, /pooling or /score like a
    reward model (`tests.fakes.reward_of` of the answer). Records when each request arrived and when its
    reply went out (`replied`: (time.time(), seed, is_judge)), for tests of what a killed run kept.

    `cache` ("openai" or "deepseek", see chat_response) makes it bill like a provider with a prefix cache: a
    chat request's prompt tokens are the words of its messages, and those of the longest prefix (in whole
    words) it shares with a prompt received before are reported cached."""

    def __init__(self, delay: float = 0.2, cache: str | None = None):
        self.delay = delay
        self.cache = cache
        self.prompts_seen: list[str] = []
        self.cached_reported: list[int] = []  # the cached tokens each reply reported
        self.replied: list[tuple[float, int, bool]] = []

        class Handler(_Handler):
            def do_POST(self):
                server: FakeModelServer = self.server.owner  # type: ignore[attr-defined]
                request = json.loads(self._body() or b"{}")
                server.record(self.path, request, self.headers)
                time.sleep(server.delay)
                if self.path in SCORE_PATHS:
                    body = score_response(reward_of(scored_answer(request)), self.path.lstrip("/"))
                    try:
                        self._send(200, json.dumps(body).encode())
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                    return
                seed = int(request.get("seed") or 0)
                judge = "response_format" in request
                if judge:
                    content = json.dumps({"score": seed % 101, "reason": "r"})
                else:
                    content = f"<think>{'hm ' * (seed % 5)}</think>" + " ".join(["word"] * (2 + seed % 9))
                body = chat_response(content)
                body["usage"]["completion_tokens"] = len(content.split())
                if server.cache:
                    text = "\n".join(m.get("content") or "" for m in request.get("messages") or [])
                    with server.lock:
                        cached = max((_shared_words(text, seen) for seen in server.prompts_seen), default=0)
                        server.prompts_seen.append(text)
                        server.cached_reported.append(cached)
                    body["usage"]["prompt_tokens"] = len(text.split())
                    set_cached(body["usage"], cached, server.cache)
                try:
                    self._send(200, json.dumps(body).encode())
                except (BrokenPipeError, ConnectionResetError):
                    return
                with server.lock:
                    server.replied.append((time.time(), seed, judge))

        super().__init__(Handler)

    def judge_requests(self) -> list[dict]:
        return [body for body in self.chat_requests() if "response_format" in body]

    def sample_requests(self) -> list[dict]:
        return [body for body in self.chat_requests() if "response_format" not in body]


def counting_llama(max_model_len: int):
    """A module fixture's body: the embedded model on one llama.cpp server (4 slots) behind two
    CountingProxy, yielded as (sampler, judge); Ray is shut down after, as the runs used it."""
    from factory.config import EngineConfig
    from factory.engines.llamacpp import LlamaCppEngine

    llama = LlamaCppEngine(EngineConfig(kind="llamacpp", parallel=4, cpus_per_replica=2, max_model_len=max_model_len))
    with CountingProxy(llama.base_url) as sampler, CountingProxy(llama.base_url) as judge:
        yield sampler, judge
    llama.close()
    import ray

    ray.shutdown()
