"""Inputs a recipe declares and builds on first use: tiny models, their warm start, synthetic data.

Rank 0 builds what is missing while the other ranks wait; a model folder or data file that
is absent and has no build rule is an error naming the key.
"""
from __future__ import annotations

import os

from . import dist, metrics
from .config import Config, DataConfig, ModelConfig, PromptConfig
from .data import load_rows
from .tasks.arithmetic import make_problems, write_split
from .tiny_model import build_tiny_model
from .warmstart import warm_start


def ensure_data(cfg: DataConfig) -> None:
    """Write the synthetic arithmetic problems to data.path (and the held-out test split to
    build_arithmetic.test_path) if absent and the recipe asks for them."""
    build = cfg.build_arithmetic
    if build is not None and dist.is_rank0():
        train = make_problems(build.num_rows, build.seed, build.weights)  # deterministic: the rows written earlier
        if not os.path.exists(cfg.path):
            metrics.log(f"writing {build.num_rows} arithmetic problems to {cfg.path}")
            write_split(cfg.path, train)
        if build.test_path is not None and not os.path.exists(build.test_path):
            metrics.log(f"writing {build.num_test} held-out arithmetic problems to {build.test_path}")
            write_split(build.test_path, make_problems(build.num_test, build.seed + 1, build.weights,
                                                       id_prefix="arith-test", exclude={row["problem"] for row in train}))
    dist.barrier()


def ensure_model(cfg: ModelConfig, data: DataConfig, prompt: PromptConfig) -> None:
    """Build the configured tiny model (and its warm start on `data`) on rank 0 if needed; fail clearly otherwise."""
    if cfg.build_tiny is None:
        if not os.path.isdir(cfg.path):
            looks_local = cfg.path.startswith(("/", ".", "~")) or os.path.exists(cfg.path)
            if looks_local or os.environ.get("HF_HUB_OFFLINE") == "1":
                raise ValueError(f"model.path: {cfg.path} is not a model folder (and model.build_tiny is not set)")
    elif dist.is_rank0():
        base = f"{os.path.normpath(cfg.path)}-base" if cfg.warm_start else cfg.path
        if not os.path.isdir(base):
            metrics.log(f"building the tiny model in {base}")
            build_tiny_model(base, cfg.build_tiny)
        if cfg.warm_start:  # cached: returns at once when base, data and settings are unchanged
            warm_start(base, cfg.path, load_rows(data).rows, prompt)
    dist.barrier()


def ensure_inputs(cfg: Config) -> None:
    ensure_data(cfg.data)
    ensure_model(cfg.model, cfg.data, cfg.prompt)
