"""The GRPO training loop with the GAIN-RL curriculum (DESIGN.md "one step, as data flows").

`train(cfg, info)` sets everything up (data and prompts checked before any model is built,
the ranking, the sampler, the policy, the reference model, one vLLM engine per rank), then
runs epochs: rank 0 draws the epoch's prompts and broadcasts them; each optimizer step takes
`train.prompts_per_step` of them, split evenly over the ranks, and `train_step` does, in
order: generate -> reward -> advantages -> old log-probs and angle -> policy update -> weight
push -> metrics. After the epoch the sampler moves mu from the epoch's accuracy and angle.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from . import dist, metrics
from .algo import STAT_KEYS, group_advantages, local_normalizer, policy_loss, wasted_group_fraction
from .algo.logprobs import align_to_scored
from .config import TrainRunConfig
from .data import Row, dataset_fingerprint, load_rows
from .engine import build_policy, build_reference, forward_logprobs, save_hf_model
from .inputs import ensure_inputs
from .prefill import resolve_dtype
from .prompts import Prompt, PromptBuilder
from .rewards.code import problem_text as code_problem_text
from .rewards.training import Reward, build_reward
from .rollout import RolloutEngine, check_weight_names, push_weights
from .sampler import build_sampler, draw_on_rank0_and_broadcast
from .tracking import Tracker
from .validation import load_validation_set, validation_accuracy
from .scorer import load_tokenizer


# ---- set-up: what can be wrong with the input fails here, before the policy is built -------------

@dataclass
class TrainData:
    rows: list[Row]
    prompts: list[Prompt]
    fingerprint: str


def build_prompts(cfg: TrainRunConfig, tokenizer, rows: list[Row]) -> list[Prompt]:
    builder = PromptBuilder(tokenizer, cfg.prompt)
    if cfg.reward.kind == "code":  # the task as evaluation shows it: a stub to complete, or a task and its first test
        return [builder.build(code_problem_text(row.problem, row.fields["test"], row.fields["test_type"]))
                for row in rows]
    return [builder.build(row.problem) for row in rows]


def load_train_data(cfg: TrainRunConfig, tokenizer, world_size: int) -> TrainData:
    loaded = load_rows(cfg.data)
    if loaded.num_skipped:
        metrics.log(f"skipped {loaded.num_skipped} invalid rows, e.g. {loaded.skipped_reasons[0]}")
    prompts = build_prompts(cfg, tokenizer, loaded.rows)
    too_long = [(row.id, p.num_tokens) for row, p in zip(loaded.rows, prompts)
                if p.num_tokens > cfg.rollout.max_prompt_tokens]
    if too_long:
        raise ValueError(f"config key 'rollout.max_prompt_tokens': {len(too_long)} prompts of {cfg.data.path} are "
                         f"longer than {cfg.rollout.max_prompt_tokens} tokens (e.g. row id {too_long[0][0]!r}: "
                         f"{too_long[0][1]} tokens); raise it or filter the data")
    num_rows, per_epoch, per_step = len(loaded.rows), cfg.sampler.prompts_per_epoch, cfg.train.prompts_per_step
    if per_epoch > num_rows:
        raise ValueError(f"config key 'sampler.prompts_per_epoch': {per_epoch} is more than the "
                         f"{num_rows} rows of {cfg.data.path}")
    if per_step % world_size:
        raise ValueError(f"config key 'train.prompts_per_step': {per_step} prompts cannot be split evenly "
                         f"over {world_size} ranks")
    return TrainData(loaded.rows, prompts, dataset_fingerprint(loaded.rows))


def load_ranking(cfg: TrainRunConfig, info: dist.DistInfo, data: TrainData) -> tuple[Optional[str], Optional[dict]]:
    """The score file and its columns, when the curriculum walks an order that comes from one."""
    from .scores import read_score_file
    if cfg.sampler.schedule == "uniform" or cfg.sampler.order == "random":
        return None, None
    path = cfg.train.score_file
    if path is None:  # score the training set first (resumable; a finished file is reused)
        from .scorer import run_scoring
        path = dist.broadcast_from_rank0(run_scoring(cfg, info))
    return os.path.abspath(path), read_score_file(path, data.fingerprint).columns


# ---- one optimizer step -----------------------------------------------------------------------------

@dataclass
class StepContext:
    cfg: TrainRunConfig
    info: dist.DistInfo
    data: TrainData
    tokenizer: object
    policy: object  # DeepSpeed engine
    probe: object
    reference: Optional[object]
    rollout: RolloutEngine
    reward: Reward  # reward.kind's: math or code
    weight_targets: dict  # learner parameter name -> vLLM parameter, checked once
    pad_id: int


@dataclass
class Sequences:
    """This rank's rollouts of one step, right-padded: prompt + response per row."""
    input_ids: torch.Tensor  # [N, T]
    attention_mask: torch.Tensor  # [N, T]
    response_mask: torch.Tensor  # [N, T - 1] over scored positions (1 = a response token's log-prob)
    response_lengths: list[int]


