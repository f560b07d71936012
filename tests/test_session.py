"""What a requesting command does around its graph (factory/session.py), at the users' scale: a run
killed before its writers merged leaves one small part per flush; the resumed run merges them."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pyarrow as pa

from factory import config as config_mod
from factory.run import run
from factory.rundir.store import RunStore
from tests.fakes import FakeEngine
from tests.synthetic import write_prompts


def _cfg(out: Path):
    folder = Path(tempfile.mkdtemp(prefix="factory-session-"))
    prompts = write_prompts(folder / "prompts.jsonl", 6)
    rubric = folder / "rubric.txt"
    rubric.write_text("Rate {answer} from 0 to {scale_max}.")
    return config_mod.load(
        None, [f"output_dir={out}", f"prompts.path={prompts}", "sampler.k=4", f"judge.rubric_file={rubric}",
               "progress_interval_s=60"],
    )  # fmt: skip


def _scatter(store: RunStore, name: str) -> pa.Table:
    """What a writer killed before its merge leaves: the table's rows as one small part per row."""
    whole = store.read(name).to_arrow()
    for path in store.parts(name):
        store.fs.rm(path)
    for i in range(whole.num_rows):
        store.append(name, whole.slice(i, 1))
    return whole


def test_the_resumed_run_merges_the_small_parts_a_killed_run_left(tmp_path, capsys):
    cfg = _cfg(tmp_path / "run")
    engine = FakeEngine()
    run(cfg, backend="local", build=lambda _cfg: engine)
    store = RunStore(str(tmp_path / "run"))
    samples, judgments = _scatter(store, "samples"), _scatter(store, "judgments")
    assert len(store.parts("samples")) == samples.num_rows == 24
    assert len(store.parts("judgments")) == judgments.num_rows > 1
    asked = len(engine.requests)

    result = run(cfg, backend="local", build=lambda _cfg: engine)
    assert len(engine.requests) == asked and result["requests"]["sampler"] == 0  # every key was stored
    assert len(store.parts("samples")) == 1 and len(store.parts("judgments")) == 1  # main: one per row
    for name, before in (("samples", samples), ("judgments", judgments)):  # every row once
        after = store.read(name).to_arrow()
        key = ["prompt_id", "sample_idx"] + (["vote"] if name == "judgments" else [])
        assert sorted(after.select(key).to_pylist(), key=str) == sorted(before.select(key).to_pylist(), key=str)
    assert "[store] samples: merged the 24 small parts a stopped run left into 1" in capsys.readouterr().err
