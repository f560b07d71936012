"""The OpenAI-compatible engine against real HTTP servers on loopback.

Retries, Retry-After, timeouts and pacing: a scripted stdlib server (tests/engines/loopback.py) that
answers 429 / 5xx / slowly on demand. Token accounting against the in-process engine: the llama.cpp server
that xllamacpp runs (`LlamaCppEngine(...).base_url`). What every engine does (order, JSON schema, stop
strings, seeds, token counts, a prompt over the context, scores) is in tests/engines/test_conformance.py.
"""

from __future__ import annotations

import json
import socket
import time
from types import SimpleNamespace

import pytest

from factory.config import ConfigError, EngineConfig, SamplingConfig
from factory.engines.base import FatalEngineError, Request
from factory.engines.openai import OpenAIEngine, RatePacer, context_error, retry_after_s
from factory.stages.sample import sample_batch
from tests.engines.loopback import (
    ScriptedServer,
    chat_response,
    dropped,
    hang,
    malformed,
    no_choices,
    null_content,
    ok,
    rate_limited,
    server_error,
    unauthorized,
)


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def engine_for(url: str, **kw) -> OpenAIEngine:
    base = {"kind": "openai", "base_url": f"{url}/v1", "model": "m", "parallel": 4, "max_retries": 3, "backoff_s": 0.01}
    base.update(kw)
    return OpenAIEngine(EngineConfig(**base))


def one(engine: OpenAIEngine, request: Request | None = None):
    try:
        return engine.generate([request or Request(messages=chat("hi"), max_tokens=8, tag="t")])[0]
    finally:
        engine.close()


# -- retries --------------------------------------------------------------------------------------
def test_429_waits_for_retry_after_then_succeeds():
    script = [{"status": 429, "headers": {"Retry-After": "1"}, "body": {"error": {"message": "slow down"}}}, {}]
    with ScriptedServer(script) as server:
        done = one(engine_for(server.url, backoff_s=0.0))  # no backoff of our own: any wait is Retry-After's
        times = server.chat_times()
    assert done.error is None and done.text == "ok" and done.attempts == 2
    assert len(times) == 2 and times[1] - times[0] >= 0.95


def test_5xx_is_retried_with_backoff_until_it_succeeds():
    script = [{"status": 500, "body": {"error": {"message": "boom"}}}, {"status": 503, "body": {}}, {}]
    with ScriptedServer(script) as server:
        done = one(engine_for(server.url))
        assert len(server.chat_requests()) == 3
    assert done.error is None and done.attempts == 3


def test_persistent_5xx_becomes_a_row_error_after_max_retries():
    with ScriptedServer([{"status": 502, "body": {"error": {"message": "bad gateway"}}}]) as server:
        done = one(engine_for(server.url, max_retries=2))
        assert len(server.chat_requests()) == 3  # 1 + max_retries, never more
    assert done.error == "HTTP 502: bad gateway (after 3 attempts)" and done.attempts == 3


def test_a_4xx_is_not_retried():
    with ScriptedServer([{"status": 404, "body": {"error": {"message": "no such model"}}}]) as server:
        done = one(engine_for(server.url))
        assert len(server.chat_requests()) == 1
    assert done.error == "HTTP 404: no such model" and done.attempts == 1


def test_a_context_overflow_is_reported_as_prompt_length():
    message = (
        "This model's maximum context length is 2048 tokens. However, your prompt contains at least 2049 "
        "input tokens, which exceeds this limit even without any output tokens."
    )
    with ScriptedServer([{"status": 400, "body": {"error": {"message": message}}}]) as server:
        done = one(engine_for(server.url))
    assert done.error == "prompt has 2049 tokens, max_model_len 2048"
    llama = {"error": {"type": "exceed_context_size_error", "n_prompt_tokens": 900, "n_ctx": 512, "message": "x"}}
    assert context_error("x", llama, 4096) == "prompt has 900 tokens, max_model_len 512"
    assert context_error("invalid temperature", {"error": {"message": "x"}}, 4096) is None


