"""The test run's header names the vLLM it runs against and the range pyproject.toml's vllm extra pins (the
vllm tier's version, in CI's output)."""

from __future__ import annotations

import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def vllm_extra() -> str:
    """The vllm extra's requirement in this checkout's pyproject.toml, e.g. 'vllm>=0.31,<0.33'."""
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    (requirement,) = extras["vllm"]
    return requirement


def pytest_report_header(config) -> list[str]:
    from factory.engines.vllm import installed_version

    version = installed_version()  # from the distribution's metadata: vllm itself is not imported here
    return [f"vllm: {version or 'not installed'} (tested range: {vllm_extra()})"]
