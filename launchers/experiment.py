"""The GAIN-RL efficiency experiment: curricula x seeds, same recipe and budget, held-out accuracy by epoch.

    python launchers/experiment.py --config launchers/recipes/experiment_cpu.yaml [key=value ...]

Runs `deepspeed --num_gpus <num_ranks> launchers/train.py` once per (curriculum, seed) into
<output_dir>/<curriculum>/seed_<s>/ (a run that finished is not run again; a killed one resumes),
then writes <output_dir>/report.md and accuracy.png. The last line printed is
`speedup_vs_<baseline>=X seeds=S`. See gainrl/experiment.py for the definitions.
"""
import json
import os
import subprocess
import sys
import time

from gainrl import dist, metrics
from gainrl.config import TrainRunConfig, changed_keys, config_dict, load_config
from gainrl.experiment import ExperimentConfig, analyse, plot_curves, report_markdown, speedup, validate_experiment
from gainrl.jsonl import read_jsonl

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_dir(cfg: ExperimentConfig, curriculum: str, seed: int) -> str:
    return os.path.join(cfg.output_dir, curriculum, f"seed_{seed}")


def read_curve(path: str) -> list[float]:
    """Held-out accuracy after 0, 1, ... epochs from a run's validation.jsonl."""
    records = {r["epoch"]: r["accuracy"] for r in read_jsonl(os.path.join(path, "validation.jsonl"))}
    return [records[e] for e in sorted(records)]


def train_args(cfg: ExperimentConfig, curriculum: str, seed: int) -> list[str]:
    """launchers/train.py's arguments for one run: the recipe, the shared overrides, the curriculum's, the seed."""
    return ["--config", cfg.recipe, *cfg.overrides, *cfg.curricula[curriculum], f"seed={seed}",
            f"train.output_dir={run_dir(cfg, curriculum, seed)}", "validation.every_epochs=1"]


def finished_with_these_settings(cfg: ExperimentConfig, curriculum: str, seed: int) -> bool:
    """A run that finished counts only if it was trained with the settings this experiment asks for."""
    out = run_dir(cfg, curriculum, seed)
    if not os.path.isdir(os.path.join(out, "final")):
        return False
    with open(os.path.join(out, "run.json")) as f:
        done = json.load(f)["config"]
    wanted = config_dict(load_config(train_args(cfg, curriculum, seed), TrainRunConfig))
    changed = [k for k in changed_keys(done, wanted) if k != "train.output_dir"]
    if changed:
        raise ValueError(f"{out} finished with other settings ({changed}): remove it or choose another output_dir")
    return True


def train(cfg: ExperimentConfig, curriculum: str, seed: int) -> None:
    out = run_dir(cfg, curriculum, seed)
    if finished_with_these_settings(cfg, curriculum, seed):
        metrics.log(f"{curriculum} seed {seed}: finished earlier ({out})")
        return
    os.makedirs(out, exist_ok=True)
    launcher = os.path.join(os.path.dirname(sys.executable), "deepspeed")
    command = [launcher, "--num_gpus", str(cfg.num_ranks), "--master_port", str(dist.free_port()),  # not 29500:
               os.path.join(REPO, "launchers", "train.py"),  # another job on this machine may hold it
               *train_args(cfg, curriculum, seed)]
    started = time.time()
    with open(os.path.join(out, "train.log"), "w") as log:
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise RuntimeError(f"{curriculum} seed {seed} failed (exit {result.returncode}); see {out}/train.log")
    metrics.log(f"{curriculum} seed {seed}: done in {time.time() - started:.0f} s, held-out accuracy by epoch "
                + " ".join(f"{a:.2f}" for a in read_curve(out)))


def main(argv: list[str]) -> None:
    cfg = load_config(argv, ExperimentConfig, validator=validate_experiment)
    runs = [(name, seed) for seed in cfg.seeds for name in cfg.curricula]
    metrics.log(f"{len(runs)} runs: {list(cfg.curricula)} x seeds {cfg.seeds} -> {cfg.output_dir}")
    for k, (name, seed) in enumerate(runs):  # seeds outermost: a partial experiment already compares curricula
        metrics.log(f"run {k + 1}/{len(runs)}: {name}, seed {seed}")
        train(cfg, name, seed)

    curves = {name: {seed: read_curve(run_dir(cfg, name, seed)) for seed in cfg.seeds} for name in cfg.curricula}
    target, results = analyse(curves, cfg.baseline)
    num_epochs = len(next(iter(curves[cfg.baseline].values()))) - 1
    title = f"Held-out accuracy by epoch: {os.path.basename(cfg.recipe)}"
    report = report_markdown(target, results, cfg.baseline, cfg.method, num_epochs, title)
    with open(os.path.join(cfg.output_dir, "report.md"), "w") as f:
        f.write(report)
    with open(os.path.join(cfg.output_dir, "curves.json"), "w") as f:
        json.dump({"target": target, "curves": curves}, f, indent=1)
    plot_curves(os.path.join(cfg.output_dir, "accuracy.png"), target, results, title)
    print(report)
    print(f"report: {cfg.output_dir}/report.md, plot: {cfg.output_dir}/accuracy.png")
    ratio, caveat = speedup(results, cfg.baseline, cfg.method, num_epochs)
    if caveat:
        print(f"note: the speed-up is {caveat}")
    print(f"speedup_vs_{cfg.baseline}={ratio:.2f} seeds={len(cfg.seeds)}")


if __name__ == "__main__":
    dist.run_entry_point(main, sys.argv[1:])
