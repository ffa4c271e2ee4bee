"""A model cut at one decoder layer's MLP input, for prefill-only scoring.

Nothing after the hooked point is built or run: the checkpoint is loaded as a base model
(no LM head) with only the decoder layers up to the hooked one; that layer's MLP is
replaced by a module that records its input (the post-attention norm's output, x_i of
METHOD.md section 2), and the final norm by an identity. Layers, the MLP and the final
norm are found by module structure and sizes, never by attribute names.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from transformers import AutoConfig, AutoModel


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


def resolve_layer(layer: int, num_layers: int) -> int:
    resolved = layer + num_layers if layer < 0 else layer
    if not 0 <= resolved < num_layers:
        raise ValueError(f"config key 'scorer.layer': {layer} is out of range for a model with {num_layers} layers")
    return resolved


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)


def find_decoder_layers(model: nn.Module, num_layers: int) -> nn.ModuleList:
    """The ModuleList of `num_layers` modules of one class: the decoder stack."""
    found = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) == num_layers
             and len({type(x) for x in m}) == 1]
    if len(found) != 1:
        raise ValueError(f"cannot identify the decoder layers of {type(model).__name__}: "
                         f"{len(found)} ModuleLists of {num_layers} same-class modules")
    return found[0]


def find_mlp(layer: nn.Module, hidden_size: int, intermediate_size: int) -> str:
    """Name of the direct child of `layer` that maps hidden -> intermediate: the MLP."""
    names = [name for name, child in layer.named_children()
             if any(isinstance(m, nn.Linear) and m.in_features == hidden_size and m.out_features == intermediate_size
                    for m in child.modules())]
    if len(names) != 1:
        raise ValueError(f"cannot identify the MLP of {type(layer).__name__}: {len(names)} children hold a "
                         f"{hidden_size} -> {intermediate_size} linear map ({names})")
    return names[0]


def find_final_norm(base: nn.Module, layers: nn.ModuleList, hidden_size: int) -> Optional[str]:
    """Name of the direct child of the base model after the decoder stack whose parameters
    are all vectors of the hidden size (the final norm), or None if there is none."""
    def shape(p):  # ZeRO-3 partitioned parameters keep their full shape in ds_shape
        return tuple(getattr(p, "ds_shape", p.shape))

    names = [name for name, child in base.named_children()
             if child is not layers and any(True for _ in child.parameters())
             and all(shape(p) == (hidden_size,) for p in child.parameters())]
    return names[0] if len(names) == 1 else None


def checkpoint_fingerprint(path: str) -> str:
    """Hash of config.json and, for each weight file, its size and first and last MiB."""
    digest = hashlib.sha256()
    if not os.path.isdir(path):
        return hashlib.sha256(f"hub:{path}".encode()).hexdigest()
    with open(os.path.join(path, "config.json"), "rb") as f:
        digest.update(json.dumps(json.load(f), sort_keys=True).encode())
    for name in sorted(os.listdir(path)):
        if name.endswith((".safetensors", ".bin", ".pt")):
            file_path = os.path.join(path, name)
            size = os.path.getsize(file_path)
            digest.update(f"{name}:{size}".encode())
            with open(file_path, "rb") as f:
                digest.update(f.read(1 << 20))
                f.seek(max(0, size - (1 << 20)))
                digest.update(f.read(1 << 20))
    return digest.hexdigest()


def load_model_config(path: str):
    if not os.path.isdir(path) and os.path.exists(path):
        raise ValueError(f"model.path: {path} is not a model folder")
    try:
        return AutoConfig.from_pretrained(path)
    except OSError as e:
        raise ValueError(f"model.path: cannot load a model config from {path!r}: {e}") from None


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
