"""`factory plan CONFIG` (= `factory run CONFIG --dry-run`): what a run would request and cost, sending nothing.

Per stage of the graph, from what the run directory already holds (no engine is built, no model loaded):

    requests        the stage's own planning, `stage.plan(store)`: exact for a stage fed by stored rows (the
                    sampler; the judge for samples already stored). Under sampler.adaptive the sampler's later
                    steps are estimated from the stored decisions (where the stored groups stopped; every
                    waiting group at sampler.k, an upper bound, when none is stored) and marked "~". Work that
                    comes from rows not made yet (the judge of samples still to sample) is estimated: upstream
                    requests x the observed share of stored samples that can be judged x votes, and marked
                    "~".
    prompt tokens   the rendered requests counted with the engine's tokenizer where one is at hand without a
                    model (`engine.tokenizer`: a tokenizer.json, or `server` for a running server's /tokenize;
                    a vLLM model folder's tokenizer.json); else estimated from characters: at the chars/token
                    ratio observed on stored samples, else ~4 characters a token (1.5 for CJK).
    completion      the mean of the stored rows of this fingerprint x requests, else max_tokens (an upper bound).
    USD             at cost.<stage>.input_usd_per_m / output_usd_per_m.
    GPU-h, wall     at cost.<stage>.tokens_per_s per replica (else the run's observed tokens/s in metrics.json),
                    replicas and GPUs per replica of the engine; stages on one pool add up, pools overlap.
    pairs.target    prompt rows needed at the survival rate of the last run (pairs kept / prompt rows in its
                    manifest), else assumed: target / (1 - drop_ratio) + 20%; the plan is made for that many.

The plan is printed and written to OUTPUT_DIR/plan.json (the folder is made when it does not exist yet): the
plan of the run the directory holds, or of its first run. A what-if plan, of a config that differs from the
one the directory's manifest records (a larger sampler.k, other prices, another judge), is written to
OUTPUT_DIR/plan.whatif.json instead, with the differing keys: plan.json stays the run's.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Callable

import polars as pl

from factory.config import EngineConfig, RunConfig, StageCostConfig
from factory.executor.budget import priced, tokens_text, unpriced_paid, usd, usd_text
from factory.rundir.guard import check_run_dir
from factory.rundir.schemas import JUDGMENTS, REWARDS, SAMPLES
from factory.stages.sample import SampleStage
from factory.rundir.store import RunStore

COUNT_AT_MOST = 512  # requests rendered and counted per stage; the rest extrapolated from their mean
TEMPLATE_TOKENS_PER_MESSAGE = 5  # chat template tokens around each message (role markers, separators)


# -- counting prompt tokens ----------------------------------------------------------------------
def tokenizer_counter(engine: EngineConfig) -> tuple[Callable[[str], int] | None, str]:
    """(count(text) -> tokens, how) with a tokenizer that needs no model loaded, or (None, why not)."""
    from factory.engines import kind_of

    return kind_of(engine).token_counter(engine)


def chars_tokens(text: str) -> float:
    """Tokens guessed from characters: ~4 a token for ASCII, ~1.5 for other scripts (CJK)."""
    ascii_chars = sum(1 for c in text if ord(c) < 128)
    return ascii_chars / 4 + (len(text) - ascii_chars) / 1.5


def _message_chars(messages: list[dict]) -> int:
    return sum(len(m.get("content") or "") for m in messages)


def _spread(frame: pl.DataFrame, n: int) -> pl.DataFrame:
    """At most n rows, evenly spread over the frame (so a sample of a long plan covers all its prompts)."""
    if frame.height <= n:
        return frame
    step = frame.height / n
    return frame[[int(i * step) for i in range(n)]]


# -- what is stored --------------------------------------------------------------------------------
def _stored_samples(store: RunStore, fp: str) -> pl.DataFrame | None:
    cols = [
        "prompt_id",
        "sample_idx",
        "sampler_fp",
        "error",
        "prompt_tokens",
        "completion_tokens",
        "answer_tokens",
        "reasoning_tokens",
        "cached_tokens",
    ]
    stored = store.read("samples", SAMPLES, columns=cols)
    return None if stored is None else stored.filter(pl.col("sampler_fp") == fp)


def _stored_judgments(store: RunStore, fp: str) -> pl.DataFrame | None:
    columns = ["prompt_id", "judge_fp", "attempts", "prompt_tokens", "completion_tokens", "cached_tokens"]
    stored = store.read("judgments", JUDGMENTS, columns=columns)
    return None if stored is None else stored.filter(pl.col("judge_fp") == fp)


def _stored_rewards(store: RunStore, fp: str) -> pl.DataFrame | None:
    """A reward model's stored rows, with completion_tokens 0 (a score request generates nothing)."""
    stored = store.read("rewards", REWARDS, columns=["rm_fp", "attempts", "prompt_tokens"])
    if stored is None:
        return None
    return stored.filter(pl.col("rm_fp") == fp).with_columns(pl.lit(0, pl.Int64).alias("completion_tokens"))


