"""The judge kinds' vocabulary (factory/config/kinds.py): every name of a judge's stage, key, column, dims and
price comes from its kind's entry, and the graph's nodes, the config's and the kernel's column checks, the
report's columns and the prices all read it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from factory import config
from factory.config import kinds
from factory.config.kinds import GENRM, JUDGE_KINDS, REWARD_MODEL, VERIFIER
from factory.graph import NODES, RunGraph
from tests.synthetic import write_prompts


def test_each_kind_names_its_entries():
    assert [
        GENRM.stage_of(None),
        GENRM.key_of(None),
        GENRM.column_of(None),
        GENRM.dims_of(None),
        GENRM.price_key(None),
    ] == ["judge", "judge", "quality", "dim_", "cost.judge"]
    assert [GENRM.stage_of("b"), GENRM.key_of("b"), GENRM.column_of("b"), GENRM.dims_of("b"), GENRM.price_key("b")] == [
        "judge_b", "judges.b", "quality_b", "dim_b_", "cost.judges.b"
    ]  # fmt: skip
    assert [REWARD_MODEL.stage_of("rm"), REWARD_MODEL.column_of("rm"), REWARD_MODEL.price_key("rm")] == [
        "reward_rm", "reward_rm", "cost.reward_models.rm"
    ]  # fmt: skip
    assert [VERIFIER.stage_of("v"), VERIFIER.key_of("v"), VERIFIER.column_of("v"), VERIFIER.price_key("v")] == [
        "verify_v", "verifiers.v", "verify_v", ""
    ]  # fmt: skip
    assert [k.name for k in JUDGE_KINDS] == list(NODES)  # one node per kind, in graph order


def test_the_graph_nodes_columns_and_prices_are_their_kinds(tmp_path):
    prompts = write_prompts(tmp_path / "prompts.jsonl", 2)
    cfg = config.load(None, [
        f"prompts.path={prompts}", "judge.dimensions=true", "judges.b.sampling.seed=3", "judges.b.dimensions=true",
        "judges.b.dimension_names=[style]", "reward_models.rm.engine.kind=openai", "reward_models.rm.engine.model=rm",
        "reward_models.rm.engine.base_url=http://127.0.0.1:9/v1", "verifiers.v.rule=regex", "verifiers.v.pattern=x",
        "cost.judges.b.input_usd_per_m=1",
    ])  # fmt: skip
    graph = RunGraph(cfg)
    for node in graph.judges:
        for column in node.columns():
            assert kinds.judge_kind(column) is node.vocab, column
            assert kinds.is_judge_column(column)
        assert kinds.is_judge_score(node.column) and node.kind == node.vocab.name
    assert graph.price_keys() == {"sample": "cost.sampler", "judge": "cost.judge", "judge_b": "cost.judges.b",
                                  "reward_rm": "cost.reward_models.rm"}  # fmt: skip
    assert set(graph.prices()) == {"sample", "judge", "judge_b"}  # reward_rm has no price entry
    assert kinds.judge_scales(cfg) == {"quality": 100.0, "quality_b": 100.0}
    names = ["reward_rm", "quality_spread", "answer", "verify_v", "quality_b", "quality", "dim_b_style"]
    assert kinds.score_columns(names) == ["reward_rm", "verify_v", "quality_b", "dim_b_style"]
    assert kinds.audited_columns(names) == ["quality", "quality_b", "reward_rm"]


def test_no_module_writes_a_judge_column_family_pattern_but_the_kinds():
    package = Path(config.__file__).resolve().parent.parent
    family = re.compile(r"(quality|reward|verify|dim)(_\\w|\(_)")
    found = []
    for path in package.rglob("*.py"):
        if path.name == "kinds.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and family.search(node.value):
                found.append(f"{path.relative_to(package)}:{node.lineno}")
    assert found == []
