"""The adaptive curricula and filters (issue 14): each rule against hand-computed numbers or a brute-force
reference, the per-row store, extra draws, and exact resume of every schedule's state."""
import itertools
import json
import math

import numpy as np
import pytest
import torch

from gainrl.config import SamplerConfig
from gainrl.groups import Groups, deal, extra_wanted, fill_order
from gainrl.rollout import Completion
from gainrl.sampler import (GaussianSampler, LearnabilitySampler, Outcomes, RowStore, UniformSampler, angle_term,
                            accuracy_term, build_sampler, centred_angle, demote, keep_probability,
                            learnability_log_weights, smoothed_pass_rate)


def outcomes(rows, correct, rollouts=4, variance=None, tokens=10):
    rows = np.asarray(rows)
    correct = np.asarray(correct)
    if variance is None:  # 0/1 rewards: p (1 - p)
        p = correct / rollouts
        variance = p * (1 - p)
    return Outcomes(rows, np.full(len(rows), rollouts), correct, np.full(len(rows), tokens), np.asarray(variance))


# ---- the per-row store -----------------------------------------------------------------------------

def test_the_store_counts_rollouts_and_the_zero_variance_streak_and_keeps_only_seen_rows():
    store = RowStore(6)
    store.add(outcomes([1, 4], [0, 2]))  # row 1: 0/4 (zero variance), row 4: 2/4
    store.add(outcomes([1, 2], [4, 0]))  # row 1: 4/4 (zero variance again), row 2: 0/4
    store.add(outcomes([4], [4]))
    assert store.times_seen.tolist() == [0, 2, 1, 0, 2, 0]
    assert store.rollouts.tolist() == [0, 8, 4, 0, 8, 0] and store.correct.tolist() == [0, 4, 0, 0, 6, 0]
    assert store.last_correct.tolist() == [0, 4, 0, 0, 4, 0]
    assert store.zero_variance_streak.tolist() == [0, 2, 1, 0, 1, 0]
    store.add(outcomes([1], [1]))  # informative again: the streak restarts
    assert store.zero_variance_streak[1] == 0
    state = json.loads(json.dumps(store.state_dict()))
    assert state["rows"] == [1, 2, 4]  # sparse: rows seen only
    again = RowStore(6)
    again.load_state_dict(state)
    for name in RowStore.FIELDS:
        assert np.array_equal(getattr(again, name), getattr(store, name)), name
    with pytest.raises(AssertionError, match="twice"):
        store.add(outcomes([3, 3], [1, 1]))


# ---- learnability -----------------------------------------------------------------------------------

def test_learnability_weights_are_p_times_one_minus_p_of_the_smoothed_last_pass_rate():
    p = smoothed_pass_rate(np.array([0, 3, 4]), np.array([0, 4, 4]), prior=0.5, strength=1.0)
    assert p.tolist() == pytest.approx([0.5, 3.5 / 5, 4.5 / 5])  # unseen: the prior; seen: (c + 0.5) / (n + 1)
    assert np.exp(learnability_log_weights(p)).tolist() == pytest.approx([0.25, 0.21, 0.09])


def test_a_learnability_draw_picks_rows_in_proportion_to_p_times_one_minus_p():
    sampler = LearnabilitySampler(4, 1, seed=0, prior=0.5, strength=1.0)
    sampler.observe(outcomes([0, 1, 2], [4, 2, 0]))  # p = 0.9, 0.5, 0.1; row 3 unseen: 0.5
    expected = np.array([0.09, 0.25, 0.09, 0.25]) / 0.68
    counts = np.bincount(np.concatenate([sampler.draw() for _ in range(20000)]), minlength=4)
    assert counts / counts.sum() == pytest.approx(expected, abs=0.012)


# ---- GRESO's zero-variance skipping -----------------------------------------------------------------

def test_keep_probability_decays_with_the_zero_variance_streak():
    assert keep_probability(np.array([0, 1, 2, 3]), 0.5).tolist() == [1.0, 0.5, 0.25, 0.125]