def _mean(series: pl.Series) -> float | None:
    series = series.drop_nulls()
    return float(series.mean()) if series.len() else None  # type: ignore[arg-type]


# -- one stage -------------------------------------------------------------------------------------
def _estimated_requests(stage: Any, store: RunStore, upstream: dict[str, Any] | None) -> tuple[int, list[str]]:
    """Requests that rows not stored yet will feed `stage`: upstream requests x judgeable share x votes."""
    if upstream is None or not upstream["requests"]:
        return 0, []
    fanout = getattr(stage, "fanout", 1)
    up = _stored_samples(store, upstream["fingerprint"])
    if "share" in upstream:
        share, how = upstream["share"]
    elif up is not None and up.height:
        usable = up.filter(pl.col("error").is_null() & (pl.col("answer_tokens").fill_null(0) > 0)).height
        share, how = usable / up.height, f"observed on {up.height} stored samples"
    else:
        share, how = 1.0, "assumed, no sample stored yet"
    passing, passing_how = _passing_share(stage, store, up)
    groups = getattr(stage, "group_requests", None)
    if groups is not None:  # judge.mode group: one request per prompt the upstream adds samples to, per order
        estimated, why = groups(upstream["_work"])
        return estimated, [f"{estimated} of its requests are estimated: {why}"]
    estimated = round(upstream["requests"] * share * passing * fanout)
    note = (
        f"{estimated} of its requests are estimated: {upstream['requests']} {upstream['stage']} requests x "
        f"{share:.0%} judgeable ({how}){passing_how} x {fanout} vote(s)"
    )
    return estimated, [note]


def _passing_share(stage: Any, store: RunStore, up: pl.DataFrame | None) -> tuple[float, str]:
    """The share of usable samples that pass the pair filters before judging (pairs.filter_before_judge),
    observed on the stored samples of at most PASSING_GROUPS prompts; 1 without a prefilter."""
    prefilter = getattr(stage, "prefilter", None)
    if prefilter is None or up is None or not up.height:
        return 1.0, ""
    from factory.stages.scored import judgeable, prefiltered, sample_text

    ids = _spread(up.select("prompt_id").unique(maintain_order=True), PASSING_GROUPS)
    keys = up.join(ids, on="prompt_id", how="semi").select("prompt_id", "sample_idx", "sampler_fp")
    text = judgeable(sample_text(store, keys))  # a share of usable text: any prompt text will do
    if not text.height:
        return 1.0, ""
    passed = prefiltered(text, prefilter)["exclusion"].is_null().sum()
    share = passed / text.height
    return share, f" x {share:.0%} passing the pair filters before judging (observed on {text.height})"


PASSING_GROUPS = 500  # prompts whose stored samples' text the pass-share estimate reads


