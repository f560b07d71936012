"""The run graph: which stages and judges a config runs, under which fingerprints, writing which columns.

One entry per judge (the primary GenRM `judge`, each `judges.<name>`, each `reward_models.<name>`), with
everything every command needs to know of it; run, eval, plan, calibrate, report and the pair kernel's
checks read it instead of naming conventions:

    graph = RunGraph(cfg)                     # model identities and fingerprints (no request, no Ray)
    graph.fingerprints                        # {"sampler": fp, "judge": fp, "judge_b": fp, "reward_rm": fp}
    [(j.stage, j.key, j.column) for j in graph.judges]
        -> [("judge", "judge", "quality"), ("judge_b", "judges.b", "quality_b"),
            ("reward_rm", "reward_models.rm", "reward_rm"),
            ("verify_ref", "verifiers.ref", "verify_ref")]   # a verifier makes no request: no stage
    graph.stages(prompts)                     # SampleStage, JudgeStage..., RewardStage... for the executor
    graph.scored(store, prompts, fps)         # samples + every judge's per-sample columns, as stored

A new judge kind touches five files (six if it is priced):
    factory/config/kinds.py      its vocabulary: config section, stage / column / dims / price names, table,
                                 scale, term sources (the config's, the kernel's and the report's column
                                 checks, the prices and the preflight hints derive from it)
    factory/config/<section>.py  its entry's config dataclass and checks
    factory/config/run.py        the RunConfig field of its section (factory/config/cost.py: its prices)
    factory/graph.py             its JudgeNode subclass here (entries, fingerprint, check, stage, per-sample
                                 columns, usable rows) in NODES
    factory/stages/<kind>.py     its stage (none for a kind computed when read, as the verifiers)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import polars as pl

from factory.config import ConfigError, EngineConfig, RunConfig
from factory.config.kinds import GENRM, JUDGE_KINDS, REWARD_MODEL, VERIFIER, JudgeKind, judge_kind
from factory.engines import kind_of
from factory.executor.budget import at_rate
from factory.pairs import prejudge
from factory.pairs.prejudge import Prefilter
from factory import defaults
from factory import prompts as prompts_mod
from factory.prompts import read_text
from factory.rundir.schemas import JUDGMENTS, SAMPLES
from factory.stages import judge as judge_stage
from factory.stages.adaptive import AdaptiveK
from factory.stages import reward as reward_stage
from factory.stages import sample as sample_stage
from factory.stages import verifier as verifier_stage

DEFAULT_RUBRIC = defaults.RUBRIC  # package data, so an installed factory has it (factory/defaults.py)
NO_JUDGMENTS = pl.from_arrow(JUDGMENTS.empty_table())  # the primary judge's when judge.enabled is false
KEYS = ["prompt_id", "sample_idx"]


# -- identities ------------------------------------------------------------------------------------
def model_id(engine: EngineConfig, key: str = "engine") -> str:
    """The model's identity in fingerprints (a GGUF's file name and size, not its folder); a missing
    model file is one ConfigError naming `key` (e.g. sampler.engine.model)."""
    try:
        return kind_of(engine).model_id(engine)
    except FileNotFoundError as exc:
        raise ConfigError(f"{key}.{str(exc).split('engine.', 1)[-1]}") from None


def check_credentials(engine: EngineConfig, key: str) -> None:
    """The engine's credentials are there (e.g. its api_key_env is set); else a ConfigError naming `key`."""
    missing = kind_of(engine).missing_credentials(engine)
    if missing:
        raise ConfigError(f"{key}.{missing}")


def check_file(key: str, path: str) -> None:
    """A local file a key names must exist (checked before it is read, so the error names the key)."""
    if path and "://" not in path and not Path(path).is_file():
        raise ConfigError(f"{key}: file not found: {path}")


def rubric_text(cfg: RunConfig, judge: Any = None) -> str:
    """The rubric of `judge` (default: the primary judge, cfg.judge)."""
    judge = judge if judge is not None else cfg.judge
    return read_text(judge.rubric_file) if judge.rubric_file else DEFAULT_RUBRIC.read_text().strip()


def template_text(cfg: RunConfig) -> str:
    parts = [read_text(p) if p else "" for p in (cfg.prompts.system_prompt_file, cfg.prompts.user_template_file)]
    return "\n---\n".join(parts)


