"""A step's groups: generate G rollouts per prompt, grade them, and (DAPO's dynamic sampling) draw more
prompts in place of those whose group got one reward for all, until the step's batch is full.

A group is one prompt's G rollouts with their rewards. `Groups` holds a rank's groups of one step;
`collect_groups` returns the groups the step trains on and all the groups it generated (what the
sampler observes, and what the rollout counts are). Dynamic sampling keeps every rank's share of the
batch the same size, so every rank runs the same number of micro-batches (ZeRO-3 gathers parameters
collectively): each rank refills its own share, rank 0 draws the extra prompts for all ranks at once,
and only counts and row indices cross ranks, never the rollouts themselves.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from . import dist
from .metrics import PhaseTimer
from .algo import equal_reward_groups, group_reward_variance
from .sampler import Outcomes, Sampler, draw_more_on_rank0_and_broadcast


@dataclass
class Groups:
    """One rank's groups: their rows, prompt tokens and completions, and the rewards, [groups * G] flat."""
    rows: list[int]
    prompt_ids: list[list[int]]
    completions: list[list]  # per group: G rollout.Completion
    rewards: torch.Tensor
    num_errors: int = 0
    num_timeouts: int = 0

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def group_size(self) -> int:
        return len(self.completions[0]) if self.completions else 0

    def response_tokens(self) -> list[int]:
        """Tokens generated per group."""
        return [sum(len(c.token_ids) for c in group) for group in self.completions]

    def informative(self) -> list[bool]:
        """Per group: its rewards differ (GRPO learns from it)."""
        if not self.rows:
            return []
        return (~equal_reward_groups(self.rewards, self.group_size)).tolist()

    def take(self, picks: list[int]) -> "Groups":
        """The groups at `picks`, in that order."""
        size = self.group_size
        rewards = (torch.cat([self.rewards[i * size:(i + 1) * size] for i in picks]) if picks
                   else self.rewards[:0])
        return Groups([self.rows[i] for i in picks], [self.prompt_ids[i] for i in picks],
                      [self.completions[i] for i in picks], rewards, self.num_errors, self.num_timeouts)

    def outcomes(self) -> Outcomes:
        """What the sampler learns from these groups."""
        size = self.group_size
        correct = (self.rewards >= 1.0).view(-1, size).sum(dim=1) if self.rows else torch.zeros(0)
        variance = group_reward_variance(self.rewards, size) if self.rows else torch.zeros(0)
        return Outcomes(np.asarray(self.rows, dtype=np.int64), np.full(len(self.rows), size, dtype=np.int64),
                        correct.numpy().astype(np.int64), np.asarray(self.response_tokens(), dtype=np.int64),
                        variance.numpy().astype(np.float64))


def join(parts: list[Groups]) -> Groups:
    parts = [p for p in parts if len(p)] or parts[:1]
    return Groups([r for p in parts for r in p.rows], [x for p in parts for x in p.prompt_ids],
                  [c for p in parts for c in p.completions], torch.cat([p.rewards for p in parts]),
                  sum(p.num_errors for p in parts), sum(p.num_timeouts for p in parts))


def generate_and_grade(run, rows: list[int], group_size: int, timer: PhaseTimer) -> Groups:
    """`group_size` rollouts of each row's prompt with the (awake) engine, and their rewards. `run`: what
    holds the data, rollout engine, tokenizer and reward (the trainer's Run, or the pass-rate job's). The
    engine is called even with no rows: with tensor parallelism its members generate together."""
    prompts = [run.data.prompts[i] for i in rows]
    with timer("generate"):
        completions = run.rollout.generate([p.input_ids for p in prompts], group_size)
    if not rows:
        return Groups([], [], [], torch.zeros(0))
    with timer("reward"):
        texts = run.tokenizer.batch_decode([c.token_ids for group in completions for c in group],
                                           skip_special_tokens=True)
        rewards, num_errors, num_timeouts = run.reward(texts, [run.data.rows[i] for i in rows
                                                               for _ in range(group_size)])
    return Groups(list(rows), [p.input_ids for p in prompts], completions, torch.tensor(rewards, dtype=torch.float32),
                  num_errors, num_timeouts)


def fill_order(informative: list[bool], share: int) -> list[int]:
    """The groups a rank trains on: the informative ones first, then (when dynamic sampling ran out of
    rounds) those without signal, in the order generated, `share` in all."""
    kept = [i for i, ok in enumerate(informative) if ok]
    dropped = [i for i, ok in enumerate(informative) if not ok]
    return (kept + dropped)[:share]


def deal(rows: np.ndarray, wanted: list[int]) -> list[np.ndarray]:
    """Split `rows` over the ranks in rank order, rank r taking up to wanted[r] of them."""
    bounds = np.cumsum([0, *wanted])
    return [rows[bounds[r]:bounds[r + 1]] for r in range(len(wanted))]


def extra_wanted(missing: int, over_draw: float) -> int:
    """Prompts an extra round draws for a rank still `missing` informative groups (0 when none)."""
    return math.ceil(missing * over_draw) if missing > 0 else 0


def collect_groups(run, mine: np.ndarray, sampler: Sampler, taken: list[int],
                   timer: PhaseTimer) -> tuple[Groups, Groups]:
    """(the groups this rank trains on, every group it generated) for its share `mine` of the step.

    With sampler.dynamic_sampling, up to dynamic_max_rounds extra rounds: every rank says how many
    informative groups it still misses, rank 0 draws ceil(missing * over_draw) more rows for each from
    the sampler's current weights, none of `taken` (the epoch's rows so far, the same list on every
    rank; the extra rows are appended to it), and each rank generates its part."""
    scfg = run.cfg.sampler
    share = len(mine)
    with timer("generate"):
        run.rollout.wake()
    rounds = [generate_and_grade(run, [int(i) for i in mine], run.cfg.grpo.group_size, timer)]
    if scfg.dynamic_sampling:
        for _ in range(scfg.dynamic_max_rounds):
            missing = share - sum(join(rounds).informative())
            wanted = dist.all_gather(extra_wanted(missing, scfg.dynamic_over_draw))
            if sum(wanted) == 0:
                break
            extra = draw_more_on_rank0_and_broadcast(sampler, sum(wanted), taken)
            if len(extra) == 0:  # every row of the training set is taken this epoch
                break
            taken.extend(int(i) for i in extra)
            rounds.append(generate_and_grade(run, [int(i) for i in deal(extra, wanted)[dist.get_rank()]],
                                             run.cfg.grpo.group_size, timer))
    with timer("generate"):
        run.rollout.sleep()
    generated = join(rounds)
    if not scfg.dynamic_sampling:
        return generated, generated
    return generated.take(fill_order(generated.informative(), share)), generated
