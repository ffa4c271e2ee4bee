"""What the training loop needs of the learner and of the rollout engine: two small typed protocols.

engine.DeepSpeedModel and rollout.RolloutEngine implement them; tests/unit/test_trainer.py drives the
loop with fakes of the same shape.
"""
from __future__ import annotations

from typing import Optional, Protocol, Sequence

import torch
from torch import nn

from .rollout.engine import Completion


class Policy(Protocol):
    """The learner as the loop uses it (engine.DeepSpeedModel)."""
    device: torch.device
    module: nn.Module  # the model whose weights are pushed and saved

    def train(self, mode: bool = True) -> None: ...
    def logprobs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, temperature: float,
                 with_entropy: bool = False, with_angle: bool = False) -> tuple: ...
    def backward(self, loss: torch.Tensor) -> None: ...  # the gradient of the global-sum loss
    def step(self) -> None: ...  # steps the optimizer at the accumulation's last micro-batch
    def was_step_applied(self) -> bool: ...
    def grad_norm(self) -> Optional[float]: ...
    def save_checkpoint(self, root: str, tag: str) -> None: ...
    def load_checkpoint(self, root: str, tag: str) -> bool: ...
    def save_hf(self, tokenizer, out_dir: str) -> None: ...


class Rollout(Protocol):
    """The colocated generator as the loop uses it (rollout.RolloutEngine)."""
    def wake(self, tags: Optional[Sequence[str]] = None) -> None: ...
    def sleep(self) -> None: ...
    def generate(self, prompt_token_ids: list[list[int]], num_samples: int,
                 greedy: bool = False) -> list[list[Completion]]: ...
    def sync_weights(self, model: nn.Module) -> dict: ...
    def close(self) -> None: ...
