"""Process-group set-up and the few named collectives the library uses.

Works the same under `deepspeed`, `torchrun` and slurm (RANK / WORLD_SIZE / LOCAL_RANK in
the environment) and as a single process with no process group at all.
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import logging
import os
import socket
import sys
import traceback
from dataclasses import dataclass
from typing import Callable, NoReturn

import numpy as np
import torch
import torch.distributed as dist

from .preflight import check_devices, probe_devices


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device


def init_distributed(timeout_s: int = 1800) -> DistInfo:
    """Join the process group described by the launcher's environment (if any) and pick a device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world_size = ranks_on_node()
    check_devices(probe_devices(dist.is_nccl_available()), local_world_size)  # a GPU node must not fall back to CPU without a word
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
        if "OMP_NUM_THREADS" not in os.environ:  # do not oversubscribe the cores shared by local ranks
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world_size))
    if not dist.is_initialized():
        if "MASTER_ADDR" not in os.environ:  # a plain `python script.py`: be a 1-rank launch, as DeepSpeed
            os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1",  # and vLLM expect
                              MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return DistInfo(rank, world_size, local_rank, local_world_size, device)


def ranks_on_node() -> int:
    """Ranks started on this node (the launcher's LOCAL_WORLD_SIZE; WORLD_SIZE for a one-node launch)."""
    # torchrun sets LOCAL_WORLD_SIZE, the deepspeed launcher LOCAL_SIZE
    return int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("LOCAL_SIZE", os.environ.get("WORLD_SIZE", "1"))))