def _prompt_tokens(
    stage: Any, store: RunStore, work: pl.DataFrame, estimated: int, upstream: dict[str, Any] | None, stored: Any
) -> tuple[float, str, list[str], float | None]:
    """(prompt tokens of every planned request, how they were had, notes, prompt tokens of their prefixes): the
    rendered requests (at most COUNT_AT_MOST of them, the rest extrapolated) counted or estimated; an estimated
    judge request is its rubric and prompt rendered around an answer of the upstream's expected length. The
    prefix of a judge request is the request rendered with an empty answer (its rubric and prompt, what the
    requests of one prompt share); None for a sample request (all of it is shared by its prompt's K requests)."""
    count, count_how = tokenizer_counter(stage.engine)
    ratio = _observed_ratio(stage, stored) if isinstance(stage, SampleStage) else None

    def per_request(batch: list[list[dict]]) -> tuple[float, str]:
        if not batch:
            return 0.0, ""
        overhead = TEMPLATE_TOKENS_PER_MESSAGE * sum(len(ms) for ms in batch) / len(batch) + 3
        if count is not None:
            return sum(count(m["content"] or "") for ms in batch for m in ms) / len(batch) + overhead, count_how
        if ratio is not None:  # the server's own counts of stored prompts (template included) per character
            chars = sum(_message_chars(ms) for ms in batch) / len(batch)
            return chars * ratio[0], f"est. chars x {ratio[0]:.3f} (observed, {ratio[1]} samples)"
        guess = sum(chars_tokens(m["content"] or "") for ms in batch for m in ms) / len(batch)
        return guess + overhead, "est. chars (~4/token, 1.5 CJK)"

    spread = _spread(work, COUNT_AT_MOST).to_dicts() if work.height else []
    rendered = [r["messages"] for r in stage.render(spread)] if spread else []
    exact_mean, how = per_request(rendered)
    total, notes = work.height * exact_mean, []
    judged = hasattr(stage, "judge_fp")  # a judge's requests: rubric + prompt + an answer
    prefix: float | None = None
    if judged:
        bare = [{**row, "answer": "", "reasoning": ""} for row in spread]
        prefix = work.height * per_request([r["messages"] for r in stage.render(bare)] if bare else [])[0]
    if estimated and upstream is not None:
        ids = _spread(upstream["_work"].select("prompt_id").unique(maintain_order=True), COUNT_AT_MOST)
        future = ids.with_columns(
            pl.lit(0, pl.Int64).alias("sample_idx"), pl.lit(upstream["fingerprint"]).alias("sampler_fp"),
            pl.lit(0, pl.Int64).alias("vote"), pl.lit("").alias("answer"), pl.lit("").alias("reasoning"),
        )  # fmt: skip
        future_mean, future_how = per_request([r["messages"] for r in stage.render(future.to_dicts())])
        answer = upstream["answer_tokens"] + (upstream["reasoning_tokens"] if stage.cfg.include_reasoning else 0)
        answer *= getattr(stage, "answers_per_request", 1)  # a group request shows k answers
        total += estimated * (future_mean + answer)
        if prefix is not None:
            prefix += estimated * future_mean
        how = how or future_how
        notes.append(f"estimated requests' prompts hold an answer of ~{answer:.0f} tokens ({upstream['answer_how']})")
        if "upper bound" in upstream["answer_how"]:
            how += "; the answers to judge at max_tokens (upper bound)"
    return total, how or "-", notes, prefix