def test_a_request_over_its_timeout_is_retried_then_recorded():
    with ScriptedServer([{"delay": 3.0}]) as server:
        start = time.monotonic()
        done = one(engine_for(server.url, request_timeout_s=0.5, max_retries=1))
        assert len(server.chat_requests()) == 2
    assert done.error.startswith("timeout after") and done.error.endswith("(after 2 attempts)")
    assert time.monotonic() - start < 2.9  # never waited for the slow answer


def test_a_refused_connection_is_retried_then_recorded():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    done = one(engine_for(f"http://127.0.0.1:{port}", max_retries=2))
    # Tried 3 times, but a refused connection sends nothing: no attempt is counted (nor billed).
    assert done.error.startswith("connection error") and done.error.endswith("(after 3 attempts, none sent)")
    assert done.attempts == 0


def test_retry_after_forms():
    assert retry_after_s({"retry-after": "3"}) == 3.0
    assert retry_after_s({"retry-after-ms": "250"}) == 0.25
    assert (
        9
        < retry_after_s({"retry-after": time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 10))})
        <= 10
    )
    assert retry_after_s({}) is None


# -- what is sent and read ------------------------------------------------------------------------
def test_reasoning_content_and_reasoning_tokens_are_read(monkeypatch):
    body = chat_response("The answer.", reasoning="Let me think.", reasoning_tokens=3)
    monkeypatch.setenv("FACTORY_TEST_API_KEY", "sk-test-123")
    with ScriptedServer([{"body": body}]) as server:
        engine = engine_for(server.url, api_key_env="FACTORY_TEST_API_KEY")
        try:
            (row,) = sample_batch(
                engine,
                [{"prompt_id": "p", "sample_idx": 0, "seed": 1, "messages": chat("q")}],
                None,
                SamplingConfig(),
                "fp",
            )
        finally:
            engine.close()
        assert server.headers[0]["authorization"] == "Bearer sk-test-123"
    assert (row["reasoning"], row["answer"]) == ("Let me think.", "The answer.")
    assert (row["reasoning_tokens"], row["answer_tokens"], row["completion_tokens"], row["prompt_tokens"]) == (
        3,
        2,
        5,
        7,
    )


@pytest.mark.parametrize("style", ["openai", "deepseek"])
def test_cached_prompt_tokens_are_read_from_either_usage_form(style):
    """usage.prompt_tokens_details.cached_tokens (OpenAI, vLLM) or prompt_cache_hit_tokens (DeepSeek): stored
    on the sample row beside prompt_tokens."""
    body = chat_response("The answer.", cached_tokens=5, cache_style=style)
    with ScriptedServer([{"body": body}]) as server:
        engine = engine_for(server.url)
        try:
            work = [{"prompt_id": "p", "sample_idx": 0, "seed": 1, "messages": chat("q")}]
            (row,) = sample_batch(engine, work, None, SamplingConfig(), "fp")
        finally:
            engine.close()
    assert (row["prompt_tokens"], row["cached_tokens"]) == (7, 5)


def test_a_cached_count_that_is_not_a_count_within_the_prompt_is_not_believed():
    """A negative, a non-integer, or more cached tokens than the prompt has (7): no cached count (the prompt
    is priced in full); a server that says nothing: none either. (DeepSeek's field, which the client does not
    type: the client's own model turns "5" into 5 in prompt_tokens_details.)"""
    bodies = {"neg": -1, "over": 8, "text": "5", "flag": True, "none": None, "ok": 7}
    script = {
        name: [{"body": chat_response(name, cached_tokens=value, cache_style="deepseek")}]
        for name, value in bodies.items()
    }
    with ScriptedServer(script) as server:
        engine = engine_for(server.url)
        try:
            done = engine.generate([Request(messages=chat(name), max_tokens=8, tag=name) for name in bodies])
        finally:
            engine.close()
    believed = {c.tag: c.cached_tokens for c in done}
    assert believed == {"neg": None, "over": None, "text": None, "flag": None, "none": None, "ok": 7}


