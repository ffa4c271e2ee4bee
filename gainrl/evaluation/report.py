"""Summary tables: one checkpoint over its benchmarks, and several checkpoints side by side (markdown, JSON, plot)."""
from __future__ import annotations

import json
import os
from typing import Optional

from .results import write_atomic


def _percent(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def metric_names(summaries: list[dict]) -> list[str]:
    """The headline metrics present: accuracy, then pass@k in increasing k."""
    ks = sorted({int(key[5:]) for s in summaries for key in s if key.startswith("pass@")})
    return ["accuracy"] + [f"pass@{k}" for k in ks if k != 1 or any(s["num_samples"] > 1 for s in summaries)]


def checkpoint_table(name: str, summaries: list[dict]) -> str:
    """Markdown: one row per benchmark (metrics in %)."""
    columns = metric_names(summaries)
    lines = [f"# {name}", "", "| benchmark | problems | samples | " + " | ".join(columns) + " | truncated | tokens |",
             "|---|---:|---:|" + "---:|" * len(columns) + "---:|---:|"]
    for s in summaries:
        values = " | ".join(_percent(s.get(c)) for c in columns)
        tokens = "-" if s["mean_completion_tokens"] is None else f"{s['mean_completion_tokens']:.0f}"
        lines.append(f"| {s['benchmark']} | {s['num_problems']} | {s['num_samples']} | {values} | "
                     f"{_percent(s['truncated_fraction'])} | {tokens} |")
    lines += ["", "Metrics in %. accuracy = mean over problems of the fraction of correct samples (greedy, one "
              "sample: pass@1); pass@k: unbiased estimate from all samples; truncated = completions cut at "
              "the token cap; tokens = mean completion length."]
    return "\n".join(lines) + "\n"


def write_checkpoint_summary(folder: str, name: str, summaries: list[dict]) -> None:
    write_atomic(os.path.join(folder, "summary.json"), json.dumps({"name": name, "benchmarks": summaries}, indent=1))
    write_atomic(os.path.join(folder, "summary.md"), checkpoint_table(name, summaries))


def update_checkpoint_summary(folder: str, name: str, finished: dict[str, dict]) -> list[dict]:
    """Rewrite `folder`'s summary.{json,md} with the benchmarks `finished` (by name) replacing or
    joining those it holds; returns the summaries written. Read just before the write, so that
    several processes finishing benchmarks of one run lose little of each other's (gainrl.slurm's
    `summarize` rebuilds it from the benchmarks' own summaries once all are done)."""
    summaries = {**previous_summaries(folder), **finished}
    write_checkpoint_summary(folder, name, list(summaries.values()))
    return list(summaries.values())


def previous_summaries(folder: str) -> dict[str, dict]:
    """The per-benchmark summaries of `folder`'s summary.json, by benchmark; empty if there is none."""
    path = os.path.join(folder, "summary.json")
    if not os.path.isfile(path):
        return {}
    return {s["benchmark"]: s for s in read_checkpoint_summary(folder)["benchmarks"]}


def read_checkpoint_summary(folder: str) -> dict:
    path = os.path.join(folder, "summary.json")
    if not os.path.isfile(path):
        raise ValueError(f"{folder}: no summary.json (is it an eval/run.py output folder <output_dir>/<name>?)")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def comparison_table(checkpoints: list[dict], metric: str = "accuracy") -> str:
    """Markdown: benchmarks as rows, checkpoints as columns, `metric` in %, and the mean over benchmarks
    that every checkpoint was evaluated on."""
    names = [c["name"] for c in checkpoints]
    values = [{s["benchmark"]: s.get(metric) for s in c["benchmarks"]} for c in checkpoints]
    benchmarks = list(dict.fromkeys(b for v in values for b in v))
    lines = [f"| benchmark ({metric}, %) | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for benchmark in benchmarks:
        lines.append(f"| {benchmark} | " + " | ".join(_percent(v.get(benchmark)) for v in values) + " |")
    shared = [b for b in benchmarks if all(v.get(b) is not None for v in values)]
    if shared:
        means = [sum(v[b] for b in shared) / len(shared) for v in values]
        lines.append(f"| mean of {len(shared)} | " + " | ".join(_percent(m) for m in means) + " |")
    return "\n".join(lines) + "\n"


def plot_comparison(path: str, checkpoints: list[dict], metric: str = "accuracy") -> None:
    """Grouped bars: one group per benchmark, one bar per checkpoint."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = [{s["benchmark"]: s.get(metric) for s in c["benchmarks"]} for c in checkpoints]
    benchmarks = list(dict.fromkeys(b for v in values for b in v))
    width = 0.8 / len(checkpoints)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(benchmarks) * max(1, len(checkpoints) / 2)), 4))
    for i, (checkpoint, v) in enumerate(zip(checkpoints, values)):
        xs = [j + i * width for j in range(len(benchmarks))]
        ax.bar(xs, [100 * (v.get(b) or 0.0) for b in benchmarks], width, label=checkpoint["name"])
    ax.set_xticks([j + width * (len(checkpoints) - 1) / 2 for j in range(len(benchmarks))], benchmarks,
                  rotation=20)
    ax.set_ylabel(f"{metric} (%)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
