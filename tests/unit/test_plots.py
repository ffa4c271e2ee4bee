"""plot_run over synthetic run directories (GAIN-RL with a real score file, uniform, one step), the CLI,
and the errors that name a missing file."""
import json
import os
import subprocess
import sys

import matplotlib.pyplot as plt
import numpy as np
import pytest
from scipy.stats import spearmanr

from gainrl import scores
from gainrl.jsonl import read_jsonl as read_metrics
from gainrl.plots import plot_run, read_run
from gainrl.sampler import gaussian_log_weights

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PHASES = ("generate", "reward", "old_logprobs", "update", "push")


def write_jsonl(path, records):
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)


def write_scores(path, num_rows, rng):
    """A real score file whose score falls with prompt length (Spearman about -0.8)."""
    prompt_tokens = rng.integers(20, 200, num_rows)
    score = -prompt_tokens / 200 + rng.normal(0, 0.15, num_rows)
    columns = {"id": [f"r{i}" for i in range(num_rows)], "c_intra": score.tolist(), "c_inter": [0.0] * num_rows,
               "score": score.tolist(), "prompt_tokens": prompt_tokens.tolist(), "num_p": [4] * num_rows,
               "num_q": prompt_tokens.tolist(), "flags": [0] * num_rows, "rank": scores.score_order(score).tolist()}
    scores.write_score_file(path, {"model_path": "tiny", "layer": 3, "dataset_fingerprint": "f"}, columns)
    return float(spearmanr(score, prompt_tokens).statistic)


def make_run(run_dir, *, schedule="gaussian", num_epochs=12, steps_per_epoch=3, per_epoch=48, num_rows=300,
             score_file=True):
    """A run directory as the trainer leaves it: mu walks up the ranking as accuracy passes beta."""
    rng = np.random.default_rng(0)
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, "ranking.scores.json")
    rho = write_scores(path, num_rows, rng) if score_file else None
    ordering = scores.read_score_file(path).order() if score_file else np.arange(num_rows)
    sampler = {"schedule": schedule, "order": "score", "descending": True, "units": "positions", "sigma": 30.0,
               "n": 20.0, "alpha": 2.0, "beta": 0.5, "adj_min": 0.0, "adj_max": 60.0, "mu0": 0.0}
    info = {"score_file": path if score_file else None, "num_rows": num_rows, "title": f"synthetic {schedule} run",
            "schedule": schedule, "order": "score", "config": {"sampler": sampler, "seed": 0}}
    with open(os.path.join(run_dir, "run.json"), "w") as f:
        json.dump(info, f)
    metrics, draws, mu, step = [], [], 0.0, 0
    for epoch in range(num_epochs):
        if schedule == "gaussian":
            weights = np.exp(gaussian_log_weights(num_rows, mu, sampler["sigma"]))
            positions = rng.choice(num_rows, per_epoch, replace=False, p=weights / weights.sum())
        else:
            positions = rng.choice(num_rows, per_epoch, replace=False)
        draws.append({"epoch": epoch, "mu": mu if schedule == "gaussian" else None,
                      "indices": ordering[positions].tolist() if schedule == "gaussian" else positions.tolist(),
                      "positions": positions.tolist() if schedule == "gaussian" else None})
        accuracy = min(0.95, 0.3 + 0.05 * epoch)
        for _ in range(steps_per_epoch):
            step += 1
            acc = float(np.clip(accuracy + rng.normal(0, 0.05), 0, 1))
            metrics.append({"step": step, "epoch": epoch, "mu": draws[-1]["mu"], "reward_mean": acc, "accuracy": acc,
                            "wasted_group_fraction": max(0.1, 0.5 - 0.02 * epoch), "loss": float(rng.normal(0, 0.01)),
                            "kl_mean": 0.001 * step, "entropy_mean": None, "clip_fraction": 0.01, "ratio_mean": 1.0,
                            "grad_norm": 0.5 + rng.random(), "angle_mean": 0.3 + 0.01 * epoch,
                            "response_tokens_mean": 100 + step, "response_tokens_max": 200 + 2 * step,
                            "tokens_per_s": 900.0, "elapsed_s": 10.0 * step,
                            **{f"time_{p}_s": t * (1 + 0.2 * rng.random())
                               for p, t in zip(PHASES, (5.0, 0.5, 1.0, 3.0, 0.4))}})
        if schedule == "gaussian":
            adj = sampler["n"] * np.tanh(2 * (accuracy - 0.5)) + sampler["n"] * np.tanh(2 * (0.3 + 0.01 * epoch))
            mu = float(np.clip(mu + np.clip(adj, 0, sampler["adj_max"]), 0, num_rows - 1))
    write_jsonl(os.path.join(run_dir, "metrics.jsonl"), metrics)
    write_jsonl(os.path.join(run_dir, "draws.jsonl"), draws)
    return rho


