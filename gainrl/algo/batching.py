"""Rollouts as tensors: prompt + response sequences right-padded into one batch, and its micro-batches."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from gainrl.algo.logprobs import align_to_scored


@dataclass
class Sequences:
    """One rank's rollouts of one step, right-padded: prompt + response per row."""
    input_ids: torch.Tensor  # [N, T]
    attention_mask: torch.Tensor  # [N, T]
    response_mask: torch.Tensor  # [N, T - 1] over scored positions (1 = a response token's log-prob)
    response_lengths: list[int]


def pack_sequences(prompt_ids: list[list[int]], response_ids: list[list[int]], pad_id: int) -> Sequences:
    lengths = [len(p) + len(r) for p, r in zip(prompt_ids, response_ids)]
    longest = max(lengths)
    input_ids = torch.full((len(lengths), longest), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(lengths), longest), dtype=torch.long)
    response_mask = torch.zeros((len(lengths), longest), dtype=torch.float32)
    for row, (prompt, response) in enumerate(zip(prompt_ids, response_ids)):
        input_ids[row, : len(prompt) + len(response)] = torch.tensor(prompt + response)
        attention_mask[row, : len(prompt) + len(response)] = 1
        response_mask[row, len(prompt): len(prompt) + len(response)] = 1
    return Sequences(input_ids, attention_mask, align_to_scored(response_mask),
                     [len(r) for r in response_ids])


def micro_batches(num_rows: int, size: int) -> list[slice]:
    return [slice(start, min(start + size, num_rows)) for start in range(0, num_rows, size)]
