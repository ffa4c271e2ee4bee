#!/usr/bin/env bash
# The CPU demo end to end, on 2 CPU ranks: build the inputs (cached) -> score -> GAIN-RL training
# -> evaluate the warm-started model and the trained one on the held-out split -> table and plots.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/deepspeed --num_gpus 2 launchers/train.py --config launchers/recipes/demo_cpu.yaml
rm -rf runs/eval/demo_cpu  # the demo evaluates afresh each time
.venv/bin/python eval/run.py --config eval/configs/demo_cpu.yaml --model runs/models/demo-chains --name warm-start
.venv/bin/python eval/run.py --config eval/configs/demo_cpu.yaml --model runs/train/demo_cpu/final --name gain-rl
.venv/bin/python eval/compare.py runs/eval/demo_cpu/warm-start runs/eval/demo_cpu/gain-rl \
    --output runs/eval/demo_cpu/comparison
echo "demo: training plots in runs/train/demo_cpu/plots/, scores in runs/scores/*.png," \
     "evaluation in runs/eval/demo_cpu/comparison.{md,png}"
