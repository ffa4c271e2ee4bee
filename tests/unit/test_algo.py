"""gainrl.algo against hand-computed values and brute force: advantages, log-probs, entropy, policy loss."""
import math
import random
import statistics
import time

import pytest
import torch

from gainrl.algo import (align_to_scored, group_advantages, k3_kl, local_normalizer, min_micro_batches,
                         pack_sequences, padded_tokens,
                         policy_loss, sequence_entropy, token_budget_micro_batches,
                         sequence_logprobs, token_entropy, token_logprobs, wasted_group_fraction)

# ---------------------------------------------------------------- advantages


def test_group_advantages_by_hand():
    rewards = torch.tensor([1., 0., 0., 1., 1., 1., 1., 1., 0., 0., 0., 1.])
    eps = 1e-6
    std_mixed = math.sqrt(0.25 * 0.75)  # population std of one 1 in four
    expected = [0.5 / (0.5 + eps), -0.5 / (0.5 + eps), -0.5 / (0.5 + eps), 0.5 / (0.5 + eps),
                0., 0., 0., 0.,
                -0.25 / (std_mixed + eps), -0.25 / (std_mixed + eps), -0.25 / (std_mixed + eps),
                0.75 / (std_mixed + eps)]
    torch.testing.assert_close(group_advantages(rewards, 4, scale_by_std=True, eps=eps), torch.tensor(expected))
    centred = [0.5, -0.5, -0.5, 0.5, 0., 0., 0., 0., -0.25, -0.25, -0.25, 0.75]
    torch.testing.assert_close(group_advantages(rewards, 4, scale_by_std=False), torch.tensor(centred))
    assert wasted_group_fraction(rewards, 4) == pytest.approx(1 / 3)


def test_group_advantages_match_a_python_loop():
    rewards = torch.rand(5 * 6, generator=torch.Generator().manual_seed(0))
    got = group_advantages(rewards, 6, scale_by_std=True, eps=1e-6)
    values = rewards.tolist()
    for start in range(0, 30, 6):
        group = values[start:start + 6]
        mean, std = statistics.fmean(group), statistics.pstdev(group)
        for offset, reward in enumerate(group):
            assert got[start + offset].item() == pytest.approx((reward - mean) / (std + 1e-6), rel=1e-5, abs=1e-6)


def test_equal_rewards_give_exactly_zero():
    # 0.1 is not exact in fp32: without the explicit rule the mean's residue divided by eps would blow up
    rewards = torch.tensor([0.1, 0.1, 0.1, 0.7, 0.7, 0.7, 0.3, 0.3, 0.3])
    for scale in (True, False):
        assert torch.equal(group_advantages(rewards, 3, scale_by_std=scale), torch.zeros(9))
    assert wasted_group_fraction(rewards, 3) == 1.0
    assert wasted_group_fraction(torch.tensor([0., 1., 1., 1.]), 2) == 0.5


@pytest.mark.parametrize("rewards, group_size", [(torch.zeros(7), 2), (torch.zeros(2, 4), 4), (torch.zeros(4), 0)])
def test_group_advantages_reject_bad_shapes(rewards, group_size):
    with pytest.raises(ValueError, match="group_size"):
        group_advantages(rewards, group_size, scale_by_std=True)

# ---------------------------------------------------------------- log-probs and entropy


def brute_logprobs(logits, labels, temperature=1.0):
    return torch.log_softmax(logits.double() / temperature, dim=-1).gather(-1, labels[..., None]).squeeze(-1)


def brute_entropy(logits, temperature=1.0):
    log_probs = torch.log_softmax(logits.double() / temperature, dim=-1)
    return -(log_probs.exp() * log_probs).sum(-1)


