"""Measure the paper's central claim: do prompts with a higher angle score give larger policy gradients?

    python launchers/angle_gradient_study.py --config launchers/recipes/RECIPE.yaml [key=value ...]
    python launchers/angle_gradient_study.py --config launchers/recipes/arith_cpu.yaml \
        study.num_prompts=null study.output_dir=runs/studies/angle_gradient_demo      # arith_cpu, all 192 rows

One process. The training recipe gives the model, data, prompt, reward, rollout and GRPO settings;
`study.*` the study's own. For a seeded random subset of the training prompts: G rollouts each
(vLLM, the recipe's sampling settings), the training reward, group advantages, and the global
gradient norm of one GRPO update on that group alone (gainrl.angle_gradient.group_gradient_norm,
on a plain transformers copy of the policy). Then rank correlations of gradient norm with the
angle score (from the score file of launchers/score.py) and with prompt length. Writes
<output_dir>/prompts.json, summary.md and angle_gradient.png.
"""
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from gainrl import dist, metrics
from gainrl.angle_gradient import binned_spearman, partial_spearman, rank_bins, spearman
from gainrl.config import TrainRunConfig, load_config, require, validate

NUM_SCORE_BINS = 5  # score quintiles


@dataclass
class StudyConfig:
    num_prompts: Optional[int] = 256  # a seeded random subset of the training rows (seed = the recipe's); null = all
    group_size: Optional[int] = None  # rollouts per prompt; null = grpo.group_size
    score_file: Optional[str] = None  # null = train.score_file, else the file launchers/score.py writes for the recipe
    num_length_bins: int = 4  # quantile bins of prompt tokens for the within-bin correlations
    output_dir: str = "runs/studies/angle_gradient"  # prompts.json, summary.md, angle_gradient.png


@dataclass
class StudyRunConfig(TrainRunConfig):
    study: StudyConfig = field(default_factory=StudyConfig)


def validate_study(cfg: StudyRunConfig) -> None:
    validate(cfg)
    s = cfg.study
    require(s.num_prompts is None or s.num_prompts >= NUM_SCORE_BINS, "study.num_prompts",
            f"must be >= {NUM_SCORE_BINS} or null")
    require(s.group_size is None or s.group_size >= 2, "study.group_size", "must be >= 2 or null")
    require(s.num_length_bins >= 1, "study.num_length_bins", "must be >= 1")


def study_device():
    import torch
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_score_file(cfg: StudyRunConfig, tokenizer) -> str:
    """The file the recipe's scorer writes (and training reads): its name depends on the model, layer,
    template and data, as launchers/score.py names it."""
    if cfg.study.score_file is not None:
        return cfg.study.score_file
    if cfg.train.score_file is not None:
        return cfg.train.score_file
    from gainrl.models import checkpoint_fingerprint, dtype_name, load_model_config, resolve_dtype
    from gainrl.scorer import plan_job
    dtype = dtype_name(resolve_dtype(cfg.model.dtype, study_device()))  # "auto" differs by device
    return plan_job(cfg, tokenizer, checkpoint_fingerprint(cfg.model.path),
                    load_model_config(cfg.model.path).num_hidden_layers, dtype).score_path


def load_scores(path: str, fingerprint: str, rows) -> np.ndarray:
    from gainrl.scores import read_score_file
    if not os.path.isfile(path):
        raise ValueError(f"config key 'study.score_file': no score file at {path}; score the training set first "
                         "(python launchers/score.py --config <the same recipe>) or pass study.score_file=PATH")
    table = read_score_file(path, fingerprint)
    by_id = dict(zip(table.columns["id"], table.columns["score"]))
    return np.array([by_id[row.id] for row in rows], dtype=np.float64)


def pick_rows(num_rows: int, num_prompts: Optional[int], seed: int) -> np.ndarray:
    if num_prompts is None:
        return np.arange(num_rows)
    if num_prompts > num_rows:
        raise ValueError(f"config key 'study.num_prompts': {num_prompts} is more than the {num_rows} training rows; "
                         "use study.num_prompts=null for all of them")
    return np.sort(np.random.default_rng(seed).choice(num_rows, size=num_prompts, replace=False))


