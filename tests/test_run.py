"""Preflight, fingerprints and redaction: the checks made before any request (no model, no Ray)."""

import json
import re
from pathlib import Path

import polars as pl
import pytest

from factory import config
from factory.config import ConfigError
from factory.graph import RunGraph
from factory.rundir.secrets import redact


def preflight(cfg):
    RunGraph(cfg).preflight()


def fingerprints(cfg):
    return RunGraph(cfg).fingerprints

DEMO = Path(__file__).resolve().parent.parent / "conf" / "demo.yaml"


def test_missing_gguf_names_the_key_and_path(tmp_path):
    cfg = config.load(DEMO, [f"sampler.engine.model={tmp_path}/missing.gguf"])
    with pytest.raises(ConfigError, match=r"sampler\.engine\.model: GGUF file not found: .*missing\.gguf"):
        preflight(cfg)


def test_unset_api_key_variable_is_named(monkeypatch):
    monkeypatch.delenv("FACTORY_TEST_KEY", raising=False)
    cfg = config.load(
        DEMO,
        [
            "judge.engine.kind=openai",
            "judge.engine.base_url=http://127.0.0.1:9/v1",
            "judge.engine.model=m",
            "judge.engine.api_key_env=FACTORY_TEST_KEY",
        ],
    )
    with pytest.raises(
        ConfigError, match=r"judge\.engine\.api_key_env: environment variable 'FACTORY_TEST_KEY' is not set"
    ):
        preflight(cfg)


def test_missing_rubric_file_is_named(tmp_path):
    cfg = config.load(DEMO, [f"judge.rubric_file={tmp_path}/none.txt"])
    with pytest.raises(ConfigError, match=r"judge\.rubric_file: file not found"):
        preflight(cfg)


def test_sampler_fingerprint_ignores_k_but_not_sampling_params():
    base = fingerprints(config.load(DEMO))
    assert fingerprints(config.load(DEMO, ["sampler.k=8"])) == base
    hotter = fingerprints(config.load(DEMO, ["sampler.sampling.temperature=1.2"]))
    assert hotter["sampler"] != base["sampler"] and hotter["judge"] == base["judge"]


def test_judge_fingerprint_follows_the_rubric_text(tmp_path):
    rubric = tmp_path / "rubric.txt"
    rubric.write_text("Rate {answer} for {question} ({product_info}, {history}) from 0 to {scale_max}.")
    base = fingerprints(config.load(DEMO))
    other = fingerprints(config.load(DEMO, [f"judge.rubric_file={rubric}"]))
    assert other["judge"] != base["judge"] and other["sampler"] == base["sampler"]


def test_redact_masks_secret_looking_values_but_keeps_env_var_names():
    cfg = config.load(DEMO, ["sampler.engine.api_key_env=MY_KEY", "+sampler.engine.engine_kwargs.api_key=sk-live-123"])
    stored = json.dumps(redact(config.to_dict(cfg)))
    assert "sk-live-123" not in stored
    assert '"api_key_env": "MY_KEY"' in stored


def test_vllm_dtype_and_quantization_are_part_of_the_sampler_fingerprint():
    from factory.stages.sample import sampler_fingerprint

    base = config.load(DEMO, ["sampler.engine.kind=vllm", "sampler.engine.model=/m"]).sampler
    fp = sampler_fingerprint(base.engine, base.sampling, "/m", "t")
    for override in ("sampler.engine.dtype=float32", "sampler.engine.quantization=awq"):
        other = config.load(DEMO, ["sampler.engine.kind=vllm", "sampler.engine.model=/m", override]).sampler
        assert sampler_fingerprint(other.engine, other.sampling, "/m", "t") != fp


