"""The efficiency experiment (the data-selection arena): curricula side by side, same budget and seeds, compared
by held-out accuracy and by what reaching it cost.

Every (curriculum, seed) pair is one training run of the same recipe (launchers/train.py, with
validation on a held-out split every epoch), differing only in the curriculum's sampler
settings and the seed. The comparison (METHOD.md section 5): the baseline's (uniform, vanilla
GRPO) final held-out accuracy, averaged over seeds, is the target; for each curriculum, the
epochs, optimizer steps, wall-clock seconds and rollout tokens each seed needs to reach it.
Speed-up = the baseline's epochs / the method's, on the seed-mean curves. Besides: what the
selection itself cost (scoring, re-scoring, extra rollouts), the rollouts spent on groups whose
rewards were all equal (no gradient), and Welch's t-test of each curriculum's final accuracies
against the baseline's.

The analysis below is pure (records in, numbers out) and unit-tested; launchers/experiment.py
runs the training and writes the report.
"""
from __future__ import annotations

import json
import math
import os
import re
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import numpy as np
from omegaconf import MISSING

from .config import require
from .jsonl import read_jsonl
from .metric_names import phase_seconds_key

PASS_RATE_FILE = "{pass_rate_file}"  # in a curriculum's overrides: the pass-rate file the runner prepares first
# (quote it, key='{pass_rate_file}': a bare {...} dotlist value is read as a mapping by a config loaded unfilled)
PLACEHOLDERS = (PASS_RATE_FILE,)
NOT_REACHED = "n.r."  # in the report: a seed that did not reach the target within the budget
ABSENT = "-"  # in the report: a quantity the run's logs do not hold (a run from before it was logged)


def default_curricula() -> dict:
    """The arena's curricula (name -> sampler overrides), each with its source."""
    gainrl = ["sampler.schedule=gaussian", "sampler.order=score"]
    by_pass_rate = ["sampler.schedule=gaussian", "sampler.order=pass_rate", "sampler.descending=true",
                    "sampler.use_angle=false", f"train.score_file='{PASS_RATE_FILE}'"]  # easiest first
    return {
        "uniform": ["sampler.schedule=uniform"],  # vanilla GRPO: a fresh random subset each epoch
        "gainrl": gainrl,  # GAIN-RL (arXiv 2506.02281): a Gaussian moving over the angle ranking
        "gainrl_centred": gainrl + ["sampler.center_angle=true"],  # GAIN-RL (2506.02281), angle term centred
        "gainrl_rescore": gainrl + ["sampler.rescore_every_epochs=4"],  # GAIN-RL (2506.02281), re-scored every 4
        "difficulty": by_pass_rate,  # AdaRFT (arXiv 2504.05520): a difficulty curriculum over pass rates
        "learnability": ["sampler.schedule=learnability"],  # learnability p(1-p) (Foster et al., arXiv 2502.12272)
        "greso": ["sampler.schedule=uniform", "sampler.skip_zero_variance=true"],  # GRESO (arXiv 2506.02177)
        "dapo": ["sampler.schedule=uniform", "sampler.dynamic_sampling=true"],  # DAPO dynamic sampling (2503.14476)
    }


@dataclass
class ExperimentConfig:
    recipe: str = MISSING  # the training recipe every run starts from (it needs a validation.path)
    overrides: list[str] = field(default_factory=list)  # key=value applied to every run (and the pass-rate job)
    curricula: dict[str, list[str]] = field(default_factory=dict)  # name -> its sampler overrides; a given dict
    # replaces the arena's (it is not merged into them); left empty: default_curricula()
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    baseline: str = "uniform"  # whose final accuracy is the target
    method: str = "gainrl"  # the numerator of the reported speed-up
    num_ranks: int = 2  # ranks per run (deepspeed --num_gpus)
    pass_rate_samples: int = 4  # rollouts per training row of the pass-rate job (run if a curriculum names
    # {pass_rate_file}: <output_dir>/pass_rate.json)
    output_dir: str = "runs/experiment"  # <output_dir>/<curriculum>/seed_<s>/ per run; report.md, *.png

    def __post_init__(self):
        # the default is filled in here, not by default_factory: a config merges a YAML mapping into a default
        # one key by key, so `curricula: {uniform: [...], gainrl: [...]}` would have run all eight
        if not self.curricula:
            self.curricula = default_curricula()


