"""The policy and the reference model under DeepSpeed: build, per-token log-probs, backward and step, save and load.

The policy is loaded partitioned (ZeRO-3, via transformers' HfDeepSpeedConfig) or replicated
(ZeRO-2), with DeepSpeed's optimizer from the JSON in ds_configs/ whose "auto" values are
filled from gainrl's config in one place (gainrl/ds_config.py). The reference model, for the
KL term, is partitioned the same way, inference only, and not built when the KL coefficient
is 0. A forward pre-hook on one decoder layer's MLP (found by module structure) gives the
training-time angle signal from the same forward that computes the log-probs.

`DeepSpeedModel` is what the trainer holds: the few calls the loop makes of a learner (the
trainer's `Policy` protocol), with DeepSpeed's conventions kept here, e.g. its averaging of
gradients over the data-parallel ranks, undone in `backward`.
"""
from __future__ import annotations

import os
import shutil
from typing import Optional

import torch
from torch import nn

from . import angles, dist
from .algo.logprobs import sequence_entropy, sequence_logprobs
from .config import TrainRunConfig
from . import metrics
from .ds_config import load_ds_config
from .models import (dtype_name, find_decoder_layers, find_mlp, load_causal_lm, model_zero3_sizes, resolve_dtype,
                     resolve_layer, save_hf_metadata)


class MlpInputProbe:
    """Records the input of one decoder layer's MLP (x_i of METHOD.md section 2) while enabled."""

    def __init__(self, model: nn.Module, layer: int):
        config = model.config
        layers = find_decoder_layers(model, config.num_hidden_layers)
        self.layer = resolve_layer(layer, config.num_hidden_layers)
        mlp = layers[self.layer].get_submodule(find_mlp(layers[self.layer], config.hidden_size,
                                                        config.intermediate_size))
        self.enabled = False
        self.captured: Optional[torch.Tensor] = None
        mlp.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        if self.enabled:
            self.captured = args[0].detach()


def forward_logprobs(module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     probe: Optional[MlpInputProbe] = None, with_entropy: bool = False, temperature: float = 1.0):
    """Per-token log-probs [B, T-1] of input_ids[:, 1:] under logits / temperature (the sampling distribution),
    optionally the entropy [B, T-1] and, with a probe,
    the mean pairwise cosine of the probed hidden states over each row's real tokens [B]."""
    if probe is not None:
        probe.enabled = True
    try:
        logits = module(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    finally:
        if probe is not None:
            probe.enabled = False
    logp = sequence_logprobs(logits, input_ids, temperature=temperature)
    entropy = sequence_entropy(logits, temperature=temperature) if with_entropy else None
    angle = None
    if probe is not None:
        assert probe.captured is not None, "the angle probe's MLP was not on the forward path"
        angle = angles.sequence_angle(probe.captured, attention_mask)
        probe.captured = None
    return logp, entropy, angle


class DeepSpeedModel:
    """A DeepSpeed engine as the trainer uses it (the policy, or the frozen reference)."""

    def __init__(self, engine, probe: Optional[MlpInputProbe] = None):
        self.engine = engine
        self.probe = probe
        self.device = engine.device

    @property
    def module(self) -> nn.Module:
        """The transformers model inside (ZeRO-3 partitioned or not)."""
        return self.engine.module

    def train(self, mode: bool = True) -> None:
        self.engine.train(mode)

    def logprobs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, temperature: float,
                 with_entropy: bool = False, with_angle: bool = False):
        """(log-probs [B, T-1], entropy [B, T-1] or None, angle signal [B] or None) of one micro-batch."""
        probe = self.probe if with_angle else None
        return forward_logprobs(self.engine, input_ids.to(self.device), attention_mask.to(self.device), probe,
                                with_entropy=with_entropy, temperature=temperature)

    @torch.no_grad()
    def hidden_at_layer(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B, L] -> [B, L, d]: the probed layer's MLP input (scorer.layer), from a no-grad forward
        (what the periodic re-scoring ranks prompts by; prefill.PrefillModel has the same call)."""
        self.probe.enabled = True
        try:
            self.engine(input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device),
                        use_cache=False)
        finally:
            self.probe.enabled = False
        hidden, self.probe.captured = self.probe.captured, None
        assert hidden is not None, "the angle probe's MLP was not on the forward path"
        return hidden

    def backward(self, loss: torch.Tensor, last: bool) -> None:
        """Accumulate d(loss)/d(weights); `last`: this micro-batch ends the accumulation (the number of
        micro-batches varies by step, so DeepSpeed is told rather than counting to a fixed number).
        DeepSpeed averages gradients over the data-parallel ranks; the losses are already normalised by
        the step's global count, so the average is undone to keep the global sum (and the step equal
        to the 1-process one)."""
        self.engine.set_gradient_accumulation_boundary(last)
        self.engine.backward(loss * dist.get_world_size(), scale_wrt_gas=False)

    def offload(self) -> list[str]:
        """Move the learner's state to CPU memory while vLLM generates (rollout.offload_learner): DeepSpeed's
        offload_states of the weight shards, gradient partitions and reduce buffers, and of the fp32 master
        weights and Adam states where DeepSpeed allows it (FusedAdam only). Returns the states moved."""
        from deepspeed.ops.adam import FusedAdam
        from deepspeed.runtime.zero.offload_config import OffloadStateTypeEnum as State
        states = [State.lp_params, State.lp_grads, State.contiguous_grad_buffer]
        if isinstance(self.engine.optimizer.optimizer, FusedAdam):
            states += [State.hp_params, State.optim_states]
        self.engine.offload_states(include=states, pin_memory=self.device.type == "cuda")
        return [state.value for state in states]

    def reload(self) -> None:
        """Bring back what offload() moved."""
        self.engine.reload_states()

    def step(self) -> None:
        """DeepSpeed steps the optimizer after the micro-batch that ends the accumulation only."""
        self.engine.step()

    def was_step_applied(self) -> bool:
        """False when DeepSpeed skipped the last optimizer step (non-finite gradients)."""
        return self.engine.was_step_applied()

    def grad_norm(self) -> Optional[float]:
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else None

    def save_checkpoint(self, root: str, tag: str) -> None:
        """Every rank: DeepSpeed's files (weights, optimizer, LR scheduler) into root/tag."""
        self.engine.save_checkpoint(root, tag=tag, save_latest=False)

    def load_checkpoint(self, root: str, tag: str) -> bool:
        loaded, _ = self.engine.load_checkpoint(root, tag=tag, load_optimizer_states=True,
                                                load_lr_scheduler_states=True)
        return loaded is not None

    def save_hf(self, tokenizer, out_dir: str) -> None:
        """Every rank: gather the (ZeRO-3 partitioned) weights; rank 0 writes a transformers folder to
        out_dir (built as out_dir.partial and renamed, so a kill never leaves a folder that looks complete)."""
        model = self.module
        if self.engine.zero_optimization_partition_weights():
            state_dict = self.engine._zero3_consolidated_16bit_state_dict()  # collective: every rank calls it
        else:
            state_dict = model.state_dict()
        if dist.is_rank0():
            staging = out_dir.rstrip("/") + ".partial"
            shutil.rmtree(staging, ignore_errors=True)
            model.save_pretrained(staging, state_dict=state_dict)
            save_hf_metadata(model, tokenizer, staging)  # the config with the KV cache back on
            shutil.rmtree(out_dir, ignore_errors=True)  # a resumed run that had finished exports again
            os.rename(staging, out_dir)
        dist.barrier()


