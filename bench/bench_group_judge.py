"""Group (listwise) judging against pointwise: the judge's prompt tokens per judged sample, counted with the
embedded model's tokenizer (SmolLM2, llama.cpp /tokenize; no generation), on the calibration set's prompts
(product info, history, question) with K host replies each (the row's two, then other rows' replies).
Prints a table; asserts nothing.

    .venv/bin/python bench/bench_group_judge.py [--k 2 4 8] [--chars]     # --chars: ~4 characters a token

The requests are the ones the stages send (render_rubric for pointwise, render_group for group), under
both shipped rubrics. A judge's output tokens are not counted here: a group reply holds one JSON object
per answer, so it is about K pointwise replies long.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

from factory.commands.calibrate import DEFAULT_DATA, load_calibration  # noqa: E402
from factory.config import EngineConfig, JudgeConfig  # noqa: E402
from factory.stages.judge.rubric import render_group, render_rubric  # noqa: E402

RUBRICS = HERE.parent / "conf" / "rubrics"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--chars", action="store_true", help="count ~4 characters a token instead of the tokenizer")
    args = parser.parse_args()
    rows, _ = load_calibration(str(DEFAULT_DATA))
    replies = [r[side] for r in rows for side in ("better", "worse")]
    engine = None
    if args.chars:
        count = lambda texts: [len(t) // 4 for t in texts]  # noqa: E731
        how = "~4 characters a token"
    else:
        from factory.engines.llamacpp import LlamaCppEngine

        engine = LlamaCppEngine(EngineConfig(kind="llamacpp", parallel=1, cpus_per_replica=1, max_model_len=8192))
        count = engine.count_tokens
        how = f"tokenizer of {engine.model_name}"
    cfg = JudgeConfig()
    print(f"judge prompt tokens per judged sample, {len(rows)} calibration prompts, {how}\n")
    print("| rubric | K | pointwise per sample | group per sample | group / pointwise | group request |")
    print("|---|---:|---:|---:|---:|---:|")
    try:
        for rubric_file in ("default_en.txt", "default_zh.txt"):
            rubric = (RUBRICS / rubric_file).read_text().strip()
            for k in args.k:
                point_texts, group_texts = [], []
                for i, row in enumerate(rows):
                    answers = [row["better"], row["worse"]] + [
                        replies[(2 * i + 2 + j) % len(replies)] for j in range(k - 2)
                    ]
                    answers = answers[:k]
                    point_texts += [render_rubric(rubric, row, {"answer": a}, cfg)[0]["content"] for a in answers]
                    group_texts.append(render_group(rubric, row, [{"answer": a} for a in answers], cfg)[0]["content"])
                point = sum(count(point_texts)) / len(point_texts)
                group_total = sum(count(group_texts))
                group = group_total / (len(rows) * k)
                print(
                    f"| {rubric_file} | {k} | {point:.0f} | {group:.0f} | {group / point:.2f}x | "
                    f"{group_total / len(rows):.0f} |"
                )
    finally:
        if engine is not None:
            engine.close()


if __name__ == "__main__":
    main()
