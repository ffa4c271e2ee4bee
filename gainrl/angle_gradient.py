"""The paper's central claim, measured: does a prompt's angle score predict the size of its policy gradient?

GAIN-RL rests on `||dL/dW||^2 = sum_ij ||x_i|| ||x_j|| cos(theta_ij) (g_i . g_j)` (METHOD.md
section 1): prompts whose hidden states point the same way should give larger updates. This
module holds what a study of that claim needs, as pure functions:
- `group_gradient_norm`: the global L2 norm of the gradient of ONE GRPO update on one prompt's
  group of rollouts, with the trainer's own pieces (advantages, packing, log-probs, loss);
- rank statistics that separate the angle from prompt length, which the shipped orderings
  turned out to be (METHOD.md section 5.6): Spearman, the partial Spearman given length, and
  Spearman within length bins.
launchers/angle_gradient_study.py runs the rollouts and writes the report.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from scipy import stats

from .algo import group_advantages, local_normalizer, micro_batches, pack_sequences, policy_loss
from .engine import forward_logprobs

MIN_BIN_SIZE = 3  # a Spearman correlation of fewer points is meaningless


# ---- rank statistics ----------------------------------------------------------------------------

def spearman(x, y) -> float:
    """Spearman rank correlation (average ranks for ties); NaN with < 3 points or a constant input."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < MIN_BIN_SIZE or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(stats.spearmanr(x, y).statistic)


def partial_spearman(x, y, z) -> float:
    """Rank correlation of x and y with z held fixed: the Pearson correlation of the residuals of
    rank(x) and rank(y), each regressed (least squares, with intercept) on rank(z).

    Why: if the angle score and the gradient norm both just follow prompt length, their raw
    Spearman is high but this is ~0; what remains is the association length does not explain
    (linearly in ranks). Equals (r_xy - r_xz r_yz) / sqrt((1 - r_xz^2)(1 - r_yz^2)) in Spearman r's."""
    x, y, z = (np.asarray(v, dtype=np.float64) for v in (x, y, z))
    if not len(x) == len(y) == len(z):
        raise ValueError(f"x, y, z must have the same length, got {len(x)}, {len(y)}, {len(z)}")
    if len(x) < MIN_BIN_SIZE + 1:
        return float("nan")
    design = np.column_stack([np.ones(len(z)), stats.rankdata(z)])

    def residual(v: np.ndarray) -> np.ndarray:
        ranks = stats.rankdata(v)
        coef, *_ = np.linalg.lstsq(design, ranks, rcond=None)
        return ranks - design @ coef

    rx, ry = residual(x), residual(y)
    if np.allclose(rx, 0) or np.allclose(ry, 0):  # x or y is a monotone function of z: nothing left
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def quantile_bins(values, num_bins: int) -> np.ndarray:
    """Bin index (0 = lowest) of each value, by the values' quantiles. Equal values always share a
    bin, so heavily tied data (prompt lengths in tokens) can give fewer than num_bins bins."""
    values = np.asarray(values, dtype=np.float64)
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    edges = np.unique(np.quantile(values, np.linspace(0, 1, num_bins + 1))[1:-1])
    return np.searchsorted(edges, values, side="right")


def rank_bins(values, num_bins: int) -> np.ndarray:
    """Bin index of each value into num_bins equal-count bins by rank (ties broken by position):
    score quintiles of equal size, whatever the score distribution looks like."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    bins = np.empty(len(values), dtype=np.int64)
    bins[order] = np.arange(len(values)) * num_bins // max(len(values), 1)
    return bins


@dataclass
class Bin:
    low: float  # smallest z in the bin
    high: float  # largest z in the bin
    size: int
    spearman: float  # of x and y inside the bin; NaN when undefined (< 3 points, constant x or y)


@dataclass
class BinnedSpearman:
    bins: list[Bin]
    weighted_mean: float  # size-weighted mean of the defined per-bin values; NaN if none is defined


def binned_spearman(x, y, z, num_bins: int) -> BinnedSpearman:
    """Spearman of x and y within quantile bins of z (`quantile_bins`), and their size-weighted mean.

    Why: a second way to hold z fixed that assumes nothing about how x and y depend on z
    (partial_spearman removes only a linear trend in ranks); it costs power, since each bin is small."""
    x, y, z = (np.asarray(v, dtype=np.float64) for v in (x, y, z))
    labels = quantile_bins(z, num_bins)
    bins = []
    for label in np.unique(labels):
        inside = labels == label
        bins.append(Bin(float(z[inside].min()), float(z[inside].max()), int(inside.sum()),
                        spearman(x[inside], y[inside])))
    defined = [b for b in bins if not np.isnan(b.spearman)]
    if not defined:
        return BinnedSpearman(bins, float("nan"))
    weights = np.array([b.size for b in defined], dtype=np.float64)
    return BinnedSpearman(bins, float(np.average([b.spearman for b in defined], weights=weights)))


# ---- one prompt's GRPO gradient ---------------------------------------------------------------------

def group_gradient_norm(model: torch.nn.Module, prompt_ids: list[int], response_ids: list[list[int]],
                        rewards: Sequence[float], *, pad_id: int, scale_by_std: bool, clip_low: float,
                        clip_high: float, aggregation: str, temperature: float, micro_batch_size: int) -> float:
    """Global L2 norm of the gradient of the GRPO loss of one prompt's group, as the trainer's first
    update on that group alone would compute it (before gradient clipping).

    The group is the G rollouts `response_ids` of `prompt_ids` with their `rewards`. Old log-probs
    are the current ones (the first update after sampling: ratio 1, so no clipping); they come from
    the same forward, detached. Left out: the KL term, whose gradient is 0 while the policy equals
    its reference (the warm start), and the entropy bonus, which is not a policy gradient. A group
    whose rewards are all equal has zero advantages and, exactly, a zero gradient: returned as 0.0
    without a backward. `model` is a plain (not DeepSpeed) causal LM; its .grad fields are cleared.
    """
    group_size = len(response_ids)
    if len(rewards) != group_size:
        raise ValueError(f"{group_size} responses but {len(rewards)} rewards")
    advantages = group_advantages(torch.tensor(rewards, dtype=torch.float32), group_size, scale_by_std)
    if not advantages.any():
        return 0.0
    device = next(model.parameters()).device
    seqs = pack_sequences([list(prompt_ids)] * group_size, [list(r) for r in response_ids], pad_id)
    batches = micro_batches(group_size, micro_batch_size)
    normalizer = sum(local_normalizer(seqs.response_mask[mb], aggregation) for mb in batches)
    if normalizer == 0:  # every response empty: nothing to score
        return 0.0
    was_training = model.training
    model.eval()  # no dropout: the gradient is a function of the weights and the group only
    model.zero_grad(set_to_none=True)
    try:
        for mb in batches:
            ids, mask = seqs.input_ids[mb].to(device), seqs.attention_mask[mb].to(device)
            logp, _, _ = forward_logprobs(model, ids, mask, temperature=temperature)
            loss, _ = policy_loss(logp, logp.detach(), advantages[mb].to(device), seqs.response_mask[mb].to(device),
                                  clip_low=clip_low, clip_high=clip_high, normalizer=normalizer,
                                  aggregation=aggregation)
            loss.backward()
        squares = [p.grad.double().pow(2).sum() for p in model.parameters() if p.grad is not None]
        norm = float(torch.stack(squares).sum().sqrt()) if squares else 0.0
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return norm
