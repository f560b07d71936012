"""The eval table in the paper's form (tables 4.6-4.8), from judged samples of each candidate; no LLM call.

Input: one row per (candidate, prompt_id, sample_idx) with the sample's columns (error, finish_reason,
answer, completion/reasoning/answer tokens) and its judge score (mean of usable votes, null when none),
plus per candidate the judgments' parse statuses and the prompts' `answerable` labels.

Per candidate:
    score           mean over prompts of the prompt's mean score over its K samples (judge scale). A reply
                    with an empty answer (e.g. cut inside <think>) is not sent to the judge and scores
                    eval.empty_answer_score (0 by default); engine errors and judge failures are left out
                    and counted.
    tokens          mean / max completion tokens of the replies (reasoning and answer apart)
    RT              tokens / the candidate's decode speed (eval.candidates.<name>.decode_tokens_per_s, else
                    decode_tokens_per_s): mean / max seconds
    truncated       share of replies that ended at max_tokens (finish_reason length)
    parse failures  judgments the judge's output could not be used for (unparseable, out_of_range)
    answerable      where prompts carry the label: share of replies whose decision (answer, or refer the
                    viewer to customer service) agrees with it. The decision is a rule on the reply text:
                    a reply refers when it matches one of eval.referral_patterns (case-insensitive).
    teacher agree   where the teacher's run holds can-answer flags for the prompt (sampler.can_answer,
                    eval.teacher_run): the same decision against the teacher's flag (seed 000 §3.3, refusal
                    agreement with R1), per prompt the share of its replies that agree, then the mean over the
                    prompts; n = the prompts with a flag and a reply. A prompt's flag is the majority of its
                    teacher samples' flags (`majority_flags`; a tie gives none).
    vs baseline     paired by prompt: mean over the prompts both have a score for of (candidate - baseline)
                    score, with a seeded bootstrap 95% interval (eval.bootstrap resamples of the prompts);
                    the RT difference likewise paired, on prompts both answered.
With eval.sets, the same table per set, on all its prompts and on its multi-turn ones (a history).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import polars as pl

from factory.config import RunConfig
from factory.referral import agrees, answerable_flags, refers
from factory.stages.judge import PARSE_FAILURES

CHUNK = 250  # bootstrap resamples per block (bounded memory with many prompts)


def majority_flags(samples: pl.DataFrame) -> pl.DataFrame:
    """The teacher's samples (prompt_id, can_answer, error) -> prompt_id, teacher_can_answer (the majority of
    its samples' flags, those without an error or a null flag; a tie: null), teacher_flags (how many counted).

        p1: true, true, false -> true (3)      p2: true, false -> null (2)      p3: null, null -> no row"""
    flagged = samples.filter(pl.col("error").is_null() & pl.col("can_answer").is_not_null())
    yes, n = pl.col("can_answer").cast(pl.Int64).sum(), pl.len()
    return flagged.group_by("prompt_id").agg(
        pl.when(2 * yes > n).then(True).when(2 * yes < n).then(False).alias("teacher_can_answer"),
        n.cast(pl.Int64).alias("teacher_flags"),
    )


def per_sample(
    scored: pl.DataFrame, prompts: pl.DataFrame, cfg: RunConfig, flags: pl.DataFrame | None = None
) -> pl.DataFrame:
    """Each candidate's samples with the columns the table is made of.

    Input:  candidate, prompt_id, sample_idx, error, finish_reason, answer, completion_tokens,
            reasoning_tokens, answer_tokens, score (null when not judged usably); `flags` (majority_flags of
            the teacher's samples): prompt_id, teacher_can_answer
    Output: + empty, eval_score, rt_s, truncated, refers, answerable, agrees, teacher_can_answer,
            teacher_agrees"""
    e = cfg.eval
    column = e.answerable_column
    labels = prompts.select("prompt_id")
    if column and column in prompts.columns:
        labels = labels.with_columns(answerable_flags(prompts[column]))
    else:
        labels = labels.with_columns(pl.lit(None, pl.Boolean).alias("answerable"))
    ok = pl.col("error").is_null()
    empty = ok & (pl.col("answer").fill_null("").str.strip_chars().str.len_chars() == 0)
    if flags is not None and flags.height:
        labels = labels.join(flags.select("prompt_id", "teacher_can_answer"), on="prompt_id", how="left")
    else:
        labels = labels.with_columns(pl.lit(None, pl.Boolean).alias("teacher_can_answer"))
    frame = scored.join(labels, on="prompt_id", how="left").with_columns(empty.alias("empty"))
    fill = e.empty_answer_score
    return frame.with_columns(
        pl.when(~ok).then(None)
        .when(pl.col("empty")).then(pl.lit(fill, pl.Float64))
        .otherwise(pl.col("score")).alias("eval_score"),
        pl.when(ok).then(pl.col("completion_tokens") / _speed(cfg)).alias("rt_s"),
        pl.when(ok).then(pl.col("finish_reason") == "length").alias("truncated"),
        pl.when(ok).then(refers(pl.col("answer"), list(e.referral_patterns))).alias("refers"),
    ).with_columns(
        pl.when(ok).then(agrees(pl.col("answerable"), pl.col("refers"))).alias("agrees"),
        pl.when(ok).then(agrees(pl.col("teacher_can_answer"), pl.col("refers"))).alias("teacher_agrees"),
    )  # fmt: skip


def speeds(cfg: RunConfig) -> dict[str, float]:
    """Each candidate's decode speed (eval.candidates.<name>.decode_tokens_per_s, else decode_tokens_per_s)."""
    return {n: c.decode_tokens_per_s or cfg.decode_tokens_per_s for n, c in cfg.eval.candidates.items()}


def _speed(cfg: RunConfig) -> pl.Expr:
    return pl.col("candidate").replace_strict(speeds(cfg), default=cfg.decode_tokens_per_s, return_dtype=pl.Float64)


def split_tables(
    detail: pl.DataFrame, judgments: dict[str, pl.DataFrame], names: list[str], cfg: RunConfig, prompts: pl.DataFrame
) -> list[dict[str, Any]]:
    """The source's columns (its section 4.7): per held-out set (eval.sets; one unnamed set otherwise) the
    table on its prompts ("overall"; for the unnamed set that is the main table, left out here) and on
    those of its prompts with a history ("multi_turn"; null when it has none). Judgment counts are the
    candidate's on those prompts."""
    sets = prompts["set"] if "set" in prompts.columns else pl.Series("set", [""] * prompts.height)
    multi = (
        prompts["history"].list.len().fill_null(0) > 0
        if "history" in prompts.columns
        else pl.Series([False] * prompts.height)
    )
    index = pl.DataFrame({"prompt_id": prompts["prompt_id"], "set": sets, "multi_turn": multi})
    out = []
    for name in sets.unique(maintain_order=True).to_list():
        mine = index.filter(pl.col("set") == name)
        multi_ids = mine.filter("multi_turn")["prompt_id"]

        def table(ids: pl.Series) -> list[dict[str, Any]]:
            part = detail.filter(pl.col("prompt_id").is_in(ids.implode()))
            judged = {n: _judgments_on(j, ids) for n, j in judgments.items()}
            return build_table(part, judged, names, cfg, ids.len())

        out.append({
            "set": name, "prompts": mine.height, "multi_turn_prompts": multi_ids.len(),
            "overall": table(mine["prompt_id"]) if name else None,
            "multi_turn": table(multi_ids) if multi_ids.len() else None,
        })  # fmt: skip
    return out if any(s["overall"] or s["multi_turn"] for s in out) else []


def _judgments_on(judgments: pl.DataFrame, ids: pl.Series) -> pl.DataFrame:
    if not judgments.height or "prompt_id" not in judgments.columns:
        return judgments
    return judgments.filter(pl.col("prompt_id").is_in(ids.implode()))


def paired_bootstrap(diffs: np.ndarray, resamples: int, seed: int) -> tuple[float, float] | None:
    """95% percentile interval of the mean of `diffs` (one per prompt), resampling prompts; None under 2."""
    diffs = np.asarray(diffs, dtype=float)
    if diffs.size < 2:
        return None
    rng = np.random.default_rng(seed)
    means = []
    for start in range(0, resamples, CHUNK):
        n = min(CHUNK, resamples - start)
        means.append(diffs[rng.integers(0, diffs.size, size=(n, diffs.size))].mean(axis=1))
    both = np.percentile(np.concatenate(means), [2.5, 97.5])
    return float(both[0]), float(both[1])


def _prompt_means(frame: pl.DataFrame, value: str) -> pl.DataFrame:
    return frame.filter(pl.col(value).is_not_null()).group_by("prompt_id").agg(pl.col(value).mean())


def _max(series: pl.Series) -> int | None:
    series = series.drop_nulls()
    return int(series.max()) if series.len() else None  # type: ignore[arg-type]


def _mean(series: pl.Series) -> float | None:
    series = series.drop_nulls().cast(pl.Float64)
    return float(series.mean()) if series.len() else None  # type: ignore[arg-type]


def model_row(name: str, frame: pl.DataFrame, judgments: pl.DataFrame, prompts_n: int) -> dict[str, Any]:
    """One candidate's numbers (see the module doc)."""
    ok = frame.filter(pl.col("error").is_null())
    per_prompt = _prompt_means(frame, "eval_score")
    statuses = judgments["parse_status"] if judgments.height else pl.Series([], dtype=pl.String)
    labelled = ok.filter(pl.col("agrees").is_not_null())
    teacher = _prompt_means(ok.with_columns(pl.col("teacher_agrees").cast(pl.Float64)), "teacher_agrees")
    return {
        "model": name,
        "prompts": prompts_n,
        "prompts_scored": per_prompt.height,
        "samples": frame.height,
        "samples_failed": frame.height - ok.height,
        "empty_answers": int(ok["empty"].sum()) if ok.height else 0,
        "score": _mean(per_prompt["eval_score"]),
        "mean_tokens": _mean(ok["completion_tokens"]),
        "mean_reasoning_tokens": _mean(ok["reasoning_tokens"]),
        "mean_answer_tokens": _mean(ok["answer_tokens"]),
        "max_tokens": _max(ok["completion_tokens"]),
        "max_reasoning_tokens": _max(ok["reasoning_tokens"]),
        "max_answer_tokens": _max(ok["answer_tokens"]),
        "mean_rt_s": _mean(ok["rt_s"]),
        "max_rt_s": None if not ok.height else float(ok["rt_s"].max()),  # type: ignore[arg-type]
        "truncated": _mean(ok["truncated"].cast(pl.Float64)),
        "judgments": statuses.len(),
        "judge_parse_failures": int(statuses.is_in(PARSE_FAILURES).sum()),
        "judge_engine_errors": int((statuses == "engine_error").sum()),
        "answerable_labelled": labelled.height,
        "answerable_agreement": _mean(labelled["agrees"].cast(pl.Float64)),
        "teacher_flagged": teacher.height,
        "teacher_agreement": _mean(teacher["teacher_agrees"]),
        "refers": _mean(ok["refers"].cast(pl.Float64)),
    }


def versus(frame: pl.DataFrame, base: pl.DataFrame, resamples: int, seed: int) -> dict[str, Any]:
    """Paired by prompt: the score difference (with its bootstrap 95% interval) and the RT difference."""
    scores = _prompt_means(frame, "eval_score").join(_prompt_means(base, "eval_score"), on="prompt_id", suffix="_base")
    diffs = (scores["eval_score"] - scores["eval_score_base"]).to_numpy()
    rts = _prompt_means(frame, "rt_s").join(_prompt_means(base, "rt_s"), on="prompt_id", suffix="_base")
    interval = paired_bootstrap(diffs, resamples, seed)
    return {
        "paired_prompts": int(diffs.size),
        "score_diff": float(diffs.mean()) if diffs.size else None,
        "score_diff_low": None if interval is None else interval[0],
        "score_diff_high": None if interval is None else interval[1],
        "rt_diff_s": float((rts["rt_s"] - rts["rt_s_base"]).mean()) if rts.height else None,  # type: ignore[arg-type]
    }


def build_table(
    samples: pl.DataFrame, judgments: dict[str, pl.DataFrame], names: list[str], cfg: RunConfig, prompts_n: int
) -> list[dict[str, Any]]:
    """One row per candidate (in config order), the baseline's differences 0 by construction left null."""
    baseline = cfg.eval.baseline or names[0]
    base = samples.filter(pl.col("candidate") == baseline)
    rows = []
    for name in names:
        frame = samples.filter(pl.col("candidate") == name)
        row = model_row(name, frame, judgments[name], prompts_n)
        row["baseline"] = baseline
        empty = {
            "paired_prompts": None,
            "score_diff": None,
            "score_diff_low": None,
            "score_diff_high": None,
            "rt_diff_s": None,
        }
        row.update(empty if name == baseline else versus(frame, base, cfg.eval.bootstrap, cfg.eval.seed))
        rows.append(row)
    return rows


# -- rendering -------------------------------------------------------------------------------------
def _f(value: float | None, digits: int = 1, sign: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def difference_text(row: dict[str, Any]) -> str:
    """'+0.4 pt [-1.2, +2.0], -1.32 s' (score difference with its 95% interval, then the RT difference)."""
    if row["score_diff"] is None and row["rt_diff_s"] is None:
        return "baseline" if row["model"] == row["baseline"] else "-"
    interval = (
        ""
        if row["score_diff_low"] is None
        else f" [{_f(row['score_diff_low'], 1, True)}, {_f(row['score_diff_high'], 1, True)}]"
    )
    return f"{_f(row['score_diff'], 1, True)} pt{interval}, {_f(row['rt_diff_s'], 2, True)} s"


def markdown_table(rows: list[dict[str, Any]], cfg: RunConfig, answerable: bool, teacher: bool = False) -> str:
    from factory.commands.present import markdown

    scale = f"/{cfg.judge.scale_max:g}"
    headers = [
        "model", "n", f"score {scale}", f"vs {rows[0]['baseline']} (95% CI)", "mean tokens (think + answer)",
        "max tokens (think / answer)", "mean RT (s)", "max RT (s)", "truncated", "judge parse fail",
    ]  # fmt: skip
    if answerable:
        headers.append("answerable agree")
    if teacher:
        headers.append("teacher agree")
    body = []
    for r in rows:
        line = [
            r["model"],
            f"{r['prompts_scored']}/{r['prompts']}",
            _f(r["score"]),
            difference_text(r),
            f"{_f(r['mean_tokens'])} ({_f(r['mean_reasoning_tokens'])} + {_f(r['mean_answer_tokens'])})",
            f"{r['max_tokens'] if r['max_tokens'] is not None else '-'} "
            f"({'-' if r['max_reasoning_tokens'] is None else r['max_reasoning_tokens']} / "
            f"{'-' if r['max_answer_tokens'] is None else r['max_answer_tokens']})",
            _f(r["mean_rt_s"], 2),
            _f(r["max_rt_s"], 2),
            _pct(r["truncated"]),
            f"{r['judge_parse_failures']}/{r['judgments']}",
        ]
        if answerable:
            line.append(f"{_pct(r['answerable_agreement'])} of {r['answerable_labelled']}")
        if teacher:
            line.append(f"{_pct(r['teacher_agreement'])} of {r['teacher_flagged']}")
        body.append(line)
    return markdown(headers, body)


def splits_markdown(splits: list[dict[str, Any]], cfg: RunConfig, answerable: bool, teacher: bool = False) -> list[str]:
    """Each held-out set's tables (overall, multi-turn), as lines of Markdown."""
    out = []
    for split in splits:
        title = f"set {split['set']}" if split["set"] else "all prompts"
        if split["overall"] is not None:
            out += [
                f"## {title}: overall ({split['prompts']} prompts)",
                "",
                markdown_table(split["overall"], cfg, answerable, teacher),
                "",
            ]
        if split["multi_turn"] is not None:
            out += [f"## {title}: multi-turn ({split['multi_turn_prompts']} prompts with a history)", "",
                    markdown_table(split["multi_turn"], cfg, answerable, teacher), ""]  # fmt: skip
        elif split["set"]:
            out += [f"{title}: no prompt with a history (no multi-turn table).", ""]
    return out


def notes(cfg: RunConfig, rows: list[dict[str, Any]], extra: list[str]) -> list[str]:
    e = cfg.eval
    empty = "left out" if e.empty_answer_score is None else f"scored {e.empty_answer_score:g}"
    out = [
        f"score: judge mean on 0..{cfg.judge.scale_max:g}, per prompt over K={e.k} sample(s), then over prompts; "
        f"n = prompts scored / held-out prompts. Empty answers {empty}; engine errors and judge failures left out.",
        f"vs {rows[0]['baseline']}: paired by prompt (candidate - baseline): score difference with a bootstrap 95% "
        f"interval ({e.bootstrap} resamples of the prompts, seed {e.seed}), then the mean RT difference.",
        f"RT = completion tokens (reasoning + answer) / {cfg.decode_tokens_per_s:g} tokens/s (decode_tokens_per_s)"
        + _own_speeds(cfg)
        + ".",
    ]
    if any(r["answerable_labelled"] for r in rows):
        out.append(
            "answerable agree: rule on the reply text, not the judge: a reply that matches eval.referral_patterns "
            f"({', '.join(e.referral_patterns)}) refers the viewer to customer service; it agrees when it refers "
            f"exactly on the prompts labelled {e.answerable_column}: false."
        )
    if any(r["teacher_flagged"] for r in rows):
        out.append(
            "teacher agree: the same rule against the teacher's can-answer flags (sampler.can_answer) in "
            f"{e.teacher_run or cfg.output_dir}: a reply agrees when it refers exactly on the prompts the teacher "
            "flagged as not answerable; per prompt over its replies, then over the prompts with a flag (a prompt's "
            "flag: the majority of its teacher samples' flags)."
        )
    for r in rows:
        if r["samples_failed"] or r["judge_engine_errors"]:
            out.append(
                f"{r['model']}: {r['samples_failed']} failed sample(s), {r['judge_engine_errors']} judge engine "
                "error(s)."
            )
    return out + extra


def _own_speeds(cfg: RunConfig) -> str:
    own = {n: c.decode_tokens_per_s for n, c in cfg.eval.candidates.items() if c.decode_tokens_per_s}
    return (
        (
            "; "
            + ", ".join(f"{n}: {v:g} tokens/s" for n, v in own.items())
            + " (eval.candidates.<name>.decode_tokens_per_s)"
        )
        if own
        else ""
    )


def score_rt_png(rows: list[dict[str, Any]], samples: pl.DataFrame, cfg: RunConfig) -> bytes:
    """Mean score against mean RT per model (the trade-off the paper is about), with each score's
    bootstrap 95% interval over prompts as an error bar."""
    from factory.commands.present import png, pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for i, r in enumerate(rows):
        if r["score"] is None or r["mean_rt_s"] is None:
            continue
        means = _prompt_means(samples.filter(pl.col("candidate") == r["model"]), "eval_score")["eval_score"].to_numpy()
        interval = paired_bootstrap(means, cfg.eval.bootstrap, cfg.eval.seed)
        err = None if interval is None else [[r["score"] - interval[0]], [interval[1] - r["score"]]]
        marker = "s" if r["model"] == r["baseline"] else "o"
        ax.errorbar([r["mean_rt_s"]], [r["score"]], yerr=err, fmt=marker, capsize=4, color=f"C{i}", label=r["model"])
        ax.annotate(r["model"], (r["mean_rt_s"], r["score"]), textcoords="offset points", xytext=(6, 6), fontsize=9)
    ax.set_xlabel(f"mean RT (s) at {cfg.decode_tokens_per_s:g} tokens/s")
    ax.set_ylabel(f"mean judge score (0..{cfg.judge.scale_max:g})")
    ax.set_title("Score against response time per model (95% CI of the score)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return png(fig)


def parquet_bytes(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()
