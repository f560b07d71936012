"""DPO training recipe on the factory's pairs: TRL's DPOTrainer with the SFT term on chosen that the source adds
(TRL's `rpo_alpha`; in TRL versions without it, loss_type ["sigmoid", "sft"] weighted [1, alpha], the same
loss), LoRA optional. Writes a plain Hugging Face checkpoint (LoRA merged) that `factory eval` takes as a
candidate through the vLLM engine.

    # one CPU, the embedded student (SmolLM2-135M converted offline from the shipped GGUF):
    python jobs/train_dpo.py --data runs/loop/export/student --out runs/loop/trained --max-steps 40
    # a real student on a GPU node of a Ray cluster, as a Ray job:
    jobs/submit_train.sh --data s3://bucket/run/export/r1-distill --model /models/R1-Distill-Qwen-14B \\
        --out /shared/ckpt/r1d-dpo --lora --bf16 --batch-size 4 --grad-accum 8
    # then compare base and trained:
    factory eval conf/closed_loop.yaml eval.candidates.trained.engine.kind=vllm \\
        eval.candidates.trained.engine.model=runs/loop/trained ...

--data is a folder of pairs Parquet: a run's export/<name>/ (TRL standard format, the student's template applied,
reasoning kept: what to train on) or its pairs/ (conversational: the policy tokenizer's template is applied by
TRL; the recipe warns when that template drops the reasoning). A run directory means its pairs/.

Why a checkpoint and not an answers file: the eval then samples base and trained through the same engine, the
same prompt rendering and the same sampling, keyed and cached like every other candidate; answers written by
the recipe would be a second sampler to keep equal to the factory's.

Output folder: the model (safetensors, in the base checkpoint's dtype unless --save-dtype), its tokenizer and
generation config, and train_dpo.json (arguments, pairs used, steps, seconds, the last logged losses).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the checkout's factory, also inside a Ray job's working_dir


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--data", required=True, help="export/<name>/ or pairs/ folder of Parquet (or a run directory: its pairs/)"
    )
    p.add_argument(
        "--model", default="", help="HF checkpoint folder of the student; '' = the embedded SmolLM2-135M, converted"
    )
    p.add_argument("--out", required=True, help="folder for the trained checkpoint")
    p.add_argument("--beta", type=float, default=0.1, help="DPO beta")
    p.add_argument("--rpo-alpha", type=float, default=1.0, help="weight of the SFT (NLL) term on chosen; 0 = plain DPO")
    p.add_argument("--lr", type=float, default=5e-6, help="learning rate")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--max-steps", type=int, default=-1, help="stop after this many optimizer steps (-1 = epochs)")
    p.add_argument("--batch-size", type=int, default=2, help="pairs per device per step")
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
    p.add_argument("--limit", type=int, default=0, help="use only the first N pairs (0 = all)")
    p.add_argument(
        "--time-limit-s", type=float, default=0, help="stop after the step that passes this many seconds (0 = none)"
    )
    return p.parse_args(argv)


def model_path(model: str) -> Path:
    """The student checkpoint: --model, else the embedded SmolLM2-135M converted once (nothing downloaded)."""
    if model:
        return Path(model)
    from factory.engines.vllm import embedded_hf_model

    cache = os.environ.get("FACTORY_TEST_CACHE") or Path.home() / ".cache" / "factory-tests"
    return embedded_hf_model(cache)


def load_pairs(data: str, limit: int = 0):
    """prompt/chosen/rejected rows of a pairs folder (the metadata columns are kept aside)."""
    import datasets

    folder = Path(data)
    if (folder / "pairs").is_dir() and (folder / "manifest.json").is_file():
        folder = folder / "pairs"
    files = sorted(str(f) for f in folder.glob("*.parquet")) if "://" not in data else [f"{data.rstrip('/')}/*.parquet"]
    if not files:
        raise SystemExit(f"train_dpo: no Parquet file in {folder}")
    dataset = datasets.load_dataset("parquet", data_files=files, split="train")
    if limit:
        dataset = dataset.select(range(min(limit, dataset.num_rows)))
    return dataset.select_columns(["prompt", "chosen", "rejected"])


def dpo_config(args: argparse.Namespace, **extra):
    """TRL's DPOConfig for these arguments; the SFT term through rpo_alpha where TRL has it, else as a loss."""
    from trl import DPOConfig

    names = {f.name for f in dataclasses.fields(DPOConfig)}
    sft = {}
    if args.rpo_alpha:
        if "rpo_alpha" in names:
            sft = {"rpo_alpha": args.rpo_alpha}
        else:
            sft = {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, args.rpo_alpha]}
    kwargs = dict(
        beta=args.beta,
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
        **sft,
        **extra,
    )
    if not args.bf16:
        kwargs["use_cpu"] = not _cuda()
    return DPOConfig(**{k: v for k, v in kwargs.items() if k in names})