def pack_sequences(prompt_ids: list[list[int]], response_ids: list[list[int]], pad_id: int) -> Sequences:
    lengths = [len(p) + len(r) for p, r in zip(prompt_ids, response_ids)]
    longest = max(lengths)
    input_ids = torch.full((len(lengths), longest), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(lengths), longest), dtype=torch.long)
    response_mask = torch.zeros((len(lengths), longest), dtype=torch.float32)
    for row, (prompt, response) in enumerate(zip(prompt_ids, response_ids)):
        input_ids[row, : len(prompt) + len(response)] = torch.tensor(prompt + response)
        attention_mask[row, : len(prompt) + len(response)] = 1
        response_mask[row, len(prompt): len(prompt) + len(response)] = 1
    return Sequences(input_ids, attention_mask, align_to_scored(response_mask),
                     [len(r) for r in response_ids])


def micro_batches(num_rows: int, size: int) -> list[slice]:
    return [slice(start, min(start + size, num_rows)) for start in range(0, num_rows, size)]


def old_logprobs(policy, reference, probe, seqs: Sequences, batches: list[slice], device, temperature: float):
    """No-grad forward of the policy (log-probs and, from the same forward, the angle signal per sequence)
    and of the reference model (log-probs), micro-batch by micro-batch."""
    old_logp, ref_logp, angle = [], [], []
    policy.eval()
    with torch.no_grad():
        for mb in batches:
            ids, mask = seqs.input_ids[mb].to(device), seqs.attention_mask[mb].to(device)
            logp, _, ang = forward_logprobs(policy, ids, mask, probe, temperature=temperature)
            old_logp.append(logp)
            angle.append(ang)
            if reference is not None:
                ref_logp.append(forward_logprobs(reference, ids, mask, temperature=temperature)[0])
    policy.train()
    return old_logp, (ref_logp if reference is not None else None), torch.cat(angle)


