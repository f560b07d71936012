"""Reward stage: the conversation a reward model sees, batches put back by key, the cache per (sample,
RM fingerprint) counted in requests, failures, and `factory run` with an HTTP reward model on a loopback
server that counts every request (no Ray, no model)."""

from __future__ import annotations

import math
import time

import polars as pl
import pyarrow as pa
import pytest

from factory.config import EngineConfig, RewardModelConfig, RunConfig
from factory.rundir.schemas import REWARDS, SAMPLES
from factory.stages import reward
from factory.rundir.store import RunStore
from tests.fakes import LOST, FakeEngine, reward_of

PROMPT = [{"role": "system", "content": "Be a host."}, {"role": "user", "content": "Is link 3 in stock?"}]


def sample_rows(n_prompts: int = 2, k: int = 2, fp: str = "sfp", created_at: float = 1.0) -> list[dict]:
    return [
        {"prompt_id": f"p{p}", "sample_idx": i, "sampler_fp": fp, "seed": i, "reasoning": f"think {p}{i}",
         "answer": f"answer {p}{i}", "text": "", "reasoning_tokens": 2, "answer_tokens": 2, "completion_tokens": 4,
         "prompt_tokens": 9, "finish_reason": "stop", "error": None, "latency_s": 0.1, "attempts": 1, "model": "m",
         "created_at": created_at, "cached_tokens": None}
        for p in range(n_prompts) for i in range(k)
    ]  # fmt: skip


def prompts_frame(n_prompts: int = 2) -> pl.DataFrame:
    return pl.DataFrame({"prompt_id": [f"p{p}" for p in range(n_prompts)], "messages": [PROMPT] * n_prompts})


def stage_for(cfg: RunConfig | None = None, name: str = "rm", n_prompts: int = 2) -> reward.RewardStage:
    cfg = cfg or RunConfig(reward_models={"rm": RewardModelConfig()})
    return reward.RewardStage(cfg, name, {"sampler": "sfp", f"reward_{name}": "rfp"}, prompts_frame(n_prompts))


def run_stage(stage: reward.RewardStage, store: RunStore, engine: FakeEngine) -> int:
    """Plan, render, score and store like the executor (one batch); returns the requests made."""
    work = stage.plan(store)
    if not work.height:
        return 0
    rows = reward.reward_batch(engine, stage.render(work.to_dicts()), None, *stage.batch_args)
    store.append("rewards", pl.DataFrame(rows).to_arrow().cast(REWARDS))
    return len(rows)


# -- what the model sees, what is stored --------------------------------------------------------------
def test_the_conversation_is_the_rendered_prompt_with_the_answer_as_the_assistants_turn():
    sample = {"answer": "Yes, link 3!", "reasoning": "stock is 12"}
    assert reward.conversation(PROMPT, sample, False) == [*PROMPT, {"role": "assistant", "content": "Yes, link 3!"}]
    shown = reward.conversation(PROMPT, sample, True)[-1]["content"]
    assert shown == "<think>\nstock is 12\n</think>\n\nYes, link 3!"
    assert reward.conversation(PROMPT, {"answer": "ok", "reasoning": ""}, True)[-1]["content"] == "ok"


def test_a_batch_comes_back_in_request_order_each_row_emitted_and_nothing_lost():
    stage = stage_for()
    requests = stage.render([{**{k: r[k] for k in reward.KEY}, "answer": r["answer"], "reasoning": r["reasoning"],
                              "sample_created_at": 1.0} for r in sample_rows()])  # fmt: skip
    emitted: list[dict] = []
    engine = FakeEngine(shuffle=True)
    rows = reward.reward_batch(engine, requests, emitted.extend, *stage.batch_args)
    assert [(r["prompt_id"], r["sample_idx"]) for r in rows] == [("p0", 0), ("p0", 1), ("p1", 0), ("p1", 1)]
    assert sorted(map(id, emitted)) == sorted(map(id, rows))
    assert [r["score"] for r in rows] == [reward_of(f"answer {p}{i}") for p in range(2) for i in range(2)]
    assert {(r["rm"], r["rm_fp"], r["error"], r["sample_created_at"]) for r in rows} == {("rm", "rfp", None, 1.0)}
    assert engine.scored[0].messages == [*PROMPT, {"role": "assistant", "content": "answer 00"}]

    lossy = FakeEngine({("p0", 0, "sfp"): LOST})  # never answers the first request
    with pytest.raises(RuntimeError, match="engine lost 1 score"):
        reward.reward_batch(lossy, requests, None, *stage.batch_args)


