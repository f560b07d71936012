"""The driver at the users' scale: `factory run` against a fast loopback API. Prints figures; asserts nothing.

    .venv/bin/python bench/bench_scale.py                    # 1,500 prompts x K=4 (a few minutes)
    .venv/bin/python bench/bench_scale.py --full             # 15,000 prompts x K=4 (the users' scale)
    .venv/bin/python bench/bench_scale.py --code /tmp/main   # the same bench on another checkout's factory

A fast OpenAI-compatible API (aiohttp, its own process, so its CPU is not the driver's) answers every
request at once: the sampler's with `--reasoning-chars` of reasoning (reasoning_content) and a short
answer, the judge's with a JSON score. `factory run` (Ray backend, as users run it) samples and judges
the prompts, builds pairs and writes report/index.html. Printed:
  driver CPU per request   user+system CPU of the driver process (Ray's core worker threads included)
                           during the run, over the requests it made (samples + judgments)
  flushes                  parts written per table (judgments as often as samples since issue 22)
  flush cost at N parts    one TableWriter flush (8 rows of --reasoning-chars each) with N small parts
                           open (measured apart, on memory://, best of 5)
  page bytes               report/index.html as written, and the page's trim note when there is one
  peak RSS                 VmHWM of the driver
  leftover parts           part files per table once the run ended (1 each after the end-of-run merge)
  kill arm (--kill-at)     a second run SIGKILLed half way (its Ray too), then resumed: the part files
                           the kill left and after the resume, and the requests paid twice
`--code PATH` imports factory from PATH (e.g. `git archive main | tar -x -C /tmp/main`): the before
arm of a before/after comparison, run one after the other on the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def serve(port_file: str, reasoning_chars: int) -> None:
    """The loopback API: POST /v1/chat/completions, answered at once."""
    from aiohttp import web

    step = "Let me think about this step by step. "
    reasoning = (step * (reasoning_chars // len(step) + 1))[:reasoning_chars]
    reasoning_tokens = max(1, reasoning_chars // 4)

    answered = {"teacher": 0, "judge": 0}

    async def count(request: web.Request) -> web.Response:
        return web.json_response(answered)

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        seed = int(body.get("seed") or 0)
        model = body.get("model") or "teacher"
        answered[model] = answered.get(model, 0) + 1
        if body.get("model") == "judge":
            message = {"role": "assistant", "content": json.dumps({"score": seed * 37 % 101, "reason": "fine"})}
            usage = {"prompt_tokens": 300, "completion_tokens": 12, "total_tokens": 312}
        else:
            words = 3 + seed % 9
            answer = " ".join(["word"] * words)
            message = {"role": "assistant", "content": answer, "reasoning_content": reasoning}
            tokens = reasoning_tokens + words
            usage = {"prompt_tokens": 60, "completion_tokens": tokens, "total_tokens": 60 + tokens,
                     "completion_tokens_details": {"reasoning_tokens": reasoning_tokens}}  # fmt: skip
        reply = {"id": "x", "object": "chat.completion", "created": 0, "model": body.get("model"),
                 "choices": [{"index": 0, "message": message, "finish_reason": "stop"}], "usage": usage}  # fmt: skip
        return web.json_response(reply)

    async def main() -> None:
        app = web.Application(client_max_size=2**26)
        app.router.add_post("/v1/chat/completions", chat)
        app.router.add_get("/count", count)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        Path(port_file).write_text(str(port))
        while True:
            await asyncio.sleep(3600)

    import asyncio

    asyncio.run(main())


def write_inputs(folder: Path, prompts: int) -> tuple[Path, Path]:
    path = folder / "prompts.jsonl"
    with path.open("w") as handle:
        for i in range(prompts):
            row = {"id": f"p{i:06d}", "product_info": {"name": f"thing {i}", "price": f"{10 + i % 90} yuan"},
                   "history": [], "question": f"how long does thing {i} last?"}  # fmt: skip
            handle.write(json.dumps(row) + "\n")
    rubric = folder / "rubric.txt"
    rubric.write_text('Rate {answer} from 0 to {scale_max}. Reply as JSON: {{"score": n, "reason": "..."}}.')
    return path, rubric


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def flush_cost(open_parts: list[int], reasoning_chars: int) -> dict[int, float]:
    """ms of one flush with N small parts open (the open part never rolls here)."""
    import uuid

    from factory.config import StoreConfig
    from factory.executor.writer import TableWriter
    from factory.rundir.schemas import SAMPLES
    from factory.rundir.store import RunStore

    row = {name: None for name in SAMPLES.names}
    row.update(prompt_id="p", sample_idx=0, reasoning="r" * reasoning_chars, answer="word word", completion_tokens=900,
               reasoning_tokens=890, answer_tokens=10, finish_reason="stop", created_at=0.0)  # fmt: skip
    batch = [dict(row, sample_idx=i) for i in range(8)]
    out = {}
    writer = TableWriter(RunStore(f"memory://bench-{uuid.uuid4().hex}"), "samples", SAMPLES,
                         StoreConfig(part_mb=1e9, part_s=1e9))  # fmt: skip
    writer.add(batch)
    writer.flush()
    path, table = writer.open[0]
    for n in sorted(open_parts):
        while len(writer.open) < n:  # the open part of n flushes, without paying n flushes to build it
            writer.open.append((path, table))
            if hasattr(writer, "open_bytes"):
                writer.open_bytes += table.nbytes
        times = []
        for _ in range(5):
            writer.add(batch)
            start = time.perf_counter()
            writer.flush()
            times.append(time.perf_counter() - start)
            writer.open.pop()  # keep N open
        out[n] = min(times) * 1000
    return out


def answered(base_url: str) -> dict[str, int]:
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(base_url.removesuffix("/v1") + "/count", timeout=10) as reply:
        return json.loads(reply.read())


def part_files(out: Path) -> dict[str, int]:
    tables = [name for name in ("samples", "judgments") if (out / name).is_dir()]
    return {name: len(list((out / name).glob("*.parquet"))) for name in tables}


RUN_SCRIPT = (
    "import json, sys\n"
    "sys.path[:0] = [sys.argv[1]]\n"
    "from factory import config\n"
    "from factory.run import run\n"
    "run(config.load(None, json.loads(sys.argv[2])), command='bench_scale kill arm')\n"
)


def kill_arm(code: str, overrides: list[str], base_url: str, out: Path, total: int, kill_at: float) -> None:
    """`factory run` in its own process group, SIGKILLed (Ray's processes too) once the API has answered
    `kill_at` of the sample requests; then the same run again to the end. Printed: the part files the
    kill left, those after the resumed run, and the requests paid twice (answered minus stored keys)."""
    import signal

    import polars as pl

    overrides = [o for o in overrides if not o.startswith("output_dir=")] + [f"output_dir={out}"]
    before = answered(base_url)
    killed = subprocess.Popen([sys.executable, "-c", RUN_SCRIPT, code, json.dumps(overrides)], start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    while answered(base_url)["teacher"] - before["teacher"] < kill_at * total and killed.poll() is None:
        time.sleep(0.05)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    time.sleep(1.0)
    left = part_files(out)
    resumed = subprocess.run([sys.executable, "-c", RUN_SCRIPT, code, json.dumps(overrides)], capture_output=True,
                             text=True, check=False)  # fmt: skip
    if resumed.returncode != 0:
        print(resumed.stderr[-2000:])
        return
    after = answered(base_url)
    samples = pl.read_parquet(out / "samples" / "*.parquet").select("prompt_id", "sample_idx").unique().height
    judgments = (
        pl.read_parquet(out / "judgments" / "*.parquet").select("prompt_id", "sample_idx", "vote").unique().height
    )
    paid = {m: after[m] - before.get(m, 0) for m in after}
    print(f"\nkill -9 at {kill_at:.0%} of the samples, then the same run again:")
    print(f"  part files the kill left   {left}")
    print(f"  part files after resuming  {part_files(out)}")
    print(
        f"  requests paid twice        samples {paid['teacher'] - samples:,}, judgments {paid['judge'] - judgments:,} "
        f"(answered {paid}, stored keys: samples {samples:,}, judgments {judgments:,})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=1500)
    parser.add_argument("--full", action="store_true", help="15,000 prompts (the users' scale)")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--reasoning-chars", type=int, default=3600)
    parser.add_argument("--open-parts", default="250,1000,2000", help="N of the flush-cost figure")
    parser.add_argument("--code", default=str(HERE.parent), help="the checkout whose factory is measured")
    parser.add_argument("--keep", help="run directory to keep (default: a temporary one)")
    parser.add_argument(
        "--kill-at",
        type=float,
        default=0.5,
        help="the kill arm: SIGKILL a second run at this share of its samples, then resume (0 = skip)",
    )
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.reasoning_chars)
        return
    prompts_n = 15_000 if args.full else args.prompts
    code = str(Path(args.code).resolve())
    sys.path[:0] = [code]
    os.environ["PYTHONPATH"] = os.pathsep.join([code, *filter(None, [os.environ.get("PYTHONPATH")])])  # Ray workers

    from factory import config
    from factory.run import run

    folder = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    out = Path(args.keep) if args.keep else folder / "run"
    prompts_path, rubric = write_inputs(folder, prompts_n)
    port_file = folder / "port"
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port_file),
                               "--reasoning-chars", str(args.reasoning_chars)])  # fmt: skip
    try:
        while not port_file.exists() or not port_file.read_text():
            time.sleep(0.05)
            if server.poll() is not None:
                raise SystemExit("the loopback API did not start")
        base_url = f"http://127.0.0.1:{port_file.read_text()}/v1"
        engine = ["kind=openai", f"base_url={base_url}", "parallel=64", "batch_size=32", "cpus_per_replica=0.5",
                  "max_model_len=32768"]  # fmt: skip
        overrides = [
            f"output_dir={out}", f"prompts.path={prompts_path}", f"sampler.k={args.k}", f"judge.rubric_file={rubric}",
            "sampler.engine.model=teacher", "judge.engine.model=judge", "sampler.sampling.max_tokens=8192",
            "progress_interval_s=30",
            *[f"sampler.engine.{e}" for e in engine], *[f"judge.engine.{e}" for e in engine],
        ]  # fmt: skip
        cfg = config.load(None, overrides)
        print(f"factory from {code}; {prompts_n:,} prompts x K={args.k}, {args.reasoning_chars:,}-character "
              f"reasoning; loopback API at {base_url}", flush=True)  # fmt: skip
        cpu0, wall0 = cpu_s(), time.perf_counter()
        result = run(cfg, command="bench_scale")
        cpu, wall = cpu_s() - cpu0, time.perf_counter() - wall0
        if args.kill_at > 0:
            kill_arm(code, overrides, base_url, folder / "killed", prompts_n * args.k, args.kill_at)
    finally:
        server.terminate()
        server.wait(timeout=10)
    requests = sum(v for v in result["requests"].values() if isinstance(v, int))
    metrics = json.loads((out / "metrics.json").read_text())
    page = out / "report" / "index.html"
    html = page.read_text() if page.exists() else ""
    trimmed = html.split('<p class="warn">', 1)[1].split("</p>", 1)[0] if '<p class="warn">' in html else "-"
    parts = part_files(out)
    flushes = {name: s.get("parts_written") for name, s in metrics["stages"].items()}
    costs = flush_cost([int(n) for n in args.open_parts.split(",")], args.reasoning_chars)

    print(f"\nrequests                 {requests:,} ({result['requests']})")
    print(f"wall                     {wall:.1f} s ({requests / wall:.0f} requests/s)")
    print(f"driver CPU               {cpu:.1f} s = {1000 * cpu / max(requests, 1):.2f} ms per request")
    print(f"flushes (parts written)  {flushes}")
    print("flush cost               " + ", ".join(f"{ms:.2f} ms at {n:,} open parts" for n, ms in costs.items()))
    print(
        f"page bytes               {page.stat().st_size if page.exists() else 0:,} "
        f"({page.stat().st_size / 2**20 if page.exists() else 0:.1f} MiB)"
    )
    print(f"page trim note           {trimmed}")
    print(f"peak RSS (driver)        {peak_rss_mib():,.0f} MiB")
    print(f"parts after the run      {parts}")
    print(
        f"machine load (1 min)     {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (shared: figures are a loaded "
        "machine's)"
    )


if __name__ == "__main__":
    main()
