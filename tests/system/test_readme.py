"""The README's examples name what a fresh clone has: its repository files and configs exist, no path outside the
repository or of a particular machine appears, and each concrete `factory` command line parses with the CLI."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from factory import cli

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
REPO_PATH = re.compile(r"(?<![\w./-])((?:conf|jobs|bench|scripts|notebooks|tests|docs|factory)/[\w./-]*\w)")
PLACEHOLDER = re.compile(r"\[|\b(CONFIG|RUN_DIR|FILE|PATH|NAME|NEW_DIR|N)\b")


def code_lines() -> list[str]:
    blocks = re.findall(r"^\s*```[a-z]*\n(.*?)^\s*```", README, re.S | re.M)
    return [line.strip() for block in blocks for line in block.splitlines()]


def test_every_repository_path_the_readme_names_exists():
    named = sorted(set(REPO_PATH.findall(README)))
    assert len(named) > 20  # the pattern finds them (conf/demo.yaml, jobs/train_dpo.py, ...)
    assert [p for p in named if not (ROOT / p).exists()] == []


def test_the_readme_names_no_path_outside_the_repository():
    # Ray's own default folder (/tmp/ray/session_latest/logs) is where every local Ray writes, not a machine's path.
    assert re.findall(r"(?:\.\./\w|/tmp/(?!ray/)|/work/|/home/|/root/|/Users/)\S*", README) == []


def test_it_says_how_to_call_factory():
    assert ".venv/bin/factory" in README and "source .venv/bin/activate" in README


def commands() -> list[list[str]]:
    found = []
    for line in code_lines():
        if re.match(r"factory [a-z]+(\s|$)", line) and not PLACEHOLDER.search(line.split("#", 1)[0]):
            found.append(shlex.split(line.split(" #", 1)[0])[1:])
    return found


@pytest.mark.parametrize("argv", commands(), ids=lambda argv: " ".join(argv)[:60])
def test_each_concrete_factory_command_parses_and_its_config_exists(argv):
    args = cli.parser().parse_args(argv)
    config = getattr(args, "config", None)
    assert config is None or (ROOT / config).exists(), config
