"""jobs/recipe.py's reward curves without training: TRL log entries -> rows, and the warning when rewards/chosen
and rewards/rejected both fall over a window (§4.5.4), on crafted logs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def recipe():
    spec = importlib.util.spec_from_file_location("recipe", ROOT / "jobs" / "recipe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def log(step, chosen, rejected, **more):
    return {
        "step": step,
        "epoch": step / 10,
        "loss": 0.6,
        "rewards/chosen": chosen,
        "rewards/rejected": rejected,
        "rewards/margins": chosen - rejected,
        "rewards/accuracies": 1.0 if chosen > rejected else 0.0,
        **more,
    }


def test_reward_rows_keep_the_four_curves_of_each_logged_step(recipe):
    logs = [log(1, 0.1, 0.0), {"step": 1, "train_runtime": 3.0}, log(2, 0.3, -0.2)]
    rows = recipe.reward_rows(logs)
    assert [r["step"] for r in rows] == [1, 2]  # the summary entry has no rewards
    assert rows[1] == {"step": 2, "epoch": 0.2, "chosen": 0.3, "rejected": -0.2, "margin": 0.5, "accuracy": 1.0}


def test_both_rewards_falling_over_a_window_is_one_warning_per_span(recipe):
    rising = [log(s, 0.1 * s, -0.1 * s) for s in range(1, 6)]  # chosen up, rejected down: the healthy case
    both_down = [log(s, 0.5 - 0.1 * (s - 5), -0.5 - 0.2 * (s - 5)) for s in range(6, 12)]  # steps 6..11: both fall
    recovers = [log(s, 0.1 * s, -0.6) for s in range(12, 16)]
    logs = rising + both_down + recovers
    assert recipe.both_falling(recipe.reward_rows(rising), window=4) == []
    spans = recipe.both_falling(recipe.reward_rows(logs), window=4)
    assert len(spans) == 1
    span = spans[0]
    # both fall from step 5 (0.5, -0.5) to step 11; a window of 4 may reach back to the rise's last steps
    assert 3 <= span["from_step"] <= 5 and 11 <= span["to_step"] <= 12
    assert span["chosen"][1] < span["chosen"][0] and span["rejected"][1] < span["rejected"][0]
    text = recipe.falling_text(span)
    assert (
        text.startswith("warning: rewards/chosen and rewards/rejected both fell over steps") and "--rpo-alpha" in text
    )
    only_rejected = [log(s, 0.1, -0.1 * s) for s in range(1, 10)]  # the margin grows by pushing rejected down alone
    assert recipe.both_falling(recipe.reward_rows(only_rejected), window=4) == []
    assert recipe.both_falling(recipe.reward_rows(both_down), window=10) == []  # fewer rows than the window


def test_two_separate_falls_are_two_spans(recipe):
    down = lambda start: [log(start + i, -0.1 * i, -0.2 * i) for i in range(4)]  # noqa: E731
    flat = lambda start: [log(start + i, 0.05 * i, 0.05 * i) for i in range(5)]  # noqa: E731
    rows = recipe.reward_rows(down(1) + flat(5) + down(10))
    first, second = recipe.both_falling(rows, window=4)
    assert (first["from_step"], first["to_step"]) == (1, 4)
    assert 5 < second["from_step"] <= 10 and second["to_step"] == 13  # the second fall starts after step 9


def test_the_curves_file_holds_rows_and_warnings(recipe, tmp_path):
    logs = [log(s, -0.1 * s, -0.2 * s) for s in range(1, 7)]
    written = recipe.write_reward_curves(tmp_path, logs, window=3)
    stored = json.loads((tmp_path / "reward_curves.json").read_text())
    assert stored == written and stored["window"] == 3 and len(stored["rows"]) == 6
    (span,) = stored["both_falling"]
    assert (span["from_step"], span["to_step"]) == (1, 6)
    assert span["chosen"] == pytest.approx([-0.1, -0.6]) and span["rejected"] == pytest.approx([-0.2, -1.2])
    assert stored["warnings"] == [recipe.falling_text(stored["both_falling"][0])]
