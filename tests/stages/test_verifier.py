"""Verifier judges (factory/stages/verifier.py): a rule against the prompt's own columns, no request."""

import polars as pl
import pytest

from factory import config
from factory.config import ConfigError, VerifierConfig
from factory.graph import RunGraph
from factory.stages import verifier

SAMPLES = pl.DataFrame(
    {
        "prompt_id": ["p1", "p1", "p2", "p2", "p3"],
        "sample_idx": [0, 1, 0, 1, 0],
        "answer": ["Link 3, yes.", "It is link 4.", "Please contact customer service.", "Yes, in stock.", None],
        "reasoning": ["", "", "", "", ""],
        "error": [None, None, None, None, "HTTP 500"],
    }
)
PROMPTS = pl.DataFrame(
    {"prompt_id": ["p1", "p2", "p3"], "ref": ["link 3,  YES.", None, "x"], "answerable": ["true", "false", "true"]}
)


def run_rule(**kw):
    cfg = VerifierConfig(**kw)
    VerifierConfig.check(cfg, "verifiers.v.")
    return verifier.verdicts(SAMPLES, PROMPTS, cfg, "verify_v", "verifiers.v")["verify_v"].to_list()


def test_reference_match_modes():
    assert run_rule(rule="reference", column="ref") == [1.0, 0.0, None, None, None]  # normalized (default)
    assert run_rule(rule="reference", column="ref", match="exact") == [0.0, 0.0, None, None, None]
    assert run_rule(rule="reference", column="ref", match="contains") == [1.0, 0.0, None, None, None]


def test_regex_must_and_must_not_match():
    assert run_rule(rule="regex", pattern=r"[Ll]ink \d") == [1.0, 1.0, 0.0, 0.0, None]
    assert run_rule(rule="regex", pattern=r"[Ll]ink \d", require=False) == [0.0, 0.0, 1.0, 1.0, None]


def test_answerable_is_evals_rule():
    # p1 answerable: answering is right; p2 unanswerable: referring is right, answering is wrong
    assert run_rule(rule="answerable", column="answerable") == [1.0, 1.0, 1.0, 0.0, None]


def judge_len(sample, prompt):
    return None if not sample["answer"] else len(sample["answer"]) < 14


def bad_range(sample, prompt):
    return 2.0


def test_a_callable_named_in_config():
    assert run_rule(rule="function", function="tests.stages.test_verifier:judge_len") == [1.0, 1.0, 0.0, 0.0, None]
    with pytest.raises(ValueError, match=r"verifiers\.v\.function: .*returned 2.0 \(not in 0..1\)"):
        run_rule(rule="function", function="tests.stages.test_verifier:bad_range")
    with pytest.raises(ConfigError, match=r"verifiers\.v\.function: cannot load 'tests.nothing:f'"):
        verifier.check(VerifierConfig(rule="function", function="tests.nothing:f"), "verifiers.v")


def test_bad_configs_name_their_key():
    for overrides, message in (
        (["verifiers.v.rule=regex"], r"verifiers\.v\.pattern: required"),
        (["verifiers.v.rule=reference"], r"verifiers\.v\.column: the reference rule needs"),
        (["verifiers.v.rule=nope"], r"verifiers\.v\.rule: 'nope' is not one of"),
        (["verifiers.v.rule=function", "verifiers.v.function=nocolon"], r"verifiers\.v\.function: 'nocolon'"),
        (["verifiers.v.rule=regex", "verifiers.v.pattern=("], r"verifiers\.v\.pattern: not a valid regex"),
    ):
        with pytest.raises(ConfigError, match=message):
            config.load(None, overrides)


def test_a_verifier_is_a_judge_of_the_graph_with_no_stage_and_no_request(tmp_path):
    from tests.stages.test_prejudge import cfg_of, local_run
    from tests.fakes import FakeEngine

    cfg = cfg_of(
        tmp_path, "run", "verifiers.short.rule=regex", r"verifiers.short.pattern=^(\S+\s){0,4}\S+$",
        "pairs.judges=[quality,verify_short]", "pairs.terms=[{source: verify_short, exclude_below: 1}]",
    )  # fmt: skip
    graph = RunGraph(cfg)
    assert [(j.stage, j.kind, j.column) for j in graph.judges][-1] == ("verify_short", "verifier", "verify_short")
    assert "verify_short" not in graph.request_keys()
    engine = FakeEngine()
    manifest = local_run(cfg, engine)
    assert set(manifest["requests"]) == {"sampler", "judge"}
    entry = manifest["judges"]["verify_short"]
    assert entry["kind"] == "verifier" and entry["requests"] == 0 and entry["ok"] + entry["failed"] == 24
    # the filter: every sample of more than 5 words is excluded under the term's name; the rest voted on
    from factory.rundir.store import RunStore

    scored = graph.scored(RunStore(cfg.output_dir), RunStore(cfg.output_dir).read("prompts")).scored
    words = scored["answer"].str.split(" ").list.len()
    assert scored["verify_short"].to_list() == (words <= 5).cast(pl.Float64).to_list()
    from factory.pairs import prejudge

    long = manifest["pairs"]["samples_excluded"]["verify_short"]
    assert long == int((words > 5).sum()) > 0  # a verifier filter is decided before the duplicates
    # ...and before judging: the judge was asked only about the samples the verifier (and dedupe) let through
    marked = prejudge.passing(scored, cfg.pairs)
    assert manifest["requests"]["judge"] == marked.filter(pl.col("exclusion").is_null()).height
    assert manifest["requests"]["judge"] == 24 - long - manifest["pairs"]["samples_excluded"]["duplicate"]
    assert manifest["pairs"]["samples_excluded"]["no_judgment"] == 0


def test_the_report_lists_the_verifier(tmp_path, capsys):
    from factory import cli
    from tests.stages.test_prejudge import cfg_of, local_run
    from tests.fakes import FakeEngine

    cfg = cfg_of(tmp_path, "run", "verifiers.short.rule=regex", r"verifiers.short.pattern=^(\S+\s){0,4}\S+$",
                 "pairs.terms=[{source: verify_short, weight: 0.2}]")  # fmt: skip
    local_run(cfg, FakeEngine())
    assert cli.main(["report", cfg.output_dir]) == 0
    out = capsys.readouterr().out
    assert "| verify_short " in out and "| verifier" in out


def test_a_label_column_the_prompts_lack_fails_before_any_request(tmp_path):
    """A reference/answerable verifier naming a column no prompt has is a config error at preflight (it would
    give no verdict for any sample, after paying for them all), naming the key and the columns there are."""
    from tests.fakes import FakeEngine
    from tests.stages.test_prejudge import cfg_of, local_run

    cfg = cfg_of(tmp_path, "run", "verifiers.ok.rule=answerable", "verifiers.ok.column=can_answer_label")
    engine = FakeEngine()
    with pytest.raises(ConfigError, match=r"verifiers\.ok\.column: the prompts have no column 'can_answer_label'"):
        local_run(cfg, engine)
    assert engine.requests == []