def assert_pngs(paths, names):
    """The files exist and show data: data is drawn in colour, while empty axes, ticks and text are grey
    (an empty 2-panel figure has no coloured pixel at all)."""
    import matplotlib.image
    assert [os.path.basename(p) for p in paths] == names
    for path in paths:
        rgb = matplotlib.image.imread(path)[..., :3]
        coloured = (rgb.max(axis=-1) - rgb.min(axis=-1) > 0.2).mean()
        assert coloured > 1e-4, (path, coloured)


def test_gaussian_run_with_score_file(tmp_path, capsys):
    run_dir = str(tmp_path / "gain")
    rho = make_run(run_dir)
    paths = plot_run(run_dir)
    assert_pngs(paths, ["progress.png", "curriculum.png", "optimization.png", "time.png", "scores.png"])
    assert rho < -0.5
    assert "note" not in capsys.readouterr().out


def scatter_points(ax) -> np.ndarray:
    from matplotlib.collections import PathCollection
    return np.concatenate([c.get_offsets() for c in ax.collections if isinstance(c, PathCollection)])


def test_curriculum_shows_each_epochs_draws_and_mu(tmp_path):
    from gainrl.plots import plot_curriculum
    gain, uniform = str(tmp_path / "gain"), str(tmp_path / "uniform")
    make_run(gain, num_epochs=4)
    make_run(uniform, num_epochs=4, schedule="uniform")
    run = read_run(gain)
    figure = plot_curriculum(run)
    walk = figure.axes[0]
    points = scatter_points(walk)
    epochs = np.concatenate([[d["epoch"]] * len(d["positions"]) for d in run.draws])
    assert np.array_equal(points[:, 1], np.concatenate([d["positions"] for d in run.draws]))
    assert np.all(np.abs(points[:, 0] - epochs) <= 0.3)
    [mu] = [line for line in walk.lines if line.get_label().startswith("mu")]
    assert np.allclose(mu.get_ydata(), [d["mu"] for d in run.draws]) and np.ptp(mu.get_ydata()) > 0
    plt.close(figure)
    run = read_run(uniform)  # no positions: the drawn rows by their score rank
    figure = plot_curriculum(run)
    points = scatter_points(figure.axes[0])
    rank = np.asarray(run.scores.columns["rank"])
    assert np.array_equal(points[:, 1], np.concatenate([rank[d["indices"]] for d in run.draws]))
    plt.close(figure)


def test_uniform_run_without_score_file_and_one_step_run(tmp_path, capsys):
    uniform = str(tmp_path / "uniform")
    make_run(uniform, schedule="uniform", score_file=False)
    assert_pngs(plot_run(uniform), ["progress.png", "curriculum.png", "optimization.png", "time.png"])
    assert "no score file" in capsys.readouterr().out
    single = str(tmp_path / "single")
    make_run(single, num_epochs=1, steps_per_epoch=1)
    os.remove(os.path.join(single, "ranking.scores.json"))  # named in run.json, but gone
    assert_pngs(plot_run(single), ["progress.png", "curriculum.png", "optimization.png", "time.png"])
    assert "ranking.scores.json (named in run.json) not found" in capsys.readouterr().out


