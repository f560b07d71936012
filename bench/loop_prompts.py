"""The closed loop's prompt set: live-stream product Q&A in the seed's domain, made offline from templates.

    python bench/loop_prompts.py        # -> conf/data/loop_prompts.jsonl, conf/data/loop_eval_prompts.jsonl

The products are the demo's and the eval set's (conf/data/demo_prompts.jsonl, eval_prompts.jsonl: name,
brand, category, attributes, price, coupons, link). Each product gets viewer comments about its own facts
(answerable: true), about its price, coupon and link, and about what no product info holds (warranty abroad,
delivery dates, what it is made in: answerable: false, the host should send them to customer service), in
the chat-style spellings of the demo. A few carry a short history. Deterministic (seeded): rerunning writes
the same files. A prompt's id says its product and question. The held-out file is split by product: its
prompts are about HELD_OUT products only (a fixed choice, one in five, over the categories), none of which
the training file mentions, so the eval asks about products the student never saw in training.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "conf" / "data"

ASK_FACT = [
    "what's the {attr}?", "{attr}??", "how about the {attr}", "tell me the {attr} pls", "{attr} on this one?",
    "quick q, {attr}?", "wait what {attr} is it", "hey host, the {attr}?", "can u say the {attr} again",
]  # fmt: skip
ASK_PRICE = ["how much?", "price pls", "how much is it rn", "what's the price on this", "is it still {price}?"]
ASK_COUPON = ["any coupon?", "is there a code", "discount today?", "coupon rn??", "how do i get the discount"]
ASK_LINK = ["which link??", "link number pls", "where do i buy it", "what link is the {short}", "link?"]
UNANSWERABLE = [
    "warranty valid in canada?", "when does it arrive if i order today", "where is it made?",
    "can i return it after 60 days", "does it ship to australia", "is there a bundle with the other one",
    "will it go on sale on black friday", "how long does delivery take to texas", "can i pay in installments",
    "is it cheaper in the store", "do u have it in purple", "is the new version coming soon",
]  # fmt: skip
HISTORY = [
    [
        {"role": "user", "content": "hi!! just joined"},
        {"role": "assistant", "content": "Welcome in! Ask me anything about today's deals!"},
    ],
    [
        {"role": "user", "content": "is this the one from yesterday?"},
        {"role": "assistant", "content": "Yes, same product, same link!"},
    ],
]


# Every fifth product of products() (4 of 20: the air fryer, the brick set, the smart watch, the kettle):
# a kitchen appliance, a toy, a wearable and a home appliance held out; fixed here, not drawn per run.
HELD_OUT_EVERY = 5


def products() -> list[dict]:
    seen: dict[str, dict] = {}
    for name in ("demo_prompts.jsonl", "eval_prompts.jsonl"):
        for line in (DATA / name).read_text().splitlines():
            info = json.loads(line).get("product_info")
            if isinstance(info, dict) and info.get("name"):
                seen.setdefault(info["name"], info)
    return list(seen.values())


def comments(info: dict, rng: random.Random) -> list[tuple[str, bool]]:
    short = info["name"].split()[-1].lower()
    out = [(rng.choice(ASK_FACT).format(attr=attr), True) for attr in info.get("attributes", {})]
    out += [(t.format(attr=attr), True) for attr in info.get("attributes", {}) for t in rng.sample(ASK_FACT, 2)]
    out += [(t.format(price=info.get("price", "")), True) for t in rng.sample(ASK_PRICE, 2)]
    out += [(t, True) for t in rng.sample(ASK_COUPON, 2)] + [
        (t.format(short=short), True) for t in rng.sample(ASK_LINK, 2)
    ]
    out += [(t, False) for t in rng.sample(UNANSWERABLE, 4)]
    return out


def make(seed: int = 0) -> tuple[list[dict], list[dict]]:
    rng = random.Random(seed)
    rows, texts = [], set()
    for p, info in enumerate(products()):
        for question, answerable in comments(info, rng):
            if (info["name"], question) in texts:
                continue
            texts.add((info["name"], question))
            history = rng.choice(HISTORY) if rng.random() < 0.15 else []
            digest = hashlib.sha256(f"{info['name']}|{question}".encode()).hexdigest()
            rows.append({
                "id": f"loop-{p:02d}-{digest[:8]}", "product_info": info, "history": history,
                "question": question, "answerable": answerable, "_held_out": p % HELD_OUT_EVERY == 0,
            })  # fmt: skip
    train = [{k: v for k, v in r.items() if k != "_held_out"} for r in rows if not r["_held_out"]]
    held_out = [{k: v for k, v in r.items() if k != "_held_out"} for r in rows if r["_held_out"]]
    rng.shuffle(train)  # prompts.limit then takes a mix of products
    rng.shuffle(held_out)
    return train, held_out


def main() -> None:
    train, held_out = make()
    for name, rows in (("loop_prompts.jsonl", train), ("loop_eval_prompts.jsonl", held_out)):
        (DATA / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        print(f"{DATA / name}: {len(rows)} prompts ({sum(not r['answerable'] for r in rows)} unanswerable)")


if __name__ == "__main__":
    main()
