"""Sample stage: K teacher completions per prompt, keyed (prompt_id, sample_idx) under a fingerprint.

Input columns:  prompts  -> prompt_id, messages (and prompt_hash, else computed from messages)
                stored   -> prompt_id, sample_idx, sampler_fp, prompt_hash, error, created_at (what is done)
Output columns: samples  -> see factory.rundir.schemas.SAMPLES

    >>> stage = SampleStage(cfg, sampler_fp="ab12", prompts=prompts)    # the contract (stages/base.py)
    >>> work = stage.plan(store)                 # prompt_id, sample_idx, seed: only the missing keys
    >>> rows = sample_batch(engine, stage.render(work.to_dicts()), None, cfg.sampler.sampling, "ab12")
    rows: prompt_id="p1" sample_idx=0 prompt_hash="9f2c..." reasoning="..." answer="..." error=None ...

A stored sample answers one prompt text: its prompt_hash is the hash of the messages its request sent
(rundir/hashing.py: messages_hash). Every reader of the stored samples (this stage's plan and read, the
judges' plans and reads, eval, `factory pairs`) takes only the rows whose prompt_hash is the prompt's
current one (`answered`), so a prompt whose text changed under the same id is sampled again and its old
samples stay stored, unused, never paired with the new text. Rows stored before the hash was kept (null)
are stamped by `factory run` and `factory eval` with the hash of the text in prompts/ (the text the run that
stored them sent) before prompts/ is replaced (`stamp_prompt_hashes`); until then they count as answering
the prompt under their id, as they did.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import polars as pl

from factory.config import EngineConfig, RunConfig, SamplingConfig
from factory.engines import kind_of
from factory.engines.base import Completion, Engine, Request
from factory.rundir.hashing import derive_seed, messages_hash, stable_hash
from factory.rundir.schemas import SAMPLES, require_columns
from factory.rundir.store import conform
from factory.stages.adaptive import AdaptiveK
from factory.stages.base import BaseStage, Batch, Emit, PromptRows, check_inputs, encode, latest, read_status
from factory.stages.think import think_blocks

PLAN_COLUMNS = ("prompt_id", "sample_idx", "seed")
KEY = ("prompt_id", "sample_idx")
# What planning and resume read of the stored samples: keys and status, never the text.
STATUS_COLUMNS = ["prompt_id", "sample_idx", "sampler_fp", "prompt_hash", "error", "created_at"]
HASH = "prompt_hash"
# The prompt_hash stamped on a stored sample whose prompt text is not known (its id was not in prompts/):
# equal to no messages_hash, so it answers no prompt and its key is asked again should the id come back.
UNKNOWN_TEXT = "unknown"


def sampler_fingerprint(engine: EngineConfig, sampling: SamplingConfig, model_id: str, template: str) -> str:
    """What makes samples comparable: model, engine kind, sampling params and the prompt template
    (and, for vLLM, the weights' dtype and quantization, which change what the model says).
    K is not in it: growing K 4 -> 8 reuses the first 4 samples of every prompt."""
    identity = {
        "kind": engine.kind,
        "model": model_id,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "max_tokens": sampling.max_tokens,
        "seed": sampling.seed,
        "template": template,
    }
    if sampling.stop:  # only when set: samples stored before the option existed keep their key
        identity["stop"] = list(sampling.stop)
    identity |= kind_of(engine).weights(engine)  # e.g. vLLM's dtype and quantization
    return stable_hash(identity)


def prompt_hashes(prompts: pl.DataFrame) -> pl.Series | None:
    """The prompt_hash of each prompt, aligned with prompts["prompt_id"]: its column, or computed from its
    messages (a prompts/ stored before the column existed); None for a frame with neither (nothing to compare)."""
    if HASH in prompts.columns and not prompts[HASH].null_count():
        return prompts[HASH]
    if "messages" in prompts.columns:
        return pl.Series(HASH, [messages_hash(m) for m in prompts["messages"].to_list()], dtype=pl.String)
    return None


def answered(hashes: pl.Series | None, code: str = "prompt_id") -> pl.Expr:
    """Stored sample rows (column `code`: the prompt's code into the prompts, stages/base.py encode) that
    answered the prompt's current text: the same prompt_hash, or none stored (a row from before the hash was
    kept, not yet stamped: it counts for its id, as it did)."""
    if hashes is None:
        return pl.lit(True)
    return pl.col(HASH).is_null() | (pl.col(HASH) == pl.lit(hashes).gather(pl.col(code)))


def of_prompts(stored: pl.DataFrame, prompt_ids: pl.Series, hashes: pl.Series | None) -> pl.DataFrame:
    """The stored sample rows of these prompts that answered their current text (`answered`)."""
    codes = pl.col("prompt_id").cast(pl.Enum(prompt_ids), strict=False).to_physical().alias("_code")
    frame = stored.with_columns(codes).drop_nulls("_code")
    if hashes is not None and HASH in frame.columns:
        frame = frame.filter(answered(hashes, "_code"))
    return frame.drop("_code")


def stamp_prompt_hashes(store: Any) -> int:
    """Give the stored samples that have no prompt_hash (stored before it was kept) the hash of their
    prompt's text in prompts/ (the text the run that stored them sent; UNKNOWN_TEXT for an id that is not
    there); each such part is rewritten atomically (store.merge), every other column as it was (judgments
    still find their sample by created_at). Run by the run's one writer before prompts/ is replaced;
    returns the rows stamped (0 once done: a rerun reads one column per part)."""
    legacy = []
    for path in store.parts("samples"):
        table = store.read_part(path, [HASH])
        if HASH not in table.column_names or table.column(HASH).null_count:
            legacy.append(path)
    if not legacy:
        return 0
    stored = store.read("prompts", columns=["prompt_id", "messages", HASH])
    hashes = prompt_hashes(stored) if stored is not None else None
    known = pl.DataFrame(
        {"prompt_id": stored["prompt_id"] if hashes is not None else [], "_text": hashes if hashes is not None else []},
        schema={"prompt_id": pl.String, "_text": pl.String},
    )
    stamped = 0
    for path in legacy:
        frame = pl.from_arrow(conform(store.read_part(path), SAMPLES))
        stamped += frame[HASH].null_count()  # type: ignore[index]
        filled = pl.coalesce(HASH, "_text", pl.lit(UNKNOWN_TEXT)).alias(HASH)
        frame = frame.join(known, on="prompt_id", how="left", maintain_order="left").with_columns(filled).drop("_text")  # type: ignore[union-attr]
        store.merge("samples", [path], conform(frame.to_arrow(), SAMPLES))
    return stamped


def changed_texts(previous: pl.DataFrame | None, prompts: pl.DataFrame) -> list[str]:
    """The prompt_ids of `prompts` that `previous` (the prompts/ of the last run) holds with another text:
    their stored samples answered that text, so they are sampled (and judged) again."""
    if previous is None or not previous.height:
        return []
    before = previous.select("prompt_id", prompt_hashes(previous))
    now = prompts.select("prompt_id", prompt_hashes(prompts))
    changed = now.join(before, on="prompt_id", how="inner", suffix="_before", maintain_order="left")
    return changed.filter(pl.col(HASH) != pl.col(f"{HASH}_before"))["prompt_id"].to_list()


def plan_samples(
    prompts: pl.DataFrame,
    stored: pl.DataFrame | None,
    k: int,
    sampler_fp: str,
    base_seed: int,
    retry_failed: bool = False,
) -> pl.DataFrame:
    """Every (prompt_id, sample_idx < k) not yet stored under `sampler_fp` for the prompt's current text
    (`answered`), with its derived seed.
    With `retry_failed`, keys whose latest stored row failed (error set) are planned again; the new
    row supersedes the old one when samples are read (latest `created_at` wins)."""
    require_columns(prompts, ("prompt_id",), "sample.plan")
    status = None
    if stored is not None and stored.height:
        require_columns(stored, (*KEY, "sampler_fp", *(("error", "created_at") if retry_failed else ())), "sample.plan")
        status = encode(stored.filter(pl.col("sampler_fp") == sampler_fp), prompts["prompt_id"])
        if HASH in status.columns:
            status = status.filter(answered(prompt_hashes(prompts)))
    return missing_samples(prompts["prompt_id"], status, k, base_seed, retry_failed)


def missing_samples(
    prompt_ids: pl.Series,
    status: pl.DataFrame | None,
    k: int,
    base_seed: int,
    retry_failed: bool,
    levels: pl.Series | None = None,
) -> pl.DataFrame:
    """The plan from this fingerprint's stored status rows, their prompt_id a code into `prompt_ids`
    (stages/base.py: read_status, encode): integer joins only, then the missing keys decoded.
    `levels` (sampler.adaptive): per prompt, in the order of `prompt_ids`, the samples it gets (<= k)."""
    key = list(KEY)
    codes = pl.DataFrame({"prompt_id": pl.arange(0, prompt_ids.len(), dtype=pl.UInt32, eager=True)})
    wanted = codes.join(pl.DataFrame({"sample_idx": list(range(k))}, schema={"sample_idx": pl.Int64}), how="cross")
    if levels is not None:
        wanted = wanted.filter(pl.col("sample_idx") < levels.gather(wanted["prompt_id"]))
    if status is not None and status.height:
        done = latest(status, key).filter(pl.col("error").is_null()) if retry_failed else status
        wanted = wanted.join(done.select(key).unique(), on=key, how="anti", maintain_order="left")
    wanted = wanted.with_columns(prompt_ids.gather(wanted["prompt_id"]).alias("prompt_id"))
    seeds = [derive_seed(base_seed, p, i) for p, i in zip(wanted["prompt_id"], wanted["sample_idx"])]
    return wanted.with_columns(pl.Series("seed", seeds, dtype=pl.Int64)).select(PLAN_COLUMNS)


def split_reasoning(text: str, reasoning: str | None = None) -> tuple[str, str]:
    """(reasoning, answer) from `<think>...</think>answer` or from an API's separate reasoning field.
    An unclosed `<think>` (truncated mid-thought) leaves the answer empty."""
    text = text or ""
    found, rest = think_blocks(text)
    if reasoning is not None:
        return reasoning.strip(), rest.strip()
    if found:
        return "\n".join(part.strip() for part in found).strip(), rest.strip()
    if "<think>" in text:
        return text.split("<think>", 1)[1].strip(), ""
    if "</think>" in text:  # templates that open the think block in the prompt
        head, tail = text.split("</think>", 1)
        return head.strip(), tail.strip()
    return "", text.strip()


def token_split(completion: Completion, reasoning: str, answer: str, engine: Engine) -> tuple[int, int, int]:
    """(reasoning_tokens, answer_tokens, completion_tokens), with reasoning + answer == completion.
    The engine's usage wins where it has it; the rest is counted with the engine's tokenizer."""
    total = completion.completion_tokens
    if total is not None and completion.reasoning_tokens is not None:
        return completion.reasoning_tokens, total - completion.reasoning_tokens, total
    if total is not None and not reasoning:  # nothing to charge to reasoning, not even a rounding gap
        return 0, total, total
    counts = engine.count_tokens([reasoning, answer]) if (reasoning or answer) else [0, 0]
    if counts is None:
        counts = [len(reasoning.split()), len(answer.split())]  # last resort: words
    if total is None:
        return counts[0], counts[1], counts[0] + counts[1]
    answer_tokens = min(counts[1], total)
    return total - answer_tokens, answer_tokens, total


def sample_batch(
    engine: Engine, rows: list[dict[str, Any]], emit: Emit | None, sampling: SamplingConfig, sampler_fp: str
) -> list[dict]:
    """Run one batch of planned samples (with their messages) on `engine` -> sample rows, one per
    plan row, in plan order; each row is also handed to `emit` as soon as its request finishes."""
    by_tag = {(row["prompt_id"], row["sample_idx"]): row for row in rows}
    requests = [
        Request(
            messages=row["messages"],
            max_tokens=sampling.max_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            seed=row["seed"],
            stop=list(sampling.stop) or None,
            tag=(row["prompt_id"], row["sample_idx"]),
        )
        for row in rows
    ]
    batch = Batch(emit)
    engine.generate(requests, on_done=lambda c: batch.add(c.tag, sample_row(by_tag[c.tag], c, engine, sampler_fp)))
    return batch.rows(by_tag, "completion(s)")


def sample_row(row: dict[str, Any], completion: Completion, engine: Engine, sampler_fp: str) -> dict:
    """One stored sample from its plan row and the engine's completion."""
    reasoning, answer = split_reasoning(completion.text, completion.reasoning)
    if completion.error:
        r_tok = a_tok = c_tok = 0
    else:
        r_tok, a_tok, c_tok = token_split(completion, reasoning, answer, engine)
    return {
        "prompt_id": row["prompt_id"],
        "sample_idx": row["sample_idx"],
        "sampler_fp": sampler_fp,
        "prompt_hash": messages_hash(row["messages"]),
        "seed": row["seed"],
        "reasoning": reasoning,
        "answer": answer,
        "text": completion.text,
        "reasoning_tokens": r_tok,
        "answer_tokens": a_tok,
        "completion_tokens": c_tok,
        "prompt_tokens": completion.prompt_tokens,
        "cached_tokens": completion.cached_tokens,
        "finish_reason": completion.finish_reason or ("error" if completion.error else ""),
        "error": completion.error,
        "latency_s": completion.latency_s,
        "attempts": completion.attempts,
        "model": engine.model_name,
        "created_at": time.time(),
    }


