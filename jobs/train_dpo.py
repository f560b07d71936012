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
generation config, train_dpo.json (arguments, pairs used, steps, seconds, the last logged losses, checkpoints,
reward warnings), reward_curves.json (per logged step: rewards chosen, rejected, margin, accuracy; the spans where
chosen and rejected both fell over --reward-window steps, also printed as they happen) and, with --save-every N /
--save-per-epoch, plain checkpoints OUT/checkpoints/step-N/, epoch-E/ (jobs/recipe.py).

Two stages (§4.8: DP-SFT, then DP-DPO from it): train jobs/train_sft.py first and pass its output as --model;
the DPO reference model is then that SFT checkpoint (with --lora: the same model with the adapters off).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the checkout's factory, also inside a Ray job's working_dir
sys.path.insert(0, str(ROOT / "jobs"))

import recipe  # noqa: E402  (jobs/recipe.py: what train_sft.py shares)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--data", required=True, help="export/<name>/ or pairs/ folder of Parquet (or a run directory: its pairs/)"
    )
    p.add_argument("--beta", type=float, default=0.1, help="DPO beta")
    p.add_argument("--rpo-alpha", type=float, default=1.0, help="weight of the SFT (NLL) term on chosen; 0 = plain DPO")
    p.add_argument("--lr", type=float, default=5e-6, help="learning rate")
    p.add_argument("--batch-size", type=int, default=2, help="pairs per device per step")
    p.add_argument(
        "--reward-window", type=int, default=10, help="logged steps over which both rewards falling is warned about"
    )
    recipe.add_common_args(p)
    return p.parse_args(argv)


model_path = recipe.model_path
time_limit = recipe.time_limit


def load_pairs(data: str, limit: int = 0):
    """prompt/chosen/rejected rows of a pairs folder (the metadata columns are kept aside)."""
    import datasets

    folder = Path(data)
    if (folder / "pairs").is_dir() and (folder / "manifest.json").is_file():
        data = str(folder / "pairs")
    files = recipe.parquet_files(data, "train_dpo")
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
    return recipe.trainer_config(DPOConfig, args, beta=args.beta, **sft, **extra)


def sft_term(config) -> str:
    if getattr(config, "rpo_alpha", None):
        return f"rpo_alpha={config.rpo_alpha}"
    weights = dict(zip(getattr(config, "loss_type", []) or [], getattr(config, "loss_weights", None) or []))
    return f"loss sigmoid + {weights['sft']} x sft" if "sft" in weights else "none"


def warn_conversational(dataset, model_dir: Path) -> None:
    """pairs/ (conversational) under a template that drops reasoning: say so (factory.pairs.export)."""
    if not isinstance(dataset[0]["prompt"], list):
        return
    recipe.check_template(model_dir, "train_dpo")


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
    save_dtype = recipe.save_dtype_of(args.save_dtype, base)
    saved: list[dict] = []
    warned: set = set()
    callbacks = [recipe.reward_watch(args.reward_window, warned)]
    callbacks += [time_limit(args.time_limit_s)] if args.time_limit_s else []
    if args.save_every or args.save_per_epoch:
        callbacks.append(recipe.checkpoints(tokenizer, out, save_dtype, peft_config is not None, args.save_every,
                                            args.save_per_epoch, saved))  # fmt: skip
    trainer = DPOTrainer(
        model=model, ref_model=reference, args=config, train_dataset=dataset, processing_class=tokenizer,
        peft_config=peft_config, callbacks=callbacks,
    )  # fmt: skip
    t0 = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - t0
    trained = trainer.model
    if peft_config is not None:
        trained = trained.merge_and_unload()
    trained.to(save_dtype).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    curves = recipe.write_reward_curves(out, trainer.state.log_history, args.reward_window)
    record = {
        "base": str(base), "reference": "base (LoRA adapters off)" if peft_config else str(base), "data": args.data,
        "pairs": dataset.num_rows, "steps": trainer.state.global_step, "train_seconds": round(seconds, 1),
        "train_loss": result.training_loss, "last_logs": logs[-3:], "args": vars(args), "sft_term": sft_term(config),
        "checkpoints": saved, "reward_warnings": curves["warnings"],
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
