"""judge.mode group: one request per (prompt, order) shows the judge the prompt once and its usable
samples as labelled answers (A, B, ...); the reply scores each. Rows stay one per sample in judgments/.

Input columns:  samples   -> prompt_id, sample_idx, sampler_fp, answer, reasoning, error, created_at
                prompts   -> prompt_id, product_info, history, question
                stored    -> prompt_id, vote, judge_fp, sampler_fp, group_pool, parse_status, created_at
Output columns: judgments -> the pointwise row (vote = the order) + group_key, group_pool, group_order, label

    >>> stage = GroupJudgeStage(cfg, fps, prompts, rubric, judge=cfg.judge)   # judge.mode group
    >>> work = stage.plan(store)            # one row per pending group: prompt_id, vote, members, answers...
    >>> rows = group_judge_batch(engine, stage.render(work.to_dicts()), None, cfg.judge, judge_fp)
    rows: prompt_id="p1" sample_idx=2 vote=0 score=71 label="A" group_order=[2, 0, 3, 1] ...

A prompt's group is drawn once every sample_idx < k of it is stored (ok or failed; with
sampler.retry_failed, once its failed samples were asked again). Its pool is the
error-free samples, (sample_idx, created_at) each; `group_pool` hashes it. The answers shown are the
pool's usable ones (a non-empty answer, passing pairs.filter_before_judge), in the order
random.Random(seed of (judge seed, prompt_id, the members' sample_idx)).shuffle gives (order 0; order 1 is its reverse);
`group_key` hashes what was shown, in order. A (prompt, order) is pending while no row of this judge
holds the prompt's current pool: when the group grows (a larger k, a sample asked again) it is
judged again and the old rows stay stored; reading takes each prompt's latest group.

One request answers every sample it shows: its prompt and completion tokens are split over them, and
its attempts are counted on the first answer shown (label A), so the stage's requests stay the
requests sent. A reply that leaves some answers without a usable score is re-asked (judge.max_reasks);
an answer keeps the first usable score it got.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import polars as pl

from factory.config import JudgeConfig
from factory.engines.base import Engine
from factory.rundir.hashing import derive_seed, stable_hash
from factory.rundir.schemas import JUDGMENTS, SAMPLES
from factory.stages.base import Emit, latest, read_status
from factory.stages.judge import reask
from factory.stages.judge.parse import USABLE, parse_group, parse_tags
from factory.stages.judge.read import current_judgments
from factory.stages.judge.rubric import group_labels, group_schema, reask_messages, render_group
from factory.stages.judge.stage import JudgeStage, judgment_row
from factory.stages.sample import STATUS_COLUMNS as SAMPLE_STATUS
from factory.stages.sample import answered
from factory.stages.scored import SAMPLE_KEY, TEXT_SCHEMA, judgeable, of_current_samples, prefiltered, sample_text

GROUP_STATUS = ["prompt_id", "vote", "judge_fp", "sampler_fp", "group_pool", "parse_status", "created_at"]


def pool_key(sampler_fp: str, pool: list[tuple[int, float | None]]) -> str:
    """The identity of the samples a group is drawn from: (sample_idx, created_at) of each, by sample_idx."""
    return stable_hash({"sampler_fp": sampler_fp, "pool": sorted(pool)})


def shown_order(seed: int, prompt_id: str, members: list[int], order: int) -> list[int]:
    """The sample_idx of the answers as shown: shuffled by a seed of (judge seed, prompt_id, the members), the
    same in every run (order 0); reversed (order 1)."""
    shown = sorted(members)
    random.Random(derive_seed(seed, "group", prompt_id, shown)).shuffle(shown)
    return shown[::-1] if order == 1 else shown


def group_key(prompt_id: str, shown: list[tuple[int, float | None]], order: int) -> str:
    """What one group request saw: the samples (sample_idx, created_at) in the order shown, and the order."""
    return stable_hash({"prompt_id": prompt_id, "shown": [list(s) for s in shown], "order": order})


def current_group_judgments(stored: pl.DataFrame | None, judge_fp: str, samples: pl.DataFrame) -> pl.DataFrame:
    """The group judgments of `samples`: per (prompt, order) the rows of its latest group, one per sample."""
    mine = current_judgments(stored, judge_fp, samples)
    if not mine.height or "group_key" not in mine.columns:
        return mine
    every = of_current_samples(stored.filter(pl.col("judge_fp") == judge_fp), samples)  # type: ignore[union-attr]
    newest = (
        every.group_by("prompt_id", "vote", "group_key")
        .agg(pl.col("created_at").max())
        .sort("created_at")
        .unique(["prompt_id", "vote"], keep="last")
        .select("prompt_id", "vote", "group_key")
    )
    return latest(
        every.join(newest, on=["prompt_id", "vote", "group_key"], how="semi"), ["prompt_id", "sample_idx", "vote"]
    )


def group_judge_batch(
    engine: Engine, rows: list[dict[str, Any]], emit: Emit | None, cfg: JudgeConfig, judge_fp: str
) -> list[dict]:
    """Judge a batch of group requests -> one judgment row per answer shown, in request order; a group's
    rows are handed to `emit` together as soon as they are final. A reply that leaves some answers without a
    usable score is re-asked for them, in the pointwise judge's loop (factory/stages/judge/reask.py)."""
    states = [reask.start(row["messages"], group_labels(len(row["members"]))) for row in rows]
    out: list[list[dict] | None] = [None] * len(rows)

    def schema(i: int) -> Any:
        return group_schema(states[i]["keys"], cfg) if cfg.structured and engine.supports_json_schema else None

    def parse(state: dict, text: str | None) -> dict[str, dict]:
        return parse_group(text, state["keys"], cfg.scale_max)

    def again(i: int, reply: str | None, failing: list[str]) -> list[dict]:
        results, labels = states[i]["results"], states[i]["keys"]
        why = "; ".join(f"{label}: {results[label]['reason']}" for label in failing[:4])
        messages = reask_messages(states[i]["messages"][:1], reply, why, cfg)
        messages[-1]["content"] += (
            f" Give one object per answer label ({', '.join(labels)}), each with those fields, in one JSON object."
        )
        return messages

    def final(i: int) -> None:
        out[i] = group_rows(rows[i], states[i], cfg, judge_fp)
        if emit is not None:
            emit(out[i])

    reask.ask(engine, rows, states, cfg, schema, parse, again, final)
    lost = [i for i, group in enumerate(out) if group is None]
    if lost:
        raise RuntimeError(f"engine lost {len(lost)} group judge completion(s), e.g. row {lost[0]}")
    return [row for group in out for row in group]  # type: ignore[union-attr]