def failed_samples(requests: list[dict], reason: str, sampler_fp: str, attempts: int = 0) -> list[dict]:
    """The rows stored for planned samples that could not be served (their replica kept failing)."""
    now = time.time()
    return [
        {
            "prompt_id": r["prompt_id"], "sample_idx": r["sample_idx"], "sampler_fp": sampler_fp,
            "prompt_hash": messages_hash(r["messages"]) if "messages" in r else None, "seed": r["seed"],
            "reasoning": "", "answer": "", "text": "", "reasoning_tokens": 0, "answer_tokens": 0,
            "completion_tokens": 0, "prompt_tokens": None, "finish_reason": "error", "error": reason,
            "latency_s": 0.0, "attempts": attempts, "model": None, "created_at": now, "cached_tokens": None,
        }
        for r in requests
    ]  # fmt: skip


def current_samples(
    stored: pl.DataFrame | None, sampler_fp: str, prompt_ids: pl.Series, k: int, hashes: pl.Series | None = None
) -> pl.DataFrame:
    """The samples this run uses: its fingerprint, its prompts (with `hashes`, prompt_hashes of them: only
    rows that answered their current text), sample_idx < k, one row per key (the latest, should a retried
    write have stored a key twice)."""
    if stored is None:
        return pl.DataFrame()
    mine = stored.filter((pl.col("sampler_fp") == sampler_fp) & (pl.col("sample_idx") < k))
    mine = of_prompts(mine, prompt_ids, hashes)
    return latest(mine, list(KEY)).sort("prompt_id", "sample_idx")


