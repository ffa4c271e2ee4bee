"""Live run logging: each step's scalars to TensorBoard and, optionally, Weights & Biases (rank 0 only).

metrics.jsonl stays the record of a run (metrics.py writes it, plots.py reads it); this module
only mirrors it to the dashboards people watch while a run is going. A run resumed from the
checkpoint at step S continues the same TensorBoard curves and the same W&B run: TensorBoard
drops what the killed run logged after S (purge_step), W&B reuses the id in wandb_id.txt.
"""
from __future__ import annotations

import json
import numbers
import os
import secrets
from typing import Optional

from .dist import is_rank0
from .metric_names import phase_of

WANDB_ID_FILE = "wandb_id.txt"
STEP_KEY = "step"  # metrics.jsonl's optimizer step: the x-axis everywhere


def tag_for(key: str) -> str:
    """A dashboard name for a metrics.jsonl key, so related curves sit together:
    time_generate_s -> time/generate_s, mu and epoch -> curriculum/..., tokens_per_s -> perf/...,
    anything else -> train/<key>."""
    if phase_of(key) is not None:
        return f"time/{phase_of(key)}_s"
    if key == "elapsed_s":
        return "time/elapsed_s"
    if key in ("mu", "epoch"):
        return "curriculum/" + key
    if key in ("tokens_per_s",):
        return "perf/" + key
    return "train/" + key


def numeric_scalars(record: dict) -> dict[str, float]:
    """The record's numbers (ints, floats, bools, numpy scalars; NaN and inf kept, so a diverging
    loss shows up), under their dashboard names. None, strings and lists are left out."""
    out = {}
    for key, value in record.items():
        if key == STEP_KEY or value is None or not isinstance(value, numbers.Number) or isinstance(value, complex):
            continue
        out[tag_for(key)] = float(value)
    return out


def resolve_wandb_id(output_dir: str, resume: bool) -> str:
    """The W&B run id for this run: a resumed run reuses the one saved in wandb_id.txt (so its curves
    continue the killed run's); a fresh run gets a new one, so it never appends to an older run's."""
    path = os.path.join(output_dir, WANDB_ID_FILE)
    if resume and os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            run_id = f.read().strip()
        if run_id:
            return run_id
    run_id = secrets.token_hex(4)  # W&B ids: up to 64 of [a-z0-9]; 8 hex digits as W&B makes them
    with open(path, "w", encoding="utf-8") as f:
        f.write(run_id + "\n")
    return run_id


def import_tensorboard_writer():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ValueError(f"config key 'log.tensorboard': the tensorboard package is not installed ({e}); "
                         "pip install -e . installs it, or set log.tensorboard=false") from None
    return SummaryWriter


def import_wandb():
    try:
        import wandb
    except ImportError as e:
        raise ValueError(f"config key 'log.wandb': Weights & Biases is not installed ({e}); install the extra "
                         "with `pip install -e .[wandb]`, or set log.wandb=false") from None
    return wandb


class Tracker:
    """Sends each step's scalars to TensorBoard (`<output_dir>/tensorboard`) and/or W&B, as `log_cfg` says.

    Rank 0 only: on other ranks every method does nothing, so the trainer calls it unconditionally.
    `resume_step`: the step of the checkpoint a resumed run starts from (None for a fresh run).
    """

    def __init__(self, output_dir: str, log_cfg, run_config: dict, resume_step: Optional[int] = None):
        self.writer = None  # torch.utils.tensorboard.SummaryWriter
        self.wandb_run = None
        if not is_rank0():
            return
        # both imports first: a missing package fails before anything is written
        summary_writer = import_tensorboard_writer() if log_cfg.tensorboard else None
        wandb = import_wandb() if log_cfg.wandb else None
        os.makedirs(output_dir, exist_ok=True)
        resuming = resume_step is not None
        if summary_writer is not None:
            # purge_step: TensorBoard hides every point at step >= purge_step written before this writer, i.e.
            # the killed run's steps after the checkpoint (resume), or all of an older run in this folder (fresh)
            self.writer = summary_writer(os.path.join(output_dir, "tensorboard"),
                                         purge_step=resume_step + 1 if resuming else 0)
            if not resuming:
                self.writer.add_text("config", "```\n" + json.dumps(run_config, indent=2, default=str) + "\n```", 0)
                self.writer.flush()
        if wandb is not None:
            run_id = resolve_wandb_id(output_dir, resuming)
            self.wandb_run = wandb.init(project=log_cfg.wandb_project, dir=output_dir, mode=log_cfg.wandb_mode,
                                        config=run_config, id=run_id, resume="allow",
                                        name=os.path.basename(os.path.normpath(output_dir)))
            # our step as the x-axis instead of W&B's own counter, which must only grow: a resumed run
            # re-logs steps S+1.. that the killed run may already have sent, and W&B would drop them
            self.wandb_run.define_metric(STEP_KEY)
            self.wandb_run.define_metric("*", step_metric=STEP_KEY)

    def log(self, record: dict, step: int) -> None:
        """Log one optimizer step's record (a metrics.jsonl line): its numeric values, at `step`."""
        scalars = numeric_scalars(record)
        if self.writer is not None:
            for tag, value in scalars.items():
                self.writer.add_scalar(tag, value, step)
            self.writer.flush()  # a step takes seconds to minutes: keep the file current for a killed run
        if self.wandb_run is not None:
            self.wandb_run.log({STEP_KEY: step, **scalars})

    def close(self) -> None:
        """Flush and close the writers. Call it before the process ends (W&B writes its last records here)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.wandb_run is not None:
            wandb = import_wandb()
            self.wandb_run.finish()
            # wandb-core writes the run's files from its own process, and launchers leave through os._exit
            # (no atexit hooks): wait here for that process to finish writing and exit
            wandb.teardown()
            self.wandb_run = None

