"""The closed loop: pairs from the factory train a student that answers shorter at the same quality.

    python bench/closed_loop.py --stages sft,dpo                  # the whole loop on this machine (no GPU)
    python bench/closed_loop.py --prompts 8 --steps 2 --eval-prompts 8 --no-controls   # smaller

1. pairs: `factory run conf/closed_loop.yaml` (the embedded SmolLM2-135M as teacher and judge, K samples of
   --prompts prompts of conf/data/loop_prompts.jsonl; the system prompt asks for a short <think> block, replies
   stop at "\nViewer", not at the first newline), with export.template = the student checkpoint, so the run
   also writes export/student/ and sft/filter_long.student/ under the student's chat template.
2. train (jobs/train_sft.py, jobs/train_dpo.py; the student is the same SmolLM2-135M converted offline from the
   shipped GGUF to a transformers folder, nothing downloaded):
     --stages dpo      trained     DP-DPO (+ the SFT term on chosen) from the base
     --stages sft,dpo  sft         filter-long SFT from the base
                       sft_dpo     DP-DPO from the sft checkpoint (also its reference model)
     controls          sft_chosen  SFT on the pairs' chosen sides only (what DPO adds beyond imitating them)
                       base_brief  the base with a brevity instruction (conf/prompts/host_system_think_brief.txt)
3. eval: `factory eval` on the vLLM engine (CPU), every arm with the same sampling on --eval-prompts held-out
   prompts (conf/data/loop_eval_prompts.jsonl: products no training prompt mentions), judged by the embedded
   judge, into a fresh folder OUT/eval/<UTC time>/ (and -brief/ for base_brief's system prompt).
4. the table (loop_samples, loop_table; statistics in factory/evaluation/paired.py): every row on the same
   paired prompts (those every arm has a score for; the rest counted by arm and reason; a judge reply cut at
   max_tokens whose score parsed is kept), reasoning and answer tokens apart, the token ratio with its paired
   bootstrap 95% interval, the paired score difference with its interval read as non-inferiority at
   NON_INFERIORITY_MARGIN (fixed here, before any run), the seed's rules as a second judge (RULES, through the
   verifier stage), degenerate shares, and the first paired replies.

Writes OUT/closed_loop.md + .json (manifest counts, pairs, steps, seconds). Goal: the last arm's token ratio
interval below 1 and non-inferior. Not a timed test: the figures are what this machine made. --pairs-from
RUN_DIR skips step 1 and trains on that run's pairs (the toy-size test uses a synthetic run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
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


def train(recipe: str, data: Path, model: Path, out: Path, steps: int, lr: float, args: argparse.Namespace) -> dict:
    """jobs/train_dpo.py (DPO + the SFT term on chosen; reference = `model`) or jobs/train_sft.py on `data`."""
    command = [
        sys.executable, str(ROOT / "jobs" / f"train_{recipe}.py"), "--data", str(data), "--model", str(model),
        "--out", str(out), "--max-steps", str(steps), "--batch-size", str(args.batch_size), "--lr", str(lr),
        "--max-length", "1024",
    ]  # fmt: skip
    if recipe == "dpo":
        command += ["--beta", str(args.beta), "--rpo-alpha", str(args.rpo_alpha)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    if args.train_minutes:
        command += ["--time-limit-s", str(args.train_minutes * 60)]
    subprocess.run(command, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return json.loads((out / f"train_{recipe}.json").read_text())


def chosen_only(pairs: Path, out: Path) -> Path:
    """The control arm's SFT data: each distinct (prompt, chosen) of the templated pairs as prompt/completion,
    the same text DPO sees on its chosen side, without the rejected one."""
    import polars as pl

    frame = pl.concat([pl.read_parquet(f) for f in sorted(pairs.glob("*.parquet"))], how="diagonal_relaxed")
    rows = frame.select("prompt", pl.col("chosen").alias("completion")).unique(maintain_order=True)
    out.mkdir(parents=True, exist_ok=True)
    rows.write_parquet(out / "part-0.parquet")
    return out


def candidate(name: str, model: Path, args: argparse.Namespace) -> list[str]:
    key = f"eval.candidates.{name}"
    return [
        f"{key}.engine.kind=vllm", f"{key}.engine.model={model}", f"{key}.engine.device=cpu",
        f"{key}.engine.dtype=bfloat16", f"{key}.engine.max_model_len=2048", f"{key}.engine.cpus_per_replica=1",
        f"{key}.engine.batch_size=16", f"{key}.sampling.temperature={args.temperature}", f"{key}.sampling.top_p=0.95",
        f"{key}.sampling.max_tokens={args.max_tokens}", f"{key}.sampling.seed=0", f'{key}.sampling.stop=["\\nViewer"]',
    ]  # fmt: skip


def fresh_eval_dir(out: Path) -> Path:
    """OUT/eval/<UTC time>[-n]: a folder no earlier loop wrote, so nothing of an earlier run's answers (an
    older model once at the trained path, other eval settings) is read back into this run's table."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    folder, n = out / "eval" / stamp, 1
    while folder.exists() or Path(f"{folder}-brief").exists():
        folder, n = out / "eval" / f"{stamp}-{n}", n + 1
    return folder