# -- one writer, nothing degenerate, nothing secret: `factory run` on the in-process executor -----------
def synthetic_cfg(tmp_path, n_prompts=4, *extra):
    from tests.synthetic import write_prompts

    prompts = write_prompts(tmp_path / f"prompts-{n_prompts}.jsonl", n_prompts)
    rubric = tmp_path / "rubric.txt"
    rubric.write_text("Rate {answer} from 0 to {scale_max}.")
    return config.load(
        None,
        [f"output_dir={tmp_path / 'run'}", f"prompts.path={prompts}", "sampler.k=2", f"judge.rubric_file={rubric}",
         "progress_interval_s=60", *extra],
    )  # fmt: skip


def local_run(cfg, engine=None, **kw):
    from factory.run import run
    from tests.fakes import FakeEngine

    engine = engine or FakeEngine()
    return run(cfg, backend="local", build=lambda _cfg: engine, command="factory run test", **kw)


def test_no_valid_prompt_is_an_error_and_replaces_nothing(tmp_path):
    cfg = synthetic_cfg(tmp_path)
    local_run(cfg)
    pairs_before = sorted(p.name for p in (tmp_path / "run" / "pairs").iterdir())
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(ConfigError, match=r"prompts.path: no valid prompt in .*empty.jsonl"):
        local_run(
            config.load(None, [f"output_dir={tmp_path / 'run'}", f"prompts.path={empty}", "progress_interval_s=60"])
        )
    assert sorted(p.name for p in (tmp_path / "run" / "pairs").iterdir()) == pairs_before


def test_fewer_prompts_than_the_outputs_were_built_from_is_refused_unless_asked(tmp_path):
    from factory.rundir.store import RunStore

    local_run(synthetic_cfg(tmp_path, 4))
    fewer = synthetic_cfg(tmp_path, 4, "prompts.limit=2")
    with pytest.raises(ConfigError, match=r"this run has 2 valid prompt\(s\) but the outputs .* were built from 4"):
        local_run(fewer)
    assert RunStore(str(tmp_path / "run")).read("prompts").height == 4
    manifest = local_run(fewer, allow_fewer_prompts=True)
    assert manifest["counts"]["prompts_valid"] == 2 and manifest["requests"] == {"sampler": 0, "judge": 0}


def test_a_secret_echoed_by_the_server_is_stored_nowhere(tmp_path, monkeypatch):
    from tests.fakes import FakeEngine

    monkeypatch.setenv("FACTORY_TEST_SECRET", "sk-live-abcdef123456")
    cfg = synthetic_cfg(tmp_path, 2, "sampler.engine.api_key_env=FACTORY_TEST_SECRET")
    engine = FakeEngine(script={("p0", 0): RuntimeError("HTTP 500: bad key sk-live-abcdef123456 for user")})
    local_run(cfg, engine)
    errors = pl.read_parquet(tmp_path / "run" / "samples")["error"].drop_nulls().to_list()
    assert errors == ["HTTP 500: bad key *** for user"]
    for path in (tmp_path / "run").rglob("*"):
        if path.suffix == ".parquet":
            text = " ".join(str(v) for v in pl.read_parquet(path).to_dicts())
        elif path.is_file():
            text = path.read_text()
        else:
            continue
        assert "sk-live-abcdef123456" not in text, path


def test_an_output_dir_under_a_file_is_one_line_naming_the_key(tmp_path):
    from factory.rundir.store import open_output

    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"output_dir: cannot write to .*file/run: a file is in the way"):
        open_output(str(tmp_path / "file" / "run"))


def test_target_rounds_reuse_one_pool_and_ask_only_for_new_prompts(tmp_path):
    from factory.run import run
    from tests.fakes import FakeEngine
    from tests.synthetic import write_prompts

    prompts = write_prompts(tmp_path / "pool.jsonl", 300)
    rubric = tmp_path / "rubric.txt"
    rubric.write_text("Rate {answer} from 0 to {scale_max}.")
    cfg = config.load(
        None,
        [
            f"output_dir={tmp_path / 'run'}",
            f"prompts.path={prompts}",
            f"judge.rubric_file={rubric}",
            "sampler.k=4",
            "prompts.limit=1",
            "pairs.target=60",
            "progress_interval_s=60",
        ],
    )
    builds, engine = [], FakeEngine()
    manifest = run(cfg, backend="local", build=lambda c: builds.append(c) or engine, command="t")
    draws = manifest["target"]["draws"]
    assert len(draws) >= 2 and manifest["target"]["met"]
    assert len(builds) == 1 and manifest["pools"]["sample+judge"]["starts"] == 1  # one engine for every round
    asked = [r.tag for r in engine.requests if r.json_schema is None]
    assert len(asked) == len(set(asked)) == 4 * draws[-1]["prompts_in"] == manifest["requests"]["sampler"]