def test_request_fields_and_json_schema_go_out_as_response_format():
    schema = {"type": "object", "properties": {"score": {"type": "integer"}}, "required": ["score"]}
    request = Request(
        messages=chat("rate"), max_tokens=17, temperature=0.3, top_p=0.9, seed=42, json_schema=schema, tag=1
    )
    with ScriptedServer([{}]) as server:
        one(engine_for(server.url, model="deepseek-reasoner"), request)
        (sent,) = server.chat_requests()
    assert {k: sent[k] for k in ("model", "max_tokens", "temperature", "top_p", "seed")} == {
        "model": "deepseek-reasoner", "max_tokens": 17, "temperature": 0.3, "top_p": 0.9, "seed": 42
    }  # fmt: skip
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["schema"] == schema


def test_unreadable_tokenizer_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="engine.tokenizer: no tokenizer.json"):
        engine_for("http://127.0.0.1:9", tokenizer=str(tmp_path))


# -- limits ---------------------------------------------------------------------------------------
def test_rpm_spaces_requests_out():
    with ScriptedServer([{}]) as server:
        engine = engine_for(server.url, rpm=120, parallel=8)  # one request per 0.5 s
        try:
            out = engine.generate([Request(messages=chat("hi"), max_tokens=8, tag=i) for i in range(5)])
        finally:
            engine.close()
        times = sorted(server.chat_times())
    assert all(c.error is None for c in out)
    # Spaced out (unspaced requests arrive within ~0 s); slack for arrival jitter on a loaded machine.
    assert times[-1] - times[0] >= 4 * 0.5 - 0.3


def test_tpm_charges_the_tokens_actually_used():
    # 600 tokens/min = 10/s. Each request reserves its prompt + max_tokens (~100) up front, then is refunded
    # down to the 12 tokens the server reports: three requests in a row take ~2.4 s, not ~20 s.
    with ScriptedServer([{}]) as server:
        engine = engine_for(server.url, tpm=600, parallel=1)
        start = time.monotonic()
        try:
            out = engine.generate([Request(messages=chat("hi"), max_tokens=100, tag=i) for i in range(3)])
        finally:
            engine.close()
        elapsed = time.monotonic() - start
    assert all(c.error is None for c in out)
    assert 2 * 1.2 - 0.1 <= elapsed < 10


def test_pacer_is_fifo_and_refunds():
    import asyncio

    async def go():
        pacer = RatePacer(per_minute=600)  # 0.1 s per unit
        await pacer.acquire(1)
        pacer.refund(1)
        start = time.monotonic()
        await pacer.acquire(1)  # refunded: no wait
        await pacer.acquire(1)  # waits one interval
        return time.monotonic() - start

    assert 0.09 <= asyncio.run(go()) < 1.0


# -- against a real server: llama.cpp through xllamacpp --------------------------------------------
@pytest.fixture(scope="module")
def llama():
    from factory.engines.llamacpp import LlamaCppEngine

    server = LlamaCppEngine(EngineConfig(kind="llamacpp", parallel=2, cpus_per_replica=2, max_model_len=512))
    yield server
    server.close()


@pytest.fixture()
def api(llama):
    engine = engine_for(llama.base_url, parallel=2, max_model_len=512, tokenizer="server", model="smollm2")
    yield engine
    engine.close()


