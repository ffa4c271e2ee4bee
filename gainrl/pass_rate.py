"""Offline pass rates: k sampled rollouts of every training row, graded by the training reward, written
as a score file of kind "pass_rate" (the difficulty order a curriculum walks with sampler.order=pass_rate).

    deepspeed --num_gpus 8 launchers/pass_rate.py --config RECIPE.yaml pass_rate.samples=8 [key=value ...]

It runs a training recipe's model, prompts, rollout settings (temperature, top_p, max_new_tokens) and
reward without a learner: each rank builds its own vLLM engine and takes every world_size-th row, in
generate calls of pass_rate.prompts_per_batch prompts; rank 0 gathers the counts and writes the file.
Rank r's engine samples from seed + r (as in training), so files made on different numbers of ranks
hold different samples of the same rates. (vLLM's per-request seeds would make them equal, but its CPU
sampler does not support them.)
A rollout is correct when its reward is >= 1, as in the training accuracy. The metadata says what made
the file (model and dataset fingerprints, samples, sampling settings, reward) and what it cost
(seconds, rollout_tokens); a finished file with the same key is reused, not recomputed.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from . import dist, metrics, scores
from .config import TrainRunConfig, require, validate
from .data import Row
from .groups import generate_and_grade
from .inputs import ensure_inputs
from .metrics import PhaseTimer
from .models import checkpoint_fingerprint, dtype_name, load_tokenizer, resolve_dtype
from .preflight import check_tensor_parallel
from .prompts import Prompt
from .rewards.training import Reward, build_reward
from .rollout import RolloutEngine
from .scorer import package_versions
from .train_data import load_train_data
from .vllm_logs import send_vllm_logs_to


@dataclass
class PassRateConfig:
    samples: int = 8  # sampled rollouts per row (rollout.temperature, top_p, max_new_tokens)
    prompts_per_batch: int = 256  # prompts per generate call on one rank (progress granularity, host memory)
    output: Optional[str] = None  # the file; None = <scorer.output_dir>/<data>.<model>.pass_rate<k>.<key>.scores.json


@dataclass
class PassRateRunConfig(TrainRunConfig):
    pass_rate: PassRateConfig = field(default_factory=PassRateConfig)


def validate_pass_rate(cfg: PassRateRunConfig) -> None:
    validate(cfg)
    require(cfg.pass_rate.samples >= 1, "pass_rate.samples", "must be >= 1")
    require(cfg.pass_rate.prompts_per_batch >= 1, "pass_rate.prompts_per_batch", "must be >= 1")


@dataclass
class Job:
    """What generate_and_grade works with: the rows and prompts, the engine, the tokenizer, the reward."""
    data: object  # train_data.TrainData
    rollout: RolloutEngine
    tokenizer: object
    reward: Reward


def rank_rows(num_rows: int, rank: int, world_size: int) -> list[int]:
    """The rows rank `rank` samples: every world_size-th one (close to equal work when lengths vary)."""
    return list(range(rank, num_rows, world_size))


def batches(rows: list[int], size: int) -> list[list[int]]:
    return [rows[i:i + size] for i in range(0, len(rows), size)]


def file_metadata(cfg: PassRateRunConfig, data, dtype: str) -> dict:
    """What identifies a pass-rate file (hashed into its key): model, dataset, prompts, sampling, reward."""
    metadata = {
        "kind": "pass_rate", "model_fingerprint": checkpoint_fingerprint(cfg.model.path), "dtype": dtype,
        "dataset_fingerprint": data.fingerprint, "dataset_rows": len(data.rows),
        "prompt_hash": hashlib.sha256(json.dumps([p.input_ids for p in data.prompts]).encode()).hexdigest(),
        "samples": cfg.pass_rate.samples, "temperature": cfg.rollout.temperature, "top_p": cfg.rollout.top_p,
        "max_new_tokens": cfg.rollout.max_new_tokens, "reward": cfg.reward.kind,
        "reward_timeout_s": cfg.reward.timeout_s, "reward_pass_fraction": cfg.reward.pass_fraction, "seed": cfg.seed,
    }
    metadata["key"] = hashlib.sha256(json.dumps(metadata, sort_keys=True).encode()).hexdigest()
    # where things were (not in the key: the fingerprints say what they were)
    metadata.update(model_path=os.path.abspath(cfg.model.path) if os.path.isdir(cfg.model.path) else cfg.model.path,
                    dataset_source=cfg.data.path)
    return metadata


def output_path(cfg: PassRateRunConfig, metadata: dict) -> str:
    if cfg.pass_rate.output:
        return cfg.pass_rate.output
    stem = os.path.splitext(os.path.basename(str(cfg.data.path).rstrip("/")))[0].replace("/", "_")
    model = os.path.basename(os.path.normpath(cfg.model.path))
    return os.path.join(cfg.scorer.output_dir,
                        f"{stem}.{model}.pass_rate{cfg.pass_rate.samples}.{metadata['key'][:12]}.scores.json")


def summarize(num_correct: np.ndarray, num_samples: np.ndarray, prompt_tokens: np.ndarray) -> dict:
    """Mean pass rate, the share of rows none / all of whose rollouts were correct, Spearman with length."""
    from scipy.stats import spearmanr

    rate = num_correct / num_samples
    rho = float(spearmanr(rate, prompt_tokens).statistic) if len(rate) > 2 else float("nan")
    return {"rows": int(len(rate)), "mean_pass_rate": float(rate.mean()),
            "none_correct": float((num_correct == 0).mean()), "all_correct": float((num_correct == num_samples).mean()),
            "spearman_prompt_tokens": rho if np.isfinite(rho) else None}  # None: undefined (constant rates)


def format_summary(summary: dict) -> str:
    rho = summary["spearman_prompt_tokens"]
    return (f"rows {summary['rows']}  mean pass rate {summary['mean_pass_rate']:.3f}  none correct "
            f"{summary['none_correct']:.1%}  all correct {summary['all_correct']:.1%}  "
            f"Spearman(pass rate, prompt tokens) = {'undefined' if rho is None else f'{rho:+.3f}'}")


def columns_from_counts(rows: list[Row], prompts: list[Prompt], counts: dict[int, tuple[int, int, int]]) -> dict:
    """The file's columns in row order from counts[row position] = (correct, samples, response tokens)."""
    missing = [rows[i].id for i in range(len(rows)) if i not in counts]
    if missing:
        raise RuntimeError(f"{len(missing)} rows got no rollouts (e.g. {missing[:3]})")
    correct, samples, tokens = (np.array([counts[i][k] for i in range(len(rows))], dtype=np.int64) for k in range(3))
    return {"id": [row.id for row in rows], "pass_rate": (correct / samples).tolist(),
            "num_correct": correct.tolist(), "num_samples": samples.tolist(),
            "prompt_tokens": [p.num_tokens for p in prompts], "response_tokens": tokens.tolist()}


