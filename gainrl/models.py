"""Models and tokenizers: loading them, finding their parts by structure, naming their dtype and pad token.

One owner for what the scorer, the learner, the rollout engine and the exports all need of a
checkpoint folder: its config and tokenizer (errors that name `model.path`), a fingerprint of
its weights, the decoder stack, an MLP and the final norm found by module structure and sizes
(never by attribute names), the dtype "auto" resolves to, the pad id, and the non-weight files
(config, generation config, tokenizer) of a transformers folder.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import zipfile
from typing import Optional

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from . import metrics
from .ds_config import persistent_numel, zero3_sizes


def parameter_numels(path: str) -> list[int]:
    """The element count of each of the model's parameters (tied ones once), from its config alone:
    the model is built on the meta device, so nothing is allocated or read."""
    config = load_model_config(path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return [p.numel() for p in model.parameters()]


def model_zero3_sizes(model_path: str, dtype: torch.dtype, persist_gib: float, what: str = "") -> dict:
    """zero3_sizes for the model at `model_path` (its parameter sizes read from its config); with `what`,
    logs which parameters stay whole on every rank under ZeRO-3."""
    numels = parameter_numels(model_path)
    itemsize = torch.empty((), dtype=dtype).element_size()
    sizes = zero3_sizes(numels, load_model_config(model_path).hidden_size, persist_gib * 2**30, itemsize)
    if what:
        threshold = sizes["zero_optimization.stage3_param_persistence_threshold"]
        kept = [n for n in numels if n < threshold]
        kept_gib = persistent_numel(numels, threshold) * itemsize / 2**30
        metrics.log(f"{what}, if ZeRO-3: {len(kept)} of {len(numels)} parameters ({kept_gib:.2f} GiB, those under "
                    f"{threshold} elements) kept whole on every rank, the rest partitioned and gathered when used "
                    f"(train.zero3_persist_gib={persist_gib:g})")
    return sizes


def load_tokenizer(path: str):
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ValueError(f"model.path: cannot load a tokenizer from {path!r}: {e}") from None


def pad_token_id(tokenizer) -> int:
    """The id batches are padded with: the tokenizer's pad token, else its EOS token (padded
    positions are masked out everywhere, so only its being a valid id matters)."""
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id if not isinstance(token_id, list) else token_id[0])
    raise ValueError(f"tokenizer {getattr(tokenizer, 'name_or_path', '?')} has neither a pad nor an EOS token")


def dtype_name(dtype: torch.dtype) -> str:
    """torch.bfloat16 -> "bfloat16": the spelling of DeepSpeed's and vLLM's configs."""
    return str(dtype).removeprefix("torch.")


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


def _safetensors_problem(file: str) -> Optional[str]:
    """What is wrong with a safetensors file, read from its header alone (no tensor is loaded), or None."""
    size = os.path.getsize(file)
    with open(file, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"is {size} bytes: no header"
        header_len = int.from_bytes(head, "little")
        if 8 + header_len > size:
            return f"is {size} bytes, shorter than its own header says ({8 + header_len}): truncated"
        try:
            header = json.loads(f.read(header_len))
        except (ValueError, UnicodeDecodeError):
            return "has a damaged header (not JSON)"
    ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"
            and isinstance(entry, dict) and isinstance(entry.get("data_offsets"), list)]
    expected = 8 + header_len + max(ends, default=0)
    return None if expected == size else f"is {size} bytes, {expected} by its header: truncated or damaged"


def _starts_as_zip(file: str) -> bool:
    with open(file, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def check_weight_files(path: str, key: str = "model.path") -> None:
    """Raise ValueError naming the first damaged weight file of a local model folder: a safetensors file whose
    size is not what its header says (a copy or an export cut short), a `.bin` that is no complete archive,
    a shard named by the index that is not there. Reads headers only: milliseconds for a 72B folder."""
    if not os.path.isdir(path):
        return
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.isfile(index):
        try:
            with open(index, encoding="utf-8") as f:
                shards = set(json.load(f)["weight_map"].values())
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ValueError(f"{key}: {index} is damaged (no JSON weight_map); copy or export the model "
                             "again") from None
        missing = sorted(name for name in shards if not os.path.isfile(os.path.join(path, name)))
        if missing:
            raise ValueError(f"{key}: {os.path.join(path, missing[0])} is missing ({index} names it"
                             + (f", and {len(missing) - 1} more" if len(missing) > 1 else "")
                             + "); copy or export the model again")
    for name in sorted(os.listdir(path)):
        file = os.path.join(path, name)
        problem = None
        if name.endswith(".safetensors"):
            problem = _safetensors_problem(file)
        elif name.endswith(".bin") and _starts_as_zip(file) and not zipfile.is_zipfile(file):
            problem = "is no complete torch archive: truncated or damaged"  # (a legacy pickle is no zip: not read)
        if problem:
            raise ValueError(f"{key}: {file} {problem}; copy or export the model again")


def load_model_config(path: str):
    if not os.path.isdir(path) and os.path.exists(path):
        raise ValueError(f"model.path: {path} is not a model folder")
    try:
        return AutoConfig.from_pretrained(path)
    except OSError as e:
        raise ValueError(f"model.path: cannot load a model config from {path!r}: {e}") from None


def load_causal_lm(path: str, dtype: torch.dtype, attn_implementation: str, ds_config: dict) -> nn.Module:
    """from_pretrained, partitioned across ranks as it loads when ds_config is ZeRO-3."""
    from transformers.integrations import HfDeepSpeedConfig
    keep_alive = HfDeepSpeedConfig(ds_config)  # noqa: F841  (ZeRO-3: from_pretrained partitions while alive)
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation=attn_implementation)


def save_hf_metadata(model, tokenizer, out_dir: str) -> None:
    """Rank 0: write model.config, model.generation_config (when it has one) and the tokenizer to out_dir.

    These are the parts of a transformers folder that a sharded checkpoint does not hold. The trainer
    turns the KV cache off for training (`use_cache=False`); that is no property of the model, so the
    written config has it back on, as the model had it before training.
    """
    os.makedirs(out_dir, exist_ok=True)
    config = copy.deepcopy(model.config)
    config.use_cache = True
    config.save_pretrained(out_dir)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