def validate_experiment(cfg: ExperimentConfig) -> None:
    require(len(cfg.seeds) >= 1 and len(set(cfg.seeds)) == len(cfg.seeds), "seeds", "must be distinct, at least one")
    require(cfg.baseline in cfg.curricula, "baseline", f"{cfg.baseline!r} is not among curricula {list(cfg.curricula)}")
    require(cfg.method in cfg.curricula, "method", f"{cfg.method!r} is not among curricula {list(cfg.curricula)}")
    require(cfg.num_ranks >= 1, "num_ranks", "must be >= 1")
    require(cfg.pass_rate_samples >= 1, "pass_rate_samples", "must be >= 1")
    for name, overrides in cfg.curricula.items():
        bad = [o for o in overrides if "=" not in o]
        require(not bad, f"curricula.{name}", f"entries are key=value overrides, got {bad}")
        unknown = sorted({m for o in overrides for m in re.findall(r"\{[^{}]*\}", o)} - set(PLACEHOLDERS))
        require(not unknown, f"curricula.{name}", f"unknown placeholder(s) {unknown}; known: {list(PLACEHOLDERS)}")


# ---- the runner's pure parts ----------------------------------------------------------------------

def uses_pass_rates(curricula: dict[str, list[str]]) -> bool:
    """Whether a curriculum walks the pass-rate file (names the placeholder), so it must be computed first."""
    return any(PASS_RATE_FILE in o for overrides in curricula.values() for o in overrides)


def fill_placeholders(overrides: list[str], pass_rate_file: str) -> list[str]:
    return [o.replace(PASS_RATE_FILE, pass_rate_file) for o in overrides]


