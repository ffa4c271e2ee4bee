"""Exporting a training checkpoint as a transformers model folder: full weights, config, tokenizer.

A checkpoint folder (`<output_dir>/checkpoints/step_NNNNNNNN/`) holds DeepSpeed's own files,
one set per rank (ZeRO-3 partitions every weight across the ranks), and an `hf/` folder with
everything of the model but its weights (config, generation config, tokenizer), written by
rank 0 at save time with `models.save_hf_metadata`. `export_checkpoint` joins the two offline, on
CPU, with no process group: DeepSpeed's own consolidation (deepspeed.utils.zero_to_fp32)
rebuilds each full fp32 weight from the ranks' optimizer partitions, the model is built from
`hf/config.json` on the meta device (no random init, no download), loaded strictly, and written
with `save_pretrained` (safetensors, sharded by transformers when large).

    python launchers/export.py runs/train/demo/checkpoints/step_00000012 runs/export/step12
"""
from __future__ import annotations

import glob
import os
import shutil
import time
from typing import Optional

import torch

from .checkpoint import CHECKPOINTS, STATE_FILE, complete_checkpoints, read_train_state, verify_files
from .checkpoint import PARTIAL as PARTIAL_SUFFIX  # a folder still being written; never complete
from .metrics import log, progress

HF_METADATA_DIR = "hf"  # inside a checkpoint folder: config, generation config and tokenizer
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# DeepSpeed's files: one model states file (ZeRO-3: one per rank) holds the engine's settings and, without ZeRO,
# the module's full weights; with ZeRO one optimizer states file per rank holds its part of the fp32 master
# weights ("bf16_zero_pp_rank_..." when training in bf16).
MODEL_STATES = "*mp_rank_00_model_states.pt"
ZERO_OPTIM_STATES = "*zero_pp_rank_*_optim_states.pt"


def export_checkpoint(checkpoint_dir: str, out_dir: str, dtype: Optional[str] = None) -> str:
    """Write the checkpoint's full weights, config, generation config and tokenizer to out_dir.

    `dtype` (float32 | bfloat16 | float16) is the weights' type on disk; None keeps the config's
    dtype (the one the model was trained from). The folder is built as out_dir + ".partial" and
    renamed at the end, so a killed export never leaves a folder that looks complete.
    """
    checkpoint_dir = os.path.abspath(checkpoint_dir.rstrip("/"))
    hf_dir, stage = check_checkpoint_dir(checkpoint_dir)
    out_dir = os.path.abspath(out_dir.rstrip("/"))
    if os.path.exists(out_dir):
        raise ValueError(f"export folder already exists: {out_dir} (remove it or choose another)")
    from transformers import AutoConfig
    config = AutoConfig.from_pretrained(hf_dir)
    target = resolve_export_dtype(dtype, config, hf_dir)

    started = time.perf_counter()
    num_ranks = len(glob.glob(os.path.join(checkpoint_dir, ZERO_OPTIM_STATES)))
    log(f"export: consolidating {checkpoint_dir} (ZeRO stage {stage}" + (f", {num_ranks} ranks)" if stage else ")"))
    state_dict = consolidated_state_dict(checkpoint_dir, stage, target)
    num_elements = sum(t.numel() for t in {id(t): t for t in state_dict.values()}.values())
    log(f"export: {len(state_dict)} tensors, {num_elements:,} elements in {str(target).removeprefix('torch.')} "
        f"({time.perf_counter() - started:.1f} s)")
    model = model_with_weights(config, state_dict, target)
    del state_dict

    staging = out_dir + PARTIAL_SUFFIX
    if glob.glob(os.path.join(staging, MODEL_STATES)):  # e.g. out_dir = a checkpoint the trainer is saving now
        raise ValueError(f"{staging} is a DeepSpeed checkpoint being written: choose another export folder")
    if os.path.exists(staging):  # left by a killed export of the same folder: ours to replace
        shutil.rmtree(staging)
    os.makedirs(os.path.dirname(out_dir), exist_ok=True)
    model.save_pretrained(staging)
    for name in sorted(os.listdir(hf_dir)):  # generation config and tokenizer files, byte for byte
        if name != "config.json" and os.path.isfile(os.path.join(hf_dir, name)):
            shutil.copy2(os.path.join(hf_dir, name), os.path.join(staging, name))
    os.replace(staging, out_dir)
    log(f"export: wrote {out_dir} ({time.perf_counter() - started:.1f} s)")
    return out_dir


def find_checkpoint(path: str) -> str:
    """`path` itself if it names a step_* (or .partial) folder, else the newest complete checkpoint of
    `path` taken as a run's output_dir or as its checkpoints/ folder."""
    path = os.path.abspath(path.rstrip("/"))
    if os.path.basename(path).startswith("step_"):
        return path  # check_checkpoint_dir says what is wrong with a .partial or missing folder
    if not os.path.isdir(path):
        raise ValueError(f"checkpoint folder not found: {path}")
    run_dir = os.path.dirname(path) if os.path.basename(path) == CHECKPOINTS else path
    found = complete_checkpoints(run_dir)
    if not found:
        raise ValueError(f"no complete step_* checkpoint in {os.path.join(run_dir, CHECKPOINTS)} "
                         f"('{PARTIAL_SUFFIX}' folders are unfinished saves)")
    return found[-1]


