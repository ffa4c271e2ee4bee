"""Rollouts as tensors: prompt + response sequences right-padded into one batch, and its micro-batches.

A micro-batch is a list of the batch's rows, cut to the longest of them (right padding: the columns
past it are padding in every row, and a causal model's outputs before them do not depend on them).
Either a fixed number of rows each, in order, or (`token_budget_micro_batches`) rows sorted by length
and cut, where the least padding is wasted, so that rows x longest row stays within a token budget: with answers of 200 to 3000 tokens
most of a fixed split's forward and backward goes to padding. Which rows go together does not change
the step's gradient: every micro-batch's loss is normalised by the step's global token count."""
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

    def select(self, rows: list[int]) -> "Sequences":
        """These rows, cut to the longest of them."""
        index = torch.as_tensor(rows, dtype=torch.long)
        width = int(self.attention_mask[index].sum(dim=1).max())
        return Sequences(self.input_ids[index, :width], self.attention_mask[index, :width],
                         self.response_mask[index, :width - 1], [self.response_lengths[r] for r in rows],
                         self.sampled_logp[index, :width - 1])


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


def micro_batches(num_rows: int, size: int) -> list[list[int]]:
    """Rows in order, `size` at a time."""
    return [list(range(start, min(start + size, num_rows))) for start in range(0, num_rows, size)]


def min_micro_batches(lengths: list[int], max_tokens: int) -> int:
    """The fewest micro-batches of at most `max_tokens` padded tokens (rows x the longest row; a row longer
    than that alone) that `lengths` can be cut into: filling length-sorted rows greedily is optimal."""
    count = width = rows = 0
    for length in sorted(lengths, reverse=True):
        if rows and (rows + 1) * width <= max_tokens:
            rows += 1
        else:
            count, width, rows = count + 1, length, 1
    return count


def token_budget_micro_batches(lengths: list[int], max_tokens: int, num_batches: Optional[int] = None
                               ) -> list[list[int]]:
    """Rows (by `lengths`, their real tokens) sorted longest first and cut into `num_batches` micro-batches
    (default: the fewest the budget allows; another rank may need more) of at most `max_tokens` padded
    tokens each (a row longer than that alone), where the cuts waste the least padding: a dynamic
    program over the cut points, exact (the padded tokens of a run of sorted rows are its size x its
    first row's length)."""
    fewest = min_micro_batches(lengths, max_tokens)
    count = fewest if num_batches is None else num_batches
    if not fewest <= count <= len(lengths):
        raise ValueError(f"{count} micro-batches asked of {len(lengths)} rows that the budget of {max_tokens} "
                         f"tokens cuts into at least {fewest}")
    order = sorted(range(len(lengths)), key=lambda row: -lengths[row])
    width = torch.tensor([lengths[row] for row in order], dtype=torch.float64)
    n = len(order)
    size = torch.arange(n + 1)[None, :] - torch.arange(n)[:, None]  # size[i, j]: rows i..j-1 of the sorted order
    most = torch.clamp(torch.div(max_tokens, width, rounding_mode="floor"), min=1)[:, None]  # rows a micro-batch
    #                                                                                   starting at row i may hold
    cost = torch.where((size >= 1) & (size <= most), size * width[:, None], torch.inf)  # its padded tokens
    best = torch.full((n + 1,), torch.inf, dtype=torch.float64)
    best[0] = 0.0  # best[j]: least padding of rows 0..j-1 in the micro-batches so far
    starts = []
    for _ in range(count):
        best, start_of = (best[:n, None] + cost).min(dim=0)
        starts.append(start_of)
    batches, end = [], n
    for start_of in reversed(starts):
        start = int(start_of[end])
        batches.append(order[start:end])
        end = start
    return batches[::-1]


def padded_tokens(lengths: list[int], batches: list[list[int]]) -> int:
    """What the forward passes of `batches` process: rows x the longest row, summed."""
    return sum(len(rows) * max(lengths[r] for r in rows) for rows in batches)


def logprob_gap(learner_logp: torch.Tensor, sampled_logp: torch.Tensor, response_mask: torch.Tensor) -> tuple:
    """(sum, count, max) of |learner - sampler| log-prob over the response tokens of one micro-batch
    ([B, T - 1] each): how far the engine that sampled is from the learner that trains (a stale or
    half-pushed weight, or dtype drift), in nats."""
    gap = (learner_logp.detach().double() - sampled_logp.to(learner_logp.device).double()).abs()
    mask = response_mask.to(learner_logp.device) > 0
    picked = gap[mask]
    return picked.sum().item(), int(mask.sum().item()), picked.max().item() if picked.numel() else 0.0