def test_the_end_table_says_why_groups_were_not_paired_in_the_judges_units(tmp_path, capsys):
    from factory.cli import main
    from factory.commands.summary import run_summary
    from tests.fakes import FakeEngine

    # Two of p0's samples fail: p0 has fewer than 2 valid samples, counted under engine_error.
    engine = FakeEngine(script={("p0", 0): RuntimeError("HTTP 500"), ("p0", 1): RuntimeError("HTTP 500")})
    manifest = local_run(synthetic_cfg(tmp_path, 4), engine)
    text = run_summary(manifest, manifest.scored)
    assert text.startswith("factory run summary")
    assert "| samples excluded, by reason" in text and "engine_error 2" in text
    assert "fewer_than_2_valid 1" in text
    score = manifest.scored["score"].drop_nulls().mean()
    assert f"{score:.1f} / 100" in text  # the judge score with its scale
    gap = manifest["pairs"]["mean_quality_gap"] * 100
    assert f"{gap:.1f} / 100" in text  # the quality gap in the same unit as the report's and the sweep's
    assert "pool sample+judge" in text and "1 start(s)" in text
    assert main(["pairs", str(tmp_path / "run")]) == 0
    assert capsys.readouterr().out.startswith("factory pairs summary")


def test_pairs_parquet_matches_the_contract_schema_with_rows(tmp_path):
    import pyarrow.parquet as pq

    from factory.rundir.schemas import PAIRS

    manifest = local_run(synthetic_cfg(tmp_path, 6))
    (path,) = (tmp_path / "run" / "pairs").glob("*.parquet")
    table = pq.read_table(path)
    assert table.schema.equals(PAIRS, check_metadata=False)
    assert table.num_rows == manifest["counts"]["pairs_kept"] > 0
    for row in table.to_pylist():
        assert row["chosen_idx"] != row["rejected_idx"] and row["margin"] > 0
        assert row["chosen"][0]["role"] == "assistant" == row["rejected"][0]["role"]
        for side in (row["chosen"][0]["content"], row["rejected"][0]["content"]):  # a think block only with reasoning
            assert "<think>" not in side or re.match(r"<think>\n\S.*?\n</think>\n\n", side, re.DOTALL), side
        assert row["prompt"][-1]["role"] == "user"


def test_read_only_commands_say_when_a_run_is_writing(tmp_path, capsys):
    from factory.cli import main
    from factory.rundir.lease import Lease
    from factory.rundir.store import RunStore

    local_run(synthetic_cfg(tmp_path, 3))
    with Lease(RunStore(str(tmp_path / "run")), "factory run live.yaml"):
        assert main(["report", str(tmp_path / "run")]) == 0
        err = capsys.readouterr().err
    assert "a run is writing" in err and "'factory run live.yaml'" in err and "rows stored so far" in err
    assert main(["report", str(tmp_path / "run")]) == 0
    assert "a run is writing" not in capsys.readouterr().err


# -- judge ensembles and reward models ------------------------------------------------------------------
RM = ["reward_models.rm.engine.kind=openai", "reward_models.rm.engine.base_url=http://127.0.0.1:9/v1",
      "reward_models.rm.engine.model=rm"]  # fmt: skip


