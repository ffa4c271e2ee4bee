"""Offline pass rates of a training set: k sampled rollouts per row, graded by the training reward.

    deepspeed --num_gpus 8 launchers/pass_rate.py --config launchers/recipes/RECIPE.yaml pass_rate.samples=8
    python launchers/pass_rate.py --config ...            # one process

Writes a score file of kind pass_rate (columns pass_rate, num_correct, num_samples, prompt_tokens,
response_tokens) that a training run walks with train.score_file=FILE sampler.order=pass_rate.
"""
import sys

from gainrl import dist, metrics
from gainrl.config import load_config
from gainrl.pass_rate import PassRateRunConfig, run_pass_rates, validate_pass_rate


def main(argv: list[str]) -> None:
    cfg = load_config(argv, PassRateRunConfig, validate_pass_rate)
    info = dist.init_distributed(cfg.dist.timeout_s)
    metrics.silence_other_ranks()
    run_pass_rates(cfg, info)
    dist.shutdown()  # a no-op once vLLM's shutdown has destroyed the process group


if __name__ == "__main__":  # vLLM spawns helper processes: the guard is required
    dist.run_entry_point(main, sys.argv[1:])
