"""`factory eval` on the in-process executor with a fake model pair (tests/evaluation/fakes.py): the table's
every number worked out by hand, what is cached, answers files, preflight errors."""

from __future__ import annotations

import json

import polars as pl
import pytest

from factory.config import ConfigError
from factory.evaluation import run as evaluation
from factory.evaluation.table import difference_text, paired_bootstrap
from factory.rundir.store import RunStore
from tests.evaluation.fakes import eval_config, eval_engine, sampled, write_prompts


def evaluate(cfg, engine):
    return evaluation.evaluate(cfg, backend="local", build=lambda _cfg: engine)


@pytest.fixture()
def done(tmp_path):
    engine = eval_engine()
    cfg = eval_config(tmp_path)
    result = evaluate(cfg, engine)
    return tmp_path, cfg, engine, result


def rows_by_model(result):
    return {r["model"]: r for r in result["rows"]}


def test_the_table_holds_the_numbers_worked_out_by_hand(done):
    _, _, _, result = done
    rows = rows_by_model(result)
    long, short = rows["long"], rows["short"]
    # long: 40 on p0..p4, an empty answer on p5 (cut inside <think>) scores 0
    assert long["score"] == pytest.approx(200 / 6) and long["prompts_scored"] == 6 and long["empty_answers"] == 1
    assert long["mean_tokens"] == pytest.approx((5 * 30 + 64) / 6)
    assert long["mean_reasoning_tokens"] == pytest.approx((5 * 20 + 64) / 6)
    assert long["mean_answer_tokens"] == pytest.approx(50 / 6)
    assert (long["max_tokens"], long["max_reasoning_tokens"], long["max_answer_tokens"]) == (64, 64, 10)
    assert long["mean_rt_s"] == pytest.approx((5 * 30 + 64) / 6 / 62.5) and long["max_rt_s"] == pytest.approx(64 / 62.5)
    assert long["truncated"] == pytest.approx(1 / 6)
    assert (long["judgments"], long["judge_parse_failures"]) == (5, 0)  # the empty answer is never sent to the judge
    assert long["answerable_agreement"] == pytest.approx(4 / 6) and long["answerable_labelled"] == 6
    # short: 70 everywhere but p3, whose judgment could not be parsed (left out, counted)
    assert short["score"] == pytest.approx(70.0) and short["prompts_scored"] == 5
    assert (short["judgments"], short["judge_parse_failures"]) == (6, 1)
    assert short["mean_tokens"] == 8 and short["truncated"] == 1.0 and short["mean_rt_s"] == pytest.approx(8 / 62.5)
    assert short["answerable_agreement"] == pytest.approx(3 / 6)  # refers on p4, p5 (right) and p0-p2 (wrong)


def test_the_difference_to_the_baseline_is_paired_by_prompt_with_a_bootstrap_interval(done):
    _, _, _, result = done
    rows = rows_by_model(result)
    short = rows["short"]
    # paired prompts: p0, p1, p2, p4 (+30 each) and p5 (70 - 0); p3 has no short score
    assert short["paired_prompts"] == 5 and short["score_diff"] == pytest.approx(38.0)
    # resampling 5 prompts, 4 of them +30: the mean is 30 a third of the time, >= 62 under 1% of the time
    assert (short["score_diff_low"], short["score_diff_high"]) == (pytest.approx(30.0), pytest.approx(54.0))
    assert short["rt_diff_s"] == pytest.approx(((5 * 8 - 5 * 30) + (8 - 64)) / 6 / 62.5)
    assert difference_text(short) == "+38.0 pt [+30.0, +54.0], -0.44 s"
    assert rows["long"]["score_diff"] is None and difference_text(rows["long"]) == "baseline"


def test_the_bootstrap_is_seeded_and_needs_two_prompts():
    diffs = [0.0, 1.0, 5.0, -2.0, 3.0, 0.5]
    assert paired_bootstrap(diffs, 500, 7) == paired_bootstrap(diffs, 500, 7)
    assert paired_bootstrap(diffs, 500, 7) != paired_bootstrap(diffs, 500, 8)
    low, high = paired_bootstrap(diffs, 2000, 0)
    assert -2.0 < low < sum(diffs) / 6 < high < 5.0
    assert paired_bootstrap([1.0], 100, 0) is None


