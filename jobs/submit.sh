#!/usr/bin/env bash
# Submit `factory run CONFIG [key=value ...]` to a Ray cluster as a Ray job, and stream its logs.
#
#   RAY_ADDRESS=http://HEAD:8265 jobs/submit.sh conf/r1_distill_14b_vllm.yaml output_dir=s3://bucket/runs/r1
#
# - RAY_ADDRESS: the cluster's job server (dashboard) address; default http://127.0.0.1:8265.
# - output_dir must be storage every node can reach (s3://..., or a shared mount): the job's driver runs on
#   the head node, not on your machine.
# - FORWARD_ENV="NAME1 NAME2": copy these variables from your shell into the job (e.g. the API key named by
#   engine.api_key_env). Ray keeps them with the job's runtime env, visible to whoever can read the cluster's
#   job list; prefer setting secrets on the nodes themselves.
# - NO_WAIT=1: submit and return; follow with `ray job logs --follow SUBMISSION_ID`.
# The same `factory run` works locally; inside the job, factory joins the cluster through RAY_ADDRESS.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then
  echo "usage: jobs/submit.sh CONFIG [key=value ...]" >&2
  exit 2
fi
RAY=${RAY:-ray}
command -v "$RAY" >/dev/null || RAY=.venv/bin/ray
export RAY_ADDRESS=${RAY_ADDRESS:-http://127.0.0.1:8265}

args=(job submit --address "$RAY_ADDRESS" --runtime-env jobs/runtime_env.yaml --working-dir .)
if [ -n "${FORWARD_ENV:-}" ]; then
  # runtime_env.yaml plus the forwarded variables, in a private temporary file (never on a command line).
  env_file=$(mktemp --suffix=.yaml)
  chmod 600 "$env_file"
  trap 'rm -f "$env_file"' EXIT
  PY=${PYTHON:-python3}
  [ -x .venv/bin/python ] && PY=${PYTHON:-.venv/bin/python}
  FORWARD_ENV="$FORWARD_ENV" "$PY" - "$env_file" <<'PY'
import os, sys
import yaml
env = yaml.safe_load(open("jobs/runtime_env.yaml"))
for name in os.environ["FORWARD_ENV"].split():
    if name not in os.environ:
        sys.exit(f"FORWARD_ENV: {name} is not set in this shell")
    env.setdefault("env_vars", {})[name] = os.environ[name]
yaml.safe_dump(env, open(sys.argv[1], "w"))
PY
  args=(job submit --address "$RAY_ADDRESS" --runtime-env "$env_file" --working-dir .)
fi
[ "${NO_WAIT:-0}" = "1" ] && args+=(--no-wait)
"$RAY" "${args[@]}" -- factory run "$@"