def test_demoted_rows_go_below_every_kept_row_in_their_own_order():
    out = demote(np.array([0.0, -3.0, -1.0, -2.0]), np.array([True, False, True, False]))
    assert np.argsort(-out).tolist() == [3, 1, 0, 2]  # the kept ones by weight, then the skipped ones by weight
    assert out[1] == -3.0 and out[3] == -2.0


def brute_force_skip_probabilities(streaks, keep_base):
    """P(row i is the one drawn) with B = 1 over a uniform schedule, by enumerating every skip pattern."""
    n = len(streaks)
    keep = keep_probability(np.asarray(streaks), keep_base)
    total = np.zeros(n)
    for pattern in itertools.product([False, True], repeat=n):  # True = skipped this draw
        weight = np.prod([1 - keep[i] if s else keep[i] for i, s in enumerate(pattern)])
        kept = [i for i in range(n) if not pattern[i]]
        pool = kept if kept else list(range(n))  # all skipped: they are drawn all the same
        for i in pool:
            total[i] += weight / len(pool)
    return total


def test_skipping_draws_rows_with_the_brute_force_probabilities():
    streaks = [0, 1, 2, 0, 3]
    sampler = UniformSampler(5, 1, seed=3, skip_keep_base=0.5)
    sampler.store.zero_variance_streak[:] = streaks
    counts = np.bincount(np.concatenate([sampler.draw() for _ in range(30000)]), minlength=5)
    assert counts / counts.sum() == pytest.approx(brute_force_skip_probabilities(streaks, 0.5), abs=0.01)
    assert sampler.last_skipped <= 3


def test_a_draw_of_b_rows_has_b_rows_even_when_the_filter_skips_nearly_all():
    sampler = UniformSampler(10, 8, seed=0, skip_keep_base=0.01)
    sampler.store.zero_variance_streak[:] = 5
    sampler.store.zero_variance_streak[[2, 7]] = 0
    for _ in range(20):
        rows = sampler.draw()
        assert len(set(rows.tolist())) == 8 and {2, 7} <= set(rows.tolist())


# ---- the centred angle term -----------------------------------------------------------------------

def test_the_update_splits_the_mu_step_into_its_accuracy_and_angle_terms():
    plain = GaussianSampler(np.arange(100), 10, 0, sigma=10.0, n=5.0, alpha=2.0, beta=0.5, adj_min=-20.0,
                            adj_max=20.0, mu0=50.0)
    plain.update(0.7, 0.45)
    u = plain.last_update
    assert u["accuracy_term"] == pytest.approx(5 * math.tanh(2 * 0.2))
    assert u["angle_term"] == pytest.approx(5 * math.tanh(2 * 0.45))
    assert plain.mu == pytest.approx(50 + u["accuracy_term"] + u["angle_term"]) and u["mu_step"] == pytest.approx(
        plain.mu - 50)
    assert accuracy_term(0.7, n=5.0, alpha=2.0, beta=0.5) == u["accuracy_term"]
    assert angle_term(0.45, n=5.0, alpha=2.0) == u["angle_term"]


def test_the_centred_angle_term_moves_mu_only_by_the_change_of_the_signal():
    assert centred_angle(0.45, 0.0, 0) == 0.0
    assert centred_angle(0.5, 0.9, 2) == pytest.approx(0.05)
    centred = GaussianSampler(np.arange(100), 10, 0, sigma=10.0, n=5.0, alpha=2.0, beta=0.5, adj_min=-20.0,
                              adj_max=20.0, mu0=50.0, center_angle=True)
    for ang in (0.45, 0.45, 0.40):
        centred.update(0.5, ang)  # accuracy at the target: only the angle term moves mu
    # epochs 1 and 2: centred signals 0 and 0; epoch 3: 0.40 - 0.45
    assert centred.mu == pytest.approx(50 + 5 * math.tanh(2 * -0.05))
    assert centred.last_update["angle_used"] == pytest.approx(-0.05)


# ---- extra draws (dynamic sampling) ---------------------------------------------------------------

