"""judge.mode group: one request per group and order, its order reproducible from the seed, the group
judged again when it grows (the old judgments kept), rows per sample that the pair kernel reads, and
judge.orders 2's flips counted and excluded as order_flip."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pytest

from factory import config as config_mod
from factory.config import ConfigError
from factory.engines.base import Request
from factory.rundir.schemas import JUDGMENTS
from factory.rundir.store import RunStore
from factory.run import run
from factory.stages.judge.group import shown_order
from factory.stages.judge.parse import parse_group
from factory.stages.judge.rubric import group_labels, render_group
from tests.fakes import FakeEngine, seeded_reply
from tests.synthetic import write_prompts

_ANSWER = re.compile(r"\[Answer ([A-Z]+)\]\n(.*?)(?=\n\n\[Answer |\n\nThe \d+ answers above)", re.DOTALL)


def shown(request: Request) -> list[tuple[str, str]]:
    """(label, answer) of a group request, in the order shown."""
    return _ANSWER.findall(request.messages[0]["content"])


def group_reply(position_bias: float = 0.0):
    """A group judge's reply: each answer's score from its words (so the same answer scores the same
    wherever it is shown), plus `position_bias` per place from the top (a judge that favours A)."""

    def reply(request: Request) -> str:
        if request.json_schema is None or "A" not in request.json_schema["properties"]:
            return seeded_reply(request)
        out = {}
        for place, (label, answer) in enumerate(shown(request)):
            words = len(answer.split())
            out[label] = {"score": max(0, min(100, 10 * words - position_bias * place)), "reason": "r"}
        return json.dumps(out)

    return reply


def write_config(folder: Path, k: int = 4, n_prompts: int = 3, **extra: str) -> config_mod.RunConfig:
    prompts = write_prompts(folder / "prompts.jsonl", n_prompts)
    rubric = folder / "rubric.txt"
    rubric.write_text("Question: {question}\nRate from 0 to {scale_max}:\n{answer}")
    overrides = [
        f"output_dir={folder / 'run'}",
        f"prompts.path={prompts}",
        f"sampler.k={k}",
        f"judge.rubric_file={rubric}",
        "judge.mode=group",
        "pairs.dedupe='off'",
        "progress_interval_s=60",
        "judge.sampling.max_tokens=512",
    ]
    return config_mod.load(None, overrides + [f"{key}={value}" for key, value in extra.items()])


def judge_requests(engine: FakeEngine) -> list[Request]:
    return [r for r in engine.requests if r.json_schema is not None]


def stored_judgments(folder: Path) -> pl.DataFrame:
    return RunStore(str(folder / "run")).read("judgments", JUDGMENTS)  # type: ignore[return-value]


def test_one_request_per_group_shows_the_prompt_once_and_stores_a_row_per_sample(tmp_path):
    engine = FakeEngine(reply=group_reply())
    result = run(write_config(tmp_path), backend="local", build=lambda _cfg: engine)
    asked = judge_requests(engine)
    assert len(asked) == 3  # 3 prompts, one group each
    for request in asked:
        content = request.messages[0]["content"]
        assert content.count("Question:") == 1 and [label for label, _ in shown(request)] == ["A", "B", "C", "D"]
        assert request.json_schema["required"] == ["A", "B", "C", "D"]
    rows = stored_judgments(tmp_path)
    assert rows.height == 12 and set(rows["parse_status"]) == {"ok"}
    assert rows.group_by("prompt_id").agg(pl.col("group_key").n_unique())["group_key"].to_list() == [1, 1, 1]
    one = rows.filter(pl.col("prompt_id") == rows["prompt_id"][0]).sort("label")
    assert (
        one["label"].to_list() == ["A", "B", "C", "D"]
        and one["sample_idx"].to_list() == one["group_order"][0].to_list()
    )
    assert one["attempts"].to_list() == [1, 0, 0, 0]  # the request is counted once, on the first answer shown
    assert result["requests"]["judge"] == 3 and result["counts"]["judgments_ok"] == 12
    # the score each sample got is the one its own answer earned, wherever it was shown
    samples = RunStore(str(tmp_path / "run")).read("samples")
    words = {(r["prompt_id"], r["sample_idx"]): len(r["answer"].split()) for r in samples.iter_rows(named=True)}
    assert all(
        r["score"] == min(100, 10 * words[(r["prompt_id"], r["sample_idx"])]) for r in rows.iter_rows(named=True)
    )
    assert result.pairs.height > 0  # the pair kernel reads the rows as it reads pointwise ones
    again = run(write_config(tmp_path), backend="local", build=lambda _cfg: engine)
    assert again["requests"] == {"sampler": 0, "judge": 0}


def test_the_order_is_reproducible_from_the_seed_and_order_1_is_its_reverse():
    first = shown_order(7, "p1", [0, 1, 2, 3, 4, 5], 0)
    assert first == shown_order(7, "p1", [5, 4, 3, 2, 1, 0], 0)
    assert sorted(first) == [0, 1, 2, 3, 4, 5] and first != [0, 1, 2, 3, 4, 5]
    assert shown_order(7, "p1", list(range(6)), 1) == first[::-1]
    assert len({tuple(shown_order(seed, "p1", list(range(6)), 0)) for seed in range(8)}) > 1


def test_the_same_run_twice_shows_the_same_orders(tmp_path):
    orders = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        engine = FakeEngine(reply=group_reply())
        run(write_config(folder), backend="local", build=lambda _cfg, e=engine: e)
        orders.append(sorted(map(tuple, stored_judgments(folder).unique("prompt_id")["group_order"].to_list())))
    assert orders[0] == orders[1]


def test_a_group_that_grows_is_judged_again_and_the_old_judgments_are_kept(tmp_path):
    engine = FakeEngine(reply=group_reply())
    run(write_config(tmp_path, k=2), backend="local", build=lambda _cfg: engine)
    before = stored_judgments(tmp_path)
    assert before.height == 6 and len(judge_requests(engine)) == 3
    result = run(write_config(tmp_path, k=4), backend="local", build=lambda _cfg: engine)
    after = stored_judgments(tmp_path)
    assert len(judge_requests(engine)) == 6 and result["requests"]["judge"] == 3  # each group once more
    assert after.height == 6 + 12  # the k=2 judgments are still stored
    assert set(before["group_key"]) <= set(after["group_key"])
    newest = after.filter(~pl.col("group_key").is_in(before["group_key"].implode()))
    assert sorted(len(o) for o in newest.unique("prompt_id")["group_order"].to_list()) == [4, 4, 4]
    scored = result.scored.filter(pl.col("quality").is_not_null())
    assert scored.height == 12  # every sample read from its prompt's latest group
    again = run(write_config(tmp_path, k=4), backend="local", build=lambda _cfg: engine)
    assert again["requests"]["judge"] == 0


def test_two_orders_are_asked_and_their_flips_counted_then_excluded(tmp_path):
    # A judge that favours whatever it is shown first: close answers swap between the two orders.
    engine = FakeEngine(reply=group_reply(position_bias=25))
    result = run(
        write_config(tmp_path, n_prompts=6, **{"judge.orders": "2"}), backend="local", build=lambda _cfg: engine
    )
    asked = judge_requests(engine)
    assert len(asked) == 12  # 6 prompts x 2 orders
    by_prompt: dict[str, list[list[str]]] = {}
    rows = stored_judgments(tmp_path)
    for (pid, vote), group in rows.group_by("prompt_id", "vote"):
        by_prompt.setdefault(pid, [None, None])[vote] = group["group_order"][0].to_list()
    assert all(orders[1] == orders[0][::-1] for orders in by_prompt.values())
    stats = result["pairs"] if "pairs" in result.manifest else result["stats"]
    flips, scored = stats["order_flips"], stats["order_pairs"]
    assert scored == 6 and 0 < flips <= 6
    kept = stats["pairs_kept"]
    excluded = run(
        write_config(tmp_path, n_prompts=6, **{"judge.orders": "2", "pairs.exclude_order_flips": "true"}),
        backend="local", build=lambda _cfg: engine,
    )  # fmt: skip
    stats = excluded["pairs"] if "pairs" in excluded.manifest else excluded["stats"]
    assert excluded["requests"]["judge"] == 0
    assert stats["pairs_by_outcome"]["order_flip"] >= 1
    assert stats["pairs_kept"] == kept - stats["pairs_by_outcome"]["order_flip"]


def test_a_reply_missing_an_answer_is_re_asked_and_the_others_keep_their_score():
    labels = group_labels(3)
    parsed = parse_group('{"A": {"score": 70, "reason": "r"}, "C": {"score": 5, "reason": "r"}}', labels, 100)
    assert parsed["A"]["status"] == "ok" and parsed["B"]["status"] == "unparseable" and parsed["C"]["score"] == 5
    assert {p["status"] for p in parse_group("no json at all", labels, 100).values()} == {"unparseable"}
    assert group_labels(28)[-2:] == ["AA", "AB"]


def test_group_rendering_labels_every_answer_once():
    cfg = config_mod.load(None, ["judge.mode=group"]).judge
    messages = render_group(
        "Q: {question}\n{answer}", {"question": "which link?"}, [{"answer": "x"}, {"answer": "y"}], cfg
    )
    text = messages[0]["content"]
    assert text.count("which link?") == 1 and "[Answer A]\nx" in text and "[Answer B]\ny" in text
    assert '"A": {"score"' in text


def test_group_mode_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"judge\.orders: 2 asks a group in two orders"):
        config_mod.load(None, ["judge.orders=2"])
    with pytest.raises(ConfigError, match=r"judge\.votes: judge\.mode=group"):
        config_mod.load(None, ["judge.mode=group", "judge.votes=2", "judge.sampling.temperature=0.5"])
    with pytest.raises(ConfigError, match=r"judge\.mode"):
        config_mod.load(None, ["judge.mode=listwise"])


def test_group_and_pointwise_judgments_have_different_fingerprints():
    from factory.stages.judge.stage import judge_fingerprint

    point = config_mod.load(None, []).judge
    group = config_mod.load(None, ["judge.mode=group"]).judge
    assert judge_fingerprint(point, "m", "r") != judge_fingerprint(group, "m", "r")


def test_group_batch_re_asks_a_reply_missing_an_answer_and_keeps_the_first_usable_scores():
    from factory.stages.judge.group import group_judge_batch

    cfg = config_mod.load(None, ["judge.mode=group"]).judge
    replies = iter(
        ['{"A": {"score": 70, "reason": "r"}}', '{"A": {"score": 1, "reason": "r"}, "B": {"score": 40, "reason": "r"}}']
    )
    engine = FakeEngine(reply=lambda request: next(replies))
    row = {"prompt_id": "p", "sampler_fp": "s", "vote": 0, "members": [3, 1], "created": [1.0, 2.0], "group_key": "g",
           "group_pool": "pool", "seed": 5, "messages": [{"role": "user", "content": "judge A and B"}]}  # fmt: skip
    out = group_judge_batch(engine, [row], None, cfg, "fp")
    assert len(engine.requests) == 2 and "B: no score for answer B" in engine.requests[1].messages[-1]["content"]
    assert [(r["sample_idx"], r["label"], r["score"], r["parse_status"]) for r in out] == [
        (3, "A", 70, "ok"),
        (1, "B", 40, "retried_ok"),
    ]
    assert [r["attempts"] for r in out] == [2, 0] and [r["sample_created_at"] for r in out] == [1.0, 2.0]
    assert sum(r["prompt_tokens"] for r in out) == 20  # two requests of 10 prompt tokens, split over the rows


def test_a_group_requests_cached_prompt_tokens_are_split_over_its_rows_like_its_prompt_tokens():
    from factory.stages.judge.group import group_judge_batch

    cfg = config_mod.load(None, ["judge.mode=group"]).judge
    reply = '{"A": {"score": 70, "reason": "r"}, "B": {"score": 40, "reason": "r"}, "C": {"score": 9, "reason": "r"}}'

    def usage(request, text):
        return {"prompt_tokens": 11, "cached_tokens": 8, "completion_tokens": 3, "latency_s": 0.001}

    engine = FakeEngine(reply=lambda request: reply, usage=usage)
    row = {"prompt_id": "p", "sampler_fp": "s", "vote": 0, "members": [0, 1, 2], "created": [1.0, 2.0, 3.0],
           "group_key": "g", "group_pool": "pool", "seed": 5,
           "messages": [{"role": "user", "content": "A, B, C"}]}  # fmt: skip
    out = group_judge_batch(engine, [row], None, cfg, "fp")
    assert [r["cached_tokens"] for r in out] == [3, 3, 2] and [r["prompt_tokens"] for r in out] == [4, 4, 3]


def test_a_group_request_whose_batch_keeps_failing_stores_engine_error_for_every_answer(tmp_path):
    from tests.fakes import Raise

    def reply(request: Request):
        return Raise(RuntimeError("replica died")) if request.json_schema is not None else seeded_reply(request)

    engine = FakeEngine(reply=reply)
    cfg = write_config(tmp_path, n_prompts=2, **{"judge.engine.max_retries": "1"})
    result = run(cfg, backend="local", build=lambda _cfg: engine)
    rows = stored_judgments(tmp_path)
    assert rows.height == 8 and set(rows["parse_status"]) == {"engine_error"}
    assert rows.group_by("group_key").len()["len"].to_list() == [4, 4]  # each group retried whole, stored whole
    assert result["counts"]["judgments_failed"] == 8


def test_pointwise_and_group_judges_of_one_run_are_compared_like_any_two_judges(tmp_path):
    """judge (pointwise) and judges.g (group) on the same samples: the stats' judge agreement compares their
    picks; a judge that scores each answer by its own words picks the same pair either way."""

    def reply(request: Request) -> str:
        if request.json_schema is not None and "A" not in request.json_schema["properties"]:
            answer = request.messages[0]["content"].rsplit(":\n", 1)[-1]
            return json.dumps({"score": min(100, 10 * len(answer.split())), "reason": "r"})
        return group_reply()(request)

    engine = FakeEngine(reply=reply)
    cfg = write_config(tmp_path, n_prompts=4, **{"judge.mode": "pointwise", "judges.g.mode": "group",
                       "judges.g.rubric_file": str(tmp_path / "rubric.txt"), "judges.g.sampling.max_tokens": "512",
                       "pairs.judges": "[quality,quality_g]"})  # fmt: skip
    result = run(cfg, backend="local", build=lambda _cfg: engine)
    assert result["requests"]["judge"] == 16 and result["requests"]["judge_g"] == 4  # 4 prompts x k=4, and 4 groups
    assert result["pairs"]["judge_agreement"] == {"quality vs quality_g": 1.0}
    rows = stored_judgments(tmp_path)
    point = rows.filter(pl.col("group_key").is_null())
    group = rows.filter(pl.col("group_key").is_not_null())
    assert point.height == group.height == 16
    # the fake bills 10 prompt tokens a request: 10 per judged sample pointwise, 10 / 4 in a group of 4
    assert point["prompt_tokens"].sum() == 160 and group["prompt_tokens"].sum() == 40
    judges = result["judges"]
    assert (judges["judge"]["mode"], judges["judge"]["prompt_tokens_per_judgment"]) == ("pointwise", 10.0)
    assert (judges["judge_g"]["mode"], judges["judge_g"]["prompt_tokens_per_judgment"]) == ("group", 2.5)
    from factory.commands.report import run_report

    text = run_report(str(tmp_path / "run"))[0]
    assert re.search(r"\| judge_g \| genrm \| quality_g \| 16 \|\s+0 \| judges\.g \|\s+group \|\s+2 \|", text)
    assert re.search(r"\| judge\s+\|.*\|\s+pointwise \|\s+10 \|", text)
    assert re.search(r"\| quality vs quality_g \|\s+100\.0% \|", text)


def test_the_plan_counts_group_requests_and_the_run_then_makes_them(tmp_path):
    from factory.commands.plan import make_plan

    engine = FakeEngine(reply=group_reply())
    for k in (4, 6):  # a fresh run, then growth: every group grows and is judged again
        cfg = write_config(tmp_path, k=k)
        plan = {p["stage"]: p for p in make_plan(cfg)["stages"]}
        made = run(cfg, backend="local", build=lambda _cfg: engine)["requests"]
        assert plan["judge"]["requests"] == made["judge"] == 3, k
        assert plan["sample"]["requests"] == made["sampler"]


def test_a_sample_asked_again_changes_its_group_which_is_judged_again(tmp_path):
    """A group judgment is reused only for the exact samples it saw: the failed sample of p0 asked again
    (sampler.retry_failed) makes p0's pool new, so p0 alone is judged again, now with four answers."""
    engine = FakeEngine(script={("p0", 1): [RuntimeError("HTTP 500"), None]}, reply=group_reply())
    cfg = write_config(tmp_path, **{"sampler.engine.max_retries": "0"})
    first = run(cfg, backend="local", build=lambda _cfg: engine)
    rows = stored_judgments(tmp_path)
    p0 = rows.filter(pl.col("prompt_id") == "p0")
    assert first["requests"]["judge"] == 3 and p0.height == 3 and 1 not in p0["sample_idx"].to_list()
    again = run(write_config(tmp_path, **{"sampler.retry_failed": "true"}), backend="local", build=lambda _cfg: engine)
    assert again["requests"] == {"sampler": 1, "judge": 1}
    p0 = stored_judgments(tmp_path).filter(pl.col("prompt_id") == "p0")
    assert p0["group_key"].n_unique() == 2 and sorted(p0.group_by("group_key").len()["len"].to_list()) == [3, 4]
    assert again.scored.filter(pl.col("prompt_id") == "p0")["quality"].null_count() == 0


def fake_group_engine(_cfg) -> FakeEngine:
    return FakeEngine(reply=group_reply())


@pytest.mark.slow
def test_group_judging_on_ray_matches_the_local_executor(tmp_path):
    rows = {}
    for backend in ("local", "ray"):
        folder = tmp_path / backend
        folder.mkdir()
        cfg = write_config(folder, **{"ray.num_cpus": "2", "sampler.engine.cpus_per_replica": "0.5",
                                      "judge.engine.cpus_per_replica": "0.5"})  # fmt: skip
        result = run(cfg, backend=backend, build=fake_group_engine)  # built in each actor on Ray
        assert result["requests"]["judge"] == 3, backend
        rows[backend] = (
            stored_judgments(folder).sort("prompt_id", "sample_idx").select("prompt_id", "sample_idx", "score", "label")
        )
    assert rows["ray"].equals(rows["local"])
