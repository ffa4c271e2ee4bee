"""The curriculum sampler: orderings, log-space Gaussian weights, exact without-replacement draws,
the mu update rule against hand-computed numbers, and state round trips."""
import itertools
import json
import math

import numpy as np
import pytest
from scipy.stats import chi2

from gainrl.config import SamplerConfig
from gainrl.sampler import (GaussianSampler, UniformSampler, build_ordering, build_sampler,
                            gaussian_log_weights, gaussian_probabilities, gumbel_top_k, mu_adjustment,
                            next_mu, random_ordering, resolve_positions)

REFERENCE = dict(n=500.0, alpha=2.0, beta=0.5, adj_min=0.0, adj_max=1000.0)  # METHOD.md section 3


def gaussian(num_rows=100, num_per_epoch=10, seed=0, **overrides):
    params = dict(sigma=5.0, mu0=0.0, use_angle=True, **REFERENCE)
    params.update(overrides)
    return GaussianSampler(np.arange(num_rows), num_per_epoch, seed, **params)


# ---- orderings ------------------------------------------------------------------------------

COLUMNS = {"id": ["a", "b", "c", "d"], "score": [0.3, 0.9, 0.1, 0.9], "prompt_tokens": [30, 10, 20, 10]}


def test_ordering_by_column_both_directions_ties_keep_row_order():
    assert build_ordering(COLUMNS, "score", True, seed=0).tolist() == [1, 3, 0, 2]
    assert build_ordering(COLUMNS, "score", False, seed=0).tolist() == [2, 0, 1, 3]
    assert build_ordering(COLUMNS, "prompt_tokens", False, seed=0).tolist() == [1, 3, 2, 0]
    assert build_ordering(COLUMNS, "prompt_tokens", True, seed=0).tolist() == [0, 2, 1, 3]
    assert build_ordering(COLUMNS, "score", True, seed=0).dtype == np.int64


def test_random_ordering_is_a_seeded_permutation():
    columns = {"score": list(range(50))}
    first = build_ordering(columns, "random", True, seed=3)
    assert sorted(first.tolist()) == list(range(50))
    assert first.tolist() != list(range(50))
    assert np.array_equal(first, build_ordering(columns, "random", False, seed=3))  # direction is irrelevant
    assert np.array_equal(first, random_ordering(50, 3))
    assert not np.array_equal(first, random_ordering(50, 4))


def test_unknown_column_names_the_key_and_lists_the_columns():
    with pytest.raises(ValueError, match=r"sampler\.order.*'angle'.*random.*id, score, prompt_tokens"):
        build_ordering(COLUMNS, "angle", True, seed=0)


def test_non_numeric_and_non_finite_columns_are_refused():
    with pytest.raises(ValueError, match=r"sampler\.order.*'id' is not numeric"):
        build_ordering(COLUMNS, "id", True, seed=0)
    with pytest.raises(ValueError, match=r"'score' has 1 non-finite values \(first at row 2"):
        build_ordering({"score": [0.1, 0.2, float("nan")]}, "score", True, seed=0)


# ---- weights in log space -------------------------------------------------------------------

