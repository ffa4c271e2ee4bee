"""Training checkpoints: written every N steps, the newest K kept, resumed exactly; the stop file.

Layout, one folder per checkpoint:

    <output_dir>/checkpoints/step_00000012/
        <DeepSpeed's files>   model, optimizer and LR-scheduler state of every rank (engine.save_checkpoint)
        hf/                   config, generation config, tokenizer: what an HF export needs besides weights
        rng/rank_00000.pt     each rank's Python, NumPy and torch (and CUDA) RNG states
        train_state.json      where the loop stands (step, epoch, the epoch's draw, the sampler's state, ...)
                              and the size of every other file, written last; a resume checks them all

A checkpoint is written to `step_N.partial/` and renamed to `step_N/` by rank 0 once every rank
has written its part and the files are synced: a folder named `step_N` is complete by
construction, whatever moment a kill, a node failure or a full disk strikes. Older checkpoints
are deleted only after the new one is complete. Assumes a file system that every rank sees at the
same path (as DeepSpeed's own checkpointing does by default).
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import time
from typing import Optional

import numpy as np
import torch

from . import dist, metrics
from .config import TrainRunConfig, changed_keys, config_dict
from .models import save_hf_metadata

CHECKPOINTS = "checkpoints"
PARTIAL = ".partial"
STATE_FILE = "train_state.json"
FILES = "files"  # train_state.json's record of every file's size, written last
RUN_RESULTS = ("final", "metrics.jsonl", "draws.jsonl", "validation.jsonl")  # a run's own results in output_dir
_NAME = re.compile(r"^step_(\d{8})$")


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}"


def is_complete(path: str) -> bool:
    """A step_N folder (never a .partial one) holding its train state."""
    return _NAME.match(os.path.basename(os.path.normpath(path))) is not None \
        and os.path.isfile(os.path.join(path, STATE_FILE))


def complete_checkpoints(output_dir: str) -> list[str]:
    """The run's complete checkpoint folders, oldest first."""
    root = os.path.join(output_dir, CHECKPOINTS)
    if not os.path.isdir(root):
        return []
    paths = [os.path.join(root, name) for name in sorted(os.listdir(root)) if _NAME.match(name)]
    return [p for p in paths if is_complete(p)]


def find_resume_checkpoint(resume: str, output_dir: str) -> Optional[str]:
    """`train.resume`: auto -> the newest complete checkpoint of output_dir (None if there is none);
    never -> None; a path -> that checkpoint, which must be complete."""
    if resume == "never":
        return None
    if resume == "auto":
        found = complete_checkpoints(output_dir)
        return found[-1] if found else None
    if not is_complete(resume):
        raise ValueError(f"config key 'train.resume': {resume} is not a complete checkpoint (a step_N folder with "
                         f"{STATE_FILE}; step_N{PARTIAL} folders are incomplete writes)")
    return resume


def read_train_state(path: str) -> dict:
    """The train state of checkpoint `path`; a damaged file is a ValueError that names it and says what to do."""
    file = os.path.join(path, STATE_FILE)
    try:
        with open(file, encoding="utf-8") as f:
            state = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{file} is damaged (not JSON: {e.msg}, line {e.lineno} column {e.colno}); "
                         f"{damaged_advice(path)}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{file} is damaged (not UTF-8 text at byte {e.start}); {damaged_advice(path)}") from None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise ValueError(f"{file} is damaged (no train state with a step in it); {damaged_advice(path)}")
    return state


# ---- RNG states -------------------------------------------------------------------------------------

def rng_states() -> dict:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _rng_file(path: str, rank: int) -> str:
    return os.path.join(path, "rng", f"rank_{rank:05d}.pt")


# ---- save and load ----------------------------------------------------------------------------------