def test_outputs_are_written_as_parquet_markdown_json_and_png(done):
    tmp_path, cfg, _, result = done
    report = tmp_path / "run" / "eval" / "report"  # eval.output_dir '' = OUTPUT_DIR/eval
    table = pl.read_parquet(report / "eval.parquet")
    assert table["model"].to_list() == ["long", "short"] and table["score"][1] == pytest.approx(70.0)
    per_sample = pl.read_parquet(report / "eval_samples.parquet")
    assert per_sample.height == 12 and {"candidate", "eval_score", "rt_s", "refers", "agrees"} <= set(
        per_sample.columns
    )
    numbers = json.loads((report / "eval.json").read_text())
    assert numbers["baseline"] == "long" and numbers["answerable_method"].startswith("rule")
    assert (report / "score_vs_rt.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (report / "eval.md").read_text()
    assert text == result["markdown"]
    assert "| short " in text and "+38.0 pt [+30.0, +54.0], -0.44 s" in text and "answerable agree" in text
    manifest = json.loads((tmp_path / "run" / "eval" / "manifest.json").read_text())
    assert manifest["requests"] == {"sample:long": 6, "sample:short": 6, "judge:long": 5, "judge:short": 6}
    assert manifest["spend"]["prompt_tokens"] == 12 * 11 + 11 * 50


def test_a_rerun_makes_no_request_and_a_new_candidate_samples_only_itself(done):
    tmp_path, _, engine, result = done
    before = len(engine.requests)
    again = evaluate(eval_config(tmp_path), engine)
    assert len(engine.requests) == before and set(again["manifest"]["requests"].values()) == {0}
    assert again["rows"] == result["rows"]
    third = evaluate(eval_config(tmp_path, "eval.candidates.mid.sampling.max_tokens=32"), engine)
    assert third["manifest"]["requests"] == {
        "sample:long": 0, "sample:short": 0, "sample:mid": 6, "judge:long": 0, "judge:short": 0, "judge:mid": 6,
    }  # fmt: skip
    assert all(r.max_tokens == 32 for r in sampled(engine)[-6:])
    assert [r["model"] for r in third["rows"]] == ["long", "short", "mid"]


def test_answers_of_a_model_served_elsewhere_are_imported_and_judged_without_sampling(tmp_path):
    answers = tmp_path / "student.jsonl"
    lines = [{"id": f"p{i}", "answer": "Ask customer service." if i >= 4 else "On link 3!", "completion_tokens": 12,
              "reasoning_tokens": 4} for i in range(6)] + [{"id": "nope", "answer": "x"}]  # fmt: skip
    answers.write_text("".join(json.dumps(line) + "\n" for line in lines))
    engine = eval_engine()
    extra = [f"eval.candidates.student.answers_path={answers}", "eval.baseline=student"]
    result = evaluate(eval_config(tmp_path, *extra), engine)
    requests = result["manifest"]["requests"]
    assert "sample:student" not in requests and requests["judge:student"] == 6
    assert result["manifest"]["counts"]["answers_imported"]["student"]["unknown_prompt"] == 1
    student = rows_by_model(result)["student"]
    assert student["score"] == pytest.approx((4 * 40 + 2 * 70) / 6) and student["mean_tokens"] == 12
    assert student["answerable_agreement"] == 1.0 and student["mean_reasoning_tokens"] == 4
    assert rows_by_model(result)["short"]["score_diff"] == pytest.approx(70 - (3 * 40 + 2 * 70) / 5)
    before = len(engine.requests)
    assert set(evaluate(eval_config(tmp_path, *extra), engine)["manifest"]["requests"].values()) == {0}
    assert len(engine.requests) == before
    answers.write_text(answers.read_text().replace("On link 3!", "Link 3, 40 W!"))  # a new version: judged again
    edited = evaluate(eval_config(tmp_path, *extra), engine)
    assert edited["manifest"]["requests"]["judge:student"] == 6 and edited["manifest"]["requests"]["sample:long"] == 0


def test_answers_without_token_counts_are_estimated_and_say_so(tmp_path):
    answers = tmp_path / "a.jsonl"
    answers.write_text(
        "".join(json.dumps({"prompt_id": f"p{i}", "text": "<think>abcd</think>abcdefgh"}) + "\n" for i in range(6))
    )
    result = evaluate(eval_config(tmp_path, f"eval.candidates.file.answers_path={answers}"), eval_engine())
    row = rows_by_model(result)["file"]
    assert (row["mean_reasoning_tokens"], row["mean_answer_tokens"]) == (1, 2)  # 4 and 8 ASCII characters / 4
    assert any("file: answers from" in n and "estimated from characters" in n for n in result["notes"])


@pytest.mark.parametrize(
    "extra, message",
    [
        (["eval.prompts=/nonexistent/p.jsonl"], r"eval\.prompts: not found: /nonexistent/p\.jsonl"),
        (
            ["eval.candidates.twin.sampling.max_tokens=8"],
            r"eval\.candidates\.twin: samples exactly as eval\.candidates\.short",
        ),
        (["eval.candidates.f.answers_path=/nonexistent/a.jsonl"], r"eval\.candidates\.f\.answers_path: file not found"),
        (
            ["eval.candidates.long.engine.model=/nonexistent/m.gguf"],
            r"eval\.candidates\.long\.engine\.model: GGUF file not found",
        ),
    ],
)
def test_preflight_names_the_key(tmp_path, extra, message):
    engine = eval_engine()
    with pytest.raises(ConfigError, match=message):
        evaluate(eval_config(tmp_path, *extra), engine)
    assert engine.requests == []


def test_no_candidate_is_an_error_naming_the_key(tmp_path):
    from factory import config as config_mod
    from tests.evaluation.fakes import write_prompts

    cfg = config_mod.load(None, [f"output_dir={tmp_path}", f"eval.prompts={write_prompts(tmp_path)}"])
    with pytest.raises(ConfigError, match=r"^eval\.candidates: no candidate model; add some"):
        evaluate(cfg, eval_engine())


def test_an_unknown_baseline_or_candidate_key_is_refused_at_load(tmp_path):
    with pytest.raises(ConfigError, match=r"eval\.baseline: 'base' is not a candidate; candidates: long, short"):
        eval_config(tmp_path, "eval.baseline=base")
    with pytest.raises(ConfigError, match=r"did you mean 'eval\.candidates\.long\.sampling\.max_tokens'"):
        eval_config(tmp_path, "eval.candidates.long.sampling.max_token=3")


def test_samples_live_in_the_eval_directory_keyed_by_candidate_fingerprint(done):
    tmp_path, cfg, _, result = done
    store = RunStore(str(tmp_path / "run" / "eval"))
    samples = store.read("samples")
    fps = result["manifest"]["fingerprints"]["candidates"]
    assert samples.group_by("sampler_fp").len().sort("sampler_fp").to_dicts() == sorted(
        [{"sampler_fp": fps["long"], "len": 6}, {"sampler_fp": fps["short"], "len": 6}], key=lambda r: r["sampler_fp"]
    )
    assert not (tmp_path / "run" / "samples").exists()  # the run's own tables are untouched


def test_two_sets_each_get_an_overall_and_a_multi_turn_table_with_each_candidates_rt(tmp_path):
    """Issue 25 (the source's 4.7): val and later traffic in one eval; multi-turn = prompts with a history;
    the long candidate decodes at 100 tokens/s of its own (int8, say), the short one at decode_tokens_per_s."""
    from tests.evaluation.fakes import PROMPTS

    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]

    def write(name: str, rows: list[dict]) -> str:
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return str(path)

    val = write("val", [dict(PROMPTS[i], history=history if i >= 2 else []) for i in range(4)])  # p0..p3
    traffic = write("traffic", [dict(PROMPTS[i], id=f"t{i}", history=history if i == 5 else []) for i in (4, 5)])
    cfg = eval_config(
        tmp_path, "eval.prompts=''", f"eval.sets.val={val}", f"eval.sets.traffic={traffic}",
        "eval.candidates.long.decode_tokens_per_s=100",
    )  # fmt: skip
    result = evaluate(cfg, eval_engine())
    numbers = json.loads((tmp_path / "run" / "eval" / "report" / "eval.json").read_text())
    splits = {s["set"]: s for s in numbers["splits"]}
    assert list(splits) == ["val", "traffic"]
    assert (splits["val"]["prompts"], splits["val"]["multi_turn_prompts"]) == (4, 2)
    assert (splits["traffic"]["prompts"], splits["traffic"]["multi_turn_prompts"]) == (2, 1)

    def by_model(rows):
        return {r["model"]: r for r in rows}

    val_all, val_multi = by_model(splits["val"]["overall"]), by_model(splits["val"]["multi_turn"])
    assert (
        val_all["long"]["score"] == 40 and val_all["short"]["score"] == 70 and val_all["short"]["prompts_scored"] == 3
    )
    assert val_multi["short"]["prompts"] == 2 and val_multi["short"]["prompts_scored"] == 1  # p3's judgment broke
    assert (val_multi["short"]["judgments"], val_multi["short"]["judge_parse_failures"]) == (2, 1)
    traffic_all, traffic_multi = by_model(splits["traffic"]["overall"]), by_model(splits["traffic"]["multi_turn"])
    assert traffic_all["long"]["score"] == 20 and traffic_multi["long"]["score"] == 0  # t5: cut inside <think>
    assert traffic_multi["short"]["score_diff"] == 70
    # RT per candidate: long at its own 100 tokens/s, short at decode_tokens_per_s (62.5)
    assert val_all["long"]["mean_rt_s"] == pytest.approx(30 / 100) and val_all["short"]["mean_rt_s"] == pytest.approx(
        8 / 62.5
    )
    whole = rows_by_model(result)  # the main table: every set's prompts together, as before
    assert whole["long"]["score"] == pytest.approx(200 / 6) and whole["long"]["prompts"] == 6
    text = result["markdown"]
    for title in ("## set val: overall (4 prompts)", "## set val: multi-turn (2 prompts with a history)",
                  "## set traffic: overall (2 prompts)", "## set traffic: multi-turn (1 prompts with a history)",
                  "long: 100 tokens/s"):  # fmt: skip
        assert title in text, title