def test_log_weights_match_the_direct_formula_where_it_does_not_underflow():
    num_positions, mu, sigma = 50, 20.7, 5.0
    k = np.arange(num_positions)
    direct = np.exp(-((k - mu) ** 2) / (2 * sigma ** 2))
    np.testing.assert_allclose(gaussian_probabilities(num_positions, mu, sigma), direct / direct.sum(),
                               rtol=1e-12, atol=0)
    log_weights = gaussian_log_weights(num_positions, mu, sigma)
    assert log_weights.max() == 0.0 and log_weights.argmax() == 21
    np.testing.assert_allclose(log_weights - np.log(direct), np.full(num_positions, -np.log(direct.max())),
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("mu,sigma,expected_top", [
    (9.0, 1e-3, 9),        # mu at the last position, sigma tiny
    (1e9, 10.0, 9),        # mu very far past the end
    (-1e9, 10.0, 0),       # and before the start
])
def test_weights_never_all_zero_where_the_direct_formula_underflows(mu, sigma, expected_top):
    k = np.arange(10)
    if mu != 9.0:
        assert not np.exp(-((k - mu) ** 2) / (2 * sigma ** 2)).any()  # the naive weights are all zero here
    probabilities = gaussian_probabilities(10, mu, sigma)
    assert np.isfinite(probabilities).all() and probabilities.sum() == pytest.approx(1.0)
    assert probabilities.argmax() == expected_top and probabilities[expected_top] == pytest.approx(1.0)
    rows = gumbel_top_k(gaussian_log_weights(10, mu, sigma), 3, np.random.default_rng(0))
    assert sorted(rows.tolist()) == ([7, 8, 9] if expected_top == 9 else [0, 1, 2])


def test_tiny_sigma_between_two_positions_draws_both_nearest():
    sampler = gaussian(num_rows=10, num_per_epoch=2, sigma=1e-3, mu0=4.5)
    assert np.isfinite(sampler.log_weights()).all()
    for _ in range(20):
        assert sorted(sampler.draw().tolist()) == [4, 5]
    single = gaussian(num_rows=10, num_per_epoch=1, sigma=1e-3, mu0=4.5)
    draws = np.concatenate([single.draw() for _ in range(400)])
    assert set(draws.tolist()) == {4, 5}
    assert 150 <= (draws == 4).sum() <= 250  # equal weights: 200 +- 5 standard deviations (10)


def test_mu_at_the_end_with_tiny_sigma_draws_the_last_positions():
    sampler = gaussian(num_rows=10, num_per_epoch=3, sigma=1e-3, mu0=9.0)
    for _ in range(5):
        assert sorted(sampler.draw().tolist()) == [7, 8, 9]


# ---- the draw -------------------------------------------------------------------------------

def chi_square(counts, expected):
    """Pearson statistic with the bins of expected count < 5 pooled into one; returns (stat, dof)."""
    small = expected < 5
    observed, wanted = counts[~small], expected[~small]
    if small.any():
        observed, wanted = np.append(observed, counts[small].sum()), np.append(wanted, expected[small].sum())
    return float(((observed - wanted) ** 2 / wanted).sum()), len(observed) - 1


def test_single_draws_follow_the_gaussian_weights():
    # B = 1: a draw is one position with probability p_k. Threshold: the 1 - 1e-6 quantile of
    # chi-square, so a correct sampler fails for about one seed in a million; the same counts
    # against slightly wrong weights (mu off by half a position, sigma 25% wider) must fail.
    num_positions, mu, sigma, num_draws = 20, 7.3, 3.0, 20000
    sampler = gaussian(num_rows=num_positions, num_per_epoch=1, sigma=sigma, mu0=mu, seed=1)
    draws = np.concatenate([sampler.draw() for _ in range(num_draws)])
    counts = np.bincount(draws, minlength=num_positions)
    stat, dof = chi_square(counts, num_draws * gaussian_probabilities(num_positions, mu, sigma))
    threshold = chi2.ppf(1 - 1e-6, dof)
    assert stat < threshold, (stat, threshold)
    for wrong_mu, wrong_sigma in ((mu + 0.5, sigma), (mu, 1.25 * sigma)):
        wrong, wrong_dof = chi_square(counts, num_draws * gaussian_probabilities(num_positions, wrong_mu, wrong_sigma))
        assert wrong > chi2.ppf(1 - 1e-6, wrong_dof), (wrong_mu, wrong_sigma, wrong)


def exact_inclusion(p, num_drawn):
    """P(position in the draw) for successive sampling without replacement, by enumeration."""
    inclusion = np.zeros(len(p))
    for sequence in itertools.permutations(range(len(p)), num_drawn):
        prob, left = 1.0, 1.0
        for k in sequence:
            prob *= p[k] / left
            left -= p[k]
        inclusion[list(sequence)] += prob
    return inclusion


def test_draws_without_replacement_have_the_exact_inclusion_probabilities():
    num_positions, num_drawn, mu, sigma, num_draws = 6, 3, 1.4, 1.5, 20000
    p = gaussian_probabilities(num_positions, mu, sigma)
    inclusion = exact_inclusion(p, num_drawn)
    assert inclusion.sum() == pytest.approx(num_drawn)
    sampler = gaussian(num_rows=num_positions, num_per_epoch=num_drawn, sigma=sigma, mu0=mu, seed=2)
    counts = np.zeros(num_positions)
    for _ in range(num_draws):
        rows = sampler.draw()
        assert len(set(rows.tolist())) == num_drawn
        counts[rows] += 1
    z = (counts / num_draws - inclusion) / np.sqrt(inclusion * (1 - inclusion) / num_draws)
    assert np.abs(z).max() < 5, z
    naive = np.minimum(1.0, num_drawn * p)  # "inclusion proportional to weight" is a different law
    z_naive = (counts / num_draws - naive) / np.sqrt(naive * (1 - naive) / num_draws + 1e-12)
    assert np.abs(z_naive).max() > 10


def test_batches_are_distinct_in_range_and_concentrated_near_mu():
    ordering = random_ordering(1000, 5)
    sampler = GaussianSampler(ordering, 100, 0, sigma=50.0, mu0=500.0, use_angle=False, **REFERENCE)
    position_counts = np.zeros(1000)
    for _ in range(50):
        rows = sampler.draw()
        assert rows.dtype == np.int64 and rows.shape == (100,)
        assert len(np.unique(rows)) == 100 and rows.min() >= 0 and rows.max() < 1000
        assert np.array_equal(ordering[sampler.last_positions], rows)
        position_counts[sampler.last_positions] += 1
    distance = np.abs(np.arange(1000) - 500)
    assert position_counts[distance < 50].mean() > 20 * position_counts[distance > 150].mean()
    assert position_counts[distance > 300].sum() == 0  # > 6 sigma away


def test_all_rows_when_the_batch_is_the_whole_set():
    rows = gaussian(num_rows=7, num_per_epoch=7, sigma=0.5).draw()
    assert sorted(rows.tolist()) == list(range(7))


def test_same_seed_same_draws_other_seed_other_draws():
    a, b, c = gaussian(seed=11), gaussian(seed=11), gaussian(seed=12)
    draws_a = [a.draw().tolist() for _ in range(3)]
    assert draws_a == [b.draw().tolist() for _ in range(3)]
    assert draws_a != [c.draw().tolist() for _ in range(3)]


# ---- the update rule ------------------------------------------------------------------------

TANH_HALF, TANH_FIFTH, TANH_ONE = 0.46211715726000974, 0.19737532022490401, 0.7615941559557649


def test_update_rule_against_hand_computed_values():
    adj = mu_adjustment(0.75, 0.1, n=500, alpha=2, beta=0.5, use_angle=True)
    assert adj == pytest.approx(500 * TANH_HALF + 500 * TANH_FIFTH, rel=1e-12)  # 329.7462...
    assert mu_adjustment(0.75, 0.1, n=500, alpha=2, beta=0.5, use_angle=False) == pytest.approx(500 * TANH_HALF)
    step = dict(adj_min=0.0, adj_max=1000.0, num_positions=10000)
    assert next_mu(100.0, adj, **step) == pytest.approx(429.74623874245687, rel=1e-12)
    assert next_mu(100.0, adj, **{**step, "adj_max": 300.0}) == 400.0  # step clipped from above
    backward = mu_adjustment(0.0, None, n=500, alpha=2, beta=0.5, use_angle=False)
    assert backward == pytest.approx(-500 * TANH_ONE)  # -380.797...
    assert next_mu(100.0, backward, **step) == 100.0  # adj_min = 0: mu never moves back
    assert next_mu(500.0, backward, **{**step, "adj_min": -1000.0}) == pytest.approx(500 - 500 * TANH_ONE)
    assert next_mu(100.0, backward, **{**step, "adj_min": -1000.0}) == 0.0  # clipped at position 0
    assert next_mu(9990.0, 500 * TANH_ONE, **step) == 9999.0  # clipped at N - 1


def test_accuracy_at_target_gives_no_accuracy_term():
    assert mu_adjustment(0.5, None, n=500, alpha=2, beta=0.5, use_angle=False) == 0.0
    assert mu_adjustment(0.5, 0.0, n=500, alpha=2, beta=0.5, use_angle=True) == 0.0
    assert mu_adjustment(0.3, 0.0, n=500, alpha=2, beta=0.3, use_angle=True) == 0.0


def test_accuracy_above_target_moves_mu_forward_with_rewards_in_0_1():
    # METHOD.md section 5, defect 4: the reference used acc/2, so with {0, 1} rewards the accuracy
    # term was never positive. Here accuracy is the fraction correct: above beta means forward.
    for acc in (0.6, 0.8, 1.0):
        assert mu_adjustment(acc, None, n=500, alpha=2, beta=0.5, use_angle=False) > 0
    sampler = gaussian(num_rows=1000, use_angle=False)
    sampler.update(1.0)
    assert sampler.mu == pytest.approx(500 * math.tanh(1.0)) and sampler.epoch == 1


@pytest.mark.parametrize("acc", [1.5, -0.1, float("nan")])
def test_accuracy_outside_0_1_is_refused(acc):
    with pytest.raises(ValueError, match="accuracy must be in"):
        mu_adjustment(acc, 0.0, n=500, alpha=2, beta=0.5, use_angle=True)
    with pytest.raises(ValueError, match="accuracy must be in"):
        UniformSampler(10, 2, 0).update(acc)


def test_missing_or_nan_angle_is_refused_only_when_used():
    for ang in (None, float("nan")):
        with pytest.raises(ValueError, match="use_angle"):
            mu_adjustment(0.5, ang, n=500, alpha=2, beta=0.5, use_angle=True)
        assert mu_adjustment(0.5, ang, n=500, alpha=2, beta=0.5, use_angle=False) == 0.0


def test_mu_stays_in_range_under_extreme_sequences():
    rng = np.random.default_rng(0)
    sampler = gaussian(num_rows=50, num_per_epoch=5, sigma=2.0, n=1e5, adj_min=-1e6, adj_max=1e6)
    seen = []
    for _ in range(200):
        rows = sampler.draw()
        assert len(np.unique(rows)) == 5 and 0 <= rows.min() and rows.max() < 50
        sampler.update(float(rng.choice([0.0, 1.0])), float(rng.choice([-1.0, 1.0])))
        assert 0.0 <= sampler.mu <= 49.0
        seen.append(sampler.mu)
    assert min(seen) == 0.0 and max(seen) == 49.0  # both ends were reached and held
    assert sampler.epoch == 200


# ---- state, units, config -------------------------------------------------------------------

def run_epochs(sampler, signals):
    draws = []
    for acc, ang in signals:
        draws.append(sampler.draw().tolist())
        sampler.update(acc, ang)
    return draws


def test_state_dict_round_trip_reproduces_the_next_draws():
    signals = [(0.9, 0.2), (0.1, -0.3), (0.6, 0.05), (1.0, 0.4), (0.0, 0.0)]
    original = gaussian(num_rows=200, num_per_epoch=16, sigma=10.0, adj_min=-100.0, n=30.0, seed=4)
    run_epochs(original, signals[:2])
    state = json.loads(json.dumps(original.state_dict()))  # also survives a JSON checkpoint
    expected = run_epochs(original, signals[2:])
    restored = gaussian(num_rows=200, num_per_epoch=16, sigma=10.0, adj_min=-100.0, n=30.0, seed=99)
    restored.load_state_dict(state)
    assert restored.epoch == 2 and restored.mu == state["mu"]
    assert run_epochs(restored, signals[2:]) == expected
    assert restored.mu == original.mu and restored.epoch == original.epoch == 5


def test_state_dict_is_a_copy_and_refuses_another_run():
    sampler = gaussian()
    state = sampler.state_dict()
    first = sampler.draw().tolist()
    sampler.load_state_dict(state)
    assert sampler.draw().tolist() == first  # drawing did not change the saved state
    with pytest.raises(ValueError, match="resume with the same data"):
        gaussian(num_rows=101).load_state_dict(state)
    with pytest.raises(ValueError, match="resume with the same data"):
        UniformSampler(100, 10, 0).load_state_dict(state)
    shuffled = GaussianSampler(random_ordering(100, 0), 10, 0, sigma=5.0, **REFERENCE)
    with pytest.raises(ValueError, match="ordering digest"):
        shuffled.load_state_dict(state)


def test_fraction_units_resolve_to_positions():
    cfg = SamplerConfig(units="fraction", sigma=0.1, n=0.05, adj_min=-0.01, adj_max=0.2, mu0=0.5,
                        prompts_per_epoch=8, order="random")
    sampler = build_sampler(cfg, None, num_rows=1001, seed=0)
    assert (sampler.sigma, sampler.n, sampler.adj_min, sampler.adj_max) == pytest.approx((100.1, 50.05, -10.01, 200.2))
    assert sampler.mu == 500.0  # mu0 = 0.5 of the way from position 0 to position N - 1
    assert resolve_positions("positions", 1001, sigma=3, n=4, adj_min=0, adj_max=5, mu0=6) == \
        {"sigma": 3, "n": 4, "adj_min": 0, "adj_max": 5, "mu0": 6}
    with pytest.raises(ValueError, match=r"sampler\.mu0"):
        resolve_positions("fraction", 1001, sigma=0.1, n=0.1, adj_min=0, adj_max=0.1, mu0=1.5)
    with pytest.raises(ValueError, match=r"sampler\.mu0"):
        build_sampler(SamplerConfig(order="random", prompts_per_epoch=8, mu0=1001.0), None, 1001, 0)


def test_build_sampler_walks_the_configured_order():
    columns = {"score": [0.1, 0.5, 0.3, 0.9, 0.7], "prompt_tokens": [5, 1, 4, 2, 3]}
    by_score = build_sampler(SamplerConfig(prompts_per_epoch=1, sigma=1e-3), columns, 5, 0)
    assert by_score.ordering.tolist() == [3, 4, 1, 2, 0] and by_score.draw().tolist() == [3]
    shortest = build_sampler(SamplerConfig(prompts_per_epoch=1, sigma=1e-3, order="prompt_tokens",
                                           descending=False), columns, 5, 0)
    assert shortest.draw().tolist() == [1]
    random = build_sampler(SamplerConfig(prompts_per_epoch=1, order="random"), columns, 5, 7)
    assert np.array_equal(random.ordering, random_ordering(5, 7))
    with pytest.raises(ValueError, match=r"sampler\.order.*needs a score file"):
        build_sampler(SamplerConfig(prompts_per_epoch=1), None, 5, 0)
    with pytest.raises(ValueError, match="score file has 5 rows but the training set has 6"):
        build_sampler(SamplerConfig(prompts_per_epoch=1), columns, 6, 0)


def test_batch_larger_than_the_set_and_empty_set_are_refused():
    for schedule in ("gaussian", "uniform"):
        cfg = SamplerConfig(schedule=schedule, order="random", prompts_per_epoch=20)
        with pytest.raises(ValueError, match=r"sampler\.prompts_per_epoch.*20 prompts.*N = 10 rows"):
            build_sampler(cfg, None, num_rows=10, seed=0)
        with pytest.raises(ValueError, match=r"no rows \(N = 0\)"):
            build_sampler(cfg, None, num_rows=0, seed=0)


def test_uniform_draws_fresh_subsets_and_only_counts_epochs():
    sampler = build_sampler(SamplerConfig(schedule="uniform", prompts_per_epoch=5), None, 20, 0)
    assert isinstance(sampler, UniformSampler) and sampler.mu is None
    counts, batches = np.zeros(20), set()
    for _ in range(2000):
        rows = sampler.draw()
        assert len(np.unique(rows)) == 5 and rows.min() >= 0 and rows.max() < 20
        counts[rows] += 1
        batches.add(tuple(sorted(rows.tolist())))
        sampler.update(0.9)
    assert sampler.epoch == 2000 and sampler.mu is None
    inclusion = 5 / 20
    z = (counts / 2000 - inclusion) / math.sqrt(inclusion * (1 - inclusion) / 2000)
    assert np.abs(z).max() < 5
    assert len(batches) > 1800  # fresh subsets: 15504 possible, ~1875 distinct expected in 2000 draws


def test_an_order_by_a_constant_column_warns_that_it_is_the_file_order():
    import warnings
    with pytest.warns(UserWarning, match="every row has the same value"):
        order = build_ordering({"prompt_tokens": [126, 126, 126]}, "prompt_tokens", False, 0)
    assert order.tolist() == [0, 1, 2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_ordering({"prompt_tokens": [126, 127, 126]}, "prompt_tokens", False, 0)
