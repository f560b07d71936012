"""A fake model pair for eval tests: what a candidate says depends on its max_tokens, what the judge says
on the reply it is shown, so every number of the eval table can be worked out by hand.

Candidates (6 prompts p0..p5; p4 and p5 labelled answerable: false):
    long  (max_tokens 64): "<think>20 tokens</think>It is on link 3." 30 tokens (20 + 10), stop;
                           on p5 cut inside <think>: 64 tokens, all reasoning, empty answer (scores 0, not judged)
    short (max_tokens 8):  "<think>x</think>Ask customer service." 8 tokens (2 + 6), length (truncated);
                           on p3 "BROKEN" (the judge's output cannot be parsed)
Judge: 70 for a reply naming customer service, 40 for any other, no score at all for "BROKEN".
"""

from __future__ import annotations

import json
from pathlib import Path

from factory import config as config_mod
from factory.engines.base import Completion, Request
from tests.fakes import FakeEngine

PROMPTS = [
    {"id": f"p{i}", "product_info": {"name": f"thing {i}", "link": 3}, "history": [], "question": f"q{i}?",
     "answerable": i < 4}
    for i in range(6)
]  # fmt: skip


def eval_reply(request: Request) -> Completion:
    """A candidate's sample (by its max_tokens) or the judge's verdict (a request with a JSON schema)."""
    if request.json_schema is not None:
        shown = request.messages[-1]["content"]
        if "BROKEN" in shown:
            text = "no idea"
        else:
            text = json.dumps({"score": 70 if "customer service" in shown else 40, "reason": "r"})
        return Completion(tag=None, text=text, finish_reason="stop", prompt_tokens=50, completion_tokens=9)
    question = request.messages[-1]["content"]
    if request.max_tokens >= 64:
        if "q5?" in question:
            return Completion(tag=None, text="<think>" + "r " * 64, finish_reason="length",
                              prompt_tokens=11, completion_tokens=64, reasoning_tokens=64)  # fmt: skip
        return Completion(
            tag=None,
            text="<think>" + "r " * 20 + "</think>It is on link 3.",
            finish_reason="stop",
            prompt_tokens=11,
            completion_tokens=30,
            reasoning_tokens=20,
        )
    answer = "BROKEN" if "q3?" in question else "Ask customer service."
    return Completion(tag=None, text=f"<think>x</think>{answer}", finish_reason="length",
                      prompt_tokens=11, completion_tokens=8, reasoning_tokens=2)  # fmt: skip


def eval_engine() -> FakeEngine:
    """The fake model pair: candidates and judge in one engine, answering in request order."""
    return FakeEngine(reply=eval_reply, shuffle=False, model_name="fake-eval")


def sampled(engine: FakeEngine) -> list[Request]:
    return [r for r in engine.requests if r.json_schema is None]


def judged(engine: FakeEngine) -> list[Request]:
    return [r for r in engine.requests if r.json_schema is not None]


def write_prompts(folder: Path) -> Path:
    path = folder / "eval_prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in PROMPTS))
    return path


def eval_config(folder: Path, *extra: str):
    """Two candidates, long (baseline) and short; a rubric that shows the reply; no re-asks."""
    rubric = folder / "rubric.txt"
    rubric.write_text("Rate the host reply {answer} from 0 to {scale_max}.")
    return config_mod.load(
        None,
        [
            f"output_dir={folder / 'run'}", f"eval.prompts={write_prompts(folder)}", f"judge.rubric_file={rubric}",
            "judge.max_reasks=0", "eval.candidates.long.sampling.max_tokens=64",
            "eval.candidates.short.sampling.max_tokens=8", "eval.baseline=long", "progress_interval_s=60",
            *extra,
        ],
    )  # fmt: skip


def make_eval(folder: Path) -> Path:
    """An eval directory made by `factory eval` on the in-process executor with the fake pair; returns it."""
    from factory.evaluation.run import evaluate

    folder.mkdir(parents=True, exist_ok=True)
    cfg = eval_config(folder)
    evaluate(cfg, backend="local", build=lambda _cfg: eval_engine())
    return folder / "run" / "eval"