def check_prompts(cfg: RunConfig, path: str = "", key: str = "prompts.path") -> None:
    """The prompts' URL scheme (`path`, default prompts.path) and the user template, each error naming its key."""
    prompts_mod.check_url(path or cfg.prompts.path, key)
    if cfg.prompts.user_template_file:
        prompts_mod.check_template(read_text(cfg.prompts.user_template_file), "prompts.user_template_file")


def prefilter(cfg: RunConfig, prompts: pl.DataFrame) -> Prefilter | None:
    """What the judges' stages filter with first (pairs.filter_before_judge): the pair build's judge-free
    exclusions, the verifiers' filters among them (their verdicts computed on the samples planned)."""
    if not cfg.pairs.filter_before_judge:
        return None
    wanted = set(prejudge.verifier_columns(cfg.pairs))
    nodes = [n for n in VerifierNode.entries(cfg) if n.column in wanted]

    def verdicts(samples: pl.DataFrame) -> pl.DataFrame:
        out = samples.select(*KEYS)
        for node in nodes:
            out = out.join(node.read(samples, prompts), on=KEYS, how="left")  # type: ignore[attr-defined]
        return out

    return Prefilter(cfg.pairs, verdicts if nodes else None, prompts)


# -- judges ------------------------------------------------------------------------------------------
@dataclass
class JudgeNode:
    """One judge of the graph: entry `name` of its kind (None: the kind's primary entry, `judge`). `stage`
    names its stage, fingerprint, manifest `requests`/`judges` entry and metrics; `key` its config key;
    `column` the scored column it makes (dims: more columns); `price` its StageCostConfig (None: not priced)
    under `price_key`. The names come from the kind's vocabulary (factory/config/kinds.py)."""

    vocab: ClassVar[JudgeKind]
    requests: ClassVar[bool] = True  # false: computed in process when read (no engine, no executor stage)
    name: str | None
    config: Any
    engine: EngineConfig  # the pool's engine (a reward model's scoring variant)
    fingerprint: str = ""
    dims: dict[str, str] = field(default_factory=dict)  # dim column -> its config key
    price: Any = None

    @property
    def kind(self) -> str:
        return self.vocab.name

    @property
    def table(self) -> str:
        return self.vocab.table

    @property
    def stage(self) -> str:
        return self.vocab.stage_of(self.name)

    @property
    def key(self) -> str:
        return self.vocab.key_of(self.name)

    @property
    def column(self) -> str:
        return self.vocab.column_of(self.name)

    @property
    def price_key(self) -> str:
        return self.vocab.price_key(self.name)

    @classmethod
    def named(cls, cfg: RunConfig) -> list[tuple[str | None, Any]]:
        """(name, config entry) of every entry of this kind in `cfg`: the primary one first, if the kind has one."""
        primary = [(None, getattr(cfg, cls.vocab.primary))] if cls.vocab.primary else []
        return primary + list(getattr(cfg, cls.vocab.section).items())

    @property
    def fanout(self) -> int:
        """Rows it stores per judged sample (a GenRM's votes)."""
        return int(getattr(self.config, "votes", 1) or 1)

    def columns(self) -> dict[str, str]:
        """Scored column -> the config key that makes it."""
        return {self.column: self.key} | self.dims

    def make_stage(self, cfg: RunConfig, prompts: pl.DataFrame, fps: dict[str, str]) -> Any:
        raise NotImplementedError

    def per_sample(self, frame: pl.DataFrame) -> list[pl.DataFrame]:
        """Its stored rows -> frames keyed by (prompt_id, sample_idx) holding its scored columns."""
        raise NotImplementedError

    def usable(self) -> pl.Expr:
        """Which of its stored rows count as ok."""
        raise NotImplementedError

    def counts(self, frame: pl.DataFrame) -> dict[str, int]:
        ok = frame.filter(self.usable()).height if frame.height else 0
        return {"ok": ok, "failed": frame.height - ok}

    def cut_key(self) -> str | None:
        """The config key that bounds its replies (a judgment cut there is counted `truncated`), if any."""
        return None

    def check(self) -> None:
        """Preflight of this judge beyond its engine (rubric, routes), each error naming its key."""


