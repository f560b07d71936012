#!/usr/bin/env bash
# Submit a training recipe (jobs/train_dpo.py ARGS..., or with RECIPE=sft jobs/train_sft.py ARGS...) to a Ray
# cluster as a Ray job on a GPU, and stream its logs.
#
#   RAY_ADDRESS=http://HEAD:8265 jobs/submit_train.sh --data s3://bucket/run/export/r1d \
#       --model /models/R1-Distill-Qwen-14B --out /shared/ckpt/r1d-dpo --lora --bf16 --batch-size 4 --grad-accum 8
#   RECIPE=sft jobs/submit_train.sh --data s3://bucket/run/sft/dp_sft.r1d --model /models/R1-Distill-Qwen-14B \
#       --out /shared/ckpt/r1d-sft --lora --bf16          # stage 1; then the line above with --model /shared/ckpt/r1d-sft
#
# - NUM_GPUS (default 1): GPUs the job's entrypoint asks Ray for (the driver runs the training itself).
# - --data / --model / --out must be storage the GPU node reaches (s3://..., or a shared mount).
# - The cluster image provides torch, transformers, trl (and peft for --lora); the job ships this checkout.
# - NO_WAIT=1: submit and return; follow with `ray job logs --follow SUBMISSION_ID`.
# The same command runs locally: python jobs/train_dpo.py ARGS... (python jobs/train_sft.py ARGS...)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then
  echo "usage: [RECIPE=dpo|sft] jobs/submit_train.sh --data DIR --out CKPT_DIR [--model HF_DIR] [recipe options]" >&2
  exit 2
fi
case "${RECIPE:-dpo}" in
  dpo|sft) ;;
  *) echo "submit_train.sh: RECIPE is '${RECIPE}', not dpo or sft" >&2; exit 2 ;;
esac
RAY=${RAY:-ray}
command -v "$RAY" >/dev/null || RAY=.venv/bin/ray
export RAY_ADDRESS=${RAY_ADDRESS:-http://127.0.0.1:8265}
args=(job submit --address "$RAY_ADDRESS" --runtime-env jobs/runtime_env.yaml --working-dir .
      --entrypoint-num-gpus "${NUM_GPUS:-1}")
[ "${NO_WAIT:-0}" = "1" ] && args+=(--no-wait)
"$RAY" "${args[@]}" -- python "jobs/train_${RECIPE:-dpo}.py" "$@"
