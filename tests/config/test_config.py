import dataclasses
import typing
from pathlib import Path

import pytest

from factory import config
from factory.config import ConfigError

DEMO = Path(__file__).resolve().parents[2] / "conf" / "demo.yaml"


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
        ("sampler.sampling.stop=['']", "sampler.sampling.stop"),
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


@pytest.mark.parametrize(
    "override, message",
    [
        ("sampler.sampling.temperature=-1", "sampler.sampling.temperature: must be >= 0, got -1.0"),
        ("judge.sampling.temperature=-0.5", "judge.sampling.temperature: must be >= 0, got -0.5"),
        ("sampler.sampling.top_p=0", "sampler.sampling.top_p: must be in (0, 1], got 0.0"),
        ("judge.sampling.top_p=1.5", "judge.sampling.top_p: must be in (0, 1], got 1.5"),
        ("sampler.sampling.max_tokens=0", "sampler.sampling.max_tokens: must be >= 1, got 0"),
        ("prompts.limit=-1", "prompts.limit: must be >= 1 or null, got -1"),
        ("prompts.limit=0", "prompts.limit: must be >= 1 or null, got 0"),
        ("sampler.engine.cpus_per_replica=0", "sampler.engine.cpus_per_replica: must be > 0, got 0.0"),
        ("judge.engine.gpu_memory_utilization=1.2", "judge.engine.gpu_memory_utilization: must be in (0, 1], got 1.2"),
        ("judge.engine.parallel=0", "judge.engine.parallel: must be >= 1, got 0"),
        ("sampler.engine.max_retries=-1", "sampler.engine.max_retries: must be >= 0, got -1"),
        ("sampler.engine.request_timeout_s=nan", "sampler.engine.request_timeout_s: must be > 0, got nan"),
        ("judge.engine.max_reply_bytes=0", "judge.engine.max_reply_bytes: must be >= 1, got 0"),
        ("sampler.engine.watchdog_s=inf", "sampler.engine.watchdog_s: must be > 0, got inf"),
        ("judge.scale_max=0", "judge.scale_max: must be > 0, got 0.0"),
        ("ray.num_cpus=0", "ray.num_cpus: must be >= 1 or null, got 0"),
        ("decode_tokens_per_s=0", "decode_tokens_per_s: must be > 0, got 0.0"),
        ("progress_interval_s=-5", "progress_interval_s: must be > 0, got -5.0"),
        ("sampler.sampling.stop=['']", "sampler.sampling.stop: stop strings must be non-empty strings, got ['']"),
        ("sampler.engine.kind=tgi", "sampler.engine.kind: 'tgi' is not one of llamacpp, openai, vllm"),
        ("judge.engine.kind=openai", "judge.engine.base_url: required when judge.engine.kind is openai"),
    ],
)
def test_each_bad_value_is_refused_with_its_full_key(override, message):
    with pytest.raises(ConfigError) as raised:
        config.load(DEMO, [override])
    assert str(raised.value) == message


def numeric_keys(cls: type = config.RunConfig, prefix: str = "") -> list[str]:
    """Every key typed int or float (Optional too), from the dataclasses' type hints."""
    keys = []
    for name, hint in typing.get_type_hints(cls).items():
        if dataclasses.is_dataclass(hint):
            keys += numeric_keys(hint, f"{prefix}{name}.")
        elif {int, float} & ({hint} | set(typing.get_args(hint))):
            keys.append(prefix + name)
    return keys


NUMERIC_KEYS = numeric_keys()


@pytest.mark.parametrize(
    "key", [k for k in NUMERIC_KEYS if not k.startswith(("pairs.", "sweep.")) and not k.endswith(".seed")]
)
def test_every_numeric_key_has_its_range_checked_under_its_full_name(key):
    with pytest.raises(ConfigError, match="^" + key.replace(".", r"\.") + ": "):
        config.load(DEMO, [f"{key}=-1000000"])


def test_the_numeric_keys_are_found():  # the test above must not pass by finding none
    assert {"sampler.sampling.temperature", "prompts.limit", "ray.num_cpus", "progress_interval_s"} <= set(NUMERIC_KEYS)


def test_edge_values_are_accepted():
    cfg = config.load(
        DEMO,
        [
            "sampler.sampling.temperature=0", "sampler.sampling.top_p=1", "sampler.engine.max_retries=0",
            "sampler.engine.gpu_memory_utilization=1", "prompts.limit=1", "ray.num_cpus=null", "sampler.engine.rpm=0",
        ],
    )  # fmt: skip
    assert (cfg.sampler.sampling.temperature, cfg.prompts.limit, cfg.ray.num_cpus) == (0.0, 1, None)


