"""Groups as contiguous row segments: after the kernel sorts samples by prompt, a group's rows sit next
to each other, so per-group reductions are numpy `reduceat` calls (tiny groups are where polars'
window functions are slow)."""

from __future__ import annotations

import numpy as np
import polars as pl


def segments(gid: pl.Series | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first row, row count) of each run of equal keys."""
    keys = gid.to_numpy() if isinstance(gid, pl.Series) else gid
    if not len(keys):
        return np.empty(0, np.int64), np.empty(0, np.int64)
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return starts, np.diff(np.r_[starts, len(keys)])


def per_group(values: np.ndarray, reduce: np.ufunc, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The group's `reduce` (np.maximum, np.minimum, np.add) repeated on each of its rows."""
    return np.repeat(reduce.reduceat(values, starts), counts) if len(values) else values
