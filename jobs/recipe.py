"""What the training recipes share (jobs/train_sft.py, jobs/train_dpo.py): the student checkpoint, the time
budget, plain checkpoints during training, and DPO's reward curves with the both-rewards-falling warning.

Checkpoints: `--save-every N` writes OUT/checkpoints/step-<N>/ every N optimizer steps, `--save-per-epoch`
OUT/checkpoints/epoch-<E>/ at the end of each epoch; each is a plain Hugging Face checkpoint (LoRA merged into
a copy, the trained model's dtype as the final save) that `factory eval` samples like any candidate.

Reward curves (DPO): one row per logged step from TRL's log (rewards/chosen, rewards/rejected, rewards/margins,
rewards/accuracies), written as OUT/reward_curves.json with the warnings. §4.5.4 of the source adds the SFT term
because both rewards can fall together: the policy then lowers the likelihood of the chosen answers too.

    rows = reward_rows([{"step": 1, "rewards/chosen": 0.1, "rewards/rejected": 0.0, ...}, ...])
    both_falling(rows, window=4) -> [{"from_step": 3, "to_step": 9, "chosen": [0.2, -0.4], ...}]
"""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path
from typing import Any

REWARD_KEYS = {"chosen": "rewards/chosen", "rejected": "rewards/rejected", "margin": "rewards/margins",
               "accuracy": "rewards/accuracies"}  # fmt: skip


def model_path(model: str) -> Path:
    """The student checkpoint: `model`, else the embedded SmolLM2-135M converted once (nothing downloaded)."""
    if model:
        return Path(model)
    from factory.engines.vllm import embedded_hf_model

    cache = os.environ.get("FACTORY_TEST_CACHE") or Path.home() / ".cache" / "factory-tests"
    return embedded_hf_model(cache)


def add_common_args(p: Any) -> None:
    """The options both recipes take, with the same meaning."""
    p.add_argument(
        "--model", default="", help="HF checkpoint folder of the student; '' = the embedded SmolLM2-135M, converted"
    )
    p.add_argument("--out", required=True, help="folder for the trained checkpoint")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--max-steps", type=int, default=-1, help="stop after this many optimizer steps (-1 = epochs)")
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--max-length", type=int, default=1024, help="tokens of prompt + completion (longer: truncated)")
    p.add_argument("--lora", action="store_true", help="train LoRA adapters (needs peft), merged into the saved model")
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--lora-alpha", type=int, default=32)
    p.add_argument("--bf16", action="store_true", help="bfloat16 training (GPU)")
    p.add_argument("--gradient-checkpointing", action="store_true", help="trade compute for memory (big students)")
    p.add_argument("--save-dtype", default="auto", help="auto (the base checkpoint's), float32, bfloat16, float16")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--limit", type=int, default=0, help="use only the first N rows (0 = all)")
    p.add_argument(
        "--time-limit-s", type=float, default=0, help="stop after the step that passes this many seconds (0 = none)"
    )
    p.add_argument(
        "--save-every", type=int, default=0, help="also write OUT/checkpoints/step-N/ every N steps (0 = no)"
    )
    p.add_argument("--save-per-epoch", action="store_true", help="also write OUT/checkpoints/epoch-E/ after each epoch")


def cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def trainer_config(config_class: Any, args: Any, **own: Any) -> Any:
    """TRL's DPOConfig or SFTConfig for the arguments both recipes share (add_common_args), with each recipe's
    `own` keys; the keys this TRL's class lacks are left out, and off bf16 the run stays on CPU unless CUDA is
    there."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(config_class)}
    kwargs = dict(
        learning_rate=args.lr,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum,
        max_length=args.max_length,
        bf16=args.bf16,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=args.seed,
        lr_scheduler_type="constant",
        warmup_steps=0,
        gradient_checkpointing=args.gradient_checkpointing,
        **own,
    )
    if not args.bf16:
        kwargs["use_cpu"] = not cuda()
    return config_class(**{k: v for k, v in kwargs.items() if k in names})


def check_template(model_dir: Path, what: str) -> None:
    """Warn when the student's template drops the reasoning of a conversational export (factory.pairs.export);
    `what` names the recipe in the message when the template cannot be read."""
    import sys

    from factory.config import ConfigError
    from factory.pairs.export import load_template, warn_if_dropped

    try:
        warn_if_dropped(load_template(str(model_dir), "--model"), "conversational", "<name>")
    except ConfigError as exc:
        print(f"{what}: could not check the student's template ({exc})", file=sys.stderr)


def parquet_files(data: str, what: str) -> list[str]:
    folder = Path(data)
    files = sorted(str(f) for f in folder.glob("*.parquet")) if "://" not in data else [f"{data.rstrip('/')}/*.parquet"]
    if not files:
        raise SystemExit(f"{what}: no Parquet file in {folder}")
    return files


def time_limit(seconds: float):
    """A callback that ends training after the step during which `seconds` have passed (a time budget)."""
    from transformers import TrainerCallback

    class TimeLimit(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if time.perf_counter() - self.start >= seconds:
                control.should_training_stop = True
            return control

    return TimeLimit()


def save_dtype_of(name: str, base: Path) -> Any:
    """The dtype a checkpoint is written in: `name`, else (auto) the base checkpoint's own, so base and trained
    are evaluated alike."""
    import torch

    chosen = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(name)
    if chosen is not None:
        return chosen
    stored = json.loads((base / "config.json").read_text()) if (base / "config.json").is_file() else {}
    return getattr(torch, str(stored.get("dtype") or stored.get("torch_dtype") or "float32"), torch.float32)


def save_plain(model: Any, tokenizer: Any, folder: Path, dtype: Any, merge: bool, during: bool = False) -> None:
    """A plain checkpoint of `model` in `folder`: LoRA merged (into a copy while training goes on)."""
    if merge:
        model = (copy.deepcopy(model) if during else model).merge_and_unload()
    elif during:
        model = copy.deepcopy(model)
    model.to(dtype).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)


def checkpoints(tokenizer: Any, out: Path, dtype: Any, merge: bool, every: int, per_epoch: bool, record: list):
    """A callback writing OUT/checkpoints/step-N/ every `every` steps and OUT/checkpoints/epoch-E/ per epoch;
    each one written is appended to `record` as {"name", "step", "epoch", "path"}."""
    from transformers import TrainerCallback

    class Checkpoints(TrainerCallback):
        def _save(self, name: str, state: Any, model: Any) -> None:
            folder = out / "checkpoints" / name
            save_plain(model, tokenizer, folder, dtype, merge, during=True)
            record.append({"name": name, "step": state.global_step, "epoch": round(float(state.epoch or 0), 3),
                           "path": str(folder)})  # fmt: skip

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if every and state.global_step % every == 0:
                self._save(f"step-{state.global_step}", state, model)

        def on_epoch_end(self, args, state, control, model=None, **kwargs):
            if per_epoch:
                self._save(f"epoch-{round(float(state.epoch or 0))}", state, model)

    return Checkpoints()


# -- DPO's reward curves -------------------------------------------------------------------------------
def reward_rows(logs: list[dict]) -> list[dict]:
    """TRL log entries -> one row per entry that has rewards: step, epoch, chosen, rejected, margin, accuracy."""
    rows = []
    for entry in logs:
        if REWARD_KEYS["chosen"] not in entry or REWARD_KEYS["rejected"] not in entry:
            continue
        row = {"step": entry.get("step"), "epoch": entry.get("epoch")}
        row |= {name: (float(entry[key]) if entry.get(key) is not None else None) for name, key in REWARD_KEYS.items()}
        rows.append(row)
    return rows


def _slope(values: list[float]) -> float:
    n = len(values)
    mean_x, mean_y = (n - 1) / 2, sum(values) / n
    return sum((i - mean_x) * (v - mean_y) for i, v in enumerate(values)) / sum((i - mean_x) ** 2 for i in range(n))


def both_falling(rows: list[dict], window: int) -> list[dict]:
    """Spans where rewards/chosen and rewards/rejected both fall: every `window` consecutive reward rows over which
    each curve ends lower than it started with a negative least-squares slope, overlapping windows merged into one
    span. Each span: from_step,
    to_step, chosen [first, last], rejected [first, last] of the span."""
    if window < 2 or len(rows) < window:
        return []

    def falls(part: list[dict], side: str) -> bool:  # lower at the end than at the start, and trending down
        values = [r[side] for r in part]
        return values[-1] < values[0] and _slope(values) < 0

    flagged = [
        all(falls(rows[i : i + window], side) for side in ("chosen", "rejected")) for i in range(len(rows) - window + 1)
    ]
    spans: list[list[int]] = []
    for i, falling in enumerate(flagged):
        if not falling:
            continue
        if spans and i <= spans[-1][1]:  # overlaps (or touches) the span before
            spans[-1][1] = i + window - 1
        else:
            spans.append([i, i + window - 1])
    return [
        {"from_step": rows[a]["step"], "to_step": rows[b]["step"], "chosen": [rows[a]["chosen"], rows[b]["chosen"]],
         "rejected": [rows[a]["rejected"], rows[b]["rejected"]]}
        for a, b in spans
    ]  # fmt: skip


def falling_text(span: dict) -> str:
    return (
        f"warning: rewards/chosen and rewards/rejected both fell over steps {span['from_step']}-{span['to_step']} "
        f"(chosen {span['chosen'][0]:+.3f} -> {span['chosen'][1]:+.3f}, rejected {span['rejected'][0]:+.3f} -> "
        f"{span['rejected'][1]:+.3f}): the policy lowers the likelihood of the chosen answers too; a larger SFT term "
        "(--rpo-alpha), a lower --lr or a larger --beta keeps chosen up"
    )


def reward_watch(window: int, said: set):
    """A callback that checks the curves at each log and prints each new both-falling span once (the run's log);
    `said` collects the first steps of the spans printed."""
    from transformers import TrainerCallback

    class RewardWatch(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            for span in both_falling(reward_rows(state.log_history), window):
                if span["from_step"] not in said:
                    said.add(span["from_step"])
                    print(f"train_dpo: {falling_text(span)}", flush=True)

    return RewardWatch()


def write_reward_curves(out: Path, logs: list[dict], window: int) -> dict:
    """OUT/reward_curves.json: the rows, the window and the both-falling warnings; returns what it wrote."""
    rows = reward_rows(logs)
    spans = both_falling(rows, window)
    record = {"window": window, "rows": rows, "both_falling": spans, "warnings": [falling_text(s) for s in spans]}
    (out / "reward_curves.json").write_text(json.dumps(record, indent=2))
    return record
