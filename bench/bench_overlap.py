"""copies_prompt / repeats_history: the reference's n-grams made once per prompt (factory.pairs.attach) against
once per sample (rules.overlap without its grams column), side by side in one run; the values must agree.

    PYTHONPATH=. python bench/bench_overlap.py [SAMPLES] [K]
"""

from __future__ import annotations

import random
import sys
import time

import polars as pl

from factory import pairs
from factory.config import PairsConfig, TermConfig
from factory.pairs import rules

CHARS = (
    "的一是了我不人在他有这个上们来到时大地为子中你说生国年着就那和要她出也得里后自以会家可下而过天去能对小多心好之于"
)


def main(samples: int = 8000, k: int = 8) -> None:
    rng = random.Random(0)
    n_prompts = samples // k
    prompts = pl.DataFrame(
        {
            "prompt_id": [f"p{i}" for i in range(n_prompts)],
            "messages": [
                [{"role": "user", "content": "".join(rng.choice(CHARS) for _ in range(1500))}] for _ in range(n_prompts)
            ],
        }
    )
    scored = pl.DataFrame(
        {
            "prompt_id": [f"p{i // k}" for i in range(samples)],
            "answer": ["".join(rng.choice(CHARS) for _ in range(60)) for _ in range(samples)],
        }
    )
    cfg = PairsConfig(terms=[TermConfig(source="copies_prompt", unit="char", n=6, exclude_above=0.8)])
    column = rules.grams_column(rules.PROMPT_TEXT, 6, "char")
    t0 = time.perf_counter()
    joined = pairs.attach(scored, prompts, cfg)
    once = joined.select(rules.overlap(rules.PROMPT_TEXT, 6, "char", column).alias("v"))["v"]
    t_once = time.perf_counter() - t0
    t0 = time.perf_counter()
    each = joined.select(rules.overlap(rules.PROMPT_TEXT, 6, "char").alias("v"))["v"]
    t_each = time.perf_counter() - t0
    assert once.equals(each)
    print(f"{samples} samples, K={k}, 1500-character prompts, n=6 characters")
    print(f"  n-grams once per prompt (attach): {t_once:.2f} s")
    print(f"  n-grams once per sample:          {t_each:.2f} s")
    print(f"  ratio: {t_each / t_once:.1f}x")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