def evaluate(run: Path, models: dict[str, Path], args: argparse.Namespace, folder: Path, extra=()) -> dict:
    """One `factory eval` of `models` (name -> checkpoint; the first is the baseline) into `folder`."""
    from factory import config
    from factory.evaluation import run as evaluation

    overrides = [f"output_dir={run}", f"eval.output_dir={folder}", f"eval.limit={args.eval_prompts}", *extra]
    for name, model in models.items():
        overrides += candidate(name, model, args)
    overrides.append(f"eval.baseline={next(iter(models))}")
    cfg = config.load(CONF, overrides)
    t0 = time.perf_counter()
    result = evaluation.evaluate(cfg)
    return {"seconds": round(time.perf_counter() - t0, 1), "rows": result["rows"], "markdown": result["markdown"],
            "cfg": cfg, "folder": folder}  # fmt: skip


# -- the table: every model on the same paired prompts --------------------------------------------------
NON_INFERIORITY_MARGIN = 5.0  # points on the judge's 0..100 scale, fixed before any run: quality holds when the
#                               paired score difference's 95% interval lies above -5
RULES = {  # the second judge, not the teacher: the seed's reply rules as verifiers (factory/stages/verifier.py)
    "refers": {"rule": "answerable", "column": "answerable"},  # refers exactly when the info cannot answer
    "link": {"rule": "function", "function": "factory.referral:names_link"},  # names the link number
    "price": {"rule": "function", "function": "factory.referral:prices_from_info"},  # no price outside the info
}
KEPT_JUDGE = ("ok", "retried_ok", "truncated")  # a judge reply cut at max_tokens whose score parsed counts


