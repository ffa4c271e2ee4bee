"""The efficiency experiment: curricula side by side, same budget and seeds, compared by held-out accuracy.

Every (curriculum, seed) pair is one training run of the same recipe (launchers/train.py, with
validation on a held-out split every epoch), differing only in the curriculum's sampler
settings and the seed. The comparison (METHOD.md section 5): the baseline's (uniform, vanilla
GRPO) final held-out accuracy, averaged over seeds, is the target; for each curriculum, the
epochs each seed needs to reach it. Speed-up = the baseline's mean epochs / the method's.

The analysis below is pure (curves in, numbers out) and unit-tested; launchers/experiment.py
runs the training and writes the report.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from omegaconf import MISSING

from .config import require


def default_curricula() -> dict:
    return {
        "gainrl": ["sampler.schedule=gaussian", "sampler.order=score"],
        "uniform": ["sampler.schedule=uniform"],
        "length": ["sampler.schedule=gaussian", "sampler.order=prompt_tokens", "sampler.descending=false"],
        "random_order": ["sampler.schedule=gaussian", "sampler.order=random"],
    }


@dataclass
class ExperimentConfig:
    recipe: str = MISSING  # the training recipe every run starts from (it needs a validation.path)
    overrides: list[str] = field(default_factory=list)  # key=value applied to every run
    curricula: dict[str, list[str]] = field(default_factory=default_curricula)  # name -> its sampler overrides
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    baseline: str = "uniform"  # whose final accuracy is the target
    method: str = "gainrl"  # the numerator of the reported speed-up
    num_ranks: int = 2  # ranks per run (deepspeed --num_gpus)
    output_dir: str = "runs/experiment"  # <output_dir>/<curriculum>/seed_<s>/ per run; report.md, *.png


def validate_experiment(cfg: ExperimentConfig) -> None:
    require(len(cfg.seeds) >= 1 and len(set(cfg.seeds)) == len(cfg.seeds), "seeds", "must be distinct, at least one")
    require(cfg.baseline in cfg.curricula, "baseline", f"{cfg.baseline!r} is not among curricula {list(cfg.curricula)}")
    require(cfg.method in cfg.curricula, "method", f"{cfg.method!r} is not among curricula {list(cfg.curricula)}")
    require(cfg.num_ranks >= 1, "num_ranks", "must be >= 1")
    for name, overrides in cfg.curricula.items():
        bad = [o for o in overrides if "=" not in o]
        require(not bad, f"curricula.{name}", f"entries are key=value overrides, got {bad}")


# ---- the analysis: pure functions -------------------------------------------------------------------

def epochs_to_reach(curve: list[float], target: float) -> Optional[int]:
    """The number of epochs from which the held-out accuracy stays >= target to the end of the run
    (curve[e] = accuracy after e epochs; curve[0] before training), or None if it never does. "Stays":
    a one-epoch spike of a noisy curve does not count as reaching the target."""
    reached = None
    for epochs, accuracy in enumerate(curve):
        if accuracy >= target - 1e-12:
            reached = epochs if reached is None else reached
        else:
            reached = None
    return reached


def sample_std(values) -> float:
    values = np.asarray(values, dtype=float)
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


@dataclass
class CurriculumResult:
    name: str
    curves: dict[int, list[float]]  # seed -> accuracy after 0, 1, ..., E epochs
    epochs_to_target: dict[int, Optional[int]]  # seed -> epochs to the target (None: not reached in E)
    mean_curve_epochs: Optional[int]  # epochs to the target of the seed-mean curve

    @property
    def final(self) -> np.ndarray:
        return np.array([curve[-1] for curve in self.curves.values()])

    @property
    def mean_curve(self) -> np.ndarray:
        return np.mean(list(self.curves.values()), axis=0)

    @property
    def reached(self) -> list[int]:
        return [e for e in self.epochs_to_target.values() if e is not None]

    def censored_epochs(self, num_epochs: int) -> list[int]:
        """Epochs to the target per seed; a seed that never reaches it counts as E + 1 (it would
        have needed more than the budget: a lower bound)."""
        return [num_epochs + 1 if e is None else e for e in self.epochs_to_target.values()]


def analyse(curves: dict[str, dict[int, list[float]]], baseline: str) -> tuple[float, dict[str, CurriculumResult]]:
    """curves[curriculum][seed] -> (target accuracy, per-curriculum results). All curves must have the
    same length (the same epoch budget). The target is the baseline's final accuracy, mean over seeds."""
    lengths = {len(c) for by_seed in curves.values() for c in by_seed.values()}
    if len(lengths) != 1:
        raise ValueError(f"runs have different numbers of validation points {sorted(lengths)}: "
                         "every run needs validation.every_epochs=1 and the same train.epochs")
    target = float(np.mean([curve[-1] for curve in curves[baseline].values()]))
    results = {}
    for name, by_seed in curves.items():
        mean_curve = np.mean(list(by_seed.values()), axis=0)
        results[name] = CurriculumResult(name, by_seed, {seed: epochs_to_reach(c, target) for seed, c in by_seed.items()},
                                         epochs_to_reach(list(mean_curve), target))
    return target, results


