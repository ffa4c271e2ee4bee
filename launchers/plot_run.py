"""Draw training runs: PNGs under each RUN_DIR/plots/ (reward, the curriculum, the learner, time, the ranking).

    python launchers/plot_run.py RUN_DIR [RUN_DIR ...]      # RUN_DIR = a run's train.output_dir

Works on a run that is still going (it reads what has been written so far).
"""
import argparse
import sys

from gainrl import dist
from gainrl.plots import plot_run


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="a training run's train.output_dir")
    args = parser.parse_args(argv)
    for run_dir in args.run_dirs:
        for path in plot_run(run_dir):
            print(path)


if __name__ == "__main__":
    dist.run_entry_point(main, sys.argv[1:])