_LAUNCHER_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,.]+\] \[[A-Z]+\] \[(?:launch|runner)\.py:\d+:")
_TRACEBACK = re.compile(r"Traceback \(most recent call last\)")
_USER_ERROR = re.compile(r"^(?:\[rank\d+\]:\s*)?error(?: \(rank \d+ of \d+\))?: ")  # run_entry_point's error line
_ERROR_WORD = re.compile(r"\w*(?:Error|Exception)\b|\[Errno \d+\]|\b(?:Killed|Segmentation fault|Aborted)\b")


def child_error(log_text: str, max_lines: int = 40) -> str:
    """The part of a failed child's log that holds its error: from the last traceback's first line or the last
    `error: ` line (a user error, printed without a traceback), whichever is later, else from the last line
    naming an Error, an Exception, an errno or a fatal signal, to the end; the last `max_lines` of those lines,
    without the deepspeed launcher's own (a log with none of these: its last `max_lines` such lines)."""
    lines = log_text.splitlines()

    def last(pattern: re.Pattern) -> Optional[int]:
        found = [k for k, line in enumerate(lines) if pattern.search(line) and not _LAUNCHER_LINE.match(line)]
        return found[-1] if found else None

    starts = [k for k in (last(_TRACEBACK), last(_USER_ERROR)) if k is not None]
    start = max(starts) if starts else last(_ERROR_WORD)
    kept = [line for line in lines[start or 0:] if not _LAUNCHER_LINE.match(line)]
    return "\n".join((kept or lines)[-max_lines:])


# ---- one run's logs -------------------------------------------------------------------------------

@dataclass
class RunLogs:
    """What the analysis reads of one run's folder."""
    validation: list[dict]  # validation.jsonl: {epoch, step, accuracy, ...}
    steps: list[dict]  # metrics.jsonl: one record per optimizer step
    score_file: Optional[str] = None  # run.json's: the ranking the run walked (None: it walked none)


def read_run(folder: str) -> RunLogs:
    validation = os.path.join(folder, "validation.jsonl")
    if not os.path.isfile(validation):
        raise ValueError(f"{validation} not found: every run needs a validation.path (held-out split)")
    metrics_file, run_file = os.path.join(folder, "metrics.jsonl"), os.path.join(folder, "run.json")
    steps = read_jsonl(metrics_file) if os.path.isfile(metrics_file) else []
    score_file = None
    if os.path.isfile(run_file):
        with open(run_file, encoding="utf-8") as f:
            score_file = json.load(f).get("score_file")
    return RunLogs(read_jsonl(validation), steps, score_file)


def read_score_metadata(path: str) -> Optional[dict]:
    """A score file's metadata, or None when the file is gone or unreadable (its costs are then shown as absent)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f).get("metadata", {})
    except (OSError, ValueError, AttributeError):
        return None


def accuracy_curve(validation: list[dict]) -> list[float]:
    """Held-out accuracy after 0, 1, ... epochs (the last record of an epoch wins)."""
    by_epoch = {r["epoch"]: r["accuracy"] for r in validation}
    return [by_epoch[e] for e in sorted(by_epoch)]


def wall_seconds(steps: list[dict]) -> dict[int, float]:
    """step -> seconds since the run started (its elapsed_s), continued across a resume: a resumed run's clock
    starts again at 0, so its records are offset by the last elapsed_s before the restart."""
    offset, previous, seconds = 0.0, 0.0, {}
    for record in steps:
        elapsed = record.get("elapsed_s")
        if elapsed is None:
            continue
        if elapsed < previous:
            offset += previous
        previous = elapsed
        seconds[record["step"]] = offset + elapsed
    return seconds


def step_sums(steps: list[dict], key: str) -> Optional[list[float]]:
    """Each step's `key`, or None when a record lacks it (a run from before it was logged)."""
    values = [record.get(key) for record in steps]
    return None if not steps or any(v is None for v in values) else [float(v) for v in values]


@dataclass(frozen=True)
class ToTarget:
    """What one seed spent to reach the target; epochs None: not reached within the budget (then all None)."""
    epochs: Optional[int]
    steps: Optional[int] = None  # optimizer steps done at that validation
    seconds: Optional[float] = None  # the run's elapsed_s at that step (training, validation, re-scoring)
    rollout_tokens: Optional[float] = None  # response tokens generated up to that step (all rounds); None: not logged


def to_target(run: RunLogs, epochs: Optional[int]) -> ToTarget:
    """The steps, seconds and rollout tokens at the validation `epochs` epochs in (curve index `epochs`)."""
    if epochs is None:
        return ToTarget(None)
    by_epoch = {r["epoch"]: r for r in run.validation}
    step = by_epoch[sorted(by_epoch)[epochs]].get("step")
    if step is None:
        return ToTarget(epochs)
    if step == 0:
        return ToTarget(epochs, 0, 0.0, 0.0)
    tokens = step_sums(run.steps, "rollout_tokens")
    cumulative = None if tokens is None else {r["step"]: t for r, t in zip(run.steps, np.cumsum(tokens))}
    return ToTarget(epochs, step, wall_seconds(run.steps).get(step),
                    None if cumulative is None else cumulative.get(step))


@dataclass(frozen=True)
class RunTotals:
    """Sums over one run's steps; None: not in its metrics.jsonl."""
    rescore_s: Optional[float]  # periodic angle re-scoring
    extra_rollouts: Optional[float]  # generated beyond the steps' batches (dynamic sampling)
    rollout_tokens: Optional[float]  # response tokens generated, all rounds
    groups: Optional[float]  # groups generated
    zero_variance_groups: Optional[float]  # generated groups whose rewards were all equal (no gradient)
    zero_variance_tokens: Optional[float]  # response tokens of those groups

    @property
    def zero_variance_fraction(self) -> Optional[float]:
        if self.groups is None or self.zero_variance_groups is None or self.groups == 0:
            return None
        return self.zero_variance_groups / self.groups

    @property
    def zero_variance_token_share(self) -> Optional[float]:
        if self.rollout_tokens is None or self.zero_variance_tokens is None or self.rollout_tokens == 0:
            return None
        return self.zero_variance_tokens / self.rollout_tokens


def run_totals(steps: list[dict]) -> RunTotals:
    def total(key: str) -> Optional[float]:
        values = step_sums(steps, key)
        return None if values is None else float(sum(values))

    return RunTotals(total(phase_seconds_key("rescore")), total("num_extra_rollouts"), total("rollout_tokens"),
                     total("num_groups"), total("num_zero_variance_groups"), total("zero_variance_tokens"))


def zero_variance_by_epoch(steps: list[dict]) -> Optional[list[float]]:
    """Per training epoch (0, 1, ...): the fraction of the generated groups whose rewards were all equal."""
    groups, zero = step_sums(steps, "num_groups"), step_sums(steps, "num_zero_variance_groups")
    if groups is None or zero is None:
        return None
    sums: dict[int, list[float]] = {}
    for record, g, z in zip(steps, groups, zero):
        entry = sums.setdefault(record["epoch"], [0.0, 0.0])
        entry[0] += g
        entry[1] += z
    return [z / g if g else float("nan") for g, z in (sums[e] for e in sorted(sums))]


# ---- selection cost and significance ----------------------------------------------------------------

@dataclass(frozen=True)
class Selection:
    """What the curriculum's ranking cost before training: its score file(s), each computed once."""
    score_files: tuple  # distinct paths (run.json score_file over the seeds); () when it walks none
    kinds: tuple  # each file's metadata kind (a file without one is the scorer's angle file)
    seconds: Optional[float]  # wall time to compute them (metadata seconds); 0 without a file; None: not recorded
    rollout_tokens: Optional[float]  # tokens generated to compute them (a pass-rate job); same conventions
    shared_with: tuple  # the other curricula walking one of the same files (it was computed once for all)


def selection_costs(score_files: dict[str, list[Optional[str]]],
                    metadata: dict[str, Optional[dict]]) -> dict[str, Selection]:
    """score_files[curriculum] = each seed's run.json score_file; metadata[path] = that file's metadata (None:
    unreadable)."""
    users: dict[str, list[str]] = {}
    for name, paths in score_files.items():
        for path in sorted(set(p for p in paths if p)):
            users.setdefault(path, []).append(name)
    costs = {}
    for name, paths in score_files.items():
        files = tuple(sorted(set(p for p in paths if p)))
        found = [metadata.get(path) for path in files]

        def summed(key: str) -> Optional[float]:
            values = [None if m is None else m.get(key) for m in found]
            return None if any(v is None for v in values) else float(sum(values))

        kinds = tuple("unreadable" if m is None else m.get("kind", "angle") for m in found)
        shared = tuple(n for n in score_files if n != name and any(n in users[p] for p in files))
        costs[name] = Selection(files, kinds, summed("seconds"), summed("rollout_tokens"), shared)
    return costs


@dataclass(frozen=True)
class Welch:
    diff: float  # mean(a) - mean(b)
    t: float  # nan when both samples have zero variance
    df: float  # Welch-Satterthwaite degrees of freedom
    p: float  # two-sided


def welch_test(a, b) -> Optional[Welch]:
    """Welch's unequal-variance t-test of mean(a) against mean(b); None with fewer than 2 values in either."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return None
    diff = float(a.mean() - b.mean())
    if a.var(ddof=1) == 0 and b.var(ddof=1) == 0:
        return Welch(diff, float("nan"), float("nan"), float("nan"))
    from scipy.stats import ttest_ind  # scipy: only when there is a test to make
    with warnings.catch_warnings():  # equal accuracies within a sample (common: few held-out rows) make scipy warn
        warnings.simplefilter("ignore", RuntimeWarning)  # of precision loss; the zero spread is exact, not lost
        result = ttest_ind(a, b, equal_var=False)
    return Welch(diff, float(result.statistic), float(result.df), float(result.pvalue))


# ---- the curves ---------------------------------------------------------------------------------------

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
    # filled by analyse_runs from the runs' logs:
    to_target: dict[int, ToTarget] = field(default_factory=dict)  # seed -> steps, seconds, tokens to the target
    totals: dict[int, RunTotals] = field(default_factory=dict)  # seed -> the run's sums
    zero_variance: dict[int, Optional[list[float]]] = field(default_factory=dict)  # seed -> by training epoch
    selection: Optional[Selection] = None
    versus_baseline: Optional[Welch] = None  # final accuracy per seed vs the baseline's; None: < 2 seeds, or it

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
    same length (the same epoch budget). The target is the baseline's final accuracy, mean over seeds; each
    curriculum's final accuracies are tested against the baseline's."""
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
    for name, result in results.items():
        result.versus_baseline = None if name == baseline else welch_test(result.final, results[baseline].final)
    return target, results


def analyse_runs(runs: dict[str, dict[int, RunLogs]], baseline: str,
                 score_metadata: dict[str, Optional[dict]]) -> tuple[float, dict[str, CurriculumResult]]:
    """analyse() on the runs' validation curves, then per seed what reaching the target cost and the runs' sums,
    and the selection cost (score_metadata: each run.json score_file's metadata)."""
    curves = {name: {seed: accuracy_curve(run.validation) for seed, run in by_seed.items()}
              for name, by_seed in runs.items()}
    target, results = analyse(curves, baseline)
    selection = selection_costs({name: [run.score_file for run in by_seed.values()] for name, by_seed in runs.items()},
                                score_metadata)
    for name, result in results.items():
        by_seed = runs[name]
        result.to_target = {seed: to_target(by_seed[seed], e) for seed, e in result.epochs_to_target.items()}
        result.totals = {seed: run_totals(run.steps) for seed, run in by_seed.items()}
        result.zero_variance = {seed: zero_variance_by_epoch(run.steps) for seed, run in by_seed.items()}
        result.selection = selection[name]
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


def best_curriculum(results: dict[str, CurriculumResult], num_epochs: int) -> str:
    """The highest mean final held-out accuracy; ties: fewer epochs to the target (mean per seed, E + 1 for a
    seed that never gets there), then the first listed."""
    return max(results, key=lambda name: (round(float(results[name].final.mean()), 9),
                                          -float(np.mean(results[name].censored_epochs(num_epochs)))))



def summary_line(results: dict[str, CurriculumResult], baseline: str, method: str, num_epochs: int) -> str:
    """The experiment's last printed line: `speedup_vs_<baseline>=X seeds=S best=NAME`."""
    ratio, _ = speedup(results, baseline, method, num_epochs)
    num_seeds = len(results[baseline].curves)
    return f"speedup_vs_{baseline}={ratio:.2f} seeds={num_seeds} best={best_curriculum(results, num_epochs)}"

# ---- the report -----------------------------------------------------------------------------------------

def format_count(x: float) -> str:
    """Counts in the report: 9999, 2.5 (a mean), 12.3k, 4.56M."""
    if abs(x) < 10_000:
        return f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}"
    if abs(x) < 1_000_000:
        return f"{x / 1e3:.1f}k"
    return f"{x / 1e6:.2f}M"