def test_resumed_run_keeps_the_last_record_of_a_step_and_epoch(tmp_path):
    run_dir = str(tmp_path / "resumed")
    make_run(run_dir, num_epochs=3)
    metrics_path, draws_path = os.path.join(run_dir, "metrics.jsonl"), os.path.join(run_dir, "draws.jsonl")
    metrics, draws = read_metrics(metrics_path), read_metrics(draws_path)
    write_jsonl(metrics_path, metrics + [dict(metrics[-1], reward_mean=0.123)])  # step 9 again, after a resume
    write_jsonl(draws_path, draws + [dict(draws[-1], mu=7.0)])
    with open(metrics_path, "a") as f:
        f.write('{"step": 10, "rew')  # a line being written right now
    run = read_run(run_dir)
    assert [r["step"] for r in run.metrics] == list(range(1, 10))
    assert run.metrics[-1]["reward_mean"] == 0.123
    assert [d["epoch"] for d in run.draws] == [0, 1, 2] and run.draws[-1]["mu"] == 7.0


def test_missing_files_are_named(tmp_path):
    run_dir = str(tmp_path / "run")
    make_run(run_dir, num_epochs=1)
    os.remove(os.path.join(run_dir, "draws.jsonl"))
    with pytest.raises(ValueError, match="draws.jsonl not found"):
        plot_run(run_dir)
    write_jsonl(os.path.join(run_dir, "draws.jsonl"), [])
    write_jsonl(os.path.join(run_dir, "metrics.jsonl"), [])
    with pytest.raises(ValueError, match="metrics.jsonl has no steps yet"):
        plot_run(run_dir)


def test_command_line(tmp_path):
    good, missing = str(tmp_path / "good"), str(tmp_path / "missing")
    make_run(good, num_epochs=2)
    launcher = os.path.join(ROOT, "launchers", "plot_run.py")
    done = subprocess.run([sys.executable, launcher, good, missing], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2, done.stderr
    assert os.path.join(good, "plots", "curriculum.png") in done.stdout.splitlines()
    assert done.stderr.strip().splitlines()[-1] == \
        f"error: {os.path.join(missing, 'run.json')} not found: is {missing} a training run's train.output_dir?"


def test_the_mu_terms_plot_shows_each_terms_share_of_mus_movement(tmp_path):
    from gainrl.plots import mu_updates, term_shares
    updates = [{"accuracy_term": -3.0, "angle_term": 1.0, "mu_step": 0.0},
               {"accuracy_term": 2.0, "angle_term": 2.0, "mu_step": 4.0}]
    assert term_shares(updates) == pytest.approx((5 / 8, 3 / 8))
    assert np.isnan(term_shares([{"accuracy_term": 0.0, "angle_term": 0.0}])[0])
    run_dir = str(tmp_path / "gain")
    make_run(run_dir, num_epochs=3)
    draws = read_metrics(os.path.join(run_dir, "draws.jsonl"))
    for draw, update in zip(draws[1:], updates):
        draw["update"] = update
    draws[0]["update"] = None  # the first draw follows no update
    write_jsonl(os.path.join(run_dir, "draws.jsonl"), draws)
    assert [e for e, _ in mu_updates(draws)] == [0, 1]
    paths = plot_run(run_dir)
    assert_pngs(paths, ["progress.png", "curriculum.png", "optimization.png", "time.png", "mu_terms.png",
                        "scores.png"])


def test_a_run_over_a_pass_rate_file_plots_its_pass_rates(tmp_path):
    """The difficulty curriculum walks a pass-rate file (gainrl.pass_rate), which has no score column."""
    run_dir = str(tmp_path / "difficulty")
    make_run(run_dir)
    path = os.path.join(run_dir, "ranking.scores.json")
    table = scores.read_score_file(path)
    n, rng = table.num_rows, np.random.default_rng(1)
    correct = rng.integers(0, 5, n)
    columns = {"id": table.columns["id"], "pass_rate": (correct / 4).tolist(), "num_correct": correct.tolist(),
               "num_samples": [4] * n, "prompt_tokens": table.columns["prompt_tokens"], "response_tokens": [30] * n}
    scores.write_score_file(path, {"kind": "pass_rate", "model_path": "tiny", "samples": 4,
                                   "dataset_fingerprint": "f"}, columns)
    paths = plot_run(run_dir)
    assert_pngs(paths, ["progress.png", "curriculum.png", "optimization.png", "time.png", "scores.png"])