def random_logits(shape, dtype=torch.float32, seed=0, scale=3.0):
    return (torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale).to(dtype)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-5)])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_token_logprobs_and_entropy_match_brute_force(dtype, tol, temperature):
    logits = random_logits((3, 5, 11), dtype)
    labels = torch.randint(0, 11, (3, 5), generator=torch.Generator().manual_seed(1))
    # chunk of 4 rows over 15 positions: uneven chunks, and chunks that cross sequence boundaries
    got = token_logprobs(logits, labels, temperature=temperature, chunk_tokens=4)
    assert got.dtype == torch.float32 and got.shape == (3, 5)
    torch.testing.assert_close(got.double(), brute_logprobs(logits, labels, temperature), atol=tol, rtol=0)
    entropy = token_entropy(logits, temperature=temperature, chunk_tokens=4)
    assert entropy.dtype == torch.float32
    torch.testing.assert_close(entropy.double(), brute_entropy(logits, temperature), atol=tol, rtol=0)
    assert (entropy >= 0).all() and (entropy <= math.log(11) + 1e-5).all()


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-6), (torch.bfloat16, 2e-3)])
def test_logprob_and_entropy_gradients_match_brute_force(dtype, tol):
    logits = random_logits((2, 4, 9), dtype).requires_grad_()
    labels = torch.randint(0, 9, (2, 4), generator=torch.Generator().manual_seed(2))
    weights = torch.randn(2, 4, generator=torch.Generator().manual_seed(3))
    reference = logits.detach().double().requires_grad_()
    for ours, brute in ((lambda x: token_logprobs(x, labels, temperature=0.8, chunk_tokens=3),
                         lambda x: brute_logprobs(x, labels, 0.8)),
                        (lambda x: token_entropy(x, temperature=0.8, chunk_tokens=3), lambda x: brute_entropy(x, 0.8))):
        (grad,) = torch.autograd.grad((ours(logits) * weights).sum(), logits)
        (expected,) = torch.autograd.grad((brute(reference) * weights.double()).sum(), reference)
        assert grad.dtype == dtype
        torch.testing.assert_close(grad.double(), expected, atol=tol, rtol=tol)


def test_gradcheck_in_double():
    logits = random_logits((5, 6), torch.float64, scale=1.0).requires_grad_()
    labels = torch.tensor([0, 5, 2, 2, 1])
    assert torch.autograd.gradcheck(lambda x: token_logprobs(x, labels, temperature=1.3, chunk_tokens=2), (logits,))
    assert torch.autograd.gradcheck(lambda x: token_entropy(x, temperature=1.3, chunk_tokens=2), (logits,))


def test_no_full_size_fp32_copy_is_kept_for_backward():
    logits = random_logits((2, 8, 64), torch.bfloat16).requires_grad_()
    labels = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append((t.dtype, t.numel())) or t, lambda t: t):
        (token_logprobs(logits, labels, chunk_tokens=4).sum() + token_entropy(logits, chunk_tokens=4).sum()).backward()
    assert saved, "the hook saw nothing: the check would be empty"
    full = logits.numel()
    assert all(dtype != torch.float32 or numel < full for dtype, numel in saved), saved
    # the brute-force path does keep one: the check can tell them apart
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append((t.dtype, t.numel())) or t, lambda t: t):
        torch.log_softmax(logits.float(), -1).gather(-1, labels[..., None]).sum().backward()
    assert any(dtype == torch.float32 and numel >= full for dtype, numel in saved)


def test_sequence_logprobs_score_the_next_token():
    logits = random_logits((2, 5, 7)).requires_grad_()
    input_ids = torch.tensor([[3, 1, 4, 1, 5], [2, 6, 5, 3, 5]])
    got = sequence_logprobs(logits, input_ids, chunk_tokens=3)
    assert got.shape == (2, 4)
    for row in range(2):
        for col in range(4):  # column j: token j + 1, predicted by logits at j
            expected = torch.log_softmax(logits[row, col].double(), -1)[input_ids[row, col + 1]]
            assert got[row, col].item() == pytest.approx(expected.item(), abs=1e-6)
    got.sum().backward()
    assert torch.equal(logits.grad[:, -1], torch.zeros(2, 7))  # the last position predicts nothing scored
    torch.testing.assert_close(sequence_entropy(logits.detach()), token_entropy(logits.detach())[:, :-1])
    response_over_ids = torch.tensor([[0, 0, 1, 1, 0], [0, 1, 1, 1, 1]])
    assert torch.equal(align_to_scored(response_over_ids), torch.tensor([[0, 1, 1, 0], [1, 1, 1, 1]]))


def test_logprob_options_are_checked():
    logits, labels = torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="temperature"):
        token_logprobs(logits, labels, temperature=0.0)
    with pytest.raises(ValueError, match="labels shape"):
        token_logprobs(logits, labels[:, :2])
    with pytest.raises(ValueError, match="input_ids"):
        sequence_logprobs(logits, labels[:, :2])