@pytest.mark.parametrize(
    "extra, message",
    [
        (["reward_models.rm.label=0"], "reward_models.rm.engine.kind: the llamacpp engine cannot score; use vllm (in "
         "process, pooling runner) or openai (a vLLM server's classify/pooling/score routes)"),
        (["reward_models.rm.engine.kind=vllm", "reward_models.rm.engine.model=/m", "reward_models.rm.route=pooling"],
         "reward_models.rm.route: the vllm engine serves classify, not 'pooling'"),
        (["pairs.judges=[quality,reward_x]", *RM],
         "pairs.judges: no configured judge makes the column 'reward_x' (define reward_models.<name>); judge columns: "
         "quality, reward_rm"),
        (["pairs.judges=[quality,quality_c]"],
         "pairs.judges: no configured judge makes the column 'quality_c' (define judges.<name>); judge columns: "
         "quality"),
        (["pairs.terms=[{source: dim_question, weight: 0.2}]"],
         "pairs.terms[0]: no configured judge makes the column 'dim_question' (set judge.dimensions=true and list it "
         "in judge.dimension_names); judge columns: quality"),
    ],
)  # fmt: skip
def test_a_judge_or_reward_model_that_cannot_work_fails_preflight_naming_its_key(tmp_path, extra, message):
    cfg = synthetic_cfg(tmp_path, 2, *extra)
    with pytest.raises(ConfigError) as raised:
        preflight(cfg)
    assert str(raised.value) == message


def test_the_same_judge_twice_a_missing_rubric_and_an_unset_key_are_named(tmp_path, monkeypatch):
    monkeypatch.delenv("FACTORY_TEST_RM_KEY", raising=False)
    rubric = tmp_path / "rubric.txt"
    with pytest.raises(ConfigError, match=r"^judges\.b: the same judge as judge \(same model, rubric, settings\)"):
        preflight(synthetic_cfg(tmp_path, 2, f"judges.b.rubric_file={rubric}"))
    with pytest.raises(ConfigError, match=r"^judges\.b\.rubric_file: file not found: .*none\.txt"):
        preflight(synthetic_cfg(tmp_path, 2, f"judges.b.rubric_file={tmp_path / 'none.txt'}"))
    with pytest.raises(
        ConfigError, match=r"^reward_models\.rm\.engine\.api_key_env: .*'FACTORY_TEST_RM_KEY' is not set"
    ):
        preflight(synthetic_cfg(tmp_path, 2, *RM, "reward_models.rm.engine.api_key_env=FACTORY_TEST_RM_KEY"))
    preflight(synthetic_cfg(tmp_path, 2, f"judges.b.rubric_file={rubric}", "judges.b.sampling.seed=1", *RM))


def test_every_judge_scores_each_usable_sample_once_under_its_own_fingerprint(tmp_path):
    from factory.rundir.store import RunStore
    from tests.fakes import FakeEngine, reward_of

    ensemble = ["judges.b.sampling.seed=1", *RM, "pairs.judges=[quality,quality_b,reward_rm]"]
    engine = FakeEngine()
    cfg = synthetic_cfg(tmp_path, 4, *ensemble)
    first = local_run(cfg, engine)
    assert first["requests"] == {"sampler": 8, "judge": 8, "judge_b": 8, "reward_rm": 8}
    assert {k: (v["column"], v["ok"], v["failed"]) for k, v in first["judges"].items()} == {
        "judge": ("quality", 8, 0), "judge_b": ("quality_b", 8, 0), "reward_rm": ("reward_rm", 8, 0),
    }  # fmt: skip
    store = RunStore(cfg.output_dir)
    samples = store.read("samples").select("prompt_id", "sample_idx", "answer")
    rewards = store.read("rewards").join(samples, on=["prompt_id", "sample_idx"])
    assert (
        rewards.height == 8
        and set(rewards["rm"]) == {"rm"}
        and set(rewards["rm_fp"]) == {first["fingerprints"]["reward_rm"]}
    )
    assert rewards["score"].to_list() == [reward_of(a) for a in rewards["answer"]]
    assert len(engine.scored) == 8
    judged = store.read("judgments")
    assert judged.group_by("judge_fp").len().sort("judge_fp")["len"].to_list() == [8, 8]
    assert set(first["pairs"]["judge_agreement"]) == {
        "quality vs quality_b",
        "quality vs reward_rm",
        "quality_b vs reward_rm",
    }
    # A rerun asks nothing; a new reward model asks only for itself; a new route is a new fingerprint.
    assert local_run(cfg, engine)["requests"] == {"sampler": 0, "judge": 0, "judge_b": 0, "reward_rm": 0}
    more = synthetic_cfg(
        tmp_path, 4, *ensemble, *(o.replace(".rm.", ".rm2.") for o in RM), "reward_models.rm2.route=score"
    )
    assert local_run(more, engine)["requests"] == {
        "sampler": 0,
        "judge": 0,
        "judge_b": 0,
        "reward_rm": 0,
        "reward_rm2": 8,
    }
    assert [r.route for r in engine.scored[8:]] == ["score"] * 8
    rerouted = synthetic_cfg(tmp_path, 4, *ensemble, "reward_models.rm.route=pooling")
    assert local_run(rerouted, engine)["requests"]["reward_rm"] == 8


