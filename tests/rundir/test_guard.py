"""Where a run writes: another tool's files, a home folder and links out of the run directory are refused before
any request; `$NAME` in a path is expanded or refused (factory/rundir/guard.py, factory/config/load.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from factory import config
from factory.config import ConfigError
from tests.fakes import FakeEngine
from tests.synthetic import write_prompts


def cfg_for(tmp_path, output_dir, *extra):
    prompts = write_prompts(tmp_path / "prompts.jsonl", 3)
    rubric = tmp_path / "rubric.txt"
    rubric.write_text("Rate {answer} from 0 to {scale_max}.")
    return config.load(
        None,
        [f"output_dir={output_dir}", f"prompts.path={prompts}", "sampler.k=2", f"judge.rubric_file={rubric}",
         "progress_interval_s=60", *extra],
    )  # fmt: skip


def local_run(cfg, engine=None):
    from factory.run import run

    engine = engine or FakeEngine()
    return run(cfg, backend="local", build=lambda _cfg: engine, command="factory run test")


@pytest.mark.parametrize(
    "name, content",
    [
        ("manifest.json", '{"name": "another tool", "version": 3}'),
        ("metrics.json", '{"accuracy": 0.9}'),
        ("report/index.html", "<html><title>my dashboard</title></html>"),
        ("pairs/train-00000.parquet", "PAR1"),
    ],
)
def test_a_directory_holding_another_tools_files_is_refused_naming_them(tmp_path, name, content):
    target = tmp_path / "theirs" / name
    target.parent.mkdir(parents=True)
    target.write_text(content)
    engine = FakeEngine()
    with pytest.raises(
        ConfigError, match=rf"^output_dir: .*theirs holds files a run would replace \({name}\) and no manifest"
    ):
        local_run(cfg_for(tmp_path, tmp_path / "theirs"), engine)
    assert target.read_text() == content and not engine.requests
    assert sorted(p.relative_to(tmp_path / "theirs").as_posix() for p in (tmp_path / "theirs").rglob("*")) == sorted(
        [name, *([name.split("/")[0]] if "/" in name else [])]
    )  # nothing written beside them


@pytest.mark.parametrize("name, content", [("manifest.json", '{"name": "another tool"}'), ("plan.json", "[1, 2]")])
def test_a_plan_refuses_a_directory_holding_another_tools_files_as_the_run_does(tmp_path, capsys, name, content):
    # `factory plan`, `factory run --dry-run` and `factory eval --dry-run` write plan.json there: the run's refusal.
    from factory.cli import main
    from factory.commands.plan import make_plan
    from factory.evaluation.run import eval_plan
    from tests.evaluation.fakes import eval_config

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / name).write_text(content)
    cfg = cfg_for(tmp_path, theirs)
    with pytest.raises(ConfigError, match=rf"^output_dir: .*theirs holds files a run would replace \({name}\)"):
        make_plan(cfg)
    conf = tmp_path / "run.yaml"
    conf.write_text(json.dumps(config.to_dict(cfg)))
    for argv in (["plan", str(conf)], ["run", str(conf), "--dry-run"]):
        assert main(argv) == 2
        assert f"output_dir: {theirs} holds files a run would replace ({name})" in capsys.readouterr().err
    (tmp_path / "eval").mkdir()
    with pytest.raises(ConfigError, match=rf"^eval.output_dir: .*theirs holds files a run would replace \({name}\)"):
        eval_plan(eval_config(tmp_path / "eval", f"eval.output_dir={theirs}"))
    assert sorted(p.name for p in theirs.iterdir()) == [name] and (theirs / name).read_text() == content


def test_a_plan_refuses_a_link_out_of_the_run_directory(tmp_path):
    from factory.commands.plan import make_plan

    cfg = cfg_for(tmp_path, tmp_path / "run")
    local_run(cfg)
    (tmp_path / "elsewhere").mkdir()
    os.rename(tmp_path / "run" / "report", tmp_path / "moved")
    (tmp_path / "run" / "report").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(ConfigError, match=r"^output_dir: .*run/report is a symbolic link to .*elsewhere, out of"):
        make_plan(cfg)
    assert not (tmp_path / "run" / "plan.json").exists() and not list((tmp_path / "elsewhere").iterdir())


def test_a_factory_run_cut_short_before_its_manifest_resumes(tmp_path):
    # A first run stopped by Ctrl-C leaves metrics.json, prompts/ and samples/ but no manifest.json; `factory
    # plan` writes plan.json first: both are the factory's own and the run goes on.
    cfg = cfg_for(tmp_path, tmp_path / "run")
    local_run(cfg)
    (tmp_path / "run" / "manifest.json").unlink()
    (tmp_path / "run" / "plan.json").write_text(json.dumps({"command": "run", "output_dir": str(tmp_path / "run")}))
    assert local_run(cfg)["requests"] == {"sampler": 0, "judge": 0}


def test_the_home_folder_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / ".bashrc").write_text("x")
    with pytest.raises(ConfigError, match=r"^output_dir: .*home is your home folder; .*name a folder of its own"):
        local_run(cfg_for(tmp_path, "$HOME"))
    assert sorted(p.name for p in (tmp_path / "home").iterdir()) == [".bashrc"]


@pytest.mark.parametrize("link", ["pairs", "report", "sft/dp_sft"])
def test_a_link_out_of_the_run_directory_is_refused_naming_it(tmp_path, capsys, link):
    cfg = cfg_for(tmp_path, tmp_path / "run")
    local_run(cfg)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.parquet").write_text("someone's data")
    (elsewhere / "index.html").write_text("someone's page")
    moved = tmp_path / "run" / link
    os.rename(moved, tmp_path / "moved")
    moved.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(
        ConfigError, match=rf"^output_dir: .*run/{link} is a symbolic link to .*elsewhere, out of the run"
    ):
        local_run(cfg)
    from factory.cli import main

    template = ["--template", str(Path(__file__).resolve().parents[1] / "pairs/fixtures/templates/smollm2")]
    for argv in (["pairs"], ["report"], ["sweep"], ["export", *template]):  # the commands that replace outputs
        assert main([argv[0], str(tmp_path / "run"), *argv[1:]]) == 2
        assert f"RUN_DIR: {tmp_path / 'run'}/{link} is a symbolic link" in capsys.readouterr().err
    assert sorted(p.name for p in elsewhere.iterdir()) == ["index.html", "keep.parquet"]
    assert (elsewhere / "keep.parquet").read_text() == "someone's data"


def test_a_variable_in_a_path_is_expanded_or_refused_naming_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("FACTORY_TEST_ROOT", str(tmp_path))
    cfg = cfg_for(tmp_path, "$FACTORY_TEST_ROOT/run")
    assert cfg.output_dir == f"{tmp_path}/run"
    local_run(cfg)
    assert (tmp_path / "run" / "manifest.json").exists() and not list(tmp_path.rglob("$*"))
    conf = tmp_path / "conf.yaml"
    conf.write_text("prompts:\n  path: $FACTORY_TEST_ROOT/prompts.jsonl\noutput_dir: ~/runs/x\n")
    loaded = config.load(conf)
    assert loaded.prompts.path == f"{tmp_path}/prompts.jsonl" and loaded.output_dir == os.path.expanduser("~/runs/x")
    monkeypatch.delenv("FACTORY_TEST_UNSET", raising=False)
    with pytest.raises(
        ConfigError, match=r"^output_dir: '\$FACTORY_TEST_UNSET/x' uses \$FACTORY_TEST_UNSET, which is not set"
    ):
        config.load(None, ["output_dir=$FACTORY_TEST_UNSET/x"])
    model = config.load(
        None, ["sampler.engine.model=$FACTORY_TEST_ROOT/m.gguf", "judges.b.engine.tokenizer=~/tok.json"]
    )
    assert model.sampler.engine.model == f"{tmp_path}/m.gguf"
    assert model.judges["b"].engine.tokenizer == os.path.expanduser("~/tok.json")
    conf.write_text("judge:\n  rubric_file: $FACTORY_TEST_UNSET/r.txt\n")
    with pytest.raises(ConfigError, match=r"^judge\.rubric_file: .*FACTORY_TEST_UNSET, which is not set"):
        config.load(conf)


def test_a_prompts_path_not_found_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = cfg_for(tmp_path, tmp_path / "run", "prompts.path=data/none.jsonl")
    with pytest.raises(FileNotFoundError) as raised:
        local_run(cfg)
    assert str(raised.value) == (
        f"prompts.path: data/none.jsonl does not exist (looked at {tmp_path}/data/none.jsonl: a path on the command "
        f"line is taken relative to the current folder, {tmp_path}; one in a YAML config, to the config file's folder)"
    )
