"""The run graph: one entry per judge with its stage, config key, column, kind and fingerprint; what
every command reads instead of naming conventions (no model, no Ray)."""

from pathlib import Path

import polars as pl
import pytest

from factory import config
from factory.config import ConfigError
from factory.graph import GenRMNode, RewardNode, RunGraph
from factory.stages.judge import JudgeStage
from factory.stages.reward import RewardStage

DEMO = Path(__file__).resolve().parent.parent / "conf" / "demo.yaml"
RM = [
    "reward_models.rm.engine.kind=vllm",
    "reward_models.rm.engine.model=/models/rm",
    "reward_models.rm.engine.device=cpu",
]
PROMPTS = pl.DataFrame({"prompt_id": ["p"], "messages": [[{"role": "user", "content": "q"}]],
                        "product_info": ["x"], "history": [[]], "question": ["q"]})  # fmt: skip


def ensemble(*extra):
    return config.load(DEMO, ["judges.b.sampling.seed=7", "judge.dimensions=true", "judges.b.dimensions=true",
                              "judges.b.dimension_names=[style]", *RM, *extra])  # fmt: skip


def test_one_entry_per_judge_with_its_identity():
    graph = RunGraph(ensemble())
    rows = [(j.stage, j.key, j.column, j.kind) for j in graph.judges]
    assert rows == [
        ("judge", "judge", "quality", "genrm"),
        ("judge_b", "judges.b", "quality_b", "genrm"),
        ("reward_rm", "reward_models.rm", "reward_rm", "reward_model"),
    ]
    assert [type(j) for j in graph.judges] == [GenRMNode, GenRMNode, RewardNode]
    assert graph.request_keys() == ["sampler", "judge", "judge_b", "reward_rm"]
    fps = graph.fingerprints
    assert list(fps) == ["sampler", "judge", "judge_b", "reward_rm"] and len(set(fps.values())) == 4
    columns = graph.columns()
    assert columns["quality_b"] == "judges.b" and columns["reward_rm"] == "reward_models.rm"
    assert columns["dim_b_style"] == "judges.b.dimension_names" and columns["dim_question"] == "judge.dimension_names"
    # a reward model's pool runs the engine's scoring variant (vLLM's pooling runner), its config is unchanged
    rm = graph.judge("reward_rm")
    assert rm.engine.engine_kwargs == {"runner": "pooling"} and rm.config.engine.engine_kwargs == {}


def test_a_disabled_judge_has_no_entry_and_no_stage():
    graph = RunGraph(ensemble("judge.enabled=false", "pairs.judges=[quality_b]"))
    assert [j.stage for j in graph.judges] == ["judge_b", "reward_rm"] and "judge" not in graph.fingerprints
    stages = graph.stages(PROMPTS)
    assert [s.name for s in stages] == ["sample", "judge_b", "reward_rm"]
    assert isinstance(stages[1], JudgeStage) and isinstance(stages[2], RewardStage)


def test_a_stored_run_without_a_judge_leaves_its_stage_out():
    graph = RunGraph(ensemble())
    stored = {k: v for k, v in graph.fingerprints.items() if k != "judge_b"}  # a run made before judges.b existed
    assert [s.name for s in graph.stages(PROMPTS, stored)] == ["sample", "judge", "reward_rm"]


def test_manifest_entries_per_judge():
    graph = RunGraph(ensemble())
    entries = graph.judges_manifest({"judge": {"ok": 3, "failed": 1}}, {"judge": 4, "reward_rm": 2})
    assert entries["judge"] == {
        "kind": "genrm",
        "column": "quality",
        "fingerprint": graph.fingerprints["judge"],
        "ok": 3,
        "failed": 1,
        "requests": 4,
        "max_tokens_key": "judge.sampling.max_tokens",
    }
    assert entries["judge_b"]["max_tokens_key"] == "judges.b.sampling.max_tokens"
    assert entries["reward_rm"]["kind"] == "reward_model" and entries["reward_rm"]["requests"] == 2
    assert "max_tokens_key" not in entries["reward_rm"]
    assert entries["judge_b"]["requests"] == 0 and entries["judge_b"]["ok"] == 0


def test_a_judge_column_no_judge_makes_is_named_at_preflight():
    with pytest.raises(ConfigError, match=r"pairs.judges: no configured judge makes the column 'quality_c'"):
        RunGraph(ensemble("pairs.judges=[quality,quality_c]")).preflight()


def test_a_missing_rubric_file_is_named_before_it_is_read(tmp_path):
    with pytest.raises(ConfigError, match=r"judges\.b\.rubric_file: file not found"):
        RunGraph(ensemble(f"judges.b.rubric_file={tmp_path}/none.txt"))


@pytest.mark.parametrize(
    "extra",
    [
        ["judge.tags=true", "judge.dimensions=true", "judge.dimension_names=[clarity]", "judges.b.sampling.seed=1",
         "reward_models.rm.engine.kind=openai", "reward_models.rm.engine.base_url=http://127.0.0.1:9/v1",
         "verifiers.v.rule=regex", "verifiers.v.pattern=x"],
        ["judge.mode=group", "judge.orders=2", "judge.sampling.max_tokens=256"],
    ],
)  # fmt: skip
def test_the_scored_columns_known_before_a_run_are_the_ones_the_run_reads(tmp_path, extra):
    # What the preflight checks pairs.balance.column and the terms against (RunGraph.check_reads).
    from factory.prompts import load_prompts
    from factory.rundir.store import RunStore
    from tests.test_run import local_run, synthetic_cfg

    cfg = synthetic_cfg(tmp_path, 3, *extra)
    local_run(cfg)
    graph = RunGraph(cfg)
    scored = graph.scored(RunStore(cfg.output_dir), load_prompts(cfg.prompts)[0]).scored
    assert sorted(graph.scored_columns()) == sorted(scored.columns)
