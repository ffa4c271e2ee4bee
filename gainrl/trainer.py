"""The GRPO training loop with the GAIN-RL curriculum (DESIGN.md "one step, as data flows").

`build_run(cfg, info)` sets everything up (data and prompts checked before any model is built,
the ranking, the sampler, the policy, the reference model, one vLLM engine per rank, and a
checkpoint's state when resuming); `run_training(run)` runs the epochs: rank 0 draws the epoch's
prompts and broadcasts them; each optimizer step takes `train.prompts_per_step` of them, split
evenly over the ranks, and `train_step` does, in order: generate -> reward -> advantages -> old
log-probs and angle -> policy update -> weight push -> metrics. After the epoch the sampler moves
mu from the epoch's accuracy and angle. The loop sees the policy and the rollout engine only
through the `Policy` and `Rollout` protocols (gainrl.protocols; tests drive it with fakes).
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

from . import checkpoint, dist, metrics
from .algo import (STAT_KEYS, Sequences, group_advantages, local_normalizer, logprob_gap, micro_batches,
                   min_micro_batches, pack_sequences, policy_loss, token_budget_micro_batches, wasted_group_fraction)
from .groups import collect_groups
from .config import GrpoConfig, TrainConfig, TrainRunConfig, config_dict
from .engine import build_policy, build_reference
from .inputs import ensure_inputs
from .metric_names import phase_seconds_key
from .plan import memory_plan
from .preflight import check_memory_split, check_tensor_parallel, check_writable
from .models import dtype_name, load_tokenizer, pad_token_id, resolve_dtype
from .prompts import PromptBuilder
from .protocols import Policy, Rollout
from .rescore import rescore
from .rewards.training import Reward, build_reward
from .rollout import RolloutEngine
from .sampler import Sampler, build_sampler, draw_on_rank0_and_broadcast, observe_on_rank0
from .train_data import TrainData, load_ranking, load_train_data
from .validation import ValidationSet, Validator, load_validation_set
from .vllm_logs import send_vllm_logs_to


# ---- where the loop stands ------------------------------------------------------------------------

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
    trained_rollouts: float = 0.0  # the epoch's rollouts trained on (the angle's weights; dynamic sampling
    extra_rows: list[int] = field(default_factory=list)  # generates more): and the rows its extra rounds drew

    def start_epoch(self, epoch: int, indices: Optional[list[int]]) -> None:
        """Epoch `epoch` with its draw (None: not drawn yet); its step count and sums start at 0."""
        self.epoch, self.indices = epoch, indices
        self.step_in_epoch, self.correct, self.angle, self.rollouts = 0, 0.0, 0.0, 0.0
        self.trained_rollouts, self.extra_rows = 0.0, []

    def remaining_steps(self, steps_per_epoch: int) -> list[np.ndarray]:
        """The prompt indices of each step of the epoch not done yet."""
        chunks = np.split(np.asarray(self.indices, dtype=np.int64), steps_per_epoch)
        return chunks[self.step_in_epoch:]

    def account(self, record: dict) -> bool:
        """Count one finished step (train_step's record); returns whether its update was skipped."""
        self.step += 1
        self.step_in_epoch += 1
        self.correct += record["accuracy"] * record["num_rollouts"]  # of all rollouts generated
        self.angle += record["angle_mean"] * record["num_trained_rollouts"]  # of those trained on
        self.rollouts += record["num_rollouts"]
        self.trained_rollouts += record["num_trained_rollouts"]
        skipped = record["num_skipped_updates"] > 0 or record["num_nonfinite_losses"] > 0
        self.nonfinite_in_a_row = self.nonfinite_in_a_row + 1 if skipped else 0
        self.skipped_steps += skipped
        return skipped

    def end_epoch(self) -> tuple[float, float]:
        """Close the epoch: its accuracy and mean angle signal (what moves mu)."""
        accuracy, angle = self.correct / self.rollouts, self.angle / self.trained_rollouts
        self.start_epoch(self.epoch + 1, None)
        return accuracy, angle


@dataclass
class Run:
    """Everything the loop works with, built once (build_run), or from fakes by the tests."""
    cfg: TrainRunConfig
    data: TrainData
    tokenizer: object
    sampler: Sampler
    policy: Policy
    reference: Optional[Policy]  # for the KL term (only `logprobs` is used), or None
    rollout: Rollout
    reward: Reward  # reward.kind's: math or code
    pad_id: int
    heldout: Optional[ValidationSet] = None
    score_file: Optional[str] = None
    resumed_from: Optional[str] = None
    state: LoopState = field(default_factory=LoopState)

    def close(self) -> None:
        self.reward.close()
        self.rollout.close()  # vLLM's shutdown destroys the default process group: nothing collective after it


def build_run(cfg: TrainRunConfig, info: dist.DistInfo) -> Run:
    if not os.path.isfile(cfg.train.ds_config):  # before the minutes of building, scoring and loading
        raise ValueError(f"config key 'train.ds_config': DeepSpeed config not found: {cfg.train.ds_config}")
    check_tensor_parallel(cfg.rollout.tensor_parallel_size, info.world_size, info.local_world_size)
    dist.every_rank_checks(lambda: check_writable(cfg.train.output_dir, "train.output_dir"))  # each rank writes there
    resume_from = checkpoint.resume_point(cfg)  # its files checked, and no other run's results in the folder
    ensure_inputs(cfg)
    plan = None
    if info.device.type == "cuda":  # the memory plan, and a vLLM share that leaves the learner no room refused
        plan = print_memory_plan(cfg, info)
    tokenizer = load_tokenizer(cfg.model.path)
    data = load_train_data(cfg, tokenizer, info.world_size)
    heldout = None
    if cfg.validation.path is not None:
        heldout = load_validation_set(cfg, PromptBuilder(tokenizer, cfg.prompt))
    score_file, columns = load_ranking(cfg, info, data)
    sampler = build_sampler(cfg.sampler, columns, len(data.rows), seed=cfg.seed)

    group_size, per_step = cfg.grpo.group_size, cfg.train.prompts_per_step
    accumulation = -(-(per_step // info.world_size * group_size) // cfg.train.micro_batch_size)
    torch.manual_seed(cfg.seed)
    split = f"{accumulation} micro-batches of {cfg.train.micro_batch_size}" \
        if cfg.train.max_tokens_per_micro_batch is None else \
        f"micro-batches of up to {cfg.train.max_tokens_per_micro_batch} tokens (rows sorted by length)"
    old_logp = "a no-grad forward" if cfg.grpo.updates_per_batch > 1 else "the update's forward (one update per batch)"
    metrics.log(f"{len(data.rows)} rows; {cfg.train.epochs} epochs x {cfg.sampler.prompts_per_epoch // per_step} "
                f"steps of {per_step} prompts x {group_size} rollouts on {info.world_size} rank(s); "
                f"{split} per rank and step; old log-probs from {old_logp}")
    policy = build_policy(cfg, info.device, accumulation)
    # the reference model whole on every rank where the plan says it fits (on CPU: the small models run there)
    reference = build_reference(cfg, info.device, replicate=plan.reference_replicated if plan is not None
                                else info.device.type != "cuda")
    if cfg.rollout.offload_learner:
        metrics.log("rollout.offload_learner: " + ", ".join(policy.offload()) + " go to CPU memory while vLLM "
                    "generates" + ("" if cfg.optim.fused_adam else " (the optimizer states stay: DeepSpeed moves "
                                   "them for FusedAdam only, optim.fused_adam=true)"))  # vLLM starts in the room
    send_vllm_logs_to(os.path.join(cfg.train.output_dir, "logs"))  # the console keeps each warning once
    try:
        rollout = RolloutEngine(cfg.model.path, cfg.rollout, seed=cfg.seed,  # the engine adds its group index
                                dtype=dtype_name(resolve_dtype(cfg.model.dtype, info.device)),
                                max_model_len=cfg.rollout.max_prompt_tokens + cfg.rollout.max_new_tokens,
                                weights_from_learner=True)  # no read of the weights from disk on every rank
    finally:
        if cfg.rollout.offload_learner:
            policy.reload()
    run = Run(cfg, data, tokenizer, sampler, policy, reference, rollout, build_reward(cfg.reward),
              pad_token_id(tokenizer), heldout, score_file)
    if resume_from is not None:
        restore(run, resume_from)
    else:  # names that do not load are an error here, before any step
        rollout.sync_weights(policy.module)
    return run


def print_memory_plan(cfg: TrainRunConfig, info: dist.DistInfo):
    """The per-GPU memory budget (gainrl.plan) of this run on this GPU, then the start-up check of the split;
    returns the plan (None when the model's shape cannot be read yet)."""
    try:
        plan = memory_plan(cfg, world_size=info.world_size, gpus_per_node=info.local_world_size,
                           gpu_memory_bytes=torch.cuda.get_device_properties(info.device).total_memory)
    except ValueError as e:  # a hub model not downloaded yet and not in the bundled shapes, a MoE config
        metrics.log(f"memory plan skipped: {e}")
        return None
    for line in plan.lines():
        metrics.log(line)
    check_memory_split(plan, cfg.rollout.gpu_memory_utilization)
    return plan


def restore(run: Run, path: str) -> None:
    """Continue from checkpoint `path`: the policy (weights, optimizer, scheduler), the loop's and the
    sampler's state, the engine's weights, and last the RNGs (vLLM's start-up seeds the global generators)."""
    restored = checkpoint.load(run.policy, path)
    if restored["dataset_fingerprint"] != run.data.fingerprint:
        raise ValueError(f"config key 'data.path': {run.cfg.data.path} is not the data checkpoint {path} "
                         "was trained on (its rows differ)")
    loop = restored["loop"]
    loop.setdefault("trained_rollouts", loop["rollouts"])  # saved before dynamic sampling: every rollout trained
    run.state = LoopState(**loop)
    run.sampler.load_state_dict(restored["sampler"])
    run.rollout.sync_weights(run.policy.module)  # the engine was built without weights
    checkpoint.restore_rng(path)
    run.resumed_from = path
    metrics.log(f"resumed from {path}: step {run.state.step}, epoch {run.state.epoch}")


# ---- one optimizer step -----------------------------------------------------------------------------

@contextlib.contextmanager
def learner_offloaded(run: Run, timer: Optional[metrics.PhaseTimer] = None):
    """With rollout.offload_learner, the learner's state in CPU memory while the body runs (vLLM generating),
    back on the GPU after it; the moves are timed as the "offload" phase."""
    if not run.cfg.rollout.offload_learner:
        yield
        return
    with timer("offload") if timer is not None else contextlib.nullcontext():
        run.policy.offload()
    try:
        yield
    finally:
        with timer("offload") if timer is not None else contextlib.nullcontext():
            run.policy.reload()


def plan_micro_batches(seqs: Sequences, train: TrainConfig) -> list[list[int]]:
    """This rank's micro-batches (rows of `seqs`): `train.micro_batch_size` rows each, or cut to
    `train.max_tokens_per_micro_batch`, as many on every rank as the rank that needs the most
    (ZeRO-3 gathers every layer's weights collectively: every rank must run every forward)."""
    if train.max_tokens_per_micro_batch is None:
        return micro_batches(len(seqs.response_lengths), train.micro_batch_size)
    lengths = seqs.attention_mask.sum(dim=1).tolist()
    budget = train.max_tokens_per_micro_batch
    most = max(dist.all_gather(min_micro_batches(lengths, budget)))
    return token_budget_micro_batches(lengths, budget, most)


def no_grad_logprobs(policy: Optional[Policy], reference: Optional[Policy], parts: list[Sequences],
                     temperature: float):
    """No-grad forwards, micro-batch by micro-batch: the policy's log-probs and, from the same forward, the
    angle signal per sequence (the "old" log-probs; None without `policy`), and the reference's (None
    without one)."""
    old_logp, ref_logp, angle = [], [], []
    if policy is not None:
        policy.train(False)
    with torch.no_grad():
        for part in parts:
            if policy is not None:
                logp, _, ang = policy.logprobs(part.input_ids, part.attention_mask, temperature=temperature,
                                               with_angle=True)
                old_logp.append(logp)
                angle.append(ang)
            if reference is not None:
                ref_logp.append(reference.logprobs(part.input_ids, part.attention_mask, temperature=temperature)[0])
    if policy is not None:
        policy.train(True)
    return (old_logp or None), (ref_logp or None), (angle or None)


def update_policy(policy: Policy, grpo: GrpoConfig, temperature: float, parts: list[Sequences],
                  advantages: list[torch.Tensor], old_logp: Optional[list], ref_logp: Optional[list]) -> tuple:
    """`grpo.updates_per_batch` optimizer steps, each accumulating the gradient of every micro-batch.
    Returns (the loss terms' sums, and with `old_logp` None: the log-probs and angle signal of the first
    pass's forward per micro-batch, which are the old ones; else None).

    Every micro-batch's loss on every rank is normalised by the step's global token (or
    sequence) count, so the summed gradient is the full-batch one whatever the number of ranks
    and however the rows are cut into micro-batches. Without `old_logp` (one update per batch)
    the old log-probs are the first pass's own, detached: the ratio is exactly 1."""
    local_count = sum(local_normalizer(part.response_mask, grpo.aggregation) for part in parts)
    normalizer = dist.all_reduce_sums({"count": local_count})["count"]
    sums = {key: 0.0 for key in (*STAT_KEYS, "loss")}
    nonfinite = skipped = 0
    first_logp, first_angle = [], []
    for update in range(grpo.updates_per_batch):
        nonfinite_before = nonfinite
        for k, part in enumerate(parts):
            from_this_forward = old_logp is None and update == 0
            logp, entropy, angle = policy.logprobs(part.input_ids, part.attention_mask, temperature=temperature,
                                                   with_entropy=grpo.entropy_coef > 0, with_angle=from_this_forward)
            if from_this_forward:
                first_logp.append(logp.detach())
                first_angle.append(angle)
            loss, stats = policy_loss(
                logp, first_logp[k] if old_logp is None else old_logp[k], advantages[k].to(policy.device),
                part.response_mask.to(policy.device), clip_low=grpo.clip_low, clip_high=grpo.clip_high,
                ref_logp=ref_logp[k] if ref_logp is not None else None, kl_coef=grpo.kl_coef,
                entropy=entropy, entropy_coef=grpo.entropy_coef, aggregation=grpo.aggregation, normalizer=normalizer)
            policy.backward(loss, last=k == len(parts) - 1)
            policy.step()
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
    sums = {**means, "num_nonfinite_losses": nonfinite, "num_skipped_updates": skipped}
    return sums, ((first_logp, first_angle) if old_logp is None else None)


def train_step(run: Run, prompt_indices: np.ndarray,
               stop_reason: Callable[[], Optional[str]] = lambda: None) -> Optional[dict]:
    """One GRPO optimizer step on this rank's share of `prompt_indices` (the same array on every rank).
    `stop_reason` is asked once the rollouts are graded: a reason returns None with the step undone (nothing
    of it kept: the loop's and the sampler's state are as before it)."""
    cfg, group_size, world_size = run.cfg, run.cfg.grpo.group_size, dist.get_world_size()
    timer = metrics.PhaseTimer()
    share = len(prompt_indices) // world_size
    mine = prompt_indices[dist.get_rank() * share: (dist.get_rank() + 1) * share]

    taken = list(run.state.indices or []) + run.state.extra_rows  # the epoch's rows so far
    with learner_offloaded(run, timer):
        batch, generated = collect_groups(run, mine, run.sampler, taken, timer)  # generate and reward phases
    if stop_reason() is not None:  # a long step's generation is over: stop before the update
        return None
    run.state.extra_rows = taken[len(run.state.indices or []):]
    observe_on_rank0(run.sampler, generated.outcomes())
    prompt_ids = [p for p in batch.prompt_ids for _ in range(group_size)]
    response_ids = [c.token_ids for group in batch.completions for c in group]
    rewards = batch.rewards
    advantages = group_advantages(rewards, group_size, cfg.grpo.scale_by_std)

    seqs = pack_sequences(prompt_ids, response_ids, run.pad_id,
                          [c.logprobs for group in batch.completions for c in group])
    rows = plan_micro_batches(seqs, cfg.train)
    parts, part_advantages = [seqs.select(r) for r in rows], [advantages[r] for r in rows]
    separate = cfg.grpo.updates_per_batch > 1  # one update: its forward gives the old log-probs (ratio 1)
    old_logp = ref_logp = angles = None
    if separate or run.reference is not None:
        with timer("old_logprobs"):
            old_logp, ref_logp, angles = no_grad_logprobs(run.policy if separate else None, run.reference, parts,
                                                          cfg.rollout.temperature)
    with timer("update"):
        sums, first_pass = update_policy(run.policy, cfg.grpo, cfg.rollout.temperature, parts, part_advantages,
                                         old_logp, ref_logp)
    learner_logp, angles = (old_logp, angles) if separate else first_pass
    angle = torch.cat(angles)
    gaps = [logprob_gap(learner_logp[k], part.sampled_logp, part.response_mask) for k, part in enumerate(parts)]
    grad_norm = run.policy.grad_norm()
    with timer("push"):
        run.rollout.sync_weights(run.policy.module)

    # reward and accuracy: of every rollout generated (dynamic sampling's dropped groups too: what the
    # draw's prompts are like); the response lengths, the angle and the waste: of the batch trained on
    informative, group_tokens = generated.informative(), generated.response_tokens()
    local = {
        "reward_sum": generated.rewards.sum().item(), "correct": (generated.rewards >= 1.0).sum().item(),
        "generated": len(generated.rewards), "rollouts": len(rewards), "groups": len(batch),
        "wasted_groups": wasted_group_fraction(rewards, group_size) * len(batch),
        "generated_groups": len(generated), "zero_variance_groups": informative.count(False),
        "rollout_tokens": sum(group_tokens),
        "zero_variance_tokens": sum(t for t, ok in zip(group_tokens, informative) if not ok),
        "response_tokens": sum(seqs.response_lengths), "angle_sum": angle.sum().item(),
        "num_reward_errors": generated.num_errors, "num_reward_timeouts": generated.num_timeouts,
        "tokens": seqs.attention_mask.sum().item(), "padded_tokens": sum(part.input_ids.numel() for part in parts),
        "gap_sum": sum(g[0] for g in gaps),
        "gap_count": sum(g[1] for g in gaps), **sums,
    }
    total = dist.all_reduce_sums(local)
    maxima = dist.all_gather((max(seqs.response_lengths), max(g[2] for g in gaps)))
    max_response_tokens, gap_max = max(m[0] for m in maxima), max(m[1] for m in maxima)
    num_rollouts, num_tokens = total["rollouts"], max(total["num_tokens"], 1.0)
    return {
        "reward_mean": total["reward_sum"] / total["generated"],
        "accuracy": total["correct"] / total["generated"],
        "wasted_group_fraction": total["wasted_groups"] / total["groups"],
        "num_rollouts": int(total["generated"]),
        "num_extra_rollouts": int(total["generated"] - num_rollouts),
        "num_trained_rollouts": int(num_rollouts),
        "rollout_tokens": int(total["rollout_tokens"]),
        "num_groups": int(total["generated_groups"]),
        "num_zero_variance_groups": int(total["zero_variance_groups"]),
        "zero_variance_tokens": int(total["zero_variance_tokens"]),
        "response_tokens_mean": total["response_tokens"] / num_rollouts,
        "response_tokens_max": max_response_tokens,
        "angle_mean": total["angle_sum"] / num_rollouts,
        "loss": total["loss"],
        "kl_mean": total["kl_sum"] / num_tokens,
        "entropy_mean": total["entropy_sum"] / num_tokens if cfg.grpo.entropy_coef > 0 else None,
        "clip_fraction": (total["num_clipped_low"] + total["num_clipped_high"]) / num_tokens,
        "ratio_mean": total["ratio_sum"] / num_tokens,
        "logprob_gap_mean": total["gap_sum"] / max(total["gap_count"], 1.0),  # the sampler's vs the learner's
        "logprob_gap_max": gap_max,
        "grad_norm": grad_norm,
        **{key: int(total[key]) for key in ("num_reward_errors", "num_reward_timeouts", "num_nonfinite_losses")},
        "num_skipped_updates": int(sums["num_skipped_updates"]),
        "tokens_per_s": total["tokens"] / sum(timer.seconds.values()),
        "padding_fraction": 1.0 - total["tokens"] / total["padded_tokens"],  # of the learner's forward tokens
        "num_micro_batches": len(parts),
        **{phase_seconds_key(phase): seconds for phase, seconds in timer.seconds.items()},
    }


# ---- the run -----------------------------------------------------------------------------------

def open_run_log(run: Run) -> metrics.RunLog:
    cfg, state = run.cfg, run.state
    run_file = {"score_file": run.score_file, "num_rows": len(run.data.rows),
                "title": f"{cfg.model.path} on {cfg.data.path}: {cfg.sampler.schedule} / {cfg.sampler.order}",
                "schedule": cfg.sampler.schedule, "order": cfg.sampler.order, "config": config_dict(cfg)}
    resumed = run.resumed_from is not None
    return metrics.RunLog(cfg.train.output_dir, cfg.log, run_file, resumed_step=state.step if resumed else None,
                          resumed_epoch=state.epoch, epoch_started=state.indices is not None)


def finish(run: Run, run_log: metrics.RunLog) -> None:
    """The trained model as a transformers folder (final/), the run's plots."""
    out = run.cfg.train.output_dir
    run.policy.save_hf(run.tokenizer, os.path.join(out, "final"))
    run_log.close()
    if dist.is_rank0() and run.cfg.log.plots:
        from .plots import plot_run  # matplotlib: only when plotting
        plot_run(out)
    metrics.log(f"done: {run.state.step} steps; metrics in {out}/metrics.jsonl, plots in {out}/plots, "
                f"final weights in {out}/final")


class GapWatch:
    """Warns when a step's mean vLLM-learner log-prob gap jumps: above `factor` x the median of the last
    `window` steps' and above `floor` nats (a stale or half-pushed weight; steady bf16 drift does not warn)."""

    def __init__(self, factor: float = 10.0, floor: float = 1e-3, window: int = 20):
        self.factor, self.floor, self.window = factor, floor, window
        self.history: list[float] = []

    def check(self, step: int, gap: float) -> Optional[str]:
        median = float(np.median(self.history)) if self.history else None
        self.history = (self.history + [gap])[-self.window:]
        if median is not None and gap > self.floor and gap > self.factor * median:
            return (f"step {step}: the log-prob gap between vLLM's sampling and the learner jumped to {gap:.2e} nats "
                    f"(median of the last steps {median:.2e}): a weight push may have failed or been skipped, or the "
                    "engine's numerics differ from the learner's (dtype, kernels)")
        return None


def run_training(run: Run) -> dict:
    """Run (or continue) the epochs of `run`; returns the last step's metrics."""
    cfg, state, sampler = run.cfg, run.state, run.sampler
    steps_per_epoch = cfg.sampler.prompts_per_epoch // cfg.train.prompts_per_step
    run_log = open_run_log(run)
    saver = checkpoint.Checkpointer(run.policy, run.tokenizer, cfg, run.data.fingerprint, run.resumed_from,
                                    state.step if run.resumed_from is not None else None)
    when = checkpoint.SaveAndStop(cfg)
    gap_watch = GapWatch()
    validate = Validator(cfg, run.heldout, run.rollout, run.tokenizer, run.reward, run_log,
                         generating=lambda: learner_offloaded(run))
    bar = metrics.progress(cfg.train.epochs * steps_per_epoch, "training", unit="step")
    bar.update(state.step)
    record, start = {}, time.time()

    def save(loop: dict, sampler_state: dict, rng: Optional[dict] = None) -> str:
        began = time.time()
        path = saver.save(state.step, loop, sampler_state, rng)
        when.saved(began)
        return path

    def stop(reason: str, saved_at: str) -> dict:
        when.honoured()
        metrics.log(f"stopping ({reason}): checkpoint {saved_at} saved at step {state.step}; continue with "
                    f"train.resume=auto. {when.signal_margin_advice()}")
        return record

    try:
        if run.resumed_from is None and validate.due(0):
            validate(0, state.step, run.policy.module)
        for epoch in range(state.epoch, cfg.train.epochs):
            rescore_s = None if not cfg.sampler.rescore_every_epochs else 0.0
            if state.indices is None:  # a new epoch: rank 0 draws, every rank trains on its draw
                if rescore_s is not None and epoch > 0 and epoch % cfg.sampler.rescore_every_epochs == 0:
                    rescore_s = rescore(run, epoch)
                indices = draw_on_rank0_and_broadcast(sampler)
                dist.check_same_on_every_rank(indices, "the epoch's prompt indices")
                run_log.draw(epoch, sampler.mu, indices, sampler.last_positions,  # positions: rank 0's, who writes
                             {"update": sampler.last_update, "num_skipped_rows": sampler.last_skipped})
                state.start_epoch(epoch, indices.tolist())
            for prompt_indices in state.remaining_steps(steps_per_epoch):
                when.start_step()  # what a stop part-way through the step saves: the state before it
                before = (dict(vars(state), extra_rows=list(state.extra_rows)), sampler.state_dict(),
                          checkpoint.rng_states())
                step_record = train_step(run, prompt_indices, when.stop_reason)
                if step_record is None:  # stopped after generating, before the update
                    return stop(when.stop_reason() or "requested", save(*before))
                record = step_record
                if rescore_s is not None:  # the re-scoring before the epoch is counted in its first step
                    record[phase_seconds_key("rescore")], rescore_s = rescore_s, 0.0
                skipped = state.account(record)
                record = {"step": state.step, "epoch": epoch, "mu": sampler.mu, **record,  # mu moves after the epoch
                          "num_skipped_steps": state.skipped_steps, "elapsed_s": time.time() - start}
                run_log.step(record)
                if skipped:
                    metrics.log(f"step {state.step} skipped: non-finite loss or gradients "
                                f"({state.nonfinite_in_a_row} in a row, {state.skipped_steps} in all)")
                warning = gap_watch.check(state.step, record["logprob_gap_mean"])
                if warning:
                    metrics.log(f"warning: {warning}")
                bar.update(1)
                bar.set_postfix(reward=f"{record['reward_mean']:.3f}", gap=f"{record['logprob_gap_mean']:.1e}",
                                mu="-" if sampler.mu is None else f"{sampler.mu:.0f}")
                diverged = state.nonfinite_in_a_row >= cfg.train.max_nonfinite_steps
                due, reason = when.end_step(state.step)
                if due or diverged:
                    saved_at = save(vars(state), sampler.state_dict())
                if diverged:
                    raise RuntimeError(f"{state.nonfinite_in_a_row} steps in a row had a NaN or inf loss (step "
                                       f"{state.step}); stopped after saving {saved_at}. Lower optim.lr, check the "
                                       "data, or raise train.max_nonfinite_steps")
                if reason is not None:
                    return stop(reason, saved_at)
            sampler.update(*state.end_epoch())
            if validate.due(epoch + 1):
                validate(epoch + 1, state.step, run.policy.module)
        save(vars(state), sampler.state_dict())
        finish(run, run_log)
    finally:
        bar.close()
        run_log.close()
        run.close()
    return record


def train(cfg: TrainRunConfig, info: dist.DistInfo) -> dict:
    """Run the configured training (or continue it from a checkpoint); returns the last step's metrics."""
    return run_training(build_run(cfg, info))
