"""The closed loop: pairs from the factory train a student that answers shorter at the same quality.

    python bench/closed_loop.py                                   # the whole loop on this machine (no GPU)
    python bench/closed_loop.py --prompts 40 --steps 20 --eval-prompts 20   # smaller

1. pairs: `factory run conf/closed_loop.yaml` (the embedded SmolLM2-135M as teacher and judge, K samples of
   --prompts prompts of conf/data/loop_prompts.jsonl), with export.template = the student checkpoint, so the
   run also writes export/student/ (the pairs under the student's chat template).
2. train: jobs/train_dpo.py on export/student/ (DPO + the SFT term on chosen), from the student checkpoint: the
   same SmolLM2-135M converted offline from the shipped GGUF to a transformers folder (nothing downloaded).
3. eval: `factory eval` with two candidates on the vLLM engine (CPU), base and trained checkpoints, same
   sampling, on --eval-prompts held-out prompts (conf/data/loop_eval_prompts.jsonl, none used in training),
   judged by the embedded judge: mean and max completion tokens, mean RT, score with the paired bootstrap
   95% interval of the difference. Each loop evaluates into a fresh folder, OUT/eval/<UTC time>/, so no
   answer of an earlier loop is reused (the eval also knows a local checkpoint by its contents).

Prints the table (and writes OUT/closed_loop.md + .json). Goal: trained mean tokens <= 0.8 x base with the
score difference's 95% interval not wholly below 0. Not a timed test: the figures are what this machine made.
--pairs-from RUN_DIR skips step 1 and trains on that run's pairs (the toy-size test uses a synthetic run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CONF = ROOT / "conf" / "closed_loop.yaml"


def student_checkpoint() -> Path:
    from factory.engines.vllm import embedded_hf_model

    return embedded_hf_model(os.environ.get("FACTORY_TEST_CACHE") or Path.home() / ".cache" / "factory-tests")


def make_pairs(out: Path, student: Path, prompts: int, k: int, extra: list[str]) -> dict:
    from factory.cli import main

    overrides = [f"output_dir={out}", f"prompts.limit={prompts}", f"sampler.k={k}", f"export.template={student}",
                 "export.name=student", *extra]  # fmt: skip
    t0 = time.perf_counter()
    code = main(["run", str(CONF), "--allow-fewer-prompts", *overrides])
    if code != 0:
        raise SystemExit(f"closed_loop: factory run exited {code}")
    manifest = json.loads((out / "manifest.json").read_text())
    return {"seconds": round(time.perf_counter() - t0, 1), "counts": manifest["counts"]}


def export_pairs(run: Path, student: Path) -> Path:
    from factory.cli import main

    if main(["export", str(run), "--template", str(student), "--name", "student"]) != 0:
        raise SystemExit("closed_loop: factory export failed")
    return run / "export" / "student"


def train(data: Path, student: Path, out: Path, args: argparse.Namespace) -> dict:
    command = [
        sys.executable, str(ROOT / "jobs" / "train_dpo.py"), "--data", str(data), "--model", str(student),
        "--out", str(out), "--max-steps", str(args.steps), "--batch-size", str(args.batch_size), "--lr", str(args.lr),
        "--beta", str(args.beta), "--rpo-alpha", str(args.rpo_alpha), "--max-length", "1024",
    ]  # fmt: skip
    if args.threads:
        command += ["--threads", str(args.threads)]
    if args.train_minutes:
        command += ["--time-limit-s", str(args.train_minutes * 60)]
    subprocess.run(command, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return json.loads((out / "train_dpo.json").read_text())


def candidate(name: str, model: Path, args: argparse.Namespace) -> list[str]:
    key = f"eval.candidates.{name}"
    return [
        f"{key}.engine.kind=vllm", f"{key}.engine.model={model}", f"{key}.engine.device=cpu",
        f"{key}.engine.dtype=bfloat16", f"{key}.engine.max_model_len=2048", f"{key}.engine.cpus_per_replica=1",
        f"{key}.engine.batch_size=16", f"{key}.sampling.temperature={args.temperature}", f"{key}.sampling.top_p=0.95",
        f"{key}.sampling.max_tokens={args.max_tokens}", f"{key}.sampling.seed=0", f'{key}.sampling.stop=["\\n"]',
    ]  # fmt: skip


def fresh_eval_dir(out: Path) -> Path:
    """OUT/eval/<UTC time>[-n]: a folder no earlier loop wrote, so nothing of an earlier run's answers (an
    older model once at the trained path, other eval settings) is read back into this run's table."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    folder, n = out / "eval" / stamp, 1
    while folder.exists():
        folder, n = out / "eval" / f"{stamp}-{n}", n + 1
    return folder