# ---------------------------------------------------------------- policy loss

CLIP = dict(clip_low=0.2, clip_high=0.3)


def test_ratio_one_gives_minus_mean_advantage():
    logp = torch.full((2, 4), -1.5)
    mask = torch.tensor([[1, 1, 1, 0], [0, 1, 0, 0]])
    loss, stats = policy_loss(logp, logp.clone(), torch.tensor([1.0, -0.5]), mask, normalizer=4, **CLIP)
    assert loss.item() == pytest.approx(-(3 * 1.0 + 1 * -0.5) / 4)
    assert stats == {"num_tokens": 4.0, "num_clipped_low": 0.0, "num_clipped_high": 0.0, "ratio_sum": 4.0,
                     "kl_sum": 0.0, "entropy_sum": 0.0}


def test_clipping_on_both_sides():
    # one token per sequence: (ratio, advantage) -> per-token loss and d loss / d logp, by hand
    cases = [  # ratio, A, loss_t = -min(rA, clip(r)A), gradient (0 where the clip is active)
        (1.5, +1.0, -1.3, 0.0),   # A > 0, above 1 + clip_high: clipped
        (1.1, +1.0, -1.1, -1.1),  # inside the range
        (0.5, +1.0, -0.5, -0.5),  # A > 0 below 1 - clip_low: min keeps the unclipped (pessimistic) term
        (0.5, -1.0, +0.8, 0.0),   # A < 0, below 1 - clip_low: clipped
        (1.5, -1.0, +1.5, +1.5),  # A < 0 above 1 + clip_high: unclipped term is the larger loss
        (0.9, -2.0, +1.8, +1.8),
    ]
    old_logp = torch.full((6, 1), -1.0)
    logp = (old_logp + torch.log(torch.tensor([[c[0]] for c in cases]))).requires_grad_()
    advantages = torch.tensor([c[1] for c in cases])
    loss, stats = policy_loss(logp, old_logp, advantages, torch.ones(6, 1), normalizer=6, **CLIP)
    assert loss.item() == pytest.approx(sum(c[2] for c in cases) / 6, abs=1e-6)
    loss.backward()
    torch.testing.assert_close(logp.grad[:, 0], torch.tensor([c[3] / 6 for c in cases]), atol=1e-6, rtol=1e-5)
    assert stats["num_clipped_high"] == 1 and stats["num_clipped_low"] == 1
    assert stats["ratio_sum"] == pytest.approx(sum(c[0] for c in cases), abs=1e-5)


def test_k3_kl_term_by_hand():
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    ref_logp = torch.tensor([[-2.0, -2.0]])  # d = ref - logp = -1 and 0
    k3_first = math.exp(-1) + 1 - 1
    loss, stats = policy_loss(logp, logp.detach(), torch.zeros(1), torch.ones(1, 2), normalizer=2,
                              ref_logp=ref_logp, kl_coef=0.5, **CLIP)
    assert loss.item() == pytest.approx(0.5 * k3_first / 2, abs=1e-7)
    assert stats["kl_sum"] == pytest.approx(k3_first, abs=1e-7)
    loss.backward()
    # d k3 / d logp = 1 - exp(ref - logp); the policy term's gradient is 0 with A = 0
    torch.testing.assert_close(logp.grad, torch.tensor([[0.5 * (1 - math.exp(-1)) / 2, 0.0]]))


def test_k3_is_non_negative_and_zero_at_equality():
    generator = torch.Generator().manual_seed(0)
    logp, ref = -torch.rand(50, generator=generator) * 5, -torch.rand(50, generator=generator) * 5
    assert (k3_kl(logp, ref) >= 0).all()
    assert torch.equal(k3_kl(logp, logp), torch.zeros(50))
    _, with_ref = policy_loss(logp[None], logp[None], torch.ones(1), torch.ones(1, 50), normalizer=50,
                              ref_logp=logp[None].clone(), kl_coef=0.1, **CLIP)
    assert with_ref["kl_sum"] == 0.0


def test_entropy_bonus_by_hand():
    logp = torch.zeros(1, 3)
    entropy = torch.tensor([[2.0, 1.0, 9.0]])
    loss, stats = policy_loss(logp, logp, torch.zeros(1), torch.tensor([[1, 1, 0]]), normalizer=2,
                              entropy=entropy, entropy_coef=0.1, **CLIP)
    assert loss.item() == pytest.approx(-0.1 * 3.0 / 2)
    assert stats["entropy_sum"] == 3.0