def update_policy(policy, cfg: TrainRunConfig, seqs: Sequences, batches: list[slice], advantages: torch.Tensor,
                  old_logp: list, ref_logp: Optional[list], device, world_size: int) -> dict:
    """`grpo.updates_per_batch` optimizer steps, each accumulating the gradient of every micro-batch.

    Every micro-batch's loss on every rank is normalised by the step's global token (or
    sequence) count, so the summed gradient is the full-batch one whatever the number of ranks."""
    grpo = cfg.grpo
    local_count = sum(local_normalizer(seqs.response_mask[mb], grpo.aggregation) for mb in batches)
    normalizer = dist.all_reduce_sums({"count": local_count})["count"]
    sums = {key: 0.0 for key in (*STAT_KEYS, "loss")}
    nonfinite = skipped = 0
    for _ in range(grpo.updates_per_batch):
        nonfinite_before = nonfinite
        for k, mb in enumerate(batches):
            ids, mask = seqs.input_ids[mb].to(device), seqs.attention_mask[mb].to(device)
            logp, entropy, _ = forward_logprobs(policy, ids, mask, temperature=cfg.rollout.temperature,
                                                with_entropy=grpo.entropy_coef > 0)
            loss, stats = policy_loss(
                logp, old_logp[k], advantages[mb].to(device), seqs.response_mask[mb].to(device),
                clip_low=grpo.clip_low, clip_high=grpo.clip_high,
                ref_logp=ref_logp[k] if ref_logp is not None else None, kl_coef=grpo.kl_coef,
                entropy=entropy, entropy_coef=grpo.entropy_coef, aggregation=grpo.aggregation, normalizer=normalizer)
            # DeepSpeed averages gradients over the data-parallel ranks: undo it to keep the global sum
            policy.backward(loss * world_size, scale_wrt_gas=False)
            policy.step()  # DeepSpeed steps the optimizer at the last micro-batch only
            nonfinite += not torch.isfinite(loss).item()
            for key, value in stats.items():
                sums[key] += value
            sums["loss"] += loss.item()
        # non-finite gradients (from a NaN/inf loss on any rank) make DeepSpeed skip the optimizer step
        applied = policy.was_step_applied()
        nonfinite_anywhere = dist.all_reduce_sums({"n": nonfinite - nonfinite_before})["n"] > 0
        if nonfinite_anywhere and applied:  # only if the DeepSpeed config turned its overflow check off
            raise RuntimeError("DeepSpeed applied an optimizer step although a loss was not finite; the weights "
                               "may now hold NaN. Keep DeepSpeed's overflow checks on (bf16.check_grad_overflow).")
        skipped += not applied
    means = {key: value / grpo.updates_per_batch for key, value in sums.items()}
    return {**means, "nonfinite_losses": nonfinite, "skipped_updates": skipped}


def train_step(ctx: StepContext, prompt_indices: np.ndarray) -> dict:
    """One GRPO optimizer step on this rank's share of `prompt_indices` (the same array on every rank)."""
    cfg, info, group_size = ctx.cfg, ctx.info, ctx.cfg.grpo.group_size
    timer = metrics.PhaseTimer()
    share = len(prompt_indices) // info.world_size
    mine = prompt_indices[info.rank * share: (info.rank + 1) * share]
    prompts = [ctx.data.prompts[i] for i in mine]

    with timer("generate"):
        ctx.rollout.wake()
        groups = ctx.rollout.generate([p.input_ids for p in prompts], group_size)
        ctx.rollout.sleep()
    prompt_ids = [p.input_ids for p in prompts for _ in range(group_size)]
    response_ids = [c.token_ids for group in groups for c in group]

    with timer("reward"):
        texts = ctx.tokenizer.batch_decode(response_ids, skip_special_tokens=True)
        rows = [ctx.data.rows[i] for i in mine for _ in range(group_size)]
        rewards, num_errors, num_timeouts = ctx.reward(texts, rows)
        rewards = torch.tensor(rewards, dtype=torch.float32)
        advantages = group_advantages(rewards, group_size, cfg.grpo.scale_by_std)

    seqs = pack_sequences(prompt_ids, response_ids, ctx.pad_id)
    batches = micro_batches(len(response_ids), cfg.train.micro_batch_size)
    with timer("old_logprobs"):
        old_logp, ref_logp, angle = old_logprobs(ctx.policy, ctx.reference, ctx.probe, seqs, batches, info.device,
                                                 cfg.rollout.temperature)
    with timer("update"):
        sums = update_policy(ctx.policy, cfg, seqs, batches, advantages, old_logp, ref_logp, info.device,
                             info.world_size)
    grad_norm = ctx.policy.get_global_grad_norm()
    with timer("push"):
        ctx.rollout.wake(["weights"])  # the KV cache wakes at the next generate
        push_weights(ctx.policy, ctx.rollout, cfg.rollout.push_bucket_mib << 20, ctx.weight_targets)

    local = {
        "reward_sum": rewards.sum().item(), "correct": (rewards >= 1.0).sum().item(), "rollouts": len(rewards),
        "wasted_groups": wasted_group_fraction(rewards, group_size) * len(prompts), "groups": len(prompts),
        "response_tokens": sum(seqs.response_lengths), "angle_sum": angle.sum().item(),
        "reward_errors": num_errors, "reward_timeouts": num_timeouts, "tokens": seqs.attention_mask.sum().item(),
        **sums,
    }
    total = dist.all_reduce_sums(local)
    max_response_tokens = max(dist.all_gather(max(seqs.response_lengths)))
    num_rollouts, num_tokens = total["rollouts"], max(total["num_tokens"], 1.0)
    return {
        "reward_mean": total["reward_sum"] / num_rollouts,
        "accuracy": total["correct"] / num_rollouts,
        "wasted_group_fraction": total["wasted_groups"] / total["groups"],
        "response_tokens_mean": total["response_tokens"] / num_rollouts,
        "response_tokens_max": max_response_tokens,
        "angle_mean": total["angle_sum"] / num_rollouts,
        "loss": total["loss"],
        "kl_mean": total["kl_sum"] / num_tokens,
        "entropy_mean": total["entropy_sum"] / num_tokens if cfg.grpo.entropy_coef > 0 else None,
        "clip_fraction": (total["num_clipped_low"] + total["num_clipped_high"]) / num_tokens,
        "ratio_mean": total["ratio_sum"] / num_tokens,
        "grad_norm": float(grad_norm) if grad_norm is not None else None,
        "reward_errors": int(total["reward_errors"]), "reward_timeouts": int(total["reward_timeouts"]),
        "nonfinite_losses": int(total["nonfinite_losses"]), "skipped_updates": int(sums["skipped_updates"]),
        "tokens_per_s": total["tokens"] / sum(timer.seconds.values()),
        **{f"time_{phase}_s": seconds for phase, seconds in timer.seconds.items()},
    }


