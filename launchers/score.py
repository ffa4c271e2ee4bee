"""Rank a dataset by angle concentration.

    deepspeed --num_gpus 8 launchers/score.py --config launchers/recipes/RECIPE.yaml [key=value ...]
    torchrun --nproc_per_node 8 launchers/score.py --config ...
    python launchers/score.py --config ...            # one process
"""
import sys

from gainrl import dist, metrics
from gainrl.config import load_config
from gainrl.scorer import run_scoring


def main(argv: list[str]) -> None:
    cfg = load_config(argv)
    info = dist.init_distributed(cfg.dist.timeout_s)
    metrics.silence_other_ranks()
    run_scoring(cfg, info)
    dist.shutdown()  # waits for rank 0, which writes the file last


if __name__ == "__main__":
    dist.run_entry_point(main, sys.argv[1:])