def current_sample_keys(
    store: Any, sampler_fp: str, prompt_ids: pl.Series, k: int, hashes: pl.Series | None = None
) -> pl.DataFrame:
    """current_samples of the stored rows, read for their key and identity alone (prompt_id, sample_idx,
    sampler_fp, prompt_hash, created_at): the samples a judge's stored rows are matched with when it reads the
    run (JudgeStage, GroupJudgeStage and RewardStage `read` without samples handed over)."""
    status = store.read("samples", SAMPLES, columns=[*KEY, "sampler_fp", "prompt_hash", "created_at"])
    return current_samples(status, sampler_fp, prompt_ids, k, hashes)


class SampleStage(BaseStage):
    """The sample stage as the executor drives it (factory/stages/base.py): the first stage, fed by the
    prompts only."""

    name = "sample"
    table = "samples"
    key = KEY
    schema = SAMPLES
    inputs = ("prompt_id", "messages")  # of the prompts
    batch_fields = ("sampling", "sampler_fp")
    run_batch = staticmethod(sample_batch)

    def __init__(
        self,
        cfg: RunConfig,
        sampler_fp: str,
        prompts: pl.DataFrame,
        *,
        engine: EngineConfig | None = None,
        sampling: SamplingConfig | None = None,
        k: int | None = None,
        retry_failed: bool | None = None,
        name: str = "sample",
        adaptive: AdaptiveK | None = None,
    ):
        """`factory run`'s sampler from `cfg.sampler`; `factory eval` passes a candidate's engine, sampling,
        k and a stage name of its own (one sample stage per candidate, all writing samples/).
        `adaptive` (sampler.adaptive): the levels that say how many samples each prompt gets; the stage then
        also follows the stored rows of `adaptive.follows` (itself and the judges) to draw a group's next
        step as soon as its current one is judged."""
        check_inputs(self, prompts.columns, "the prompts")
        self.adaptive = adaptive
        self.follows: tuple[str, ...] = adaptive.follows if adaptive is not None else ()
        self.current: pl.DataFrame | None = None  # the last levels decided (sampler.adaptive)
        self._levels_of: tuple[pl.DataFrame, dict[str, int]] | None = None
        self._asked: set[tuple[str, int]] = set()  # keys handed to the executor in this pass
        self._store: Any = None
        self.grown_early = 0  # keys of later steps drawn while the run was still sampling or judging
        self.note = ""
        self.cfg, self.sampler_fp, self.name = cfg, sampler_fp, name
        self.engine = engine if engine is not None else cfg.sampler.engine
        self.sampling = sampling if sampling is not None else cfg.sampler.sampling
        self.k = k if k is not None else cfg.sampler.k
        self.retry_failed = cfg.sampler.retry_failed if retry_failed is None else retry_failed
        self.prompts = prompts
        self.hashes = prompt_hashes(prompts)
        self._rows = PromptRows(prompts, ["messages"])
        self.on_reasoning: Callable[[], None] | None = None  # called once, when a stored sample first has reasoning

    def plan(self, store: Any) -> pl.DataFrame:
        self._store, self._asked = store, set()
        work = self._missing(store)
        if self.adaptive is not None:
            self._asked = set(work.select(KEY).iter_rows())
            self.note = (
                f"sampler.adaptive: {self.adaptive.k_min} a prompt first, {self.adaptive.step} more at a time for "
                f"the groups still undecided once judged, up to {self.k}"
            )
        return work

    def _missing(self, store: Any) -> pl.DataFrame:
        ids = self.prompts["prompt_id"]
        status = read_status(store, "samples", SAMPLES, STATUS_COLUMNS, ids, pl.col("sampler_fp") == self.sampler_fp)
        status = status.filter(answered(self.hashes))
        levels = None
        if self.adaptive is not None:
            self.current = self.adaptive.levels(store, ids)
            levels = self.current["level"]
        return missing_samples(ids, status, self.k, self.sampling.seed, self.retry_failed, levels)

    def levels_now(self) -> dict[str, int] | None:
        """sampler.adaptive: prompt_id -> the samples the last decision gives it (None before the first)."""
        if self.current is None:
            return None
        if self._levels_of is None or self._levels_of[0] is not self.current:
            self._levels_of = (self.current, dict(self.current.select("prompt_id", "level").iter_rows()))
        return self._levels_of[1]

    @property
    def expected(self) -> int:
        """The samples the run asks for: prompts x k, or (sampler.adaptive) what the levels give."""
        if self.adaptive is not None and self.current is not None:
            return int(self.current["level"].sum())
        return self.prompts.height * self.k

    def follow(self, rows: list[dict]) -> list[dict]:
        """Without sampler.adaptive: nothing (the first stage, fed by the prompts only). With it: rows of
        this stage or a judge were stored, so some group's step may be complete: its next step's keys,
        decided from the store (at most every sampler.adaptive.replan_s seconds; `settle` decides the rest)."""
        if self.adaptive is None or self._store is None or not self.adaptive.due():
            return []
        work = self._next_step()
        self.grown_early += len(work)
        return work

    def settle(self, store: Any) -> list[dict]:
        """When nothing else is left to do: every group decided again from the store; the keys still
        missing under the rule (sampler.adaptive; none without it)."""
        if self.adaptive is None:
            return []
        self._store = store
        return self._next_step()

    def _next_step(self) -> list[dict]:
        missing = self._missing(self._store).to_dicts()
        work = [row for row in missing if (row["prompt_id"], row["sample_idx"]) not in self._asked]
        self._asked.update((row["prompt_id"], row["sample_idx"]) for row in work)
        return work

    def render(self, work: list[dict]) -> list[dict]:
        return [{**row, "messages": self._rows[row["prompt_id"]]["messages"]} for row in work]

    def failed(self, requests: list[dict], reason: str) -> list[dict]:
        return failed_samples(requests, reason, self.sampler_fp)

    def read(self, store: Any) -> pl.DataFrame:
        stored = store.read("samples", SAMPLES)
        samples = current_samples(stored, self.sampler_fp, self.prompts["prompt_id"], self.k, self.hashes)
        return samples if samples.height else pl.from_arrow(SAMPLES.empty_table())  # type: ignore[return-value]

    def seen(self, rows: list[dict]) -> None:
        """Rows just stored: the first time one holds reasoning, `on_reasoning` is called (then dropped)."""
        if self.on_reasoning is not None and any((row.get("reasoning") or "").strip() for row in rows):
            hook, self.on_reasoning = self.on_reasoning, None
            hook()
