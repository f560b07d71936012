"""Trainer-faithful export: the pairs as the student will be trained on them, under the student's own chat
template (export/<name>/*.parquet, TRL's *standard* format: prompt/chosen/rejected strings).

Why: pairs/ holds conversational rows; the trainer applies the policy tokenizer's chat template to them. Some
templates rewrite an assistant turn: DeepSeek-R1 and the R1 distills keep only the text after `</think>`, so
the reasoning the method shortens never reaches the loss. Here the template is applied once, by the factory,
and each side is exactly the continuation the student should produce.

    rows in:   prompt=[{system}, {user}]  chosen: reasoning="stock is 12", answer="Yes, link 3!"   (+ pairs' metadata)
    row out (DeepSeek-R1's template):
               prompt   = "<｜begin▁of▁sentence｜>SYSTEM<｜User｜>USER<｜Assistant｜><think>\\n"
                          (the generation prompt)
               chosen   = "stock is 12\\n</think>\\n\\nYes, link 3!<｜end▁of▁sentence｜>"
               rejected = ...,  prompt_id, chosen_idx, ..., strategy   (the pairs/ columns, unchanged)

How a side is made (one rule for every template):
  1. prompt = the template applied to the prompt messages with add_generation_prompt.
  2. The conversation plus the side as the assistant's message is rendered (content = `<think>\\nR\\n</think>
     \\n\\nA`, the pairs/ form; the answer alone when the sample has no reasoning); the side is that text after
     the prompt. Templates that keep the reasoning (ChatML, Llama-3, SmolLM2, Qwen3's last turn) are taken as
     they render it.
  3. A template that drops the reasoning of that turn (R1: it is not in the rendered text) gets it back in
     the student's think markers where the template puts the content: the model must produce it.
  4. The text ends at the end-of-turn token (whitespace after it is not generated); a template that writes
     none gets the tokenizer's eos_token.
Where the student's own template writes a think block on every final turn, the side is what it writes (R1's
generation prompt opens `<think>\\n`, so a side without reasoning closes it; Qwen3 writes `<think>\\n\\n</think>`
on its last turn): that is the student's format, not an empty block the factory adds.

The SFT exports (sft/filter_long/, sft/dp_sft/) get the same treatment: sft/<export>.<name>/*.parquet holds each
of their rows as TRL prompt/completion strings under the student's template (`templated_sft`), the completion
what the student produces (reasoning in its markers, answer, end-of-turn), beside the conversational form.

    row in (sft/filter_long/):  prompt_id, sample_idx, messages=[..., {assistant}], completion_tokens, quality, source
    row out (sft/filter_long.r1/): prompt = "...<｜Assistant｜><think>\n", completion = "stock is 12\n</think>\n\nYes,
                                link 3!<｜end▁of▁sentence｜>", prompt_id, sample_idx, completion_tokens, quality, source

The template (export.template) is a tokenizer folder (chat_template.jinja or tokenizer_config.json), a
tokenizer_config.json, or a .jinja file; special tokens (bos_token, eos_token) come from the
tokenizer_config.json beside it. Rendered with jinja2 the way transformers does (sandboxed, trim_blocks,
lstrip_blocks, loop controls, tojson, raise_exception, strftime_now); nothing is downloaded.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import polars as pl

from factory.config import ConfigError

SENTINEL_REASONING = "\u2063reasoning-probe\u2063"
SENTINEL_ANSWER = "\u2063answer-probe\u2063"
SENTINEL_BOS = "\u2063bos-probe\u2063"
_PROBE = [{"role": "system", "content": "system probe"}, {"role": "user", "content": "user probe"}]


@dataclass(frozen=True)
class StudentTemplate:
    """A student's chat template with its special tokens. `source` names where it came from."""

    source: str
    text: str
    bos_token: str = ""
    eos_token: str = ""
    think_open: str = "<think>"
    think_close: str = "</think>"

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool, bos_token: str | None = None) -> str:
        return _compiled(self.text).render(
            messages=messages, add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token if bos_token is None else bos_token, eos_token=self.eos_token,
        )  # fmt: skip

    def writes_bos(self) -> bool:
        """Whether the template starts with its `bos_token` variable (not a literal that happens to be equal:
        SmolLM2's bos_token is `<|im_start|>`, which its template writes as ChatML text)."""
        return bool(self.bos_token) and self.render(_PROBE, True, bos_token=SENTINEL_BOS).startswith(SENTINEL_BOS)

    def content(self, reasoning: str | None, answer: str | None, force_think: bool = False) -> str:
        """The assistant content of a side, as in pairs/: the think block only when there is reasoning."""
        answer = answer or ""
        if not (reasoning or "").strip() and not force_think:
            return answer
        return f"{self.think_open}\n{reasoning or ''}\n{self.think_close}\n\n{answer}"