def test_configs_built_in_code_are_checked_too():
    with pytest.raises(ConfigError, match=r"^sampling\.temperature: must be >= 0, got -1$"):
        config.SamplingConfig(temperature=-1)
    with pytest.raises(ConfigError, match=r"^engine\.gpu_memory_utilization: must be in \(0, 1\], got 0$"):
        config.EngineConfig(gpu_memory_utilization=0)


# -- judges.<name>.* and reward_models.<name>.* (judge ensembles, reward models) -------------------
MAPPED_NUMERIC_KEYS = [
    *(f"judges.b.{k}" for k in numeric_keys(config.JudgeConfig) if not k.endswith(".seed")),
    *(f"reward_models.rm.{k}" for k in numeric_keys(config.RewardModelConfig)),
]


@pytest.mark.parametrize("key", MAPPED_NUMERIC_KEYS)
def test_every_numeric_key_of_a_judge_or_reward_model_entry_is_checked_under_its_full_name(key):
    with pytest.raises(ConfigError, match="^" + key.replace(".", r"\.") + ": "):
        config.load(DEMO, [f"{key}=-1000000"])


def test_the_mapped_numeric_keys_are_found():
    assert {"judges.b.votes", "judges.b.engine.replicas", "reward_models.rm.label"} <= set(MAPPED_NUMERIC_KEYS)


def test_judges_and_reward_models_are_mappings_of_typed_entries(tmp_path):
    (tmp_path / "rubrics").mkdir()
    (tmp_path / "rubrics" / "r1.txt").write_text("Rate {answer} from 0 to {scale_max}.")
    path = tmp_path / "c.yaml"
    path.write_text(
        "judges:\n  r1:\n    rubric_file: rubrics/r1.txt\n    engine: {kind: openai, base_url: 'http://h/v1', model: "
        "r1}\n"
        "reward_models:\n  rm:\n    engine: {kind: vllm, model: /m/rm}\n    route: classify\n"
    )
    cfg = config.load(path, ["reward_models.rm2.engine.kind=openai", "reward_models.rm2.engine.base_url=http://h/v1",
                             "reward_models.rm2.route=score", "judges.r1.dimensions=true"])  # fmt: skip
    assert cfg.judges["r1"].rubric_file == str(tmp_path / "rubrics" / "r1.txt")  # relative to the YAML file
    assert isinstance(cfg.judges["r1"], config.JudgeConfig) and cfg.judges["r1"].dimensions is True
    assert cfg.judges["r1"].sampling.temperature == 0.2  # an entry's defaults are judge.*'s
    assert [(n, r.engine.kind, r.route) for n, r in cfg.reward_models.items()] == [
        ("rm", "vllm", "classify"),
        ("rm2", "openai", "score"),
    ]
    assert config.load(DEMO).judges == {} and config.load(DEMO).reward_models == {}


@pytest.mark.parametrize(
    "override, message",
    [
        ("judges.b.engine.knd=x",
         "unknown config key 'judges.b.engine.knd' in the command line; did you mean 'judges.b.engine.kind'?"),
        ("reward_models.rm.rout=score",
         "unknown config key 'reward_models.rm.rout' in the command line; did you mean 'reward_models.rm.route'?"),
        ("reward_models.rm.route=rank", "reward_models.rm.route: 'rank' is not one of classify, pooling, score"),
        ("reward_models.my-rm.label=0",
         "reward_models.my-rm: a name is letters, digits and _ (it names reward_<name>)"),
        ("judges.spread.votes=1", "judges.spread: quality_spread is the primary judge's vote spread; rename it"),
        ("judges.b.sampling.temperature=-1", "judges.b.sampling.temperature: must be >= 0, got -1.0"),
        ("judge.dimension_names=[a,a]", "judge.dimension_names: ['a', 'a'] names a dimension twice"),
        ("judge.dimension_names=[a-b]",
         "judge.dimension_names: 'a-b' is not letters, digits and _ (it names dim_<name>)"),
    ],
)  # fmt: skip
def test_a_bad_judge_or_reward_model_entry_names_its_full_key(override, message):
    with pytest.raises(ConfigError) as raised:
        config.load(DEMO, [override])
    assert str(raised.value) == message


def test_factory_keys_lists_the_entries_of_judges_and_reward_models():
    keys = [k for k, _, _ in config.help_table()]
    for key in ("judges", "judges.<name>.rubric_file", "judges.<name>.engine.kind", "judge.dimension_names",
                "judge.tags", "judge.tag_values", "reward_models", "reward_models.<name>.route",
                "reward_models.<name>.label", "reward_models.<name>.activation",
                "reward_models.<name>.engine.model"):  # fmt: skip
        assert key in keys, key