@contextlib.contextmanager
def all_local_cores():
    """On CPU, let this process's torch use the cores of all its node's ranks while the others wait
    at a barrier (rank 0 building the inputs alone); restores the thread count after."""
    threads = torch.get_num_threads()
    if not torch.cuda.is_available():
        torch.set_num_threads(min(os.cpu_count() or 1, threads * ranks_on_node()))
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_rank0() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_from_rank0(obj):
    """Every rank returns rank 0's `obj` (any picklable object)."""
    if not is_distributed():
        return obj
    box = [obj if is_rank0() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_to_rank0(obj):
    """Rank 0 returns the list of every rank's `obj` (in rank order); other ranks return None."""
    if not is_distributed():
        return [obj]
    out = [None] * get_world_size() if is_rank0() else None
    dist.gather_object(obj, out, dst=0)
    return out


def all_gather(obj) -> list:
    """Every rank returns the list of every rank's `obj`, in rank order."""
    if not is_distributed():
        return [obj]
    out = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


class SharedError(ValueError):
    """A user error that every rank raised together, from one collective check: rank 0 prints it, once."""


class ReportedError(RuntimeError):
    """A failure whose message says all there is (a child job's own error): printed without a traceback."""


def rank0_decides(decide: Callable[[], object]):
    """Every rank returns what `decide()` returns on rank 0 (a look at a shared file system: the ranks might see
    it at different moments), or raises SharedError with the ValueError it raised there. A collective."""
    if not is_distributed():
        return decide()
    outcome = None
    if is_rank0():
        try:
            outcome = (decide(), None)
        except ValueError as e:
            outcome = (None, str(e))
    result, error = broadcast_from_rank0(outcome)
    if error is not None:
        raise SharedError(error)
    return result


def every_rank_checks(check: Callable[[], None]) -> None:
    """Run `check()` on every rank (what each rank's node sees: its folders, its files); if it raises ValueError on
    any, every rank raises SharedError with the first failing rank's message. A collective."""
    try:
        check()
        error = None
    except ValueError as e:
        error = str(e)
    failed = [(rank, message) for rank, message in enumerate(all_gather(error)) if message is not None]
    if failed:
        rank, message = failed[0]
        where = "" if get_world_size() == 1 else \
            f" (on rank {rank}" + (f" and {len(failed) - 1} other rank(s))" if len(failed) > 1 else ")")
        raise SharedError(message + where)


@dataclass(frozen=True)
class RankGroup:
    """This rank's group of `size` consecutive ranks: the group's `index` and this rank's place in it."""
    index: int
    rank: int
    size: int
    handle: object = None  # torch's ProcessGroup (gloo); None for a group of one

    def all_gather(self, obj) -> list:
        """Every member returns the list of every member's `obj`, in rank order."""
        if self.handle is None:
            return [obj]
        out = [None] * self.size
        dist.all_gather_object(out, obj, group=self.handle)
        return out


def consecutive_groups(size: int) -> RankGroup:
    """Split the ranks into groups of `size` consecutive ones and return this rank's group. A collective:
    every rank calls it at the same point (torch builds every group on every rank, in the same order).
    Objects cross the group over gloo, whatever the default backend (no GPU copy of pickled bytes)."""
    rank, world_size = get_rank(), get_world_size()
    if world_size % size:
        raise ValueError(f"groups of {size} consecutive ranks do not divide {world_size} ranks")
    if size == 1:
        return RankGroup(rank, 0, 1)
    handle = None
    for first in range(0, world_size, size):
        group = dist.new_group(list(range(first, first + size)), backend="gloo")
        if first <= rank < first + size:
            handle = group
    return RankGroup(rank // size, rank % size, size, handle)


def shutdown() -> None:
    """Wait until every rank is done, then tear the process groups down."""
    if is_distributed():
        dist.barrier()
        dist.destroy_process_group()


def exit_process(code: int = 0) -> NoReturn:
    """End a launched process now, without interpreter finalization. Entry points call it last.

    A torch gloo worker thread can still hold the last collective's tensors after the collective
    has completed (and destroy_process_group does not join those threads while DeepSpeed still
    references the groups). If the interpreter starts finalizing before the thread drops them, the
    thread's GIL acquire kills the process with SIGABRT ("terminate called without an active
    exception"; pytorch/pytorch#190489): seen here 1 run in 4 on 2 busy cores. Nothing is left to
    do at that point, so skip finalization: flush the streams and leave.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def check_same_on_every_rank(array, what: str) -> None:
    """Raise on every rank unless `array` is the same on all of them (compares a digest: a few bytes)."""
    digest = hashlib.sha256(np.ascontiguousarray(array, dtype=np.int64).tobytes()).hexdigest()
    digests = all_gather(digest)
    if len(set(digests)) != 1:
        raise RuntimeError(f"ranks disagree on {what} (digests by rank: {[d[:12] for d in digests]})")


def all_reduce_sums(values: dict[str, float]) -> dict[str, float]:
    """Every rank returns the element-wise sum over ranks of `values` (same keys on every rank), in fp64."""
    if not is_distributed():
        return dict(values)
    keys = sorted(values)
    packed = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        packed = packed.cuda()
    dist.all_reduce(packed, op=dist.ReduceOp.SUM)
    return dict(zip(keys, packed.cpu().tolist()))


_PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "remote worker crashing", "Broken pipe",
              "NCCL communicator was aborted")  # gloo's and NCCL's words for a rank that went away (not for an
# error of this rank's own, which DistBackendError also carries: that one keeps its traceback)


def peer_failed(error: BaseException) -> bool:
    """Whether `error` is this rank's collective failing because another rank stopped (the cause is there)."""
    network_error = getattr(dist, "DistNetworkError", ())
    return isinstance(error, network_error) or any(words in str(error) for words in _PEER_GONE)


def _rank_tag() -> str:
    """` (rank R of N)` in a launch of several ranks, else nothing."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    return f" (rank {os.environ.get('RANK', '0')} of {world_size})" if world_size > 1 else ""


def run_entry_point(main: Callable[[list[str]], None], argv: list[str]) -> NoReturn:
    """Run a launcher's `main(argv)` and leave through exit_process:
    - success exits 0 (`main` ends with `shutdown()`, the one collective of the way out);
    - a user error (ValueError) prints one line, `error (rank R of N): ...`, and exits 2 (no traceback); one
      that every rank raised together (SharedError: `rank0_decides`, `every_rank_checks`) prints on rank 0 only;
    - a collective that failed because another rank stopped prints one line saying so and exits 1: the
      other rank's own error is the cause, and that rank prints it;
    - a ReportedError (a child job's own error) prints its message and exits 1;
    - anything else prints its traceback and one line naming the rank, and exits 1.
    A failed rank runs no collective on its way out: the others may be inside one, and a barrier here
    would pair with it and hang them all (a resume that failed on one rank did, silently, until the job's
    time ran out). The launcher (deepspeed, torchrun, srun) stops the other ranks once one has exited."""
    try:
        main(argv)
    except SharedError as e:  # raised on every rank together: once is enough
        if os.environ.get("RANK", "0") == "0":
            print(f"error: {e}", file=sys.stderr)
        exit_process(2)
    except ValueError as e:
        print(f"error{_rank_tag()}: {e}", file=sys.stderr)
        exit_process(2)
    except ReportedError as e:
        print(f"error{_rank_tag()}: {e}", file=sys.stderr)
        exit_process(1)
    except Exception as e:
        if peer_failed(e):
            first_line = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            print(f"stopped{_rank_tag()}: another rank failed, and its own error above is the cause "
                  f"(here: {type(e).__name__}: {first_line})", file=sys.stderr)
        else:
            traceback.print_exc()
            print(f"error{_rank_tag()}: {type(e).__name__}: {e}", file=sys.stderr)
        exit_process(1)
    exit_process(0)