def random_batch(seed, num_seqs=3, length=6):
    generator = torch.Generator().manual_seed(seed)
    logp = -torch.rand(num_seqs, length, generator=generator) * 3
    return dict(logp=logp, old_logp=logp + 0.4 * torch.randn(num_seqs, length, generator=generator),
                ref_logp=logp + 0.3 * torch.randn(num_seqs, length, generator=generator),
                entropy=torch.rand(num_seqs, length, generator=generator),
                advantages=torch.randn(num_seqs, generator=generator))


@pytest.mark.parametrize("aggregation", ["token", "sequence"])
def test_masked_positions_do_not_matter(aggregation):
    batch = random_batch(0)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [0, 1, 1, 1, 1, 1], [0, 0, 0, 0, 1, 0]])
    options = dict(mask=mask, normalizer=local_normalizer(mask, aggregation), kl_coef=0.1, entropy_coef=0.01,
                   aggregation=aggregation, **CLIP)

    def run(values):
        logp = values.pop("logp").clone().requires_grad_()
        loss, stats = policy_loss(logp, **values, **options)
        loss.backward()
        return loss.item(), stats, logp.grad

    clean = run(dict(batch))
    garbage = {name: value.clone() for name, value in batch.items()}
    junk = torch.tensor([float("inf"), float("nan"), -1e4, 80.0, float("-inf")])
    for name in ("logp", "old_logp", "ref_logp", "entropy"):
        num_masked = int((mask == 0).sum())
        garbage[name][mask == 0] = junk.repeat(num_masked)[:num_masked]
    dirty = run(garbage)
    assert dirty[0] == clean[0] and dirty[1] == clean[1]
    assert torch.equal(dirty[2], clean[2])
    assert torch.equal(clean[2][mask == 0], torch.zeros(int((mask == 0).sum())))
    assert clean[2][mask == 1].abs().min() > 0  # the unmasked gradient is not trivially zero


def test_token_and_sequence_aggregation():
    logp = torch.zeros(2, 3)
    advantages = torch.tensor([1.0, -1.0])
    uneven = torch.tensor([[1, 1, 1], [1, 0, 0]])
    token, _ = policy_loss(logp, logp, advantages, uneven, normalizer=4, aggregation="token", **CLIP)
    sequence, _ = policy_loss(logp, logp, advantages, uneven, normalizer=2, aggregation="sequence", **CLIP)
    assert token.item() == pytest.approx(-(3 * 1.0 + 1 * -1.0) / 4)  # every token weighs the same
    assert sequence.item() == pytest.approx(-(1.0 + -1.0) / 2)  # every sequence weighs the same
    even = torch.tensor([[1, 1, 0], [1, 1, 0]])
    token, _ = policy_loss(logp, logp, advantages, even, normalizer=4, aggregation="token", **CLIP)
    sequence, _ = policy_loss(logp, logp, advantages, even, normalizer=2, aggregation="sequence", **CLIP)
    assert token.item() == pytest.approx(sequence.item())
    assert local_normalizer(uneven, "token") == 4 and local_normalizer(uneven, "sequence") == 2


@pytest.mark.parametrize("aggregation", ["token", "sequence"])
def test_micro_batches_add_up_to_the_full_batch(aggregation):
    batch = random_batch(1, num_seqs=5)
    mask = (torch.rand(5, 6, generator=torch.Generator().manual_seed(2)) > 0.4).long()
    options = dict(kl_coef=0.1, entropy_coef=0.01, aggregation=aggregation, **CLIP)
    full, full_stats = policy_loss(**batch, mask=mask, normalizer=local_normalizer(mask, aggregation), **options)
    parts = [slice(0, 2), slice(2, 5)]
    normalizer = sum(local_normalizer(mask[part], aggregation) for part in parts)
    summed, summed_stats = 0.0, dict.fromkeys(full_stats, 0.0)
    for part in parts:
        loss, stats = policy_loss(**{k: v[part] for k, v in batch.items()}, mask=mask[part], normalizer=normalizer,
                                  **options)
        summed += loss.item()
        summed_stats = {k: summed_stats[k] + stats[k] for k in stats}
    assert summed == pytest.approx(full.item(), abs=1e-6)
    assert summed_stats == pytest.approx(full_stats, abs=1e-5)


