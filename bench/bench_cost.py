"""What a kept pair costs: the fixed-K pointwise baseline against each mode of issue 24 alone (group
judging, batch mode, adaptive K at several points) and adaptive K combined with group judging and batch
mode (`arms()`), on the same prompts, billed by a provider on loopback.

    python bench/bench_cost.py [--prompts 120] [--k 8] [--group-thinking 250]

The provider (started here, 127.0.0.1, OpenAI-compatible /v1/chat/completions, stdlib only) is the teacher
and the judge, deterministic per request:
- teacher: a prompt draws its kind from its text: `clear` (samples far apart in quality and length: a
  group separates at once), `mixed`, or `flat` (every sample alike: a group never separates); sample i's
  quality and length come from the request's seed, so sample i is the same text in every arm. The reply
  holds DeepSeek's `reasoning_content` (length - 20 tokens) and an answer that states its grade.
- judge: a reasoning GenRM (250 thinking tokens) that reads the grade back, +- 4 points of noise from its
  seed, as the structured JSON the rubric asks for; a group request (judge.mode group) gets one score per
  answer shown, each with its own noise, and --group-thinking (250) thinking tokens per answer.
- billing, as a provider bills: a token is a whitespace-separated word of the messages; the prompt tokens
  a request shares with an earlier request's prefix (64-token blocks, DeepSeek's cache unit) are billed
  as cache hits, the rest as misses, and completion tokens as output; each request also reports them in
  `usage` (`prompt_tokens_details.cached_tokens`, `prompt_cache_hit_tokens`). The ledger is the
  provider's, not the factory's own counts. USD at DeepSeek-R1's list prices (PRICES, per million).
  A batch line is billed at BATCH_FACTOR of every price (cache hits too).

Batch mode (engine.batch) goes through the factory's real batch path: the provider also serves /v1/files and
/v1/batches (a batch is answered when created, each line billed at BATCH_FACTOR; batch_poll_s 0.05), and
the bench checks that every request of a batch arm came that way.

Printed per arm: sample and judge requests, billed tokens (miss / hit / output), USD, kept pairs, USD per
kept pair, the kept pairs' mean token gap (rejected - chosen tokens) and mean quality gap (chosen -
rejected quality, 0..1), and the share of the baseline's kept pairs whose direction the arm keeps (it keeps
a pair for that prompt and, by the baseline's own S of the two samples, its chosen comes first). Then the
frontier over k_min and the stop rule against the goal of issue 24 (<= 0.4x the baseline's USD per kept pair
with both gaps >= 0.95x).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

import polars as pl  # noqa: E402

from factory import config  # noqa: E402
from factory import pairs as pair_kernel  # noqa: E402
from factory.graph import RunGraph  # noqa: E402
from factory.pairs.picks import score  # noqa: E402
from factory.pairs.terms import weights  # noqa: E402
from factory.prompts import load_prompts  # noqa: E402
from factory.run import run  # noqa: E402
from factory.rundir.store import RunStore  # noqa: E402
from tests.engines.batch_server import _multipart  # noqa: E402  (the multipart parse of the batch routes' fake)

DEMO = HERE.parent / "conf" / "demo.yaml"
# DeepSeek-R1 (deepseek-reasoner) list prices, USD per million tokens: input cache hit, cache miss, output.
PRICES = {"hit": 0.14, "miss": 0.55, "output": 2.19}
BATCH_FACTOR = 0.5  # a batch route's price, as a share of the list price (issue 24's batch mode)
CACHE_BLOCK = 64  # tokens per prefix-cache unit
JUDGE_THINKING = 250  # a reasoning GenRM's thinking tokens per judgment
GROUP_THINKING = [JUDGE_THINKING]  # per answer shown in a group request (--group-thinking)
KINDS = (
    ("clear", 0.35, 30.0, 220.0),
    ("mixed", 0.35, 12.0, 90.0),
    ("flat", 0.30, 1.0, 8.0),
)  # name, share, q sd, len sd


def unit(*parts: object) -> float:
    """A number in [0, 1) fixed by `parts`."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def normal(*parts: object) -> float:
    u1, u2 = max(unit(*parts, "a"), 1e-12), unit(*parts, "b")
    return math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2)


