"""Group-relative advantages (GRPO) and the count of groups that carry no learning signal.

Rewards arrive flat, [num_prompts * G], the G rollouts of each prompt contiguous. A rollout's
advantage is its reward minus its group's mean, optionally divided by the group's standard
deviation. The std is the population one (unbiased=False, divide by G): for 0/1 rewards with
a fraction p correct it is sqrt(p (1 - p)), whatever G is. A group whose rewards are all equal
has advantage exactly 0 for every rollout (no rounding residue, no 0/eps blow-up).
"""
from __future__ import annotations

import torch


def _grouped(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """[num_prompts * G] -> [num_prompts, G] in fp32; ValueError on a shape that does not split into groups."""
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if rewards.dim() != 1 or rewards.numel() % group_size != 0:
        raise ValueError(f"rewards must be 1-D with a multiple of group_size={group_size} entries, "
                         f"got shape {tuple(rewards.shape)}")
    return rewards.float().view(-1, group_size)


def _all_equal(groups: torch.Tensor) -> torch.Tensor:
    """[num_prompts, G] -> [num_prompts] bool: every reward of the group is the same."""
    return groups.amax(dim=1) == groups.amin(dim=1)


def group_advantages(rewards: torch.Tensor, group_size: int, scale_by_std: bool, eps: float = 1e-6) -> torch.Tensor:
    """Rewards [num_prompts * G] -> fp32 advantages of the same shape: (r - mean_g) [/ (std_g + eps)]."""
    groups = _grouped(rewards, group_size)
    centred = groups - groups.mean(dim=1, keepdim=True)
    if scale_by_std:
        centred = centred / (groups.std(dim=1, unbiased=False, keepdim=True) + eps)
    centred = torch.where(_all_equal(groups)[:, None], torch.zeros_like(centred), centred)
    return centred.view(-1)


def equal_reward_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """[num_prompts * G] -> [num_prompts] bool: the groups whose rewards are all equal (no learning signal)."""
    return _all_equal(_grouped(rewards, group_size))


def group_reward_variance(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """[num_prompts * G] -> [num_prompts] fp32: each group's population variance, exactly 0 where all are equal."""
    groups = _grouped(rewards, group_size)
    return torch.where(_all_equal(groups), torch.zeros(groups.shape[0]), groups.var(dim=1, unbiased=False))


def wasted_group_fraction(rewards: torch.Tensor, group_size: int) -> float:
    """Fraction of groups whose rewards are all equal (all right or all wrong): their advantages are 0."""
    groups = _grouped(rewards, group_size)
    if groups.shape[0] == 0:
        return 0.0
    return _all_equal(groups).float().mean().item()