@dataclass
class GenRMNode(JudgeNode):
    """A generative judge: `judge` or `judges.<name>` (stage judge_<name>), table judgments/."""

    vocab: ClassVar[JudgeKind] = GENRM
    rubric: str = ""

    @classmethod
    def entries(cls, cfg: RunConfig, stored: dict[str, str] | None = None) -> list[JudgeNode]:
        return [cls.of(cfg, name, stored) for name, judge in cls.named(cfg) if judge.enabled]

    @classmethod
    def of(cls, cfg: RunConfig, name: str | None = None, stored: dict[str, str] | None = None) -> GenRMNode:
        """The node of one GenRM entry (default the primary `judge`, enabled or not: factory eval and factory
        calibrate judge with it): its rubric read (the file checked first) and its fingerprint."""
        judge = getattr(cfg, GENRM.primary) if name is None else getattr(cfg, GENRM.section)[name]
        key, prefix = GENRM.key_of(name), GENRM.dims_of(name)
        check_file(f"{key}.rubric_file", judge.rubric_file)
        dims = {f"{prefix}{d}": f"{key}.dimension_names" for d in judge.dimension_names} if judge.dimensions else {}
        rubric = rubric_text(cfg, judge)
        fp = (
            stored.get(GENRM.stage_of(name), "")
            if stored is not None
            else judge_stage.judge_fingerprint(judge, model_id(judge.engine, f"{key}.engine"), rubric)
        )
        return cls(name, judge, judge.engine, fp, dims, GENRM.price_of(cfg.cost, name), rubric)

    def check(self) -> None:
        judge_stage.check_rubric(self.rubric, f"{self.key}.rubric_file")
        judge_stage.check_room(self.config, self.key)

    def make_stage(self, cfg: RunConfig, prompts: pl.DataFrame, fps: dict[str, str]) -> Any:
        stage = judge_stage.GroupJudgeStage if self.config.mode == "group" else judge_stage.JudgeStage
        return stage(
            cfg, fps, prompts, self.rubric, name=self.stage, judge=self.config, prefilter=prefilter(cfg, prompts)
        )

    def per_sample(self, frame: pl.DataFrame) -> list[pl.DataFrame]:
        prefix = self.vocab.dims_of(self.name)
        if not frame.height:
            return [
                pl.DataFrame(
                    {"prompt_id": [], "sample_idx": [], self.column: []},
                    schema={"prompt_id": pl.String, "sample_idx": pl.Int64, self.column: pl.Float64},
                )
            ]
        quality = judge_stage.sample_quality(frame).select(*KEYS, pl.col("quality").alias(self.column))
        return [quality, judge_stage.sample_dims(frame, prefix)]

    def usable(self) -> pl.Expr:
        return pl.col("parse_status").is_in(judge_stage.USABLE)

    def counts(self, frame: pl.DataFrame) -> dict[str, Any]:
        """ok / failed, of the failed those cut at this judge's own max_tokens (`truncated`), its mode, and the
        prompt tokens one judged sample cost (a group request's are split over the samples it shows): what the
        report's judges table compares the modes with."""
        tokens = frame["prompt_tokens"].drop_nulls() if frame.height and "prompt_tokens" in frame.columns else None
        per = round(float(tokens.mean()), 1) if tokens is not None and tokens.len() else None  # type: ignore[arg-type]
        cut = frame.filter(pl.col("parse_status") == "truncated").height if frame.height else 0
        return super().counts(frame) | {"truncated": cut, "mode": self.config.mode, "prompt_tokens_per_judgment": per}

    def cut_key(self) -> str | None:
        return f"{self.key}.sampling.max_tokens"


@dataclass
class RewardNode(JudgeNode):
    """A reward model: `reward_models.<name>` (stage reward_<name>), table rewards/."""

    vocab: ClassVar[JudgeKind] = REWARD_MODEL

    @classmethod
    def entries(cls, cfg: RunConfig, stored: dict[str, str] | None = None) -> list[JudgeNode]:
        nodes: list[JudgeNode] = []
        for name, rm in cls.named(cfg):
            stage, key = REWARD_MODEL.stage_of(name), REWARD_MODEL.key_of(name)
            fp = (
                stored.get(stage, "")
                if stored is not None
                else reward_stage.reward_fingerprint(rm, model_id(rm.engine, f"{key}.engine"))
            )
            scorer = kind_of(rm.engine).scorer_config(rm.engine)
            nodes.append(cls(name, rm, scorer, fp, {}, REWARD_MODEL.price_of(cfg.cost, name)))
        return nodes

    def check(self) -> None:
        engine = self.config.engine
        routes = kind_of(engine).score_routes
        if not routes:
            raise ConfigError(
                f"{self.key}.engine.kind: the {engine.kind} engine cannot score; use vllm (in process, "
                "pooling runner) or openai (a vLLM server's classify/pooling/score routes)"
            )
        if self.config.route not in routes:
            raise ConfigError(
                f"{self.key}.route: the {engine.kind} engine serves {', '.join(routes)}, not {self.config.route!r}"
            )

    def make_stage(self, cfg: RunConfig, prompts: pl.DataFrame, fps: dict[str, str]) -> Any:
        return reward_stage.RewardStage(
            cfg, self.name, fps, prompts, engine=self.engine, prefilter=prefilter(cfg, prompts)
        )

    def per_sample(self, frame: pl.DataFrame) -> list[pl.DataFrame]:
        return [reward_stage.sample_rewards(frame, self.column)]

    def usable(self) -> pl.Expr:
        return pl.col("error").is_null()