def check_checkpoint_dir(checkpoint_dir: str) -> tuple[str, int]:
    """The checkpoint's hf/ folder and ZeRO stage, after checking that the checkpoint is complete;
    ValueError naming what is missing."""
    if checkpoint_dir.endswith(PARTIAL_SUFFIX):
        raise ValueError(f"{checkpoint_dir} is an incomplete checkpoint (a '{PARTIAL_SUFFIX}' folder is one still "
                         "being written, or left by a run that was killed while saving): export a complete "
                         "step_* folder beside it")
    if not os.path.isdir(checkpoint_dir):
        raise ValueError(f"checkpoint folder not found: {checkpoint_dir}")
    if os.path.isfile(os.path.join(checkpoint_dir, STATE_FILE)):  # a gainrl checkpoint: its files' sizes, as saved
        verify_files(checkpoint_dir, read_train_state(checkpoint_dir))
    model_states = sorted(glob.glob(os.path.join(checkpoint_dir, MODEL_STATES)))
    if not model_states:
        raise ValueError(f"{checkpoint_dir} holds no DeepSpeed checkpoint: expected {MODEL_STATES} files, as "
                         f"engine.save_checkpoint writes them (a folder ending in '{PARTIAL_SUFFIX}' is incomplete; "
                         "pass the step_* folder itself, not its parent)")
    # the engine's settings; memory-mapped, so that a model states file with full weights is not read whole
    saved = torch.load(model_states[0], map_location="cpu", mmap=True, weights_only=False)
    stage = int(saved.get("ds_config", {}).get("zero_optimization", {}).get("stage", 0))
    if stage > 0 and not glob.glob(os.path.join(checkpoint_dir, ZERO_OPTIM_STATES)):
        raise ValueError(f"{checkpoint_dir} is a ZeRO stage {stage} checkpoint without its {ZERO_OPTIM_STATES} "
                         "files (one per rank, with the weights): the save did not finish")
    hf_dir = os.path.join(checkpoint_dir, HF_METADATA_DIR)
    if not os.path.isfile(os.path.join(hf_dir, "config.json")):
        raise ValueError(f"{hf_dir}/config.json not found: the checkpoint lacks the model's config and tokenizer "
                         "(written at save time by gainrl.models.save_hf_metadata)")
    return hf_dir, stage


def resolve_export_dtype(dtype: Optional[str], config, hf_dir: str) -> torch.dtype:
    """The requested dtype, else the config's (`dtype`, `torch_dtype` in older configs), else float32."""
    if dtype is None:
        configured = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
        if configured is None:
            return torch.float32
        dtype = str(configured).removeprefix("torch.")
        if dtype not in DTYPES:
            raise ValueError(f"{hf_dir}/config.json has dtype {dtype!r}; pass one of {', '.join(DTYPES)}")
    if dtype not in DTYPES:
        raise ValueError(f"unknown export dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def consolidated_state_dict(checkpoint_dir: str, stage: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Full weights by parameter name, in `dtype` (tied weights share one tensor under both names).

    ZeRO checkpoints: DeepSpeed's zero_to_fp32 joins the fp32 master partitions of every rank; it
    finds the folder as (parent, tag), which is why a renamed tag folder still works (no path is
    stored inside). It records a tied head under `shared_params` and returns it under both names
    (e.g. lm_head.weight and model.embed_tokens.weight). Lazy mode converts one tensor at a time,
    so the peak is the fp32 partitions (memory-mapped) plus the output. Without ZeRO (stage 0) the
    one model states file holds the module's weights as they were, in the training dtype (a bf16 run's
    fp32 master copy, if DeepSpeed kept one, is not used: zero_to_fp32 does not read that format).
    """
    if stage > 0:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
        tensors = get_fp32_state_dict_from_zero_checkpoint(os.path.dirname(checkpoint_dir),
                                                           tag=os.path.basename(checkpoint_dir), lazy_mode=True)
    else:
        model_states = glob.glob(os.path.join(checkpoint_dir, MODEL_STATES))[0]
        tensors = torch.load(model_states, map_location="cpu", mmap=True, weights_only=False)["module"]
    state_dict, done = {}, {}  # done: by id, so that a tensor shared under two names stays one tensor
    with progress(len(tensors), "export: weights", unit="tensor") as bar:
        for name, tensor in tensors.items():
            if id(tensor) not in done:
                full = tensor.contiguous()  # a lazy ZeRO tensor joins its ranks' partitions here
                done[id(tensor)] = full.to(dtype) if full.is_floating_point() else full
            state_dict[name] = done[id(tensor)]
            bar.update()
    return state_dict


def model_with_weights(config, state_dict: dict[str, torch.Tensor], dtype: torch.dtype):
    """A causal LM of `config` holding exactly `state_dict` (every weight, nothing else; ValueError otherwise).

    Built on the meta device (no memory, no random init) and given the tensors themselves (assign=True).
    Assignment makes a separate Parameter per name, so tied weights are tied again afterwards.
    """
    from transformers import AutoModelForCausalLM
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    try:
        model.load_state_dict(state_dict, strict=True, assign=True)
    except RuntimeError as e:
        raise ValueError(f"the checkpoint's weights do not fit the model of its hf/config.json: {e}") from None
    model.tie_weights()
    still_meta = [name for name, tensor in model.state_dict().items() if tensor.is_meta]
    assert not still_meta, f"weights left unset after a strict load: {still_meta}"
    return model