def _cached_tokens(
    stage: Any, work: pl.DataFrame, requests: int, upstream: dict[str, Any] | None, stored: pl.DataFrame | None,
    prompt_tokens: float, prefix: float | None,
) -> tuple[float, str]:
    """(prompt tokens a server's prefix cache would serve, how): the share of prompt tokens the server reported
    cached on this fingerprint's stored rows, else an estimate: the requests of one prompt after its first
    share a prefix (a sample's whole prompt, K requests sent together; a judge's rubric and prompt), which a
    server that caches prefixes serves from its cache. An upper bound: a cache may be cold or evicted."""
    if hasattr(stage, "rm_fp") or not requests:
        return 0.0, "none"
    if stored is not None and stored.height and "cached_tokens" in stored.columns:
        known = stored.filter(pl.col("cached_tokens").is_not_null() & pl.col("prompt_tokens").is_not_null())
        if known.height:
            share = float(known["cached_tokens"].sum()) / max(float(known["prompt_tokens"].sum()), 1.0)
            return prompt_tokens * share, f"observed share {share:.0%} over {known.height} stored rows"
    ids = [work["prompt_id"]] if work.height else []
    if upstream is not None and upstream.get("requests") and "_work" in upstream and upstream["_work"].height:
        ids.append(upstream["_work"]["prompt_id"])
    prompts = pl.concat(ids).n_unique() if ids else 0
    repeat = max(requests - prompts, 0) / requests  # the requests after the first of their prompt
    if prefix is None:  # a sample request: its prompt is its prefix
        return prompt_tokens * repeat, "est. up to: the requests of a prompt after its first (one prefix)"
    return prefix * repeat, "est. up to: a judge request's rubric and prompt, after the first of its prompt"


