"""The one fake engine of the tests: deterministic, in memory, configured per test (the real engines have the
conformance suite in tests/engines/test_conformance.py).

What a request gets, first match wins:
- `script`: a mapping {key: outcome}, the key matched against each request by `match(key, request)` (default:
  the key is the request's tag). A list of outcomes is one per attempt of that key (attempt n takes item n,
  the last repeats): `engine.calls[key]` counts them.
- `reply(request)`: a function of the request (default `seeded_reply`: a sample, or a judge's JSON verdict).

An outcome is
    str                   the reply text; `usage(request, text)` gives its token counts (default: words)
    Completion            returned as it is, tagged with the request's tag (any finish_reason, usage, attempts)
    Exception instance    a failed request: a Completion (or Score) with `error=str(exception)`; the batch goes on
    None                  the default `reply`
    Raise(exc)            the whole batch raises `exc` when this request is reached (earlier ones are answered)
    Twice(outcome)        the outcome handed to `on_done` twice (an engine bug the executor must absorb)
    LOST                  no result at all for this request (an engine bug the stages must name)

Scoring (a reward model): `score(request) -> float` (default `reward_of` of the answer); the same `script`
applies to score requests. `score=None` builds a fake without the score capability.

Other knobs: `latency` seconds per request, `before_batch(requests)` at the start of every batch (a hook to
raise, stall or die per attempt of a batch), `shuffle` (results handed over and returned in reverse order, as an
async engine may), `model_name`, `supports_json_schema`, `concurrent_batches`.
It records `requests` (every one received), `scored`, `answered` (tags, in the order handed over), `calls` and
`finished` (requests answered so far, failed ones included: the executor's heartbeat); thread-safe.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from typing import Any

from factory.engines.base import Completion, OnDone, OnScored, Request, Score, ScoreRequest


@dataclasses.dataclass(frozen=True)
class Raise:
    """The batch raises `error` when it reaches this request (after answering the requests before it)."""

    error: BaseException


@dataclasses.dataclass(frozen=True)
class Twice:
    """`outcome` handed to on_done twice."""

    outcome: Any = None


LOST = object()


def seeded_reply(request: Request) -> str:
    """`<think>..</think>` and words, both as long as the seed says. A request with a JSON schema (a judge's)
    gets `{"score": (seed * 37) % 101, "reason": "r"}`, plus the dimensions and tags the schema asks for
    (numbers and one tag derived from the seed)."""
    if request.json_schema is not None:
        reply: dict = {"score": (request.seed * 37) % 101, "reason": "r"}
        asked = request.json_schema["properties"]
        if "dimensions" in asked:  # each dimension its own number from the seed, on the score's scale
            top = asked["score"]["maximum"] + 1
            reply["dimensions"] = {
                n: (request.seed * (7 + i)) % top for i, n in enumerate(asked["dimensions"]["required"])
            }
        if "tags" in asked:  # one of the allowed tags (or a free one), from the seed
            allowed = asked["tags"]["items"].get("enum") or ["fake", "free"]
            reply["tags"] = [allowed[request.seed % len(allowed)]]
        return json.dumps(reply)
    words = 3 + request.seed % 7
    return f"<think>{'hmm ' * (request.seed % 3)}</think>" + " ".join(["word"] * words)


def tag_reply(request: Request) -> str:
    """`ok <tag>`: what the executor tests check comes back."""
    return f"ok {request.tag}"


def word_usage(request: Request, text: str) -> dict:
    return {"prompt_tokens": 10, "completion_tokens": len(text.split()), "latency_s": 0.001}


def reward_of(answer: str) -> float:
    """The fake reward model's score of an answer: in [-5, 5), fixed per text."""
    return (zlib.crc32(answer.encode()) % 1000) / 100 - 5.0


def answer_reward(request: ScoreRequest) -> float:
    return reward_of(request.messages[-1]["content"])


def _by_tag(key: Any, request: Any) -> bool:
    return key == request.tag


class FakeEngine:
    def __init__(
        self,
        script: Mapping | None = None,
        *,
        reply: Callable[[Request], Any] = seeded_reply,
        match: Callable[[Any, Any], bool] | None = None,
        usage: Callable[[Request, str], dict] = word_usage,
        score: Callable[[ScoreRequest], float] | None = answer_reward,
        latency: float = 0.0,
        before_batch: Callable[[list], None] | None = None,
        shuffle: bool = True,
        model_name: str = "fake",
        supports_json_schema: bool = True,
        concurrent_batches: bool = True,
    ):
        self.script = dict(script or {})
        self.reply, self.match, self.usage = reply, match, usage
        self.latency, self.before_batch, self.shuffle = latency, before_batch, shuffle
        self.model_name, self.supports_json_schema = model_name, supports_json_schema
        self.concurrent_batches = concurrent_batches
        if score is None:
            self.score = None  # no score capability: `callable(engine.score)` is False
        self.scorer = score
        self.requests: list[Request] = []
        self.scored: list[ScoreRequest] = []
        self.answered: list[Any] = []
        self.calls: dict[Any, int] = {}
        self.finished = 0
        self._lock = threading.Lock()

    # -- what a request gets ------------------------------------------------------------------------
    def _scripted(self, request: Any) -> Any:
        """(found, outcome) of the script for this request, counting the attempt."""
        if self.match is None:
            try:
                found = request.tag in self.script
            except TypeError:  # an unhashable tag is in no mapping
                found = False
            key = request.tag
        else:
            key = next((k for k in self.script if self.match(k, request)), None)
            found = key is not None
        if not found:
            return False, None
        outcome = self.script[key]
        if isinstance(outcome, list):
            with self._lock:
                n = self.calls.get(key, 0)
                self.calls[key] = n + 1
            return True, outcome[min(n, len(outcome) - 1)]
        with self._lock:
            self.calls[key] = self.calls.get(key, 0) + 1
        return True, outcome

    def _outcome(self, request: Any, default: Callable[[Any], Any]) -> Any:
        found, outcome = self._scripted(request)
        if isinstance(outcome, Twice):
            inner = outcome.outcome
            return Twice(default(request) if inner is None else inner)
        return default(request) if not found or outcome is None else outcome

    def _completion(self, request: Request, outcome: Any) -> Completion:
        if isinstance(outcome, Completion):
            return dataclasses.replace(outcome, tag=request.tag)
        if isinstance(outcome, Exception):
            return Completion(tag=request.tag, error=str(outcome))
        return Completion(tag=request.tag, text=outcome, finish_reason="stop", **self.usage(request, outcome))

    def _score(self, request: ScoreRequest, outcome: Any) -> Score:
        if isinstance(outcome, Score):
            return dataclasses.replace(outcome, tag=request.tag)
        if isinstance(outcome, Exception):
            return Score(tag=request.tag, error=str(outcome))
        answer = request.messages[-1]["content"]
        return Score(tag=request.tag, value=outcome, prompt_tokens=len(answer.split()), latency_s=0.001)

    # -- the protocol -------------------------------------------------------------------------------
    def _run(self, requests: list, default: Callable, make: Callable, on_done: Callable | None) -> list:
        if self.before_batch is not None:
            self.before_batch(requests)
        out: list = []
        pending: list = []  # (result, times handed over) not yet given to on_done when shuffling

        def hand(result: Any, times: int) -> None:
            for _ in range(times if on_done is not None else 0):
                on_done(result)

        try:
            for request in requests:
                outcome = self._outcome(request, default)
                if isinstance(outcome, Raise):
                    raise outcome.error
                if outcome is LOST:
                    continue
                times = 2 if isinstance(outcome, Twice) else 1
                result = make(request, outcome.outcome if isinstance(outcome, Twice) else outcome)
                if self.latency:
                    time.sleep(self.latency)
                with self._lock:
                    self.finished += 1
                    self.answered.append(request.tag)
                out.append(result)
                if self.shuffle:
                    pending.append((result, times))
                else:
                    hand(result, times)
        finally:  # what finished before a raise is handed over too
            for result, times in reversed(pending):  # async engines finish in any order: put back by tag
                hand(result, times)
        return list(reversed(out)) if self.shuffle else out

    def generate(self, requests: list[Request], on_done: OnDone | None = None) -> list[Completion]:
        with self._lock:
            self.requests.extend(requests)
        return self._run(requests, self.reply, self._completion, on_done)

    def score(self, requests: list[ScoreRequest], on_done: OnScored | None = None) -> list[Score]:
        with self._lock:
            self.scored.extend(requests)
        return self._run(requests, self.scorer, self._score, on_done)

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(t.split()) for t in texts]

    def close(self) -> None:
        pass
