"""The training set as the loop needs it: rows, prompts and fingerprint, checked against the config; its ranking.

What can be wrong with the input fails here, before any model is built.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from . import dist, metrics
from .config import TrainRunConfig
from .data import Row, dataset_fingerprint, load_rows
from .models import checkpoint_fingerprint
from .prompts import Prompt, PromptBuilder, build_prompts
from .scorer import run_scoring
from .scores import COLUMNS as ANGLE_COLUMNS, read_score_file


@dataclass
class TrainData:
    rows: list[Row]
    prompts: list[Prompt]
    fingerprint: str


def load_train_data(cfg: TrainRunConfig, tokenizer, world_size: int, for_training: bool = True) -> TrainData:
    """The rows and prompts; `for_training`: also check the epoch and step sizes against the rows and ranks
    (a job that only reads the rows, as the pass-rate job, skips that)."""
    loaded = load_rows(cfg.data)
    if loaded.num_skipped:
        metrics.log(f"skipped {loaded.num_skipped} invalid rows, e.g. {loaded.skipped_reasons[0]}")
    prompts = build_prompts(PromptBuilder(tokenizer, cfg.prompt), loaded.rows)
    too_long = [(row.id, p.num_tokens) for row, p in zip(loaded.rows, prompts)
                if p.num_tokens > cfg.rollout.max_prompt_tokens]
    if too_long:
        raise ValueError(f"config key 'rollout.max_prompt_tokens': {len(too_long)} prompts of {cfg.data.path} are "
                         f"longer than {cfg.rollout.max_prompt_tokens} tokens (e.g. row id {too_long[0][0]!r}: "
                         f"{too_long[0][1]} tokens); raise it or filter the data")
    num_rows, per_epoch, per_step = len(loaded.rows), cfg.sampler.prompts_per_epoch, cfg.train.prompts_per_step
    if not for_training:
        return TrainData(loaded.rows, prompts, dataset_fingerprint(loaded.rows))
    if per_epoch > num_rows:
        raise ValueError(f"config key 'sampler.prompts_per_epoch': {per_epoch} is more than the "
                         f"{num_rows} rows of {cfg.data.path}")
    if per_step % world_size:
        raise ValueError(f"config key 'train.prompts_per_step': {per_step} prompts cannot be split evenly "
                         f"over {world_size} ranks")
    return TrainData(loaded.rows, prompts, dataset_fingerprint(loaded.rows))


def load_ranking(cfg: TrainRunConfig, info: dist.DistInfo, data: TrainData) -> tuple[Optional[str], Optional[dict]]:
    """The score file and its columns, when the curriculum walks an order that comes from one."""
    if cfg.sampler.schedule != "gaussian" or cfg.sampler.order == "random":
        return None, None
    path = cfg.train.score_file
    if path is None:  # score the training set first (resumable; a finished file is reused)
        if cfg.sampler.order not in ANGLE_COLUMNS:  # not a column the scorer writes: say so before scoring
            raise ValueError(f"config key 'sampler.order': {cfg.sampler.order!r} is not a column of the angle score "
                             f"file the scorer writes ({', '.join(ANGLE_COLUMNS)}): set train.score_file to a file "
                             "that has it (e.g. launchers/pass_rate.py's for pass_rate)")
        path = dist.broadcast_from_rank0(run_scoring(cfg, info))
    try:
        table = read_score_file(path, data.fingerprint)
    except ValueError as e:
        raise ValueError(f"config key 'train.score_file': {e}") from None
    made_with = table.metadata.get("model_fingerprint")
    if cfg.train.score_file is not None and made_with and not cfg.train.allow_score_file_from_other_model:
        ours = checkpoint_fingerprint(cfg.model.path)
        if made_with != ours:  # a ranking is one model's view of the data: another's is a different curriculum
            raise ValueError(
                f"config key 'train.score_file': {path} was made with another model ({table.metadata.get('model_path')}, "
                f"fingerprint {made_with[:12]}) than model.path {cfg.model.path} ({ours[:12]}): score the data with "
                "this model (leave train.score_file unset), or set train.allow_score_file_from_other_model=true")
    return os.path.abspath(path), table.columns
