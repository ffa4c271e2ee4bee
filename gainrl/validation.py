"""Greedy accuracy on held-out problems during training (the `validation` section): when, how, and its record.

Before the first epoch and after every `validation.every_epochs` epochs, each rank generates one
greedy completion for its share of the held-out rows with its own vLLM engine (which holds the
policy's current weights), grades them with the training reward, and the counts are summed over
the ranks. Records go to `<output_dir>/validation.jsonl` as {epoch (epochs done), step, accuracy,
num_rows}: the curve the efficiency experiment (launchers/experiment.py) compares curricula by.
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Callable, ContextManager, Optional

from . import dist, metrics
from .data import Row, load_rows
from .prompts import Prompt, PromptBuilder, build_prompts


@dataclass
class ValidationSet:
    rows: list[Row]
    prompts: list[Prompt]


def load_validation_set(cfg, builder: PromptBuilder) -> ValidationSet:
    """validation.path's rows (read with the data section's field names), prompted as the training rows are."""
    data_cfg = dataclasses.replace(cfg.data, path=cfg.validation.path, limit=cfg.validation.limit,
                                   build_arithmetic=None, skip_bad_rows=False)
    rows = load_rows(data_cfg).rows
    prompts = build_prompts(builder, rows)
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
    rollout.wake()
    groups = rollout.generate([vset.prompts[i].input_ids for i in mine], 1, greedy=True)  # with none too (TP groups)
    if mine:
        texts = tokenizer.batch_decode([group[0].token_ids for group in groups], skip_special_tokens=True)
        rewards, _, _ = reward(texts, [vset.rows[i] for i in mine])
        correct = sum(r >= 1.0 for r in rewards)
    total = dist.all_reduce_sums({"correct": correct, "rows": len(mine)})
    return total["correct"] / total["rows"], int(total["rows"])


class Validator:
    """Validates when the config says (before training, every `validation.every_epochs` epochs and after
    the last) and records the result; does nothing without `validation.path`."""

    def __init__(self, cfg, heldout: Optional[ValidationSet], rollout, tokenizer, reward, run_log,
                 generating: Callable[[], ContextManager] = contextlib.nullcontext):
        """`generating()`: the context the engine generates in (the trainer's: the learner offloaded)."""
        self.every, self.last_epoch = cfg.validation.every_epochs, cfg.train.epochs
        self.heldout, self.rollout, self.tokenizer, self.reward, self.run_log, self.generating = \
            heldout, rollout, tokenizer, reward, run_log, generating

    def due(self, epochs_done: int) -> bool:
        return self.heldout is not None and (epochs_done % self.every == 0 or epochs_done == self.last_epoch)

    def __call__(self, epochs_done: int, step: int, policy_model) -> None:
        """Every rank, at the same point: greedy accuracy of the engine's weights (the policy's)."""
        with self.generating():
            accuracy, num_rows = validation_accuracy(self.heldout, self.rollout, self.tokenizer, self.reward)
        # as after a step: the KV cache freed before the learner's next gather (sleep drops the weights, too)
        self.rollout.sync_weights(policy_model)
        self.run_log.validated({"epoch": epochs_done, "step": step, "accuracy": accuracy, "num_rows": num_rows})
        metrics.log(f"validation after {epochs_done} epochs (step {step}): greedy accuracy {accuracy:.3f} "
                    f"on {num_rows} held-out rows")
