"""Growing a run to `pairs.target` starts from the survival rate its directory already shows, and `factory
plan` says the same number (issue 24)."""

from __future__ import annotations

import math

from factory import config
from factory.commands.plan import make_plan
from factory.run import run
from tests.fakes import FakeEngine
from tests.synthetic import write_prompts


def test_growing_to_a_target_draws_what_the_stored_survival_says(tmp_path):
    pool = write_prompts(tmp_path / "pool.jsonl", 300)
    rubric = tmp_path / "rubric.txt"
    rubric.write_text("Rate {answer} from 0 to {scale_max}.")
    base = [f"output_dir={tmp_path / 'run'}", f"prompts.path={pool}", f"judge.rubric_file={rubric}", "sampler.k=2",
            "progress_interval_s=60"]  # fmt: skip
    engine = FakeEngine()
    first = run(config.load(None, [*base, "prompts.limit=40"]), backend="local", build=lambda _c: engine, command="t")
    kept, rows = first["counts"]["pairs_kept"], first["counts"]["prompts_in"]
    assert 0 < kept < 40 and rows == 40
    grow = config.load(None, [*base, "pairs.target=40"])
    expected = rows + math.ceil(1.1 * (40 - kept) * rows / kept)  # the +10% rule at the stored survival
    assert expected < math.ceil(1.2 * 40 / 0.7)  # less than the first estimate a fresh run would draw
    assert make_plan(grow)["target"]["prompt_rows"] == expected
    before = len(engine.requests)
    grown = run(grow, backend="local", build=lambda _c: engine, command="t")
    draws = grown["target"]["draws"]
    assert draws[0]["limit"] == expected
    first_round = [r for r in engine.requests[before:] if r.json_schema is None][: 2 * (expected - rows)]
    assert len({r.tag for r in first_round}) == 2 * (expected - rows)
    assert all(int(tag[0][1:]) >= rows for tag in (r.tag for r in first_round))  # only the new prompts
    if len(draws) == 1:  # met in one round: exactly the new prompts' samples
        assert grown["requests"]["sampler"] == 2 * (expected - rows)
