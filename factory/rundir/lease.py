"""One writer per run directory: a lease file with its owner and a heartbeat.

    with Lease(store, "factory run conf/demo.yaml"):     # refuses at once if another run holds it
        ...                                              # a thread renews the heartbeat every HEARTBEAT_S

OUTPUT_DIR/_lease.json holds {owner, host, pid, command, started_at, heartbeat_at, token}. A second
`factory run` on the same directory refuses before any request, naming the holder. A lease is stale
when its heartbeat is older than TTL_S (the holder was killed, its machine is gone), or when its
holder ran on this host and that pid no longer exists: a stale lease is taken over, with a line saying
so. `--take-over` takes a live-looking lease too (for a holder you know is dead). It works on object
stores as well: the lease is written, then read back, and kept only if it is still ours (two runs that
start within the same instant: the later write wins and the other refuses).
"""

from __future__ import annotations

import getpass
import os
import socket
import sys
import threading
import time
import uuid
from typing import Any

from factory.rundir.store import RunStore

LEASE = "_lease.json"
HEARTBEAT_S = 10.0
TTL_S = 60.0
SETTLE_S = 0.2  # between writing the lease and reading it back (a concurrent writer lands meanwhile)
# A holder whose heartbeat is older than this missed a beat: its driver is likely gone (a killed Ray job's
# driver on another node). A run that finds such a lease waits for it to go stale and takes it, rather than
# refusing (a resubmitted job would fail again); a fresher one is a live run and is refused at once.
MISSED_BEAT_S = 1.5 * HEARTBEAT_S


class LeaseHeld(RuntimeError):
    """Another live run holds the directory's lease."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _process_start(pid: int) -> str | None:
    """When a process started (clock ticks since boot, /proc/PID/stat field 22), to tell a holder's pid from
    another process that reused it; None where /proc is not there."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def describe(lease: dict[str, Any], now: float | None = None) -> str:
    now = now or time.time()
    return (
        f"{lease.get('command', '?')!r} by {lease.get('owner', '?')} on {lease.get('host', '?')} "
        f"(pid {lease.get('pid', '?')}, started "
        f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(lease.get('started_at', 0)))}, "
        f"last heartbeat {now - float(lease.get('heartbeat_at', 0)):.0f}s ago)"
    )


def stale(lease: dict[str, Any], now: float | None = None) -> bool:
    """A lease is stale once its heartbeat is older than TTL_S, or at once when its holder ran on this host
    and that process is gone (its pid does not exist, or now belongs to a process started later)."""
    now = now or time.time()
    if now - float(lease.get("heartbeat_at", 0)) > TTL_S:
        return True
    if lease.get("host") != socket.gethostname():
        return False
    pid = int(lease.get("pid", -1))
    if not _alive(pid):
        return True
    started = lease.get("pid_started")
    return started is not None and _process_start(pid) not in (None, started)


def holder(store: RunStore) -> dict[str, Any] | None:
    """The live lease of a run directory, or None (no lease, or a stale one)."""
    try:
        lease = store.read_json(LEASE)
    except (ValueError, OSError):
        return None
    return lease if lease and not stale(lease) else None


class Lease:
    def __init__(self, store: RunStore, command: str, take_over: bool = False, say: Any = None):
        self.store, self.command, self.take_over = store, command, take_over
        self.say = say or (lambda text: print(text, file=sys.stderr))
        self.token = uuid.uuid4().hex
        self.started_at = time.time()
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _record(self) -> dict[str, Any]:
        return {
            "owner": getpass.getuser(), "host": socket.gethostname(), "pid": os.getpid(), "command": self.command,
            "started_at": self.started_at, "heartbeat_at": time.time(), "token": self.token,
            "pid_started": _process_start(os.getpid()),
        }  # fmt: skip

    def acquire(self) -> Lease:
        try:
            current = self.store.read_json(LEASE)
        except ValueError:  # a lease cut short by a crash mid-write
            current = None
        if current and current.get("token") != self.token and not stale(current) and not self.take_over:
            current = self._wait_if_beat_missed(current)
        if current and current.get("token") != self.token:
            if not stale(current) and not self.take_over:
                raise LeaseHeld(
                    f"output_dir {self.store.url} is being written by {describe(current)}; two runs on one directory "
                    f"would pay for every request twice. Wait for it, or if it is dead: its lease goes stale "
                    f"{TTL_S:.0f}s after its last heartbeat, or run again with --take-over"
                )
            why = "stale" if stale(current) else "live-looking (--take-over)"
            self.say(f"[lease] taking over the {why} lease of {describe(current)}")
        self.store.write_json(LEASE, self._record())
        time.sleep(SETTLE_S)
        mine = self.store.read_json(LEASE) or {}
        if mine.get("token") != self.token:
            raise LeaseHeld(
                f"output_dir {self.store.url} is being written by {describe(mine)}, which took the lease at the "
                f"same moment as this run; two runs on one directory would pay for every request twice"
            )
        self._thread = threading.Thread(target=self._beat, name="factory-lease", daemon=True)
        self._thread.start()
        return self

    def _wait_if_beat_missed(self, current: dict[str, Any]) -> dict[str, Any] | None:
        """A holder that missed a heartbeat (its driver was killed: a stopped Ray job, a lost node) is waited
        for until its lease goes stale, then taken; a beat meanwhile means it lives (refused by the caller)."""
        age = time.time() - float(current.get("heartbeat_at", 0))
        if age <= MISSED_BEAT_S:
            return current
        self.say(
            f"[lease] the holder's heartbeat stopped {age:.0f}s ago: {describe(current)}; taking the lease over "
            f"when it goes stale, {TTL_S:.0f}s after its last heartbeat (in {max(TTL_S - age, 0):.0f}s)"
        )
        while True:
            time.sleep(min(1.0, max(TTL_S - (time.time() - float(current.get("heartbeat_at", 0))), 0.0) + 0.05))
            try:
                now = self.store.read_json(LEASE)
            except ValueError:
                now = None
            if not now or now.get("token") != current.get("token"):
                return now  # released, or taken by someone else meanwhile: judged again by the caller
            if float(now.get("heartbeat_at", 0)) != float(current.get("heartbeat_at", 0)):
                return now  # it beat: a live run
            if stale(now):
                return now

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                current = self.store.read_json(LEASE) or {}
                if current.get("token") != self.token:
                    self.lost = True
                    self.say(f"[lease] another run took this directory over: {describe(current)}; stopping")
                    return
                self.store.write_json(LEASE, self._record())
            except Exception as exc:  # a storage hiccup: try again at the next beat
                self.say(f"[lease] could not renew the lease ({type(exc).__name__}: {exc}); retrying")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            current = self.store.read_json(LEASE) or {}
            if current.get("token") == self.token:
                self.store.fs.rm(self.store.path(LEASE))
        except (OSError, ValueError):
            pass

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def note_if_live(store: RunStore, what: str) -> str | None:
    """For read-only commands: one line when a run is writing the directory right now."""
    lease = holder(store)
    if lease is None:
        return None
    return f"[lease] a run is writing {store.url} right now ({describe(lease)}): {what}"


__all__ = ["Lease", "LeaseHeld", "holder", "note_if_live"]