def loop_samples(evaluated: list[dict]) -> tuple:
    """Every candidate's replies of every eval (one row per candidate and prompt, K = 1) with: score (the
    judge's, a cut judge reply whose score parsed included; an empty answer scores eval.empty_answer_score),
    lost (null, or why the prompt has no score), degenerate, the rule verdicts; and the prompts."""
    import polars as pl

    from factory.evaluation import paired
    from factory.prompts import load_prompts
    from factory.rundir.schemas import JUDGMENTS
    from factory.rundir.store import RunStore

    frames, prompts = [], None
    for ev in evaluated:
        cfg, folder = ev["cfg"], ev["folder"]
        samples = pl.read_parquet(folder / "report" / "eval_samples.parquet")
        judged = RunStore(str(folder)).read("judgments", JUDGMENTS)
        judged = (
            judged.sort("created_at").group_by("prompt_id", "sample_idx", "sampler_fp").agg(
                pl.col("parse_status").last(), pl.col("score").last().alias("judge_score"))
            if judged is not None else pl.DataFrame(schema={"prompt_id": pl.String, "sample_idx": pl.Int64,
                "sampler_fp": pl.String, "parse_status": pl.String, "judge_score": pl.Float64})
        )  # fmt: skip
        frame = samples.join(judged, on=["prompt_id", "sample_idx", "sampler_fp"], how="left")
        kept = pl.col("parse_status").is_in(KEPT_JUDGE) & pl.col("judge_score").is_not_null()
        fill = cfg.eval.empty_answer_score
        frame = frame.with_columns(
            pl.when(pl.col("error").is_not_null()).then(None)
            .when(pl.col("empty")).then(pl.lit(fill, pl.Float64))
            .when(kept).then(pl.col("judge_score")).alias("loop_score"),
            pl.when(pl.col("error").is_not_null()).then(pl.lit("sample error"))
            .when(pl.col("empty") & pl.lit(fill is None)).then(pl.lit("empty reply (eval.empty_answer_score null)"))
            .when(pl.col("empty")).then(None)
            .when(kept).then(None)
            .when(pl.col("parse_status").is_null()).then(pl.lit("not judged"))
            .when(pl.col("parse_status") == "truncated").then(pl.lit("judge cut at max_tokens before a score"))
            .when(~kept).then(pl.lit("judge ") + pl.col("parse_status")).alias("lost"),
        )  # fmt: skip
        mine, _ = load_prompts(replace(cfg.prompts, path=cfg.eval.prompts, limit=cfg.eval.limit))
        seen = mine.select(
            "prompt_id",
            pl.col("messages").list.eval(pl.element().struct.field("content")).list.join("\n").alias("seen"),
        )
        frame = frame.join(seen, on="prompt_id", how="left")
        frame = frame.with_columns(paired.degenerate(frame["answer"], frame["seen"]).alias("degenerate"))
        if prompts is None:
            prompts = mine.select(
                "prompt_id",
                "question",
                pl.col("product_info").map_elements(_json, return_dtype=pl.String),
                *(["answerable"] if "answerable" in mine.columns else []),
            )
        for name in frame["candidate"].unique(maintain_order=True):
            frames.append(_with_rules(frame.filter(pl.col("candidate") == name).drop("seen"), prompts))
    return pl.concat(frames, how="diagonal_relaxed"), prompts


def _with_rules(frame, prompts):
    """One candidate's replies with the rule judge's verdicts rule_<name> (factory/stages/verifier.py)."""
    import polars as pl

    from factory.config import VerifierConfig
    from factory.stages import verifier

    rules = frame.select("prompt_id", "sample_idx", "answer", pl.lit("").alias("reasoning"), "error")
    for name, spec in RULES.items():
        if spec["rule"] == "answerable" and spec["column"] not in prompts.columns:
            frame = frame.with_columns(pl.lit(None, pl.Float64).alias(f"rule_{name}"))
            continue
        rule = verifier.verdicts(rules, prompts, VerifierConfig(**spec), f"rule_{name}", f"closed_loop.{name}")
        frame = frame.join(rule, on=["prompt_id", "sample_idx"], how="left")
    return frame


