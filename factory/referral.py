"""The seed's rule for an unanswerable question: refer the viewer to customer service. These regexes
(case-insensitive) mark a reply that does; `eval.referral_patterns` defaults to them. The rule itself
(a label, whether a reply refers, whether the two agree) is here once, for factory eval's answerable
agreement and its agreement with the teacher's flags, for the answerable verifier (factory/stages/verifier.py)
and for the flag_contradiction term (a teacher's can-answer flag against its own reply, factory/pairs/terms.py)."""

from __future__ import annotations

import json
import re

import polars as pl

REFERRAL_PATTERNS = [
    r"customer (service|support|care)",
    r"(contact|ask|message|check with) (the |our )?(seller|shop|store|support|service)",
    r"客服",
    r"售后",
]


def answerable_flags(values: pl.Series) -> pl.Series:
    """true/false from bools or text (true/yes/1, false/no/0); anything else null."""
    text = values.cast(pl.String).str.strip_chars().str.to_lowercase()
    return (
        pl.select(
            pl.when(text.is_in(["true", "yes", "1"])).then(True).when(text.is_in(["false", "no", "0"])).then(False)
        )
        .to_series()
        .alias("answerable")
    )


def refers(text: pl.Expr, patterns: list[str]) -> pl.Expr:
    """True where the reply matches one of `patterns` (case-insensitive): it refers the viewer on."""
    if not patterns:
        return pl.lit(False)
    return text.fill_null("").str.contains("(?i)" + "|".join(f"(?:{p})" for p in patterns))


def agrees(answerable: pl.Expr, referred: pl.Expr) -> pl.Expr:
    """The reply's decision is right: it answers an answerable question or refers an unanswerable one
    (null where the label is)."""
    return pl.when(answerable.is_not_null()).then(answerable != referred)


def contradicts(flag: pl.Expr, referred: pl.Expr) -> pl.Expr:
    """The teacher's can-answer flag and its own reply disagree (the flag taken as the label of `agrees`):
    it says it can answer and refers the viewer on, or says it cannot and answers. False where the flag is
    null (nothing to contradict)."""
    return agrees(flag, referred).not_().fill_null(False)


# -- the seed's other reply rules, as verifier functions (verifiers.<name>.rule: function, e.g.
# function: factory.referral:names_link); the closed loop's rule judge (bench/closed_loop.py) uses them -------
_MONEY = re.compile(r"\$\s?(\d+(?:[.,]\d{1,2})?)|(\d+(?:[.,]\d{1,2})?)\s?(?:dollars|usd|bucks)\b", re.IGNORECASE)
_NUMBER = re.compile(r"\d+(?:[.,]\d{1,2})?")


def product_info(prompt: dict) -> dict | None:
    """The prompt's product_info as a dict: stored as an object, as JSON text, or as the text the prompts
    loader renders ("- name: ...\n- link: 3", one "- key: value" line each); None when it has none."""
    info = prompt.get("product_info")
    if isinstance(info, str):
        try:
            info = json.loads(info)
        except ValueError:
            lines = [line[2:].partition(": ") for line in info.splitlines() if line.startswith("- ")]
            info = {key.strip(): value.strip() for key, sep, value in lines if sep} or None
    return info if isinstance(info, dict) else None


def names_link(sample: dict, prompt: dict) -> float | None:
    """1 when the reply names the product's link number ("link 3", "link #3", "link number 3"), 0 when it
    does not; no verdict for a prompt labelled unanswerable (the reply should refer instead) or a product
    without a link."""
    info = product_info(prompt)
    label = prompt.get("answerable")
    if not info or info.get("link") is None or str(label).strip().lower() in ("false", "no", "0"):
        return None
    pattern = rf"\blink\s*(?:number\s*|no\.?\s*)?#?\s*{re.escape(str(info['link']))}(?!\d)"
    return float(bool(re.search(pattern, sample.get("answer") or "", re.IGNORECASE)))


def prices_from_info(sample: dict, prompt: dict) -> float | None:
    """1 when every money amount in the reply ($12.99, 12 dollars) is one the product info states (its
    price, coupons or attributes), 0 when the reply names another; no verdict without product info."""
    info = product_info(prompt)
    if info is None:
        return None
    known = {float(n.replace(",", ".")) for n in _NUMBER.findall(json.dumps(info, ensure_ascii=False))}
    said = [float((a or b).replace(",", ".")) for a, b in _MONEY.findall(sample.get("answer") or "")]
    return float(all(amount in known for amount in said))