def prompt_kind(prompt: str) -> tuple[str, float, float, float, float]:
    """(kind, mean quality, quality sd, mean length, length sd) of a prompt, from its text."""
    u, kind = unit(prompt, "kind"), KINDS[-1]
    for entry in KINDS:
        if u < entry[1]:
            kind = entry
            break
        u -= entry[1]
    name, _, q_sd, l_sd = kind
    return name, 45 + 35 * unit(prompt, "q"), q_sd, 220 + 320 * unit(prompt, "len"), l_sd


class Provider:
    """The billing ledger and prefix cache of one provider (one arm)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: set[bytes] = set()  # hashes of every 64-token prefix billed so far
        self.ledger: list[dict] = []
        self.files: dict[str, bytes] = {}  # the batch routes (engine.batch): uploaded inputs and outputs
        self.batches: dict[str, dict] = {}

    def upload(self, data: bytes) -> dict:
        with self.lock:
            file_id = f"file-{len(self.files)}"
            self.files[file_id] = data
        return {"id": file_id, "object": "file", "bytes": len(data), "created_at": 0, "filename": "input.jsonl",
                "purpose": "batch", "status": "processed"}  # fmt: skip

    def run_batch(self, request: dict) -> dict:
        """POST /v1/batches: every line answered now (billed at BATCH_FACTOR), the batch completed."""
        lines = [json.loads(x) for x in self.files[request["input_file_id"]].decode().splitlines() if x.strip()]
        out = [
            {
                "id": f"r{i}",
                "custom_id": line["custom_id"],
                "error": None,
                "response": {
                    "status_code": 200,
                    "request_id": f"q{i}",
                    "body": complete(self, line["body"], batch=True),
                },
            }
            for i, line in enumerate(lines)
        ]
        with self.lock:
            output_id = f"file-{len(self.files)}"
            self.files[output_id] = "".join(json.dumps(line) + "\n" for line in out).encode()
            batch_id = f"batch_{len(self.batches)}"
            self.batches[batch_id] = {
                "id": batch_id,
                "object": "batch",
                "endpoint": request["endpoint"],
                "input_file_id": request["input_file_id"],
                "completion_window": request["completion_window"],
                "status": "completed",
                "created_at": int(time.time()),
                "output_file_id": output_id,
                "error_file_id": None,
                "errors": None,
                "request_counts": {"total": len(lines), "completed": len(lines), "failed": 0},
            }
            return self.batches[batch_id]

    def bill(self, route: str, words: list[str], output: int, batch: bool = False) -> dict:
        """The usage of one request: prompt tokens of a cached prefix are hits."""
        blocks = [hashlib.blake2b(" ".join(words[:n]).encode(), digest_size=16).digest()
                  for n in range(CACHE_BLOCK, len(words) + 1, CACHE_BLOCK)]  # fmt: skip
        with self.lock:
            hit = 0
            for i, block in enumerate(blocks):
                if block not in self.seen:
                    break
                hit = (i + 1) * CACHE_BLOCK
            self.seen.update(blocks)
            factor = BATCH_FACTOR if batch else 1.0
            usd = factor * ((len(words) - hit) * PRICES["miss"] + hit * PRICES["hit"] + output * PRICES["output"]) / 1e6
            nocache = factor * (len(words) * PRICES["miss"] + output * PRICES["output"]) / 1e6  # every hit as a miss
            self.ledger.append({"route": route, "miss": len(words) - hit, "hit": hit, "output": output, "usd": usd,
                                "nocache": nocache, "batch": batch})  # fmt: skip
        return {
            "prompt_tokens": len(words), "completion_tokens": output, "total_tokens": len(words) + output,
            "prompt_tokens_details": {"cached_tokens": hit}, "prompt_cache_hit_tokens": hit,
            "prompt_cache_miss_tokens": len(words) - hit,
        }  # fmt: skip

    def totals(self, route: str) -> dict[str, float]:
        rows = [r for r in self.ledger if r["route"] == route]
        return {"requests": len(rows), "batched": sum(r["batch"] for r in rows),
                **{k: sum(r[k] for r in rows) for k in ("miss", "hit", "output", "usd", "nocache")}}  # fmt: skip


def teacher_reply(messages: list[dict], seed: int) -> tuple[str, str, int]:
    """(reasoning, answer, completion tokens) of one teacher sample."""
    prompt = messages[-1]["content"]
    kind, q_mean, q_sd, l_mean, l_sd = prompt_kind(prompt)
    grade = min(100.0, max(0.0, q_mean + q_sd * normal(prompt, seed, "q")))
    length = int(max(40.0, l_mean + l_sd * normal(prompt, seed, "len")))
    answer = f"Link 3 fam, grade {grade:.0f} reply {seed} " + " ".join(["ok"] * 14)
    reasoning = " ".join(["think"] * (length - len(answer.split())))
    return reasoning, answer, length


def judge_reply(messages: list[dict], seed: int) -> tuple[str, str, int]:
    """A pointwise judgment, or (judge.mode group: the answers shown as [Answer A], ...) one per label, each
    with its own noise and GROUP_THINKING thinking tokens per answer shown (default JUDGE_THINKING: no saving
    assumed on thinking; --group-thinking sets it)."""
    text = " ".join(m["content"] for m in messages)
    parts = re.split(r"\[Answer ([A-Z]+)\]", text)
    if len(parts) > 1:  # group: label, its block, label, its block, ...
        out = {}
        for label, block in zip(parts[1::2], parts[2::2]):
            found = re.search(r"grade (\d+)", block)
            grade, noise = float(found.group(1)) if found else 0.0, 8 * unit("judge", seed, label) - 4
            out[label] = {"score": round(min(100.0, max(0.0, grade + noise)), 1), "reason": "checked the reply"}
        content, thinking = json.dumps(out), GROUP_THINKING[0] * len(out)
        return " ".join(["weigh"] * thinking), content, thinking + len(content.split())
    found = re.search(r"grade (\d+)", text)
    grade = float(found.group(1)) if found else 0.0
    noise = 8 * unit("judge", seed) - 4
    content = json.dumps({"score": round(min(100.0, max(0.0, grade + noise)), 1), "reason": "checked the reply"})
    return " ".join(["weigh"] * JUDGE_THINKING), content, JUDGE_THINKING + len(content.split())


def complete(provider: Provider, body: dict, batch: bool = False) -> dict:
    """The chat completion one request body gets, billed (at the batch rate when sent by batch)."""
    messages, seed = body["messages"], int(body.get("seed") or 0)
    judge = body.get("response_format") is not None
    reasoning, content, output = (judge_reply if judge else teacher_reply)(messages, seed)
    words = " ".join(f"<{m['role']}> {m['content']}" for m in messages).split()
    usage = provider.bill("judge" if judge else "teacher", words, output, batch=batch)
    usage["completion_tokens_details"] = {"reasoning_tokens": len(reasoning.split())}
    message = {"role": "assistant", "content": content, "reasoning_content": reasoning}
    return {"id": f"r{seed}", "object": "chat.completion", "created": 0, "model": body.get("model", "r1"),
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}], "usage": usage}  # fmt: skip


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        provider: Provider = self.server.provider  # type: ignore[attr-defined]
        if self.path.endswith("/chat/completions"):
            return self._send(200, complete(provider, json.loads(raw or b"{}")))
        if self.path.endswith("/files"):  # a batch's input file (multipart: purpose, file)
            data = _multipart(self.headers["Content-Type"], raw)["file"]
            return self._send(200, provider.upload(data))
        if self.path.endswith("/batches"):  # answered at once, each line billed at the batch rate
            return self._send(200, provider.run_batch(json.loads(raw)))
        self._send(404, {"error": {"message": f"no route {self.path}"}})

    def do_GET(self) -> None:  # noqa: N802
        provider: Provider = self.server.provider  # type: ignore[attr-defined]
        path = self.path.split("?")[0]
        if path.endswith("/batches"):
            with provider.lock:
                newest = list(reversed(provider.batches.values()))[:100]
            return self._send(200, {"object": "list", "data": newest, "has_more": False})
        found = re.search(r"/batches/([\w-]+)$", path)
        if found and found.group(1) in provider.batches:
            return self._send(200, provider.batches[found.group(1)])
        found = re.search(r"/files/([\w-]+)/content$", path)
        if found and found.group(1) in provider.files:
            data = provider.files[found.group(1)]
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self._send(404, {"error": {"message": f"no route {self.path}"}})

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class Server(ThreadingHTTPServer):
    request_queue_size = 256
    daemon_threads = True


def serve() -> tuple[Server, Provider]:
    provider = Provider()
    server = Server(("127.0.0.1", 0), Handler)
    server.provider = provider  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, provider


def write_prompts(path: Path, n: int) -> Path:
    """n prompts in the demo's shape: its product rows, each viewer's question its own."""
    base = [
        json.loads(line)
        for line in (HERE.parent / "conf" / "data" / "demo_prompts.jsonl").read_text().splitlines()
        if line.strip()
    ]
    rows = [
        {**base[i % len(base)], "id": f"bench-{i:05d}", "question": f"{base[i % len(base)]['question']} (viewer {i})"}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


# group (listwise) judging: one request per prompt's group; room for its thinking (JUDGE_THINKING per answer)
GROUP = ["judge.mode=group", "judge.sampling.max_tokens=4096"]
BATCH = [
    f"{e}.engine.{o}" for e in ("sampler", "judge") for o in ("batch=true", "batch_poll_s=0.05")
]  # the batch routes
ADAPTIVE_POINTS = [(2, None, None), (2, None, 0.5), (3, 0.85, None), (3, 0.85, 0.5), (2, 0.85, 0.3), (4, 0.85, 0.3)]


def adaptive(k_min: int, stop: float | None, give_up: float | None) -> tuple[str, list[str]]:
    rule = [] if stop is None else [f"sampler.adaptive.drop_ratio={stop}"]
    rule += [] if give_up is None else [f"sampler.adaptive.give_up={give_up}"]
    name = f"adaptive k_min={k_min} stop={'pairs' if stop is None else f'q{stop:g}'}" + (
        f" give_up={give_up:g}" if give_up else ""
    )
    return name, ["sampler.adaptive.enabled=true", f"sampler.adaptive.k_min={k_min}", "sampler.adaptive.step=2", *rule]


# Each arm: a name and its overrides on top of the common ones: the baseline, each mode alone, and each
# adaptive point alone and combined with group judging and batch mode (cached prefix tokens are billed by
# the provider in every arm: the `USD no cache` column prices each arm as if no prefix were cached).
def arms(k: int) -> list[tuple[str, list[str]]]:
    out = [("fixed K=%d (baseline)" % k, []), ("group judging", GROUP), ("batch", BATCH)]
    points = [adaptive(*point) for point in ADAPTIVE_POINTS]
    out += points
    out += [(f"{name} + group + batch", [*overrides, *GROUP, *BATCH]) for name, overrides in points]
    return out


def modes(overrides: list[str]) -> set[str]:
    """The modes an arm's overrides turn on."""
    return {
        m
        for m, on in (("adaptive", "sampler.adaptive.enabled=true"), ("group", GROUP[0]), ("batch", BATCH[0]))
        if on in overrides
    }