# -- loading -----------------------------------------------------------------------------------------
def _token(value: Any) -> str:
    if isinstance(value, dict):  # a serialized AddedToken
        value = value.get("content")
    return value if isinstance(value, str) else ""


def _template_of(config: dict, key: str) -> str | None:
    found = config.get("chat_template")
    if isinstance(found, list):  # named templates: [{name, template}, ...]; the default one is the chat template
        named = {t.get("name"): t.get("template") for t in found if isinstance(t, dict)}
        found = named.get("default")
        if found is None:
            raise ConfigError(
                f"{key}: the tokenizer's named chat templates have no 'default' ({', '.join(map(str, named))})"
            )
    return found if isinstance(found, str) and found.strip() else None


def load_template(
    path: str, key: str = "export.template", think_open: str = "", think_close: str = ""
) -> StudentTemplate:
    """A tokenizer folder, a tokenizer_config.json or a .jinja file -> StudentTemplate, checked by rendering
    a probe conversation. Every problem is a ConfigError naming `key`."""
    where = Path(path).expanduser()
    if not where.exists():
        raise ConfigError(
            f"{key}: not found: {path} (the student's tokenizer folder, e.g. /models/DeepSeek-R1-Distill-Qwen-14B; "
            f'{key}="" writes pairs/ only)'
        )
    folder = where if where.is_dir() else where.parent
    config: dict = {}
    config_file = folder / "tokenizer_config.json" if where.is_dir() or where.suffix == ".jinja" else where
    if config_file.is_file():
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{key}: {config_file} is not readable JSON ({exc})") from None
    if where.suffix == ".jinja":
        text = where.read_text(encoding="utf-8")
    elif where.is_dir() and (where / "chat_template.jinja").is_file():  # how recent tokenizers save it
        text = (where / "chat_template.jinja").read_text(encoding="utf-8")
    else:
        text = _template_of(config, key)
        if text is None and (folder / "chat_template.jinja").is_file():
            text = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    if not text:
        raise ConfigError(
            f"{key}: no chat template in {path} (looked for chat_template.jinja and tokenizer_config.json's "
            "chat_template)"
        )
    opened = think_open or _marker(text, open_=True)
    closed = think_close or _marker(text, open_=False)
    template = StudentTemplate(
        str(where), text, _token(config.get("bos_token")), _token(config.get("eos_token")), opened, closed
    )
    try:
        _compiled(text)
        continuation(template, _PROBE, SENTINEL_REASONING, SENTINEL_ANSWER)
        continuation(template, _PROBE, "", SENTINEL_ANSWER)
    except ConfigError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    except Exception as exc:  # a template error (syntax, raise_exception, a missing variable) names the key
        raise ConfigError(
            f"{key}: the chat template in {path} does not render a conversation ({type(exc).__name__}: {exc})"
        ) from None
    return template


def _marker(text: str, open_: bool) -> str:
    """The student's think markers as its template writes them (`<think>`, `<seed:think>`, ...); `<think>`
    when the template has none (the student then learns the factory's)."""
    found = re.search(r"<(/?)([A-Za-z_]+:)?think>", text)
    prefix = found.group(2) or "" if found else ""
    return f"<{prefix}think>" if open_ else f"</{prefix}think>"