def test_an_engine_without_the_score_capability_and_a_non_finite_score_are_named():
    stage = stage_for()
    requests = stage.render([{"prompt_id": "p0", "sample_idx": 0, "sampler_fp": "sfp", "answer": "a", "reasoning": ""}])

    with pytest.raises(TypeError, match=r"reward_models\.rm\.engine: the FakeEngine engine cannot score"):
        reward.reward_batch(FakeEngine(score=None), requests, None, *stage.batch_args)

    (row,) = reward.reward_batch(FakeEngine(score=lambda request: math.nan), requests, None, *stage.batch_args)
    assert row["score"] is None and row["error"] == "the reward model returned no finite score (nan)"
    (failed,) = stage.failed(requests, "failed after 4 attempts: replica died")
    assert (failed["score"], failed["error"], failed["rm_fp"], failed["attempts"]) == (
        None, "failed after 4 attempts: replica died", "rfp", 0,
    )  # fmt: skip


def test_the_fingerprint_follows_what_changes_a_score_and_nothing_else():
    base = RewardModelConfig(engine=EngineConfig(kind="vllm", model="/rm"))
    fp = reward.reward_fingerprint(base, "/rm")
    same = RewardModelConfig(
        engine=EngineConfig(kind="vllm", model="/rm", replicas=8, batch_size=64), retry_failed=True
    )
    assert reward.reward_fingerprint(same, "/rm") == fp
    changed = [
        RewardModelConfig(engine=EngineConfig(kind="vllm", model="/rm"), route="classify", label=1),
        RewardModelConfig(engine=EngineConfig(kind="vllm", model="/rm"), activation=True),
        RewardModelConfig(engine=EngineConfig(kind="vllm", model="/rm"), include_reasoning=True),
        RewardModelConfig(engine=EngineConfig(kind="vllm", model="/rm", dtype="float32")),
        RewardModelConfig(engine=EngineConfig(kind="openai", model="/rm", base_url="http://h/v1")),
    ]
    fps = {reward.reward_fingerprint(c, "/rm") for c in changed} | {reward.reward_fingerprint(base, "/rm2")}
    assert len(fps) == 6 and fp not in fps


# -- the cache: plan from stored keys ------------------------------------------------------------------
def test_plan_asks_once_per_usable_sample_and_a_rerun_asks_nothing(tmp_path):
    store = RunStore(f"memory://reward-cache/{tmp_path.name}")
    rows = sample_rows(2, 3)
    rows[1] |= {"error": "HTTP 500", "answer": ""}  # failed sample: never scored
    rows[2] |= {"answer": "   "}  # empty answer: never scored
    rows.append({**sample_rows(1, 1)[0], "sampler_fp": "other"})  # another sampler's sample: not this run's
    store.append("samples", pa.Table.from_pylist(rows, schema=SAMPLES))
    stage, engine = stage_for(), FakeEngine()
    assert run_stage(stage, store, engine) == 4 and len(engine.scored) == 4
    assert "1 failed sample(s) and 1 with an empty answer not scored" == stage.note
    assert run_stage(stage, store, engine) == 0
    other_model = reward.RewardStage(RunConfig(reward_models={"rm": RewardModelConfig()}), "rm",
                                     {"sampler": "sfp", "reward_rm": "rfp2"}, prompts_frame())  # fmt: skip
    assert run_stage(other_model, store, engine) == 4  # a new fingerprint scores every sample again
    current = stage.read(store)
    assert current.height == 4 and set(current["rm_fp"]) == {"rfp"}
    scores = reward.sample_rewards(current, "reward_rm").sort("prompt_id", "sample_idx")
    assert scores.columns == ["prompt_id", "sample_idx", "reward_rm"]
    assert scores["reward_rm"].to_list() == [reward_of(a) for a in ("answer 00", "answer 10", "answer 11", "answer 12")]