def common(url: str, prompts: Path, out: str, k: int) -> list[str]:
    engine = ["kind=openai", f"base_url={url}/v1", "model=deepseek-reasoner", "parallel=16", "batch_size=16",
              "max_model_len=16384", "cpus_per_replica=0.5"]  # fmt: skip
    return [
        f"output_dir={out}", f"prompts.path={prompts}", "prompts.limit=null", f"sampler.k={k}",
        *[f"sampler.engine.{e}" for e in engine], *[f"judge.engine.{e}" for e in engine],
        "sampler.sampling.max_tokens=2048", "sampler.sampling.stop=[]", "judge.sampling.max_tokens=1024",
        "judge.max_reasks=0", "progress_interval_s=600",
    ]  # fmt: skip


def run_arm(name: str, overrides: list[str], prompts: Path, k: int) -> dict:
    server, provider = serve()
    out = tempfile.mkdtemp(prefix="bench-cost-")
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        cfg = config.load(DEMO, [*common(url, prompts, out, k), *overrides])
        t0 = time.perf_counter()
        manifest = run(cfg, backend="local", command=f"bench_cost {name}")
        seconds = time.perf_counter() - t0
    finally:
        server.shutdown()
        server.server_close()
    store = RunStore(out)
    teacher, judge = provider.totals("teacher"), provider.totals("judge")
    stats = manifest["pairs"]
    return {
        "name": name,
        "cfg": cfg,
        "store": store,
        "seconds": seconds,
        "sample_requests": teacher["requests"],
        "judge_requests": judge["requests"],
        "miss": teacher["miss"] + judge["miss"],
        "hit": teacher["hit"] + judge["hit"],
        "output": teacher["output"] + judge["output"],
        "usd": teacher["usd"] + judge["usd"],
        "nocache": teacher["nocache"] + judge["nocache"],
        "batched": teacher["batched"] + judge["batched"],
        "modes": modes(overrides),
        "kept": manifest["counts"]["pairs_kept"],
        "token_gap": stats["mean_token_gap"],
        "quality_gap": stats["mean_quality_gap"],
        "pairs": store.read("pairs").select("prompt_id", "chosen_idx", "rejected_idx"),
        "adaptive": manifest.get("adaptive"),
        "unpaired": unpaired_share(store),
    }