def _shares(total: int | None, n: int) -> list[int | None]:
    """`total` split over n rows (the remainder on the first ones): the rows sum to the request's count."""
    if total is None:
        return [None] * n
    base, extra = divmod(int(total), n)
    return [base + (1 if i < extra else 0) for i in range(n)]


def group_rows(row: dict, current: dict, cfg: JudgeConfig, judge_fp: str) -> list[dict]:
    """One judgment row per answer shown (label A first)."""
    n = len(row["members"])
    prompt_tokens, completion_tokens = _shares(current["prompt_tokens"], n), _shares(current["tokens"], n)
    cached_tokens = _shares(current.get("cached_tokens"), n)  # split as the prompt's: never over a row's prompt
    out = []
    for i, (label, sample_idx) in enumerate(zip(group_labels(n), row["members"])):
        result = current["results"][label]
        one = {
            "result": {**result, "raw": current["raw"], "error": current["error"]},
            "attempts": current["attempts"] if i == 0 else 0,
            "reasks": current["reasks"],
            "tokens": completion_tokens[i],
            "prompt_tokens": prompt_tokens[i],
            "cached_tokens": cached_tokens[i],
            "latency": current["latency"],
        }
        member = {"prompt_id": row["prompt_id"], "sample_idx": sample_idx, "sampler_fp": row["sampler_fp"],
                  "vote": row["vote"], "sample_created_at": row["created"][i]}  # fmt: skip
        judged = judgment_row(member, one, cfg, judge_fp)
        if cfg.tags and result["status"] in USABLE:
            judged["tags"] = parse_tags(result.get("text"), cfg.tag_values)
        judged |= {"group_key": row["group_key"], "group_pool": row["group_pool"],
                   "group_order": list(row["members"]), "label": label}  # fmt: skip
        out.append(judged)
    return out


