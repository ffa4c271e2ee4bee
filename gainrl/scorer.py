"""The distributed prefill scorer: ranks a dataset by angle concentration (METHOD.md section 2).

Every rank tokenizes the dataset and plans the same length-sorted batches under a token
budget; rank 0 decides what is left to do (resume) and the batches are spread over ranks
by padded tokens. Each rank prefills its batches up to the hooked layer, reduces each
prompt to (C_intra, C_inter) from its segment sums, appends the results to its own
resume shard, and finally sends them to rank 0, which writes the score file.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from . import __version__, angles, dist, metrics, scores
from .config import Config
from .data import Row, dataset_fingerprint, load_rows
from .ds_config import DEFAULT_PERSIST_GIB, load_ds_config
from .inputs import ensure_inputs
from .jsonl import read_jsonl
from .models import (checkpoint_fingerprint, dtype_name, load_model_config, load_tokenizer, model_zero3_sizes,
                     pad_token_id, resolve_dtype, resolve_layer)
from .prefill import PrefillModel, load_prefill_model
from .preflight import check_writable
from .prompts import Prompt, PromptBuilder, build_prompts, problem_text

RECORD_FIELDS = ("id", "c_intra", "c_inter", "prompt_tokens", "num_p", "num_q", "flags")


# ---- planning: pure functions ----------------------------------------------------------------

def plan_batches(lengths: list[int], max_tokens: int) -> list[list[int]]:
    """Indices grouped longest first so that (rows x longest row) <= max_tokens per batch.
    A row longer than the budget gets a batch of its own."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches, current = [], []
    for i in order:
        if current and lengths[current[0]] * (len(current) + 1) > max_tokens:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def shard_batches(batches: list[list[int]], lengths: list[int], world_size: int) -> list[list[list[int]]]:
    """Give each batch to the rank with the fewest padded tokens so far (deterministic)."""
    shards = [[] for _ in range(world_size)]
    load = [0] * world_size
    for batch in sorted(batches, key=lambda b: -lengths[b[0]] * len(b)):
        rank = min(range(world_size), key=lambda r: (load[r], r))
        shards[rank].append(batch)
        load[rank] += lengths[batch[0]] * len(batch)
    return shards


def collate(prompts: list[Prompt], pad_id: int):
    """Right-padded input_ids and attention_mask [B, L], and span ends p_end, q_end [B]."""
    longest = max(p.num_tokens for p in prompts)
    input_ids = torch.full((len(prompts), longest), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), longest), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, : prompt.num_tokens] = torch.tensor(prompt.input_ids)
        attention_mask[row, : prompt.num_tokens] = 1
    p_end = torch.tensor([p.p_end for p in prompts])
    q_end = torch.tensor([p.q_end for p in prompts])
    return input_ids, attention_mask, p_end, q_end


def score_batch(model: PrefillModel, rows: list[Row], prompts: list[Prompt], pad_id: int) -> list[dict]:
    input_ids, attention_mask, p_end, q_end = collate(prompts, pad_id)
    hidden = model.hidden_at_layer(input_ids, attention_mask)
    p_end, q_end = p_end.to(hidden.device), q_end.to(hidden.device)
    s_p, s_q = angles.segment_sums(hidden, p_end, q_end)
    num_p, num_q = p_end, q_end - p_end
    c_intra, c_inter, flags = angles.concentration(s_p, s_q, num_p, num_q)
    return [{"id": row.id, "c_intra": float(ci), "c_inter": float(ce), "prompt_tokens": prompt.num_tokens,
             "num_p": prompt.p_end, "num_q": prompt.q_end - prompt.p_end, "flags": int(fl)}
            for row, prompt, ci, ce, fl in zip(rows, prompts, c_intra.tolist(), c_inter.tolist(), flags.tolist())]


# ---- resume state: <score file>.partial/ ------------------------------------------------------

