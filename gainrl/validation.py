"""Greedy accuracy on held-out problems during training (the `validation` section).

Before the first epoch and after every `validation.every_epochs` epochs, each rank generates one
greedy completion for its share of the held-out rows with its own vLLM engine (which holds the
policy's current weights), grades them with the training reward, and the counts are summed over
the ranks. Records go to `<output_dir>/validation.jsonl` as {epoch (epochs done), step, accuracy,
num_rows}: the curve the efficiency experiment (launchers/experiment.py) compares curricula by.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from . import dist
from .data import Row, load_rows
from .prompts import Prompt


@dataclass
class ValidationSet:
    rows: list[Row]
    prompts: list[Prompt]


def load_validation_set(cfg, build_prompts: Callable[[list[Row]], list[Prompt]]) -> ValidationSet:
    """validation.path's rows (read with the data section's field names), prompted as the training rows are."""
    data_cfg = dataclasses.replace(cfg.data, path=cfg.validation.path, limit=cfg.validation.limit,
                                   build_arithmetic=None, skip_bad_rows=False)
    rows = load_rows(data_cfg).rows
    prompts = build_prompts(rows)
    too_long = [row.id for row, p in zip(rows, prompts) if p.num_tokens > cfg.rollout.max_prompt_tokens]
    if too_long:
        raise ValueError(f"config key 'validation.path': {len(too_long)} prompts of {cfg.validation.path} are longer "
                         f"than rollout.max_prompt_tokens ({cfg.rollout.max_prompt_tokens}), e.g. row {too_long[0]!r}")
    return ValidationSet(rows, prompts)


def validation_accuracy(vset: ValidationSet, rollout, tokenizer, reward) -> tuple[float, int]:
    """Every rank: the fraction of the held-out rows whose greedy completion the reward judges correct,
    and the number of rows."""
    rank, world_size = dist.get_rank(), dist.get_world_size()
    mine = list(range(rank, len(vset.rows), world_size))
    correct = 0
    if mine:
        rollout.wake()
        groups = rollout.generate([vset.prompts[i].input_ids for i in mine], 1, greedy=True)
        texts = tokenizer.batch_decode([group[0].token_ids for group in groups], skip_special_tokens=True)
        rewards, _, _ = reward(texts, [vset.rows[i] for i in mine])
        correct = sum(r >= 1.0 for r in rewards)
    total = dist.all_reduce_sums({"correct": correct, "rows": len(mine)})
    return total["correct"] / total["rows"], int(total["rows"])