def test_policy_loss_errors_name_the_problem():
    logp, mask = torch.zeros(1, 2), torch.ones(1, 2)
    with pytest.raises(ValueError, match="aggregation"):
        policy_loss(logp, logp, torch.zeros(1), mask, normalizer=2, aggregation="mean", **CLIP)
    with pytest.raises(ValueError, match="ref_logp"):
        policy_loss(logp, logp, torch.zeros(1), mask, normalizer=2, kl_coef=0.1, **CLIP)
    with pytest.raises(ValueError, match="normalizer"):
        policy_loss(logp, logp, torch.zeros(1), mask, normalizer=0, **CLIP)


# ---------------------------------------------------------------- micro-batches


def within(lengths, rows, budget):
    return len(rows) == 1 or len(rows) * max(lengths[r] for r in rows) <= budget


@pytest.mark.parametrize("seed", range(25))
def test_token_budget_micro_batches_against_brute_force(seed):
    """The fewest micro-batches, and for each count the least padding, over every cut of the rows (in any
    order: every set partition for up to 7 rows) that keeps each micro-batch within the budget."""
    rng = random.Random(seed)
    n = rng.randint(1, 7)
    lengths = [rng.randint(1, 300) for _ in range(n)]
    budget = rng.randint(50, 1200)
    partitions = [p for p in set_partitions(list(range(n))) if all(within(lengths, rows, budget) for rows in p)]
    fewest = min(len(p) for p in partitions)
    assert min_micro_batches(lengths, budget) == fewest
    for count in range(fewest, n + 1):
        batches = token_budget_micro_batches(lengths, budget, count)
        assert len(batches) == count and sorted(r for rows in batches for r in rows) == list(range(n))
        assert all(within(lengths, rows, budget) for rows in batches)
        least = min(padded_tokens(lengths, p) for p in partitions if len(p) == count)
        assert padded_tokens(lengths, batches) == least
    assert token_budget_micro_batches(lengths, budget) == token_budget_micro_batches(lengths, budget, fewest)
    with pytest.raises(ValueError, match=f"{n + 1} micro-batches asked of {n} rows"):
        token_budget_micro_batches(lengths, budget, n + 1)


def set_partitions(items):
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for partition in set_partitions(rest):
        yield [[first], *partition]
        for k in range(len(partition)):
            yield [*partition[:k], [first, *partition[k]], *partition[k + 1:]]


def test_token_budget_micro_batches_of_a_large_step_are_quick_and_sorted():
    rng = random.Random(0)
    lengths = [min(3000, int(rng.lognormvariate(6, 0.7))) + 200 for _ in range(1024)]  # a 7B rank's 1024 rollouts
    start = time.perf_counter()
    batches = token_budget_micro_batches(lengths, 8192)
    assert time.perf_counter() - start < 20  # seconds: minutes-long steps; typically well under one
    flat = [r for rows in batches for r in rows]
    assert [lengths[r] for r in flat] == sorted(lengths, reverse=True)
    assert padded_tokens(lengths, batches) < 1.1 * sum(lengths)


def test_a_micro_batch_cut_to_its_longest_row_scores_like_the_whole_padded_batch(tiny_model_dir):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    generator = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, 500, (n,), generator=generator).tolist() for n in (4, 6, 5, 3)]
    responses = [torch.randint(3, 500, (n,), generator=generator).tolist() for n in (30, 2, 9, 4)]
    seqs = pack_sequences(prompts, responses, pad_id=0, response_logprobs=[[-0.5] * len(r) for r in responses])

    def logp(part):
        with torch.no_grad():
            logits = model(input_ids=part.input_ids, attention_mask=part.attention_mask).logits
        return sequence_logprobs(logits, part.input_ids) * part.response_mask

    whole = logp(seqs)
    part = seqs.select([3, 1])
    assert part.input_ids.shape == (2, 8) and part.response_lengths == [4, 2]
    torch.testing.assert_close(logp(part), whole[[3, 1], :7], atol=1e-5, rtol=0)
    assert part.response_mask.sum() == 6 and torch.equal(part.sampled_logp, seqs.sampled_logp[[3, 1], :7])
