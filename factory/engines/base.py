"""The one small protocol every engine implements.

An engine takes a batch of chat requests and returns one `Completion` per request, in the same
order, tagged with the request's `tag`. It never raises for a single bad request: a request that
fails (prompt too long, API error after retries) comes back with `error` set, so the rest of the
batch goes on. `on_done(completion)` is called in the caller's thread as each request finishes, so a
stage can hand finished rows on (and the executor store them) before the slowest request of the batch
is back. `finished` counts the requests answered so far: the executor's watchdog reads it, so a batch
slower than the watchdog is never mistaken for a stall while its requests complete.

    engine.generate([Request(messages=[...], max_tokens=64, seed=7, tag=("p1", 0))], on_done=print)
    -> [Completion(tag=("p1", 0), text="...", finish_reason="stop", completion_tokens=41, ...)]

Stages and the executor only ever see this protocol.

A reply is untrusted input: `gather` (which every engine hands its results through) checks each one
against its request before anyone sees it (`checked`): token counts are integers in 0..2**63-1 (what the
stores' int64 columns hold), an answer is no longer than its request's `max_tokens` could produce
(usage.completion_tokens <= max_tokens, and at most MAX_CHARS_PER_TOKEN characters a token), texts are
text, a score is a finite number. A reply that fails becomes that request's error, naming the field:

    Completion(tag=t, text="hi", completion_tokens=-5)
    -> Completion(tag=t, error="invalid reply: usage.completion_tokens is -5, not a token count (an integer in ...)")

Scoring is a capability some engines have besides generating: `engine.score(requests, on_done)` takes
`ScoreRequest`s (a conversation that ends with the answer to score) and returns one `Score` per request,
in order, with the same never-raise-per-request rule. A reward-model judge (factory/stages/reward.py)
needs it. Whether an engine kind can score, and by which routes, is asked of its module before any
engine is built (`factory.engines.score_routes`).

    engine.score([ScoreRequest(messages=[{"role": "user", ...}, {"role": "assistant", "content": "Link 3!"}], tag=k)])
    -> [Score(tag=k, value=1.73, prompt_tokens=41, ...)]
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass
class Request:
    messages: list[dict[str, str]]
    max_tokens: int
    temperature: float = 0.8
    top_p: float = 1.0
    seed: int = 0
    json_schema: dict | None = None  # constrain the output where the engine supports it
    stop: list[str] | None = None  # the reply ends before the first of these
    tag: Any = None  # the caller's key, handed back untouched on the Completion

    def chat_body(self) -> dict[str, Any]:
        """The OpenAI-style chat fields every HTTP-ish engine sends (each adds its own extras)."""
        body = {
            "messages": self.messages,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
        }
        if self.stop:
            body["stop"] = list(self.stop)
        return body


@dataclass
class Completion:
    tag: Any
    text: str = ""
    reasoning: str | None = None  # set when the engine returns reasoning apart (reasoning_content)
    finish_reason: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reasoning_tokens: int | None = None  # set when the engine's usage reports it
    cached_tokens: int | None = None  # of prompt_tokens, those the server's prefix cache served (when it says)
    latency_s: float = 0.0
    error: str | None = None
    attempts: int = 1
    extra: dict = field(default_factory=dict)


OnDone = Callable[[Completion], None]


@dataclass
class ScoreRequest:
    """One conversation for a reward model: the prompt's messages and the assistant's answer last.
    `route`: classify (the conversation through the model's chat template, the head's outputs),
    pooling (the same through a server's /pooling route), score (a server's /score route: the prompt's
    text against the answer, for cross-encoder models). `label`: which output of the head is the score.
    `activation`: False = the raw logit (what a reward model's score is), True = sigmoid / softmax."""

    messages: list[dict[str, str]]
    route: str = "classify"
    label: int = 0
    activation: bool = False
    tag: Any = None


@dataclass
class Score:
    tag: Any
    value: float | None = None  # None exactly when `error` is set
    error: str | None = None
    prompt_tokens: int | None = None
    latency_s: float = 0.0
    attempts: int = 1


OnScored = Callable[[Score], None]


class FatalEngineError(RuntimeError):
    """Raised by an engine when going on cannot succeed for any request (the server refuses the
    credentials: HTTP 401/403). The executor stops the whole run on it, stores no row for the
    requests it hit, and exits non-zero with this message (which must never hold a secret)."""


@runtime_checkable
class Engine(Protocol):
    model_name: str
    supports_json_schema: bool
    concurrent_batches: bool  # generate() may run in several threads at once (batches share the slots)
    finished: int  # requests answered so far, failed ones included

    def generate(self, requests: list[Request], on_done: OnDone | None = None) -> list[Completion]:
        """One Completion per request, same order; failures are Completions with `error` set.
        `on_done` is called in the caller's thread once per request, as each one finishes."""
        ...

    def count_tokens(self, texts: list[str]) -> list[int] | None:
        """Token counts of plain texts with the model's tokenizer, or None when unknown."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Scorer(Protocol):
    """An engine with the score capability (see the module doc)."""

    finished: int

    def score(self, requests: list[ScoreRequest], on_done: OnScored | None = None) -> list[Score]: ...


@dataclass(frozen=True)
class Resources:
    """What Ray reserves for one replica: `gpus` in all, extra actor options (e.g. num_gpus) and, when
    the replica spans several GPUs, its placement group's (bundles, strategy)."""

    gpus: int = 0
    actor_options: dict[str, Any] = field(default_factory=dict)
    bundles: tuple[list[dict[str, float]], str] | None = None


class EngineKind:
    """What the run asks of an engine kind without building an engine: one subclass per engine module
    (its `KIND`), found by `factory.engines.kind_of(cfg)`. Nothing outside factory/engines/ branches on
    `engine.kind`: it asks the kind.

        kind_of(cfg).model_id(cfg)          identity of the model in fingerprints
        kind_of(cfg).weights(cfg)           settings that change what the model says (in fingerprints)
        kind_of(cfg).missing_credentials(cfg)   the key and why, when a credential is absent
        kind_of(cfg).token_counter(cfg)     (count(text) -> tokens, how) without loading the model
        kind_of(cfg).resources(cfg)         GPUs, actor options, placement bundles of one replica
        kind_of(cfg).score_routes           the ScoreRequest routes it serves (() = cannot score)
        kind_of(cfg).scorer_config(cfg)     the config of an engine that scores
        kind_of(cfg).engine_class()         generate (and score) live on the engine it builds
        kind_of(cfg).required               engine.* fields it cannot do without (checked when the config loads)
        kind_of(cfg).same_votes_at_zero     whether judge votes at temperature 0 would all be alike
    """

    name = ""
    score_routes: tuple[str, ...] = ()
    billed_per_token = False  # its requests go to a server that may bill per token (cost.*: unpriced warnings)
    required: tuple[str, ...] = ()  # engine.* fields that must be set for this kind (factory/config/engine.py)
    batch_api = False  # it can send requests through a provider's batch API (engine.batch)
    # Deterministic per seed at temperature 0 (a local engine): votes with different seeds would all be the same.
    same_votes_at_zero = True

    def engine_class(self) -> type:
        raise NotImplementedError

    def model_id(self, cfg: Any) -> str:
        return cfg.model

    def weights(self, cfg: Any) -> dict[str, Any]:
        return {}

    def missing_credentials(self, cfg: Any) -> str | None:
        return None

    def token_counter(self, cfg: Any) -> tuple[Callable[[str], int] | None, str]:
        return local_token_counter(cfg.tokenizer if cfg.tokenizer != "server" else "")

    def resources(self, cfg: Any) -> Resources:
        return Resources()

    def scorer_config(self, cfg: Any) -> Any:
        return cfg


_DIGESTS: dict[tuple, str] = {}


def folder_digest(folder: str | os.PathLike) -> str:
    """sha256 of a local checkpoint folder's contents: every top-level file's name and bytes (config,
    tokenizer, weights), streamed 1 MiB at a time. Sub-folders (a trainer's checkpoint-N/) and hidden files
    are not part of the model the folder loads as. A retrained checkpoint written over the same path gets a
    new digest even when its sizes and mtimes match; within one process a folder whose files' inodes, sizes
    and change times (ctime) did not move is hashed once.

        folder_digest("/ckpt/trained") -> "3f2a9c...": 64 hex digits
    """
    files = sorted((e for e in os.scandir(folder) if e.is_file() and not e.name.startswith(".")), key=lambda e: e.name)
    # ctime moves on every write and cannot be set back (utime sets only atime and mtime)
    memo = (os.path.realpath(folder), tuple((e.name, e.inode(), e.stat().st_size, e.stat().st_ctime_ns) for e in files))
    if memo in _DIGESTS:
        return _DIGESTS[memo]
    digest = hashlib.sha256()
    for entry in files:
        digest.update(f"{entry.name}\0{entry.stat().st_size}\0".encode())
        with open(entry.path, "rb") as handle:
            while chunk := handle.read(2**20):
                digest.update(chunk)
    _DIGESTS[memo] = digest.hexdigest()
    return _DIGESTS[memo]


def local_token_counter(spec: str) -> tuple[Callable[[str], int] | None, str]:
    """A token counter from a tokenizer.json file or a folder holding one (no model loaded)."""
    from pathlib import Path

    path = Path(spec).expanduser() if spec else None
    file = (path / "tokenizer.json" if path.is_dir() else path) if path is not None else None
    if file is None or not file.is_file():
        return None, "no tokenizer without loading the model"
    try:
        from tokenizers import Tokenizer
    except ImportError:
        return None, "tokenizers not installed"
    local = Tokenizer.from_file(str(file))
    return (lambda text: len(local.encode(text, add_special_tokens=False).ids) if text else 0), "counted (tokenizer)"


TOKEN_MAX = 2**63 - 1  # the largest count an int64 column holds
# The most characters one token can decode to, generously: real text averages 1.5 (Chinese) to 4 (English)
# characters a token, and the longest tokens of common vocabularies (runs of spaces or dashes) are below this.
# An answer longer than max_tokens * this cannot come from a request capped at max_tokens.
MAX_CHARS_PER_TOKEN = 32
_TOKEN_FIELDS = (
    ("prompt_tokens", "usage.prompt_tokens"),
    ("completion_tokens", "usage.completion_tokens"),
    ("reasoning_tokens", "usage.completion_tokens_details.reasoning_tokens"),
)


def token_count(value: Any) -> int | None:
    """`value` when it is a token count a store can hold (an int in 0..TOKEN_MAX, not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= TOKEN_MAX:
        return None
    return value


def _shown(value: Any) -> str:
    """A short, safe rendering of a server's value for an error text (a 10**5000 is not printed whole)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"{'-' if value < 0 else ''}an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def reply_problem(request: Request, completion: Completion) -> str | None:
    """What makes a completion unusable as the reply to `request` (see the module doc), or None."""
    for name, label in _TOKEN_FIELDS:
        value = getattr(completion, name)
        if value is not None and token_count(value) is None:
            return f"{label} is {_shown(value)}, not a token count (an integer in 0..2**63-1)"
    if completion.reasoning_tokens is not None and completion.completion_tokens is not None:
        if completion.reasoning_tokens > completion.completion_tokens:
            return (
                f"usage.completion_tokens_details.reasoning_tokens is {completion.reasoning_tokens}, more than "
                f"usage.completion_tokens ({completion.completion_tokens})"
            )
    if not isinstance(completion.text, str):
        return f"message.content is {_shown(completion.text)}, not text"
    if completion.reasoning is not None and not isinstance(completion.reasoning, str):
        return f"message.reasoning_content is {_shown(completion.reasoning)}, not text"
    if not isinstance(completion.finish_reason, str):
        return f"finish_reason is {_shown(completion.finish_reason)}, not text"
    if completion.completion_tokens is not None and completion.completion_tokens > request.max_tokens:
        tokens = completion.completion_tokens
        return f"usage.completion_tokens is {tokens}, more than the request's max_tokens {request.max_tokens}"
    chars = len(completion.text) + len(completion.reasoning or "")
    if chars > request.max_tokens * MAX_CHARS_PER_TOKEN:
        return (
            f"the reply has {chars} characters, more than max_tokens {request.max_tokens} can produce "
            f"(at most {MAX_CHARS_PER_TOKEN} characters a token)"
        )
    return None


def score_problem(score: Score) -> str | None:
    """What makes a Score unusable (a value that is not a finite number, a bad token count), or None."""
    if score.prompt_tokens is not None and token_count(score.prompt_tokens) is None:
        return f"usage.prompt_tokens is {_shown(score.prompt_tokens)}, not a token count (an integer in 0..2**63-1)"
    value = score.value
    try:
        finite = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    except OverflowError:  # an integer beyond float range
        finite = False
    if value is not None and not finite:
        return f"the score is {_shown(value)}, not a finite number"
    return None


def checked(request: Request | ScoreRequest, result: Completion | Score) -> Completion | Score:
    """`result` when it is a usable reply to `request`, else that request's error (the field named); an
    error result passes as it is. The one check of every engine's replies (gather applies it)."""
    if result.error is not None:
        return result
    if isinstance(result, Score):
        problem = score_problem(result)
        if problem is None:
            return result
        return Score(
            tag=result.tag, error=f"invalid reply: {problem}", latency_s=result.latency_s, attempts=result.attempts
        )
    problem = reply_problem(request, result)  # type: ignore[arg-type]
    if problem is None:
        return result
    return Completion(
        tag=result.tag,
        error=f"invalid reply: {problem}",
        prompt_tokens=token_count(result.prompt_tokens),
        latency_s=result.latency_s,
        attempts=result.attempts,
    )


def gather(
    requests: list[Request], futures: Iterable[concurrent.futures.Future], on_done: OnDone | None
) -> list[Completion]:
    """Wait for one future per request (futures[i] answers requests[i]); check each result against its
    request (`checked`), hand it to `on_done` in this thread as it lands (never in an engine's worker
    thread or event loop), then return them in request order. A future that raises (FatalEngineError:
    per-request failures come back as Completions) cancels the requests still pending and the error goes
    to the caller at once, without waiting for the slowest request of the batch."""
    futures = list(futures)
    if len(futures) != len(requests):
        raise RuntimeError(f"{len(futures)} futures for {len(requests)} requests")
    index = {future: i for i, future in enumerate(futures)}
    results: list[Any] = [None] * len(futures)
    try:
        for future in concurrent.futures.as_completed(futures):
            i = index[future]
            results[i] = checked(requests[i], future.result())
            if on_done is not None:
                on_done(results[i])
    except BaseException:
        for future in futures:
            future.cancel()
        raise
    return results