def count_passes(job: Job, rows: list[int], samples: int, prompts_per_batch: int,
                 done=lambda n: None, num_calls: int = 0) -> tuple[dict[int, tuple[int, int, int]], int]:
    """counts[row position] = (correct rollouts, rollouts, response tokens) of `samples` rollouts of each of
    `rows`, in generate calls of `prompts_per_batch` prompts (done(n) after each), at least `num_calls` of
    them (empty ones last: the members of a tensor-parallel engine generate together); and the reward's errors."""
    counts, errors = {}, 0
    todo = batches(rows, prompts_per_batch)
    for batch in todo + [[]] * (num_calls - len(todo)):
        groups = generate_and_grade(job, batch, samples, PhaseTimer())
        outcomes = groups.outcomes()
        counts.update({int(r): (int(c), int(n), int(t)) for r, c, n, t in
                       zip(outcomes.rows, outcomes.correct, outcomes.rollouts, outcomes.response_tokens)})
        errors += groups.num_errors
        done(len(batch))
    return counts, errors


def look_for_finished(cfg: PassRateRunConfig, path: str, data, metadata: dict) -> tuple[bool, Optional[str]]:
    """(whether `path` is a finished file of this job, the error that refuses it): a file made with other
    settings (its key differs) or a damaged one is an error, not silently reused or overwritten."""
    if not os.path.isfile(path):
        return False, None
    key = "pass_rate.output" if cfg.pass_rate.output else "scorer.output_dir"
    try:
        scores.read_score_file(path, data.fingerprint)
    except ValueError as e:
        return False, f"config key '{key}': {e}"
    try:
        scores.read_score_file(path, expect={"kind": "pass_rate", "key": metadata["key"]})
    except ValueError as e:
        return False, (f"config key '{key}': {e} (another model, data, prompts, sampling or reward settings "
                       "made it: delete it or write elsewhere)")
    return True, None


