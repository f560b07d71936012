from pathlib import Path

from factory import config
from factory.config import EngineConfig
from factory.rundir.secrets import redact_url, scrub, scrub_all, secret_values

DEMO = Path(__file__).resolve().parents[2] / "conf" / "demo.yaml"


def test_secret_values_of_a_run_config_cover_both_engines_and_url_credentials(monkeypatch):
    monkeypatch.setenv("SAMPLER_KEY", "sk-sampler-0001")
    monkeypatch.setenv("JUDGE_KEY", "sk-judge-0002")
    cfg = config.load(
        DEMO,
        [
            "sampler.engine.kind=openai", "sampler.engine.model=m", "sampler.engine.api_key_env=SAMPLER_KEY",
            "sampler.engine.base_url=https://bob:p%40ssw0rd@api.example.test/v1",
            "judge.engine.kind=openai", "judge.engine.model=m", "judge.engine.api_key_env=JUDGE_KEY",
            "judge.engine.base_url=https://tok3n-as-user@judge.example.test/v1",
            "+judge.engine.engine_kwargs.api_key=kwarg-secret",
        ],
    )  # fmt: skip
    found = secret_values(cfg)
    assert {"sk-sampler-0001", "sk-judge-0002", "p%40ssw0rd", "p@ssw0rd", "tok3n-as-user", "kwarg-secret"} <= found
    assert "bob" not in found and "SAMPLER_KEY" not in found  # a user name beside a password, a variable's name


def test_unset_variables_and_short_values_are_not_secrets():
    found = secret_values(EngineConfig(kind="openai", base_url="http://u:ab@h/v1", api_key_env="NOT_SET_ANYWHERE"))
    assert found == {"dTphYg=="}  # only the Basic token of u:ab; '' and 'ab' are never scrubbed


def test_scrub_masks_every_secret_longest_first():
    secrets = {"sk-abc", "sk-abc-long"}
    assert scrub("key sk-abc-long and sk-abc.", secrets) == "key *** and ***."
    assert scrub(None, secrets) is None and scrub("", secrets) == ""
    tree = {"error": ["x sk-abc"], "n": 3, "sk-abc": "k"}
    assert scrub_all(tree, secrets) == {"error": ["x ***"], "n": 3, "***": "k"}


def test_redact_url():
    assert redact_url("https://user:pass@host:8000/v1?x=1") == "https://***@host:8000/v1?x=1"
    assert redact_url("https://token@host/v1") == "https://***@host/v1"
    assert redact_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"
