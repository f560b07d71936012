"""bench/closed_loop.py evaluates each loop run into a folder no earlier run wrote (no vllm needed)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_each_loop_run_evaluates_into_a_fresh_folder(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    import closed_loop

    first = closed_loop.fresh_eval_dir(tmp_path)
    assert first.parent == tmp_path / "eval" and not first.exists()
    first.mkdir(parents=True)
    second = closed_loop.fresh_eval_dir(tmp_path)  # the same second: a suffix, still new
    assert second != first and second.parent == tmp_path / "eval" and not second.exists()
    second.mkdir()
    assert closed_loop.fresh_eval_dir(tmp_path) not in (first, second)