@dataclass
class VerifierNode(JudgeNode):
    """A verifier: `verifiers.<name>` (stage verify_<name>), no table, no engine, no request. Its column is
    computed from the stored samples and prompts whenever they are read (factory/stages/verifier.py)."""

    vocab: ClassVar[JudgeKind] = VERIFIER
    requests: ClassVar[bool] = False

    @classmethod
    def entries(cls, cfg: RunConfig, stored: dict[str, str] | None = None) -> list[JudgeNode]:
        return [cls(name, v, EngineConfig(), verifier_stage.verifier_fingerprint(v)) for name, v in cls.named(cfg)]

    def check(self) -> None:
        verifier_stage.check(self.config, self.key)

    def make_stage(self, cfg: RunConfig, prompts: pl.DataFrame, fps: dict[str, str]) -> Any:
        return None  # nothing for the executor to run

    def read(self, samples: pl.DataFrame, prompts: pl.DataFrame) -> pl.DataFrame:
        """Its rows: one verdict per sample."""
        return verifier_stage.verdicts(samples, prompts, self.config, self.column, self.key)

    def per_sample(self, frame: pl.DataFrame) -> list[pl.DataFrame]:
        return [frame]

    def usable(self) -> pl.Expr:
        return pl.col(self.column).is_not_null()


# The node of every judge kind (factory/config/kinds.py lists the kinds, in graph order).
NODES: dict[str, type[JudgeNode]] = {node.vocab.name: node for node in (GenRMNode, RewardNode, VerifierNode)}


# -- the graph --------------------------------------------------------------------------------------
@dataclass
class Scored:
    """What is stored of a run, read through the graph: its samples, each judge's current rows (by
    stage name), and the scored frame the pair kernel reads (samples + every judge's columns)."""

    samples: pl.DataFrame
    frames: dict[str, pl.DataFrame]
    scored: pl.DataFrame

    @property
    def judgments(self) -> pl.DataFrame:
        """The primary judge's judgments (empty when judge.enabled is false)."""
        return self.frames.get("judge", NO_JUDGMENTS)


