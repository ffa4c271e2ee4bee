#!/usr/bin/env bash
# The CUDA checks that need no vLLM, on one H100/H200 with torch, transformers and DeepSpeed installed
# (gainrl's other dependencies too: pip install --no-deps -e . plus omegaconf, math-verify, ...). At most
# about 8 minutes; each check prints one line (benchmarks/gpu_check.py), then the tests/gpu suite runs.
#
#   bash benchmarks/gpu_check.sh            # PYTHON=/path/to/python to choose the interpreter
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'gpu_check: no CUDA device'; \
print('device:', torch.cuda.get_device_name(0), '| torch', torch.__version__, '| CUDA', torch.version.cuda)"
timeout 360 "$PYTHON" benchmarks/gpu_check.py "$@" 2> gpu_check.log
echo "tests/gpu:"
timeout 120 "$PYTHON" -m pytest -q -m gpu tests/gpu -p no:cacheprovider 2>&1 | tail -3