def save(policy, tokenizer, output_dir: str, train_state: dict, keep: int, rng: Optional[dict] = None) -> str:
    """Every rank: write checkpoint `step_<train_state["step"]>` of `policy` (engine.DeepSpeedModel), then
    delete all but the newest `keep` complete checkpoints. Returns the checkpoint's folder. `rng`: the RNG
    states to record (default: the current ones; a step stopped part-way records those it started with).

    A write error (a full disk, a quota) raises on the rank that hit it, naming the checkpoint and
    the last complete one, which is untouched; the launcher then stops the other ranks (or they fail
    in their next collective). A save first removes the .partial folders such failures leave."""
    root = os.path.join(output_dir, CHECKPOINTS)
    name = checkpoint_name(train_state["step"])
    final, partial = os.path.join(root, name), os.path.join(root, name + PARTIAL)
    rank, previous = dist.get_rank(), complete_checkpoints(output_dir)
    if dist.is_rank0():
        if os.path.exists(final):  # the trainer saves a step once, and refuses output folders with later steps
            raise RuntimeError(f"checkpoint {final} exists already")
        remove_partial_checkpoints(root)  # left by a kill or a full disk: they hold space and are never read
    dist.barrier()
    try:
        if dist.is_rank0():
            os.makedirs(partial)
        dist.barrier()
        policy.save_checkpoint(root, name + PARTIAL)
        os.makedirs(os.path.dirname(_rng_file(partial, rank)), exist_ok=True)
        torch.save(rng if rng is not None else rng_states(), _rng_file(partial, rank))
        if dist.is_rank0():
            save_hf_metadata(policy.module, tokenizer, os.path.join(partial, "hf"))
    except (OSError, RuntimeError) as e:  # torch.save reports a full disk as a RuntimeError ("unexpected pos")
        raise _write_error(rank, final, previous, root, e) from e
    dist.barrier()
    if dist.is_rank0():  # last, once every rank's files are written: their sizes, which a resume checks
        try:
            state = {**train_state, FILES: file_sizes(partial)}  # before the file exists: not itself
            with open(os.path.join(partial, STATE_FILE), "w", encoding="utf-8") as f:
                json.dump(state, f, indent=1)
        except OSError as e:
            raise _write_error(rank, final, previous, root, e) from e
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        os.sync()  # this node's writes reach the disk before the folder is named complete
    dist.barrier()
    if dist.is_rank0():
        os.rename(partial, final)
        _fsync_dir(root)
        for old in complete_checkpoints(output_dir)[:-keep]:
            os.rename(old, old + PARTIAL)  # first un-named: a kill while deleting leaves no half checkpoint
            shutil.rmtree(old + PARTIAL)
        metrics.log(f"checkpoint {final}")
    dist.barrier()
    return final


def _write_error(rank: int, final: str, previous: list[str], root: str, error: Exception) -> RuntimeError:
    last = previous[-1] if previous else "none (this was the first)"
    free_mib = shutil.disk_usage(root).free / 2**20
    return RuntimeError(f"rank {rank}: checkpoint {final} could not be written ({error}; {free_mib:.1f} MiB free on "
                        f"its file system); the last complete checkpoint, {last}, is intact")


def file_sizes(folder: str) -> dict[str, int]:
    """The size of every file under `folder`, by its path relative to it."""
    sizes = {}
    for parent, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(parent, name)
            sizes[os.path.relpath(path, folder)] = os.path.getsize(path)
    return dict(sorted(sizes.items()))


def damaged_advice(path: str) -> str:
    """What to do about the damaged checkpoint `path`: continue from the one before it, or start again."""
    root = os.path.dirname(os.path.normpath(path))
    earlier = [p for p in complete_checkpoints(os.path.dirname(root)) if p < os.path.normpath(path)]
    if earlier:
        return (f"move {path} out of {root} (or delete it) and resume again: train.resume=auto then continues "
                f"from {earlier[-1]}")
    return f"no earlier checkpoint is in {root}: start again in a new train.output_dir"