class PartialResults:
    """Per-rank JSON-lines shards of finished rows, so a killed run loses only batches in flight."""

    def __init__(self, folder: str, key: str):
        self.folder, self.key = folder, key

    def load(self, resume: bool) -> dict:
        """Rank 0: the rows already scored, by id. Writes nothing: the folder is made by the first shard opened,
        and one that holds no scored row (a start that failed before its first batch) is removed."""
        if os.path.isdir(self.folder) and not resume:
            shutil.rmtree(self.folder)
        if not os.path.isdir(self.folder):
            return {}
        done = {}
        for name in sorted(os.listdir(self.folder)):
            if name.startswith("rank-") and name.endswith(".jsonl"):
                path = os.path.join(self.folder, name)
                for number, record in enumerate(read_jsonl(path), start=1):  # a torn last line is left out
                    if not (isinstance(record, dict) and all(k in record for k in RECORD_FIELDS)):
                        raise ValueError(f"{path}: record {number} is not a scorer record (fields "
                                         f"{list(RECORD_FIELDS)}); remove {self.folder} to score afresh")
                    done[record["id"]] = record
        if not done:
            self.remove()
            return {}
        key_file = os.path.join(self.folder, "key.json")
        old_key = None
        if os.path.isfile(key_file):
            with open(key_file, encoding="utf-8") as f:
                old_key = json.load(f).get("key")
        if old_key != self.key:
            raise ValueError(f"{self.folder} holds partial results of another (model, layer, template, dataset); "
                             "remove it or set scorer.output to another path")
        return done

    def remove_if_empty(self) -> None:
        """Rank 0, after a failure: the folder goes unless it holds a scored row (a failed start leaves nothing)."""
        shards = [os.path.join(self.folder, name) for name in os.listdir(self.folder)
                  if name.startswith("rank-")] if os.path.isdir(self.folder) else []
        if not any(os.path.getsize(path) for path in shards):
            self.remove()

    def open_shard(self, rank: int):
        """This rank's shard, opened for appending after cutting off a torn last line; the folder and its key
        file are made here, by every rank that scores."""
        os.makedirs(self.folder, exist_ok=True)
        scores.write_json_atomic(os.path.join(self.folder, "key.json"), {"key": self.key})
        path = os.path.join(self.folder, f"rank-{rank:05d}.jsonl")
        if os.path.exists(path):
            with open(path, "rb+") as f:
                data = f.read()
                f.truncate(data.rfind(b"\n") + 1)
        return open(path, "a", encoding="utf-8")

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


# ---- the job ------------------------------------------------------------------------------------

@dataclass
class ScoringPlan:
    rows: list[Row]
    prompts: list[Prompt]
    metadata: dict  # what identifies the score file
    score_path: str


def plan_job(cfg: Config, tokenizer, model_fingerprint: str, num_layers: int, dtype: str) -> ScoringPlan:
    loaded = load_rows(cfg.data)
    if loaded.num_skipped:
        metrics.log(f"skipped {loaded.num_skipped} invalid rows, e.g. {loaded.skipped_reasons[0]}")
    builder = PromptBuilder(tokenizer, cfg.prompt)
    prompts = build_prompts(builder, loaded.rows)
    too_long = [(row.id, prompt.num_tokens) for row, prompt in zip(loaded.rows, prompts)
                if prompt.num_tokens > cfg.scorer.max_prompt_tokens]
    if too_long:
        (row_id, tokens), more = too_long[0], len(too_long) - 1
        raise ValueError(f"config key 'scorer.max_prompt_tokens': row {row_id!r} of {loaded.source} has a prompt of "
                         f"{tokens} tokens, over the limit of {cfg.scorer.max_prompt_tokens}"
                         + (f" ({more} more rows do too: {', '.join(repr(r) for r, _ in too_long[1:6])}"
                            + (", ..." if more > 5 else "") + ")" if more else "")
                         + "; shorten or drop those rows, or raise scorer.max_prompt_tokens")
    layer = resolve_layer(cfg.scorer.layer, num_layers)
    metadata = {
        "model_path": os.path.abspath(cfg.model.path) if os.path.isdir(cfg.model.path) else cfg.model.path,
        "model_fingerprint": model_fingerprint, "model_num_layers": num_layers, "layer": layer, "dtype": dtype,
        "template_hash": builder.template_hash(), "dataset_source": loaded.source,
        "dataset_fingerprint": dataset_fingerprint(loaded.rows), "dataset_rows": len(loaded.rows),
        "dataset_skipped_rows": loaded.num_skipped,
    }
    if any(problem_text(row) != row.problem for row in loaded.rows):  # code rows: scored as the code task
        metadata["problem_format"] = "code"  # (absent for plain rows, so their keys are what they were)
    key = hashlib.sha256(json.dumps(metadata, sort_keys=True).encode()).hexdigest()
    metadata["key"] = key
    if cfg.scorer.output:
        score_path = cfg.scorer.output
    else:
        stem = os.path.splitext(os.path.basename(loaded.source.rstrip("/")))[0].replace("/", "_")
        model_name = os.path.basename(os.path.normpath(cfg.model.path))
        score_path = os.path.join(cfg.scorer.output_dir, f"{stem}.{model_name}.layer{layer}.{key[:12]}.scores.json")
    return ScoringPlan(rows=loaded.rows, prompts=prompts, metadata=metadata, score_path=score_path)


