"""Train a policy with GRPO and the GAIN-RL curriculum.

    deepspeed --num_gpus 8 launchers/train.py --config launchers/recipes/RECIPE.yaml [key=value ...]
    torchrun --nproc_per_node 8 launchers/train.py --config ...
    deepspeed --num_gpus 2 launchers/train.py --config launchers/recipes/demo_cpu.yaml     # CPU demo
"""
import sys
import warnings

from gainrl import dist, metrics
from gainrl.config import TrainRunConfig, load_config
from gainrl.trainer import train


def main(argv: list[str]) -> None:
    # ZeRO-3 calls torch collectives that torch 2.13 marks deprecated: one warning per call otherwise
    warnings.filterwarnings("ignore", message=r"`torch\.distributed\.\w+` is deprecated", category=FutureWarning)
    cfg = load_config(argv, TrainRunConfig)
    info = dist.init_distributed(cfg.dist.timeout_s)
    metrics.silence_other_ranks()
    train(cfg, info)
    dist.shutdown()  # after a failure, no collective: run_entry_point says why


if __name__ == "__main__":  # vLLM spawns helper processes: the guard is required
    dist.run_entry_point(main, sys.argv[1:])
