"""Inputs a recipe declares and builds on first use: tiny models, their warm start, synthetic data.

Rank 0 builds what is missing while the other ranks wait; a model folder or data file that
is absent and has no build rule is an error naming the key.
"""
from __future__ import annotations

import dataclasses
import os

from . import dist, metrics
from .config import Config, DataConfig, ModelConfig, PromptConfig
from .data import load_rows
from .models import check_weight_files
from .tasks import arithmetic, chains
from .tasks.arithmetic import describe, write_split
from .tiny_model import build_tiny_model
from .warmstart import warm_start

TASKS = {"expressions": arithmetic, "chains": chains}  # data.build_arithmetic.task -> its module


def ensure_data(cfg: DataConfig) -> None:
    """Write the synthetic problems to data.path (and the held-out test split, sharing no problem
    with them, to build_arithmetic.test_path) if absent and the recipe asks for them."""
    build = cfg.build_arithmetic
    if build is not None and dist.is_rank0():
        task = TASKS[build.task]
        train = task.make_problems(build.num_rows, build.seed, build.weights)  # deterministic: the rows written earlier
        if not os.path.exists(cfg.path):
            write_split(cfg.path, train)
            metrics.log(f"wrote {build.task} problems to {cfg.path}: {describe(train)}")
        if build.test_path is not None and not os.path.exists(build.test_path):
            test = task.make_problems(build.num_test, build.seed + 1, build.weights, id_prefix="arith-test",
                                      exclude={task.problem_key(row) for row in train})
            write_split(build.test_path, test)
            metrics.log(f"wrote held-out {build.task} problems to {build.test_path}: {describe(test)}")
    dist.barrier()


def ensure_model(cfg: ModelConfig, data: DataConfig, prompt: PromptConfig) -> None:
    """Build the configured tiny model (and its warm start on `data`) on rank 0 if needed; fail clearly otherwise."""
    if cfg.build_tiny is None:
        if not os.path.isdir(cfg.path):
            looks_local = cfg.path.startswith(("/", ".", "~")) or os.path.exists(cfg.path)
            if looks_local or os.environ.get("HF_HUB_OFFLINE") == "1":
                raise ValueError(f"model.path: {cfg.path} is not a model folder (and model.build_tiny is not set)")
    elif dist.is_rank0():
        with dist.all_local_cores():  # the other ranks wait at the barrier below
            _build_model(cfg, data, prompt)
    dist.rank0_decides(lambda: check_weight_files(cfg.path))  # a truncated copy: named before anything loads it


def _build_model(cfg: ModelConfig, data: DataConfig, prompt: PromptConfig) -> None:
    base = f"{os.path.normpath(cfg.path)}-base" if cfg.warm_start else cfg.path
    if not os.path.isdir(base):
        metrics.log(f"building the tiny model in {base}")
        build_tiny_model(base, cfg.build_tiny)
    if cfg.warm_start:  # cached: returns at once when base, data and settings are unchanged
        if cfg.warm_start_field is not None:
            data = dataclasses.replace(data, keep_fields=[*data.keep_fields, cfg.warm_start_field])
        warm_start(base, cfg.path, load_rows(data).rows, prompt, response_field=cfg.warm_start_field,
                   target_accuracy=cfg.warm_start_target_accuracy)


def ensure_inputs(cfg: Config) -> None:
    ensure_data(cfg.data)
    ensure_model(cfg.model, cfg.data, cfg.prompt)