def test_extra_draws_never_repeat_a_taken_row_and_stop_when_none_are_left():
    sampler = build_sampler(SamplerConfig(schedule="gaussian", order="random", prompts_per_epoch=4, sigma=3.0),
                            None, 12, 0)
    taken = sampler.draw().tolist()
    more = sampler.draw_more(5, taken).tolist()
    assert len(more) == 5 and not set(more) & set(taken) and len(set(more)) == 5
    rest = sampler.draw_more(10, taken + more).tolist()
    assert sorted(taken + more + rest) == list(range(12))  # only 3 were left


# ---- exact resume, every schedule and filter ----------------------------------------------------------

SCHEDULES = {
    "uniform_skip": SamplerConfig(schedule="uniform", skip_zero_variance=True, prompts_per_epoch=6),
    "learnability": SamplerConfig(schedule="learnability", prompts_per_epoch=6),
    "gaussian_centred": SamplerConfig(order="random", center_angle=True, prompts_per_epoch=6, sigma=8.0, n=4.0),
}


def play(sampler, epochs, rng, start=0):
    """Draw, observe made-up outcomes, update, re-order once: what a run does to its sampler."""
    draws = []
    for epoch in range(start, start + epochs):
        rows = sampler.draw()
        draws.append(rows.tolist() + sampler.draw_more(2, rows).tolist())
        correct = rng.integers(0, 5, len(rows))
        sampler.observe(outcomes(rows, correct))
        sampler.update(float(correct.mean() / 4), 0.4 + 0.01 * epoch)
        if epoch == 1 and sampler.mu is not None:
            sampler.reorder(np.roll(sampler.ordering, 3))
    return draws


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_a_restored_sampler_continues_exactly_as_the_uninterrupted_one(name):
    whole = build_sampler(SCHEDULES[name], None, 40, 7)
    expected = play(whole, 6, np.random.default_rng(0))
    first = build_sampler(SCHEDULES[name], None, 40, 7)
    rng = np.random.default_rng(0)
    got = play(first, 3, rng)
    state = json.loads(json.dumps(first.state_dict()))  # what train_state.json holds
    second = build_sampler(SCHEDULES[name], None, 40, 7)
    second.load_state_dict(state)
    got += play(second, 3, rng, start=3)
    assert got == expected
    assert json.dumps(second.state_dict()) == json.dumps(whole.state_dict())


# ---- dynamic sampling's batch rules --------------------------------------------------------------------

def test_the_batch_takes_informative_groups_first_then_fills_with_the_dropped_ones():
    assert fill_order([False, True, False, True, True], 2) == [1, 3]
    assert fill_order([False, True, False, False], 3) == [1, 0, 2]


def test_extra_rows_are_dealt_by_what_each_rank_misses():
    assert extra_wanted(0, 1.5) == 0 and extra_wanted(3, 1.5) == 5 and extra_wanted(1, 1.0) == 1
    parts = deal(np.arange(7), [2, 0, 5])
    assert [p.tolist() for p in parts] == [[0, 1], [], [2, 3, 4, 5, 6]]
    short = deal(np.arange(3), [2, 4])  # the sampler had fewer rows left than wanted
    assert [p.tolist() for p in short] == [[0, 1], [2]]


def test_groups_report_their_outcomes_per_row():
    completions = [[Completion([1] * n, [0.0] * n, "stop") for n in lengths] for lengths in ((2, 3), (1, 1), (4, 2))]
    groups = Groups([5, 9, 2], [[7], [8], [9]], completions, torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0]))
    assert groups.informative() == [True, False, False]
    out = groups.outcomes()
    assert out.rows.tolist() == [5, 9, 2] and out.correct.tolist() == [1, 2, 0] and out.rollouts.tolist() == [2] * 3
    assert out.response_tokens.tolist() == [5, 2, 6] and out.reward_variance.tolist() == [0.25, 0.0, 0.0]
    picked = groups.take([2, 0])
    assert picked.rows == [2, 5] and picked.rewards.tolist() == [0.0, 0.0, 1.0, 0.0]
