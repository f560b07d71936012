"""A loopback fake of a provider's batch routes (OpenAI's shapes), stdlib only, in a thread:

    POST /v1/files                 multipart (purpose=batch, file=JSONL)  -> a file object {id: file-N}
    POST /v1/batches               {input_file_id, endpoint, completion_window} -> a batch object (validating)
    GET  /v1/batches               the newest batches first (a list page)
    GET  /v1/batches/{id}          the batch object as it stands (in_progress, completed, expired, failed)
    GET  /v1/files/{id}/content    the JSONL of an output or error file
    POST /v1/chat/completions      counted only: batch mode must never send one

Every input line is answered like tests.engines.loopback.FakeModelServer would (a sample's
`<think>..</think>words` from its seed; a judge's `{"score": seed % 101}`). `plans` says, per batch in
creation order, how it ends: "complete", "hold" (in_progress until `release()`), "expire_half" (the
first half answered, the rest expired), "fail" (validation failed, no file), "refuse_first" (its first
line answered with a 400), "error_first" (its first line answered with a 500). Counters: `lines`
(custom_id -> how many input lines held it), `uploads`, `creates`, `polls`, `lists`, `downloads`, `chats`.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from email.parser import BytesParser
from email.policy import default as email_policy
from typing import Any

from tests.engines.loopback import _Handler, _Server, chat_response


def answer(body: dict) -> dict:
    seed = int(body.get("seed") or 0)
    if "response_format" in body:
        content = json.dumps({"score": seed % 101, "reason": "r"})
    else:
        content = f"<think>{'hm ' * (seed % 5)}</think>" + " ".join(["word"] * (2 + seed % 9))
    reply = chat_response(content)
    reply["usage"]["completion_tokens"] = len(content.split())
    return reply


def _multipart(content_type: str, raw: bytes) -> dict[str, bytes]:
    message = BytesParser(policy=email_policy).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
    return {
        part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
        for part in message.iter_parts()
    }


class BatchServer(_Server):
    def __init__(self, plans: list[str] | None = None):
        self.plans = list(plans or [])
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.inputs: dict[str, list[dict]] = {}  # batch id -> its input lines
        self.lines: Counter[str] = Counter()
        self.uploads = self.creates = self.polls = self.downloads = self.chats = self.lists = 0
        self.released = threading.Event()

        class Handler(_Handler):
            def do_POST(self):
                server: BatchServer = self.server.owner  # type: ignore[attr-defined]
                raw = self._body()
                with server.lock:
                    if self.path == "/v1/files":
                        fields = _multipart(self.headers["Content-Type"], raw)
                        server.uploads += 1
                        file_id = f"file-{len(server.files)}"
                        server.files[file_id] = fields["file"]
                        body = {"id": file_id, "object": "file", "bytes": len(fields["file"]), "created_at": 0,
                                "filename": "input.jsonl", "purpose": "batch", "status": "processed"}  # fmt: skip
                        return self._send(200, json.dumps(body).encode())
                    if self.path == "/v1/batches":
                        request = json.loads(raw)
                        server.creates += 1
                        batch_id = f"batch_{len(server.batches)}"
                        lines = [json.loads(x) for x in server.files[request["input_file_id"]].decode().splitlines()]
                        server.inputs[batch_id] = lines
                        for line in lines:
                            server.lines[line["custom_id"]] += 1
                        plan = (
                            server.plans[len(server.batches)] if len(server.batches) < len(server.plans) else "complete"
                        )
                        batch = {
                            "id": batch_id,
                            "object": "batch",
                            "endpoint": request["endpoint"],
                            "input_file_id": request["input_file_id"],
                            "completion_window": request["completion_window"],
                            "status": "validating",
                            "created_at": int(time.time()),
                            "plan": plan,
                            "output_file_id": None,
                            "error_file_id": None,
                            "errors": None,
                            "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
                        }
                        server.batches[batch_id] = batch
                        return self._send(200, json.dumps(server.public(batch)).encode())
                    if self.path.endswith("/chat/completions"):
                        server.chats += 1
                        return self._send(200, json.dumps(answer(json.loads(raw))).encode())
                self._send(404, b'{"error": {"message": "no such route"}}')

            def do_GET(self):
                server: BatchServer = self.server.owner  # type: ignore[attr-defined]
                if self.path.split("?")[0] == "/v1/batches":
                    with server.lock:
                        server.lists += 1
                        newest = [server.public(b) for b in reversed(server.batches.values())][:100]
                    body = {
                        "object": "list",
                        "data": newest,
                        "has_more": False,
                        "first_id": newest[0]["id"] if newest else None,
                        "last_id": newest[-1]["id"] if newest else None,
                    }
                    return self._send(200, json.dumps(body).encode())
                found = re.fullmatch(r"/v1/batches/([\w-]+)", self.path)
                with server.lock:
                    if found and found.group(1) in server.batches:
                        server.polls += 1
                        batch = server.advance(found.group(1))
                        return self._send(200, json.dumps(server.public(batch)).encode())
                    found = re.fullmatch(r"/v1/files/([\w-]+)/content", self.path)
                    if found and found.group(1) in server.files:
                        server.downloads += 1
                        data = server.files[found.group(1)]
                        self.send_response(200)
                        self.send_header("Content-Type", "application/octet-stream")
                        self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        self.wfile.write(data)
                        return
                self._send(404, b'{"error": {"message": "not found"}}')

        super().__init__(Handler)

    @staticmethod
    def public(batch: dict) -> dict:
        return {k: v for k, v in batch.items() if k != "plan"}

    def release(self) -> None:
        self.released.set()

    def _file(self, lines: list[dict]) -> str | None:
        if not lines:
            return None
        file_id = f"file-{len(self.files)}"
        self.files[file_id] = "".join(json.dumps(line) + "\n" for line in lines).encode()
        return file_id

    def advance(self, batch_id: str) -> dict:
        """The batch's next state: it ends on its first poll (a held one once released)."""
        batch = self.batches[batch_id]
        if batch["status"] in ("completed", "expired", "failed"):
            return batch
        plan = batch["plan"]
        if plan == "hold" and not self.released.is_set():
            batch["status"] = "in_progress"
            return batch
        if plan == "fail":
            batch["status"] = "failed"
            batch["errors"] = {
                "object": "list",
                "data": [{"code": "invalid_request", "message": "bad line", "line": 1}],
            }
            return batch
        lines = self.inputs[batch_id]
        answered = lines[: len(lines) // 2] if plan == "expire_half" else lines
        out, errors = [], []
        for i, line in enumerate(answered):
            if i == 0 and plan in ("refuse_first", "error_first"):
                status = 400 if plan == "refuse_first" else 500
                errors.append({"id": f"r{i}", "custom_id": line["custom_id"], "error": None,
                               "response": {"status_code": status, "request_id": "x",
                                            "body": {"error": {"message": f"scripted {status}"}}}})  # fmt: skip
                continue
            out.append({"id": f"r{i}", "custom_id": line["custom_id"], "error": None,
                        "response": {"status_code": 200, "request_id": "x", "body": answer(line["body"])}})  # fmt: skip
        for line in lines[len(answered) :]:
            errors.append(
                {
                    "id": "e",
                    "custom_id": line["custom_id"],
                    "response": None,
                    "error": {
                        "code": "batch_expired",
                        "message": "This request could not be executed before the completion window expired.",
                    },
                }
            )
        batch["status"] = "expired" if plan == "expire_half" else "completed"
        batch["output_file_id"], batch["error_file_id"] = self._file(out), self._file(errors)
        batch["request_counts"] = {"total": len(lines), "completed": len(out), "failed": len(errors)}
        return batch
