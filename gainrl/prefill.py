"""A model cut at one decoder layer's MLP input, for prefill-only scoring.

Nothing after the hooked point is built or run: the checkpoint is loaded as a base model
(no LM head) with only the decoder layers up to the hooked one; that layer's MLP is
replaced by a module that records its input (the post-attention norm's output, x_i of
METHOD.md section 2), and the final norm by an identity. Layers, the MLP and the final
norm are found by module structure and sizes, never by attribute names.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from transformers import AutoModel

from .models import (checkpoint_fingerprint, find_decoder_layers, find_final_norm, find_mlp, load_model_config,
                     resolve_dtype, resolve_layer)


class MlpInputCapture(nn.Module):
    """Stands in for the hooked layer's MLP: keeps its input and returns it unchanged."""

    def __init__(self):
        super().__init__()
        self.captured: Optional[torch.Tensor] = None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        self.captured = hidden_states
        return hidden_states


@dataclass
class PrefillModel:
    module: nn.Module  # what to call: the base model, or the DeepSpeed engine around it
    capture: MlpInputCapture
    layer: int  # resolved decoder layer index (0-based)
    num_layers: int  # decoder layers in the full checkpoint
    device: torch.device
    partitioned: bool  # ZeRO-3: every rank must call forward the same number of times
    fingerprint: str  # hash of the checkpoint's config and weight samples

    @torch.no_grad()
    def hidden_at_layer(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B, L] -> [B, L, d]: the hooked layer's MLP input."""
        self.capture.captured = None
        self.module(input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device),
                    use_cache=False)
        hidden, self.capture.captured = self.capture.captured, None
        assert hidden is not None, "the capture module was not called: the hooked MLP is not on the forward path"
        return hidden


def load_prefill_model(path: str, layer: int, *, dtype: str = "auto", attn_implementation: str = "sdpa",
                       device: torch.device = torch.device("cpu"), ds_config: Optional[dict] = None) -> PrefillModel:
    """Load `path` with only the layers up to `layer`, cut at that layer's MLP input.

    With `ds_config` (a filled DeepSpeed ZeRO-3 config) the parameters are partitioned across
    ranks as they load, for models that do not fit one device.
    """
    config = load_model_config(path)
    num_layers = config.num_hidden_layers
    layer = resolve_layer(layer, num_layers)
    config.num_hidden_layers = layer + 1
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = config.layer_types[: layer + 1]
    torch_dtype = resolve_dtype(dtype, device)

    keep_alive = None
    if ds_config is not None:
        from transformers.integrations import HfDeepSpeedConfig
        keep_alive = HfDeepSpeedConfig(ds_config)  # makes from_pretrained partition parameters as they load
    base = AutoModel.from_pretrained(path, config=config, dtype=torch_dtype, attn_implementation=attn_implementation)
    base.eval()

    layers = find_decoder_layers(base, layer + 1)
    hooked = layers[layer]
    capture = MlpInputCapture()
    hooked.set_submodule(find_mlp(hooked, config.hidden_size, config.intermediate_size), capture)
    norm_name = find_final_norm(base, layers, config.hidden_size)
    if norm_name is not None:
        base.set_submodule(norm_name, nn.Identity())

    if ds_config is not None:
        import deepspeed
        engine, *_ = deepspeed.initialize(model=base, config=ds_config)
        engine.eval()
        module, partitioned = engine, True
        del keep_alive
    else:
        module, partitioned = base.to(device), False
    return PrefillModel(module=module, capture=capture, layer=layer, num_layers=num_layers, device=device,
                        partitioned=partitioned, fingerprint=checkpoint_fingerprint(path))