def measure(cfg: StudyRunConfig, data, picked: np.ndarray, group_size: int, tokenizer) -> list[dict]:
    """Rollouts, rewards and one-update gradient norms of the picked prompts."""
    from transformers import AutoModelForCausalLM

    from gainrl.angle_gradient import group_gradient_norm
    from gainrl.models import dtype_name, pad_token_id, resolve_dtype
    from gainrl.rewards.training import build_reward
    from gainrl.rollout import RolloutEngine

    device = study_device()
    dtype = resolve_dtype(cfg.model.dtype, device)
    prompts = [data.prompts[i] for i in picked]
    rollout = RolloutEngine(cfg.model.path, cfg.rollout, dtype=dtype_name(dtype), seed=cfg.seed,
                            max_model_len=cfg.rollout.max_prompt_tokens + cfg.rollout.max_new_tokens)
    try:
        started = time.time()
        groups = rollout.generate([p.input_ids for p in prompts], group_size)
        metrics.log(f"{len(prompts)} x {group_size} rollouts in {time.time() - started:.1f} s")
    finally:
        rollout.close()
    reward = build_reward(cfg.reward)
    try:
        texts = tokenizer.batch_decode([c.token_ids for g in groups for c in g], skip_special_tokens=True)
        rewards, num_errors, num_timeouts = reward(texts, [data.rows[i] for i in picked for _ in range(group_size)])
    finally:
        reward.close()
    if num_errors or num_timeouts:
        metrics.log(f"reward: {num_errors} errors, {num_timeouts} timeouts (scored 0)")

    model = AutoModelForCausalLM.from_pretrained(cfg.model.path, dtype=dtype,
                                                 attn_implementation=cfg.model.attn_implementation).to(device)
    model.config.use_cache = False
    pad_id = pad_token_id(tokenizer)
    g = cfg.grpo
    records = []
    bar = metrics.progress(len(picked), "gradient norms", unit="prompt")
    for k, (index, prompt, group) in enumerate(zip(picked, prompts, groups)):
        group_rewards = rewards[k * group_size:(k + 1) * group_size]
        norm = group_gradient_norm(model, prompt.input_ids, [c.token_ids for c in group], group_rewards,
                                   pad_id=pad_id, scale_by_std=g.scale_by_std, clip_low=g.clip_low,
                                   clip_high=g.clip_high, aggregation=g.aggregation,
                                   temperature=cfg.rollout.temperature, micro_batch_size=cfg.train.micro_batch_size)
        records.append({"id": data.rows[index].id, "prompt_tokens": prompt.num_tokens, "grad_norm": norm,
                        "reward_mean": float(np.mean(group_rewards)),
                        "response_tokens_mean": float(np.mean([len(c.token_ids) for c in group])),
                        "zero_gradient": len(set(group_rewards)) == 1})
        bar.update(1)
    bar.close()
    return records


def analyse(records: list[dict], num_length_bins: int) -> dict:
    """The correlations and the per-quintile table, from the per-prompt records."""
    score, norm, length = (np.array([r[key] for r in records], dtype=np.float64)
                           for key in ("score", "grad_norm", "prompt_tokens"))
    reward = np.array([r["reward_mean"] for r in records], dtype=np.float64)
    response = np.array([r["response_tokens_mean"] for r in records], dtype=np.float64)
    informative = ~np.array([r["zero_gradient"] for r in records])
    quintile = rank_bins(score, NUM_SCORE_BINS)
    binned = binned_spearman(score, norm, length, num_length_bins)
    return {
        "num_prompts": len(records), "num_nonzero": int(informative.sum()),
        "spearman_all": spearman(score, norm),
        "spearman_nonzero": spearman(score[informative], norm[informative]),
        "partial_spearman_given_length": partial_spearman(score, norm, length),
        "partial_spearman_given_length_nonzero": partial_spearman(score[informative], norm[informative],
                                                                  length[informative]),
        "binned_spearman_mean": binned.weighted_mean,
        "length_bins": [vars(b) for b in binned.bins],
        "spearman_length_grad_norm": spearman(length, norm),
        "spearman_length_grad_norm_nonzero": spearman(length[informative], norm[informative]),
        "spearman_score_length": spearman(score, length),
        "spearman_response_tokens_grad_norm_nonzero": spearman(response[informative], norm[informative]),
        "spearman_score_reward_mean": spearman(score, reward),
        "noise_band_all": 1.96 / np.sqrt(len(records) - 1),
        "noise_band_nonzero": 1.96 / np.sqrt(max(int(informative.sum()) - 1, 1)),
        "quintiles": [{"quintile": q + 1, "size": int((quintile == q).sum()),
                       "score_low": float(score[quintile == q].min()), "score_high": float(score[quintile == q].max()),
                       "zero_gradient_fraction": float(1 - informative[quintile == q].mean()),
                       "all_solved_fraction": float((~informative & (reward > 0))[quintile == q].mean()),
                       "all_failed_fraction": float((~informative & (reward == 0))[quintile == q].mean()),
                       "grad_norm_mean": float(norm[quintile == q].mean()),
                       "grad_norm_median_nonzero": (float(np.median(norm[(quintile == q) & informative]))
                                                    if (informative & (quintile == q)).any() else None),
                       "reward_mean": float(reward[quintile == q].mean())}
                      for q in range(NUM_SCORE_BINS)],
    }