def sft_term(config) -> str:
    if getattr(config, "rpo_alpha", None):
        return f"rpo_alpha={config.rpo_alpha}"
    weights = dict(zip(getattr(config, "loss_type", []) or [], getattr(config, "loss_weights", None) or []))
    return f"loss sigmoid + {weights['sft']} x sft" if "sft" in weights else "none"


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def warn_conversational(dataset, model_dir: Path) -> None:
    """pairs/ (conversational) under a template that drops reasoning: say so (factory.pairs.export)."""
    if not isinstance(dataset[0]["prompt"], list):
        return
    from factory.config import ConfigError
    from factory.pairs.export import load_template, warn_if_dropped

    try:
        warn_if_dropped(load_template(str(model_dir), "--model"), "conversational", "<name>")
    except ConfigError as exc:
        print(f"train_dpo: could not check the student's template ({exc})", file=sys.stderr)


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


def train(args: argparse.Namespace) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOTrainer

    if args.threads:
        torch.set_num_threads(args.threads)
    base = model_path(args.model)
    dataset = load_pairs(args.data, args.limit)
    warn_conversational(dataset, base)
    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    peft_config = None
    if args.lora:
        try:
            from peft import LoraConfig
        except ImportError:
            raise SystemExit("train_dpo: --lora needs peft (pip install peft)") from None
        peft_config = LoraConfig(
            r=args.lora_r, lora_alpha=args.lora_alpha, target_modules="all-linear", task_type="CAUSAL_LM"
        )
    reference = None if peft_config else AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    out = Path(args.out)
    config = dpo_config(args, output_dir=str(out / "_trainer"))
    trainer = DPOTrainer(
        model=model, ref_model=reference, args=config, train_dataset=dataset, processing_class=tokenizer,
        peft_config=peft_config, callbacks=[time_limit(args.time_limit_s)] if args.time_limit_s else None,
    )  # fmt: skip
    t0 = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - t0
    trained = trainer.model
    if peft_config is not None:
        trained = trained.merge_and_unload()
    save_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(args.save_dtype)
    if save_dtype is None:  # the base checkpoint's own dtype, so base and trained are evaluated alike
        stored = json.loads((base / "config.json").read_text()) if (base / "config.json").is_file() else {}
        save_dtype = getattr(torch, str(stored.get("dtype") or stored.get("torch_dtype") or "float32"), torch.float32)
    trained.to(save_dtype).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    record = {
        "base": str(base), "data": args.data, "pairs": dataset.num_rows, "steps": trainer.state.global_step,
        "train_seconds": round(seconds, 1), "train_loss": result.training_loss, "last_logs": logs[-3:],
        "args": vars(args), "sft_term": sft_term(config),
    }  # fmt: skip
    (out / "train_dpo.json").write_text(json.dumps(record, indent=2, default=str))
    import shutil

    shutil.rmtree(out / "_trainer", ignore_errors=True)
    return record


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    record = train(args)
    print(f"train_dpo: {record['pairs']} pairs, {record['steps']} steps in {record['train_seconds']} s, "
          f"loss {record['train_loss']:.4f}, {record['sft_term']} -> {args.out}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
