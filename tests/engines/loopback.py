"""Real HTTP servers on loopback for engine tests (stdlib only, each in a thread).

- `ScriptedServer`: answers POST /v1/chat/completions from a script (status, headers, body, delay),
  for what a real local model server will not do on demand: 429 + Retry-After, 5xx, stalls.
- `CountingProxy`: forwards every request to a real server and records what it received, so a test
  can count the requests a run made and see which keys (seeds) they were for.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def chat_response(content: str = "ok", *, reasoning: str | None = None, reasoning_tokens: int | None = None) -> dict:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    usage: dict[str, Any] = {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}
    if reasoning_tokens is not None:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
    return {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": usage,
    }


class _Server:
    def __init__(self, handler: type[BaseHTTPRequestHandler]):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
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
    """Each chat request takes the next step of `script`; the last step repeats.
    A step: {"status": 429, "headers": {"Retry-After": "1"}, "body": {...}, "delay": 0.0}."""

    def __init__(self, script: list[dict]):
        self.script = script
        self.step = 0

        class Handler(_Handler):
            def do_POST(self):
                server: ScriptedServer = self.server.owner  # type: ignore[attr-defined]
                raw = self._body()
                server.record(self.path, json.loads(raw or b"{}"), self.headers)
                with server.lock:
                    step = server.script[min(server.step, len(server.script) - 1)]
                    server.step += 1
                time.sleep(step.get("delay", 0.0))
                body = step.get("body", chat_response())
                try:
                    self._send(step.get("status", 200), json.dumps(body).encode(), step.get("headers"))
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

        super().__init__(Handler)


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
