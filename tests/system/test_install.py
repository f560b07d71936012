"""A non-editable install: the wheel builds without a warning, and the installed package, run from a folder
outside the checkout, finds its defaults (the judge's rubric, the calibration set) as package data.

The wheel is built from a copy of the checkout (so the test writes nothing beside the sources) and installed
with `pip install --no-deps --target` into a temporary folder; the subprocesses import factory from there
only (checked), with the shared venv's dependencies.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.engines.loopback import FakeModelServer
from tests.synthetic import write_prompts

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The site folder the wheel was installed into."""
    base = tmp_path_factory.mktemp("install")
    src = base / "src"
    shutil.copytree(ROOT / "factory", src / "factory", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    # PYTHONDONTWRITEBYTECODE makes setuptools warn that it skips byte-compiling: the machine's, not ours.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    built = subprocess.run(
        [*pip, "wheel", str(src), "--no-deps", "--no-build-isolation", "--no-index", "-v", "-w", str(base / "wheel")],
        cwd=base, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    warnings = [line for line in (built.stdout + built.stderr).splitlines() if re.search(r"warn|deprecat", line, re.I)]
    assert warnings == [], "\n".join(warnings)
    (wheel,) = (base / "wheel").glob("factory-*.whl")
    site = base / "site"
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)], check=True,
                   capture_output=True, timeout=300)  # fmt: skip
    return site


def factory_cli(site: Path, cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "RAY_ADDRESS": ""}
    return subprocess.run(
        [sys.executable, "-m", "factory.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def engine(url: str) -> dict:
    return {"kind": "openai", "base_url": f"{url}/v1", "model": "fake", "parallel": 2, "batch_size": 2,
            "cpus_per_replica": 0.25, "max_retries": 1, "request_timeout_s": 30}  # fmt: skip


def test_the_installed_package_is_the_one_imported(installed, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(installed)}
    code = "import factory, factory.defaults as d; print(factory.__file__); print(d.RUBRIC); print(d.CALIBRATION)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    paths = out.stdout.split()
    assert len(paths) == 3, out.stderr
    assert all(Path(p).is_relative_to(installed) for p in paths), paths
    assert all(Path(p).is_file() for p in paths)


def test_calibrate_outside_the_checkout_uses_the_shipped_rubric_and_data(installed, tmp_path):
    """`factory calibrate CONFIG` with no --data and judge.rubric_file = '' from an unrelated folder."""
    with FakeModelServer(delay=0.0) as judge:
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump({"judge": {"engine": engine(judge.url), "rubric_file": ""}}))
        done = factory_cli(
            installed, tmp_path, "calibrate", str(config), "--limit", "2", "--out", str(tmp_path / "cal")
        )
        assert done.returncode == 0, done.stdout + done.stderr
        sent = json.dumps(judge.chat_requests())
    summary = json.loads((tmp_path / "cal" / "calibration.json").read_text())
    assert summary["rows"] == 2 and summary["judgments"] == 4
    assert Path(summary["data"]).is_relative_to(installed) and Path(summary["rubric_file"]).is_relative_to(installed)
    first_line = (ROOT / "factory" / "data" / "rubrics" / "default_en.txt").read_text().splitlines()[0]
    assert first_line in sent  # the shipped rubric is what the judge was asked with


@pytest.mark.slow
def test_run_outside_the_checkout(installed, tmp_path):
    """`factory run` of a tiny config (loopback sampler and judge, the default rubric) on the installed package."""
    with FakeModelServer(delay=0.0) as sampler, FakeModelServer(delay=0.0) as judge:
        cfg = {
            "output_dir": str(tmp_path / "run"),
            "prompts": {"path": str(write_prompts(tmp_path / "prompts.jsonl", 3))},
            "sampler": {"k": 2, "engine": engine(sampler.url), "sampling": {"max_tokens": 16}},
            "judge": {"engine": engine(judge.url), "rubric_file": "", "sampling": {"max_tokens": 16}},
            "ray": {"num_cpus": 2},
        }
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump(cfg))
        done = factory_cli(installed, tmp_path, "run", str(config))
        assert done.returncode == 0, done.stdout + done.stderr
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["counts"]["samples_ok"] == 6 and (tmp_path / "run" / "pairs").is_dir()