def unpaired_share(store: RunStore) -> float:
    """The share of the stored samples that belong to groups with no kept pair (paid for, no pair)."""
    samples = store.read("samples").select("prompt_id")
    kept = store.read("pairs").select("prompt_id").unique()
    return samples.join(kept, on="prompt_id", how="anti").height / samples.height if samples.height else 0.0


def baseline_scores(arm: dict) -> dict[tuple[str, int], float]:
    """S of every valid sample of the baseline, as its own pair build scores it."""
    cfg, store = arm["cfg"], arm["store"]
    prompts = store.read("prompts")
    scored = pair_kernel.attach(RunGraph(cfg).scored(store, prompts).scored, prompts, cfg.pairs)
    prepared = pair_kernel.prepare(scored, cfg.pairs, cfg.judge.scale_max)
    s = score(prepared, weights(cfg.pairs))
    return dict(zip(zip(prepared.valid["prompt_id"].to_list(), prepared.valid["sample_idx"].to_list()), s.tolist()))


def direction_share(base: dict, arm: dict, s: dict[tuple[str, int], float]) -> float:
    kept = arm["pairs"].join(base["pairs"].select("prompt_id"), on="prompt_id", how="semi")
    agree = sum(1 for p, c, r in kept.iter_rows() if (p, c) in s and (p, r) in s and s[(p, c)] > s[(p, r)])
    return agree / base["pairs"].height if base["pairs"].height else float("nan")