@pytest.mark.slow
def test_token_accounting_matches_the_in_process_engine(llama, api):
    # The same model answered twice, in process and over HTTP, gives the same rows and the same counts.
    sampling = SamplingConfig(temperature=0.0, top_p=1.0, max_tokens=12)
    rows = [{"prompt_id": "p", "sample_idx": i, "seed": 7 + i, "messages": chat(f"Say {i} words.")} for i in range(2)]
    direct = sample_batch(llama, rows, None, sampling, "fp")
    http = sample_batch(api, rows, None, sampling, "fp")
    fields = ("answer", "reasoning_tokens", "answer_tokens", "completion_tokens", "prompt_tokens", "finish_reason")
    for a, b in zip(direct, http):
        assert {k: a[k] for k in fields} == {k: b[k] for k in fields}
        assert b["reasoning_tokens"] + b["answer_tokens"] == b["completion_tokens"] > 0


def test_the_api_example_reads_its_key_from_the_named_variable(monkeypatch):
    from pathlib import Path

    from factory import config
    from factory.graph import RunGraph
    from factory.rundir.secrets import redact

    def preflight(cfg):
        RunGraph(cfg).preflight()

    path = Path(__file__).resolve().parents[2] / "conf" / "r1_api.yaml"
    monkeypatch.delenv("DEEPSEEK_API_KEY", raising=False)
    with pytest.raises(ConfigError, match=r"sampler\.engine\.api_key_env: environment variable 'DEEPSEEK_API_KEY'"):
        preflight(config.load(path))
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-secret-value")
    student = Path(__file__).resolve().parents[1] / "pairs" / "fixtures" / "templates" / "deepseek_r1_distill"
    cfg = config.load(path, [f"export.template={student}"])  # the shipped config names /models/...: here a copy
    preflight(cfg)
    assert "sk-secret-value" not in json.dumps(redact(config.to_dict(cfg)))


# -- faults: each one request's own, counted per attempt ------------------------------------------
# (step, what the request's error says when the fault persists)
FAULTS = {
    "429": (rate_limited("0.05"), "HTTP 429: slow down"),
    "500": (server_error(500), "HTTP 500: server error 500"),
    "503": (server_error(503), "HTTP 503: server error 503"),
    "hang": (hang(30), "timeout after"),
    "malformed": (malformed(), "malformed reply: JSONDecodeError"),
    "dropped": (dropped(), "connection error after"),
    "no_choices": (no_choices(), "the API returned no choices"),
    "null_content": (null_content(), "the API returned no content"),
}


def fault_engine(url: str, **kw) -> OpenAIEngine:
    return engine_for(url, max_retries=2, request_timeout_s=0.5, parallel=16, **kw)


@pytest.mark.parametrize("name", FAULTS)
def test_a_fault_once_is_retried_and_the_retry_is_used(name):
    step, _ = FAULTS[name]
    with ScriptedServer([step, ok("second try")]) as server:
        done = one(fault_engine(server.url))
        received = len(server.chat_requests())
    assert (done.error, done.text, done.attempts, received) == (None, "second try", 2, 2)


@pytest.mark.parametrize("name", FAULTS)
def test_a_persistent_fault_is_the_requests_error_after_its_retries(name):
    step, reason = FAULTS[name]
    with ScriptedServer([step]) as server:
        done = one(fault_engine(server.url))
        received = len(server.chat_requests())
    assert done.error.startswith(reason) and done.error.endswith("(after 3 attempts)")
    assert (done.attempts, received, done.text) == (3, 3, "")


