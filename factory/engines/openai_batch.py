"""Batch mode of the openai engine (`engine.batch: true`): submit, poll, collect through a provider's
batch API (OpenAI's /v1/files + /v1/batches; the JSONL vLLM's `run-batch` also reads).

    sender = BatchSender(engine)                   # the OpenAIEngine whose client and parsing it uses
    sender.bind(RunStore(run_dir))                 # the executor does this when it builds the pool
    sender.generate(requests, on_done)             # one executor call = one batch of its missing requests

Each request gets a `custom_id`: a hash of its key (the request's tag) and its whole body, so a stored
batch only ever answers the exact request it was sent for. One generate():
  1. for each request, the latest batch that holds its custom_id (from the run's batches/ journal):
     none -> it is sent; a live one (validating, in_progress, finalizing, cancelling) -> it is polled,
     never sent again; an ended one -> its result is read from the output / error file;
  2. the requests to send become one JSONL file (`{"custom_id", "method": "POST", "url":
     "/v1/chat/completions", "body"}` per line), uploaded with purpose "batch" (its row, status
     "uploaded", is appended to batches/), and one batch over it, whose row (batch id, input file id,
     custom_ids, the requests' keys, status) is appended the moment the batch exists;
  3. the batches are polled every `engine.batch_poll_s` seconds; each status seen is appended as a row;
     once a batch ends its files are downloaded and every result of this call is handed to `on_done`.
A result line is `{"custom_id", "response": {"status_code", "body"}, "error"}`: a 200 body is parsed
as a synchronous reply is (OpenAIEngine._completion); a 4xx other than 408/409/429 is that request's
error; anything else (a 5xx or 429 inside the batch, a line with `error` such as batch_expired, no line
at all because the batch failed, expired or was cancelled) sends the request again in a new batch,
alone with the others of this call still missing, up to `engine.max_retries` times. A batch of an
earlier run that ended without a usable result for a request is sent again the same way: only its
missing rows, never the ones it answered.

A killed driver leaves its batches running at the provider; the next run finds their ids in batches/
and polls them. A run killed while a batch was being created left only its file's row: the next run
looks among the provider's 100 most recent batches for one over that file and polls it (found) or
sends the requests (not found: the batch was never made).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, OrderedDict
from typing import Any

import polars as pl

from factory.engines.base import Completion, FatalEngineError, OnDone, Request, checked
from factory.rundir.hashing import stable_hash
from factory.rundir.schemas import BATCHES
from factory.rundir.secrets import redact_url

ENDPOINT = "/v1/chat/completions"
LIVE = frozenset({"validating", "in_progress", "finalizing", "cancelling"})
ENDED = frozenset({"completed", "failed", "expired", "cancelled"})
KEPT_RESULTS = 8  # downloaded batches whose results stay in memory (the others are read again if asked)


class BatchStopped(RuntimeError):
    """The engine is closing (the run stops): the batches stay stored in batches/ and the next run polls them."""


def custom_id(tag: Any, body: dict[str, Any]) -> str:
    """The request's identity inside a batch: its key and its whole body (32 hex characters)."""
    return stable_hash({"tag": tag, "body": body}, length=32)


def result_outcome(line: dict | None) -> tuple[str, Any]:
    """What one line of a batch's output / error file says of its request:
    ("ok", chat completion body) | ("error", message) (final) | ("again", message) (send it again)."""
    if line is None:
        return "again", "no result in the batch's files"
    response = line.get("response") if isinstance(line.get("response"), dict) else None
    error = line.get("error") if isinstance(line.get("error"), dict) else None
    status = response.get("status_code") if response else None
    body = response.get("body") if response else None
    if status == 200 and isinstance(body, dict) and not error:
        return "ok", body
    detail = None
    if isinstance(body, dict):
        inner = body.get("error")
        detail = inner.get("message") if isinstance(inner, dict) else body.get("message")
    if error:
        return "again", f"batch error {error.get('code')}: {error.get('message') or detail or ''}".strip()
    if isinstance(status, int) and status not in (408, 409, 429) and 400 <= status < 500:
        return "error", f"HTTP {status}: {detail or 'refused inside the batch'}"
    return "again", f"HTTP {status}: {detail or 'failed inside the batch'}"


class _Uploaded:
    """The row of an uploaded batch file whose batch is not known (yet): batch_id `file:<file id>`."""

    def __init__(self, file_id: str, status: str = "uploaded"):
        self.id, self.input_file_id, self.status = f"file:{file_id}", file_id, status
        self.output_file_id = self.error_file_id = None