# ---- the run -----------------------------------------------------------------------------------

@dataclass
class LoopState:
    """Where the loop stands: what a checkpoint must hold, besides the model, optimizer and RNGs,
    for a resumed run to continue exactly as the uninterrupted one would have."""
    step: int = 0  # optimizer steps done
    epoch: int = 0  # the epoch in progress (or the next one, when `indices` is None)
    indices: Optional[list[int]] = None  # the epoch's draw, while the epoch is in progress
    step_in_epoch: int = 0  # steps of the epoch done
    correct: float = 0.0  # the epoch's sums for the sampler update: correct rollouts, angle, rollouts
    angle: float = 0.0
    rollouts: float = 0.0
    nonfinite_in_a_row: int = 0  # consecutive steps skipped for a NaN/inf loss
    skipped_steps: int = 0  # all steps skipped so far


# keys a resumed run may change; any other difference from the checkpoint's config is refused
RESUMABLE_CHANGES = ("train.epochs", "train.resume", "train.output_dir", "train.checkpoint_every", "train.keep_checkpoints",
                     "train.max_nonfinite_steps", "train.stop_file", "dist.", "log.", "reward.num_workers",
                     "rollout.cpu_kv_cache_gib", "rollout.gpu_memory_utilization", "scorer.")


def config_dict(cfg: TrainRunConfig) -> dict:
    from omegaconf import OmegaConf
    return OmegaConf.to_container(OmegaConf.structured(cfg))


