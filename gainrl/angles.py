"""Angle concentration by closed forms (METHOD.md section 2): pure tensor math, O(L d) per prompt.

With unit vectors u_i = x_i / ||x_i|| and a segment sum s = sum_i u_i over n tokens, the
mean cosine over the n (n - 1) ordered distinct pairs is (||s||^2 - n) / (n (n - 1)), and
the mean cosine between two disjoint segments is (s_a . s_b) / (n_a n_b). No L x L matrix
is formed. Sums accumulate in fp32; the final scalars are formed in fp64.
"""
from __future__ import annotations

import torch

FLAG_SHORT_QUESTION = 1  # |Q| < 2: C_intra undefined, set to 0
FLAG_NO_PREFIX = 2  # |P| = 0: C_inter undefined, set to 0


def unit_vectors(hidden: torch.Tensor) -> torch.Tensor:
    """[..., d] -> fp32 unit vectors (a zero vector stays zero)."""
    hidden = hidden.float()
    return hidden / hidden.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def span_mask(lengths_from: torch.Tensor, lengths_to: torch.Tensor, seq_len: int) -> torch.Tensor:
    """[B] start, [B] stop -> [B, seq_len] fp32 mask with 1 on positions start <= i < stop."""
    positions = torch.arange(seq_len, device=lengths_from.device)
    return ((positions >= lengths_from[:, None]) & (positions < lengths_to[:, None])).float()


def segment_sums(hidden: torch.Tensor, p_end: torch.Tensor, q_end: torch.Tensor):
    """hidden [B, L, d] (any float dtype), spans per row -> (s_P [B, d], s_Q [B, d]) in fp32.

    P = [0, p_end), Q = [p_end, q_end); positions past q_end (S and padding) are ignored.
    """
    units = unit_vectors(hidden)
    seq_len = hidden.shape[1]
    zeros = torch.zeros_like(p_end)
    masks = torch.stack([span_mask(zeros, p_end, seq_len), span_mask(p_end, q_end, seq_len)], dim=1)
    sums = torch.bmm(masks, units)  # [B, 2, d]
    return sums[:, 0], sums[:, 1]


def mean_pairwise_cosine(seg_sum: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Mean cosine over distinct pairs of a segment from its unit-vector sum; 0 where count < 2."""
    n = count.double()
    sq = seg_sum.double().pow(2).sum(-1)
    valid = n >= 2
    return torch.where(valid, (sq - n) / (n * (n - 1)).clamp_min(1), torch.zeros_like(sq))


def concentration(s_p: torch.Tensor, s_q: torch.Tensor, num_p: torch.Tensor, num_q: torch.Tensor):
    """Segment sums and sizes -> (C_intra, C_inter, flags), fp64 [B], int [B]."""
    c_intra = mean_pairwise_cosine(s_q, num_q)
    n_p, n_q = num_p.double(), num_q.double()
    has_both = (n_p > 0) & (n_q > 0)
    dot = (s_q.double() * s_p.double()).sum(-1)
    c_inter = torch.where(has_both, dot / (n_p * n_q).clamp_min(1), torch.zeros_like(dot))
    flags = (num_q < 2).long() * FLAG_SHORT_QUESTION + (num_p == 0).long() * FLAG_NO_PREFIX
    return c_intra, c_inter, flags


def combined_score(c_intra: torch.Tensor, c_inter: torch.Tensor, w_inter: float) -> torch.Tensor:
    return c_intra + w_inter * c_inter


def sequence_angle(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Training-time signal: mean pairwise cosine over the masked tokens of each row.

    hidden [B, L, d], mask [B, L] (1 = real token) -> fp64 [B].
    """
    units = unit_vectors(hidden)
    seq_sum = torch.bmm(mask.float()[:, None, :], units)[:, 0]
    return mean_pairwise_cosine(seq_sum, mask.sum(-1))