def speedup(results: dict[str, CurriculumResult], baseline: str, method: str, num_epochs: int) -> tuple[float, str]:
    """The baseline's epochs to the target over the method's, both from the seed-mean curves (the
    baseline's mean curve ends at the target, so it reaches it within the budget). Returns the ratio
    and a caveat ("" when it is a plain ratio): a method that never reaches the target counts E + 1
    epochs (the ratio is then an upper bound); a target already met before training makes it undefined."""
    base, meth = results[baseline].mean_curve_epochs, results[method].mean_curve_epochs
    target = results[baseline].final.mean()
    if results[baseline].mean_curve[0] >= target - 1e-12:
        return float("nan"), "undefined: the target is met before training"
    if meth is None:
        return base / (num_epochs + 1), f"an upper bound: {method}'s mean curve never stays at the target"
    return base / max(meth, 1e-9), ""


def report_markdown(target: float, results: dict[str, CurriculumResult], baseline: str, method: str,
                    num_epochs: int, title: str) -> str:
    seeds = sorted(next(iter(results.values())).curves)
    ratio, caveat = speedup(results, baseline, method, num_epochs)
    lines = [f"# {title}", "",
             f"{len(seeds)} seeds ({', '.join(map(str, seeds))}), {num_epochs} epochs per run. Target: {baseline}'s "
             f"final held-out accuracy, mean over seeds = {100 * target:.1f}%. Epochs to target: the epoch from which "
             "the accuracy stays at or above it to the end. Per seed as mean +- sample std over seeds, a seed that "
             f"never gets there counting {num_epochs + 1} (so such means are lower bounds); and for the seed-mean "
             "curve.", "",
             "| curriculum | final accuracy % (mean +- std) | epochs to target, per seed (mean +- std) | "
             "seeds reaching it | per seed | epochs to target, mean curve |",
             "|---|---:|---:|---:|---|---:|"]
    for name, result in results.items():
        epochs = result.censored_epochs(num_epochs)
        per_seed = ", ".join("-" if e is None else str(e) for e in result.epochs_to_target.values())
        mean_curve = "-" if result.mean_curve_epochs is None else str(result.mean_curve_epochs)
        lines.append(f"| {name} | {100 * result.final.mean():.1f} +- {100 * sample_std(result.final):.1f} | "
                     f"{np.mean(epochs):.2f} +- {sample_std(epochs):.2f} | {len(result.reached)}/{len(epochs)} | "
                     f"{per_seed} | {mean_curve} |")
    lines += ["", "Held-out accuracy % after each epoch (mean over seeds):", "",
              "| curriculum | " + " | ".join(str(e) for e in range(num_epochs + 1)) + " |",
              "|---|" + "---:|" * (num_epochs + 1)]
    for name, result in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{100 * a:.1f}" for a in result.mean_curve) + " |")
    lines += ["", f"speed-up of {method} over {baseline} (epochs to target of the seed-mean curves, {baseline} / "
              f"{method}): {ratio:.2f}" + (f" ({caveat})" if caveat else ""), ""]
    return "\n".join(lines)


def plot_curves(path: str, target: float, results: dict[str, CurriculumResult], title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, result in results.items():
        curves = np.array(list(result.curves.values()))
        epochs = np.arange(curves.shape[1])
        mean, std = curves.mean(axis=0), curves.std(axis=0, ddof=1) if len(curves) > 1 else 0 * curves[0]
        line, = ax.plot(epochs, 100 * mean, marker="o", ms=3, label=f"{name} ({len(curves)} seeds)")
        ax.fill_between(epochs, 100 * (mean - std), 100 * (mean + std), color=line.get_color(), alpha=0.15)
    ax.axhline(100 * target, color="black", ls=":", lw=1, label="target (baseline's final, mean)")
    ax.set_xlabel("epochs")
    ax.set_ylabel("held-out greedy accuracy %")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