def evaluate(run: Path, student: Path, trained: Path, args: argparse.Namespace, folder: Path) -> dict:
    from factory import config
    from factory.evaluation import run as evaluation

    overrides = [
        f"output_dir={run}", f"eval.output_dir={folder}", f"eval.limit={args.eval_prompts}",
        *candidate("base", student, args), *candidate("trained", trained, args), "eval.baseline=base",
    ]  # fmt: skip
    t0 = time.perf_counter()
    result = evaluation.evaluate(config.load(CONF, overrides))
    return {"seconds": round(time.perf_counter() - t0, 1), "rows": result["rows"], "markdown": result["markdown"]}


def table(rows: list[dict], pairs: int, training: dict) -> tuple[str, dict]:
    """The loop's table and its verdict: base vs trained."""
    base, trained = rows[0], rows[1]

    def num(value, fmt):
        return "-" if value is None else format(value, fmt)

    lines = [
        "| model | prompts scored | score | vs base (95% CI) | mean tokens | max tokens | mean RT (s) | pairs (seen in "
        "training) | training |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        diff = (
            "baseline"
            if row is base
            else (
                f"{num(row['score_diff'], '+.1f')} [{num(row['score_diff_low'], '+.1f')}, "
                f"{num(row['score_diff_high'], '+.1f')}]"
            )
        )
        train_text = "-" if row is base else f"{training['steps']} steps, {training['train_seconds']:.0f} s"
        seen = min(pairs, training["steps"] * training["args"]["batch_size"] * training["args"]["grad_accum"])
        lines.append(
            f"| {row['model']} | {row['prompts_scored']}/{row['prompts']} | {num(row['score'], '.1f')} | {diff} | "
            f"{num(row['mean_tokens'], '.1f')} | {num(row['max_tokens'], 'd')} | {num(row['mean_rt_s'], '.2f')} | "
            f"{'-' if row is base else f'{pairs} ({seen} seen)'} | {train_text} |"
        )
    ratio = (
        trained["mean_tokens"] / base["mean_tokens"]
        if base["mean_tokens"] and trained["mean_tokens"] is not None
        else None
    )
    low = trained["score_diff_low"]
    verdict = {
        "token_ratio": ratio,
        "tokens_goal": ratio is not None and ratio <= 0.8,
        "score_goal": low is not None and trained["score_diff_high"] is not None and trained["score_diff_high"] >= 0,
    }
    verdict["goal_met"] = verdict["tokens_goal"] and verdict["score_goal"]
    lines += [
        "",
        f"trained / base mean tokens: {num(ratio, '.2f')} (goal <= 0.80: "
        f"{'met' if verdict['tokens_goal'] else 'missed'}); "
        f"score difference's 95% interval not wholly below 0: {'yes' if verdict['score_goal'] else 'no'}",
    ]
    return "\n".join(lines), verdict


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="the closed loop: pairs -> DPO -> factory eval, base vs trained")
    p.add_argument("--out", default=str(ROOT / "runs" / "closed_loop"))
    p.add_argument("--prompts", type=int, default=160, help="training prompts (of conf/data/loop_prompts.jsonl)")
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--pairs-from", default="", help="a run directory whose pairs to train on (skips factory run)")
    p.add_argument("--steps", type=int, default=60, help="optimizer steps of DPO")
    p.add_argument(
        "--train-minutes", type=float, default=15, help="training time budget (stops after the step past it)"
    )
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--rpo-alpha", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--eval-prompts", type=int, default=40)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--run", nargs="*", default=[], help="more key=value overrides of the pairs run")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    out = Path(args.out)
    student = student_checkpoint()
    if args.pairs_from:
        run, pairs_info = Path(args.pairs_from), {"seconds": 0.0, "counts": {}}
        data = export_pairs(run, student)
    else:
        run = out
        pairs_info = make_pairs(out, student, args.prompts, args.k, args.run)
        data = out / "export" / "student"
    record = json.loads((data / "_export.json").read_text())
    training = train(data, student, out / "trained", args)
    folder = fresh_eval_dir(out)
    evaluated = evaluate(run if not args.pairs_from else out, student, out / "trained", args, folder)
    text, verdict = table(evaluated["rows"], record["rows"], training)
    summary = {
        "pairs": record["rows"], "pairs_run": pairs_info, "training": training, "eval_seconds": evaluated["seconds"],
        "eval_dir": str(folder),
        "models": evaluated["rows"], "verdict": verdict, "args": vars(args),
    }  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "closed_loop.md").write_text(text + "\n\n" + evaluated["markdown"] + "\n")
    (out / "closed_loop.json").write_text(json.dumps(summary, indent=2, default=str))
    print(text)
    print(f"pairs: {record['rows']} ({pairs_info['seconds']} s to make), training {training['train_seconds']} s, "
          f"eval {evaluated['seconds']} s; {out / 'closed_loop.md'}")  # fmt: skip
    return summary


if __name__ == "__main__":
    main()
