"""Content-addressed keys: prompt ids, fingerprints and per-sample seeds.

Everything stored is keyed so that a rerun asks only for what is missing:
- a sample by (prompt_id, sample_idx) under the sampler fingerprint,
- a judgment by (prompt_id, sample_idx, vote) under the judge fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def stable_hash(value: Any, length: int = 16) -> str:
    """Hex digest of a JSON-serializable value, independent of dict key order."""
    blob = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:length]


def derive_seed(base_seed: int, *parts: Any) -> int:
    """A 31-bit seed derived from the base seed and the request's identity (reproducible reruns)."""
    digest = hashlib.sha256(json.dumps([base_seed, *parts], default=str).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def messages_hash(messages: Any) -> str:
    """The content hash of a prompt's rendered messages ([{role, content}, ...]): what a sample answered.
    A prompt_id without an id column is this hash; with one, samples store it beside the id (prompt_hash)
    so that a prompt whose text changed under the same id is sampled again, never paired with old answers."""
    return stable_hash([{"role": m["role"], "content": m["content"]} for m in messages])