class BatchSender:
    """The batch capability of one OpenAIEngine (see the module doc). Thread-safe: the executor runs
    several calls of one replica at once."""

    def __init__(self, engine: Any):
        self.engine, self.cfg = engine, engine.cfg
        self.server = redact_url(self.cfg.base_url)
        self.store: Any = None
        self.lock = threading.Lock()
        self.batches: dict[str, dict] = {}  # batch id -> its latest row
        self.holding: dict[str, list[str]] = {}  # custom_id -> the batches that hold it, oldest first
        self.results: OrderedDict[str, dict[str, dict]] = OrderedDict()  # batch id -> custom_id -> line
        self.mine: set[str] = set()  # batches this engine created (their final errors are final)
        self.tries: Counter[str] = Counter()  # custom_id -> batches this engine sent it in
        self.polled: dict[str, float] = {}  # batch id -> when it was last polled
        self.polls = 0  # successful polls: the replica's heartbeat while a batch runs
        self.stop = threading.Event()

    # -- the journal (batches/ in the run directory) ---------------------------------------------------
    def bind(self, store: Any) -> None:
        """Journal into `store` (a RunStore); the batches it already holds for this server and model are known."""
        self.store = store
        stored = store.read("batches", BATCHES)
        if stored is None or not stored.height:
            return
        mine = stored.filter((pl.col("server") == self.server) & (pl.col("model") == self.cfg.model))
        latest = mine.sort("updated_at", maintain_order=True).unique("batch_id", keep="last", maintain_order=True)
        with self.lock:
            for row in latest.sort("created_at").iter_rows(named=True):
                self._know(row)

    def _know(self, row: dict) -> None:
        if row["batch_id"] not in self.batches:
            for cid in row["custom_ids"]:
                self.holding.setdefault(cid, []).append(row["batch_id"])
        self.batches[row["batch_id"]] = row

    def _record(self, batch: Any, custom_ids: list[str], keys: list[str], error: str | None = None) -> dict:
        known = self.batches.get(batch.id)
        row = {
            "batch_id": batch.id,
            "server": self.server,
            "model": self.cfg.model,
            "input_file_id": batch.input_file_id,
            "output_file_id": batch.output_file_id,
            "error_file_id": batch.error_file_id,
            "status": batch.status,
            "custom_ids": custom_ids if known is None else known["custom_ids"],
            "keys": keys if known is None else known["keys"],
            "error": error,
            "created_at": known["created_at"] if known else time.time(),
            "updated_at": time.time(),
        }
        self.store.append("batches", pl.DataFrame([row], schema=pl.Schema(BATCHES)).to_arrow())
        with self.lock:
            self._know(row)
        return row

    # -- generate ------------------------------------------------------------------------------------
    def generate(self, requests: list[Request], on_done: OnDone | None = None) -> list[Completion]:
        if self.store is None:
            raise RuntimeError("engine.batch: no run directory to keep the batch ids in (the executor binds it)")
        bodies = {}
        for request in requests:
            body = self.engine._body(request)
            body.update(body.pop("extra_body", None) or {})  # the client merges it; a batch line holds it
            bodies[custom_id(request.tag, body)] = (request, body)
        if len(bodies) != len(requests):
            raise RuntimeError("engine.batch: two requests of one call share a key and a body")
        done: dict[str, Completion] = {}

        def finish(cid: str, completion: Completion) -> None:
            completion = checked(bodies[cid][0], completion)  # every engine's replies pass the one check
            done[cid] = completion
            self.engine.finished += 1
            if on_done is not None:
                on_done(completion)

        while len(done) < len(bodies):
            send, waiting, adopted = [], {}, False
            for cid, (request, _) in bodies.items():
                if cid in done:
                    continue
                with self.lock:
                    held = self.holding.get(cid)
                    batch = dict(self.batches[held[-1]]) if held else None
                if batch is None or batch["status"] == "abandoned":
                    send.append(cid)
                elif batch["status"] == "uploaded":
                    self._adopt(batch)
                    adopted = True  # the requests' latest batch changed: look again
                    break
                elif batch["status"] not in ENDED:
                    waiting.setdefault(batch["batch_id"], []).append(cid)
                else:
                    verdict, value = result_outcome(self._results(batch).get(cid))
                    tries = self.tries[cid]
                    if verdict == "ok":
                        finish(cid, self._completion(request, value, batch, tries or 1))
                    elif batch["batch_id"] in self.mine and (verdict == "error" or tries > self.cfg.max_retries):
                        attempts = f" (after {tries} batch(es))" if verdict == "again" else ""
                        error = self.engine._scrub(value + attempts)
                        finish(cid, Completion(tag=request.tag, error=error, attempts=tries))
                    else:
                        send.append(cid)
            if adopted:
                continue
            if send:
                self._submit([(cid, *bodies[cid]) for cid in send])
            elif waiting:
                self._wait(list(waiting))
        return [done[cid] for cid in bodies]

    def _completion(self, request: Request, body: dict, batch: dict, attempts: int) -> Completion:
        """A 200 line's Completion, checked as a synchronous reply is; a body without an answer is the
        request's error."""
        latency = max(0.0, (batch.get("updated_at") or 0) - (batch.get("created_at") or 0))
        try:
            response = self.engine._openai.types.chat.ChatCompletion.model_validate(body)
            return self.engine._completion(request, response, latency, attempts)
        except Exception as exc:  # noqa: BLE001 - a malformed reply is this request's failure
            return Completion(
                tag=request.tag, error=self.engine._scrub(f"malformed reply in the batch: {exc}"), attempts=attempts
            )

    # -- the provider's routes ---------------------------------------------------------------------
    def _api(self, make: Any, what: str) -> Any:
        """One call to the batch routes, retried like a request (a 401/403 stops the run)."""
        openai = self.engine._openai
        for attempt in range(1, self.cfg.max_retries + 2):
            if self.stop.is_set():
                raise BatchStopped("the engine is closing: the stored batches are polled by the next run")
            try:
                return self.engine._call(make())
            except openai.APIStatusError as exc:
                if exc.status_code in (401, 403):
                    raise FatalEngineError(
                        self.engine._fatal_message(exc.status_code, self.engine._scrub(str(exc)))
                    ) from None
                retry = exc.status_code in (408, 409, 429) or exc.status_code >= 500
                error: Exception = exc
            except openai.APIConnectionError as exc:
                retry, error = True, exc
            if not retry or attempt > self.cfg.max_retries:
                raise RuntimeError(self.engine._scrub(f"engine.batch: {what} failed: {type(error).__name__}: {error}"))
            self.stop.wait(min(60.0, self.cfg.backoff_s * 2 ** (attempt - 1)))
        raise AssertionError("unreachable")

    def _submit(self, items: list[tuple[str, Request, dict]]) -> None:
        lines = [{"custom_id": cid, "method": "POST", "url": ENDPOINT, "body": body} for cid, _, body in items]
        data = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode()
        client = self.engine.client
        upload = self._api(
            lambda: client.files.create(file=("factory-batch.jsonl", data), purpose="batch"), "uploading a batch file"
        )
        keys = [json.dumps(request.tag, default=str) for _, request, _ in items]
        cids = [cid for cid, _, _ in items]
        # The uploaded file's row first: a run killed while the batch is being created finds it by this file.
        self._record(_Uploaded(upload.id), cids, keys)
        batch = self._api(
            lambda: client.batches.create(
                input_file_id=upload.id, endpoint=ENDPOINT, completion_window=self.cfg.batch_window
            ),
            "creating a batch",
        )
        with self.lock:
            self.mine.add(batch.id)
            for cid in cids:
                self.tries[cid] += 1
        self._record(batch, cids, keys)
        self.polled[batch.id] = time.monotonic()

    def _adopt(self, uploaded: dict) -> None:
        """An uploaded file's row is the latest of its requests: its run stopped while the batch was created.
        The provider's recent batches are searched for one over that file; found, it is polled like any
        stored batch; not found, the row is marked abandoned and its requests are sent (nothing was paid)."""
        file_id = uploaded["input_file_id"]

        async def newest() -> Any:  # the client's list is an awaitable paginator, not a coroutine
            return await self.engine.client.batches.list(limit=100)

        page = self._api(newest, "listing the recent batches")
        found = next((b for b in page.data if b.input_file_id == file_id), None)
        if found is not None:
            self._record(found, uploaded["custom_ids"], uploaded["keys"])
        else:
            self._record(_Uploaded(file_id, "abandoned"), uploaded["custom_ids"], uploaded["keys"])

    def _wait(self, batch_ids: list[str]) -> None:
        """Poll until one of `batch_ids` has ended (each at most every batch_poll_s seconds)."""
        while True:
            for batch_id in batch_ids:
                with self.lock:
                    known = self.batches[batch_id]
                if known["status"] in ENDED:
                    return
                if time.monotonic() - self.polled.get(batch_id, 0.0) < self.cfg.batch_poll_s:
                    continue
                self.polled[batch_id] = time.monotonic()
                batch = self._api(
                    lambda b=batch_id: self.engine.client.batches.retrieve(b), f"polling batch {batch_id}"
                )
                self.polls += 1
                if batch.status != known["status"] or batch.output_file_id != known["output_file_id"]:
                    errors = getattr(batch, "errors", None)
                    text = (
                        "; ".join(f"{e.code}: {e.message}" for e in (errors.data or []))
                        if errors and errors.data
                        else None
                    )
                    self._record(batch, known["custom_ids"], known["keys"], text)
                if batch.status in ENDED:
                    return
            if self.stop.wait(min(1.0, self.cfg.batch_poll_s)):
                raise BatchStopped("the engine is closing: the stored batches are polled by the next run")

    def _results(self, batch: dict) -> dict[str, dict]:
        """custom_id -> result line of an ended batch (its output and error files, downloaded once)."""
        batch_id = batch["batch_id"]
        with self.lock:
            if batch_id in self.results:
                self.results.move_to_end(batch_id)
                return self.results[batch_id]
        lines: dict[str, dict] = {}
        for file_id in (batch["error_file_id"], batch["output_file_id"]):  # a success wins over an error line
            if not file_id:
                continue
            content = self._api(lambda f=file_id: self.engine.client.files.content(f), f"downloading {file_id}")
            for raw in content.text.splitlines():
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue  # a line that is not JSON answers nothing: its request is sent again
                if isinstance(line, dict) and isinstance(line.get("custom_id"), str):
                    lines[line["custom_id"]] = line
        with self.lock:
            self.results[batch_id] = lines
            while len(self.results) > KEPT_RESULTS:
                self.results.popitem(last=False)
        return lines