def verify_files(path: str, state: dict) -> None:
    """Raise ValueError naming the first file of checkpoint `path` that is missing or not the size it was written
    with (a copy cut short, a disk that filled later). Checkpoints written before sizes were recorded pass, and so
    does hf/ (config and tokenizer: metadata a user may edit; a damaged one fails naming itself)."""
    for name, size in state.get(FILES, {}).items():
        if name.split(os.sep, 1)[0] == "hf":
            continue
        file = os.path.join(path, name)
        found = os.path.getsize(file) if os.path.isfile(file) else None
        if found != size:
            what = "is missing" if found is None else f"is {found} bytes, {size} when written (truncated or damaged)"
            raise ValueError(f"checkpoint {path}: {file} {what}; {damaged_advice(path)}")


def remove_partial_checkpoints(root: str) -> None:
    if os.path.isdir(root):
        for name in os.listdir(root):
            if name.startswith("step_") and name.endswith(PARTIAL):
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load(policy, path: str) -> dict:
    """Every rank: restore the policy (weights, optimizer, LR scheduler) from checkpoint
    `path`; returns its train state. The RNG states are restored separately (restore_rng), last,
    once everything that seeds or draws at start-up has run."""
    state = read_train_state(path)  # its files were checked against their sizes by find_resume_point
    world_size = dist.get_world_size()
    if state["world_size"] != world_size:
        raise ValueError(f"checkpoint {path} was written by {state['world_size']} ranks and this run has "
                         f"{world_size}: resume on {state['world_size']} ranks, or export it "
                         f"(launchers/export.py) and start a new run from the exported model")
    root, tag = os.path.split(os.path.normpath(path))
    try:
        loaded = policy.load_checkpoint(root, tag)
    except Exception as e:  # the sizes matched, yet the bytes do not load: damaged in place
        if dist.peer_failed(e):
            raise
        rank = dist.get_rank()
        raise RuntimeError(f"rank {rank}: checkpoint {path} could not be loaded ({type(e).__name__}: {e}); "
                           f"{_first_unloadable(path, rank) or 'its files may be damaged'}: "
                           f"{damaged_advice(path)}") from e
    if not loaded:
        raise RuntimeError(f"DeepSpeed found no checkpoint to load in {path}")
    return state


def _first_unloadable(path: str, rank: int) -> Optional[str]:
    """`FILE does not load`, for the first of this rank's DeepSpeed files in `path` that torch cannot read."""
    for name in sorted(os.listdir(path)):
        if name.endswith(".pt") and f"_rank_{rank}_" in name:
            try:
                torch.load(os.path.join(path, name), map_location="cpu", mmap=True, weights_only=False)
            except Exception:
                return f"{os.path.join(path, name)} does not load"
    return None


def restore_rng(path: str) -> None:
    file = _rng_file(path, dist.get_rank())
    try:
        states = torch.load(file, weights_only=False)
    except Exception as e:
        raise RuntimeError(f"rank {dist.get_rank()}: {file} could not be loaded ({type(e).__name__}: {e}); "
                           f"{damaged_advice(path)}") from e
    set_rng_states(states)


# ---- the run's checkpoints, once per step ------------------------------------------------------------

class Checkpointer:
    """Saves the run's checkpoints: at most once per step (the end of training may fall on a periodic
    save), each with the run's fixed facts (data fingerprint, world size, config) beside the loop's state."""

    def __init__(self, policy, tokenizer, cfg: TrainRunConfig, dataset_fingerprint: str,
                 resumed_from: Optional[str] = None, resumed_step: Optional[int] = None):
        self.policy, self.tokenizer = policy, tokenizer
        self.output_dir, self.keep = cfg.train.output_dir, cfg.train.keep_checkpoints
        self.fixed = {"dataset_fingerprint": dataset_fingerprint, "world_size": dist.get_world_size(),
                      "config": config_dict(cfg)}
        self.last_step, self.last_path = resumed_step, resumed_from

    def save(self, step: int, loop: dict, sampler: dict, rng: Optional[dict] = None) -> str:
        """Every rank: checkpoint `step` (unless saved already); returns its folder."""
        if step != self.last_step:
            train_state = {"step": step, "loop": loop, "sampler": sampler, **self.fixed}
            self.last_path = save(self.policy, self.tokenizer, self.output_dir, train_state, self.keep, rng)
            self.last_step = step
        return self.last_path