def tokens(n: float) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=120)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument(
        "--group-thinking",
        type=int,
        default=JUDGE_THINKING,
        help="the group judge's thinking tokens per answer shown (pointwise: %(default)s a judgment)",
    )
    args = parser.parse_args()
    GROUP_THINKING[0] = args.group_thinking
    prompts = write_prompts(Path(tempfile.mkdtemp(prefix="bench-cost-prompts-")) / "prompts.jsonl", args.prompts)
    kinds = pl.Series([prompt_kind(m)[0] for m in _user_texts(prompts)]).value_counts(sort=True)
    print(
        f"{args.prompts} prompts ({', '.join(f'{k} {n}' for k, n in kinds.iter_rows())}), K={args.k}; "
        f"USD at DeepSeek-R1 list prices (per M: miss ${PRICES['miss']}, hit ${PRICES['hit']}, output "
        f"${PRICES['output']})\n"
    )
    results = []
    for name, overrides in arms(args.k):
        results.append(run_arm(name, overrides, prompts, args.k))
        r = results[-1]
        print(f"  ran {name}: {r['seconds']:.1f}s", file=sys.stderr)
    base = results[0]
    s = baseline_scores(base)
    headers = [
        "arm",
        "sample req",
        "judge req",
        "billed miss/hit/out",
        "USD",
        "USD no cache",
        "kept",
        "USD/kept",
        "x base",
        "token gap",
        "x",
        "quality gap",
        "x",
        "base dir kept",
        "samples w/o pair",
    ]
    rows = []
    for r in results:
        r["per_pair"] = r["usd"] / r["kept"] if r["kept"] else float("inf")
        r["cost_x"] = r["per_pair"] / base["per_pair"] if "per_pair" in base else 1.0
        r["token_x"] = (r["token_gap"] or 0) / base["token_gap"]
        r["quality_x"] = (r["quality_gap"] or 0) / base["quality_gap"]
        r["direction"] = direction_share(base, r, s)
        rows.append(
            [
                r["name"],
                str(r["sample_requests"]),
                str(r["judge_requests"]),
                f"{tokens(r['miss'])}/{tokens(r['hit'])}/{tokens(r['output'])}",
                f"${r['usd']:.3f}",
                f"${r['nocache']:.3f}",
                str(r["kept"]),
                f"${r['per_pair']:.5f}",
                f"{r['cost_x']:.2f}",
                f"{r['token_gap']:.0f}",
                f"{r['token_x']:.2f}",
                f"{r['quality_gap']:.3f}",
                f"{r['quality_x']:.2f}",
                f"{r['direction']:.0%}",
                f"{r['unpaired']:.0%}",
            ]
        )
    print(markdown(headers, rows))
    for r in results:  # the batch arms were served by the batch routes, the others by the synchronous one
        routed = (
            r["batched"] == r["sample_requests"] + r["judge_requests"] if "batch" in r["modes"] else not r["batched"]
        )
        assert routed, f"{r['name']}: {r['batched']} of {r['sample_requests'] + r['judge_requests']} requests by batch"
    shares(results, base)
    frontier(results[1:], base)