def test_sets_are_checked_naming_their_key(tmp_path):
    from factory import config as config_mod

    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps({"id": "x", "product_info": "p", "question": "q?"}) + "\n")
    with pytest.raises(ConfigError, match="eval.sets: give eval.sets or eval.prompts"):
        eval_config(tmp_path, f"eval.sets.a={path}")
    cfg = eval_config(tmp_path, "eval.prompts=''", f"eval.sets.a={path}", f"eval.sets.b={path}")
    with pytest.raises(ConfigError, match=r"eval.sets.b: prompt id 'x' is also in eval.sets.a"):
        evaluation.eval_prompts(cfg)
    with pytest.raises(ConfigError, match="eval.candidates.long.decode_tokens_per_s"):
        config_mod.load(None, ["eval.candidates.long.decode_tokens_per_s=0"])


def _checkpoint(folder, weights: bytes):
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "model.safetensors").write_bytes(weights)
    return folder


def test_a_checkpoint_retrained_at_the_same_path_is_evaluated_anew(tmp_path):
    """A local checkpoint is known by its contents, not its path: new weights of the same size and mtime at
    the same path are a new model (sampled and judged again); the same bytes are the cached model."""
    import os

    ckpt = _checkpoint(tmp_path / "trained", b"\x01" * 64)
    key = "eval.candidates.long.engine"
    extra = (f"{key}.kind=vllm", f"{key}.model={ckpt}")
    engine = eval_engine()
    first = evaluate(eval_config(tmp_path, *extra), engine)
    assert first["manifest"]["requests"]["sample:long"] == 6
    again = evaluate(eval_config(tmp_path, *extra), engine)
    assert again["manifest"]["requests"]["sample:long"] == 0  # same bytes: cached
    stat = os.stat(ckpt / "model.safetensors")
    (ckpt / "model.safetensors").write_bytes(b"\x02" * 64)  # retrained: same size, same mtime
    os.utime(ckpt / "model.safetensors", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    retrained = evaluate(eval_config(tmp_path, *extra), engine)
    assert retrained["manifest"]["requests"]["sample:long"] == 6
    assert retrained["manifest"]["requests"]["judge:long"] == first["manifest"]["requests"]["judge:long"] == 5
    assert retrained["manifest"]["requests"]["sample:short"] == 0
    fps = [r["manifest"]["fingerprints"]["candidates"]["long"] for r in (first, again, retrained)]
    assert fps[0] == fps[1] != fps[2]


def test_every_saved_checkpoint_is_a_candidate_and_the_per_checkpoint_table_is_written(tmp_path):
    """`factory eval --checkpoints TRAIN_OUT --like long`: checkpoints/step-1, step-2 and the final model, each a copy
    of candidate long with its folder as engine.model, sampled and judged; report/epochs.* tables them in order."""
    import json as json_mod

    from factory.evaluation import checkpoints

    out = _checkpoint(tmp_path / "dpo", b"\x03" * 64)
    (out / "checkpoints").mkdir()
    for step, byte in ((2, b"\x05"), (1, b"\x04")):
        _checkpoint(out / "checkpoints" / f"step-{step}", byte * 64)
    (out / "train_dpo.json").write_text(json_mod.dumps({"steps": 2, "checkpoints": [
        {"name": "step-1", "step": 1, "epoch": 0.5, "path": "/elsewhere/checkpoints/step-1"},
        {"name": "step-2", "step": 2, "epoch": 1.0, "path": "/elsewhere/checkpoints/step-2"},
    ]}))  # fmt: skip
    base = _checkpoint(tmp_path / "base", b"\x01" * 64)
    cfg = eval_config(tmp_path, "eval.candidates.long.engine.kind=vllm", f"eval.candidates.long.engine.model={base}")
    expanded, points = checkpoints.with_checkpoints(cfg, str(out), "long")
    assert [p["candidate"] for p in points] == ["step-1", "step-2", "final"]
    assert list(expanded.eval.candidates) == ["long", "short", "step-1", "step-2", "final"]
    assert expanded.eval.candidates["step-2"].engine.model == str(out / "checkpoints" / "step-2")
    assert expanded.eval.candidates["final"].sampling == cfg.eval.candidates["long"].sampling
    assert list(cfg.eval.candidates) == ["long", "short"]  # the loaded config is left as it was

    result = evaluation.evaluate(expanded, backend="local", build=lambda _cfg: eval_engine(), checkpoints=points)
    assert {result["manifest"]["requests"][f"sample:{name}"] for name in ("step-1", "step-2", "final")} == {6}
    rows = rows_by_model(result)
    table = result["epochs"]["rows"]
    assert [(r["checkpoint"], r["step"], r["epoch"]) for r in table] == [
        ("step-1", 1, 0.5), ("step-2", 2, 1.0), ("final", 2, None)
    ]  # fmt: skip
    for r in table:
        assert (r["score"], r["mean_tokens"], r["mean_rt_s"]) == tuple(
            rows[r["checkpoint"]][k] for k in ("score", "mean_tokens", "mean_rt_s")
        )
    report = tmp_path / "run" / "eval" / "report"
    assert json_mod.loads((report / "epochs.json").read_text())["rows"] == table
    assert "| step-2 | 1.00 | 2 |" in (report / "epochs.md").read_text()
    assert (report / "epochs.png").read_bytes()[:4] == b"\x89PNG"


def test_checkpoints_errors_name_the_option(tmp_path):
    from factory.evaluation import checkpoints

    cfg = eval_config(tmp_path)
    with pytest.raises(ConfigError, match="^--checkpoints: not a folder"):
        checkpoints.with_checkpoints(cfg, str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="^--checkpoints: no checkpoint in"):
        checkpoints.with_checkpoints(cfg, str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="^--like: 'nope' is not a candidate"):
        checkpoints.with_checkpoints(cfg, str(_checkpoint(tmp_path / "out", b"\x01")), "nope")


def test_factory_eval_dry_run_plans_every_checkpoint(tmp_path, capsys):
    from factory.cli import main

    out = _checkpoint(tmp_path / "dpo", b"\x03" * 64)
    (out / "checkpoints").mkdir()
    _checkpoint(out / "checkpoints" / "epoch-1", b"\x04" * 64)
    rubric = tmp_path / "rubric.txt"
    rubric.write_text("Rate the host reply {answer} from 0 to {scale_max}.")
    conf = tmp_path / "eval.yaml"
    conf.write_text(
        f"output_dir: {tmp_path / 'run'}\neval:\n  prompts: {write_prompts(tmp_path)}\n  candidates:\n"
        f"    trained:\n      engine: {{kind: vllm, model: {out}}}\n      sampling: {{max_tokens: 64}}\n"
        f"judge:\n  rubric_file: {rubric}\n"
    )
    assert main(["eval", str(conf), "--checkpoints", str(out), "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "sample:epoch-1" in plan and "sample:trained" in plan
    assert "sample:final" not in plan  # the final model is candidate trained already: sampled once


def test_a_group_judge_asks_once_per_prompt_and_candidate_and_scores_each_answer(tmp_path):
    """judge.mode group in eval: the candidate's k answers of a prompt in one request (eval.k=2: half the
    pointwise requests), each scored as a pointwise judge scores it."""
    from factory.engines.base import Completion, Request
    from tests.evaluation.fakes import eval_reply

    def reply(request: Request) -> Completion:
        if request.json_schema is None or "A" not in request.json_schema["properties"]:
            return eval_reply(request)
        content = request.messages[-1]["content"]
        blocks = content.split("[Answer ")[1:]
        out = {
            b[0]: {"score": 70 if "customer service" in b else 40, "reason": "r"} for b in blocks if "BROKEN" not in b
        }
        return Completion(tag=None, text=json.dumps(out), finish_reason="stop", prompt_tokens=50, completion_tokens=9)

    from tests.fakes import FakeEngine

    engine = FakeEngine(reply=reply, shuffle=False, model_name="fake-eval")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    point = evaluate(eval_config(tmp_path / "a", "eval.k=2"), eval_engine())
    group = evaluate(
        eval_config(tmp_path / "b", "eval.k=2", "judge.mode=group", "judge.sampling.max_tokens=256"), engine
    )
    requests = group["manifest"]["requests"]
    assert requests["judge:long"] * 2 == point["manifest"]["requests"]["judge:long"]
    assert rows_by_model(group)["short"]["score"] == pytest.approx(rows_by_model(point)["short"]["score"])


def test_refusal_agreement_with_the_teachers_flags_beside_the_labels(tmp_path):
    """Issue 25 (seed 000 §3.3: refusal agreement with R1): the teacher run's samples hold its can-answer flags;
    a prompt's flag is the majority of its samples' (p5's tie gives none), each candidate's refusal (the referral
    rule on its reply) agrees when it refers exactly where the teacher said it cannot answer."""
    import pyarrow as pa

    from factory.rundir.schemas import SAMPLES

    teacher = RunStore(str(tmp_path / "run"))
    teacher.write_json("manifest.json", {"fingerprints": {"sampler": "teacher-fp"}})
    flags = {f"p{i}": [True, True, False] for i in range(4)} | {"p4": [False, False], "p5": [True, False]}
    rows = [
        {"prompt_id": p, "sample_idx": i, "sampler_fp": "teacher-fp", "answer": "x", "can_answer": flag,
         "error": None, "created_at": 1.0}
        for p, fs in flags.items() for i, flag in enumerate(fs)
    ]  # fmt: skip
    rows.append({**rows[0], "sampler_fp": "another-teacher", "sample_idx": 7, "can_answer": False})  # not this run's
    rows.append({**rows[0], "sample_idx": 8, "can_answer": None})  # unparsed: not counted
    rows += [{**rows[0], "sample_idx": 9 + i, "can_answer": False, "error": "HTTP 500"} for i in range(3)]  # failed
    teacher.append("samples", pa.Table.from_pylist(rows, schema=SAMPLES))

    result = evaluate(eval_config(tmp_path), eval_engine())
    rows_of = rows_by_model(result)
    # long answers p0..p4 (agrees on p0..p3, the teacher flagged p4 as not answerable); short refers on all but p3
    assert (rows_of["long"]["teacher_agreement"], rows_of["long"]["teacher_flagged"]) == (pytest.approx(4 / 5), 5)
    assert (rows_of["short"]["teacher_agreement"], rows_of["short"]["teacher_flagged"]) == (pytest.approx(2 / 5), 5)
    assert rows_of["long"]["answerable_agreement"] == pytest.approx(4 / 6)  # the labels' column beside it
    text = result["markdown"]
    assert "| teacher agree" in text and "80% of 5" in text and "40% of 5" in text
    numbers = json.loads((tmp_path / "run" / "eval" / "report" / "eval.json").read_text())
    assert numbers["teacher_run"] == str(tmp_path / "run")


def test_without_a_teacher_run_there_is_no_teacher_column_and_a_named_one_must_exist(done, tmp_path):
    _, _, _, result = done
    assert all(r["teacher_flagged"] == 0 for r in result["rows"]) and "teacher agree" not in result["markdown"]
    with pytest.raises(ConfigError, match="eval.teacher_run: no run directory"):
        evaluation.preflight(eval_config(tmp_path, f"eval.teacher_run={tmp_path / 'nowhere'}"), secrets=False)


def test_a_prompts_teacher_flag_is_the_majority_of_its_samples():
    from factory.evaluation.table import majority_flags

    samples = pl.DataFrame(
        {
            "prompt_id": ["a", "a", "a", "b", "b", "c", "d"],
            "can_answer": [True, True, False, True, False, None, False],
            "error": [None, None, None, None, None, None, "x"],
        }
    )
    out = {r["prompt_id"]: (r["teacher_can_answer"], r["teacher_flags"]) for r in majority_flags(samples).to_dicts()}
    assert out == {"a": (True, 3), "b": (None, 2)}