# ---- where a run continues from ---------------------------------------------------------------------

# keys a resumed run may change; any other difference from the checkpoint's config is refused
RESUMABLE_CHANGES = ("train.epochs", "train.resume", "train.output_dir", "train.checkpoint_every",
                     "rollout.enforce_eager", "rollout.max_num_seqs", "rollout.max_num_batched_tokens",
                     "train.keep_checkpoints", "train.max_nonfinite_steps", "train.stop_file", "dist.", "log.",
                     "reward.num_workers", "rollout.cpu_kv_cache_gib", "rollout.gpu_memory_utilization", "scorer.")


def resume_point(cfg: TrainRunConfig) -> Optional[str]:
    """The checkpoint to continue from (train.resume), or None for a fresh run. Rank 0 looks (the ranks
    of a shared file system may see it at different moments) and every rank gets its answer or error."""
    return dist.rank0_decides(lambda: find_resume_point(cfg))


def find_resume_point(cfg: TrainRunConfig) -> Optional[str]:
    out = cfg.train.output_dir
    path = find_resume_checkpoint(cfg.train.resume, out)
    existing = complete_checkpoints(out)
    if path is None and existing:
        raise ValueError(f"config key 'train.resume': {out} holds checkpoints of an earlier run; "
                         "continue it with train.resume=auto or choose another train.output_dir")
    if path is None:
        results = [name for name in RUN_RESULTS if os.path.exists(os.path.join(out, name))]
        if results:  # its checkpoints deleted to save disk: a new run would overwrite the rest without a word
            raise ValueError(f"config key 'train.output_dir': {out} holds another run's results ({', '.join(results)}) "
                             "and no checkpoint to continue it from; choose another train.output_dir, or remove "
                             "them to start over there")
        return None
    state = read_train_state(path)
    verify_files(path, state)
    step = state["step"]
    later = [p for p in existing if read_train_state(p)["step"] > step]
    if later:  # a second history in the same folder would mix with the first one's checkpoints and logs
        raise ValueError(f"config key 'train.resume': {out} holds checkpoints after {path} ({later[-1]}); "
                         "to branch from it, set another train.output_dir")
    changed = [key for key in changed_keys(read_train_state(path)["config"], config_dict(cfg))
               if not key.startswith(RESUMABLE_CHANGES)]
    if changed:
        raise ValueError(f"config key '{changed[0]}': differs from the config of checkpoint {path} "
                         f"(all that differ: {changed}); resume with the same settings or start a new "
                         "train.output_dir")
    return path


# ---- when to save and when to stop ------------------------------------------------------------------

JOB_END_ENV = "GAINRL_JOB_END_TIME"  # the job's end, in Unix seconds (launchers/slurm/train.sbatch sets it)


def deadline_margin_s(longest_step_s: float, longest_save_s: Optional[float]) -> float:
    """How long before a job's end a run must stop starting steps: one more step and a checkpoint, with half
    again to spare, and a minute for the exit. Before the first checkpoint, a save is assumed to take a step."""
    save_s = longest_save_s if longest_save_s is not None else longest_step_s
    return 1.5 * (longest_step_s + save_s) + 60.0


