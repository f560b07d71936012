"""A deterministic in-memory engine for stage and executor tests (the real engines have their own tests)."""

from __future__ import annotations

import json
import threading

import zlib

from factory.engines.base import Completion, OnDone, OnScored, Request, Score, ScoreRequest


class FakeEngine:
    """Answers `<think>r</think>answer` with a length that depends on the seed; counts requests.
    A request with a JSON schema (a judge's) gets `{"score": (seed * 37) % 101, "reason": "r"}`, plus the
    dimensions and tags the schema asks for (numbers and one tag derived from the seed).

    `script` maps a request's tag to a text (or an Exception to return as an error) to force outputs.
    It can also score (a reward model): `reward_of(answer)`, a fixed function of the answer's text
    (an Exception in `script` under a score request's tag makes that one fail)."""

    model_name = "fake"
    supports_json_schema = True
    concurrent_batches = True

    def __init__(self, script: dict | None = None, shuffle: bool = True):
        self.script = script or {}
        self.requests: list[Request] = []
        self.scored: list[ScoreRequest] = []
        self.shuffle = shuffle
        self.finished = 0
        self._lock = threading.Lock()

    def _text(self, request: Request) -> str:
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

    def generate(self, requests: list[Request], on_done: OnDone | None = None) -> list[Completion]:
        with self._lock:
            self.requests.extend(requests)
            self.finished += len(requests)
        out = []
        for request in requests:
            scripted = self.script.get(request.tag)
            if isinstance(scripted, Exception):
                out.append(Completion(tag=request.tag, error=str(scripted)))
                continue
            text = scripted if scripted is not None else self._text(request)
            out.append(
                Completion(
                    tag=request.tag,
                    text=text,
                    finish_reason="stop",
                    prompt_tokens=10,
                    completion_tokens=len(text.split()),
                    latency_s=0.001,
                )
            )
        # Async engines return in any order: the stages must put results back by tag.
        out = list(reversed(out)) if self.shuffle else out
        for completion in out if on_done is not None else ():
            on_done(completion)
        return out

    def score(self, requests: list[ScoreRequest], on_done: OnScored | None = None) -> list[Score]:
        with self._lock:
            self.scored.extend(requests)
            self.finished += len(requests)
        out = []
        for request in requests:
            scripted = self.script.get(request.tag)
            if isinstance(scripted, Exception):
                out.append(Score(tag=request.tag, error=str(scripted)))
                continue
            answer = request.messages[-1]["content"]
            out.append(
                Score(tag=request.tag, value=reward_of(answer), prompt_tokens=len(answer.split()), latency_s=0.001)
            )
        out = list(reversed(out)) if self.shuffle else out
        for score in out if on_done is not None else ():
            on_done(score)
        return out

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(t.split()) for t in texts]

    def close(self) -> None:
        pass


def reward_of(answer: str) -> float:
    """The fake reward model's score of an answer: in [-5, 5), fixed per text."""
    return (zlib.crc32(answer.encode()) % 1000) / 100 - 5.0
