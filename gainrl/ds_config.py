"""DeepSpeed JSON configs: load one from ds_configs/ and fill its "auto" values in one place."""
from __future__ import annotations

import json
import os
from typing import Optional


def fill_auto(ds_config: dict, values: dict, path: str = "") -> dict:
    """Replace every "auto" with values[dotted key]; a missing value is an error naming the key."""
    filled = {}
    for key, value in ds_config.items():
        dotted = f"{path}.{key}" if path else key
        if isinstance(value, dict):
            filled[key] = fill_auto(value, values, dotted)
        elif value == "auto":
            if dotted not in values:
                raise ValueError(f"DeepSpeed config key '{dotted}' is \"auto\" but gainrl has no value for it; "
                                 "set it explicitly in the JSON")
            filled[key] = values[dotted]
        else:
            filled[key] = value
    return filled


# DeepSpeed's own defaults for the ZeRO buckets (elements); "auto" takes them, or the HF integration's
# hidden-width-derived sizes where those are larger (models of hidden width above ~22k)
DEEPSPEED_REDUCE_BUCKET, DEEPSPEED_PREFETCH_BUCKET = 500_000_000, 50_000_000
DEFAULT_PERSIST_GIB = 2.0  # train.zero3_persist_gib's default, and the scorer's


def persistence_threshold(param_numels: list[int], budget_numel: float) -> int:
    """The stage3_param_persistence_threshold that keeps whole on every rank (never partitioned, never
    gathered) the smallest parameters, as many as fit in `budget_numel` elements: parameters with fewer
    elements than the threshold persist (DeepSpeed's rule), and those sum to at most the budget."""
    total = 0
    for numel in sorted(param_numels):
        if total + numel > budget_numel:
            return numel
        total += numel
    return max(param_numels, default=0) + 1  # all of them


def persistent_numel(param_numels: list[int], threshold: int) -> int:
    """The elements of the parameters that persist under `threshold`."""
    return sum(n for n in param_numels if n < threshold)


def zero3_sizes(param_numels: list[int], hidden_size: int, persist_bytes: float, dtype_bytes: int) -> dict:
    """The "auto" values of the ZeRO-3 bucket and persistence keys for a model with these parameters:
    DeepSpeed's bucket defaults (at least the HF integration's h x h), and the smallest parameters kept
    whole on every rank up to `persist_bytes` (train.zero3_persist_gib): for a small model all of them,
    for a 7B one norms, biases and the attention matrices; the rest are gathered when used."""
    return {
        "zero_optimization.reduce_bucket_size": max(DEEPSPEED_REDUCE_BUCKET, hidden_size * hidden_size),
        "zero_optimization.stage3_prefetch_bucket_size": max(DEEPSPEED_PREFETCH_BUCKET,
                                                             int(0.9 * hidden_size * hidden_size)),
        "zero_optimization.stage3_param_persistence_threshold":
            persistence_threshold(param_numels, persist_bytes / dtype_bytes),
    }


def load_ds_config(path: str, *, sizes: dict, dtype: str, micro_batch_size: int = 1,
                   gradient_accumulation_steps: int = 1, gradient_clipping: float = 1.0,
                   optimizer: Optional[dict] = None) -> dict:
    """Read a DeepSpeed JSON and fill "auto" from gainrl's own settings and the model's sizes
    (`sizes`: zero3_sizes' values).

    `optimizer` gives the values of an "optimizer" section's "auto" params (lr, betas,
    weight_decay, torch_adam); without it the section is dropped (an inference engine).
    """
    if not os.path.isfile(path):
        raise ValueError(f"DeepSpeed config not found: {path}")
    with open(path) as f:
        try:
            ds_config = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
    values = {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": gradient_accumulation_steps,
        "gradient_clipping": gradient_clipping,
        "bf16.enabled": dtype == "bfloat16",
        "fp16.enabled": dtype == "float16",
        **sizes,
    }
    if optimizer is None:
        ds_config.pop("optimizer", None)
    else:
        values.update({f"optimizer.params.{key}": value for key, value in optimizer.items()})
    return fill_auto(ds_config, values)