def run_pass_rates(cfg: PassRateRunConfig, info: dist.DistInfo) -> Optional[str]:
    """Sample and grade cfg.pass_rate.samples rollouts of every row; returns the file's path on rank 0."""
    check_tensor_parallel(cfg.rollout.tensor_parallel_size, info.world_size, info.local_world_size)
    ensure_inputs(cfg)
    started = time.perf_counter()  # the job's cost: from here (the inputs exist) to the file
    tokenizer = load_tokenizer(cfg.model.path)
    data = load_train_data(cfg, tokenizer, info.world_size, for_training=False)
    dtype = dtype_name(resolve_dtype(cfg.model.dtype, info.device))
    metadata = file_metadata(cfg, data, dtype)
    path = output_path(cfg, metadata)
    # rank 0 looks for a finished file and every rank gets its answer (or error): all build engines or none
    reused, error = dist.broadcast_from_rank0(look_for_finished(cfg, path, data, metadata) if info.rank == 0 else None)
    if error is not None:
        raise ValueError(error)
    if reused:
        metrics.log(f"pass rates already computed: {path}")
        return path if info.rank == 0 else None

    k = cfg.pass_rate.samples
    mine = rank_rows(len(data.rows), info.rank, info.world_size)
    metrics.log(f"pass rates: {len(data.rows)} rows x {k} rollouts on {info.world_size} rank(s) -> {path}")
    send_vllm_logs_to(os.path.join(os.path.dirname(os.path.abspath(path)), "logs"))
    rollout = RolloutEngine(cfg.model.path, cfg.rollout, seed=cfg.seed, dtype=dtype,
                            max_model_len=cfg.rollout.max_prompt_tokens + cfg.rollout.max_new_tokens)
    try:  # closed on every path: a rank that fails must end (then the launcher ends the others), not wait
        job = Job(data, rollout, tokenizer, build_reward(cfg.reward))  # in the launcher's barrier
        bar = metrics.progress(len(mine), f"pass rates (rank 0 of {info.world_size})")
        try:
            num_calls = max(dist.all_gather(len(batches(mine, cfg.pass_rate.prompts_per_batch))))
            counts, errors = count_passes(job, mine, k, cfg.pass_rate.prompts_per_batch, bar.update, num_calls)
        finally:
            bar.close()
            job.reward.close()
        gathered = dist.gather_to_rank0((counts, errors))
    finally:
        rollout.close()  # vLLM's shutdown destroys the default process group: nothing collective after it,
    if info.rank != 0:  # and dist.get_rank() says 0 on every rank
        return None
    for part, _ in gathered:
        counts.update(part)
    columns = columns_from_counts(data.rows, data.prompts, counts)
    summary = summarize(np.asarray(columns["num_correct"]), np.asarray(columns["num_samples"]),
                        np.asarray(columns["prompt_tokens"]))
    metadata.update(world_size=info.world_size, seconds=time.perf_counter() - started,
                    rollout_tokens=int(sum(columns["response_tokens"])), reward_errors=sum(e for _, e in gathered),
                    versions=package_versions(), summary=summary)
    scores.write_score_file(path, metadata, columns)
    metrics.log(f"wrote {path}\n{format_summary(summary)}")
    return path
