"""Multi-node slurm launching: what each node of an allocation runs, computed from the slurm environment.

The batch scripts in launchers/slurm/ start one task per node (`srun --ntasks-per-node=1`); each
task runs this module, which turns the node's slurm variables into one command and execs it:

    python -m gainrl.slurm node train -- --config RECIPE.yaml key=value ...   # in srun: exec this node's command
    python -m gainrl.slurm plan train -- --config RECIPE.yaml key=value ...   # print every node's env and command
    python -m gainrl.slurm summarize eval -- --model PATH --benchmarks a,b   # after a multi-node eval

train and score are torch.distributed programs: every node runs `torchrun` with a c10d rendezvous
at the first host of the allocation, so all nodes form one process group of nodes x GPUs ranks.
eval/run.py is one vLLM engine per model copy (tensor-parallel within a node), so an eval job
instead splits the requested benchmarks over every model copy of the allocation (see eval_launches).

`node_launches` is a pure function of (environment mapping, job, args): the plan printed by a
dry run is exactly what the nodes would run, and tests check it without slurm.
"""
from __future__ import annotations

import importlib.util
import os
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass
from typing import Mapping, Optional

import hostlist

from .config import load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROGRAMS = {"train": os.path.join(REPO, "launchers", "train.py"),
            "score": os.path.join(REPO, "launchers", "score.py"),
            "eval": os.path.join(REPO, "eval", "run.py")}