def test_a_failed_reward_excludes_its_sample_and_retry_failed_asks_for_it_alone(tmp_path):
    from factory.rundir.store import RunStore
    from tests.fakes import FakeEngine

    cfg = synthetic_cfg(tmp_path, 2, *RM, "pairs.judges=[quality,reward_rm]")
    fp = fingerprints(cfg)["sampler"]
    engine = FakeEngine(script={("p1", 0, fp): RuntimeError("HTTP 500: rm down (after 4 attempts)")})
    manifest = local_run(cfg, engine)
    assert manifest["judges"]["reward_rm"]["failed"] == 1 and manifest["judges"]["reward_rm"]["ok"] == 3
    assert manifest["pairs"]["samples_excluded"]["no_judgment"] == 1
    failed = RunStore(cfg.output_dir).read("rewards").filter(pl.col("error").is_not_null())
    assert failed.select("prompt_id", "sample_idx", "score", "error").rows() == [
        ("p1", 0, None, "HTTP 500: rm down (after 4 attempts)")
    ]
    assert local_run(cfg, engine)["requests"]["reward_rm"] == 0  # a failed row is kept: a rerun pays nothing
    again = local_run(
        synthetic_cfg(tmp_path, 2, *RM, "pairs.judges=[quality,reward_rm]", "reward_models.rm.retry_failed=true"),
        FakeEngine(),
    )
    assert (
        again["requests"] == {"sampler": 0, "judge": 0, "reward_rm": 1} and again["judges"]["reward_rm"]["failed"] == 0
    )
    assert again["pairs"]["samples_excluded"].get("no_judgment", 0) == 0


def test_an_ensemble_of_one_judge_is_that_judge_at_the_run_level(tmp_path):
    """judges.b alone in pairs.judges (summed into S, or voting alone) gives the pairs of a run whose primary
    judge is b: same judgments through stage judge_b, column quality_b and the kernel."""
    from factory.rundir.store import RunStore

    picks = [
        "prompt_id",
        "chosen_idx",
        "rejected_idx",
        "chosen_tokens",
        "rejected_tokens",
        "chosen_score",
        "rejected_score",
        "margin",
    ]
    for folder in ("alone", "ensemble-terms", "ensemble-vote"):
        (tmp_path / folder).mkdir()
    alone = synthetic_cfg(tmp_path / "alone", 6, "judge.sampling.seed=7", "sampler.k=4", "pairs.drop_ratio=0.2")
    local_run(alone)
    expected = RunStore(alone.output_dir).read("pairs").select(picks).sort("prompt_id")
    assert expected.height >= 3
    for combine in ("terms", "vote"):
        out = tmp_path / f"ensemble-{combine}"
        cfg = synthetic_cfg(
            out,
            6,
            "judges.b.sampling.seed=7",
            f"judges.b.rubric_file={tmp_path / 'alone' / 'rubric.txt'}",
            "sampler.k=4",
            "pairs.drop_ratio=0.2",
            "pairs.judges=[quality_b]",
            f"pairs.combine={combine}",
        )
        manifest = local_run(cfg)
        assert manifest["fingerprints"]["judge_b"] == local_run(alone)["fingerprints"]["judge"]
        got = RunStore(cfg.output_dir).read("pairs").select(picks).sort("prompt_id")
        assert got.equals(expected), combine


