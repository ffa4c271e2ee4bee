"""Fakes at the training loop's two boundaries (the learner and the rollout engine) and a grader without
processes, for driving trainer.run_training in tests (tests/unit/test_trainer.py, tests/dist/arena_ranks.py).

The policy is a real tiny causal LM with a torch optimizer standing in for the DeepSpeed engine
(same calls: log-probs with the angle probe, backward, step at the accumulation's end, a skipped
step on non-finite gradients, save/load); the rollout engine samples random tokens from torch's
global generator and checks the wake/sleep order.
"""
import os

import torch

from gainrl import dist
from gainrl.engine import MlpInputProbe, forward_logprobs
from gainrl.rollout import Completion


class FakePolicy:
    """A plain model and Adam in place of DeepSpeed: the gradient steps after the micro-batch whose
    backward was marked last, and is skipped (was_step_applied False) when a gradient is not finite."""

    def __init__(self, model_dir, events: list, nan_steps=()):
        from transformers import AutoModelForCausalLM
        self.module = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        self.module.config.use_cache = False
        self.probe = MlpInputProbe(self.module, -1)
        self.optimizer = torch.optim.Adam(self.module.parameters(), lr=1e-3)
        self.device = torch.device("cpu")
        self.events, self.nan_steps = events, set(nan_steps)
        self.num_steps, self.applied, self.norm, self.num_saves, self.last = 0, True, None, 0, False

    def train(self, mode=True):
        self.module.train(mode)

    def logprobs(self, input_ids, attention_mask, *, temperature, with_entropy=False, with_angle=False):
        self.events.append("forward" if torch.is_grad_enabled() else "forward_no_grad")
        logp, entropy, angle = forward_logprobs(self.module, input_ids, attention_mask,
                                                self.probe if with_angle else None, with_entropy, temperature)
        if self.num_steps + 1 in self.nan_steps and torch.is_grad_enabled():
            logp = logp * float("nan")
        return logp, entropy, angle

    @torch.no_grad()
    def hidden_at_layer(self, input_ids, attention_mask):
        self.probe.enabled = True
        try:
            self.module(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        finally:
            self.probe.enabled = False
        hidden, self.probe.captured = self.probe.captured, None
        return hidden

    def backward(self, loss, last):
        self.events.append("backward")
        self.last = last
        loss.backward()

    def step(self):
        if not self.last:
            return
        grads = [p.grad for p in self.module.parameters() if p.grad is not None]
        self.norm = float(torch.stack([g.norm() for g in grads]).norm())
        self.applied = all(bool(torch.isfinite(g).all()) for g in grads)
        if self.applied:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.num_steps += 1
        self.events.append("optimizer_step")

    def offload(self):
        self.events.append("offload")
        return ["weights"]

    def reload(self):
        self.events.append("reload")

    def was_step_applied(self):
        return self.applied

    def grad_norm(self):
        return self.norm

    def save_checkpoint(self, root, tag):
        self.num_saves += 1
        torch.save({"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "num_steps": self.num_steps}, os.path.join(root, tag, f"fake_policy-{dist.get_rank()}.pt"))

    def load_checkpoint(self, root, tag):
        state = torch.load(os.path.join(root, tag, f"fake_policy-{dist.get_rank()}.pt"), weights_only=False)
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.num_steps = state["num_steps"]
        return True

    def save_hf(self, tokenizer, out_dir):
        self.module.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)


class FakeRollout:
    """Random completions from torch's global generator (so a restored RNG state matters), refusing to
    generate while asleep; remembers the last weights pushed into it. With `model` (the policy's module at
    the start), each sampled token gets its log-prob under the weights pushed last (a copy of the model, at
    `temperature`), as the real engine reports them; `skip_pushes` (1-based push numbers) are ignored, as a
    push that silently failed would be. (How the real engine sleeps and wakes around a push is its own
    business: RolloutEngine.sync_weights, run by the 2-rank training tests.)"""

    def __init__(self, events: list, on_generate=None, model=None, temperature: float = 1.0, skip_pushes=()):
        import copy
        self.events, self.on_generate = events, on_generate
        self.awake, self.pushed, self.num_generates, self.num_pushes = True, None, 0, 0
        self.model = copy.deepcopy(model) if model is not None else None
        self.temperature, self.skip_pushes = temperature, set(skip_pushes)
        self.sampled_prompts: list[list[list[int]]] = []  # the prompts of each sampling call

    def wake(self, tags=None):
        self.events.append("wake" if tags is None else "wake_weights")
        self.awake = self.awake or tags is None

    def sleep(self):
        self.events.append("sleep")
        self.awake = False

    def generate(self, prompt_token_ids, num_samples, greedy=False):
        assert self.awake, "generate while the engine sleeps"
        self.events.append("generate_greedy" if greedy else "generate")
        self.num_generates += 1
        if not greedy:
            self.sampled_prompts.append([list(p) for p in prompt_token_ids])
        if self.on_generate is not None:
            self.on_generate(self.num_generates)
        out = []
        for prompt in prompt_token_ids:
            lengths = torch.randint(1, 7, (1 if greedy else num_samples,)).tolist()
            tokens = [torch.randint(20, 200, (n,)).tolist() for n in lengths]
            out.append([Completion(t, self._logprobs(list(prompt), t), "length") for t in tokens])
        return out

    @torch.no_grad()
    def _logprobs(self, prompt, tokens):
        if self.model is None:
            return [0.0] * len(tokens)
        ids = torch.tensor([prompt + tokens])
        logp, _, _ = forward_logprobs(self.model, ids, torch.ones_like(ids), temperature=self.temperature)
        return logp[0, len(prompt) - 1:].tolist()

    def sync_weights(self, model):
        self.events.append("sync_weights")
        self.num_pushes += 1
        if self.num_pushes in self.skip_pushes:
            return {}
        self.pushed = {name: p.detach().clone() for name, p in model.named_parameters()}
        if self.model is not None:
            self.model.load_state_dict(model.state_dict())
        return {}

    def close(self):
        self.events.append("close")


class FakeReward:
    """1 for a completion of an even number of characters: mixed rewards, no grader processes."""

    def __call__(self, completions, rows):
        return [float(len(text) % 2 == 0) for text in completions], 0, 0

    def close(self):
        pass
