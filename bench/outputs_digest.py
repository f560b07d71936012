"""Digests of what a pair build writes (pairs/, sft/, export/) on a fixed synthetic run, one per setting: run it
before and after a refactor and compare (the lines must be equal).

    PYTHONPATH=$PWD python bench/outputs_digest.py > after.txt
    PYTHONPATH=/tmp/base python /tmp/base/bench/outputs_digest.py > before.txt   # the same script, older code
    diff before.txt after.txt

The run: `factory run` on the in-process executor with the tests' fake engine (no model, no Ray), 16 prompts x
K=4, the primary GenRM with dimensions, a second GenRM (judges.b), a reward model (reward_models.rm) and a regex
verifier (verifiers.v). Each setting is `factory pairs RUN_DIR <overrides>`; a digest is the SHA-256 of every
written table's schema and rows (file names hold a time and a random part, so the files' bytes are not
compared), plus the manifest's keys and its counts and pair stats.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

import pyarrow.parquet as pq

from factory import config as config_mod
from factory.commands.rebuild import rebuild_pairs
from factory.run import run
from tests.fakes import FakeEngine
from tests.synthetic import write_prompts

TEMPLATE = HERE.parent / "tests" / "pairs" / "fixtures" / "templates" / "qwen3"
TERMS = "[{source: answer_chars, exclude_above: 40}, {source: repetition, field: reasoning, weight: 0.2}, {source: reward_rm, weight: 0.3}]"  # noqa: E501

SETTINGS: dict[str, list[str]] = {
    "default": [],
    "best_vs_each+filters+terms": ["pairs.pairing=best_vs_each", f"pairs.terms={TERMS}"],
    "all_ranked+cap": ["pairs.pairing=all_ranked", "pairs.max_pairs_per_group=2", "pairs.min_margin=0.05"],
    "standard": ["pairs.format=standard"],
    "no_reasoning": ["pairs.include_reasoning=false"],
    "export": [f"export.template={TEMPLATE}"],
    "long2short": ["pairs.strategy=long2short", "pairs.max_chosen_tokens=12"],
    "quality": ["pairs.strategy=quality"],
    "shortest_correct": ["pairs.strategy=shortest_correct", "pairs.correct_column=quality_b", "pairs.correct_min=0.3"],
    "reward": ["pairs.strategy=reward", "pairs.reward_column=reward_rm"],
    "vote": ["pairs.combine=vote", "pairs.judges=[quality,quality_b,reward_rm]"],
    "ensemble_terms": ["pairs.judges=[quality,quality_b]", "pairs.terms=[{source: dim_question, weight: 0.1}]"],
    "dedupe_answer_global": ["pairs.dedupe=answer", "pairs.length_norm=global", "pairs.quality_norm=group"],
}


def make_run(folder: Path) -> str:
    prompts = write_prompts(folder / "prompts.jsonl", 16)
    rubric = folder / "rubric.txt"
    rubric.write_text("Rate {answer} from 0 to {scale_max}.")
    url = str(folder / "run")
    rm = ["reward_models.rm.engine.kind=openai", "reward_models.rm.engine.base_url=http://127.0.0.1:9/v1",
          "reward_models.rm.engine.model=rm"]  # fmt: skip
    cfg = config_mod.load(
        None,
        [f"output_dir={url}", f"prompts.path={prompts}", "sampler.k=4", f"judge.rubric_file={rubric}",
         "progress_interval_s=60", "judge.dimensions=true", "judges.b.sampling.seed=1", *rm,
         "verifiers.v.rule=regex", "verifiers.v.pattern=word word word word"],
    )  # fmt: skip
    engine = FakeEngine()
    run(cfg, backend="local", build=lambda _cfg: engine, command="factory run digest")
    return url


def tables_digest(run_dir: Path) -> dict[str, str]:
    out = {}
    for top in ("pairs", "sft", "export"):
        folders = sorted({p.parent for p in (run_dir / top).rglob("*.parquet")}) if (run_dir / top).exists() else []
        for folder in folders:
            parts = [pq.read_table(str(p)) for p in sorted(folder.glob("*.parquet"))]
            h = hashlib.sha256()
            for table in parts:
                h.update(str(table.schema).encode())
                h.update(json.dumps(table.to_pylist(), sort_keys=True, default=str).encode())
            out[str(folder.relative_to(run_dir))] = f"{h.hexdigest()[:16]} rows={sum(t.num_rows for t in parts)}"
    return out


def keys(value, prefix=""):
    if isinstance(value, dict):
        return sorted(k2 for k, v in value.items() for k2 in [f"{prefix}{k}", *keys(v, f"{prefix}{k}.")])
    return []


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="factory-digest-"))
    url = make_run(folder)
    for name, overrides in SETTINGS.items():
        manifest, _ = rebuild_pairs(url, overrides)
        for path, digest in sorted(tables_digest(Path(url)).items()):
            print(f"{name:28s} {path:24s} {digest}")
        top = sorted(manifest)
        stats = hashlib.sha256(json.dumps([manifest["counts"], manifest["pairs"]], sort_keys=True).encode())
        print(f"{name:28s} {'manifest':24s} keys={hashlib.sha256(' '.join(top).encode()).hexdigest()[:12]} "
              f"stats={stats.hexdigest()[:16]} kept={manifest['counts']['pairs_kept']}")  # fmt: skip
    manifest = json.loads((Path(url) / "manifest.json").read_text())
    print("manifest keys:", " ".join(k for k in keys(manifest) if not k.startswith(("config.", "pairs.", "judges."))))


if __name__ == "__main__":
    main()