def shares(results: list[dict], base: dict) -> None:
    """Each combined arm's saving over its modes: each mode's factor alone (USD per kept pair, x the baseline;
    adaptive: the same point alone) and its share of their product's log-saving (the factors multiply where
    the modes are independent; the product against the measured combined factor says how far they are)."""
    by_name = {r["name"]: r for r in results}
    alone = {m: next(r for r in results if r["modes"] == {m}) for m in ("group", "batch")}
    print(
        "\neach mode's own share of the saving (USD per kept pair x the baseline; cached prefix tokens: billed by "
        f"the provider in every arm, the baseline at {base['usd'] / base['nocache']:.2f}x its no-cache price)"
    )
    for r in results:
        if r["modes"] != {"adaptive", "group", "batch"}:
            continue
        own = {
            "adaptive": by_name[r["name"].removesuffix(" + group + batch")]["cost_x"],
            **{m: a["cost_x"] for m, a in alone.items()},
        }
        product = math.prod(own.values())
        parts = ", ".join(f"{m} {x:.2f}x ({math.log(x) / math.log(product):.0%})" for m, x in own.items())
        print(
            f"  {r['name']}: {r['cost_x']:.2f}x measured; alone: {parts}; product {product:.2f}x; "
            f"cache {r['usd'] / r['nocache']:.2f}x of its no-cache price"
        )


