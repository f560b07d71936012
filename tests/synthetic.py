"""A small synthetic run directory: `factory run` itself on the in-process executor with a fake engine
(no model, no Ray), then `factory pairs`."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from factory import config as config_mod
from factory.run import run
from factory.rundir.store import RunStore
from tests.fakes import FakeEngine


def write_prompts(path: Path, n_prompts: int) -> Path:
    rows = [
        {"id": f"p{i}", "product_info": {"name": f"thing {i}"}, "history": [], "question": f"q{i}?"}
        for i in range(n_prompts)
    ] + [{"id": "bad", "question": ""}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_run(url: str, n_prompts: int = 6, k: int = 4, engine: FakeEngine | None = None) -> RunStore:
    folder = Path(tempfile.mkdtemp(prefix="factory-synthetic-"))
    prompts = write_prompts(folder / "prompts.jsonl", n_prompts)
    rubric = folder / "rubric.txt"
    rubric.write_text("Rate {answer} from 0 to {scale_max}.")
    cfg = config_mod.load(
        None,
        [
            f"output_dir={url}",
            f"prompts.path={prompts}",
            f"sampler.k={k}",
            f"judge.rubric_file={rubric}",
            "progress_interval_s=60",
        ],
    )
    engine = engine or FakeEngine()
    run(cfg, backend="local", build=lambda _cfg: engine)
    return RunStore(url)