def group_failed(requests: list[dict], reason: str, cfg: JudgeConfig, judge_fp: str) -> list[dict]:
    """The rows stored for group requests that could not be served: engine_error for every answer shown."""
    out = []
    for request in requests:
        labels = group_labels(len(request["members"]))
        current = {"attempts": 0, "reasks": 0, "tokens": None, "prompt_tokens": None,
                   "latency": 0.0, "raw": None, "error": reason,
                   "results": {label: {"score": None, "status": "engine_error", "reason": reason, "dimensions": None}
                               for label in labels}}  # fmt: skip
        out += group_rows(request, current, cfg, judge_fp)
    return out


class GroupJudgeStage(JudgeStage):
    """A generative judge in judge.mode group, as the executor drives it. A work row is one group request;
    it answers the judgment key of every sample it shows (`answers`)."""

    run_batch = staticmethod(group_judge_batch)
    current_rows = staticmethod(current_group_judgments)

    def __init__(self, cfg: Any, *args: Any, resample_failed: bool | None = None, **kwargs: Any):
        """As JudgeStage; `resample_failed`: whether the sample stage feeding it asks its failed samples again
        first (default sampler.retry_failed; eval passes its own)."""
        super().__init__(cfg, *args, **kwargs)
        self.resample_failed = cfg.sampler.retry_failed if resample_failed is None else resample_failed
        self._waiting: set[str] = set()  # prompts whose samples are not all stored yet
        self._partial: dict[str, dict[int, dict]] = {}  # their samples stored since, by sample_idx
        # sampler.adaptive: the sampler's current level of each prompt (graph.stages wires it to the sample
        # stage); a group is drawn from the samples below its level, and again when the level grows
        self.levels: Callable[[], dict[str, int] | None] | None = None
        self._store: Any = None
        self._stored: dict[str, dict[int, tuple[bool, Any]]] = {}  # (ok, created_at) of each stored sample
        self._drawn: dict[str, int] = {}  # the level each prompt's group was last drawn at
        self._asked: set[tuple] = set()  # (prompt_id, order, pool) asked in this invocation

    @property
    def fanout(self) -> float:
        """Judge requests per usable upstream sample: one per group and order."""
        return self.cfg.orders / self.k

    @property
    def answers_per_request(self) -> int:
        return self.k

    def group_requests(self, sample_work: pl.DataFrame) -> tuple[int, str]:
        """`factory plan`: the group requests the planned samples will lead to (each prompt they complete is
        judged again in every order) and how that was counted."""
        prompts = sample_work["prompt_id"].n_unique() if sample_work.height else 0
        return (
            prompts * self.cfg.orders,
            f"{prompts} prompt(s) getting samples x {self.cfg.orders} order(s), one group each",
        )

    def rows_of(self, work: list[dict] | pl.DataFrame) -> int:
        """Judgment rows the work will store: one per sample each group request shows."""
        if isinstance(work, pl.DataFrame):
            return int(work["members"].list.len().sum()) if work.height else 0
        return sum(len(row["members"]) for row in work)

    def answers(self, request: dict) -> list[tuple]:
        return [(request["prompt_id"], idx, request["sampler_fp"], request["vote"]) for idx in request["members"]]

    def _levels(self) -> dict[str, int] | None:
        """sampler.adaptive: each prompt's current level as the sampler decided it (None: fixed k)."""
        return None if self.levels is None or self.upstream is None else self.levels()

    def plan(self, store: Any) -> pl.DataFrame:
        self._store, self._asked = store, set()
        work = self._plan(store)
        rows = work.iter_rows(named=True) if work.height else []
        self._asked = {(row["prompt_id"], row["vote"], row["group_pool"]) for row in rows}
        return work

    def settle(self, store: Any) -> list[dict]:
        """sampler.adaptive, when nothing else is left to do: the groups pending at the prompts' current levels
        that this invocation has not asked yet (a level that went back up to samples already stored draws no
        new sample, so `follow` never sees it); none at a fixed k."""
        if self._levels() is None:
            return []
        work = self._plan(store).to_dicts()
        work = [row for row in work if (row["prompt_id"], row["vote"], row["group_pool"]) not in self._asked]
        self._asked.update((row["prompt_id"], row["vote"], row["group_pool"]) for row in work)
        return work

    def _plan(self, store: Any) -> pl.DataFrame:
        ids = self.prompt_ids
        mine = (pl.col("sampler_fp") == self.sampler_fp) & (pl.col("sample_idx") < self.k)
        status = read_status(store, "samples", SAMPLES, SAMPLE_STATUS, ids, mine).filter(answered(self.hashes))
        status = latest(status, ["prompt_id", "sample_idx"])  # of the prompts' current text only
        status = status.with_columns(ids.gather(status["prompt_id"]).alias("prompt_id"))
        levels = self._levels()
        if levels is not None:  # the samples of each prompt's current step only
            self._stored = {}
            for pid, idx, error, created in status.select("prompt_id", "sample_idx", "error", "created_at").iter_rows():
                self._stored.setdefault(pid, {})[idx] = (error is None, created)
            status = status.filter(pl.col("sample_idx") < self._need(levels))
        counts = status.group_by("prompt_id").len()
        if self.upstream is None:  # no sample stage feeds it (eval's imported answers): what is stored is all
            complete = set(counts["prompt_id"].to_list())
        elif levels is not None:
            complete = set(counts.filter(pl.col("len") >= self._need(levels))["prompt_id"].to_list())
        else:
            complete = set(counts.filter(pl.col("len") >= self.k)["prompt_id"].to_list())
        redo: set[str] = set()
        if (
            self.resample_failed and self.upstream is not None
        ):  # their failed samples come back (ok or failed again) before the group is drawn
            redo = set(status.filter(pl.col("error").is_not_null())["prompt_id"].to_list())
            complete -= redo
            status = status.filter(pl.col("error").is_null() | ~pl.col("prompt_id").is_in(list(redo)))
        self._waiting = set(ids.to_list()) - complete
        if levels is not None:
            self._drawn = {pid: levels.get(pid, self.k) for pid in complete}
        ours = (pl.col("judge_fp") == self.judge_fp) & (pl.col("sampler_fp") == self.sampler_fp)
        stored = read_status(store, "judgments", JUDGMENTS, GROUP_STATUS, ids, ours)
        stored = stored.with_columns(ids.gather(stored["prompt_id"]).alias("prompt_id"))
        ok = status.filter(pl.col("error").is_null())
        waiting_keys = ok.filter(pl.col("prompt_id").is_in(list(self._waiting)))
        pools = {
            pid: pool_key(self.sampler_fp, list(zip(group["sample_idx"], group["created_at"])))
            for (pid,), group in ok.filter(pl.col("prompt_id").is_in(list(complete))).group_by("prompt_id")
        }
        done = stored.filter(pl.col("group_pool").is_not_null())
        if self.cfg.retry_failed:
            done = latest(done, ["prompt_id", "vote", "group_pool"]).filter(pl.col("parse_status") != "engine_error")
        have = set(done.select("prompt_id", "vote", "group_pool").iter_rows())
        pending = {pid for pid, pool in pools.items() for v in range(self.cfg.orders) if (pid, v, pool) not in have}
        keys = pl.concat([ok.filter(pl.col("prompt_id").is_in(list(pending))), waiting_keys]).select(SAMPLE_KEY)
        text = sample_text(store, keys, ids, self.hashes)
        for row in text.filter(pl.col("prompt_id").is_in(list(self._waiting)) & pl.lit(levels is None)).iter_rows(
            named=True
        ):
            self._partial.setdefault(row["prompt_id"], {})[row["sample_idx"]] = row
        if levels is not None:  # follow draws from _stored and the store, not from texts kept in memory
            self._partial = {}
        lost = status.filter(pl.col("error").is_not_null() & pl.col("prompt_id").is_in(list(self._waiting)))
        for row in lost.iter_rows(named=True):  # a failed sample completes its group too
            self._partial.setdefault(row["prompt_id"], {})[row["sample_idx"]] = {**dict.fromkeys(TEXT_SCHEMA), **row}
        work = []
        by_prompt = {
            pid: group for (pid,), group in text.filter(pl.col("prompt_id").is_in(list(pending))).group_by("prompt_id")
        }
        failed = status.filter(pl.col("error").is_not_null()).height
        for pid in sorted(pending):
            work += self._groups(pid, by_prompt.get(pid), pools[pid], have)
        self.note = f"{failed} failed sample(s) not judged" if failed else ""
        return pl.DataFrame(work) if work else pl.DataFrame()

    def _need(self, levels: dict[str, int]) -> pl.Expr:
        """Each row's prompt's level."""
        return pl.col("prompt_id").replace_strict(levels, default=self.k, return_dtype=pl.Int64)

    def _groups(self, prompt_id: str, text: pl.DataFrame | None, pool: str, have: set) -> list[dict]:
        """The pending group requests (one per order) of a prompt whose samples are all stored."""
        if text is None or not text.height:
            return []
        usable = judgeable(text)
        if self.prefilter is not None and usable.height:
            passed = prefiltered(usable, self.prefilter).filter(pl.col("exclusion").is_null())
            usable = usable.join(passed, on=SAMPLE_KEY, how="semi")
        if not usable.height:
            return []
        by_idx = {row["sample_idx"]: row for row in usable.iter_rows(named=True)}
        work = []
        for order in range(self.cfg.orders):
            if (prompt_id, order, pool) in have:
                continue
            members = shown_order(self.cfg.sampling.seed, prompt_id, list(by_idx), order)
            created = [by_idx[i]["created_at"] for i in members]
            work.append({
                "prompt_id": prompt_id, "sampler_fp": self.sampler_fp, "vote": order, "group_pool": pool,
                "group_key": group_key(prompt_id, list(zip(members, created)), order), "members": members,
                "created": created, "answers": [by_idx[i]["answer"] for i in members],
                "reasonings": [by_idx[i]["reasoning"] for i in members],
            })  # fmt: skip
        return work

    def follow(self, rows: list[dict]) -> list[dict]:
        """Samples just stored -> the groups of the prompts they complete."""
        levels = self._levels()
        if levels is not None:
            return self._follow_levels(rows, levels)
        completed = []
        for row in rows:
            pid = row["prompt_id"]
            if row["sampler_fp"] != self.sampler_fp or pid not in self._waiting or row["sample_idx"] >= self.k:
                continue
            self._partial.setdefault(pid, {})[row["sample_idx"]] = {c: row.get(c) for c in TEXT_SCHEMA}
            if len(self._partial[pid]) >= self.k:
                completed.append(pid)
        work = []
        for pid in completed:
            self._waiting.discard(pid)
            got = self._partial.pop(pid)
            ok = [r for r in got.values() if r["error"] is None]
            if not ok:
                continue
            pool = pool_key(self.sampler_fp, [(r["sample_idx"], r["created_at"]) for r in ok])
            work += self._groups(pid, pl.DataFrame(ok, schema=TEXT_SCHEMA), pool, set())
        return work

    def _follow_levels(self, rows: list[dict], levels: dict[str, int]) -> list[dict]:
        """sampler.adaptive: samples just stored -> the groups of the prompts whose current step they complete
        (every sample below the prompt's level stored, and the group not drawn at that level yet): drawn from
        the samples below the level. The texts of the samples stored since a prompt's group was last drawn
        are kept here (as at a fixed k); those of its earlier steps are read from the store, in one pass for
        every group this call completes (none for a group at its first step drawn in this run)."""
        touched = set()
        for row in rows:
            pid = row["prompt_id"]
            if row["sampler_fp"] != self.sampler_fp or row["sample_idx"] >= self.k or pid not in levels:
                continue
            self._stored.setdefault(pid, {})[row["sample_idx"]] = (row.get("error") is None, row.get("created_at"))
            self._partial.setdefault(pid, {})[row["sample_idx"]] = {c: row.get(c) for c in TEXT_SCHEMA}
            touched.add(pid)
        completed = {}
        for pid in touched:
            level, have = levels[pid], self._stored[pid]
            if level > self._drawn.get(pid, 0) and all(i in have for i in range(level)):
                completed[pid] = level
        if not completed:
            return []
        kept = {pid: self._partial.pop(pid, {}) for pid in completed}
        earlier = [
            (pid, i)
            for pid, level in completed.items()
            for i in range(level)
            if self._stored[pid][i][0] and i not in kept[pid]
        ]
        by_prompt: dict[str, list[dict]] = {}
        if earlier:
            keys = pl.DataFrame(earlier, schema={"prompt_id": pl.String, "sample_idx": pl.Int64}, orient="row")
            keys = keys.with_columns(pl.lit(self.sampler_fp).alias("sampler_fp"))
            for row in sample_text(self._store, keys, self.prompt_ids, self.hashes).iter_rows(named=True):
                by_prompt.setdefault(row["prompt_id"], []).append(row)
        work = []
        for pid, level in sorted(completed.items()):
            self._drawn[pid] = level
            self._waiting.discard(pid)
            members = by_prompt.get(pid, []) + [r for i, r in kept[pid].items() if i < level]
            members = [r for r in members if r["error"] is None]
            if not members:
                continue
            group = pl.DataFrame(members, schema=TEXT_SCHEMA).sort("sample_idx")
            pool = pool_key(self.sampler_fp, list(zip(group["sample_idx"], group["created_at"])))
            asked = [r for r in self._groups(pid, group, pool, set()) if (pid, r["vote"], pool) not in self._asked]
            self._asked.update((pid, row["vote"], pool) for row in asked)
            work += asked
        return work

    def render(self, work: list[dict]) -> list[dict]:
        """Group work rows -> requests. A row of one sample with no group (what `factory plan` renders to
        estimate requests not planned yet) becomes a group of k copies of its answer."""
        out = []
        for row in work:
            if "members" not in row:
                members = list(range(self.k))
                row = {
                    **row,
                    "members": members,
                    "created": [None] * self.k,
                    "group_pool": "",
                    "group_key": "",
                    "answers": [row.get("answer") or ""] * self.k,
                    "reasonings": [row.get("reasoning") or ""] * self.k,
                }
            answers = [{"answer": a, "reasoning": r} for a, r in zip(row["answers"], row["reasonings"])]
            seed = derive_seed(self.cfg.sampling.seed, "judge-group", row["prompt_id"], row["group_key"])
            messages = render_group(self.rubric, self.prompts[row["prompt_id"]], answers, self.cfg)
            out.append(
                {k: v for k, v in row.items() if k not in ("answers", "reasonings")}
                | {"seed": seed, "messages": messages}
            )
        return out

    def failed(self, requests: list[dict], reason: str) -> list[dict]:
        return group_failed(requests, reason, self.cfg, self.judge_fp)

