"""Closed-form angle concentration against brute-force L x L cosine matrices."""
import pytest
import torch

from gainrl import angles


def brute_force(hidden, p_end, q_end):
    """Per row: mean cosine over distinct pairs in Q, mean cosine over Q x P (fp64, full matrix)."""
    out = []
    for h, p, q in zip(hidden.double(), p_end.tolist(), q_end.tolist()):
        u = h / h.norm(dim=-1, keepdim=True)
        cos = u @ u.T
        nq = q - p
        if nq >= 2:
            block = cos[p:q, p:q]
            c_intra = (block.sum() - block.diagonal().sum()) / (nq * (nq - 1))
        else:
            c_intra = torch.tensor(0.0, dtype=torch.float64)
        c_inter = cos[p:q, :p].mean() if (p > 0 and nq > 0) else torch.tensor(0.0, dtype=torch.float64)
        out.append((float(c_intra), float(c_inter)))
    return out


def random_hidden(batch, seq_len, dim, dtype, seed=0, shared_direction=0.5):
    g = torch.Generator().manual_seed(seed)
    # a common direction makes cosines non-trivial (random vectors alone give ~0)
    base = torch.randn(dim, generator=g)
    return (torch.randn(batch, seq_len, dim, generator=g) + shared_direction * base).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("spans", [
    [(5, 20), (0, 12), (7, 7), (7, 8), (7, 9), (0, 0), (30, 40)],  # typical, |P|=0, |Q| in {0,1,2}, empty
])
def test_closed_forms_equal_brute_force(dtype, spans):
    seq_len, dim = 48, 32
    hidden = random_hidden(len(spans), seq_len, dim, dtype)
    p_end = torch.tensor([p for p, _ in spans])
    q_end = torch.tensor([q for _, q in spans])
    s_p, s_q = angles.segment_sums(hidden, p_end, q_end)
    c_intra, c_inter, flags = angles.concentration(s_p, s_q, p_end, q_end - p_end)
    expected = brute_force(hidden, p_end, q_end)
    tol = 1e-5
    for i, (e_intra, e_inter) in enumerate(expected):
        assert abs(c_intra[i].item() - e_intra) < tol, (i, spans[i])
        assert abs(c_inter[i].item() - e_inter) < tol, (i, spans[i])
    nq = q_end - p_end
    assert flags.tolist() == [int(n < 2) * angles.FLAG_SHORT_QUESTION + int(p == 0) * angles.FLAG_NO_PREFIX
                              for p, n in zip(p_end.tolist(), nq.tolist())]


def test_long_sequence_accumulates_accurately():
    seq_len, dim = 4096, 64
    hidden = random_hidden(1, seq_len, dim, torch.bfloat16, seed=3, shared_direction=0.2)
    p_end, q_end = torch.tensor([100]), torch.tensor([4000])
    s_p, s_q = angles.segment_sums(hidden, p_end, q_end)
    c_intra, c_inter, _ = angles.concentration(s_p, s_q, p_end, q_end - p_end)
    (e_intra, e_inter), = brute_force(hidden, p_end, q_end)
    assert abs(c_intra.item() - e_intra) < 1e-5
    assert abs(c_inter.item() - e_inter) < 1e-5


def test_padding_and_suffix_tokens_do_not_matter():
    hidden = random_hidden(1, 30, 16, torch.float32)
    p_end, q_end = torch.tensor([6]), torch.tensor([20])
    garbage = hidden.clone()
    garbage[:, 20:] = 1e3 * torch.randn(1, 10, 16)  # S segment and padding: changed arbitrarily
    a = angles.concentration(*angles.segment_sums(hidden, p_end, q_end), p_end, q_end - p_end)
    b = angles.concentration(*angles.segment_sums(garbage, p_end, q_end), p_end, q_end - p_end)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_identical_vectors_give_cosine_one_and_opposite_give_minus_one():
    v = torch.randn(8)
    hidden = torch.stack([v, v, v, -v, -v, -v]).unsqueeze(0)  # P = first 3, Q = last 3
    s_p, s_q = angles.segment_sums(hidden, torch.tensor([3]), torch.tensor([6]))
    c_intra, c_inter, _ = angles.concentration(s_p, s_q, torch.tensor([3]), torch.tensor([3]))
    assert c_intra.item() == pytest.approx(1.0, abs=1e-6)
    assert c_inter.item() == pytest.approx(-1.0, abs=1e-6)


def test_sequence_angle_equals_brute_force_over_masked_tokens():
    hidden = random_hidden(3, 25, 16, torch.bfloat16, seed=5)
    mask = torch.zeros(3, 25, dtype=torch.long)
    mask[0, :25] = 1
    mask[1, :10] = 1
    mask[2, :1] = 1  # a single token: no pair, defined as 0
    got = angles.sequence_angle(hidden, mask)
    for i in range(3):
        n = int(mask[i].sum())
        expected = brute_force(hidden[i:i + 1, :n], torch.tensor([0]), torch.tensor([n]))[0][0]
        assert got[i].item() == pytest.approx(expected, abs=1e-5)


def test_combined_score():
    s = angles.combined_score(torch.tensor([0.5, 0.1]), torch.tensor([0.01, -0.02]), 8.0)
    assert torch.allclose(s, torch.tensor([0.58, -0.06]))