def _json(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def loop_table(samples, models: list[str], cfg, margin: float = NON_INFERIORITY_MARGIN) -> dict:
    """The numbers of the table: the paired prompts (every model has a score), the lost ones by reason, and
    per model on the paired prompts: reasoning / answer tokens, the token ratio with its paired bootstrap
    95% interval, RT, score and the paired difference with its interval, non-inferiority at `margin`, the
    rule judge's pass rates, the degenerate shares, the share of replies with reasoning and cut at
    max_tokens."""
    import numpy as np
    import polars as pl

    from factory.evaluation import paired
    from factory.evaluation.table import paired_bootstrap

    prompt_ids = samples["prompt_id"].unique(maintain_order=True).to_list()
    status = {m: dict(samples.filter(pl.col("candidate") == m).select("prompt_id", "lost").iter_rows()) for m in models}
    ids, lost = paired.paired_ids(status, prompt_ids)
    on = samples.filter(pl.col("prompt_id").is_in(ids)).sort("prompt_id")
    base = on.filter(pl.col("candidate") == models[0])
    margin_pts = margin * cfg.judge.scale_max / 100
    rows = []
    for m in models:
        mine = on.filter(pl.col("candidate") == m)
        row = {"model": m, "paired": len(ids), "prompts": len(prompt_ids), "lost": lost[m]}
        for col in ("completion_tokens", "reasoning_tokens", "answer_tokens", "rt_s", "loop_score"):
            row[col] = float(mine[col].mean()) if mine.height else None
        row["with_reasoning"] = float((mine["reasoning_tokens"] > 0).mean()) if mine.height else None
        row["truncated"] = float(mine["truncated"].cast(pl.Float64).mean()) if mine.height else None
        row["degenerate"] = paired.shares(mine["degenerate"])
        for name in RULES:
            verdicts = mine[f"rule_{name}"].drop_nulls()
            row[f"rule_{name}"] = float(verdicts.mean()) if verdicts.len() else None
        every = mine.select([pl.col(f"rule_{n}").fill_null(1.0) for n in RULES]).min_horizontal()
        row["rule_pass"] = float((every == 1.0).mean()) if mine.height else None
        if m != models[0] and mine.height:
            ratio = paired.ratio_interval(mine["completion_tokens"], base["completion_tokens"], cfg.eval.bootstrap,
                                          cfg.eval.seed)  # fmt: skip
            diffs = (mine["loop_score"] - base["loop_score"]).to_numpy()
            interval = paired_bootstrap(diffs, cfg.eval.bootstrap, cfg.eval.seed)
            low = None if interval is None else interval[0]
            row |= {
                "token_ratio": ratio[0], "token_ratio_low": ratio[1], "token_ratio_high": ratio[2],
                "score_diff": float(np.mean(diffs)), "score_diff_low": low,
                "score_diff_high": None if interval is None else interval[1],
                "non_inferior": paired.non_inferior(low, margin_pts),
            }  # fmt: skip
        rows.append(row)
    return {"paired_ids": ids, "margin": margin_pts, "rows": rows}


def render(numbers: dict, training: dict, samples, prompts, models: list[str], show: int = 4) -> str:
    """The table as Markdown, the lost prompts by reason, the degenerate shares and a few paired replies."""
    import polars as pl

    def f(v, spec=".1f"):
        return "-" if v is None else format(v, spec)

    def pct(v):
        return "-" if v is None else f"{100 * v:.0f}%"

    head = ("| model | paired n | think + answer tokens | vs base tokens (95% CI) | with think | RT (s) | score | "
            f"vs base score (95% CI) | non-inferior (margin {numbers['margin']:g}) | rule judge pass (refers / link / "
            "price) | degenerate | cut at max_tokens | training |")  # fmt: skip
    lines = [head, "|" + "---|" * 13]
    for r in numbers["rows"]:
        ratio = (
            "baseline"
            if "token_ratio" not in r
            else (
                f"x{f(r['token_ratio'], '.2f')} [{f(r['token_ratio_low'], '.2f')}, {f(r['token_ratio_high'], '.2f')}]"
            )
        )
        diff = (
            "baseline"
            if "score_diff" not in r
            else (f"{f(r['score_diff'], '+.1f')} [{f(r['score_diff_low'], '+.1f')}, {f(r['score_diff_high'], '+.1f')}]")
        )
        verdict = "-" if r.get("non_inferior") is None else ("yes" if r["non_inferior"] else "no")
        t = training.get(r["model"])
        train_text = (
            "-" if not t else f"{t['recipe']} {t['steps']} steps on {t['rows']} rows, {t['train_seconds']:.0f} s"
        )
        lines.append(
            f"| {r['model']} | {r['paired']}/{r['prompts']} | {f(r['reasoning_tokens'])} + {f(r['answer_tokens'])} | "
            f"{ratio} | {pct(r['with_reasoning'])} | {f(r['rt_s'], '.2f')} | {f(r['loop_score'])} | {diff} | "
            f"{verdict} | {pct(r['rule_pass'])} ({pct(r['rule_refers'])} / {pct(r['rule_link'])} / "
            f"{pct(r['rule_price'])}) | {pct(r['degenerate'].get('any', 0.0) if r['degenerate'] else None)} | "
            f"{pct(r['truncated'])} | {train_text} |"
        )  # fmt: skip
    lines += ["", "Lost prompts (no usable score for a model: the prompt leaves every row), by model and reason:"]
    for r in numbers["rows"]:
        lines.append(f"- {r['model']}: " + (", ".join(f"{k} {v}" for k, v in sorted(r["lost"].items())) or "none"))
    lines += ["", "Degenerate replies on the paired prompts (share of the model's replies):"]
    for r in numbers["rows"]:
        kinds = {k: v for k, v in r["degenerate"].items() if k != "any"}
        lines.append(f"- {r['model']}: " + (", ".join(f"{k} {pct(v)}" for k, v in kinds.items()) or "none"))
    ids = numbers["paired_ids"][:show]
    if ids:
        lines += ["", f"Paired replies (the first {len(ids)} paired prompts; score in brackets):", ""]
        questions = dict(prompts.select("prompt_id", "question").iter_rows())
        for pid in ids:
            lines.append(f"- **{pid}** viewer: {questions.get(pid)!r}")
            for m in models:
                one = samples.filter((pl.col("candidate") == m) & (pl.col("prompt_id") == pid)).row(0, named=True)
                text = (one["answer"] or "").replace("\n", " ").replace("|", "/")
                think = f"(think {one['reasoning_tokens']} tok) " if one["reasoning_tokens"] else ""
                lines.append(f"  - {m} [{f(one['loop_score'], '.0f')}]: {think}{text[:200]!r}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="the closed loop: pairs -> SFT / DPO -> factory eval, one paired table")
    p.add_argument("--out", default=str(ROOT / "runs" / "closed_loop"))
    p.add_argument(
        "--stages",
        default="dpo",
        choices=["dpo", "sft,dpo"],
        help="dpo: DP-DPO from the base; sft,dpo: filter-long SFT, then DP-DPO from the SFT checkpoint",
    )
    p.add_argument("--prompts", type=int, default=32, help="training prompts (of conf/data/loop_prompts.jsonl)")
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--pairs-from", default="", help="a run directory whose pairs to train on (skips factory run)")
    p.add_argument("--steps", type=int, default=8, help="optimizer steps of DPO")
    p.add_argument("--sft-steps", type=int, default=8, help="optimizer steps of each SFT (filter-long, chosen-only)")
    p.add_argument(
        "--train-minutes", type=float, default=10, help="each training's time budget (stops after the step past it)"
    )
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=2e-5, help="DPO learning rate")
    p.add_argument("--sft-lr", type=float, default=2e-5, help="SFT learning rate")
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--rpo-alpha", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument(
        "--no-controls", action="store_true", help="leave out the control rows (chosen-only SFT, brief base)"
    )
    p.add_argument("--eval-prompts", type=int, default=24)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--run", nargs="*", default=[], help="more key=value overrides of the pairs run")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    out = Path(args.out)
    t_start = time.perf_counter()
    student = student_checkpoint()
    if args.pairs_from:
        run, pairs_info = Path(args.pairs_from), {"seconds": 0.0, "counts": {}}
        data = export_pairs(run, student)
    else:
        run = out
        pairs_info = make_pairs(out, student, args.prompts, args.k, args.run)
        data = out / "export" / "student"
    record = json.loads((data / "_export.json").read_text())
    two_stage = args.stages == "sft,dpo"
    trained, training = {}, {}
    if not args.no_controls:
        rows = chosen_only(data, out / "data" / "sft_chosen")
        training["sft_chosen"] = train("sft", rows, student, out / "sft_chosen", args.sft_steps, args.sft_lr, args)
        trained["sft_chosen"] = out / "sft_chosen"
    if two_stage:
        filter_long = run / "sft" / "filter_long.student"
        training["sft"] = train("sft", filter_long, student, out / "sft", args.sft_steps, args.sft_lr, args)
        trained["sft"] = out / "sft"
        training["sft_dpo"] = train("dpo", data, out / "sft", out / "sft_dpo", args.steps, args.lr, args)
        trained["sft_dpo"] = out / "sft_dpo"
    else:
        training["trained"] = train("dpo", data, student, out / "trained", args.steps, args.lr, args)
        trained["trained"] = out / "trained"
    for t in training.values():
        t.update(recipe="dpo" if "pairs" in t else "sft", rows=t.get("pairs", t.get("rows")))
    folder = fresh_eval_dir(out)
    eval_run = out if args.pairs_from else run
    evaluated = [evaluate(eval_run, {"base": student, **trained}, args, folder)]
    if not args.no_controls:  # the base told to be brief: the same model and sampling, the brief system prompt
        brief = ["prompts.system_prompt_file=" + str(ROOT / "conf" / "prompts" / "host_system_think_brief.txt")]
        evaluated.append(evaluate(eval_run, {"base_brief": student}, args, Path(f"{folder}-brief"), brief))
    models = ["base", *(["base_brief"] if not args.no_controls else []), *trained]
    samples, prompts = loop_samples(evaluated)
    numbers = loop_table(samples, models, evaluated[0]["cfg"])
    text = render(numbers, training, samples, prompts, models)
    final = numbers["rows"][models.index(list(trained)[-1])]
    verdict = {
        "model": final["model"], "token_ratio": final.get("token_ratio"),
        "token_ratio_high": final.get("token_ratio_high"),
        "tokens_goal": final.get("token_ratio_high") is not None and final["token_ratio_high"] < 1.0,
        "non_inferior": final.get("non_inferior"), "margin": numbers["margin"],
    }  # fmt: skip
    verdict["goal_met"] = bool(verdict["tokens_goal"] and verdict["non_inferior"])
    seconds = round(time.perf_counter() - t_start, 1)
    lines = [
        text, "",
        f"{final['model']} / base tokens: x{_fmt(verdict['token_ratio'])} (shorter at 95%: "
        f"{'yes' if verdict['tokens_goal'] else 'no'}); quality non-inferior (score difference's 95% interval "
        f"above -{numbers['margin']:g}): {'yes' if verdict['non_inferior'] else 'no'}",
        f"pairs {record['rows']} ({pairs_info['seconds']} s to make); eval "
        f"{sum(e['seconds'] for e in evaluated):.0f} s; the whole loop {seconds:.0f} s",
    ]  # fmt: skip
    summary = {
        "stages": args.stages, "pairs": record["rows"], "pairs_run": pairs_info, "training": training,
        "eval_seconds": [e["seconds"] for e in evaluated], "eval_dir": str(folder), "seconds": seconds,
        "models": evaluated[0]["rows"] + [r for e in evaluated[1:] for r in e["rows"]],
        "table": {k: v for k, v in numbers.items()}, "verdict": verdict, "args": vars(args),
    }  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "closed_loop.md").write_text(
        "\n".join(lines) + "\n\n" + "\n\n".join(e["markdown"] for e in evaluated) + "\n"
    )
    (out / "closed_loop.json").write_text(json.dumps(summary, indent=2, default=str))
    print("\n".join(lines))
    return summary


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    main()
