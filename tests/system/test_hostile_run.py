"""`factory run` against a lying server: every good reply is stored, every hostile one is an error row naming
what was wrong, and the run finishes (in process, no Ray; the server is a loopback ScriptedServer started
by the test, its endless body bounded in time).

Also the writer's last line: a row no engine checked (the fake engine hands it on as it is) that the
schema cannot hold is stored as its stage's failed row, and the other rows of its flush are kept.
"""

from __future__ import annotations

import json
import re

import polars as pl

from factory import config
from factory.engines.base import Completion
from factory.run import run
from tests.engines.loopback import ScriptedServer, chat_response, endless, lying_usage
from tests.fakes import FakeEngine
from tests.synthetic import write_prompts

MAX_TOKENS = 32
CAP = 256 * 1024


def hostile(request: dict) -> dict:
    """Samples: q0 and q1 lie about usage, q2's body never ends, q3 is far over max_tokens, the others are
    good (their answer names their question and seed). Judges: the answer of q4 gets a score that is not a number
    (with a number in the reason), the others 80."""
    content = request["messages"][-1]["content"]
    question = re.search(r"q(\d)\?", content)
    n = int(question.group(1)) if question else -1
    if "response_format" in request:
        if any("answer to q4" in m["content"] for m in request["messages"]):  # re-asks too
            return {"body": chat_response(json.dumps({"score": "high", "reason": "a score of 7 at most"}))}
        return {"body": chat_response(json.dumps({"score": 80, "reason": "fine"}))}
    if n == 0:
        return lying_usage("answer to q0", completion_tokens=-5)
    if n == 1:
        return lying_usage("answer to q1", completion_tokens=2**70, total_tokens=2**70)
    if n == 2:
        return endless(for_s=30)
    if n == 3:
        return lying_usage("word " * (MAX_TOKENS * 40), completion_tokens=MAX_TOKENS)
    return {"body": chat_response(f"answer to q{n}, seed {request['seed']}")}


def test_a_mix_of_good_and_hostile_replies_stores_every_good_row_and_an_error_row_for_each_hostile_one(tmp_path):
    prompts = write_prompts(tmp_path / "prompts.jsonl", 7)
    rubric = tmp_path / "rubric.txt"
    rubric.write_text("Rate {answer} from 0 to {scale_max}.")
    with ScriptedServer(hostile) as server:
        engine = [
            "kind=openai", f"base_url={server.url}/v1", "model=m", "max_retries=1", "backoff_s=0.01",
            f"max_reply_bytes={CAP}", "request_timeout_s=60",
        ]  # fmt: skip
        cfg = config.load(
            None,
            [
                f"output_dir={tmp_path / 'run'}",
                f"prompts.path={prompts}",
                "sampler.k=2",
                f"judge.rubric_file={rubric}",
                "progress_interval_s=60",
                f"sampler.sampling.max_tokens={MAX_TOKENS}",
                "judge.max_reasks=1",
                *(f"sampler.engine.{e}" for e in engine),
                *(f"judge.engine.{e}" for e in engine),
            ],
        )
        manifest = run(cfg, backend="local", command="factory run test")
        endless_requests = sum(1 for body in server.chat_requests() if "q2?" in body["messages"][-1]["content"])
    samples = pl.read_parquet(tmp_path / "run" / "samples").sort("prompt_id", "sample_idx")
    errors = dict(zip(samples["prompt_id"], samples["error"]))
    assert errors["p0"].startswith("invalid reply: usage.completion_tokens is -5, not a token count")
    assert errors["p1"].startswith("invalid reply: usage.completion_tokens is an integer of 71 bits")
    assert errors["p2"].startswith(f"reply body over engine.max_reply_bytes ({CAP} bytes)")
    assert errors["p3"].startswith(f"invalid reply: the reply has {MAX_TOKENS * 200} characters, more than max_tokens")
    assert endless_requests == 2  # once per sample: a body over the cap is not asked for again
    good = samples.filter(pl.col("error").is_null())
    assert sorted(good["prompt_id"].unique()) == ["p4", "p5", "p6"] and good.height == 6
    assert [a.split(",")[0] for a in good["answer"]] == [f"answer to q{n}" for n in (4, 4, 5, 5, 6, 6)]
    assert samples.filter(pl.col("error").is_not_null())["completion_tokens"].to_list() == [0] * 8
    judgments = pl.read_parquet(tmp_path / "run" / "judgments").sort("prompt_id", "sample_idx")
    assert judgments.height == 6  # the good samples only
    by_prompt = judgments.group_by("prompt_id").agg("parse_status", "reason", "score").sort("prompt_id")
    p4 = by_prompt.row(0, named=True)
    assert p4["prompt_id"] == "p4" and p4["parse_status"] == ["unparseable"] * 2 and p4["score"] == [None, None]
    assert all(r.startswith("the JSON score is not a number: 'high'") for r in p4["reason"])
    assert judgments.filter(pl.col("prompt_id") != "p4")["score"].to_list() == [80.0] * 4
    counts = manifest["counts"]
    assert counts["samples_ok"] == 6 and counts["samples_failed"] == 8
    assert counts["judgments_ok"] == 4 and counts["judgments_failed"] == 2


def test_a_row_the_schema_cannot_hold_is_stored_as_a_failed_row_and_its_flush_keeps_the_others(tmp_path):
    from tests.test_run import synthetic_cfg

    lie = Completion(tag=None, text="fine", finish_reason="stop", prompt_tokens=3, completion_tokens=2**70)
    engine = FakeEngine(script={("p1", 0): lie})  # a fake hands it on unchecked: the writer is the last line
    manifest = run(synthetic_cfg(tmp_path, 3), backend="local", build=lambda _cfg: engine, command="t")
    samples = pl.read_parquet(tmp_path / "run" / "samples")
    assert samples.height == 6
    bad = samples.filter(pl.col("error").is_not_null()).row(0, named=True)
    assert (bad["prompt_id"], bad["sample_idx"]) == ("p1", 0)
    assert bad["error"].startswith("row not storable: column ") and "tokens" in bad["error"]
    assert bad["attempts"] == 1  # what the request cost is kept, and the text it answered
    assert (
        bad["prompt_hash"] is not None
        and bad["prompt_hash"]
        == samples.filter((pl.col("prompt_id") == "p1") & (pl.col("sample_idx") == 1))["prompt_hash"].item()
    )
    assert samples.filter(pl.col("error").is_null()).height == 5
    assert manifest["counts"]["samples_ok"] == 5 and manifest["counts"]["samples_failed"] == 1
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["stages"]["sample"]["ok"] == 5 and metrics["stages"]["sample"]["failed"] == 1