def summary_markdown(result: dict, title: str) -> str:
    r = result
    lines = [f"# Angle score vs. policy-gradient norm: {title}", "",
             f"{r['num_prompts']} prompts, {r['num_nonzero']} with a non-zero gradient "
             f"({r['num_prompts'] - r['num_nonzero']} groups had all-equal rewards). One GRPO update per prompt "
             "from the recipe's model; Spearman rank correlations.", "",
             "| correlation | all prompts | non-zero gradient only |", "|---|---|---|",
             f"| Spearman(score, grad norm) | {r['spearman_all']:+.3f} | {r['spearman_nonzero']:+.3f} |",
             f"| partial Spearman(score, grad norm \\| prompt tokens) | {r['partial_spearman_given_length']:+.3f} | "
             f"{r['partial_spearman_given_length_nonzero']:+.3f} |",
             f"| Spearman(prompt tokens, grad norm) (the length baseline) | {r['spearman_length_grad_norm']:+.3f} | "
             f"{r['spearman_length_grad_norm_nonzero']:+.3f} |",
             f"| Spearman(mean response tokens, grad norm) | | {r['spearman_response_tokens_grad_norm_nonzero']:+.3f} |",
             f"| Spearman(score, prompt tokens) | {r['spearman_score_length']:+.3f} | |",
             f"| Spearman(score, group mean reward) | {r['spearman_score_reward_mean']:+.3f} | |",
             "", f"Without any association, |Spearman| exceeds {r['noise_band_all']:.3f} (all prompts) or "
             f"{r['noise_band_nonzero']:.3f} (non-zero only) in only 5% of samples of this size.", "",
             f"Within prompt-length bins (all prompts): size-weighted mean Spearman(score, grad norm) = "
             f"{r['binned_spearman_mean']:+.3f}", "", "| prompt tokens | prompts | Spearman |", "|---|---|---|"]
    lines += [f"| {b['low']:.0f}-{b['high']:.0f} | {b['size']} | {b['spearman']:+.3f} |" for b in r["length_bins"]]
    lines += ["", "By score quintile (1 = lowest score, 5 = highest):", "",
              "| quintile | score range | prompts | zero-gradient fraction (all solved / all failed) | mean grad norm | "
              "median non-zero grad norm | mean reward |", "|---|---|---|---|---|---|---|"]
    for q in r["quintiles"]:
        median = "-" if q["grad_norm_median_nonzero"] is None else f"{q['grad_norm_median_nonzero']:.4g}"
        lines.append(f"| {q['quintile']} | {q['score_low']:.4f} to {q['score_high']:.4f} | {q['size']} | "
                     f"{q['zero_gradient_fraction']:.2f} ({q['all_solved_fraction']:.2f} / {q['all_failed_fraction']:.2f}) | "
                     f"{q['grad_norm_mean']:.4g} | {median} | "
                     f"{q['reward_mean']:.2f} |")
    return "\n".join(lines) + "\n"