def test_mixed_faults_in_one_batch_fail_only_their_own_request():
    script = {f"good-{i}": [ok(f"answer {i}")] for i in range(6)}
    script |= {f"once-{name}": [step, ok(f"recovered {name}")] for name, (step, _) in FAULTS.items()}
    script |= {f"always-{name}": [step] for name, (step, _) in FAULTS.items()}
    keys = list(script)
    finished = []
    with ScriptedServer(script) as server:
        engine = fault_engine(server.url)
        try:
            out = engine.generate(
                [Request(messages=chat(key), max_tokens=8, tag=key) for key in keys], on_done=finished.append
            )
            answered = engine.finished
        finally:
            engine.close()
        received = {key: server.count(key) for key in keys}
        total = len(server.chat_requests())
    by_tag = {c.tag: c for c in out}
    assert [c.tag for c in out] == keys and sorted(c.tag for c in finished) == sorted(keys) and answered == len(keys)
    for i in range(6):  # the good requests of the batch: sent once, answered, never re-sent
        good = by_tag[f"good-{i}"]
        assert (good.error, good.text, good.attempts, received[f"good-{i}"]) == (None, f"answer {i}", 1, 1)
    for name, (_, reason) in FAULTS.items():
        once, always = by_tag[f"once-{name}"], by_tag[f"always-{name}"]
        assert (once.error, once.text, once.attempts, received[f"once-{name}"]) == (None, f"recovered {name}", 2, 2)
        assert always.error.startswith(reason) and always.error.endswith("(after 3 attempts)")
        assert (always.attempts, received[f"always-{name}"]) == (3, 3)
    assert sum(c.attempts for c in out) == total == 6 + 2 * len(FAULTS) + 3 * len(FAULTS)


def test_an_exception_inside_one_request_never_escapes_generate():
    class Completions:
        async def create(self, **body):
            if body["messages"][-1]["content"] == "boom":
                raise RuntimeError("client bug")
            return SimpleNamespace(
                choices=[
                    SimpleNamespace(message=SimpleNamespace(content="fine", model_extra={}), finish_reason="stop")
                ],
                usage=None,
            )

    client = SimpleNamespace(chat=SimpleNamespace(completions=Completions()), close=_aclose)
    engine = OpenAIEngine(
        EngineConfig(kind="openai", base_url="http://127.0.0.1:9/v1", model="m", max_retries=1, backoff_s=0.0),
        client=client,
    )
    try:
        out = engine.generate([Request(messages=chat(t), max_tokens=4, tag=t) for t in ("a", "boom", "b")])
    finally:
        engine.close()
    assert [(c.tag, c.text, c.error, c.attempts) for c in out] == [
        ("a", "fine", None, 1),
        ("boom", "", "RuntimeError: client bug (after 2 attempts)", 2),
        ("b", "fine", None, 1),
    ]


async def _aclose() -> None:
    return None


# -- credentials: a refused key stops the run; no secret in any error --------------------------------
@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_raises_fatal_after_one_attempt_and_sends_nothing_more(monkeypatch, status):
    monkeypatch.setenv("FACTORY_TEST_API_KEY", "sk-live-abcdef123456")
    with ScriptedServer([unauthorized(status)]) as server:
        engine = fault_engine(server.url, api_key_env="FACTORY_TEST_API_KEY")
        try:
            with pytest.raises(FatalEngineError) as raised:
                engine.generate([Request(messages=chat("hi"), max_tokens=8, tag="t")])
            assert len(server.chat_requests()) == 1  # one attempt, no retry
            with pytest.raises(FatalEngineError):  # a later batch is refused without a request
                engine.generate([Request(messages=chat("again"), max_tokens=8, tag="u")])
        finally:
            engine.close()
        assert len(server.chat_requests()) == 1
    message = str(raised.value)
    assert "engine.api_key_env" in message and "'FACTORY_TEST_API_KEY'" in message and f"HTTP {status}" in message
    assert "sk-live-abcdef123456" not in message and "abcdef" not in message and "\n" not in message


def test_a_refused_key_in_a_batch_stops_it_without_waiting_for_the_rest():
    script = {"slow-1": [hang(30)], "slow-2": [hang(30)], "refused": [unauthorized()]}
    with ScriptedServer(script) as server:
        engine = engine_for(server.url, request_timeout_s=60, parallel=4)
        start = time.monotonic()
        try:
            with pytest.raises(FatalEngineError, match="engine.api_key_env is empty"):
                engine.generate([Request(messages=chat(key), max_tokens=8, tag=key) for key in script])
            elapsed = time.monotonic() - start
        finally:
            engine.close()
        assert server.count("refused") == 1
    assert elapsed < 10  # the hung requests were cancelled, not waited for