def mean_std_cell(values: list, fmt: Callable[[float], str]) -> str:
    """mean +- sample std over seeds ("-" if a seed lacks the value; the value alone for one seed)."""
    if not values or any(v is None for v in values):
        return ABSENT
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(float(np.mean(values)))} +- {fmt(sample_std(values))}"


def to_target_cell(reached: list[ToTarget], quantity: str, fmt: Callable[[float], str]) -> str:
    """One quantity to the target: mean +- std (per seed) when every seed reached it and logged it, else per
    seed, n.r. for a seed that did not reach it and - for one whose logs lack the quantity."""
    values = [getattr(t, quantity) for t in reached]
    if len(reached) > 1 and all(t.epochs is not None and v is not None for t, v in zip(reached, values)):
        return f"{fmt(float(np.mean(values)))} +- {fmt(sample_std(values))} ({', '.join(fmt(v) for v in values)})"
    return ", ".join(NOT_REACHED if t.epochs is None else ABSENT if v is None else fmt(v)
                     for t, v in zip(reached, values))


def _seconds(x: float) -> str:
    return f"{x:.1f}" if abs(x) < 1000 else f"{x:.0f}"


def _percent(x: float) -> str:
    return f"{100 * x:.1f}"


def score_file_cell(selection: Optional[Selection]) -> str:
    if selection is None:
        return ABSENT
    if not selection.score_files:
        return "none"
    shared = f", shared with {', '.join(selection.shared_with)}" if selection.shared_with else ""
    return " + ".join(selection.kinds) + shared


