"""Figures people look at instead of reading numbers: the ranking, a training run. Rank-0 callers only.

`plot_run(run_dir)` draws a finished or running training run from the files the trainer leaves in
its output_dir (metrics.jsonl, draws.jsonl, run.json, and the score file run.json names) into
`run_dir/plots/*.png`; `launchers/plot_run.py` is its command line.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .jsonl import read_jsonl  # noqa: E402
from .metric_names import phase_of, phase_seconds_key  # noqa: E402
from .sampler import resolve_positions  # noqa: E402
from .scores import file_kind, read_score_file  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

MAX_EPOCH_LINES = 40  # more epoch boundaries than this would grey out the plot: only the top axis marks them
PHASE_COLORS = {"generate": "tab:blue", "reward": "tab:orange", "old_logprobs": "tab:green", "update": "tab:red",
                "push": "tab:purple", "offload": "tab:gray"}
OPTIMIZATION_KEYS = (("loss", "policy loss"), ("kl_mean", "KL to reference"), ("grad_norm", "gradient norm"),
                     ("clip_fraction", "clipped token fraction"), ("ratio_mean", "mean ratio"),
                     ("entropy_mean", "entropy"), ("angle_mean", "training-time angle signal"),
                     ("logprob_gap_mean", "|vLLM - learner| log-prob, mean"),
                     ("logprob_gap_max", "|vLLM - learner| log-prob, max"), ("tokens_per_s", "tokens / s"))
LOG_SCALE_KEYS = ("logprob_gap_mean", "logprob_gap_max")  # spans decades: fp32 ~1e-7, bf16 ~1e-2, a stale push ~1


SCORE_LABELS = {"score": "angle concentration score (C_intra + w_inter C_inter)",
                "pass_rate": "pass rate (sampled rollouts correct)"}  # a score file's plotted column -> axis label


def plot_scores(path: str, scores, prompt_tokens, title: str, spearman_length: float, column: str = "score") -> None:
    """Histogram of a score file's `column` (an angle file's score, a pass-rate file's pass_rate) and the
    column against prompt length, side by side."""
    scores, prompt_tokens = np.asarray(scores), np.asarray(prompt_tokens)
    fig, (hist, scatter) = plt.subplots(1, 2, figsize=(11, 4))
    hist.hist(scores, bins=min(60, max(10, len(scores) // 20)), color="tab:blue")
    hist.set_xlabel(SCORE_LABELS[column])
    hist.set_ylabel("rows")
    hist.set_title(f"{len(scores)} rows")
    scatter.scatter(prompt_tokens, scores, s=4, alpha=0.5, color="tab:orange")
    scatter.set_xlabel("prompt tokens")
    scatter.set_ylabel(column)
    scatter.set_title(f"Spearman({column}, prompt length) = {spearman_length:+.3f}")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def series(records: list[dict], key: str) -> np.ndarray:
    """One metric over the records, NaN where it is missing or None (matplotlib leaves a gap)."""
    return np.array([np.nan if r.get(key) is None else float(r[key]) for r in records], dtype=np.float64)


def line_style(num_points: int) -> dict:
    """Markers when there are few points: a one-step run is otherwise an empty plot."""
    return {"marker": "o", "markersize": 3} if num_points <= 30 else {}


def integer_axis(ax, values) -> None:
    """Steps and epochs are whole numbers: integer ticks, and room around a lone point (matplotlib would
    otherwise zoom into +-0.05 of it with ticks at fractions of a step)."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(values) and max(values) - min(values) < 2:
        ax.set_xlim(min(values) - 1, max(values) + 1)


