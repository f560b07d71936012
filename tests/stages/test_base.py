"""The stage base (factory/stages/base.py): the shared members and the one emit helper of the batch functions."""

import pytest

from factory.config import EngineConfig
from factory.stages.base import BaseStage, Batch
from factory.stages.judge.stage import JudgeStage
from factory.stages.reward import RewardStage
from factory.stages.sample import SampleStage


def test_a_batch_hands_each_row_on_at_once_and_returns_them_in_request_order():
    emitted: list[list[dict]] = []
    batch = Batch(emitted.append)
    batch.add("b", {"k": "b"})
    assert emitted == [[{"k": "b"}]]  # before the rest of the batch is back
    batch.add("a", {"k": "a"})
    assert batch.rows(["a", "b"], "completion(s)") == [{"k": "a"}, {"k": "b"}]
    with pytest.raises(RuntimeError, match=r"^engine lost 2 completion\(s\), e.g. c$"):
        batch.rows(["a", "c", "d"], "completion(s)")
    silent = Batch(None)
    silent.add(0, {"k": 0})
    assert silent.rows([0], "score(s)") == [{"k": 0}]


def test_the_base_holds_the_shared_members_and_each_stage_only_what_differs():
    class Stage(BaseStage):
        batch_fields = ("fp",)

        def __init__(self):
            self.engine, self.fp = EngineConfig(batch_size=7), "f1"

    stage = Stage()
    assert (stage.batch_size, stage.batch_args, stage.follow([{"x": 1}]), stage.upstream) == (7, ("f1",), [], None)
    assert stage.ok({"error": None}) and not stage.ok({"error": "HTTP 500"})
    assert stage.tokens({"prompt_tokens": 3, "completion_tokens": None}) == (3, 0)
    for cls in (SampleStage, JudgeStage, RewardStage):
        assert issubclass(cls, BaseStage)
        assert not {"batch_size", "batch_args"} & set(vars(cls))
