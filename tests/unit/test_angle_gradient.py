"""gainrl.angle_gradient: rank statistics against brute force and constructed data; one group's GRPO
gradient norm against an independent autograd of the hand-written GRPO objective on the tiny model."""
import math

import numpy as np
import pytest
import torch

from gainrl.angle_gradient import (binned_spearman, group_gradient_norm, partial_spearman, quantile_bins, rank_bins,
                                   spearman)

# ---------------------------------------------------------------- rank statistics


def test_spearman_matches_the_textbook_formula_without_ties():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=50), rng.normal(size=50)
    y = y + x
    rank_x, rank_y = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    expected = 1 - 6 * np.sum((rank_x - rank_y) ** 2) / (50 * (50 ** 2 - 1))
    assert spearman(x, y) == pytest.approx(expected, abs=1e-12)
    assert math.isnan(spearman([1, 2, 3], [5, 5, 5]))  # constant: undefined, not 0


def test_partial_spearman_is_zero_when_only_the_control_drives_both():
    rng = np.random.default_rng(1)
    z = rng.normal(size=4000)
    x = z + 0.3 * rng.normal(size=4000)  # x and y share nothing but z
    y = z + 0.3 * rng.normal(size=4000)
    assert spearman(x, y) > 0.8
    assert abs(partial_spearman(x, y, z)) < 0.05


def test_partial_spearman_keeps_what_the_control_does_not_explain():
    rng = np.random.default_rng(2)
    z, shared = rng.normal(size=4000), rng.normal(size=4000)
    x = z + shared + 0.3 * rng.normal(size=4000)
    y = z + shared + 0.3 * rng.normal(size=4000)
    assert partial_spearman(x, y, z) > 0.6
    assert partial_spearman(x, -y, z) < -0.6


def test_partial_spearman_equals_the_three_correlation_formula():
    rng = np.random.default_rng(3)
    z = rng.normal(size=300)
    x = z + rng.normal(size=300)
    y = 0.5 * z + 0.5 * x + rng.normal(size=300)
    r_xy, r_xz, r_yz = spearman(x, y), spearman(x, z), spearman(y, z)
    expected = (r_xy - r_xz * r_yz) / math.sqrt((1 - r_xz ** 2) * (1 - r_yz ** 2))
    assert partial_spearman(x, y, z) == pytest.approx(expected, abs=1e-10)


def test_rank_statistics_ignore_monotone_transforms():
    rng = np.random.default_rng(4)
    z = rng.uniform(1, 2, size=200)
    x = z + rng.normal(size=200)
    y = x + z + rng.normal(size=200)
    assert spearman(np.exp(x), y ** 3) == pytest.approx(spearman(x, y), abs=1e-12)
    assert partial_spearman(np.exp(x), y ** 3, np.log(z)) == pytest.approx(partial_spearman(x, y, z), abs=1e-10)


def test_quantile_bins_keep_ties_together_and_rank_bins_are_equal_sized():
    lengths = np.array([5, 5, 5, 5, 6, 6, 7, 8, 9, 9])
    bins = quantile_bins(lengths, 4)
    for value in np.unique(lengths):
        assert len(set(bins[lengths == value])) == 1
    assert list(bins) == sorted(bins)  # monotone in the value
    quintiles = rank_bins(np.arange(100)[::-1], 5)
    assert np.bincount(quintiles).tolist() == [20] * 5
    assert quintiles[0] == 4 and quintiles[-1] == 0  # the highest value is in the top bin


def test_binned_spearman_by_hand():
    # two length values -> two bins; within the short bin x and y agree, within the long bin they disagree
    z = np.array([1, 1, 1, 1, 2, 2, 2])
    x = np.array([1, 2, 3, 4, 1, 2, 3])
    y = np.array([10, 20, 30, 40, 3, 2, 1])
    result = binned_spearman(x, y, z, num_bins=4)
    assert [(b.low, b.high, b.size) for b in result.bins] == [(1, 1, 4), (2, 2, 3)]
    assert [b.spearman for b in result.bins] == pytest.approx([1.0, -1.0])
    assert result.weighted_mean == pytest.approx((4 * 1.0 + 3 * -1.0) / 7)


