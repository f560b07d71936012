"""Ray starts only when a pool does: a run refused before any request (no valid prompt, fewer prompts than
the outputs were built from) is refused at once, without starting Ray."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_run_with_no_valid_prompt_is_refused_without_starting_ray(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    script = (
        "import sys, ray\n"
        "from factory import config\n"
        "from factory.config import ConfigError\n"
        "from factory.run import run\n"
        f"cfg = config.load(None, ['output_dir={tmp_path / 'run'}', 'prompts.path={empty}', "
        "'progress_interval_s=60'])\n"
        "try:\n"
        "    run(cfg, command='factory run test')\n"
        "except ConfigError as exc:\n"
        "    print('refused:', exc)\n"
        "print('ray started:', ray.is_initialized())\n"
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    took = time.monotonic() - started
    assert "refused: prompts.path: no valid prompt" in done.stdout, done.stdout + done.stderr
    assert "ray started: False" in done.stdout
    assert "Started a local Ray instance" not in done.stderr
    print(f"\nrefused in {took:.1f}s (the interpreter and imports included)")