# Set on every node unless the user set them: async error handling turns a hung NCCL collective
# into an error (after dist.timeout_s) instead of a job that hangs until its time limit.
DEFAULT_ENV = {"TORCH_NCCL_ASYNC_ERROR_HANDLING": "1", "NCCL_DEBUG": "WARN"}
# User-set variables shown in the plan (they reach the programs unchanged): network and GPU selection
PASSED_PREFIXES = ("NCCL_", "TORCH_", "GLOO_", "FI_", "UCX_", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS")
BASE_PORT, NUM_PORTS = 15000, 10000  # derived ports stay below Linux's ephemeral range (32768+)
# vLLM engines of one node (eval slots) each get their own VLLM_PORT range: vLLM scans upward from VLLM_PORT for
# the ports it opens (vllm/utils/network_utils.py get_open_ports_list), so engines started at once from one base
# race for the same ports. 25000-32199: 9 jobs' offsets x 8 slots x 100 ports, above the rendezvous range.
VLLM_BASE_PORT, VLLM_PORTS_PER_SLOT, VLLM_SLOTS, VLLM_JOB_OFFSETS = 25000, 100, 8, 9


@dataclass(frozen=True)
class Allocation:
    hosts: list[str]  # the job's nodes, in SLURM_JOB_NODELIST order (node rank = index)
    node_rank: int  # this node's index (SLURM_NODEID)
    job_id: str
    gpus_per_node: int
    cpus_per_node: Optional[int]  # CPUs this node's task may use; None = unknown


@dataclass(frozen=True)
class Launch:
    """One process to start: `env` is set on top of the inherited environment."""
    env: dict[str, str]
    argv: list[str]

    def shell(self) -> str:
        """The launch as one copy-pastable shell line: `env K=V ... program args`."""
        return shlex.join(["env", *(f"{k}={v}" for k, v in self.env.items()), *self.argv])


def _require(env: Mapping[str, str], name: str, why: str) -> str:
    value = env.get(name, "")
    if not value:
        raise ValueError(f"slurm variable {name} is not set ({why}); run inside a slurm job (sbatch, salloc) "
                         f"or set it by hand")
    return value


def _integer(env: Mapping[str, str], name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"slurm variable {name}={env.get(name)!r}: expected an integer") from None


def gpus_per_node(env: Mapping[str, str]) -> int:
    """GPUs of this node: SLURM_GPUS_ON_NODE (set in job steps), else SLURM_GPUS_PER_NODE
    (`--gpus-per-node`, "[type:]count"). Never guessed from the hardware: a count that disagrees with
    what slurm granted would start ranks on GPUs the job does not own."""
    if env.get("SLURM_GPUS_ON_NODE"):
        count = _integer(env, "SLURM_GPUS_ON_NODE", env["SLURM_GPUS_ON_NODE"])
    elif env.get("SLURM_GPUS_PER_NODE"):
        count_text = env["SLURM_GPUS_PER_NODE"].split(",")[0].split(":")[-1]  # "8", "h100:8"
        count = _integer(env, "SLURM_GPUS_PER_NODE", count_text)
    else:
        raise ValueError("neither SLURM_GPUS_ON_NODE nor SLURM_GPUS_PER_NODE is set: submit with "
                         "--gpus-per-node=N (the batch scripts do), or set SLURM_GPUS_ON_NODE")
    if count < 1:
        raise ValueError(f"this node has {count} GPUs (SLURM_GPUS_ON_NODE / SLURM_GPUS_PER_NODE)")
    return count


def read_allocation(env: Mapping[str, str], node_rank: Optional[int] = None) -> Allocation:
    """The allocation as seen by one node (`node_rank`, default SLURM_NODEID), checked for consistency."""
    hosts = hostlist.expand_hostlist(_require(env, "SLURM_JOB_NODELIST", "the nodes of the job"))
    num_nodes = _integer(env, "SLURM_NNODES", _require(env, "SLURM_NNODES", "the number of nodes"))
    if num_nodes != len(hosts):
        raise ValueError(f"SLURM_NNODES={num_nodes} but SLURM_JOB_NODELIST={env['SLURM_JOB_NODELIST']!r} "
                         f"names {len(hosts)} nodes")
    if node_rank is None:
        node_rank = _integer(env, "SLURM_NODEID", _require(env, "SLURM_NODEID", "this node's index; set by srun"))
    if not 0 <= node_rank < num_nodes:
        raise ValueError(f"SLURM_NODEID={node_rank} is outside the {num_nodes} nodes of the job")
    job_id = _require(env, "SLURM_JOB_ID", "the rendezvous id")
    cpus_name = next((name for name in ("SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE") if env.get(name)), None)
    cpus = _integer(env, cpus_name, env[cpus_name]) if cpus_name else None  # one task per node: its CPUs
    return Allocation(hosts, node_rank, job_id, gpus_per_node(env), cpus)


def rendezvous_port(env: Mapping[str, str], job_id: str) -> int:
    """MASTER_PORT if set, else a port fixed by the job id: every node computes the same one, and two
    jobs sharing a node differ unless their ids are equal modulo NUM_PORTS."""
    if env.get("MASTER_PORT"):
        return _integer(env, "MASTER_PORT", env["MASTER_PORT"])
    return BASE_PORT + _integer(env, "SLURM_JOB_ID", job_id) % NUM_PORTS


def node_env(env: Mapping[str, str], alloc: Allocation, num_processes: int) -> dict[str, str]:
    """What a node's processes get on top of the inherited environment: DEFAULT_ENV and OMP_NUM_THREADS
    (the node's CPUs shared by its processes) unless already set; user-set network and GPU variables
    are listed as they are, so that the plan shows them."""
    out = {name: env.get(name, value) for name, value in DEFAULT_ENV.items()}
    if alloc.cpus_per_node and "OMP_NUM_THREADS" not in env:
        out["OMP_NUM_THREADS"] = str(max(1, alloc.cpus_per_node // num_processes))
    out.update({k: v for k, v in sorted(env.items()) if k.startswith(PASSED_PREFIXES) and k not in out})
    return out


def torchrun_launch(env: Mapping[str, str], alloc: Allocation, program: str, args: list[str]) -> Launch:
    """torchrun with a c10d rendezvous at the first host. c10d (not static) lets nodes start in any order
    and retries until all have joined; it numbers the nodes itself (by host name), so no --node_rank is
    passed (torchrun ignores it with c10d). A dead rank fails the others after the config's dist.timeout_s."""
    endpoint = f"{alloc.hosts[0]}:{rendezvous_port(env, alloc.job_id)}"
    argv = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={len(alloc.hosts)}",
            f"--nproc_per_node={alloc.gpus_per_node}", "--rdzv_backend=c10d", f"--rdzv_endpoint={endpoint}",
            f"--rdzv_id={alloc.job_id}", "--max_restarts=0", program, *args]
    return Launch(node_env(env, alloc, alloc.gpus_per_node), argv)


def vllm_port(env: Mapping[str, str], job_id: str, slot: int) -> int:
    """The base of eval slot `slot`'s VLLM_PORT range on its node: disjoint per slot, offset by the job."""
    if env.get("VLLM_PORT"):  # the user's base: slots above it
        return _integer(env, "VLLM_PORT", env["VLLM_PORT"]) + slot * VLLM_PORTS_PER_SLOT
    if slot >= VLLM_SLOTS:  # the derived ranges hold 8 slots a node: more would share ports
        raise ValueError(f"eval slot {slot}: more than {VLLM_SLOTS} model copies on a node; set VLLM_PORT (each slot "
                         f"then takes {VLLM_PORTS_PER_SLOT} ports above it) or raise generation.tensor_parallel_size")
    job = _integer(env, "SLURM_JOB_ID", job_id) % VLLM_JOB_OFFSETS
    return VLLM_BASE_PORT + (job * VLLM_SLOTS + slot) * VLLM_PORTS_PER_SLOT


def load_eval_config(args: list[str]):
    """eval/run.py's config from its own command line (its flags, YAML and overrides), validated."""
    spec = importlib.util.spec_from_file_location("gainrl_eval_run", PROGRAMS["eval"])
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    from .evaluation.config import EvalRunConfig, validate_eval  # datasets, math_verify: seconds at every node's start
    return load_config(run.translate_flags(args), EvalRunConfig, validate_eval)


def eval_launches(env: Mapping[str, str], alloc: Allocation, args: list[str], tensor_parallel_size: int,
                  grading_workers: int) -> list[Launch]:
    """This node's share of a multi-node evaluation. Each node holds gpus // tensor_parallel_size model
    copies ("slots", each pinned to its GPUs by CUDA_VISIBLE_DEVICES); every slot runs eval/run.py on
    every benchmark as shard k of all the job's slots (node-major), so it takes problems k, k + slots,
    ... of each and no slot idles while another finishes a long benchmark. All write into one run
    folder; the last shard of a benchmark to finish merges its records, and `summarize` rebuilds the
    run's summary.{md,json} once all nodes are done. `grading_workers` (the config's
    grading.num_workers, 0 = one per core) is set to the slot's share of the node's CPUs when it is 0."""
    if tensor_parallel_size > alloc.gpus_per_node:
        raise ValueError(f"config key 'generation.tensor_parallel_size' ({tensor_parallel_size}) exceeds the "
                         f"{alloc.gpus_per_node} GPUs of a node (SLURM_GPUS_ON_NODE): one model copy spans one node")
    slots_per_node = alloc.gpus_per_node // tensor_parallel_size
    num_slots = slots_per_node * len(alloc.hosts)
    visible = env["CUDA_VISIBLE_DEVICES"].split(",") if env.get("CUDA_VISIBLE_DEVICES") \
        else [str(i) for i in range(alloc.gpus_per_node)]
    launches = []
    for local in range(slots_per_node):
        extra = [f"num_shards={num_slots}", f"shard_index={alloc.node_rank * slots_per_node + local}"] \
            if num_slots > 1 else []
        if grading_workers == 0 and alloc.cpus_per_node:
            extra.append(f"grading.num_workers={max(1, alloc.cpus_per_node // slots_per_node)}")
        launch_env = node_env(env, alloc, slots_per_node)
        launch_env["CUDA_VISIBLE_DEVICES"] = ",".join(visible[local * tensor_parallel_size:
                                                              (local + 1) * tensor_parallel_size])
        launch_env["VLLM_PORT"] = str(vllm_port(env, alloc.job_id, local))  # no two engines race for a port
        # vLLM's tensor-parallel workers are spawned, never forked from a process that may have touched CUDA
        launch_env["VLLM_WORKER_MULTIPROC_METHOD"] = env.get("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
        launches.append(Launch(launch_env, [sys.executable, PROGRAMS["eval"], *args, *extra]))
    return launches


def node_launches(env: Mapping[str, str], job: str, args: list[str], node_rank: Optional[int] = None,
                  eval_config=None) -> list[Launch]:
    """What node `node_rank` (default: SLURM_NODEID) runs for `job` with the program's `args`:
    one torchrun for train and score, one eval/run.py per model copy with work for eval."""
    if job not in PROGRAMS:
        raise ValueError(f"unknown job {job!r}: expected one of {', '.join(PROGRAMS)}")
    alloc = read_allocation(env, node_rank)
    if job != "eval":
        return [torchrun_launch(env, alloc, PROGRAMS[job], args)]
    cfg = eval_config or load_eval_config(args)
    if cfg.num_shards != 1:
        raise ValueError("config keys 'num_shards' and 'shard_index' are set by gainrl.slurm for each model copy of "
                         "the job: leave them out")
    return eval_launches(env, alloc, args, cfg.generation.tensor_parallel_size, cfg.grading.num_workers)


def plan(env: Mapping[str, str], job: str, args: list[str]) -> str:
    """Every node's launches, as the dry run prints them."""
    hosts = read_allocation(env, 0).hosts
    eval_config = load_eval_config(args) if job == "eval" else None
    lines = []
    for rank, host in enumerate(hosts):
        launches = node_launches(env, job, args, rank, eval_config)
        lines.append(f"# node {rank} of {len(hosts)}: {host} ({len(launches)} process{'es' * (len(launches) != 1)})")
        lines += [launch.shell() for launch in launches]
    return "\n".join(lines)


def run_launches(launches: list[Launch]) -> int:
    """Exec a single launch (the process becomes it: slurm's signals reach it directly); start several
    side by side, forward SIGTERM/SIGINT to them and return the first failure's exit code."""
    if len(launches) == 1:
        os.execvpe(launches[0].argv[0], launches[0].argv, {**os.environ, **launches[0].env})
    processes = [subprocess.Popen(launch.argv, env={**os.environ, **launch.env}) for launch in launches]

    def forward(signum, _frame):  # scancel and the time limit signal this task: pass it on
        for process in processes:
            process.send_signal(signum)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    codes = [p.wait() for p in processes]
    return next((code for code in codes if code != 0), 0)


def summarize_eval(args: list[str]) -> str:
    """Merge each benchmark's shards (if the last of them did not) and rebuild <output_dir>/<name>/
    summary.{md,json} from the benchmarks' summaries; benchmarks evaluated by earlier runs are kept."""
    from .evaluation.benchmarks import load_problems, resolve_benchmark  # as above
    from .evaluation.evaluate import finish_benchmark
    from .evaluation.report import update_checkpoint_summary
    cfg = load_eval_config(args)
    name = cfg.name or os.path.basename(os.path.normpath(cfg.model.path))
    folder = os.path.join(cfg.output_dir, name)
    finished, missing = {}, []
    for benchmark_name in cfg.benchmarks:
        benchmark = resolve_benchmark(benchmark_name, cfg.math_files)
        problems = load_problems(benchmark, cfg.paths.get(benchmark_name) or benchmark.default_source(), cfg.limit)
        summary = None
        if os.path.isfile(os.path.join(folder, benchmark_name, "run.json")):
            summary = finish_benchmark(benchmark, [p.id for p in problems], os.path.join(folder, benchmark_name),
                                       cfg.generation)
        if summary is None:
            missing.append(benchmark_name)
        else:
            finished[benchmark_name] = summary
    update_checkpoint_summary(folder, name, finished)
    if missing:
        raise ValueError(f"{folder}: {', '.join(missing)} not fully graded (see the job log; submitting again "
                         "resumes)")
    return os.path.join(folder, "summary.md")


USAGE = "usage: python -m gainrl.slurm {node,plan} {train,score,eval} -- ARGS | summarize eval -- ARGS"


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("node", "plan", "summarize") or (len(argv) > 2 and argv[2] != "--"):
        print(USAGE, file=sys.stderr)
        return 2
    command, job, args = argv[0], argv[1], argv[3:]
    try:
        if command == "plan":
            print(plan(os.environ, job, args), flush=True)
            return 0
        if command == "summarize":
            if job != "eval":
                raise ValueError(f"summarize is for eval jobs, got {job!r}")
            print(f"gainrl.slurm: wrote {summarize_eval(args)}", flush=True)
            return 0
        return run_launches(node_launches(os.environ, job, args))
    except ValueError as e:
        print(f"gainrl.slurm: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
