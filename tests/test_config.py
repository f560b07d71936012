from pathlib import Path

import pytest

from factory import config
from factory.config import ConfigError

DEMO = Path(__file__).resolve().parent.parent / "conf" / "demo.yaml"


def test_demo_config_loads_and_resolves_paths_against_its_folder():
    cfg = config.load(DEMO)
    assert cfg.sampler.k == 4
    assert cfg.pairs.w_len == 0.6 and cfg.pairs.drop_ratio == 0.3
    assert Path(cfg.prompts.path).is_file()
    assert Path(cfg.prompts.path).parent == DEMO.parent / "data"


def test_overrides_are_typed_and_applied():
    cfg = config.load(DEMO, ["sampler.k=8", "pairs.w_len=0.4", "prompts.limit=3", "output_dir=memory://x"])
    assert (cfg.sampler.k, cfg.pairs.w_len, cfg.prompts.limit, cfg.output_dir) == (8, 0.4, 3, "memory://x")
    assert cfg.pairs.quality_weight == pytest.approx(0.6)


def test_unknown_key_names_it_and_the_closest_valid_key():
    with pytest.raises(ConfigError, match=r"'sampler\.kk'.*did you mean 'sampler\.k'"):
        config.load(DEMO, ["sampler.kk=3"])
    with pytest.raises(ConfigError, match=r"'pairs\.drop_rato'.*'pairs\.drop_ratio'"):
        config.load(DEMO, ["pairs.drop_rato=0.2"])


def test_unknown_key_in_yaml_is_reported_with_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sampler:\n  engine:\n    replica: 2\n")
    with pytest.raises(ConfigError, match=r"'sampler\.engine\.replica'.*bad\.yaml.*'sampler\.engine\.replicas'"):
        config.load(bad)


@pytest.mark.parametrize(
    "override, key",
    [
        ("sampler.k=1", "sampler.k"),
        ("pairs.drop_ratio=1.5", "pairs.drop_ratio"),
        ("pairs.strategy=best", "pairs.strategy"),
        ("sampler.engine.kind=tgi", "engine.kind"),
        ("sampler.k=many", "sampler.k"),
        ("judge.votes=0", "judge.votes"),
    ],
)
def test_bad_values_fail_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config.load(DEMO, [override])


def test_override_without_equals_is_an_error():
    with pytest.raises(ConfigError, match="key=value"):
        config.load(DEMO, ["sampler.k"])


def test_help_table_lists_every_key_with_help():
    rows = config.help_table()
    keys = [k for k, _, _ in rows]
    assert "pairs.drop_ratio" in keys and "sampler.engine.api_key_env" in keys
    assert all(text for _, _, text in rows)