def plan_stage(
    stage: Any,
    store: RunStore,
    upstream: dict[str, Any] | None,
    price: StageCostConfig | None,
    observed_tps: float | None,
) -> dict[str, Any]:
    """The plan of one stage (see the module doc); `upstream` is the plan of the stage feeding it, if any."""
    from factory.engines import engine_identity, kind_of

    sample = isinstance(stage, SampleStage)
    work = stage.plan(store)  # the stage's own planning: exact from the stored keys
    estimated, notes = _estimated_requests(stage, store, upstream)
    if sample and stage.adaptive is not None and stage.current is not None:  # later steps: from the stored decisions
        grown, how = stage.adaptive.growth_estimate(stage.current)
        estimated += grown
        notes += [f"sampler.adaptive: {how}"] if how else []
    notes += [stage.note] if getattr(stage, "note", "") else []  # e.g. the samples filtered before judging
    requests = work.height + estimated
    reward = hasattr(stage, "rm_fp")  # a reward model: prompt tokens only, no sampling
    fingerprint = stage.sampler_fp if sample else stage.rm_fp if reward else stage.judge_fp
    if sample:
        stored = _stored_samples(store, fingerprint)
    else:
        stored = _stored_rewards(store, fingerprint) if reward else _stored_judgments(store, fingerprint)
    prompt_tokens, prompt_how, more, prefix = _prompt_tokens(stage, store, work, estimated, upstream, stored)
    notes += more
    cached_tokens, cached_how = _cached_tokens(stage, work, requests, upstream, stored, prompt_tokens, prefix)

    # completion tokens: the stored rows' mean, else max_tokens as an upper bound
    done = None if stored is None else stored.filter(pl.col("error").is_null()) if sample else stored
    max_tokens = stage.sampling.max_tokens if sample else 0 if reward else stage.cfg.sampling.max_tokens
    mean_completion = _mean(done["completion_tokens"]) if done is not None and done.height else None
    if reward:
        mean_completion, completion_how = 0.0, "none (a reward model scores, it generates nothing)"
    elif mean_completion is not None:
        completion_how = f"observed mean {mean_completion:.0f} over {done.height} rows"  # type: ignore[union-attr]
    else:
        mean_completion, completion_how = float(max_tokens), f"<= max_tokens {max_tokens} (upper bound)"
    attempts = (
        _mean(stored["attempts"].cast(pl.Float64)) if not sample and stored is not None and stored.height else None
    )
    if attempts and attempts > 1:  # a judgment's completion tokens already sum its re-asks; its prompt is sent again
        prompt_tokens *= attempts
        cached_tokens *= attempts
        notes.append(f"prompt tokens x {attempts:.2f} attempts per judgment (re-asks observed)")
    completion_tokens = requests * mean_completion

    # dollars, GPU-hours and wall time
    priced_here = price is not None and priced(price)
    cost_in = usd(prompt_tokens, 0, price, cached_tokens) if priced_here else None  # type: ignore[arg-type]
    cost_out = usd(0, completion_tokens, price) if priced_here else None  # type: ignore[arg-type]
    configured = price.tokens_per_s if price is not None else None
    tps, tps_how = (configured, "cost tokens_per_s") if configured else (observed_tps, "observed, metrics.json totals")
    gpus = kind_of(stage.engine).resources(stage.engine).gpus
    plan = {
        "stage": stage.name,
        "engine": f"{stage.engine.kind}:{stage.engine.model or 'embedded'}",
        "fingerprint": fingerprint,
        "requests": requests,
        "requests_exact": work.height,
        "requests_estimated": estimated,
        "prompt_tokens": round(prompt_tokens),
        "prompt_tokens_how": prompt_how,
        "cached_tokens": round(cached_tokens),
        "cached_tokens_how": cached_how,
        "completion_tokens": round(completion_tokens),
        "completion_tokens_how": completion_how,
        "usd_input": cost_in,
        "usd_output": cost_out,
        "usd": None if cost_in is None else cost_in + (cost_out or 0.0),
        "tokens_per_s_per_replica": tps,
        "tokens_per_s_how": tps_how if tps else "unknown: set cost tokens_per_s",
        "replicas": stage.engine.replicas,
        "gpus_per_replica": gpus,
        "gpu_hours": completion_tokens / tps / 3600 * gpus if tps and gpus else None,  # replicas split it, not add
        "wall_s": completion_tokens / (tps * stage.engine.replicas) if tps else None,
        "pool": engine_identity(stage.engine),
        "unpriced_paid": bool(
            unpriced_paid([(stage.name, stage.engine, requests)], {stage.name: price} if price else {})
        ),
        "notes": notes,
    }
    if sample:  # what a judge fed by this stage will see of its answers
        answers = done if done is not None and done.height else None
        plan["answer_tokens"] = _mean(answers["answer_tokens"]) if answers is not None else float(max_tokens)
        plan["reasoning_tokens"] = _mean(answers["reasoning_tokens"]) if answers is not None else 0.0
        plan["answer_how"] = "observed mean of stored answers" if answers is not None else "max_tokens, upper bound"
        plan["_work"] = work
    return plan


def _observed_ratio(stage: SampleStage, stored: pl.DataFrame | None) -> tuple[float, int] | None:
    """(prompt tokens per character, samples) the engine reported for stored samples of this stage's prompts."""
    if stored is None:
        return None
    known = stored.filter(pl.col("prompt_tokens").is_not_null() & pl.col("prompt_id").is_in(list(stage._rows)))
    known = _spread(known, COUNT_AT_MOST)
    chars = sum(_message_chars(stage._rows[p]["messages"]) for p in known["prompt_id"])
    return (float(known["prompt_tokens"].sum()) / chars, known.height) if chars else None


def _observed_tps(store: RunStore, name: str, replicas: int) -> float | None:
    """Completion tokens/s per replica the stage decoded over every invocation of the run directory (metrics.json
    `totals`, so a rerun with nothing to do keeps it); a metrics.json written before totals were kept: its own."""
    metrics = store.read_json("metrics.json") if store.exists("metrics.json") else None
    for stages in (((metrics or {}).get("totals") or {}).get("stages"), (metrics or {}).get("stages")):
        stage = (stages or {}).get(name) or {}
        rate = stage.get("tokens_per_s")
        if rate and stage.get("completion_tokens"):
            return rate / replicas
    return None


