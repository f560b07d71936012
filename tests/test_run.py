"""Preflight, fingerprints and redaction: the checks made before any request (no model, no Ray)."""

import json
from pathlib import Path

import pytest

from factory import config
from factory.config import ConfigError
from factory.run import fingerprints, preflight, redact

DEMO = Path(__file__).resolve().parent.parent / "conf" / "demo.yaml"


def test_missing_gguf_names_the_key_and_path(tmp_path):
    cfg = config.load(DEMO, [f"sampler.engine.model={tmp_path}/missing.gguf"])
    with pytest.raises(ConfigError, match=r"sampler\.engine\.model: GGUF file not found: .*missing\.gguf"):
        preflight(cfg)


def test_unset_api_key_variable_is_named(monkeypatch):
    monkeypatch.delenv("FACTORY_TEST_KEY", raising=False)
    cfg = config.load(
        DEMO,
        ["judge.engine.kind=openai", "judge.engine.base_url=http://127.0.0.1:9/v1", "judge.engine.model=m", "judge.engine.api_key_env=FACTORY_TEST_KEY"],
    )
    with pytest.raises(ConfigError, match=r"judge\.engine\.api_key_env: environment variable 'FACTORY_TEST_KEY' is not set"):
        preflight(cfg)


def test_missing_rubric_file_is_named(tmp_path):
    cfg = config.load(DEMO, [f"judge.rubric_file={tmp_path}/none.txt"])
    with pytest.raises(ConfigError, match=r"judge\.rubric_file: file not found"):
        preflight(cfg)


def test_sampler_fingerprint_ignores_k_but_not_sampling_params():
    base = fingerprints(config.load(DEMO))
    assert fingerprints(config.load(DEMO, ["sampler.k=8"])) == base
    hotter = fingerprints(config.load(DEMO, ["sampler.sampling.temperature=1.2"]))
    assert hotter["sampler"] != base["sampler"] and hotter["judge"] == base["judge"]


def test_judge_fingerprint_follows_the_rubric_text(tmp_path):
    rubric = tmp_path / "rubric.txt"
    rubric.write_text("Rate {answer} for {question} ({product_info}, {history}) from 0 to {scale_max}.")
    base = fingerprints(config.load(DEMO))
    other = fingerprints(config.load(DEMO, [f"judge.rubric_file={rubric}"]))
    assert other["judge"] != base["judge"] and other["sampler"] == base["sampler"]


def test_redact_masks_secret_looking_values_but_keeps_env_var_names():
    cfg = config.load(DEMO, ["sampler.engine.api_key_env=MY_KEY", "+sampler.engine.engine_kwargs.api_key=sk-live-123"])
    stored = json.dumps(redact(config.to_dict(cfg)))
    assert "sk-live-123" not in stored
    assert '"api_key_env": "MY_KEY"' in stored


def test_vllm_dtype_and_quantization_are_part_of_the_sampler_fingerprint():
    from factory.stages.sample import sampler_fingerprint

    base = config.load(DEMO, ["sampler.engine.kind=vllm", "sampler.engine.model=/m"]).sampler
    fp = sampler_fingerprint(base.engine, base.sampling, "/m", "t")
    for override in ("sampler.engine.dtype=float32", "sampler.engine.quantization=awq"):
        other = config.load(DEMO, ["sampler.engine.kind=vllm", "sampler.engine.model=/m", override]).sampler
        assert sampler_fingerprint(other.engine, other.sampling, "/m", "t") != fp