def changed_keys(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested config dicts."""
    keys = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}")
    return keys


def resume_point(cfg: TrainRunConfig) -> Optional[str]:
    """The checkpoint to continue from (train.resume), or None for a fresh run. Rank 0 looks (the ranks
    of a shared file system may see it at different moments) and every rank gets its answer or error."""
    def look() -> tuple[Optional[str], Optional[str]]:
        try:
            return find_resume_point(cfg), None
        except ValueError as e:
            return None, str(e)
    path, error = dist.broadcast_from_rank0(look() if dist.is_rank0() else None)
    if error is not None:
        raise ValueError(error)
    return path


def find_resume_point(cfg: TrainRunConfig) -> Optional[str]:
    from . import checkpoint
    out = cfg.train.output_dir
    path = checkpoint.find_resume_checkpoint(cfg.train.resume, out)
    existing = checkpoint.complete_checkpoints(out)
    if path is None and existing:
        raise ValueError(f"config key 'train.resume': {out} holds checkpoints of an earlier run; "
                         "continue it with train.resume=auto or choose another train.output_dir")
    if path is None:
        return None
    step = checkpoint.read_train_state(path)["step"]
    later = [p for p in existing if checkpoint.read_train_state(p)["step"] > step]
    if later:  # a second history in the same folder would mix with the first one's checkpoints and logs
        raise ValueError(f"config key 'train.resume': {out} holds checkpoints after {path} ({later[-1]}); "
                         "to branch from it, set another train.output_dir")
    changed = [key for key in changed_keys(checkpoint.read_train_state(path)["config"], config_dict(cfg))
               if not key.startswith(RESUMABLE_CHANGES)]
    if changed:
        raise ValueError(f"config key '{changed[0]}': differs from the config of checkpoint {path} "
                         f"(all that differ: {changed}); resume with the same settings or start a new "
                         "train.output_dir")
    return path


def write_run_file(cfg: TrainRunConfig, score_file: Optional[str], num_rows: int, title: str) -> None:
    """<output_dir>/run.json: what the plots need besides the metrics (the ranking's file, N) and the config."""
    if not dist.is_rank0():
        return
    run = {"score_file": score_file, "num_rows": num_rows, "title": title, "schedule": cfg.sampler.schedule,
           "order": cfg.sampler.order, "config": config_dict(cfg)}
    os.makedirs(cfg.train.output_dir, exist_ok=True)
    with open(os.path.join(cfg.train.output_dir, "run.json"), "w", encoding="utf-8") as f:
        json.dump(run, f, indent=1)


def stop_file(cfg: TrainRunConfig) -> str:
    return cfg.train.stop_file or os.path.join(cfg.train.output_dir, "STOP")


def stop_requested(cfg: TrainRunConfig) -> bool:
    """Rank 0 looks for the stop file (slurm's time-limit signal touches it); every rank gets the answer."""
    return bool(dist.broadcast_from_rank0(dist.is_rank0() and os.path.exists(stop_file(cfg))))


def train(cfg: TrainRunConfig, info: dist.DistInfo) -> dict:
    """Run the configured training (or continue it from a checkpoint); returns the last step's metrics."""
    from . import checkpoint
    if not os.path.isfile(cfg.train.ds_config):  # before the minutes of building, scoring and loading
        raise ValueError(f"config key 'train.ds_config': DeepSpeed config not found: {cfg.train.ds_config}")
    resume_from = resume_point(cfg)
    ensure_inputs(cfg)
    tokenizer = load_tokenizer(cfg.model.path)
    data = load_train_data(cfg, tokenizer, info.world_size)
    heldout = None
    if cfg.validation.path is not None:
        heldout = load_validation_set(cfg, lambda rows: build_prompts(cfg, tokenizer, rows))
    score_file, columns = load_ranking(cfg, info, data)
    sampler = build_sampler(cfg.sampler, columns, len(data.rows), seed=cfg.seed)

    group_size, per_step = cfg.grpo.group_size, cfg.train.prompts_per_step
    rollouts_per_rank = per_step // info.world_size * group_size
    accumulation = -(-rollouts_per_rank // cfg.train.micro_batch_size)
    steps_per_epoch = cfg.sampler.prompts_per_epoch // per_step
    torch.manual_seed(cfg.seed)
    metrics.log(f"{len(data.rows)} rows; {cfg.train.epochs} epochs x {steps_per_epoch} steps of {per_step} prompts "
                f"x {group_size} rollouts on {info.world_size} rank(s); {accumulation} micro-batches per step")

    policy, probe = build_policy(cfg, info.device, accumulation)
    reference = build_reference(cfg, info.device)
    dtype = str(resolve_dtype(cfg.model.dtype, info.device)).removeprefix("torch.")
    rollout = RolloutEngine(cfg.model.path, cfg.rollout, dtype=dtype, seed=cfg.seed,  # the engine adds the rank
                            max_model_len=cfg.rollout.max_prompt_tokens + cfg.rollout.max_new_tokens)
    names = [name for name, _ in policy.module.named_parameters(remove_duplicate=False)]  # tied names too
    weight_targets = check_weight_names(names, rollout)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    reward = build_reward(cfg.reward)
    ctx = StepContext(cfg, info, data, tokenizer, policy, probe, reference, rollout, reward, weight_targets, pad_id)

    state = LoopState()
    if resume_from is not None:
        restored = checkpoint.load(policy, resume_from)
        if restored["dataset_fingerprint"] != data.fingerprint:
            raise ValueError(f"config key 'data.path': {cfg.data.path} is not the data checkpoint {resume_from} "
                             "was trained on (its rows differ)")
        state = LoopState(**restored["loop"])
        sampler.load_state_dict(restored["sampler"])
        push_weights(policy, rollout, cfg.rollout.push_bucket_mib << 20, weight_targets)  # vLLM had the start weights
        checkpoint.restore_rng(resume_from)  # last: vLLM's start-up seeds the global generators
        metrics.log(f"resumed from {resume_from}: step {state.step}, epoch {state.epoch}")

    saved = {"step": state.step if resume_from is not None else None, "path": resume_from}

    def save_checkpoint() -> str:
        if saved["step"] != state.step:  # once per step: the end of training may fall on a periodic one
            train_state = {"step": state.step, "loop": vars(state), "sampler": sampler.state_dict(),
                           "dataset_fingerprint": data.fingerprint, "world_size": info.world_size,
                           "config": config_dict(cfg)}
            saved["path"] = checkpoint.save(policy, tokenizer, cfg.train.output_dir, train_state,
                                            cfg.train.keep_checkpoints)
            saved["step"] = state.step
        return saved["path"]

    out = cfg.train.output_dir
    title = f"{cfg.model.path} on {cfg.data.path}: {cfg.sampler.schedule} / {cfg.sampler.order}"
    write_run_file(cfg, score_file, len(data.rows), title)
    tracker = Tracker(out, cfg.log, config_dict(cfg), resume_step=state.step if resume_from is not None else None)
    keep_until = (lambda r: r["step"] <= state.step) if resume_from is not None else None
    metrics_file = metrics.JsonLinesFile(os.path.join(out, "metrics.jsonl"), keep=keep_until)
    draws_file = metrics.JsonLinesFile(os.path.join(out, "draws.jsonl"),  # what each epoch trained on
                                       keep=None if resume_from is None else
                                       (lambda r: r["epoch"] < state.epoch + (state.indices is not None)))
    validation_file = metrics.JsonLinesFile(os.path.join(out, "validation.jsonl"),
                                            keep=None if resume_from is None else
                                            (lambda r: r["epoch"] <= state.epoch))

    def validate(epochs_done: int) -> None:
        if heldout is None:
            return
        accuracy, num_rows = validation_accuracy(heldout, rollout, tokenizer, reward)
        # as after a step: the KV cache freed before the learner's next gather (sleep drops the weights, too)
        rollout.sleep()
        rollout.wake(["weights"])
        push_weights(policy, rollout, cfg.rollout.push_bucket_mib << 20, weight_targets)
        validation_file.write({"epoch": epochs_done, "step": state.step, "accuracy": accuracy, "num_rows": num_rows})
        tracker.log({"validation_accuracy": accuracy}, state.step)
        metrics.log(f"validation after {epochs_done} epochs (step {state.step}): greedy accuracy {accuracy:.3f} "
                    f"on {num_rows} held-out rows")

    bar = metrics.progress(cfg.train.epochs * steps_per_epoch, "training", unit="step")
    bar.update(state.step)
    record, start = {}, time.time()
    try:
        if resume_from is None:
            validate(0)
        for epoch in range(state.epoch, cfg.train.epochs):
            if state.indices is None:  # a new epoch: rank 0 draws, every rank trains on its draw
                indices = draw_on_rank0_and_broadcast(sampler)
                dist.check_same_on_every_rank(indices, "the epoch's prompt indices")
                positions = sampler.last_positions  # drawn on rank 0, which alone writes the file
                draws_file.write({"epoch": epoch, "mu": sampler.mu, "indices": indices.tolist(),
                                  "positions": None if positions is None else positions.tolist()})
                state = LoopState(step=state.step, epoch=epoch, indices=indices.tolist(),
                                  skipped_steps=state.skipped_steps, nonfinite_in_a_row=state.nonfinite_in_a_row)
            chunks = np.split(np.asarray(state.indices, dtype=np.int64), steps_per_epoch)
            for chunk in chunks[state.step_in_epoch:]:
                record = train_step(ctx, chunk)
                state.step += 1
                state.step_in_epoch += 1
                rollouts = len(chunk) * group_size
                state.correct += record["accuracy"] * rollouts
                state.angle += record["angle_mean"] * rollouts
                state.rollouts += rollouts
                skipped = record["skipped_updates"] > 0 or record["nonfinite_losses"] > 0
                state.nonfinite_in_a_row = state.nonfinite_in_a_row + 1 if skipped else 0
                state.skipped_steps += skipped
                record = {"step": state.step, "epoch": epoch, "mu": sampler.mu, **record,  # moves after the epoch
                          "skipped_steps": state.skipped_steps, "elapsed_s": time.time() - start}
                metrics_file.write(record)
                tracker.log(record, state.step)
                if skipped:
                    metrics.log(f"step {state.step} skipped: non-finite loss or gradients "
                                f"({state.nonfinite_in_a_row} in a row, {state.skipped_steps} in all)")
                bar.update(1)
                bar.set_postfix(reward=f"{record['reward_mean']:.3f}", mu="-" if sampler.mu is None else f"{sampler.mu:.0f}")
                diverged = state.nonfinite_in_a_row >= cfg.train.max_nonfinite_steps
                stop = stop_requested(cfg)
                every = cfg.train.checkpoint_every
                if stop or diverged or (every and state.step % every == 0):
                    saved_at = save_checkpoint()
                if diverged:
                    raise RuntimeError(f"{state.nonfinite_in_a_row} steps in a row had a NaN or inf loss (step "
                                       f"{state.step}); stopped after saving {saved_at}. Lower optim.lr, check the "
                                       "data, or raise train.max_nonfinite_steps")
                if stop:
                    if dist.is_rank0():
                        os.remove(stop_file(cfg))  # honoured: a resumed run must not stop on it again
                    metrics.log(f"stop requested: checkpoint {saved_at} saved at step {state.step}; "
                                "continue with train.resume=auto")
                    return record
            sampler.update(state.correct / state.rollouts, state.angle / state.rollouts)
            state = LoopState(step=state.step, epoch=epoch + 1, skipped_steps=state.skipped_steps,
                              nonfinite_in_a_row=state.nonfinite_in_a_row)
            if (epoch + 1) % cfg.validation.every_epochs == 0 or epoch + 1 == cfg.train.epochs:
                validate(epoch + 1)
        save_checkpoint()
        final_dir = os.path.join(out, "final")
        save_hf_model(policy, tokenizer, final_dir)
        metrics_file.close()
        draws_file.close()
        if dist.is_rank0() and cfg.log.plots:
            from .plots import plot_run
            plot_run(out)
        metrics.log(f"done: {state.step} steps; metrics in {metrics_file.path}, plots in {out}/plots, "
                    f"final weights in {final_dir}")
    finally:
        bar.close()
        metrics_file.close()
        draws_file.close()
        validation_file.close()
        tracker.close()
        reward.close()
        rollout.close()  # vLLM's shutdown destroys the default process group: nothing collective after it
    return record