def test_a_reward_model_alone_judges_a_run_when_the_genrm_is_off(tmp_path):
    from factory.rundir.store import RunStore
    from tests.fakes import FakeEngine

    with pytest.raises(ConfigError, match=r"^judge\.enabled: false, and no other judge"):
        preflight(synthetic_cfg(tmp_path, 2, "judge.enabled=false"))
    with pytest.raises(ConfigError) as raised:
        preflight(synthetic_cfg(tmp_path, 2, "judge.enabled=false", *RM))
    assert str(raised.value) == (
        "pairs.judges: no configured judge makes the column 'quality' (judge.enabled is false); judge columns: "
        "reward_rm"
    )
    engine = FakeEngine()
    cfg = synthetic_cfg(tmp_path, 4, "judge.enabled=false", *RM, "pairs.judges=[reward_rm]", "pairs.drop_ratio=0")
    manifest = local_run(cfg, engine)
    assert manifest["requests"] == {"sampler": 8, "reward_rm": 8} and "judge" not in manifest["fingerprints"]
    assert not [r for r in engine.requests if r.json_schema is not None]  # no GenRM request at all
    assert list(manifest["judges"]) == ["reward_rm"] and manifest["counts"]["judgments_ok"] == 0
    pairs = RunStore(cfg.output_dir).read("pairs")
    assert pairs.height == manifest["counts"]["pairs_kept"] == 4 and pairs["chosen_quality"].null_count() == 4
    assert local_run(cfg, engine)["requests"] == {"sampler": 0, "reward_rm": 0}
    from factory.cli import main

    assert main(["pairs", cfg.output_dir]) == 0 and main(["report", cfg.output_dir]) == 0
    numbers = json.loads((tmp_path / "run" / "report" / "report.json").read_text())
    assert [j["stage"] for j in numbers["judges"]] == ["reward_rm"] and numbers["pairs"]["pairs_kept"] == 4


def test_the_ensemble_example_loads_passes_preflight_and_builds_one_stage_per_judge(monkeypatch):
    from factory.engines import engine_identity

    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-test-0000")
    student = Path(__file__).resolve().parent / "pairs" / "fixtures" / "templates" / "deepseek_r1_distill"
    cfg = config.load(DEMO.parent / "r1_ensemble.yaml", [f"export.template={student}"])  # it names /models/...
    preflight(cfg)
    fps = fingerprints(cfg)
    assert list(fps) == ["sampler", "judge", "reward_skywork", "reward_served"] and len(set(fps.values())) == 4
    prompts = pl.DataFrame({"prompt_id": ["p"], "messages": [[{"role": "user", "content": "q"}]],
                            "product_info": ["x"], "history": [[]], "question": ["q"]})  # fmt: skip
    graph = RunGraph(cfg).stages(prompts, fps)
    assert [s.name for s in graph] == ["sample", "judge", "reward_skywork", "reward_served"]
    assert {s.table for s in graph} == {"samples", "judgments", "rewards"} and graph[2].upstream == "sample"
    assert graph[2].engine.engine_kwargs == {"runner": "pooling"}  # vLLM in process: the pooling runner
    assert graph[3].engine == cfg.reward_models["served"].engine  # a server: asked as it is
    assert len({engine_identity(s.engine) for s in graph}) == 4  # a pool per stage: no two engines alike


