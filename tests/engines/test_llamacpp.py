"""The llama.cpp engine against the real embedded model (tiny max_tokens)."""

import json

import pytest

from factory.config import EngineConfig
from factory.engines import build_engine
from factory.engines.base import Request
from factory.engines.llamacpp import embedded_model_path, resolve_model


@pytest.fixture(scope="module")
def engine():
    engine = build_engine(EngineConfig(kind="llamacpp", parallel=2, cpus_per_replica=2, max_model_len=512))
    yield engine
    engine.close()


def chat(text):
    return [{"role": "user", "content": text}]


@pytest.mark.slow
def test_embedded_model_is_found_offline():
    assert embedded_model_path().is_file()


def test_missing_gguf_is_one_clear_error_naming_the_path(tmp_path):
    missing = tmp_path / "nope.gguf"
    with pytest.raises(FileNotFoundError, match=f"engine.model: GGUF file not found: {missing}"):
        resolve_model(EngineConfig(model=str(missing)))


@pytest.mark.slow
def test_generate_returns_one_completion_per_request_in_order(engine):
    requests = [Request(messages=chat(f"Count to {i}."), max_tokens=8, seed=i, tag=f"t{i}") for i in range(3)]
    out = engine.generate(requests)
    assert [c.tag for c in out] == ["t0", "t1", "t2"]
    for c in out:
        assert c.error is None and c.text
        assert 1 <= c.completion_tokens <= 8 and c.prompt_tokens > 0
        assert c.finish_reason in ("stop", "length")


@pytest.mark.slow
def test_same_seed_same_text(engine):
    a, b = engine.generate(
        [Request(messages=chat("Name a fruit."), max_tokens=8, temperature=1.0, seed=5, tag=i) for i in range(2)]
    )
    assert a.text == b.text


@pytest.mark.slow
def test_stop_strings_end_the_reply_before_them(engine):
    prompt = chat("Write the numbers from 1 to 30, one per line.")
    free, stopped = engine.generate(
        [Request(messages=prompt, max_tokens=48, temperature=0.0, seed=1, tag=t, stop=s) for t, s in ((0, None), (1, ["\n"]))]
    )
    assert "\n" in free.text.strip()  # without stop the model writes several lines...
    assert stopped.text and "\n" not in stopped.text.strip() and stopped.finish_reason == "stop"  # ...with it, one
    assert stopped.completion_tokens < free.completion_tokens


@pytest.mark.slow
def test_json_schema_constrains_the_output(engine):
    schema = {
        "type": "object",
        "properties": {"score": {"type": "integer", "minimum": 0, "maximum": 100}},
        "required": ["score"],
    }
    (c,) = engine.generate(
        [Request(messages=chat("Rate this reply from 0 to 100: 'yes'."), max_tokens=24, json_schema=schema, tag=0)]
    )
    assert 0 <= json.loads(c.text)["score"] <= 100


@pytest.mark.slow
def test_prompt_over_the_context_is_a_row_error_not_a_crash(engine):
    out = engine.generate(
        [
            Request(messages=chat("word " * 2000), max_tokens=4, tag="long"),
            Request(messages=chat("Hi"), max_tokens=4, tag="ok"),
        ]
    )
    assert out[0].error.startswith("prompt has ") and "max_model_len 512" in out[0].error
    assert out[1].error is None and out[1].text


@pytest.mark.slow
def test_count_tokens_uses_the_model_tokenizer(engine):
    counts = engine.count_tokens(["hello world", "", "hello world hello world"])
    assert counts[1] == 0 and 0 < counts[0] < counts[2]


# -- per-request failures, against a scripted stand-in for the binding (no model loaded) -------------
class ScriptedBinding:
    """Answers handle_chat_completions by the last message's content: attempt n takes step n (the last
    repeats); a step is a reply dict, or an exception to raise. Counts every call."""

    def __init__(self, script):
        self.script, self.calls = script, []

    def handle_chat_completions(self, body):
        key = body["messages"][-1]["content"]
        self.calls.append(key)
        steps = self.script[key]
        step = steps[min(self.calls.count(key), len(steps)) - 1]
        if isinstance(step, Exception):
            raise step
        return step


def reply(content="ok"):
    return {"choices": [{"message": {"content": content}, "finish_reason": "stop"}], "usage": {"completion_tokens": 1}}


def test_a_bad_reply_fails_only_its_own_request_after_its_retries(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    script = {
        "good": [reply("fine")],
        "raises-once": [RuntimeError("slot crashed"), reply("recovered")],
        "no-choices": [{"choices": []}],
        "null-content": [reply(None)],
        "not-a-dict": ["garbage"],
        "too-long": [{"error": {"type": "exceed_context_size_error", "n_prompt_tokens": 900, "message": "x"}}],
    }
    binding = ScriptedBinding(script)
    from factory.engines.llamacpp import LlamaCppEngine

    engine = LlamaCppEngine(
        EngineConfig(kind="llamacpp", model=str(gguf), max_retries=2, max_model_len=512), server=binding
    )
    finished = []
    try:
        out = engine.generate([Request(messages=chat(k), max_tokens=4, tag=k) for k in script], on_done=finished.append)
    finally:
        engine.close()
    got = {c.tag: (c.text, c.error, c.attempts) for c in out}
    assert got == {
        "good": ("fine", None, 1),
        "raises-once": ("recovered", None, 2),
        "no-choices": ("", "the server returned no choices (after 3 attempts)", 3),
        "null-content": ("", "the server returned no content (finish_reason 'stop') (after 3 attempts)", 3),
        "not-a-dict": ("", "malformed reply: not a chat completion (str) (after 3 attempts)", 3),
        "too-long": ("", "prompt has 900 tokens, max_model_len 512", 1),
    }
    assert sum(c.attempts for c in out) == len(binding.calls) and len(finished) == engine.finished == len(script)
