"""SFT training recipe on the factory's SFT exports: TRL's SFTTrainer, LoRA optional, the same time budget and
checkpoint form as jobs/train_dpo.py (a plain Hugging Face checkpoint, LoRA merged, that `factory eval` samples
and that train_dpo.py takes as --model for the second stage).

    # one CPU, the embedded student (SmolLM2-135M converted offline from the shipped GGUF):
    python jobs/train_sft.py --data runs/loop/sft/filter_long.student --out runs/loop/sft-model --max-steps 40
    # then DPO from it (§4.8: DP-SFT, then DP-DPO from the DP-SFT checkpoint, which is also DPO's reference):
    python jobs/train_dpo.py --data runs/loop/export/student --model runs/loop/sft-model --out runs/loop/sft-dpo
    # a real student on a GPU node of a Ray cluster, as a Ray job:
    RECIPE=sft jobs/submit_train.sh --data s3://bucket/run/sft/dp_sft.r1d --model /models/R1-Distill-Qwen-14B \\
        --out /shared/ckpt/r1d-sft --lora --bf16

--data is a folder of SFT Parquet: a run's sft/<export>.<name>/ (prompt/completion strings under the student's
template, reasoning kept: what to train on; the loss is on the completion only) or its sft/<export>/
(conversational `messages`: TRL applies the policy tokenizer's template, and the recipe warns when that template
drops the reasoning). A run directory means its sft/filter_long/.

Output folder: the model (safetensors, in the base checkpoint's dtype unless --save-dtype), its tokenizer and
generation config, train_sft.json (arguments, rows used, steps, seconds, the last logged losses, checkpoints),
and with --save-every N / --save-per-epoch plain checkpoints OUT/checkpoints/step-N/, epoch-E/ (jobs/recipe.py).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the checkout's factory, also inside a Ray job's working_dir
sys.path.insert(0, str(ROOT / "jobs"))

import recipe  # noqa: E402  (jobs/recipe.py: what train_dpo.py shares)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--data", required=True, help="sft/<export>.<name>/ or sft/<export>/ folder of Parquet (or a run directory)"
    )
    p.add_argument("--lr", type=float, default=1e-5, help="learning rate")
    p.add_argument("--batch-size", type=int, default=4, help="rows per device per step")
    recipe.add_common_args(p)
    return p.parse_args(argv)


def load_sft(data: str, limit: int = 0):
    """prompt/completion rows (or conversational messages) of an SFT export folder; the metadata columns are
    left out (TRL would take a `prompt` column for the prompt-completion form, so only these go in)."""
    import datasets

    folder = Path(data)
    if (folder / "sft" / "filter_long").is_dir() and (folder / "manifest.json").is_file():
        data = str(folder / "sft" / "filter_long")
    dataset = datasets.load_dataset("parquet", data_files=recipe.parquet_files(data, "train_sft"), split="train")
    if limit:
        dataset = dataset.select(range(min(limit, dataset.num_rows)))
    if "messages" in dataset.column_names:
        return dataset.select_columns(["messages"])
    if not {"prompt", "completion"} <= set(dataset.column_names):
        raise SystemExit(
            f"train_sft: {data} has neither prompt/completion nor messages columns ({dataset.column_names})"
        )
    return dataset.select_columns(["prompt", "completion"])


def sft_config(args: argparse.Namespace, **extra):
    from trl import SFTConfig

    # TRL: the loss on the completion only for prompt/completion rows
    return recipe.trainer_config(SFTConfig, args, completion_only_loss=None, **extra)


def warn_conversational(dataset, model_dir: Path) -> None:
    """sft/<export>/ (conversational) under a template that drops reasoning: say so (factory.pairs.export)."""
    if "messages" not in dataset.column_names:
        return
    recipe.check_template(model_dir, "train_sft")


def train(args: argparse.Namespace) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    if args.threads:
        torch.set_num_threads(args.threads)
    base = recipe.model_path(args.model)
    dataset = load_sft(args.data, args.limit)
    warn_conversational(dataset, base)
    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16 if args.bf16 else torch.float32)
    peft_config = None
    if args.lora:
        try:
            from peft import LoraConfig
        except ImportError:
            raise SystemExit("train_sft: --lora needs peft (pip install peft)") from None
        peft_config = LoraConfig(
            r=args.lora_r, lora_alpha=args.lora_alpha, target_modules="all-linear", task_type="CAUSAL_LM"
        )
    out = Path(args.out)
    save_dtype = recipe.save_dtype_of(args.save_dtype, base)
    saved: list[dict] = []
    callbacks = [recipe.time_limit(args.time_limit_s)] if args.time_limit_s else []
    if args.save_every or args.save_per_epoch:
        callbacks.append(recipe.checkpoints(tokenizer, out, save_dtype, peft_config is not None, args.save_every,
                                            args.save_per_epoch, saved))  # fmt: skip
    trainer = SFTTrainer(
        model=model, args=sft_config(args, output_dir=str(out / "_trainer")), train_dataset=dataset,
        processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks,
    )  # fmt: skip
    t0 = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - t0
    recipe.save_plain(trainer.model, tokenizer, out, save_dtype, merge=peft_config is not None)
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    record = {
        "base": str(base), "data": args.data, "rows": dataset.num_rows, "steps": trainer.state.global_step,
        "format": "conversational" if "messages" in dataset.column_names else "prompt-completion",
        "train_seconds": round(seconds, 1), "train_loss": result.training_loss, "last_logs": logs[-3:],
        "args": vars(args), "checkpoints": saved,
    }  # fmt: skip
    (out / "train_sft.json").write_text(json.dumps(record, indent=2, default=str))
    shutil.rmtree(out / "_trainer", ignore_errors=True)
    return record


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    record = train(args)
    print(f"train_sft: {record['rows']} rows ({record['format']}), {record['steps']} steps in "
          f"{record['train_seconds']} s, loss {record['train_loss']:.4f} -> {args.out}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