def mark_epochs(ax, records: list[dict]) -> None:
    """Thin vertical lines between epochs (when there are few enough) and the epoch on a top axis."""
    steps, epochs = [r["step"] for r in records], [r.get("epoch") for r in records]
    starts = [(steps[k], epochs[k]) for k in range(len(steps)) if k == 0 or epochs[k] != epochs[k - 1]]
    if len(starts) - 1 <= MAX_EPOCH_LINES:
        for step, _ in starts[1:]:
            ax.axvline(step - 0.5, color="tab:gray", lw=0.6, alpha=0.5, zorder=0)
    top = ax.secondary_xaxis("top")
    every = max(1, len(starts) // 10)
    top.set_xticks([s for s, _ in starts[::every]], [str(e) for _, e in starts[::every]], fontsize=7)
    top.set_xlabel("epoch", fontsize=8)


# ---- a whole run: plot_run(run_dir) ------------------------------------------------------------

@dataclass
class RunFiles:
    """What the trainer leaves in its output_dir, read once. Records are sorted, and a step or epoch
    that appears twice (a resumed run re-did it) keeps its last record."""
    run_dir: str
    info: dict  # run.json: score_file, num_rows, title, schedule, order, config
    metrics: list[dict]  # metrics.jsonl, one per optimizer step
    draws: list[dict]  # draws.jsonl, one per epoch
    scores: Optional[object]  # scores.ScoreTable, when run.json names a score file that exists
    validation: list[dict] = field(default_factory=list)  # validation.jsonl (held-out accuracy), if any

    @property
    def num_rows(self) -> int:
        return int(self.info["num_rows"])

    @property
    def sampler_config(self) -> dict:
        return (self.info.get("config") or {}).get("sampler") or {}


def last_record_per(records: list[dict], key: str) -> list[dict]:
    return sorted({r[key]: r for r in records}.values(), key=lambda r: r[key])


def read_run(run_dir: str) -> RunFiles:
    """Read a run directory; ValueError naming the file when one is missing or empty."""
    def required(name: str) -> str:
        path = os.path.join(run_dir, name)
        if not os.path.isfile(path):
            raise ValueError(f"{path} not found: is {run_dir} a training run's train.output_dir?")
        return path

    with open(required("run.json"), encoding="utf-8") as f:
        info = json.load(f)
    metrics = last_record_per(read_jsonl(required("metrics.jsonl")), "step")
    if not metrics:
        raise ValueError(f"{os.path.join(run_dir, 'metrics.jsonl')} has no steps yet: nothing to plot")
    draws = last_record_per(read_jsonl(required("draws.jsonl")), "epoch")
    scores = None
    score_file = info.get("score_file")
    if score_file is None:
        print(f"note: {run_dir} has no score file ({info.get('schedule')} / {info.get('order')}): "
              "no score plot")
    elif not os.path.isfile(score_file):
        print(f"note: score file {score_file} (named in run.json) not found: no score plot")
    else:
        try:
            scores = read_score_file(score_file)
        except ValueError as e:  # a damaged score file should not cost the other plots
            print(f"note: {e}: no score plot")
    validation_path = os.path.join(run_dir, "validation.jsonl")
    validation = last_record_per(read_jsonl(validation_path), "epoch") if os.path.isfile(validation_path) else []
    return RunFiles(run_dir, info, metrics, draws, scores, validation)


def plot_run(run_dir: str) -> list[str]:
    """Draw a training run into run_dir/plots/; returns the PNG paths written. See the module docstring."""
    run = read_run(run_dir)
    out = os.path.join(run_dir, "plots")
    os.makedirs(out, exist_ok=True)
    paths = []
    figures = [("progress", plot_progress), ("curriculum", plot_curriculum), ("optimization", plot_optimization),
               ("time", plot_time)] + ([("mu_terms", plot_mu_terms)] if mu_updates(run.draws) else [])
    for name, draw in figures:
        path = os.path.join(out, f"{name}.png")
        fig = draw(run)
        fig.suptitle(run.info.get("title", run_dir), fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    if run.scores is not None:
        from scipy.stats import spearmanr
        columns, meta = run.scores.columns, run.scores.metadata
        column = "pass_rate" if file_kind(meta) == "pass_rate" else "score"
        rho = float(spearmanr(columns[column], columns["prompt_tokens"]).statistic) \
            if run.scores.num_rows > 2 else float("nan")
        made_by = (f"{meta.get('samples', '?')} rollouts per row" if column == "pass_rate"
                   else f"layer {meta.get('layer', '?')}")
        title = f"{os.path.basename(run.scores.path)}: {meta.get('model_path', '?')}, {made_by}"
        path = os.path.join(out, "scores.png")
        plot_scores(path, columns[column], columns["prompt_tokens"], title, rho, column)
        paths.append(path)
    return paths


def epoch_means(run: RunFiles, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, mean of `key` over each epoch's steps): every step of an epoch has as many rollouts, so
    the plain mean is the epoch's value, the one the sampler moved mu with."""
    epochs = np.array([r["epoch"] for r in run.metrics])
    values = series(run.metrics, key)
    unique = np.unique(epochs)
    return unique, np.array([np.nanmean(values[epochs == e]) if np.isfinite(values[epochs == e]).any() else np.nan
                             for e in unique])


def plot_progress(run: RunFiles):
    """Reward, accuracy and wasted groups by step (and the epoch accuracy that moves mu); response lengths."""
    records, steps = run.metrics, [r["step"] for r in run.metrics]
    style = line_style(len(steps))
    fig, (reward, length) = plt.subplots(1, 2, figsize=(14, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    reward_mean, accuracy = series(records, "reward_mean"), series(records, "accuracy")
    same = np.allclose(reward_mean, accuracy, equal_nan=True)  # 0/1 rewards: one line, not two on top of each other
    reward.plot(steps, reward_mean, color="tab:blue", alpha=0.8, label="mean reward (= accuracy)" if same else
                "mean reward", **style)
    if not same:
        reward.plot(steps, accuracy, color="tab:green", ls="--", lw=1, label="accuracy", **style)
    reward.plot(steps, series(records, "wasted_group_fraction"), color="tab:gray", lw=1,
                label="groups with equal rewards (no gradient)", **style)
    first_step, last_step = {}, {}
    for r in records:
        first_step.setdefault(r["epoch"], r["step"])
        last_step[r["epoch"]] = r["step"]
    epochs, epoch_accuracy = epoch_means(run, "accuracy")
    reward.hlines(epoch_accuracy, [first_step[e] - 0.5 for e in epochs], [last_step[e] + 0.5 for e in epochs],
                  color="black", lw=1.5, alpha=0.7, zorder=3, label="epoch accuracy (moves mu)")
    if run.validation:
        reward.plot([max(r["step"], 0.5) for r in run.validation], [r["accuracy"] for r in run.validation],
                    color="tab:orange", marker="D", ms=4, lw=1.2, zorder=4,
                    label=f"held-out greedy accuracy ({run.validation[-1]['num_rows']} rows)")
    beta = run.sampler_config.get("beta")
    if run.info.get("schedule") == "gaussian" and beta is not None:
        reward.axhline(beta, color="tab:red", ls=":", lw=1, label=f"target accuracy beta = {beta:g}")
    reward.set_ylim(-0.02, 1.02)
    reward.set_xlabel("step")
    reward.legend(fontsize=7, loc="best")
    integer_axis(reward, steps)
    mark_epochs(reward, records)
    length.plot(steps, series(records, "response_tokens_mean"), color="tab:purple", label="mean", **style)
    length.plot(steps, series(records, "response_tokens_max"), color="tab:purple", lw=0.8, alpha=0.5,
                label="longest", **style)
    length.set_xlabel("step")
    length.set_ylabel("response tokens")
    length.legend(fontsize=7)
    integer_axis(length, steps)
    for ax in (reward, length):
        ax.grid(alpha=0.3)
    return fig


def sigma_in_positions(run: RunFiles) -> Optional[float]:
    """The Gaussian's width in positions, from run.json's config (None when it cannot be worked out)."""
    cfg = run.sampler_config
    try:
        return resolve_positions(cfg["units"], run.num_rows, sigma=cfg["sigma"], n=cfg["n"], adj_min=cfg["adj_min"],
                                 adj_max=cfg["adj_max"], mu0=cfg["mu0"])["sigma"]
    except (KeyError, TypeError, ValueError, AssertionError):
        return None


def drawn_positions(run: RunFiles, draw: dict) -> tuple[np.ndarray, str]:
    """Where an epoch's prompts sit, and the axis label. The Gaussian schedule records positions in the
    order it walks; a uniform draw has none, so show its rows by score rank when there is a ranking
    (uniform then visibly covers all of it), else by row index."""
    if draw.get("positions") is not None:
        order = run.info.get("order", "score")
        if order == "random":
            return np.asarray(draw["positions"]), "position in the random permutation walked"
        first = "highest" if run.sampler_config.get("descending", True) else "lowest"
        return np.asarray(draw["positions"]), f"position in the {order} order ({first} first)"
    if run.scores is not None:
        return np.asarray(run.scores.columns["rank"])[np.asarray(draw["indices"])], "score rank (0 = highest)"
    return np.asarray(draw["indices"]), "row index (uniform schedule: no ordering)"


def plot_curriculum(run: RunFiles):
    """Left: each epoch's drawn prompts by position in the ordering, mu and mu +- sigma over them.
    Right: what moved mu after each epoch: the epoch's accuracy against beta, and the angle signal."""
    num_rows = run.num_rows
    fig, (walk, signal) = plt.subplots(1, 2, figsize=(14, 4.6), gridspec_kw={"width_ratios": [3, 2]})
    rng = np.random.default_rng(0)  # jitter within an epoch's column, so its density shows
    label = "position"
    total = sum(len(d["indices"]) for d in run.draws)
    size, alpha = (6, 0.6) if total <= 2000 else (1.5, 0.25)
    for draw in run.draws:
        y, label = drawn_positions(run, draw)
        x = draw["epoch"] + rng.uniform(-0.3, 0.3, len(y))
        walk.scatter(x, y, s=size, alpha=alpha, color="tab:blue", lw=0, rasterized=True)
    mus = [(d["epoch"], d["mu"]) for d in run.draws if d.get("mu") is not None]
    if mus:
        epochs, mu = map(np.asarray, zip(*mus))
        walk.plot(epochs, mu, color="tab:red", lw=1.5, label="mu (Gaussian centre)", **line_style(len(mu)))
        sigma = sigma_in_positions(run)
        if sigma is not None:
            walk.fill_between(epochs, np.clip(mu - sigma, 0, num_rows - 1), np.clip(mu + sigma, 0, num_rows - 1),
                              color="tab:red", alpha=0.12, lw=0, label=f"mu +- sigma (sigma = {sigma:.0f})")
        walk.legend(fontsize=7, loc="upper left")
    walk.set_ylim(-0.02 * num_rows, 1.02 * num_rows)
    walk.axhline(num_rows - 1, color="tab:gray", ls="--", lw=0.8)
    walk.set_xlabel("epoch")
    walk.set_ylabel(label)
    walk.set_title(f"prompts drawn per epoch over the N = {num_rows} rows ({run.info.get('schedule')} schedule)",
                   fontsize=9)
    integer_axis(walk, [d["epoch"] for d in run.draws])
    epochs, accuracy = epoch_means(run, "accuracy")
    signal.plot(epochs, accuracy, color="tab:green", label="epoch accuracy", **line_style(len(epochs)))
    beta = run.sampler_config.get("beta")
    gaussian = run.info.get("schedule") == "gaussian"
    if gaussian and beta is not None:
        signal.axhline(beta, color="tab:green", ls=":", lw=1, label=f"target accuracy beta = {beta:g}")
    signal.set_ylim(-0.02, 1.02)
    signal.set_xlabel("epoch")
    signal.set_ylabel("accuracy")
    epochs, angle = epoch_means(run, "angle_mean")
    angle_axis = signal.twinx()
    angle_axis.plot(epochs, angle, color="tab:orange", lw=1, label="epoch angle signal", **line_style(len(epochs)))
    angle_axis.set_ylabel("angle signal (mean pairwise cosine)")
    signal.legend(fontsize=7, loc="upper left")
    angle_axis.legend(fontsize=7, loc="lower right")
    integer_axis(signal, epochs)
    signal.set_title("what moves mu after each epoch" if gaussian else "each epoch (uniform schedule: no mu)",
                     fontsize=9)
    for ax in (walk, signal):
        ax.grid(alpha=0.3)
    return fig


def mu_updates(draws: list[dict]) -> list[tuple[int, dict]]:
    """(epoch whose accuracy and angle made it, the update) for each Gaussian mu update that draws.jsonl
    records (each draw holds the update that moved mu to it)."""
    return [(d["epoch"] - 1, d["update"]) for d in draws
            if isinstance(d.get("update"), dict) and "accuracy_term" in d["update"]]


def term_shares(updates: list[dict]) -> tuple[float, float]:
    """The accuracy term's and the angle term's shares of mu's movement, sum |term| / sum |both terms|,
    before the clip to [adj_min, adj_max] (nan when neither moved it)."""
    acc = sum(abs(u["accuracy_term"]) for u in updates)
    ang = sum(abs(u["angle_term"]) for u in updates)
    total = acc + ang
    return (acc / total, ang / total) if total > 0 else (float("nan"), float("nan"))


def plot_mu_terms(run: RunFiles):
    """After each epoch: mu's step and its two terms, n tanh(alpha (acc - beta)) and n tanh(alpha ang)
    (ang centred with sampler.center_angle), in positions; the title gives each term's share."""
    updates = mu_updates(run.draws)
    epochs = np.array([e for e, _ in updates])
    acc = np.array([u["accuracy_term"] for _, u in updates])
    ang = np.array([u["angle_term"] for _, u in updates])
    step = np.array([u["mu_step"] for _, u in updates])
    acc_share, ang_share = term_shares([u for _, u in updates])
    fig, ax = plt.subplots(figsize=(9, 4.2))
    ax.bar(epochs - 0.2, acc, width=0.4, color="tab:green", label="accuracy term")
    ax.bar(epochs + 0.2, ang, width=0.4, color="tab:orange",
           label="angle term" + (" (centred signal)" if run.sampler_config.get("center_angle") else ""))
    ax.plot(epochs, step, color="black", marker="o", ms=3, lw=1, label="mu's step (after the clip)")
    ax.axhline(0, color="tab:gray", lw=0.8)
    ax.set_xlabel("epoch")
    ax.set_ylabel("positions")
    ax.set_title(f"what moved mu: accuracy term {100 * acc_share:.0f}%, angle term {100 * ang_share:.0f}% of "
                 "sum |term|", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    integer_axis(ax, epochs)
    return fig


def plot_optimization(run: RunFiles):
    """Small multiples of the learner's health by step: loss, KL, gradient norm, clipping, ratio, entropy,
    angle, the vLLM-learner log-prob gap, throughput (those the run recorded)."""
    records, steps = run.metrics, [r["step"] for r in run.metrics]
    shown = [(key, name) for key, name in OPTIMIZATION_KEYS if np.isfinite(series(records, key)).any()]
    cols = 4
    rows = max(1, -(-len(shown) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(14, 2.9 * rows), squeeze=False)
    for ax, (key, name) in zip(axes.flat, shown):
        values = series(records, key)
        ax.plot(steps, values, color="tab:blue", lw=1, **line_style(len(steps)))
        if key in LOG_SCALE_KEYS and (values[np.isfinite(values)] > 0).all():
            ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        integer_axis(ax, steps)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    return fig


def plot_time(run: RunFiles):
    """Where the wall time goes: seconds per phase of each step, stacked, and each phase's share of the run."""
    records, steps = run.metrics, np.array([r["step"] for r in run.metrics])
    phases = [phase_of(k) for k in records[-1] if phase_of(k) is not None]
    seconds = np.nan_to_num(np.stack([series(records, phase_seconds_key(p)) for p in phases])) if phases \
        else np.zeros((0, len(steps)))
    colors = [PHASE_COLORS.get(p, f"C{k + 5}") for k, p in enumerate(phases)]
    fig, (stack, share) = plt.subplots(1, 2, figsize=(14, 4), gridspec_kw={"width_ratios": [3, 2]})
    if len(steps) > 1:
        stack.stackplot(steps, seconds, labels=phases, colors=colors, alpha=0.85)
    else:  # a stack of one x is invisible: bars
        bottom = 0.0
        for phase, value, color in zip(phases, seconds[:, 0], colors):
            stack.bar(steps, value, bottom=bottom, label=phase, color=color, width=0.6)
            bottom += value
    stack.set_xlabel("step")
    stack.set_ylabel("seconds per step")
    stack.set_ylim(0, max(seconds.sum(axis=0).max(initial=0.0), 1e-9) * 1.25)  # headroom for the legend
    stack.legend(fontsize=7, loc="upper left", ncol=len(phases) or 1)
    stack.grid(alpha=0.3)
    integer_axis(stack, steps)
    totals = seconds.sum(axis=1)
    whole = max(totals.sum(), 1e-9)
    share.barh(phases, totals, color=colors)
    for k, total in enumerate(totals):
        share.text(total, k, f" {100 * total / whole:.0f}%", va="center", fontsize=8)
    share.invert_yaxis()
    share.set_xlim(0, max(totals.max(initial=0.0), 1e-9) * 1.2)
    share.set_xlabel("seconds in all steps")
    share.set_title(f"{format_duration(whole)} in {len(steps)} step{'s' if len(steps) != 1 else ''}", fontsize=9)
    share.grid(alpha=0.3, axis="x")
    return fig


def format_duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