def plot(path: str, records: list[dict], result: dict, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    score, norm, length = (np.array([r[key] for r in records], dtype=np.float64)
                           for key in ("score", "grad_norm", "prompt_tokens"))
    zero = np.array([r["zero_gradient"] for r in records])
    quintile = rank_bins(score, NUM_SCORE_BINS)
    fig, (scatter, boxes, zeros) = plt.subplots(1, 3, figsize=(15, 4.6), gridspec_kw={"width_ratios": [1.5, 1, 1]})

    points = scatter.scatter(score[~zero], norm[~zero], c=length[~zero], cmap="viridis", s=16,
                             vmin=length.min(), vmax=length.max(), label="non-zero gradient")
    scatter.scatter(score[zero], norm[zero], c=length[zero], cmap="viridis", s=16, marker="x",
                    vmin=length.min(), vmax=length.max(), label="all rewards equal (gradient 0)")
    fig.colorbar(points, ax=scatter, label="prompt tokens")
    scatter.set_xlabel("angle score (C_intra + w_inter C_inter)")
    scatter.set_ylabel("gradient norm of one GRPO update")
    scatter.legend(loc="upper left", fontsize=8)
    scatter.set_title(f"Spearman {result['spearman_all']:+.2f} (all), {result['spearman_nonzero']:+.2f} (non-zero)\n"
                      f"partial | length {result['partial_spearman_given_length']:+.2f}, "
                      f"within length bins {result['binned_spearman_mean']:+.2f}; "
                      f"length vs norm {result['spearman_length_grad_norm']:+.2f}", fontsize=9)

    labels = [f"Q{q + 1}" for q in range(NUM_SCORE_BINS)]
    nonzero_by_q = [norm[(quintile == q) & ~zero] for q in range(NUM_SCORE_BINS)]
    boxes.boxplot([v if len(v) else [np.nan] for v in nonzero_by_q], tick_labels=labels, showfliers=False)
    for q, values in enumerate(nonzero_by_q):
        jitter = np.random.default_rng(q).uniform(-0.12, 0.12, len(values))
        boxes.scatter(q + 1 + jitter, values, s=6, alpha=0.4, color="tab:blue")
    boxes.set_xlabel("score quintile (Q5 = most concentrated)")
    boxes.set_ylabel("gradient norm (non-zero only)")
    boxes.set_title(f"Spearman non-zero only: {result['spearman_nonzero']:+.2f} (n={result['num_nonzero']})",
                    fontsize=9)

    solved = [q["all_solved_fraction"] for q in result["quintiles"]]
    failed = [q["all_failed_fraction"] for q in result["quintiles"]]
    zeros.bar(labels, failed, color="tab:red", alpha=0.7, label="all rollouts failed")
    bars = zeros.bar(labels, solved, bottom=failed, color="tab:green", alpha=0.7, label="all rollouts solved")
    zeros.bar_label(bars, [f"{q['zero_gradient_fraction']:.2f}\n(n={q['size']})" for q in result["quintiles"]],
                    fontsize=8)
    zeros.set_ylim(0, max(0.5, 1.3 * max(q["zero_gradient_fraction"] for q in result["quintiles"])))
    zeros.legend(loc="upper left", fontsize=8)
    zeros.set_xlabel("score quintile (Q5 = most concentrated)")
    zeros.set_ylabel("fraction of prompts with gradient 0")
    zeros.set_title("groups with all rewards equal", fontsize=9)

    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str]) -> None:
    cfg = load_config(argv, StudyRunConfig, validator=validate_study)
    from gainrl.inputs import ensure_inputs
    from gainrl.models import load_tokenizer
    from gainrl.train_data import load_train_data

    started = time.time()
    ensure_inputs(cfg)
    tokenizer = load_tokenizer(cfg.model.path)
    data = load_train_data(cfg, tokenizer, world_size=1)
    score_path = default_score_file(cfg, tokenizer)
    scores = load_scores(score_path, data.fingerprint, data.rows)
    picked = pick_rows(len(data.rows), cfg.study.num_prompts, cfg.seed)
    group_size = cfg.study.group_size or cfg.grpo.group_size
    metrics.log(f"{len(picked)} of {len(data.rows)} prompts of {cfg.data.path}, {group_size} rollouts each; "
                f"scores from {score_path}")

    records = measure(cfg, data, picked, group_size, tokenizer)
    for record, index in zip(records, picked):
        record["score"] = float(scores[index])
    run = {"score_file": os.path.abspath(score_path), "model": cfg.model.path, "data": cfg.data.path,
           "group_size": group_size, "seed": cfg.seed, "num_length_bins": cfg.study.num_length_bins}
    print(write_outputs(cfg.study.output_dir, run, records))
    metrics.log(f"done in {time.time() - started:.0f} s: {cfg.study.output_dir}/prompts.json, summary.md, "
                "angle_gradient.png")


def write_outputs(out: str, run: dict, records: list[dict]) -> str:
    """prompts.json (run settings, result, per-prompt records), summary.md and angle_gradient.png; returns
    the summary. Re-running it on a prompts.json's run and prompts redraws the report without new rollouts."""
    result = analyse(records, run["num_length_bins"])
    title = (f"{os.path.basename(os.path.normpath(run['model']))} on {run['data']}: {len(records)} prompts x "
             f"{run['group_size']} rollouts")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "prompts.json"), "w", encoding="utf-8") as f:
        json.dump({**run, "result": result, "prompts": records}, f, indent=1)
    summary = summary_markdown(result, title)
    with open(os.path.join(out, "summary.md"), "w", encoding="utf-8") as f:
        f.write(summary)
    plot(os.path.join(out, "angle_gradient.png"), records, result, title)
    return summary


if __name__ == "__main__":  # vLLM spawns helper processes: the guard is required
    dist.run_entry_point(main, sys.argv[1:])
