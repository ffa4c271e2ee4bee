"""Start-up checks of the machine, before any process group or model exists: each failure names its cause.

`probe_devices()` gathers the facts (GPUs the driver shows, what torch's CUDA and NCCL can do);
`check_devices(facts, ranks_on_node)` is a pure function of them, so every rule is tested on CPU.
Without these checks a GPU node whose driver is too old for torch's CUDA build would silently
train on CPU over gloo, and a launch with more ranks than GPUs would fail in the middle of set-up.
"""
from __future__ import annotations

import glob
import os
import re
import tempfile
from dataclasses import dataclass
from typing import Optional

CPU_ON_PURPOSE = "to run on CPU on purpose, hide the GPUs with CUDA_VISIBLE_DEVICES="


class StartupError(ValueError):
    """A machine that cannot run the job as launched (printed as one line by the entry points)."""


@dataclass(frozen=True)
class DeviceFacts:
    visible_gpus: int  # NVIDIA GPUs the driver shows this process (after CUDA_VISIBLE_DEVICES)
    torch_version: str
    torch_cuda_build: Optional[str]  # torch.version.cuda: None for a CPU build
    cuda_available: bool  # torch.cuda.is_available()
    cuda_devices: int  # torch.cuda.device_count()
    nccl_available: bool  # torch.distributed.is_nccl_available()


def visible_nvidia_gpus(environ=os.environ, proc_root: str = "/proc/driver/nvidia/gpus",
                        dev_glob: str = "/dev/nvidia[0-9]*") -> int:
    """GPUs the NVIDIA driver exposes (its /proc entries, else the device files), limited by CUDA_VISIBLE_DEVICES."""
    physical = len(os.listdir(proc_root)) if os.path.isdir(proc_root) else \
        len([p for p in glob.glob(dev_glob) if re.fullmatch(r".*/nvidia\d+", p)])
    selected = environ.get("CUDA_VISIBLE_DEVICES")
    if selected is None:
        return physical
    entries = [e for e in selected.split(",") if e.strip()]
    valid = []
    for entry in entries:  # CUDA stops at the first invalid index ("-1" hides every GPU)
        if entry.strip().lstrip("-").isdigit() and int(entry) < 0:
            break
        valid.append(entry)
    return min(len(valid), physical)


def probe_devices(nccl_available: bool) -> DeviceFacts:
    """This process's facts; `nccl_available` from torch.distributed (which only gainrl.dist imports)."""
    import torch
    available = torch.cuda.is_available()
    return DeviceFacts(visible_nvidia_gpus(), torch.__version__, torch.version.cuda, available,
                       torch.cuda.device_count() if available else 0, nccl_available)


def check_devices(facts: DeviceFacts, ranks_on_node: int) -> None:
    """Raise StartupError when the job cannot run as launched on this node's devices."""
    if facts.visible_gpus > 0 and not facts.cuda_available:
        build = f"a CUDA {facts.torch_cuda_build} build" if facts.torch_cuda_build else "a CPU-only build"
        raise StartupError(
            f"{facts.visible_gpus} NVIDIA GPU(s) are visible but torch {facts.torch_version} ({build}) cannot use "
            "them, so the run would fall back to CPU and gloo. The usual cause is a driver older than torch's CUDA "
            "build needs (CUDA 13: driver >= 580; see nvidia-smi) or a CPU torch: install the gpu extra "
            f"(README, 'GPU clusters'); {CPU_ON_PURPOSE}")
    if not facts.cuda_available:
        return
    if not facts.nccl_available:
        raise StartupError(f"torch {facts.torch_version} has CUDA but no NCCL (torch.distributed.is_nccl_available() "
                           "is False): GPU training needs a torch build with NCCL, such as the gpu extra's")
    if ranks_on_node > facts.cuda_devices:
        raise StartupError(
            f"{ranks_on_node} ranks were started on this node but only {facts.cuda_devices} GPU(s) are visible to "
            f"torch: each rank needs its own GPU. Start {facts.cuda_devices} (deepspeed --num_gpus "
            f"{facts.cuda_devices}, torchrun --nproc_per_node {facts.cuda_devices}) or check CUDA_VISIBLE_DEVICES")


def check_memory_split(plan, utilization: float) -> None:
    """vLLM takes `utilization` of the GPU when it starts, after the learner is built: refuse a split that
    leaves the learner's resident state (gainrl.plan) no room, before any model is built."""
    total = plan.gpu_memory_bytes
    left, resident = (1 - utilization) * total, plan.generation_resident_bytes  # rollout.offload_learner: less
    if resident > left:
        most = max(0.0, 1 - resident / total)
        raise StartupError(
            f"config key 'rollout.gpu_memory_utilization': {utilization} gives vLLM {utilization * total / 2**30:.1f} "
            f"GiB of each GPU and leaves {left / 2**30:.1f} GiB, but the learner's resident state needs "
            f"{resident / 2**30:.1f} GiB (gainrl.plan, printed above): lower it to at most {most:.2f}, or shrink "
            "the learner (more nodes, ds_configs/zero3_offload.json)")


def check_tensor_parallel(tensor_parallel_size: int, world_size: int, ranks_on_node: int) -> None:
    """vLLM's tensor-parallel groups are consecutive ranks of one node (its all-reduces stay on NVLink):
    the group size must divide the ranks per node (and so the world)."""
    if ranks_on_node % tensor_parallel_size or world_size % tensor_parallel_size:
        raise StartupError(
            f"config key 'rollout.tensor_parallel_size': {tensor_parallel_size} must divide the ranks per node "
            f"({ranks_on_node}) and the world size ({world_size}): each vLLM engine spans that many consecutive "
            "ranks of one node")


def check_writable(folder: str, key: str) -> None:
    """Raise StartupError naming `key` unless `folder` is, or can be made, a folder this process can write in
    (run before any model is built: otherwise the first write fails after minutes of set-up, on some ranks)."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise StartupError(f"config key '{key}': {folder} is a file, not a folder; choose another {key}")
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".gainrl-write-check-"):
            pass
    except OSError as e:
        raise StartupError(f"config key '{key}': cannot write in {folder} ({e.strerror or e}); choose a folder this "
                           "job can write in, or fix its permissions") from None
