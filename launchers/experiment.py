"""The efficiency experiment (data-selection arena): curricula x seeds, same recipe and budget, held-out accuracy
by epoch and what reaching it cost.

    python launchers/experiment.py --config launchers/recipes/experiment_cpu.yaml [key=value ...]

If a curriculum's overrides name {pass_rate_file}, first runs `deepspeed --num_gpus <num_ranks>
launchers/pass_rate.py` into <output_dir>/pass_rate.json (log: pass_rate.log; the job reuses a file made
with the same settings and refuses one made with others) and puts its path there. Then runs `deepspeed --num_gpus <num_ranks> launchers/train.py` once
per (curriculum, seed) into <output_dir>/<curriculum>/seed_<s>/ (a run that finished is not run again;
a killed one resumes), and writes <output_dir>/report.md, curves.json, accuracy.png and waste.png. A
child that fails stops the experiment with the end of its log (its exception). The last line printed
is `speedup_vs_<baseline>=X seeds=S best=NAME`. See gainrl/experiment.py for the definitions.
"""
import json
import os
import subprocess
import sys
import time

from gainrl import dist, metrics
from gainrl.config import TrainRunConfig, changed_keys, config_dict, layered_overrides, load_config
from gainrl.experiment import (ExperimentConfig, accuracy_curve, analyse_runs, child_error, fill_placeholders,
                               plot_curves, plot_zero_variance, read_run, read_score_metadata, report_markdown,
                               results_json, speedup, summary_line, uses_pass_rates, validate_experiment)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_dir(cfg: ExperimentConfig, curriculum: str, seed: int) -> str:
    return os.path.join(cfg.output_dir, curriculum, f"seed_{seed}")


def pass_rate_path(cfg: ExperimentConfig) -> str:
    return os.path.join(cfg.output_dir, "pass_rate.json")


def train_args(cfg: ExperimentConfig, curriculum: str, seed: int) -> list[str]:
    """launchers/train.py's arguments for one run: the recipe, the shared overrides, the curriculum's (with the
    pass-rate file's path filled in), the seed."""
    return ["--config", cfg.recipe, *layered_overrides(
        cfg.overrides, fill_placeholders(cfg.curricula[curriculum], pass_rate_path(cfg)),
        [f"seed={seed}", f"train.output_dir={run_dir(cfg, curriculum, seed)}", "validation.every_epochs=1"])]


def pass_rate_args(cfg: ExperimentConfig) -> list[str]:
    """launchers/pass_rate.py's arguments: the runs' recipe and shared overrides, the samples and the output."""
    return ["--config", cfg.recipe, *layered_overrides(cfg.overrides, [f"pass_rate.samples={cfg.pass_rate_samples}",
                                                                       f"pass_rate.output={pass_rate_path(cfg)}"])]


def run_child(script: str, args: list[str], num_ranks: int, log_path: str, what: str) -> None:
    """`deepspeed --num_gpus num_ranks script args`, output to log_path; a failure raises with the log's error."""
    launcher = os.path.join(os.path.dirname(sys.executable), "deepspeed")
    command = [launcher, "--num_gpus", str(num_ranks), "--master_port", str(dist.free_port()),  # not 29500:
               os.path.join(REPO, "launchers", script), *args]  # another job on this machine may hold it
    with open(log_path, "w") as log:
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        with open(log_path, errors="replace") as log:
            excerpt = child_error(log.read())
        raise dist.ReportedError(f"{what} failed (exit {result.returncode}); its error, from {log_path}:\n{excerpt}")


def prepare_pass_rates(cfg: ExperimentConfig) -> None:
    """The pass-rate file the curricula that name {pass_rate_file} walk: computed once, same recipe and shared
    overrides as the runs."""
    if not uses_pass_rates(cfg.curricula):
        return
    path = pass_rate_path(cfg)  # always run: the job reuses a finished file made with the same settings
    os.makedirs(cfg.output_dir, exist_ok=True)  # (in seconds, before any engine) and refuses one made otherwise
    metrics.log(f"pass rates: {cfg.pass_rate_samples} rollouts per training row -> {path}")
    started = time.time()
    run_child("pass_rate.py", pass_rate_args(cfg), cfg.num_ranks, os.path.join(cfg.output_dir, "pass_rate.log"),
              "the pass-rate job")
    metrics.log(f"pass rates: done in {time.time() - started:.0f} s")


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
    started = time.time()
    run_child("train.py", train_args(cfg, curriculum, seed), cfg.num_ranks, os.path.join(out, "train.log"),
              f"{curriculum} seed {seed}")
    curve = accuracy_curve(read_run(out).validation)
    metrics.log(f"{curriculum} seed {seed}: done in {time.time() - started:.0f} s, held-out accuracy by epoch "
                + " ".join(f"{a:.2f}" for a in curve))


def main(argv: list[str]) -> None:
    cfg = load_config(argv, ExperimentConfig, validator=validate_experiment)
    runs = [(name, seed) for seed in cfg.seeds for name in cfg.curricula]
    metrics.log(f"{len(runs)} runs: {list(cfg.curricula)} x seeds {cfg.seeds} -> {cfg.output_dir}")
    prepare_pass_rates(cfg)
    for k, (name, seed) in enumerate(runs):  # seeds outermost: a partial experiment already compares curricula
        metrics.log(f"run {k + 1}/{len(runs)}: {name}, seed {seed}")
        train(cfg, name, seed)

    logs = {name: {seed: read_run(run_dir(cfg, name, seed)) for seed in cfg.seeds} for name in cfg.curricula}
    score_files = {run.score_file for by_seed in logs.values() for run in by_seed.values() if run.score_file}
    target, results = analyse_runs(logs, cfg.baseline, {path: read_score_metadata(path) for path in score_files})
    num_epochs = len(next(iter(results[cfg.baseline].curves.values()))) - 1
    title = f"Held-out accuracy by epoch: {os.path.basename(cfg.recipe)}"
    report = report_markdown(target, results, cfg.baseline, cfg.method, num_epochs, title)
    with open(os.path.join(cfg.output_dir, "report.md"), "w") as f:
        f.write(report)
    with open(os.path.join(cfg.output_dir, "curves.json"), "w") as f:
        json.dump(results_json(target, results), f, indent=1)
    plot_curves(os.path.join(cfg.output_dir, "accuracy.png"), target, results, title)
    waste = plot_zero_variance(os.path.join(cfg.output_dir, "waste.png"), results,
                               f"Groups with all-equal rewards by epoch: {os.path.basename(cfg.recipe)}")
    print(report)
    print(f"report: {cfg.output_dir}/report.md, plots: {cfg.output_dir}/accuracy.png"
          + (f", {cfg.output_dir}/waste.png" if waste else " (no zero-variance counts in the logs: no waste.png)"))
    ratio, caveat = speedup(results, cfg.baseline, cfg.method, num_epochs)
    if caveat:
        print(f"note: the speed-up is {caveat}")
    print(summary_line(results, cfg.baseline, cfg.method, num_epochs))


if __name__ == "__main__":
    dist.run_entry_point(main, sys.argv[1:])