def test_a_target_run_counts_every_judges_requests_over_its_draws(tmp_path):
    from tests.fakes import FakeEngine

    engine = FakeEngine()
    cfg = synthetic_cfg(tmp_path, 12, "prompts.limit=2", "pairs.target=6", "pairs.drop_ratio=0", *RM)
    manifest = local_run(cfg, engine)
    assert len(manifest["target"]["draws"]) >= 2 and manifest["target"]["met"]
    asked = manifest["counts"]["prompts_valid"] * 2
    assert (
        manifest["requests"]
        == {"sampler": asked, "judge": asked, "reward_rm": asked}
        == {name: j["requests"] for name, j in {"sampler": {"requests": asked}, **manifest["judges"]}.items()}
    )
    assert len(engine.scored) == asked


@pytest.mark.parametrize("name", ["r1_api", "r1_distill_14b_vllm", "r1_ensemble", "r1_vllm_multinode"])
def test_the_shipped_reasoning_configs_name_the_students_template(name, monkeypatch):
    """Each reasoning-teacher example sets export.template (an R1-Distill student's tokenizer folder); where that
    folder is not there, preflight stops before any request naming export.template and what to point it at."""
    from factory.pairs.export import keeps_reasoning, load_template

    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-test-0000")
    cfg = config.load(DEMO.parent / f"{name}.yaml")
    assert cfg.export.template == "/models/DeepSeek-R1-Distill-Qwen-14B" and cfg.export.enabled
    missing = r"^export\.template: not found: /models/DeepSeek-R1-Distill-Qwen-14B \(the student's tokenizer folder"
    with pytest.raises(ConfigError, match=missing):
        load_template(cfg.export.template)
    student = Path(__file__).resolve().parent / "pairs" / "fixtures" / "templates" / "deepseek_r1_distill"
    assert not keeps_reasoning(load_template(str(student)))  # why it is set: this template drops pairs/' reasoning


def test_a_run_says_once_when_the_teacher_reasons_and_no_student_template_is_set(tmp_path, capsys):
    """The fake teacher writes <think> blocks: the run says so once, as the first reasoning is stored (a
    pairs.target run's several rounds included); with export.template set, or a teacher that does not
    reason, it says nothing."""
    from factory.run import REASONING_NOTICE, run
    from tests.fakes import FakeEngine, seeded_reply
    from tests.synthetic import write_prompts

    prompts = write_prompts(tmp_path / "pool.jsonl", 300)
    rubric = tmp_path / "rubric.txt"
    rubric.write_text("Rate {answer} from 0 to {scale_max}.")
    base = [f"prompts.path={prompts}", f"judge.rubric_file={rubric}", "sampler.k=4", "progress_interval_s=60"]
    target = config.load(None, [f"output_dir={tmp_path / 'a'}", "prompts.limit=1", "pairs.target=60", *base])
    manifest = run(target, backend="local", build=lambda _c: FakeEngine(), command="t")
    assert len(manifest["target"]["draws"]) >= 2
    assert capsys.readouterr().err.count(REASONING_NOTICE) == 1

    chatml = Path(__file__).resolve().parent / "pairs" / "fixtures" / "templates" / "chatml.jinja"
    templated = config.load(
        None, [f"output_dir={tmp_path / 'b'}", "prompts.limit=4", f"export.template={chatml}", *base]
    )
    run(templated, backend="local", build=lambda _c: FakeEngine(), command="t")
    assert REASONING_NOTICE not in capsys.readouterr().err

    def plain(request):  # a teacher without reasoning (the judge's replies as before)
        return seeded_reply(request) if request.json_schema is not None else "word " * 3

    plain_cfg = config.load(None, [f"output_dir={tmp_path / 'c'}", "prompts.limit=4", *base])
    run(plain_cfg, backend="local", build=lambda _c: FakeEngine(reply=plain), command="t")
    assert REASONING_NOTICE not in capsys.readouterr().err