def build_policy(cfg: TrainRunConfig, device: torch.device, gradient_accumulation_steps: int) -> DeepSpeedModel:
    """The trainable policy as a DeepSpeed engine, with its angle probe."""
    import deepspeed
    dtype = resolve_dtype(cfg.model.dtype, device)
    optimizer = {"lr": cfg.optim.lr, "betas": list(cfg.optim.betas), "weight_decay": cfg.optim.weight_decay,
                 # torch's AdamW unless asked: DeepSpeed's FusedAdam (and CPUAdam with offload) JIT-compile at the
                 # first step, needing nvcc and a CUDA toolkit that matches torch's
                 "torch_adam": not (cfg.optim.fused_adam and device.type == "cuda")}
    sizes = model_zero3_sizes(cfg.model.path, dtype, cfg.train.zero3_persist_gib, "policy")
    ds_config = load_ds_config(cfg.train.ds_config, sizes=sizes, dtype=dtype_name(dtype),
                               micro_batch_size=cfg.train.micro_batch_size,
                               gradient_accumulation_steps=gradient_accumulation_steps,
                               gradient_clipping=cfg.optim.grad_clip, optimizer=optimizer)
    model = load_causal_lm(cfg.model.path, dtype, cfg.model.attn_implementation, ds_config)
    if cfg.train.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    model.config.use_cache = False
    probe = MlpInputProbe(model, cfg.scorer.layer)
    warmup = cfg.optim.warmup_steps

    def constant_after_warmup(optimizer):
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / (warmup + 1)))

    zero = ds_config.get("zero_optimization", {})
    if cfg.rollout.offload_learner and (zero.get("stage") != 3 or zero.get("offload_param", {}).get("device", "none")
                                        != "none"):
        raise ValueError(f"config key 'rollout.offload_learner': needs ZeRO stage 3 without offload_param "
                         f"(DeepSpeed's offload_states), but train.ds_config {cfg.train.ds_config} has stage "
                         f"{zero.get('stage', 0)}{' with offload_param' if zero.get('stage') == 3 else ''}")
    engine, *_ = deepspeed.initialize(model=model, model_parameters=[p for p in model.parameters()
                                                                     if p.requires_grad],
                                      config=ds_config, lr_scheduler=constant_after_warmup)
    return DeepSpeedModel(engine, probe)


def build_reference(cfg: TrainRunConfig, device: torch.device, replicate: bool) -> Optional[DeepSpeedModel]:
    """The frozen reference policy for the KL term, or None if kl_coef is 0: a plain replica on every rank
    when `replicate` (it fits beside the learner: no gathers in its forward), else partitioned like the
    policy under ZeRO-3 (a ZeRO-2 policy always gets a replica: there is nothing to shard without an
    optimizer)."""
    if cfg.grpo.kl_coef == 0:
        return None
    import deepspeed
    dtype = resolve_dtype(cfg.model.dtype, device)
    sizes = model_zero3_sizes(cfg.model.path, dtype, cfg.train.zero3_persist_gib)
    ds_config = load_ds_config(cfg.train.ds_config, sizes=sizes, dtype=dtype_name(dtype),
                               micro_batch_size=cfg.train.micro_batch_size, gradient_clipping=cfg.optim.grad_clip)
    partitioned = ds_config.get("zero_optimization", {}).get("stage", 0) == 3 and not replicate
    if not partitioned:
        ds_config["zero_optimization"] = {"stage": 0}
    metrics.log("reference model: " + ("partitioned like the policy (ZeRO-3)" if partitioned else
                                       "a plain replica on every rank"))
    model = load_causal_lm(cfg.model.path, dtype, cfg.model.attn_implementation, ds_config)
    model.requires_grad_(False)
    engine, *_ = deepspeed.initialize(model=model, config=ds_config)
    engine.eval()
    return DeepSpeedModel(engine)