class RunGraph:
    """The stages and judges of `factory run` for one config (see the module doc)."""

    def __init__(self, cfg: RunConfig, stored: dict[str, str] | None = None):
        """`stored`: a stored run's fingerprints, taken as they are (no model file is looked at: a run
        directory copied to a machine without the model still reads); None: computed from the config."""
        self.cfg = cfg
        if stored is None:
            check_file("prompts.system_prompt_file", cfg.prompts.system_prompt_file)
            check_file("prompts.user_template_file", cfg.prompts.user_template_file)
        self.judges: list[JudgeNode] = [node for k in JUDGE_KINDS for node in NODES[k.name].entries(cfg, stored)]
        if stored is not None:
            self.sampler_fp = stored.get("sampler", "")
            return
        engine = cfg.sampler.engine
        self.sampler_fp = sample_stage.sampler_fingerprint(
            engine, cfg.sampler.sampling, model_id(engine, "sampler.engine"), template_text(cfg)
        )

    @property
    def fingerprints(self) -> dict[str, str]:
        return {"sampler": self.sampler_fp, **{j.stage: j.fingerprint for j in self.judges}}

    def engines(self) -> list[tuple[str, EngineConfig]]:
        """(config key, engine) of every stage."""
        return [
            ("sampler.engine", self.cfg.sampler.engine),
            *((f"{j.key}.engine", j.config.engine) for j in self.requesting),
        ]

    @property
    def requesting(self) -> list[JudgeNode]:
        """The judges that send requests (every kind but the verifiers): the executor's stages."""
        return [j for j in self.judges if j.requests]

    def columns(self) -> dict[str, str]:
        """Every judge column the scored samples will have -> the config key that makes it."""
        return {column: key for j in self.judges for column, key in j.columns().items()}

    def prices(self) -> dict[str, Any]:
        """Stage -> its StageCostConfig, for the budget and the plan: sample (cost.sampler), then every judge
        with a price (cost.judge, cost.judges.<name>, cost.reward_models.<name>); an unpriced one is left out."""
        cfg, priced = self.cfg, [j for j in self.requesting if j.price is not None]
        sample = at_rate(cfg.cost.sampler, cfg.sampler.engine)  # a stage sending by batch pays the batch rate
        return {"sample": sample, **{j.stage: at_rate(j.price, j.config.engine) for j in priced}}

    def price_keys(self) -> dict[str, str]:
        """Stage -> the config key of its prices (named where a paid stage has none)."""
        return {"sample": "cost.sampler", **{j.stage: j.price_key for j in self.requesting}}

    def request_keys(self) -> list[str]:
        """The keys of manifest `requests`: sampler, then each judge stage."""
        return ["sampler", *(j.stage for j in self.requesting)]

    def judge(self, stage: str) -> JudgeNode:
        return next(j for j in self.judges if j.stage == stage)

    # -- preflight ------------------------------------------------------------------------------
    def preflight(self, credentials: bool = True) -> None:
        """Everything that can be checked before a request is made, each error naming its key (the model
        files were checked when the fingerprints were made). `credentials`: False for a plan (sends nothing)."""
        from factory import pairs as pair_kernel

        cfg = self.cfg
        if credentials:
            for where, engine in self.engines():
                check_credentials(engine, where)
        for node in self.judges:
            node.check()
        if not self.judges:
            raise ConfigError(
                "judge.enabled: false, and no other judge (judges.<name>, reward_models.<name>) is configured"
            )
        seen: dict[str, str] = {}
        for node in self.judges:
            if node.fingerprint in seen:
                raise ConfigError(
                    f"{node.key}: the same judge as {seen[node.fingerprint]} (same model, rubric, settings); drop one"
                )
            seen[node.fingerprint] = node.key
        made = self.columns()
        for column, key in pair_kernel.required(cfg.pairs).items():
            if pair_kernel.is_judge_column(column) and column not in made:
                have = ", ".join(sorted(made)) or "none"
                hint = judge_kind(column).hint(column)  # type: ignore[union-attr]
                raise ConfigError(
                    f"{key}: no configured judge makes the column {column!r} ({hint}); judge columns: {have}"
                )
        tags_key = pair_kernel.required(cfg.pairs).get("tags")
        tags_key = tags_key or ("pairs.balance.column" if cfg.pairs.balance.column == "tags" else None)
        if tags_key and not cfg.judge.tags:
            raise ConfigError(
                f"{tags_key}: reads the judge's tags, which the judge is not asked for (set judge.tags=true)"
            )
        allowed = cfg.judge.tag_values if cfg.judge.tags else []
        for term in pair_kernel.resolve(cfg.pairs)[0]:
            if allowed and term.reads == ("tags",) and term.column.removeprefix("tag_") not in allowed:
                raise ConfigError(
                    f"{term.key}: the tag {term.column.removeprefix('tag_')!r} is not one of judge.tag_values "
                    f"{list(allowed)} (the judge's other tags are dropped: the term could never hold)"
                )
        if not cfg.prompts.path:
            raise ConfigError("prompts.path: no prompts file given")
        check_prompts(cfg)
        from factory.pairs import export as export_mod

        export_mod.preflight(cfg)  # a student template (export.template) loads and renders

    def check_reads(self, prompts: pl.DataFrame) -> None:
        """Before any request, once the prompts are loaded (factory run, factory plan): every column the pair
        build reads (pairs.balance.column, the terms', pairs.dedupe's, the prompt-side texts') is one the scored
        samples will have or the prompts hold; else a ConfigError naming the key and the columns there are."""
        from factory import pairs as pair_kernel

        pair_kernel.check_reads(self.cfg.pairs, self.scored_columns(), prompts.columns)
        for node in self.judges:  # a verifier's label or reference column is one the prompts hold
            if isinstance(node, VerifierNode):
                verifier_stage.check(node.config, node.key, prompts)

    def scored_columns(self) -> list[str]:
        """The columns of `scored(...)` as the config decides them, before any sample: the samples' own, the
        primary judge's quality columns and tags (and its order flips' under judge.orders 2), every judge's."""
        names = [*SAMPLES.names, *judge_stage.QUALITY_COLUMNS, "tags"]
        if self.cfg.judge.enabled and self.cfg.judge.orders == 2:
            names += judge_stage.ORDER_COLUMNS
        return names + [column for column in self.columns() if column not in names]

    # -- stages and what they stored --------------------------------------------------------------
    def stages(self, prompts: pl.DataFrame, fps: dict[str, str] | None = None) -> list:
        """sample -> every judge (each fed by stored samples). With `fps` (a stored run's fingerprints),
        a judge they lack (configured after that run) is left out."""
        fps = self.fingerprints if fps is None else fps
        judges = [j.make_stage(self.cfg, prompts, fps) for j in self.requesting if j.stage in fps]
        adaptive = None
        if self.cfg.sampler.adaptive.enabled:  # the sampler follows itself and every judge
            follows = ("sample", *(stage.name for stage in judges))
            adaptive = AdaptiveK(self.cfg, lambda store: self.decided_view(store, prompts, fps), follows)
        sampler = sample_stage.SampleStage(self.cfg, fps["sampler"], prompts, adaptive=adaptive)
        if adaptive is not None:  # a group judge draws each prompt's group at the sampler's current level
            for stage in judges:
                if hasattr(stage, "levels"):
                    stage.levels = sampler.levels_now
        return [sampler, *judges]

    def decided_view(
        self, store: Any, prompts: pl.DataFrame, fps: dict[str, str] | None = None
    ) -> tuple[pl.DataFrame, pl.DataFrame | None]:
        """What sampler.adaptive decides a group from: the scored samples as the pair build reads them,
        and the (prompt_id, sample_idx) that every requesting judge has answered with all its votes (None
        when no judge sends requests)."""
        from factory import pairs as pair_kernel

        read = self.scored(store, prompts, fps)
        judged = None
        for node in self.requesting:
            if node.stage not in read.frames:
                continue
            frame = read.frames[node.stage]
            done = frame.group_by(KEYS).agg(pl.len().alias("n")).filter(pl.col("n") >= node.fanout).select(KEYS)
            judged = done if judged is None else judged.join(done, on=KEYS, how="semi")
        return pair_kernel.attach(read.scored, prompts, self.cfg.pairs), judged  # type: ignore[return-value]

    def scored(self, store: Any, prompts: pl.DataFrame, fps: dict[str, str] | None = None) -> Scored:
        """Samples with every judge's columns, in the names the pair kernel reads: quality (and score,
        quality_spread, votes) of the primary judge, dim_<d> and tags from its judgments, quality_<name> and
        dim_<name>_<d> of each judges.<name>, reward_<name> (raw) of each reward model; null where unjudged."""
        fps = self.fingerprints if fps is None else fps
        sample, *judges = self.stages(prompts, fps)
        samples = sample.read(store)
        frames = {stage.name: stage.read(store, samples) for stage in judges}
        judgments = frames.get("judge", NO_JUDGMENTS)
        scored = judge_stage.with_quality(samples, judgments)
        parts = [judge_stage.sample_dims(judgments), judge_stage.sample_tags(judgments)]
        if self.cfg.judge.enabled and self.cfg.judge.orders == 2 and judgments.height:  # order flips (pairs)
            parts.append(judge_stage.order_quality(judgments))
        for node in self.judges:
            if not node.requests:  # a verifier: computed from what was just read
                frames[node.stage] = node.read(samples, prompts)  # type: ignore[attr-defined]
            if node.stage == "judge" or node.stage not in frames:
                continue
            parts.extend(node.per_sample(frames[node.stage]))
        for part in parts:
            if len(part.columns) > len(KEYS):
                scored = scored.join(part, on=KEYS, how="left")
        return Scored(samples, frames, scored)

    def judge_counts(self, frames: dict[str, pl.DataFrame]) -> dict[str, dict[str, int]]:
        """Per judge stage: stored rows of this run's samples that are usable (ok) or not (failed)."""
        return {j.stage: j.counts(frames[j.stage]) for j in self.judges if j.stage in frames}

    def judges_manifest(self, counts: dict[str, dict[str, int]], requests: dict[str, int]) -> dict[str, dict]:
        """manifest `judges`: per judge stage its kind, the scored column it makes, fingerprint, stored
        rows ok / failed (a generative judge's: of them `truncated`, cut at its `max_tokens_key`) and the
        requests this invocation made."""
        return {
            j.stage: {
                "kind": j.kind, "column": j.column, "fingerprint": j.fingerprint,
                **counts.get(j.stage, {"ok": 0, "failed": 0}), "requests": requests.get(j.stage, 0),
                **({"max_tokens_key": j.cut_key()} if j.cut_key() else {}),
            }
            for j in self.judges
        }  # fmt: skip
