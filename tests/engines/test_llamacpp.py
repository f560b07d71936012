"""The llama.cpp engine: finding the embedded model, and per-request failures against a scripted binding. What every
engine does (order, JSON schema, stop strings, seeds, token counts, a prompt over the context) is checked on the
real embedded model in tests/engines/test_conformance.py."""

import pytest

from factory.config import EngineConfig
from factory.engines.base import Request
from factory.engines.llamacpp import embedded_model_path, resolve_model


def chat(text):
    return [{"role": "user", "content": text}]


@pytest.mark.slow
def test_embedded_model_is_found_offline():
    assert embedded_model_path().is_file()


def test_missing_gguf_is_one_clear_error_naming_the_path(tmp_path):
    missing = tmp_path / "nope.gguf"
    with pytest.raises(FileNotFoundError, match=f"engine.model: GGUF file not found: {missing}"):
        resolve_model(EngineConfig(model=str(missing)))


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