def main_table(target: float, results: dict[str, CurriculumResult], baseline: str, num_epochs: int) -> list[str]:
    lines = [f"| curriculum | final accuracy % | vs {baseline}, points | Welch t, p | seeds reaching target | "
             "epochs to target | steps to target | seconds to target | rollout tokens to target | "
             "epochs to target, mean curve |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for name, result in results.items():
        epochs = result.censored_epochs(num_epochs)
        per_seed = ", ".join(NOT_REACHED if e is None else str(e) for e in result.epochs_to_target.values())
        test = result.versus_baseline
        if name == baseline:
            diff, welch = "(baseline)", "(baseline)"
        else:
            diff = f"{100 * (result.final.mean() - target):+.1f}"
            welch = "n/a" if test is None or math.isnan(test.p) else f"t {test.t:.2f}, p {test.p:.3f}"
        reached = list(result.to_target.values()) or [ToTarget(e) for e in result.epochs_to_target.values()]
        mean_curve = NOT_REACHED if result.mean_curve_epochs is None else str(result.mean_curve_epochs)
        lines.append(f"| {name} | {100 * result.final.mean():.1f} +- {100 * sample_std(result.final):.1f} | {diff} | "
                     f"{welch} | {len(result.reached)}/{len(epochs)} | {np.mean(epochs):.2f} +- "
                     f"{sample_std(epochs):.2f} ({per_seed}) | {to_target_cell(reached, 'steps', format_count)} | "
                     f"{to_target_cell(reached, 'seconds', _seconds)} | "
                     f"{to_target_cell(reached, 'rollout_tokens', format_count)} | {mean_curve} |")
    return lines


def cost_table(results: dict[str, CurriculumResult]) -> list[str]:
    lines = ["| curriculum | score file | scoring s | scoring rollout tokens | re-scoring s | extra rollouts | "
             "rollout tokens | zero-variance groups % | zero-variance tokens (% of rollout tokens) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, result in results.items():
        selection, totals = result.selection, list(result.totals.values())
        scoring = ABSENT if selection is None or selection.seconds is None else _seconds(selection.seconds)
        scoring_tokens = (ABSENT if selection is None or selection.rollout_tokens is None
                          else format_count(selection.rollout_tokens))
        shares = [t.zero_variance_token_share for t in totals]
        waste = mean_std_cell([t.zero_variance_tokens for t in totals], format_count)
        if waste != ABSENT and all(s is not None for s in shares):
            waste += f" ({100 * float(np.mean(shares)):.1f}%)"
        lines.append(f"| {name} | {score_file_cell(selection)} | {scoring} | {scoring_tokens} | "
                     f"{mean_std_cell([t.rescore_s for t in totals], _seconds)} | "
                     f"{mean_std_cell([t.extra_rollouts for t in totals], format_count)} | "
                     f"{mean_std_cell([t.rollout_tokens for t in totals], format_count)} | "
                     f"{mean_std_cell([t.zero_variance_fraction for t in totals], _percent)} | {waste} |")
    return lines


def report_markdown(target: float, results: dict[str, CurriculumResult], baseline: str, method: str,
                    num_epochs: int, title: str) -> str:
    seeds = sorted(next(iter(results.values())).curves)
    ratio, caveat = speedup(results, baseline, method, num_epochs)
    lines = [f"# {title}", "",
             f"{len(seeds)} seeds ({', '.join(map(str, seeds))}), {num_epochs} epochs per run. Target: {baseline}'s "
             f"final held-out accuracy, mean over seeds = {100 * target:.1f}%. A run reaches it at the epoch from "
             "which its accuracy stays at or above it to the end. Epochs to target: mean +- sample std over seeds, a "
             f"seed that never gets there counting {num_epochs + 1} (so such means are lower bounds), per seed in "
             "brackets; and for the seed-mean curve. Steps, seconds (the run's elapsed_s at that step: training, "
             "validation and re-scoring, not the scoring before it) and rollout tokens (generated up to that step, "
             "every round) to target: mean +- std (per seed) when every seed got there, else per seed. "
             f"{NOT_REACHED}: not reached within the budget; {ABSENT}: not in that run's logs (a run from before it "
             f"was logged). vs {baseline}: the difference of the mean final accuracies; Welch's t-test (unequal "
             f"variances, two-sided) of the per-seed final accuracies against {baseline}'s, n/a with fewer than 2 "
             "seeds (or none varying). Per-problem held-out results are not recorded (validation.jsonl holds the "
             "accuracy only), so there is no paired per-problem test.", ""]
    lines += main_table(target, results, baseline, num_epochs)
    lines += ["", "What the selection cost and what was generated for nothing, per run (mean +- std over seeds). "
              "Scoring: the score file's own wall time and generated tokens (from its metadata; none for a curriculum "
              "that walks no ranking). A shared score file (the angle ranking of every Gaussian-over-score run) is "
              "computed once, by the first run that needs it, and reused: its seconds appear in each row that uses "
              "it but were paid once. Re-scoring: periodic re-ranking during training (inside the seconds above). "
              "Extra rollouts: generated beyond the steps' batches (dynamic sampling). Zero-variance groups: "
              "generated groups whose rewards were all equal (no policy gradient), and their response tokens.", ""]
    lines += cost_table(results)
    lines += ["", "Held-out accuracy % after each epoch (mean over seeds):", "",
              "| curriculum | " + " | ".join(str(e) for e in range(num_epochs + 1)) + " |",
              "|---|" + "---:|" * (num_epochs + 1)]
    for name, result in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{100 * a:.1f}" for a in result.mean_curve) + " |")
    lines += ["", f"speed-up of {method} over {baseline} (epochs to target of the seed-mean curves, {baseline} / "
              f"{method}): {ratio:.2f}" + (f" ({caveat})" if caveat else ""),
              f"best: {best_curriculum(results, num_epochs)} (highest mean final held-out accuracy; ties: fewer epochs "
              "to target)", ""]
    return "\n".join(lines)


def results_json(target: float, results: dict[str, CurriculumResult]) -> dict:
    """The analysis as plain data (curves.json): curves, and per curriculum and seed the costs; nan -> null."""
    return _json_safe({"target": target,
            "curves": {name: r.curves for name, r in results.items()},
            "to_target": {name: {seed: asdict(t) for seed, t in r.to_target.items()} for name, r in results.items()},
            "totals": {name: {seed: asdict(t) for seed, t in r.totals.items()} for name, r in results.items()},
            "zero_variance_by_epoch": {name: r.zero_variance for name, r in results.items()},
            "selection": {name: None if r.selection is None else asdict(r.selection) for name, r in results.items()},
            "versus_baseline": {name: None if r.versus_baseline is None else asdict(r.versus_baseline)
                                for name, r in results.items()}})


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


# ---- the plots ------------------------------------------------------------------------------------------

def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _band(ax, x, rows: np.ndarray, label: str, scale: float = 100.0) -> None:
    mean = rows.mean(axis=0)
    std = rows.std(axis=0, ddof=1) if len(rows) > 1 else 0 * rows[0]
    line, = ax.plot(x, scale * mean, marker="o", ms=3, label=label)
    ax.fill_between(x, scale * (mean - std), scale * (mean + std), color=line.get_color(), alpha=0.15)


def _finish(fig, ax, path: str, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_curves(path: str, target: float, results: dict[str, CurriculumResult], title: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, result in results.items():
        curves = np.array(list(result.curves.values()))
        _band(ax, np.arange(curves.shape[1]), curves, f"{name} ({len(curves)} seeds)")
    ax.axhline(100 * target, color="black", ls=":", lw=1, label="target (baseline's final, mean)")
    _finish(fig, ax, path, title, "epochs", "held-out greedy accuracy %")
    plt.close(fig)


def plot_zero_variance(path: str, results: dict[str, CurriculumResult], title: str) -> bool:
    """Per curriculum, the fraction of generated groups with all-equal rewards in each training epoch (mean +- std
    over seeds); curricula whose logs lack it are left out. Returns whether there was anything to plot."""
    plotted = {name: np.array(list(r.zero_variance.values())) for name, r in results.items()
               if r.zero_variance and all(v is not None for v in r.zero_variance.values())
               and len({len(v) for v in r.zero_variance.values()}) == 1}
    if not plotted:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, rows in plotted.items():
        _band(ax, np.arange(1, rows.shape[1] + 1), rows, f"{name} ({len(rows)} seeds)")
    _finish(fig, ax, path, title, "training epoch", "zero-variance groups % of generated")
    plt.close(fig)
    return True