def test_a_config_value_holding_the_key_is_scrubbed_on_the_page_as_in_the_manifest(tmp_path, monkeypatch):
    # A value that interpolates the API key's variable (a stop string here; a header or a URL in real configs):
    # the manifest scrubs it, and the page renders the config through the same scrub.
    monkeypatch.setenv("FACTORY_TEST_SECRET", "sk-live-abcdef123456")
    cfg = synthetic_cfg(
        tmp_path,
        2,
        "sampler.engine.api_key_env=FACTORY_TEST_SECRET",
        "sampler.sampling.stop=['x${oc.env:FACTORY_TEST_SECRET}']",
    )
    assert cfg.sampler.sampling.stop == ["xsk-live-abcdef123456"]
    local_run(cfg)
    page = (tmp_path / "run" / "report" / "index.html").read_text()
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["config"]["sampler"]["sampling"]["stop"] == ["x***"]
    assert "sk-live-abcdef123456" not in page and "x***" in page


def test_judgments_cut_at_the_judges_max_tokens_are_counted_and_the_summary_names_the_key(tmp_path):
    from factory.commands.summary import run_summary
    from factory.engines.base import Completion
    from tests.fakes import FakeEngine, seeded_reply

    def cut(answer: str) -> bool:  # the judge runs out of tokens on the answers of an odd number of words
        return len(answer.split()) % 2 == 1

    def reply(request):
        rated = next((m["content"] for m in request.messages if m["content"].startswith("Rate ")), None)
        if (
            request.json_schema is not None
            and rated is not None
            and cut(rated.removeprefix("Rate ").split(" from 0")[0])
        ):
            return Completion(tag=None, text='{"reason": "the reply names the link and the pri', finish_reason="length",
                              prompt_tokens=10, completion_tokens=96)  # fmt: skip
        return seeded_reply(request)

    manifest = local_run(
        synthetic_cfg(tmp_path, 6, "judge.max_reasks=1", "judge.sampling.max_tokens=96"), FakeEngine(reply=reply)
    )
    answers = pl.read_parquet(tmp_path / "run" / "samples")["answer"].to_list()
    expected = sum(cut(a) for a in answers)
    assert 0 < expected < len(answers) == 12
    judge = manifest["judges"]["judge"]
    assert (
        manifest["parse_status"]["truncated"]
        == judge["truncated"]
        == expected
        == manifest["counts"]["judgments_failed"]
    )
    assert "unparseable" not in manifest["parse_status"] and judge["max_tokens_key"] == "judge.sampling.max_tokens"
    text = run_summary(manifest, manifest.scored)
    assert "| judge replies cut at max_tokens" in text
    assert (
        f"{expected} of 12 judgments (failed; their samples no_judgment): raise judge.sampling.max_tokens (now 96)"
        in text
    )
    from factory.commands.rebuild import rebuild_pairs

    rebuilt, scored = rebuild_pairs(str(tmp_path / "run"))  # `factory pairs` keeps the count and the key
    assert rebuilt["judges"]["judge"]["truncated"] == expected
    assert "raise judge.sampling.max_tokens (now 96)" in run_summary(rebuilt, scored)


def test_a_filter_that_excludes_every_sample_says_so_once_naming_the_term(tmp_path, capsys):
    # The README's link-number rule on answers that name none (as the demo's English answers do).
    term = "pairs.terms=[{source: format, pattern: '\\d+号链接', exclude_above: 0}]"
    manifest = local_run(synthetic_cfg(tmp_path, 4, term))
    assert manifest["pairs"]["samples_excluded"]["format"] == 8 and manifest["pairs"]["samples_valid"] == 0
    err = capsys.readouterr().err
    assert err.count("[pairs] warning: no sample is valid") == 1
    assert "the filter pairs.terms[0] (format, exclude_above 0) excluded 8 of the 8 samples: no pair can be made" in err
    (tmp_path / "plain").mkdir()
    local_run(synthetic_cfg(tmp_path / "plain", 4))
    assert "no sample is valid" not in capsys.readouterr().err
