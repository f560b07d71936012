"""Engine capabilities (EngineKind): what the run asks of a kind without building an engine, and that it
agrees with the engine the kind builds (no model is loaded)."""

import pytest

from factory.config import EngineConfig
from factory.engines import ENGINES, kind_of
from factory.engines.base import Resources


@pytest.mark.parametrize("kind", sorted(ENGINES))
def test_a_kind_scores_exactly_when_its_engine_can(kind):
    found = kind_of(kind)
    assert found.name == kind
    engine_class = found.engine_class()
    assert bool(found.score_routes) == callable(getattr(engine_class, "score", None))


def test_resources_of_a_replica():
    cpu = EngineConfig(kind="llamacpp")
    assert kind_of(cpu).resources(cpu) == Resources()
    tp = EngineConfig(kind="vllm", model="m", tensor_parallel_size=2)
    resources = kind_of(tp).resources(tp)
    assert resources.gpus == 2 and resources.actor_options == {"num_gpus": 0}
    assert resources.bundles == ([{"GPU": 1.0, "CPU": 1.0}, {"GPU": 1.0}], "STRICT_PACK")
    assert kind_of("vllm").resources(EngineConfig(kind="vllm", model="m", device="cpu")).gpus == 0


def test_credentials_are_asked_of_the_kind(monkeypatch):
    monkeypatch.delenv("FACTORY_TEST_KEY", raising=False)
    api = EngineConfig(kind="openai", base_url="http://127.0.0.1:9/v1", model="m", api_key_env="FACTORY_TEST_KEY")
    assert kind_of(api).missing_credentials(api) == "api_key_env: environment variable 'FACTORY_TEST_KEY' is not set"
    monkeypatch.setenv("FACTORY_TEST_KEY", "sk-x")
    assert kind_of(api).missing_credentials(api) is None
    assert kind_of("llamacpp").missing_credentials(EngineConfig()) is None


def test_weights_enter_the_fingerprint_only_where_they_change_what_the_model_says():
    vllm = EngineConfig(kind="vllm", model="m", dtype="bfloat16", quantization="fp8")
    assert kind_of(vllm).weights(vllm) == {"dtype": "bfloat16", "quantization": "fp8"}
    assert kind_of("openai").weights(EngineConfig(kind="openai", base_url="http://x/v1", model="m")) == {}


def test_token_counter_without_a_tokenizer_says_why():
    count, how = kind_of("openai").token_counter(EngineConfig(kind="openai", base_url="http://x/v1", model="m"))
    assert count is None and "no tokenizer" in how