def plan_stages(
    store: RunStore,
    stages: list,
    prices: dict[str, StageCostConfig],
    feeds: dict[str, dict] | None = None,
    price_keys: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The plan of each stage of a graph, in order (an upstream stage before the stages it feeds).
    `feeds`: stage name -> an upstream-like dict for work that arrives outside the graph (eval's imported
    answers): requests, fingerprint, _work (prompt_id), share (value, how), answer_tokens, reasoning_tokens.
    `price_keys`: stage name -> the config key of its prices (each plan's price_key)."""
    plans: dict[str, dict[str, Any]] = {}
    for stage in stages:
        upstream = plans.get(stage.upstream) if stage.upstream else (feeds or {}).get(stage.name)
        observed = _observed_tps(store, stage.name, stage.engine.replicas)
        plans[stage.name] = plan_stage(stage, store, upstream, prices.get(stage.name), observed)
        plans[stage.name]["price_key"] = (price_keys or {}).get(stage.name, f"cost.{stage.name}")
    return list(plans.values())


def totals(plans: list[dict[str, Any]]) -> dict[str, Any]:
    """Sums over the stages; wall time: stages on one pool one after the other, pools side by side."""
    pools: dict[str, float] = {}
    for p in plans:
        if p["wall_s"] is not None:
            pools[p["pool"]] = pools.get(p["pool"], 0.0) + p["wall_s"]
    known = [p["usd"] for p in plans if p["usd"] is not None]
    gpu = [p["gpu_hours"] for p in plans if p["gpu_hours"] is not None]
    return {
        "requests": sum(p["requests"] for p in plans),
        "prompt_tokens": sum(p["prompt_tokens"] for p in plans),
        "cached_tokens": sum(p.get("cached_tokens") or 0 for p in plans),
        "completion_tokens": sum(p["completion_tokens"] for p in plans),
        "usd": sum(known) if known else None,
        # stages sending requests to a per-token server with no price: the USD total leaves them out
        "usd_unpriced": [p["stage"] for p in plans if p.get("unpriced_paid")] if known else [],
        "gpu_hours": sum(gpu) if gpu else None,
        "wall_s": max(pools.values())
        if pools and all(p["wall_s"] is not None for p in plans if p["requests"])
        else None,
    }


# -- `factory plan` --------------------------------------------------------------------------------
def target_prompts(cfg: RunConfig, store: RunStore) -> tuple[int, str]:
    """(prompt rows to plan for, why) under pairs.target: where `factory run` starts (pairs.target_start:
    the survival rate stored in the run directory, else assumed)."""
    from factory.pairs import target_start

    manifest = store.read_json("manifest.json") if store.exists("manifest.json") else None
    needed, why = target_start(cfg.pairs, (manifest or {}).get("counts"))
    return max(needed, cfg.prompts.limit or 0), why


def make_plan(cfg: RunConfig) -> dict[str, Any]:
    """The plan of `factory run cfg` (see the module doc); nothing is written but plan.json."""
    from factory.graph import RunGraph
    from factory.prompts import load_prompts

    t0 = time.perf_counter()
    graph = RunGraph(cfg)
    graph.preflight(credentials=False)  # a plan sends nothing: no API key needed
    store = RunStore(cfg.output_dir, create=False)
    check_run_dir(store, "output_dir")  # plan.json is written there: the same refusal as the run's, before any work
    existed = store.exists("manifest.json") or bool(store.parts("samples"))
    target = None
    if cfg.pairs.target:
        limit, why = target_prompts(cfg, store)
        cfg = replace(cfg, prompts=replace(cfg.prompts, limit=limit))
        target = {"target": cfg.pairs.target, "prompt_rows": limit, "why": why}
    prompts, invalid = load_prompts(cfg.prompts)
    graph.check_reads(prompts)  # the run would refuse it before any request: so does its plan
    if target is not None and prompts.height + invalid.height < target["prompt_rows"]:
        target["short"] = (
            f"the prompt pool holds only {prompts.height + invalid.height} rows of the {target['prompt_rows']} needed"
        )
    fps = graph.fingerprints
    stages = graph.stages(prompts)
    plans = plan_stages(store, stages, graph.prices(), price_keys=graph.price_keys())
    whatif = differing_keys(graph.cfg, store)
    return finish(
        {
            "command": "run",
            "output_dir": store.url,
            "run_directory": "exists" if existed else "new",
            "prompts": {"valid": prompts.height, "invalid": invalid.height, "path": cfg.prompts.path},
            "target": target,
            "fingerprints": fps,
            "max_usd": cfg.cost.max_usd,
            **({"whatif": whatif} if whatif else {}),
        },
        plans,
        store,
        t0,
    )


WHATIF_PLAN = "plan.whatif.json"


def differing_keys(cfg: RunConfig, store: RunStore) -> list[str]:
    """The config keys in which `cfg` differs from the run the directory's manifest records ([] when equal, or
    when there is no run yet): output_dir aside (a run may be moved), and prompts.limit when the run drew to a
    pairs.target (its manifest records the drawn limit)."""
    from factory.config import to_dict
    from factory.rundir.secrets import redact

    manifest = store.read_json("manifest.json") if store.exists("manifest.json") else None
    stored = (manifest or {}).get("config")
    if not isinstance(stored, dict) or (manifest or {}).get("command") == "eval":
        return []
    mine, theirs = _flat(redact(to_dict(cfg))), _flat(stored)
    ignored = {"output_dir"} | ({"prompts.limit"} if (stored.get("pairs") or {}).get("target") else set())
    return sorted(k for k in mine.keys() | theirs.keys() if k not in ignored and mine.get(k) != theirs.get(k))


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict) or not tree:
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out |= _flat(value, f"{prefix}{key}.") if isinstance(value, dict) and value else {f"{prefix}{key}": value}
    return out


def finish(head: dict[str, Any], plans: list[dict[str, Any]], store: RunStore, t0: float) -> dict[str, Any]:
    """The plan dict, written to plan.json, or to plan.whatif.json when `head` has `whatif` keys (`written`:
    where it went)."""
    name = WHATIF_PLAN if head.get("whatif") else "plan.json"
    plan = {
        **head,
        "stages": [{k: v for k, v in p.items() if not k.startswith("_")} for p in plans],
        "total": totals(plans),
        "requests_sent": 0,
        "seconds": round(time.perf_counter() - t0, 3),
        "at": time.time(),
        "written": RunStore(store.url).display(name),
    }
    RunStore(store.url).write_json(name, plan)
    return plan


def format_plan(plan: dict[str, Any]) -> str:
    """The terminal table of a plan: "~" marks an estimate, "<=" an upper bound; the notes say from what."""
    from factory.executor.progress import duration
    from factory.commands.present import markdown

    def hours(value: float | None) -> str:
        return "-" if value is None else f"{value:,.1f}"

    def wall(value: float | None) -> str:
        return "-" if value is None else duration(value)

    rows = []
    for p in plan["stages"]:
        requests = f"~{p['requests']}" if p["requests_estimated"] else str(p["requests"])
        bound = "upper bound" in p["prompt_tokens_how"]
        prompt = ("<= " if bound else "" if p["prompt_tokens_how"].startswith("counted") else "~") + tokens_text(
            p["prompt_tokens"]
        )
        completion = (
            "<= "
            if "upper bound" in p["completion_tokens_how"]
            else ""
            if p["completion_tokens_how"].startswith("none")
            else "~"
        ) + tokens_text(p["completion_tokens"])
        cached = p.get("cached_tokens") or 0
        rows.append(
            [
                p["stage"],
                p["engine"],
                requests,
                prompt,
                (("~" if p.get("cached_tokens_how", "").startswith("observed") else "<= ") + tokens_text(cached))
                if cached
                else "-",
                completion,
                usd_text(p["usd"]),
                hours(p["gpu_hours"]),
                wall(p["wall_s"]),
            ]
        )
    t = plan["total"]
    unpriced = t.get("usd_unpriced") or []
    total_usd = usd_text(t["usd"]) if not unpriced else f">= {usd_text(t['usd'] or 0.0)}, {len(unpriced)} unpriced"
    rows.append(["total", "", str(t["requests"]), tokens_text(t["prompt_tokens"]),
                 tokens_text(t.get("cached_tokens") or 0), tokens_text(t["completion_tokens"]),
                 total_usd, hours(t["gpu_hours"]), wall(t["wall_s"])])  # fmt: skip
    kind = "eval" if plan.get("command") == "eval" else "run"
    existing = "existing" if plan["run_directory"] == "exists" else "new"
    out = [f"factory plan: {plan['output_dir']} ({existing} {kind} directory); nothing was sent", ""]
    prompts = plan.get("prompts")
    if prompts:
        out.append(f"prompts: {prompts['valid']} valid, {prompts['invalid']} invalid ({prompts['path']})")
    target = plan.get("target")
    if target:
        out.append(f"pairs.target {target['target']}: {target['prompt_rows']} prompt rows planned; {target['why']}")
        if target.get("short"):
            out.append(f"  warning: {target['short']}")
    headers = ["stage", "engine", "requests", "prompt tokens", "of them cached", "completion tokens", "USD"]
    headers += ["GPU-hours", "wall"]
    out += ["", markdown(headers, rows), ""]
    for p in plan["stages"]:
        out.append(f"{p['stage']}: prompt tokens {p['prompt_tokens_how']}; completion {p['completion_tokens_how']}")
        if p.get("cached_tokens"):
            how = p["cached_tokens_how"]
            out.append(f"{p['stage']}: cached prompt tokens {how} (priced at cost.*.cached_input_per_m)")
        out += [f"{p['stage']}: {note}" for note in p["notes"]]
        speed = p["tokens_per_s_per_replica"]
        if speed:
            out.append(
                f"{p['stage']}: {speed:.1f} completion tokens/s per replica ({p['tokens_per_s_how']}) x "
                f"{p['replicas']} "
                f"replica(s) of {p['gpus_per_replica']} GPU(s)"
            )
    if any(not p["tokens_per_s_per_replica"] for p in plan["stages"] if p["requests"]):
        out.append(
            "wall time and GPU-hours need a throughput: cost.<stage>.tokens_per_s (completion tokens/s per replica), "
            "or a finished run's metrics.json"
        )
    if unpriced:
        keys = {p["stage"]: p.get("price_key", f"cost.{p['stage']}") for p in plan["stages"]}
        out.append(
            "USD total leaves out " + ", ".join(f"{name} (no price: {keys[name]}.input_usd_per_m / "
                                                f"output_usd_per_m)" for name in unpriced)
        )  # fmt: skip
    elif not any(p["usd"] is not None for p in plan["stages"]):
        out.append(
            "USD: no prices set (cost.sampler.input_usd_per_m, output_usd_per_m, cost.judge.*, cost.judges.<name>.*, "
            "cost.reward_models.<name>.*)"
        )
    if plan.get("max_usd") is not None:
        out.append(f"budget: cost.max_usd={plan['max_usd']:g} stops each invocation once reached")
    whatif = plan.get("whatif")
    if whatif:
        shown = ", ".join(whatif[:6]) + (f" and {len(whatif) - 6} more" if len(whatif) > 6 else "")
        out.append(
            f"written: {plan['written']} (a what-if: this config differs from the run's in {shown}; "
            "plan.json, the plan of the run the directory holds, is untouched)"
        )
    else:
        out.append(f"written: {plan.get('written') or plan['output_dir'] + '/plan.json'}")
    return "\n".join(out)
