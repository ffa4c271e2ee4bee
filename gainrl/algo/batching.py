"""Rollouts as tensors: prompt + response sequences right-padded into one batch, and its micro-batches."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from gainrl.algo.logprobs import align_to_scored


@dataclass
class Sequences:
    """One rank's rollouts of one step, right-padded: prompt + response per row."""
    input_ids: torch.Tensor  # [N, T]
    attention_mask: torch.Tensor  # [N, T]
    response_mask: torch.Tensor  # [N, T - 1] over scored positions (1 = a response token's log-prob)
    response_lengths: list[int]
    sampled_logp: torch.Tensor  # [N, T - 1]: the engine's log-prob of each response token as it sampled it (else 0)


def pack_sequences(prompt_ids: list[list[int]], response_ids: list[list[int]], pad_id: int,
                   response_logprobs: Optional[list[list[float]]] = None) -> Sequences:
    """`response_logprobs`: per response, the sampler's log-prob of each of its tokens (None: zeros)."""
    lengths = [len(p) + len(r) for p, r in zip(prompt_ids, response_ids)]
    longest = max(lengths)
    input_ids = torch.full((len(lengths), longest), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(lengths), longest), dtype=torch.long)
    response_mask = torch.zeros((len(lengths), longest), dtype=torch.float32)
    sampled_logp = torch.zeros((len(lengths), longest), dtype=torch.float32)
    for row, (prompt, response) in enumerate(zip(prompt_ids, response_ids)):
        input_ids[row, : len(prompt) + len(response)] = torch.tensor(prompt + response)
        attention_mask[row, : len(prompt) + len(response)] = 1
        response_mask[row, len(prompt): len(prompt) + len(response)] = 1
        if response_logprobs is not None and response:
            sampled_logp[row, len(prompt): len(prompt) + len(response)] = torch.tensor(response_logprobs[row])
    return Sequences(input_ids, attention_mask, align_to_scored(response_mask),
                     [len(r) for r in response_ids], align_to_scored(sampled_logp))


def micro_batches(num_rows: int, size: int) -> list[slice]:
    return [slice(start, min(start + size, num_rows)) for start in range(0, num_rows, size)]


def logprob_gap(learner_logp: torch.Tensor, sampled_logp: torch.Tensor, response_mask: torch.Tensor) -> tuple:
    """(sum, count, max) of |learner - sampler| log-prob over the response tokens of one micro-batch
    ([B, T - 1] each): how far the engine that sampled is from the learner that trains (a stale or
    half-pushed weight, or dtype drift), in nats."""
    gap = (learner_logp.detach().double() - sampled_logp.to(learner_logp.device).double()).abs()
    mask = response_mask.to(learner_logp.device) > 0
    picked = gap[mask]
    return picked.sum().item(), int(mask.sum().item()), picked.max().item() if picked.numel() else 0.0