def package_versions() -> dict:
    import deepspeed
    import transformers
    return {"gainrl": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "deepspeed": deepspeed.__version__}


def finalize(cfg: Config, plan: ScoringPlan, records: dict, world_size: int, num_resumed: int,
             seconds: float) -> dict:
    """Rank 0: assemble the columns in row order, rank, summarise, write the file and plot. `seconds`:
    this job's wall time (rows resumed from an earlier job count only the time spent here)."""
    missing = [row.id for row in plan.rows if row.id not in records]
    if missing:
        raise RuntimeError(f"{len(missing)} rows were not scored (e.g. {missing[:3]})")
    ordered = [records[row.id] for row in plan.rows]
    columns = {name: [r[name] for r in ordered] for name in RECORD_FIELDS}
    score = angles.combined_score(torch.tensor(columns["c_intra"], dtype=torch.float64),
                                  torch.tensor(columns["c_inter"], dtype=torch.float64), cfg.scorer.w_inter).numpy()
    columns["score"] = score.tolist()
    columns["rank"] = scores.score_order(score).tolist()
    reference = None
    if cfg.scorer.reference_order:
        order = scores.load_reference_order(cfg.scorer.reference_order)
        positions = np.empty(len(order), dtype=np.int64)
        positions[order] = np.arange(len(order))
        indices = np.array([row.index for row in plan.rows])
        if indices.max() >= len(order):
            raise ValueError(f"config key 'scorer.reference_order': {cfg.scorer.reference_order} orders "
                             f"{len(order)} rows, but the dataset has row index {indices.max()}")
        reference = positions[indices]
    summary = scores.summarize(score, columns["prompt_tokens"], columns["flags"], reference)
    metadata = dict(plan.metadata, w_inter=cfg.scorer.w_inter, world_size=world_size, resumed_rows=num_resumed,
                    seconds=seconds, reference_order=cfg.scorer.reference_order, versions=package_versions(),
                    summary=summary)
    scores.write_score_file(plan.score_path, metadata, columns)
    if cfg.scorer.plot:
        from .plots import plot_scores
        plot_scores(plan.score_path.removesuffix(".json") + ".png", score, columns["prompt_tokens"],
                    os.path.basename(plan.score_path), summary["spearman_prompt_tokens"])
    return summary