class SaveAndStop:
    """When the run checkpoints and when it stops, decided on rank 0's clock and files and broadcast, so every
    rank agrees: every `train.checkpoint_every` steps, every `train.checkpoint_every_minutes`, when the stop
    file `train.stop_file` (default <output_dir>/STOP) appears (slurm's time-limit signal touches it), and
    when the job's end (GAINRL_JOB_END_TIME) is nearer than deadline_margin_s of the measured step and
    checkpoint times. A stop is checked at a step's end and, part-way, before its update."""

    def __init__(self, cfg: TrainRunConfig, clock=time.time, environ=os.environ):
        self.every_steps, self.every_s = cfg.train.checkpoint_every, 60.0 * cfg.train.checkpoint_every_minutes
        self.path = cfg.train.stop_file or os.path.join(cfg.train.output_dir, "STOP")
        self.clock = clock
        end = environ.get(JOB_END_ENV, "")
        try:
            self.job_end = float(end) if end else None
        except ValueError:
            raise ValueError(f"environment variable {JOB_END_ENV}={end!r}: expected Unix seconds") from None
        self.last_save = self.step_start = clock()
        self.longest_step_s, self.longest_save_s = 0.0, None
        self.stale = None  # (mtime) of a stop file that was there before the run: an earlier run's, not a request
        if dist.is_rank0() and os.path.exists(self.path):
            self.stale = os.stat(self.path).st_mtime_ns
            metrics.log(f"warning: the stop file {self.path} was there before this run started (left by an earlier "
                        "run?): not honoured; touch it again to stop this run")

    def _rank0_reason(self) -> Optional[str]:
        if self._stop_file_requested():
            return f"stop file {self.path}"
        if self.job_end is not None and self.longest_step_s > 0:
            left, margin = self.job_end - self.clock(), deadline_margin_s(self.longest_step_s, self.longest_save_s)
            if left < margin:
                return (f"the job ends in {left:.0f} s, less than a step and a checkpoint need ({margin:.0f} s, "
                        f"from the longest step, {self.longest_step_s:.0f} s)")
        return None

    def _stop_file_requested(self) -> bool:
        try:
            return os.stat(self.path).st_mtime_ns != self.stale
        except FileNotFoundError:
            return False

    def stop_reason(self) -> Optional[str]:
        """Rank 0's reason to stop now (the stop file, the job's end near), or None; every rank gets it."""
        return dist.broadcast_from_rank0(self._rank0_reason() if dist.is_rank0() else None)

    def start_step(self) -> None:
        self.step_start = self.clock()

    def end_step(self, step: int) -> tuple[bool, Optional[str]]:
        """After step `step`: (checkpoint now?, the reason to stop or None), one broadcast."""
        self.longest_step_s = max(self.longest_step_s, self.clock() - self.step_start)
        decision = None
        if dist.is_rank0():
            time_due = bool(self.every_s) and self.clock() - self.last_save >= self.every_s
            decision = (time_due, self._rank0_reason())
        time_due, reason = dist.broadcast_from_rank0(decision)
        step_due = bool(self.every_steps and step % self.every_steps == 0)
        return step_due or time_due or reason is not None, reason

    def saved(self, started: float) -> None:
        """A checkpoint begun at `started` (clock time) is written."""
        now = self.clock()
        self.longest_save_s = max(self.longest_save_s or 0.0, now - started)
        self.last_save = now

    def honoured(self) -> None:
        """Remove the stop file: a resumed run must not stop on it again."""
        if dist.is_rank0() and os.path.exists(self.path):
            os.remove(self.path)

    def signal_margin_advice(self) -> str:
        """What a time-limited job's stop signal must leave, from the steps and checkpoints measured so far."""
        if self.longest_step_s == 0:
            return ""
        margin = deadline_margin_s(self.longest_step_s, self.longest_save_s)
        return (f"steps take up to {self.longest_step_s:.0f} s and a checkpoint {self.longest_save_s or 0:.0f} s: "
                f"a time-limited slurm job needs --signal=B:USR1@{int(margin)} or more (the trainer itself stops that "
                f"long before {JOB_END_ENV})")