def test_binned_spearman_skips_undefined_bins():
    z = np.array([1, 1, 2, 2, 2, 2])  # the first bin has 2 points: undefined, left out of the mean
    x = np.array([1, 2, 1, 2, 3, 4])
    y = np.array([2, 1, 4, 3, 2, 1])
    result = binned_spearman(x, y, z, num_bins=2)
    assert math.isnan(result.bins[0].spearman)
    assert result.weighted_mean == pytest.approx(-1.0)


# ---------------------------------------------------------------- one group's gradient norm


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="eager")


def brute_force_norm(model, prompt, responses, rewards, *, aggregation, temperature, clip=0.2):
    """The GRPO objective written out, one unpadded sequence at a time, differentiated by autograd."""
    r = torch.tensor(rewards, dtype=torch.float64)
    advantages = (r - r.mean()) / (r.std(unbiased=False) + 1e-6)
    per_sequence = []
    for response, advantage in zip(responses, advantages):
        ids = torch.tensor([prompt + response])
        logits = model(input_ids=ids).logits[0].double() / temperature
        log_probs = torch.log_softmax(logits[:-1], dim=-1).gather(1, ids[0, 1:, None]).squeeze(1)
        logp = log_probs[len(prompt) - 1:]  # the response tokens' log-probs
        ratio = torch.exp(logp - logp.detach())
        per_sequence.append(-torch.minimum(ratio * advantage, ratio.clamp(1 - clip, 1 + clip) * advantage))
    if aggregation == "token":
        loss = sum(t.sum() for t in per_sequence) / sum(len(t) for t in per_sequence)
    else:
        loss = sum(t.mean() for t in per_sequence) / len(per_sequence)
    grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
    return math.sqrt(sum(float(g.pow(2).sum()) for g in grads if g is not None))


GROUP = dict(prompt=[5, 17, 99, 3, 250, 42, 8], responses=[[11, 12, 13], [400, 2], [7, 7, 7, 7, 7], [1000], [64, 65]],
             rewards=[1.0, 0.0, 0.0, 1.0, 0.0])


@pytest.mark.parametrize("aggregation,temperature,micro_batch_size", [("token", 1.0, 2), ("sequence", 0.7, 64)])
def test_group_gradient_norm_matches_brute_force(tiny_model, aggregation, temperature, micro_batch_size):
    got = group_gradient_norm(tiny_model, GROUP["prompt"], GROUP["responses"], GROUP["rewards"], pad_id=0,
                              scale_by_std=True, clip_low=0.2, clip_high=0.2, aggregation=aggregation,
                              temperature=temperature, micro_batch_size=micro_batch_size)
    expected = brute_force_norm(tiny_model, GROUP["prompt"], GROUP["responses"], GROUP["rewards"],
                                aggregation=aggregation, temperature=temperature)
    assert expected > 1e-4
    assert got == pytest.approx(expected, rel=1e-4)
    assert all(p.grad is None for p in tiny_model.parameters())  # leaves no gradient behind


def test_group_gradient_norm_is_zero_for_equal_rewards_and_linear_in_the_advantage(tiny_model):
    options = dict(pad_id=0, clip_low=0.2, clip_high=0.2, aggregation="token", temperature=1.0, micro_batch_size=4)
    args = (tiny_model, GROUP["prompt"], GROUP["responses"])
    assert group_gradient_norm(*args, [1.0] * 5, scale_by_std=True, **options) == 0.0
    assert group_gradient_norm(*args, [0.0] * 5, scale_by_std=True, **options) == 0.0
    base = group_gradient_norm(*args, GROUP["rewards"], scale_by_std=False, **options)
    doubled = group_gradient_norm(*args, [2 * r for r in GROUP["rewards"]], scale_by_std=False, **options)
    assert base > 0
    assert doubled == pytest.approx(2 * base, rel=1e-5)  # at ratio 1 the gradient is linear in A