def test_a_sample_asked_again_is_scored_again_and_a_failed_reward_only_with_retry_failed(tmp_path):
    store = RunStore(f"memory://reward-retry/{tmp_path.name}")
    store.append("samples", pa.Table.from_pylist(sample_rows(1, 2), schema=SAMPLES))
    stage = stage_for(n_prompts=1)
    engine = FakeEngine(script={("p0", 1, "sfp"): RuntimeError("HTTP 503 (after 4 attempts)")})
    assert run_stage(stage, store, engine) == 2
    assert reward.sample_rewards(stage.read(store), "r").sort("sample_idx")["r"].to_list() == [
        reward_of("answer 00"),
        None,
    ]
    assert run_stage(stage, store, FakeEngine()) == 0  # the failed row stands until asked
    retrying = RunConfig(reward_models={"rm": RewardModelConfig(retry_failed=True)})
    assert run_stage(stage_for(retrying, n_prompts=1), store, FakeEngine()) == 1
    assert reward.sample_rewards(stage.read(store), "r").sort("sample_idx")["r"].to_list() == [
        reward_of("answer 00"), reward_of("answer 01"),
    ]  # fmt: skip
    # Sample 0 is stored again (its part was lost and it was asked again): its reward is of the old row.
    store.append("samples", pa.Table.from_pylist(sample_rows(1, 1, created_at=time.time()), schema=SAMPLES))
    work = stage.plan(store)
    assert work.select("prompt_id", "sample_idx").rows() == [("p0", 0)]
    assert stage.read(store).filter(pl.col("sample_idx") == 0).height == 0  # never paired with the old text


def test_follow_turns_stored_samples_into_work_for_this_run_only():
    stage = stage_for()
    rows = sample_rows(3, 2)  # p2 is not one of this run's prompts
    rows[0] |= {"error": "boom"}
    rows[1] |= {"sampler_fp": "other"}
    work = stage.follow(rows)
    assert [(w["prompt_id"], w["sample_idx"]) for w in work] == [("p1", 0), ("p1", 1)]
    assert work[0]["sample_created_at"] == 1.0 and work[0]["answer"] == "answer 10"
    with pytest.raises(ValueError, match=r"reward.plan: samples of 1 prompt\(s\) not in prompts"):
        stage.render([{"prompt_id": "p9", "sample_idx": 0, "sampler_fp": "sfp", "answer": "a", "reasoning": ""}])


# -- through `factory run`: an HTTP reward model on a loopback server --------------------------------
def test_factory_run_with_an_http_reward_model_asks_each_sample_once_and_stores_its_raw_score(tmp_path):
    from factory import config
    from factory.run import run
    from tests.engines.loopback import FakeModelServer
    from tests.synthetic import write_prompts

    prompts = write_prompts(tmp_path / "prompts.jsonl", 3)
    (tmp_path / "rubric.txt").write_text("Rate {answer} from 0 to {scale_max}.")
    with FakeModelServer(delay=0.0) as server:
        engine = [f"base_url={server.url}/v1", "kind=openai", "model=fake", "max_retries=0"]
        overrides = [
            f"output_dir={tmp_path / 'run'}", f"prompts.path={prompts}", "sampler.k=2", "progress_interval_s=60",
            f"judge.rubric_file={tmp_path / 'rubric.txt'}", "reward_models.rm.route=pooling",
            *(f"{side}.engine.{o}" for side in ("sampler", "judge", "reward_models.rm") for o in engine),
            "pairs.terms=[{source: reward_rm, weight: 0.5}]",
        ]  # fmt: skip
        manifest = run(config.load(None, overrides), backend="local", command="factory run test")
        asked = server.score_requests()
        again = run(config.load(None, overrides), backend="local", command="factory run test")
        assert len(server.score_requests()) == len(asked)
    assert manifest["requests"] == {"sampler": 6, "judge": 6, "reward_rm": 6} and len(asked) == 6
    assert {path for path, _ in asked} == {"/pooling"} and all(body["task"] == "classify" for _, body in asked)
    assert again["requests"] == {"sampler": 0, "judge": 0, "reward_rm": 0}
    store = RunStore(str(tmp_path / "run"))
    joined = store.read("rewards").join(store.read("samples"), on=["prompt_id", "sample_idx"])
    assert joined.height == 6 and joined["score"].to_list() == [reward_of(a) for a in joined["answer"]]
    assert joined["prompt_tokens"].to_list() == [7] * 6  # the server's usage
    assert manifest["judges"]["reward_rm"]["ok"] == 6 and any(
        t["name"] == "reward_rm" for t in manifest["pairs"]["terms"]
    )