def test_a_server_that_echoes_the_key_gets_no_secret_into_the_row_error(monkeypatch):
    monkeypatch.setenv("FACTORY_TEST_API_KEY", "sk-live-abcdef123456")
    echo_400 = {"status": 400, "echo_auth": True}
    echo_500 = {"status": 500, "body": {"error": {"message": "bad upstream key=sk-live-abcdef123456\nretry"}}}
    with ScriptedServer({"a": [echo_400], "b": [echo_500]}) as server:
        engine = fault_engine(server.url, api_key_env="FACTORY_TEST_API_KEY")
        try:
            out = engine.generate([Request(messages=chat(key), max_tokens=8, tag=key) for key in ("a", "b")])
        finally:
            engine.close()
        assert server.headers[0]["authorization"] == "Bearer sk-live-abcdef123456"  # the key was sent
    assert out[0].error == "HTTP 400: Incorrect API key provided: Bearer ***"
    assert out[1].error == "HTTP 500: bad upstream key=*** retry (after 3 attempts)"  # and on one line


def test_credentials_in_base_url_never_reach_a_row_error():
    echo_400 = {"status": 400, "echo_auth": True}  # the client sends them as Basic auth: echoed encoded
    echo_500 = {"status": 500, "body": {"error": {"message": "login alice:hunter22 failed"}}}
    with ScriptedServer({"a": [echo_400], "b": [echo_500]}) as server:
        engine = fault_engine(server.url.replace("http://", "http://alice:hunter22@"))
        try:
            out = engine.generate([Request(messages=chat(key), max_tokens=8, tag=key) for key in ("a", "b")])
        finally:
            engine.close()
        sent_auth = server.headers[0]["authorization"]
    assert sent_auth == "Basic YWxpY2U6aHVudGVyMjI="  # base64 of alice:hunter22
    assert out[0].error == "HTTP 400: Incorrect API key provided: Basic ***"
    assert out[1].error == "HTTP 500: login alice:*** failed (after 3 attempts)"


# -- scoring: a reward model behind a vLLM server's pooling routes ----------------------------------
def conversation(answer: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "Be a host."},
        *chat("Is link 3 in stock?"),
        {"role": "assistant", "content": answer},
    ]


def score_one(engine: OpenAIEngine, request=None):
    from factory.engines.base import ScoreRequest

    try:
        return engine.score([request or ScoreRequest(messages=conversation("Yes!"), tag="t")])[0]
    finally:
        engine.close()


@pytest.mark.parametrize(
    ("route", "values", "label", "expected"),
    [("classify", [0.25, -1.5], 1, -1.5), ("pooling", [2.0], 0, 2.0), ("score", [0.75], 0, 0.75)],
)
def test_each_scoring_route_posts_at_the_server_root_and_reads_its_output(route, values, label, expected):
    from factory.engines.base import ScoreRequest
    from tests.engines.loopback import score_response

    with ScriptedServer([{"body": score_response(values, route, prompt_tokens=31)}]) as server:
        request = ScoreRequest(messages=conversation("Yes!"), route=route, label=label, tag=("p", 0))
        got = score_one(engine_for(server.url), request)
        ((path, body),) = server.score_requests()
    assert (got.tag, got.value, got.error, got.prompt_tokens, got.attempts) == (("p", 0), expected, None, 31, 1)
    assert path == f"/{route}" and body["model"] == "m" and body["use_activation"] is False
    if route == "score":
        assert (body["text_1"], body["text_2"]) == ("Be a host.\n\nIs link 3 in stock?", "Yes!")
    else:
        assert body["messages"] == conversation("Yes!") and body.get("task") == (
            "classify" if route == "pooling" else None
        )


