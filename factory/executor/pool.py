"""What the executor core sees of a pool, whichever backend runs it (Ray actors or threads in process).

A pool runs batches on engines and reports back with events:

    Event("rows", call_id, rows)     finished rows of a call (any number of times per call)
    Event("done", call_id, error)    the call ended (error: the batch function raised; None: it returned)
    Event("lost", call_id, reason)   the replica running it died or stalled and was restarted

A call's "done" always comes after all of its "rows". The core matches rows to requests by key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Event:
    kind: str
    call_id: int
    payload: Any


def reason_of(exc: BaseException) -> str:
    """One line for a failure: the exception's type and the last line of its message."""
    text = str(exc).strip()
    cause = getattr(exc, "cause", None)  # Ray wraps what the task raised
    name = type(cause).__name__ if isinstance(cause, BaseException) else type(exc).__name__
    if isinstance(cause, BaseException):
        text = str(cause).strip() or text
    return f"{name}: {text.splitlines()[-1] if text else ''}"