@lru_cache(maxsize=16)
def _compiled(text: str) -> Any:
    """The template compiled the way transformers compiles chat templates (sandboxed; trim_blocks,
    lstrip_blocks; loop controls; tojson without ASCII escaping; raise_exception; strftime_now)."""
    from datetime import datetime

    import jinja2
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(Extension):  # {% generation %}...{% endgeneration %}: marks assistant text; renders it as is
        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.Scope(body).set_lineno(lineno)

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(
        value: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None, sort_keys: bool = False
    ) -> str:
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[Generation, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(text)


# -- one side ----------------------------------------------------------------------------------------
def prompt_text(template: StudentTemplate, messages: list[dict[str, str]], keep_bos: bool = False) -> str:
    """The prompt as the student sees it at inference: the template with the generation prompt. A leading
    bos_token is left to the trainer's tokenizer unless `keep_bos` (TRL tokenizes a standard prompt with the
    tokenizer's special tokens, which add BOS where the model has one: kept here it would be doubled)."""
    return _strip_bos(template, template.render(messages, add_generation_prompt=True), keep_bos)


def _strip_bos(template: StudentTemplate, text: str, keep_bos: bool) -> str:
    if not keep_bos and text.startswith(template.bos_token) and template.writes_bos():
        return text[len(template.bos_token) :]
    return text


def keeps_reasoning(template: StudentTemplate) -> bool:
    """Whether the template keeps the reasoning of a final assistant turn written as pairs/ writes it
    (`<think>\\nR\\n</think>\\n\\nA` in the content): false for R1 and the R1 distills."""
    full = template.render([*_PROBE, _assistant(template.content(SENTINEL_REASONING, SENTINEL_ANSWER))], False)
    return SENTINEL_REASONING in full


@dataclass(frozen=True)
class Frame:
    """What the template writes around a conversation's final assistant turn, rendered once per prompt."""

    prompt: str  # with the generation prompt (bos_token included)
    context: str  # the messages alone, no generation prompt
    probe: str  # the messages + an assistant turn whose content is SENTINEL_ANSWER

    @classmethod
    def of(cls, template: StudentTemplate, messages: list[dict[str, str]]) -> Frame:
        return cls(
            template.render(messages, add_generation_prompt=True),
            template.render(messages, add_generation_prompt=False),
            template.render([*messages, _assistant(SENTINEL_ANSWER)], add_generation_prompt=False),
        )

    def in_place(self, content: str) -> str:
        """The conversation with `content` where the template puts an assistant message's content."""
        at = self.probe.rfind(SENTINEL_ANSWER)
        if at < 0:
            raise ConfigError("the chat template does not write an assistant message's content")
        return self.probe[:at] + content + self.probe[at + len(SENTINEL_ANSWER) :]

    def turn_end(self) -> str:
        """What the template writes after an assistant message's content (`<|im_end|>\\n`, `<|eot_id|>`, ...)."""
        at = self.probe.rfind(SENTINEL_ANSWER)
        return self.probe[at + len(SENTINEL_ANSWER) :] if at >= 0 else ""


def continuation(
    template: StudentTemplate,
    messages: list[dict[str, str]],
    reasoning: str | None,
    answer: str | None,
    frame: Frame | None = None,
) -> str:
    """The exact text the student should produce after `prompt_text(template, messages)` for this side:
    its reasoning in the student's think markers (when it has any), the answer, the end-of-turn token.
    `frame`: Frame.of(template, messages), when the caller renders several sides of one prompt."""
    frame = frame or Frame.of(template, messages)
    content = template.content(reasoning, answer)
    full = template.render([*messages, _assistant(content)], add_generation_prompt=False)
    has_reasoning = bool((reasoning or "").strip())
    if has_reasoning and reasoning.strip() not in full[len(_common(frame.context, full)) :]:  # type: ignore[union-attr]
        full = frame.in_place(content)  # the template dropped it: put it back where the content goes
    if not full.startswith(frame.prompt) and not has_reasoning:
        # The generation prompt opens a think block (R1: `<｜Assistant｜><think>\n`): the student closes it.
        full = frame.in_place(template.content("", answer, force_think=True))
    if not full.startswith(frame.prompt):
        raise ConfigError(
            "the chat template renders the conversation's start differently with and without the assistant's "
            f"turn, so the continuation cannot be cut off: prompt ends {frame.prompt[-60:]!r}, conversation has "
            f"{full[len(_common(frame.prompt, full)) :][:60]!r} there"
        )
    side = full[len(frame.prompt) :]
    end = frame.turn_end()
    if end.strip():
        trailing = len(end) - len(end.rstrip())  # whitespace after the end-of-turn token is never generated
        return side[: len(side) - trailing] if trailing and side.endswith(end) else side
    return side + template.eos_token


def _assistant(content: str) -> dict[str, str]:
    return {"role": "assistant", "content": content}


def _common(a: str, b: str) -> str:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return a[:n]


# -- the export --------------------------------------------------------------------------------------
def export_name(template: StudentTemplate, name: str = "") -> str:
    """The export's folder name: `name`, else the template's folder (or .jinja file) name."""
    if name:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", name):
            raise ConfigError(f"export.name: {name!r} is not letters, digits and _ . + - (it names export/<name>/)")
        return name
    where = Path(template.source)
    base = where.stem if where.suffix == ".jinja" else (where if where.is_dir() else where.parent).name
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", base) or "student"


def templated_pairs(
    pairs: pl.DataFrame,
    sides: pl.DataFrame,
    prompts: pl.DataFrame,
    template: StudentTemplate,
    include_reasoning: bool = True,
    keep_bos: bool = False,
) -> pl.DataFrame:
    """pairs rows (any pairs/ format: only their keys and metadata are read) + the samples' text + the prompts'
    messages -> export rows: prompt, chosen, rejected as strings under `template`, then every other pairs/
    column unchanged. `sides`: prompt_id, sample_idx, reasoning, answer (one row per sample)."""
    text = sides.select("prompt_id", pl.col("sample_idx").cast(pl.Int64), "reasoning", "answer").unique(
        ["prompt_id", "sample_idx"], keep="first"
    )
    rows = pairs.drop("prompt", "chosen", "rejected", strict=False)
    for side in ("chosen", "rejected"):
        named = text.rename({"sample_idx": f"{side}_idx", "reasoning": f"_{side}_r", "answer": f"_{side}_a"})
        named = named.with_columns(pl.lit(True).alias(f"_{side}_found"))
        rows = rows.join(named, on=["prompt_id", f"{side}_idx"], how="left", maintain_order="left")
    rows = rows.join(prompts.select("prompt_id", "messages"), on="prompt_id", how="left", maintain_order="left")
    missing = rows.filter(
        pl.col("messages").is_null() | pl.col("_chosen_found").is_null() | pl.col("_rejected_found").is_null()
    )
    if missing.height:
        raise ConfigError(
            f"pairs/ names {missing.height} pair(s) whose prompt or samples are not stored under this run's "
            f"fingerprints (first: prompt_id {missing['prompt_id'][0]!r}); rebuild them with `factory pairs`"
        )
    out: dict[str, list[str]] = {"prompt": [], "chosen": [], "rejected": []}
    for row in rows.select("messages", "_chosen_r", "_chosen_a", "_rejected_r", "_rejected_a").iter_rows():
        messages = [{"role": m["role"], "content": m["content"]} for m in row[0]]
        frame = Frame.of(template, messages)
        out["prompt"].append(_strip_bos(template, frame.prompt, keep_bos))
        for side, reasoning, answer in (("chosen", row[1], row[2]), ("rejected", row[3], row[4])):
            out[side].append(continuation(template, messages, reasoning if include_reasoning else None, answer, frame))
    meta = rows.drop(
        "messages", "_chosen_r", "_chosen_a", "_rejected_r", "_rejected_a", "_chosen_found", "_rejected_found"
    )
    return pl.DataFrame(out, schema={"prompt": pl.String, "chosen": pl.String, "rejected": pl.String}).hstack(meta)


SFT_EXPORTS = ("filter_long", "dp_sft")


def sft_folder(export: str, name: str) -> str:
    """Where the templated form of an SFT export lives, beside its conversational form: sft/<export>.<name>."""
    return f"sft/{export}.{name}"


def templated_sft(
    rows: pl.DataFrame,
    sides: pl.DataFrame,
    prompts: pl.DataFrame,
    template: StudentTemplate,
    include_reasoning: bool = True,
    keep_bos: bool = False,
) -> pl.DataFrame:
    """SFT rows (sft/filter_long or sft/dp_sft in any format: only prompt_id, sample_idx and their metadata are
    read) -> prompt, completion strings under `template`, then prompt_id, sample_idx and the other columns
    unchanged. `sides`: prompt_id, sample_idx, reasoning, answer."""
    text = sides.select("prompt_id", pl.col("sample_idx").cast(pl.Int64), "reasoning", "answer").unique(
        ["prompt_id", "sample_idx"], keep="first"
    )
    meta = rows.drop("messages", "prompt", "completion", strict=False).with_columns(pl.col("sample_idx").cast(pl.Int64))
    found = meta.join(text.with_columns(pl.lit(True).alias("_found")), on=["prompt_id", "sample_idx"], how="left",
                      maintain_order="left")  # fmt: skip
    found = found.join(prompts.select("prompt_id", "messages"), on="prompt_id", how="left", maintain_order="left")
    missing = found.filter(pl.col("messages").is_null() | pl.col("_found").is_null())
    if missing.height:
        raise ConfigError(
            f"sft/ names {missing.height} sample(s) not stored under this run's fingerprints (first: prompt_id "
            f"{missing['prompt_id'][0]!r}); rebuild them with `factory pairs`"
        )
    out: dict[str, list[str]] = {"prompt": [], "completion": []}
    frames: dict[str, tuple[list[dict[str, str]], Frame]] = {}
    texts = found.select("prompt_id", "messages", "reasoning", "answer")
    for prompt_id, messages, reasoning, answer in texts.iter_rows():
        if prompt_id not in frames:  # a prompt's frame is rendered once for all its samples
            listed = [{"role": m["role"], "content": m["content"]} for m in messages]
            frames[prompt_id] = (listed, Frame.of(template, listed))
        listed, frame = frames[prompt_id]
        out["prompt"].append(_strip_bos(template, frame.prompt, keep_bos))
        out["completion"].append(
            continuation(template, listed, reasoning if include_reasoning else None, answer, frame)
        )
    return pl.DataFrame(out, schema={"prompt": pl.String, "completion": pl.String}).hstack(meta)


def warn_if_dropped(template: StudentTemplate, fmt: str, name: str, stream: Any = None) -> bool:
    """The warning `factory run` / `factory pairs` print once when the student's template drops the reasoning
    of the conversational pairs/ rows (returns whether it warned)."""
    if fmt != "conversational" or keeps_reasoning(template):
        return False
    print(
        f"warning: the student's chat template ({template.source}) keeps only the text after "
        f"{template.think_close} of an assistant turn: a trainer that applies it to pairs/ or to sft/filter_long/ and "
        f"sft/dp_sft/ trains on the answers alone, without the reasoning. export/{name}/ and "
        f"{sft_folder('filter_long', name)}/, {sft_folder('dp_sft', name)}/ (written by `factory run`/`factory pairs` "
        "with export.template set, or by `factory export RUN_DIR --template PATH`) hold the same rows with the "
        "template applied and the reasoning kept (TRL standard format): train on those.",
        file=stream or sys.stderr,
    )
    return True


# -- in a run directory --------------------------------------------------------------------------------
_WARNED: set[str] = set()  # templates warned about in this process: `pairs.target` rounds rebuild pairs often


def student_template(cfg: Any) -> StudentTemplate | None:
    """The configured student template (export.*), or None when none is set."""
    e = cfg.export
    if not e.template:
        return None
    return load_template(e.template, "export.template", e.think_open, e.think_close)


def preflight(cfg: Any) -> None:
    """Before any request: a configured template loads and renders (errors name export.template)."""
    template = student_template(cfg)
    if template is not None:
        export_name(template, cfg.export.name)


def sides_of(scored: pl.DataFrame | pl.LazyFrame, pairs: pl.DataFrame) -> pl.DataFrame:
    """The text of the samples `pairs` names (prompt_id, sample_idx, reasoning, answer): only those are read."""
    keys = pl.concat(
        [
            pairs.select("prompt_id", pl.col(f"{side}_idx").cast(pl.Int64).alias("sample_idx"))
            for side in ("chosen", "rejected")
        ]
    ).unique()
    return _sides_at(scored, keys)


def _sides_at(scored: pl.DataFrame | pl.LazyFrame, keys: pl.DataFrame) -> pl.DataFrame:
    wanted = scored.lazy().select("prompt_id", pl.col("sample_idx").cast(pl.Int64), "reasoning", "answer")
    return wanted.join(keys.lazy(), on=["prompt_id", "sample_idx"], how="semi").collect()


def write_export(
    store: Any,
    cfg: Any,
    pairs: pl.DataFrame,
    scored: pl.DataFrame | pl.LazyFrame,
    prompts: pl.DataFrame,
    template: StudentTemplate | None = None,
) -> dict[str, Any]:
    """export/<name>/*.parquet (+ _export.json saying how it was made) from the current pairs; returns that record."""
    template = template or student_template(cfg)
    if template is None:
        raise ConfigError(
            "export.template: no student chat template given (a tokenizer folder, tokenizer_config.json or .jinja)"
        )
    name = export_name(template, cfg.export.name)
    rows = templated_pairs(
        pairs, sides_of(scored, pairs), prompts, template, cfg.pairs.include_reasoning, cfg.export.keep_bos
    )
    store.replace(f"export/{name}", rows)
    record = {
        "name": name,
        "template": template.source,
        "rows": rows.height,
        "format": "standard",
        "keeps_reasoning_in_conversational": keeps_reasoning(template),
        "think_markers": [template.think_open, template.think_close],
        "bos_in_prompt": bool(cfg.export.keep_bos),
        "eos_token": template.eos_token,
        "strategy": cfg.pairs.strategy,
        "include_reasoning": cfg.pairs.include_reasoning,
        "sft": write_sft_exports(store, cfg, scored, prompts, template, name),
    }
    store.write_json(f"export/{name}/_export.json", record)
    return record


def write_sft_exports(
    store: Any,
    cfg: Any,
    scored: pl.DataFrame | pl.LazyFrame,
    prompts: pl.DataFrame,
    template: StudentTemplate,
    name: str,
) -> dict[str, dict[str, Any]]:
    """sft/<export>.<name>/ for each SFT export stored in sft/<export>/ (what pairs.sft asked for); one no
    longer there is removed, so nothing lingers as if current. Returns {export: {"path", "rows"}}."""
    written = {}
    for export in SFT_EXPORTS:
        folder = sft_folder(export, name)
        rows = store.read(f"sft/{export}") if export in cfg.pairs.sft else None
        if rows is None:
            store.remove(folder)
            continue
        keys = rows.select("prompt_id", pl.col("sample_idx").cast(pl.Int64)).unique()
        templated = templated_sft(
            rows, _sides_at(scored, keys), prompts, template, cfg.pairs.include_reasoning, cfg.export.keep_bos
        )
        store.replace(folder, templated)
        written[export] = {"path": folder, "rows": templated.height}
    return written


def after_pairs(
    store: Any, cfg: Any, pairs: pl.DataFrame, scored: pl.DataFrame | pl.LazyFrame, prompts: pl.DataFrame
) -> None:
    """What `factory run` and `factory pairs` do once pairs/ is written: with a student template, warn (once)
    when it drops pairs/' reasoning, and write the export unless export.enabled is false."""
    template = student_template(cfg)
    if template is None:
        return
    name = export_name(template, cfg.export.name)
    if template.source not in _WARNED and warn_if_dropped(template, cfg.pairs.format, name):
        _WARNED.add(template.source)
    if cfg.export.enabled:
        record = write_export(store, cfg, pairs, scored, prompts, template)
        sft = "".join(f", {folder['path']}/: {folder['rows']} rows" for folder in record["sft"].values())
        print(
            f"export/{name}/: {record['rows']} pairs{sft} under the student's template ({template.source})",
            file=sys.stderr,
        )
