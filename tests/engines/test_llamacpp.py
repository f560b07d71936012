"""The llama.cpp engine against the real embedded model (tiny max_tokens)."""

import json

import pytest

from factory.config import EngineConfig
from factory.engines import build_engine
from factory.engines.base import Request
from factory.engines.llamacpp import embedded_model_path, resolve_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine():
    engine = build_engine(EngineConfig(kind="llamacpp", parallel=2, cpus_per_replica=2, max_model_len=512))
    yield engine
    engine.close()


def chat(text):
    return [{"role": "user", "content": text}]


def test_embedded_model_is_found_offline():
    assert embedded_model_path().is_file()


def test_missing_gguf_is_one_clear_error_naming_the_path(tmp_path):
    missing = tmp_path / "nope.gguf"
    with pytest.raises(FileNotFoundError, match=f"engine.model: GGUF file not found: {missing}"):
        resolve_model(EngineConfig(model=str(missing)))


def test_generate_returns_one_completion_per_request_in_order(engine):
    requests = [Request(messages=chat(f"Count to {i}."), max_tokens=8, seed=i, tag=f"t{i}") for i in range(3)]
    out = engine.generate(requests)
    assert [c.tag for c in out] == ["t0", "t1", "t2"]
    for c in out:
        assert c.error is None and c.text
        assert 1 <= c.completion_tokens <= 8 and c.prompt_tokens > 0
        assert c.finish_reason in ("stop", "length")


def test_same_seed_same_text(engine):
    a, b = engine.generate([Request(messages=chat("Name a fruit."), max_tokens=8, temperature=1.0, seed=5, tag=i) for i in range(2)])
    assert a.text == b.text


def test_json_schema_constrains_the_output(engine):
    schema = {"type": "object", "properties": {"score": {"type": "integer", "minimum": 0, "maximum": 100}}, "required": ["score"]}
    (c,) = engine.generate([Request(messages=chat("Rate this reply from 0 to 100: 'yes'."), max_tokens=24, json_schema=schema, tag=0)])
    assert 0 <= json.loads(c.text)["score"] <= 100


def test_prompt_over_the_context_is_a_row_error_not_a_crash(engine):
    out = engine.generate(
        [Request(messages=chat("word " * 2000), max_tokens=4, tag="long"), Request(messages=chat("Hi"), max_tokens=4, tag="ok")]
    )
    assert out[0].error.startswith("prompt has ") and "max_model_len 512" in out[0].error
    assert out[1].error is None and out[1].text


def test_count_tokens_uses_the_model_tokenizer(engine):
    counts = engine.count_tokens(["hello world", "", "hello world hello world"])
    assert counts[1] == 0 and 0 < counts[0] < counts[2]