def run_scoring(cfg: Config, info: dist.DistInfo) -> Optional[str]:
    """Score cfg.data with cfg.model; returns the score file path on rank 0 (None elsewhere)."""
    ensure_inputs(cfg)
    started = time.perf_counter()  # the job's cost: from here (the inputs exist) to the file
    tokenizer = load_tokenizer(cfg.model.path)
    model_config = load_model_config(cfg.model.path)
    dtype = dtype_name(resolve_dtype(cfg.model.dtype, info.device))
    plan = plan_job(cfg, tokenizer, checkpoint_fingerprint(cfg.model.path), model_config.num_hidden_layers, dtype)
    partial = PartialResults(plan.score_path + ".partial", plan.metadata["key"])

    done = None
    if dist.is_rank0():
        done = partial.load(cfg.scorer.resume)
        if cfg.scorer.resume and os.path.isfile(plan.score_path):  # a finished file: only re-rank
            table = scores.read_score_file(plan.score_path, plan.metadata["dataset_fingerprint"])
            done.update({rid: {k: table.columns[k][i] for k in RECORD_FIELDS} for i, rid in enumerate(table.columns["id"])})
    done_ids = dist.broadcast_from_rank0(set(done) if done is not None else None)
    remaining = [i for i, row in enumerate(plan.rows) if row.id not in done_ids]
    metrics.log(f"{len(plan.rows)} rows from {plan.metadata['dataset_source']}: {len(done_ids)} already scored, "
                f"{len(remaining)} to score on {info.world_size} rank(s) -> {plan.score_path}")

    if remaining:  # every rank writes its shard beside the score file
        key = "scorer.output" if cfg.scorer.output else "scorer.output_dir"
        dist.every_rank_checks(lambda: check_writable(os.path.dirname(os.path.abspath(plan.score_path)), key))
    try:
        new_records = _score_remaining(cfg, info, plan, partial, remaining, tokenizer, dtype)
    except BaseException:
        if dist.is_rank0():  # a start that failed before its first batch leaves no folder behind
            partial.remove_if_empty()
        raise
    return _finish(cfg, info, plan, partial, done, new_records, len(done_ids), started)


def _score_remaining(cfg: Config, info: dist.DistInfo, plan: ScoringPlan, partial: PartialResults,
                     remaining: list[int], tokenizer, dtype: str) -> list[dict]:
    """This rank's share of the rows not scored yet, each batch appended to its shard as it finishes."""
    new_records = []
    if remaining:
        lengths = [plan.prompts[i].num_tokens for i in remaining]
        batches = [[remaining[j] for j in batch] for batch in plan_batches(lengths, cfg.scorer.max_tokens_per_batch)]
        all_lengths = [p.num_tokens for p in plan.prompts]
        shards = shard_batches(batches, all_lengths, info.world_size)
        ds_config = None
        if cfg.scorer.ds_config:
            sizes = model_zero3_sizes(cfg.model.path, getattr(torch, dtype), DEFAULT_PERSIST_GIB)
            ds_config = load_ds_config(cfg.scorer.ds_config, sizes=sizes, dtype=dtype)
        model = load_prefill_model(cfg.model.path, cfg.scorer.layer, dtype=cfg.model.dtype,
                                   attn_implementation=cfg.model.attn_implementation, device=info.device,
                                   ds_config=ds_config)
        pad_id = pad_token_id(tokenizer)
        mine = shards[info.rank]
        # ZeRO-3 gathers parameters collectively: every rank runs the same number of forwards.
        num_steps = max(len(s) for s in shards) if model.partitioned else len(mine)
        bar = metrics.progress(sum(len(b) for b in mine), f"scoring (rank 0 of {info.world_size})")
        with partial.open_shard(info.rank) as shard:
            for step in range(num_steps):
                if step >= len(mine):
                    model.hidden_at_layer(torch.full((1, 1), pad_id), torch.ones((1, 1), dtype=torch.long))
                    continue
                batch = mine[step]
                records = score_batch(model, [plan.rows[i] for i in batch], [plan.prompts[i] for i in batch], pad_id)
                shard.write("".join(json.dumps(r) + "\n" for r in records))
                shard.flush()
                new_records.extend(records)
                bar.update(len(batch))
        bar.close()
        del model
    return new_records


def _finish(cfg: Config, info: dist.DistInfo, plan: ScoringPlan, partial: PartialResults, done: dict,
            new_records: list[dict], num_resumed: int, started: float) -> Optional[str]:
    """Rank 0: every rank's records with the resumed ones into the score file; returns its path (None elsewhere)."""
    gathered = dist.gather_to_rank0(new_records)
    if not dist.is_rank0():
        return None
    for records in gathered:
        done.update({r["id"]: r for r in records})
    summary = finalize(cfg, plan, done, info.world_size, num_resumed=num_resumed,
                       seconds=time.perf_counter() - started)
    partial.remove()
    metrics.log(f"wrote {plan.score_path}\n{scores.format_summary(summary)}")
    return plan.score_path
