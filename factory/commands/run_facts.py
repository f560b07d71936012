"""The run's facts as data, from a stored manifest: the config's essentials and the funnel. The page
(factory/commands/page_html.py) and the dataset card (factory/commands/card.py) render them; this module
imports no other command, so either may import it."""

from __future__ import annotations

from typing import Any

from factory.config.kinds import JUDGE_KINDS


def funnel_steps(
    pairs: dict[str, Any], manifest: dict[str, Any], invalid: list[tuple[str, int]]
) -> list[tuple[str, int, list[tuple[str, int]]]]:
    """prompts -> samples -> valid samples -> groups -> candidate pairs -> kept pairs: (step, count, [(what
    was lost, count)]) from the pair stats (manifest["pairs"]) and the manifest; the page and the dataset
    card render these."""
    counts = manifest.get("counts", {})
    k = (manifest.get("config") or {}).get("sampler", {}).get("k")
    steps: list[tuple[str, int, list[tuple[str, int]]]] = []
    if counts.get("prompts_in") is not None:
        steps.append(("prompt rows in", counts["prompts_in"], []))
        steps.append(
            (
                "valid prompts",
                counts.get("prompts_valid", 0),
                invalid or [("invalid", counts.get("prompts_invalid", 0))],
            )
        )
    if counts.get("samples_expected") is not None:
        adaptive = manifest.get("adaptive")
        asked = (
            f"samples asked (adaptive, {adaptive['k_min']} to K={k} a prompt)"
            if adaptive
            else f"samples asked (x K={k})"
        )
        steps.append((asked if k else "samples asked", counts["samples_expected"], []))
    stored = pairs["samples_total"]
    failed = pairs["samples_excluded"].get("engine_error", 0)
    missing = max(counts.get("samples_expected", stored) - stored, 0)
    steps.append(("samples stored", stored, [("not stored (stopped, budget)", missing)] if missing else []))
    reasons = [(r, n) for r, n in pairs["samples_excluded"].items() if n]
    steps.append(("valid samples", pairs["samples_valid"], reasons))
    del failed
    buckets = pairs["groups_by_outcome"]
    too_few = [
        (f"fewer_than_2_valid, mostly {c}", n) for c, n in sorted(pairs["groups_too_few_by_reason"].items()) if n
    ]
    steps.append(("groups (prompts with samples)", pairs["groups"], []))
    steps.append(
        (
            "groups with >= 2 valid",
            pairs["groups_candidate"],
            too_few or [("fewer_than_2_valid", buckets.get("fewer_than_2_valid", 0))],
        )
    )
    steps.append(("candidate pairs", pairs["pairs_candidate"], []))
    lost = [(o, n) for o, n in pairs["pairs_by_outcome"].items() if o != "kept" and n]
    steps.append(("kept pairs", pairs["pairs_kept"], lost))
    groups_lost = [(f"groups {b}", n) for b, n in buckets.items() if b not in ("kept", "fewer_than_2_valid") and n]
    steps.append(("groups with a kept pair", buckets.get("kept", 0), groups_lost))
    return steps


def essentials(conf: dict[str, Any], terms: list[dict[str, Any]], output: str) -> list[list[str]]:
    """The config's essentials as (setting, value) rows, from a stored (redacted) config; the page and the
    dataset card render these."""
    sampler, judge, p = conf["sampler"], conf["judge"], conf["pairs"]
    rows = [
        ["prompts", f"{conf['prompts']['path']} (limit {conf['prompts']['limit']})"],
        [
            "sampler",
            f"{sampler['engine']['kind']}:{sampler['engine']['model'] or 'embedded'} x{sampler['engine']['replicas']}",
        ],
        [
            "sampling",
            f"K={sampler['k']}, temperature {sampler['sampling']['temperature']}, top_p "
            f"{sampler['sampling']['top_p']}, "
            f"max_tokens {sampler['sampling']['max_tokens']}, stop {sampler['sampling']['stop']}",
        ],
        [
            "judge",
            f"{judge['engine']['kind']}:{judge['engine']['model'] or 'embedded'}, votes {judge['votes']}, "
            f"scale 0..{judge['scale_max']:g}, rubric {judge['rubric_file'] or 'default'}"
            if judge.get("enabled", True)
            else "off",
        ],
        ["other judges", ", ".join(f"{k.section}.{n}" for k in JUDGE_KINDS for n in conf[k.section]) or "-"],
        [
            "pairs",
            f"{p['strategy']}, pairing {p['pairing']}, w_len {p['w_len']}, w_quality {p['w_quality']}, "
            f"drop_ratio {p['drop_ratio']}, min_margin {p['min_margin']}, cap {p['max_pairs_per_group']}",
        ],
        ["judges of S", f"{', '.join(p['judges'])} (combine {p['combine']}), dedupe {p['dedupe']}"],
        ["terms", ", ".join(t["name"] for t in terms)],
        ["output", output],
    ]
    return rows
