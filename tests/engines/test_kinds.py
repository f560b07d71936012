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


def engine_kind_branches(tree, kinds) -> list[int]:
    """Lines that compare with an engine kind's name (or a tuple of them), or key a dict by one."""
    import ast

    def literal(node) -> bool:
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return any(literal(e) for e in node.elts)
        return isinstance(node, ast.Constant) and node.value in kinds

    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(literal(o) for o in [node.left, *node.comparators]):
            lines.append(node.lineno)
        elif isinstance(node, ast.Dict) and any(k is not None and literal(k) for k in node.keys):
            lines.append(node.lineno)
        elif isinstance(node, ast.MatchValue) and literal(node.value):
            lines.append(node.lineno)
    return lines


def test_no_module_outside_the_engines_branches_on_an_engine_kind():
    import ast
    from pathlib import Path

    import factory
    from factory.engines import ENGINES

    package = Path(factory.__file__).resolve().parent
    found = {
        str(path.relative_to(package)): engine_kind_branches(ast.parse(path.read_text()), set(ENGINES))
        for path in package.rglob("*.py")
        if "engines" not in path.relative_to(package).parts
    }
    assert len(found) > 50
    assert {path: lines for path, lines in found.items() if lines} == {}


def test_the_engine_kind_scan_finds_a_branch():
    import ast

    code = 'if c.kind == "openai": pass\nx = kind in ("vllm", "llamacpp")\nhint = {"vllm": 1}[kind]\n'
    assert engine_kind_branches(ast.parse(code), {"openai", "vllm", "llamacpp"}) == [1, 2, 3]
    assert engine_kind_branches(ast.parse('if kind == "parquet": pass'), {"openai", "vllm", "llamacpp"}) == []


def test_the_config_asks_the_engine_kind_what_it_requires_and_whether_zero_temperature_votes_repeat():
    from factory.config import ConfigError, JudgeConfig, SamplingConfig

    assert [kind_of(k).required for k in sorted(ENGINES)] == [(), ("base_url",), ("model",)]
    with pytest.raises(ConfigError, match=r"^engine\.model: required when engine\.kind is vllm$"):
        EngineConfig(kind="vllm")
    with pytest.raises(ConfigError, match=r"^engine\.base_url: required when engine\.kind is openai$"):
        EngineConfig(kind="openai")
    zero = SamplingConfig(temperature=0.0)
    with pytest.raises(
        ConfigError, match=r"^judge\.votes: 3 votes at judge\.sampling\.temperature 0 would all be identical"
    ):
        JudgeConfig(votes=3, sampling=zero, engine=EngineConfig(kind="llamacpp"))
    served = EngineConfig(kind="openai", base_url="http://127.0.0.1:9/v1")
    assert JudgeConfig(votes=3, sampling=zero, engine=served).votes == 3  # a server's votes may differ