def test_scoring_bodies_and_replies_are_the_installed_vllm_servers_own():
    """Our request bodies validate as the installed vLLM's request models, and the loopback replies the
    tests parse validate as its response models (so neither side is a guess)."""
    pytest.importorskip("vllm")
    from pydantic import TypeAdapter
    from vllm.entrypoints.pooling.classify.protocol import ClassificationRequest, ClassificationResponse
    from vllm.entrypoints.pooling.pooling.protocol import PoolingRequest, PoolingResponse
    from vllm.entrypoints.pooling.scoring.protocol import ScoreRequest as VLLMScoreRequest
    from vllm.entrypoints.pooling.scoring.protocol import ScoreResponse

    from factory.engines.base import ScoreRequest
    from tests.engines.loopback import score_response

    models = {
        "classify": (ClassificationRequest, ClassificationResponse, "ClassificationChatRequest"),
        "pooling": (PoolingRequest, PoolingResponse, "PoolingChatRequest"),
        "score": (VLLMScoreRequest, ScoreResponse, "ScoreTextRequest"),
    }
    engine = engine_for("http://127.0.0.1:9")
    try:
        for route, (request_model, response_model, kind) in models.items():
            body = engine._score_body(ScoreRequest(messages=conversation("Yes!"), route=route, activation=True))
            parsed = TypeAdapter(request_model).validate_python(body)
            assert type(parsed).__name__ == kind and parsed.use_activation is True
            response_model.model_validate(score_response([0.5, 1.5], route))
    finally:
        engine.close()


def test_a_scoring_fault_is_retried_alone_and_a_context_overflow_is_the_rows_error():
    from factory.engines.base import ScoreRequest
    from tests.engines.loopback import score_response

    overflow = {
        "status": 400,
        "body": {
            "error": {
                "message": (  # vllm/renderers/params.py, pooling has no output
                    "This model's maximum context length is 512 tokens. However, your prompt contains 700 input "
                    "tokens, which "
                    "exceeds this limit even without any output tokens. Please reduce the length of the input prompt."
                )
            }
        },
    }
    script = {
        "flaky": [rate_limited("0"), server_error(503), {"body": score_response(1.25)}],
        "long": [overflow],
        "garbled": [malformed(), {"body": {"object": "list", "data": []}}],
        "fine": [{"body": score_response(-0.5)}],
    }
    with ScriptedServer(script) as server:
        engine = engine_for(server.url, max_retries=1)
        try:
            got = engine.score([ScoreRequest(messages=conversation(k), tag=k) for k in script])
        finally:
            engine.close()
        asked = [body["messages"][-1]["content"] for _, body in server.score_requests("classify")]
        counts = {k: asked.count(k) for k in script}
    by_tag = {s.tag: s for s in got}
    assert [s.tag for s in got] == list(script)
    assert (by_tag["fine"].value, by_tag["fine"].attempts) == (-0.5, 1)
    assert by_tag["flaky"].error == "HTTP 503: server error 503 (after 2 attempts)" and by_tag["flaky"].value is None
    assert by_tag["long"].error == "prompt has 700 tokens, max_model_len 512" and by_tag["long"].attempts == 1
    assert by_tag["garbled"].error.startswith("the /classify reply holds no data") and by_tag["garbled"].attempts == 2
    assert counts == {"flaky": 2, "long": 1, "garbled": 2, "fine": 1}  # each retried alone, max_retries + 1 at most


def test_a_refused_key_stops_scoring_too(monkeypatch):
    from factory.engines.base import ScoreRequest

    monkeypatch.setenv("FACTORY_TEST_KEY", "sk-score-secret-123")
    with ScriptedServer([unauthorized(401)]) as server:
        engine = engine_for(server.url, api_key_env="FACTORY_TEST_KEY")
        with pytest.raises(FatalEngineError, match="FACTORY_TEST_KEY") as caught:
            score_one(engine, ScoreRequest(messages=conversation("Yes!"), tag="t"))
        assert len(server.score_requests()) == 1
    assert "sk-score-secret-123" not in str(caught.value)