def frontier(results: list[dict], base: dict) -> None:
    """Every arm by USD per kept pair, the points no other beats on cost and both gaps marked."""
    print(
        "\nfrontier (USD per kept pair against the gaps, x the baseline; goal: combined <= 0.40 with both gaps >= 0.95)"
    )
    ranked = sorted(results, key=lambda r: r["cost_x"])
    best = None
    for r in ranked:
        dominated = any(
            o is not r
            and o["cost_x"] <= r["cost_x"]
            and o["token_x"] >= r["token_x"]
            and o["quality_x"] >= r["quality_x"]
            and (o["cost_x"], o["token_x"], o["quality_x"]) != (r["cost_x"], r["token_x"], r["quality_x"])
            for o in results
        )
        gaps_ok = r["token_x"] >= 0.95 and r["quality_x"] >= 0.95
        if gaps_ok and best is None:
            best = r
        mark = ("goal " if gaps_ok and r["cost_x"] <= 0.4 else "gaps ok " if gaps_ok else "") + (
            "" if dominated else "(frontier)"
        )
        state = r["adaptive"]["groups_by_samples"] if r["adaptive"] else {}
        print(f"  {r['cost_x']:.2f}x cost  token gap {r['token_x']:.2f}x  quality gap {r['quality_x']:.2f}x  "
              f"{r['name']:<58} samples per group {state or 'all k'}  {mark}")  # fmt: skip
    if best is not None and best["cost_x"] <= 0.4:
        print(f"goal met by {best['name']}: {best['cost_x']:.2f}x the baseline's USD per kept pair")
        return
    cheapest = ranked[0]
    print(
        f"no arm reaches 0.40x with both gaps >= 0.95x (cheapest: {cheapest['name']} at "
        f"{cheapest['cost_x']:.2f}x, gaps {cheapest['token_x']:.2f}x / {cheapest['quality_x']:.2f}x"
        + (f"; cheapest keeping the gaps: {best['name']} at {best['cost_x']:.2f}x" if best else "")
        + "). Why:"
    )
    best = next((r for r in ranked if r["adaptive"] and r["token_x"] >= 0.95 and r["quality_x"] >= 0.95), None)
    if best is not None:
        full = best["adaptive"]["groups_by_samples"].get(
            str(max(int(n) for n in best["adaptive"]["groups_by_samples"])), 0
        )
        groups = sum(best["adaptive"]["groups_by_samples"].values())
        print(
            f"  - a kept pair's gaps come from its group's extremes: a group stopped at k_min samples gives a "
            f"narrower pair than the best of k, so the rule that keeps the gaps grows {full} of {groups} groups to k"
        )
    print(
        f"  - {base['unpaired']:.0%} of the baseline's samples are in groups that keep no pair (groups whose samples "
        "never separate); an undecided group grows to k, so an arm pays for them in full unless "
        "sampler.adaptive.give_up stops them"
    )
    print(
        f"  - group judging saves the judge's prompt tokens (the rubric and prompt once per group, not once per "
        f"sample), and thinking only as far as --group-thinking ({GROUP_THINKING[0]} per answer shown) is under a "
        f"pointwise judgment's {JUDGE_THINKING}; under adaptive K a group is judged again whole at each step it "
        "grows to; batch halves every price"
    )


def _user_texts(prompts: Path) -> list[str]:
    cfg = config.load(DEMO, [f"prompts.path={prompts}", "prompts.limit=null"])
    frame, _ = load_prompts(cfg.prompts)
    return [m[-1]["content"] for m in frame["messages"].to_list()]


def markdown(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


if __name__ == "__main__":
    main()
