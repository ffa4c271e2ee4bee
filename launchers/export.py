"""Export a training checkpoint as a transformers model folder (safetensors, config, tokenizer).

    python launchers/export.py runs/train/demo/checkpoints/step_00000012 runs/export/step12
    python launchers/export.py runs/train/demo runs/export/latest --dtype bfloat16   # newest complete step

CHECKPOINT is a step_* folder, a run's checkpoints/ folder or the run's output_dir; for the last
two the newest complete step_* inside is taken (`.partial` folders are unfinished saves). Runs
offline on CPU in one process (no launcher, no GPU): DeepSpeed's zero_to_fp32 joins the ranks'
partitions. The output's dtype is the model config's unless --dtype is given.
"""
import argparse
import sys

from gainrl import dist
from gainrl.export import DTYPES, export_checkpoint, find_checkpoint


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a step_* checkpoint folder, a run's checkpoints/ folder or its output_dir")
    parser.add_argument("out_dir", help="the transformers folder to write (must not exist)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                        help="weights' dtype on disk (default: the model config's)")
    args = parser.parse_args(argv)
    export_checkpoint(find_checkpoint(args.checkpoint), args.out_dir, dtype=args.dtype)


if __name__ == "__main__":
    dist.run_entry_point(main, sys.argv[1:])
