"""Multi-node slurm launching (gainrl/slurm.py, launchers/slurm/*.sbatch) under a faked 2-node allocation:
the exact command of each node, the batch scripts' dry runs and requeue, and a real 2-"node" rendezvous."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from gainrl import slurm
from gainrl.slurm import Launch, node_launches
from tests.helpers import REPO

JOB_ID = "4242"
PORT = 15000 + 4242  # derived from the job id when MASTER_PORT is unset
ALLOCATION = {"SLURM_JOB_NODELIST": "gpu-[07-08]", "SLURM_NNODES": "2", "SLURM_JOB_ID": JOB_ID,
              "SLURM_GPUS_ON_NODE": "8", "SLURM_CPUS_PER_TASK": "64", "SLURM_SUBMIT_DIR": REPO}
# a value that needs quoting: a space, a quote and a shell character
ARGS = ["--config", "launchers/recipes/demo_cpu.yaml", "data.path=/data/my file's.jsonl", "grpo.kl_coef=0.001"]
PYTHON = sys.executable
NODE_ENV = {"TORCH_NCCL_ASYNC_ERROR_HANDLING": "1", "NCCL_DEBUG": "WARN", "OMP_NUM_THREADS": "8"}


def torchrun(program, args):
    return [PYTHON, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=8", "--rdzv_backend=c10d",
            f"--rdzv_endpoint=gpu-07:{PORT}", f"--rdzv_id={JOB_ID}", "--max_restarts=0",
            os.path.join(REPO, program), *args]


@pytest.mark.parametrize("job, program", [("train", "launchers/train.py"), ("score", "launchers/score.py")])
def test_each_node_runs_torchrun_with_the_same_rendezvous(job, program):
    for node_rank in (0, 1):  # as srun sets it on each node
        launches = node_launches({**ALLOCATION, "SLURM_NODEID": str(node_rank)}, job, ARGS)
        assert launches == [Launch(NODE_ENV, torchrun(program, ARGS))]


def test_user_settings_are_kept_and_network_variables_pass_through():
    env = {**ALLOCATION, "SLURM_NODEID": "1", "NCCL_DEBUG": "INFO", "OMP_NUM_THREADS": "4",
           "NCCL_SOCKET_IFNAME": "ib0", "MASTER_PORT": "29555", "HOME": "/home/me"}
    [launch] = node_launches(env, "train", ARGS)
    assert launch.env == {"TORCH_NCCL_ASYNC_ERROR_HANDLING": "1", "NCCL_DEBUG": "INFO", "OMP_NUM_THREADS": "4",
                          "NCCL_SOCKET_IFNAME": "ib0"}
    assert "--rdzv_endpoint=gpu-07:29555" in launch.argv


def test_gpu_count_from_gpus_per_node_and_clear_errors_for_missing_variables():
    env = {k: v for k, v in ALLOCATION.items() if k != "SLURM_GPUS_ON_NODE"}
    [launch] = node_launches({**env, "SLURM_NODEID": "0", "SLURM_GPUS_PER_NODE": "h100:4"}, "train", ARGS)
    assert "--nproc_per_node=4" in launch.argv
    with pytest.raises(ValueError, match="SLURM_GPUS_ON_NODE nor SLURM_GPUS_PER_NODE"):
        node_launches({**env, "SLURM_NODEID": "0"}, "train", ARGS)
    for name in ("SLURM_JOB_NODELIST", "SLURM_NNODES", "SLURM_JOB_ID", "SLURM_NODEID"):
        env = {k: v for k, v in {**ALLOCATION, "SLURM_NODEID": "0"}.items() if k != name}
        with pytest.raises(ValueError, match=f"slurm variable {name} is not set"):
            node_launches(env, "score", ARGS)
    with pytest.raises(ValueError, match="SLURM_NNODES=3 but SLURM_JOB_NODELIST"):
        node_launches({**ALLOCATION, "SLURM_NNODES": "3", "SLURM_NODEID": "0"}, "score", ARGS)
    with pytest.raises(ValueError, match="SLURM_GPUS_ON_NODE='eight': expected an integer"):
        node_launches({**ALLOCATION, "SLURM_GPUS_ON_NODE": "eight", "SLURM_NODEID": "0"}, "score", ARGS)


EVAL_ARGS = ["--model", "/models/my model", "--benchmarks", "math500,aime24,humaneval", "output_dir=/results"]


@pytest.mark.parametrize("tp, expected", [
    # 2 model copies of 4 GPUs per node: 4 shards, node-major
    (4, {0: [("0,1,2,3", 0), ("4,5,6,7", 1)], 1: [("0,1,2,3", 2), ("4,5,6,7", 3)]}),
    # one copy of 8 GPUs per node: 2 shards
    (8, {0: [("0,1,2,3,4,5,6,7", 0)], 1: [("0,1,2,3,4,5,6,7", 1)]}),
])
def test_eval_deals_every_benchmarks_problems_over_every_model_copy(tp, expected):
    args = [*EVAL_ARGS, f"generation.tensor_parallel_size={tp}"]
    for node_rank in (0, 1):
        launches = node_launches({**ALLOCATION, "SLURM_NODEID": str(node_rank)}, "eval", args)
        copies = 8 // tp
        assert launches == [
            Launch({"TORCH_NCCL_ASYNC_ERROR_HANDLING": "1", "NCCL_DEBUG": "WARN",
                    "OMP_NUM_THREADS": str(64 // copies), "CUDA_VISIBLE_DEVICES": gpus,
                    "VLLM_PORT": str(25000 + (int(ALLOCATION["SLURM_JOB_ID"]) % 9 * 8 + slot) * 100),
                    "VLLM_WORKER_MULTIPROC_METHOD": "spawn"},
                   [PYTHON, os.path.join(REPO, "eval", "run.py"), *args, f"num_shards={2 * copies}",
                    f"shard_index={shard}", f"grading.num_workers={64 // copies}"])
            for slot, (gpus, shard) in enumerate(expected[node_rank])]
    with pytest.raises(ValueError, match="'num_shards' and 'shard_index' are set by gainrl.slurm"):
        node_launches({**ALLOCATION, "SLURM_NODEID": "0"}, "eval", [*args, "num_shards=4", "shard_index=1"])


def test_eval_refuses_a_model_copy_larger_than_a_node():
    with pytest.raises(ValueError, match="generation.tensor_parallel_size.*16.*8 GPUs"):
        node_launches({**ALLOCATION, "SLURM_NODEID": "0"}, "eval",
                      [*EVAL_ARGS, "generation.tensor_parallel_size=16"])


def test_summarize_merges_the_shards_and_rebuilds_the_run_summary(tmp_path):
    from gainrl.evaluation.benchmarks import load_problems, resolve_benchmark
    from gainrl.evaluation.results import Shard, append_records, open_run
    folder = tmp_path / "ckpt"
    ids = {name: [p.id for p in load_problems(resolve_benchmark(name), limit=4)] for name in ("math500", "aime24", "humaneval")}

    def grade(benchmark, shard, correct):  # what eval/run.py's shard `shard` appends for these problems
        path = folder / benchmark
        open_run(str(path), {"model": "m"}, 1, shard)
        append_records(shard.records_path(str(path)), [
            {"id": i, "sample": 0, "correct": correct(i), "finish_reason": "stop", "num_tokens": 10, "reason": "r"}
            for i in shard.share(ids[benchmark])])
    for index in range(3):  # math500 over 3 shards: 2 of its 4 problems right
        grade("math500", Shard(index, 3), lambda i: i in ids["math500"][:2])
    grade("aime24", Shard(), lambda i: i == ids["aime24"][0])  # aime24 by one process: 1 of 4
    grade("humaneval", Shard(0, 2), lambda i: True)  # humaneval: shard 1 of 2 never ran
    # what the last of several concurrent processes left: only its own benchmark
    (folder / "summary.json").write_text(json.dumps({"name": "ckpt", "benchmarks": []}))
    args = ["--model", "/models/ckpt", "--benchmarks", "math500,aime24", f"output_dir={tmp_path}", "--limit", "4"]
    assert slurm.summarize_eval(args) == str(folder / "summary.md")
    table = (folder / "summary.md").read_text()
    assert "| math500 | 4 | 1 | 50.0 |" in table and "| aime24 | 4 | 1 | 25.0 |" in table
    merged = [json.loads(line)["id"] for line in (folder / "math500" / "samples.jsonl").read_text().splitlines()]
    assert merged == ids["math500"]  # in problem order
    with pytest.raises(ValueError, match="humaneval not fully graded"):
        slurm.summarize_eval([*args[:3], "math500,aime24,humaneval", *args[4:]])


def run_batch_script(name, args, env, **kwargs):
    """A launchers/slurm script under bash, with only the given environment (no real slurm here)."""
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "GAINRL_PYTHON": PYTHON}
    return subprocess.run(["bash", os.path.join(REPO, "launchers", "slurm", name), *args], env={**base, **env},
                          cwd="/", capture_output=True, text=True, timeout=120, **kwargs)


def test_dry_runs_print_every_node_command_and_run_nothing():
    env = {**ALLOCATION, "GAINRL_DRY_RUN": "1", "SLURM_NODEID": "0"}  # the batch step runs on node 0
    stop_file = os.path.join(REPO, f".gainrl-stop-{JOB_ID}")
    for name, program, extra in (("train.sbatch", "launchers/train.py", ["train.resume=auto",
                                                                          f"train.stop_file={stop_file}"]),
                                 ("score.sbatch", "launchers/score.py", [])):
        result = run_batch_script(name, ARGS, env)
        assert result.returncode == 0, result.stderr
        command = Launch(NODE_ENV, torchrun(program, ARGS + extra)).shell()
        assert result.stdout.splitlines() == ["# node 0 of 2: gpu-07 (1 process)", command,
                                              "# node 1 of 2: gpu-08 (1 process)", command]
    assert not os.path.exists(stop_file)
    result = run_batch_script("eval.sbatch", [*EVAL_ARGS, "generation.tensor_parallel_size=8"], env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "# node 0 of 2: gpu-07 (1 process)" and lines[2] == "# node 1 of 2: gpu-08 (1 process)"
    assert lines[1].endswith("num_shards=2 shard_index=0 grading.num_workers=64")
    assert lines[3].endswith("num_shards=2 shard_index=1 grading.num_workers=64")


def test_dry_run_errors_name_the_missing_variable():
    env = {k: v for k, v in ALLOCATION.items() if k != "SLURM_GPUS_ON_NODE"}
    result = run_batch_script("score.sbatch", ARGS, {**env, "GAINRL_DRY_RUN": "1"})
    assert result.returncode == 2 and "SLURM_GPUS_ON_NODE nor SLURM_GPUS_PER_NODE" in result.stderr
    env = {k: v for k, v in ALLOCATION.items() if k != "SLURM_JOB_ID"}
    result = run_batch_script("train.sbatch", ARGS, {**env, "GAINRL_DRY_RUN": "1"})
    assert result.returncode != 0 and "SLURM_JOB_ID is not set" in result.stderr


FAKE_SRUN = """\
#!/bin/bash
# srun as the trainer behaves: record the command, then run until the stop file appears, "save" and exit 0
echo "$@" > "$FAKE_DIR/srun_args"
stop_file=""
for arg in "$@"; do [[ "$arg" == train.stop_file=* ]] && stop_file="${arg#train.stop_file=}"; done
for _ in $(seq 200); do
    if [[ -n "$FAKE_SRUN_EXIT" ]]; then exit "$FAKE_SRUN_EXIT"; fi
    if [[ -f "$stop_file" ]]; then  # the trainer checkpoints, removes the stop file, exits 0 (or FAKE_STOP_EXIT)
        sleep 0.3; rm -f "$stop_file"; touch "$FAKE_DIR/srun_done"; exit "${FAKE_STOP_EXIT:-0}"
    fi
    sleep 0.05
done
exit 99
"""


def fake_slurm_commands(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(FAKE_SRUN)
    # records whether srun had ended: the job must not requeue before the checkpoint is saved
    (bin_dir / "scontrol").write_text('#!/bin/bash\n'
                                      'echo "$@ $(ls "$FAKE_DIR" | tr "\\n" " ")" >> "$FAKE_DIR/scontrol_calls"\n')
    for tool in ("srun", "scontrol"):
        os.chmod(bin_dir / tool, 0o755)
    return {**ALLOCATION, "SLURM_SUBMIT_DIR": str(tmp_path), "FAKE_DIR": str(tmp_path), "GAINRL_PYTHON": PYTHON,
            "PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": os.environ.get("HOME", "/tmp")}


def stage_scripts(tmp_path):
    """The scripts run from the submit dir (a copy of launchers/slurm), so the stop file lands in tmp_path."""
    (tmp_path / "launchers" / "slurm").mkdir(parents=True)
    for name in ("common.sh", "train.sbatch"):
        text = open(os.path.join(REPO, "launchers", "slurm", name)).read()
        (tmp_path / "launchers" / "slurm" / name).write_text(text)
    return str(tmp_path / "launchers" / "slurm" / "train.sbatch")


def start_and_signal(script, env, tmp_path):
    job = subprocess.Popen(["bash", script, *ARGS], env=env, cwd="/", stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 20
    while not (tmp_path / "srun_args").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    assert job.poll() is None, job.stdout.read()  # a stale stop file was removed: the "trainer" runs on
    job.send_signal(signal.SIGUSR1)
    output, _ = job.communicate(timeout=30)
    return job.returncode, output


def test_train_script_does_not_requeue_a_run_that_failed_after_the_stop_request(tmp_path):
    env, script = fake_slurm_commands(tmp_path), stage_scripts(tmp_path)
    returncode, output = start_and_signal(script, {**env, "FAKE_STOP_EXIT": "1"}, tmp_path)
    assert returncode == 1 and "requeueing" not in output, output
    assert not (tmp_path / "scontrol_calls").exists()


def test_train_script_checkpoints_and_requeues_on_usr1(tmp_path):
    env, script = fake_slurm_commands(tmp_path), stage_scripts(tmp_path)
    stop_file = tmp_path / f".gainrl-stop-{JOB_ID}"
    stop_file.write_text("")  # left by the previous run: must not stop this one (start_and_signal checks)
    returncode, output = start_and_signal(script, env, tmp_path)
    assert returncode == 0, output
    assert "requeueing job 4242" in output
    calls = (tmp_path / "scontrol_calls").read_text().splitlines()
    assert len(calls) == 1 and calls[0].startswith(f"requeue {JOB_ID} ") and "srun_done" in calls[0]
    assert not stop_file.exists()
    srun_args = (tmp_path / "srun_args").read_text().split()
    assert srun_args[:5] == ["--nodes=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1", PYTHON, "-m"]
    assert srun_args[5:9] == ["gainrl.slurm", "node", "train", "--"]
    assert srun_args[-2:] == ["train.resume=auto", f"train.stop_file={stop_file}"]


def test_train_script_passes_on_a_failure_without_requeue(tmp_path):
    env, script = fake_slurm_commands(tmp_path), stage_scripts(tmp_path)
    result = subprocess.run(["bash", script, *ARGS], env={**env, "FAKE_SRUN_EXIT": "3"}, cwd="/",
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 3, result.stdout + result.stderr
    assert not (tmp_path / "scontrol_calls").exists()


RANKS_PROGRAM = """\
import json, os, sys
import torch, torch.distributed as dist
dist.init_process_group("gloo")
total = torch.tensor([float(dist.get_rank())])
dist.all_reduce(total)
keys = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "GROUP_RANK", "MASTER_ADDR", "OMP_NUM_THREADS", "NCCL_DEBUG")
record = {k: os.environ.get(k) for k in keys}
record.update(total=total.item(), node=os.environ["TEST_NODE"], args=sys.argv[1:])
with open(os.path.join(os.environ["TEST_OUT"], f"rank{dist.get_rank()}.json"), "w") as f:
    json.dump(record, f)
dist.destroy_process_group()
"""


def test_two_node_commands_rendezvous_into_one_process_group(tmp_path):
    """Both "nodes" on this machine (localhost and 127.0.0.1), 2 CPU ranks each, over gloo: the two
    node commands, started side by side, form one group of 4 ranks, each node holding a block of 2."""
    from gainrl.dist import free_port
    program = tmp_path / "ranks.py"
    program.write_text(RANKS_PROGRAM)
    env = {"SLURM_JOB_NODELIST": "localhost,127.0.0.1", "SLURM_NNODES": "2", "SLURM_JOB_ID": "77",
           "SLURM_GPUS_ON_NODE": "2", "SLURM_CPUS_PER_TASK": "2", "MASTER_PORT": str(free_port())}
    args = ["--config", "x.yaml", "key=a value"]
    processes = []
    for node_rank in (0, 1):
        alloc = slurm.read_allocation({**env, "SLURM_NODEID": str(node_rank)})
        launch = slurm.torchrun_launch(env, alloc, str(program), args)
        child_env = {**os.environ, **env, **launch.env, "TEST_OUT": str(tmp_path), "TEST_NODE": str(node_rank)}
        processes.append(subprocess.Popen(launch.argv, env=child_env, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=120)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], "\n".join(outputs)
    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(4)]
    assert all(r["WORLD_SIZE"] == "4" and r["total"] == 6.0 and r["args"] == args for r in records)
    assert all(r["OMP_NUM_THREADS"] == "1" and r["NCCL_DEBUG"] == "WARN" for r in records)
    # c10d numbers the nodes itself: each node's 2 processes hold one block of consecutive ranks
    for record in records:
        assert int(record["RANK"]) == 2 * int(record["GROUP_RANK"]) + int(record["LOCAL_RANK"])
    groups_by_node = {}
    for record in records:
        groups_by_node.setdefault(record["node"], set()).add(record["GROUP_RANK"])
    assert sorted(tuple(groups) for groups in groups_by_node.values()) == [("0",), ("1",)]


def test_command_line_reports_errors_in_one_line():
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    result = subprocess.run([PYTHON, "-m", "gainrl.slurm", "plan", "train", "--", *ARGS], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == ("gainrl.slurm: error: slurm variable SLURM_JOB_NODELIST is not set (the nodes "
                                     "of the job); run inside a slurm job (sbatch, salloc) or set it by hand")
    assert slurm.USAGE in subprocess.run([PYTHON, "-m", "gainrl.slurm"], cwd=REPO,
                                                          capture_output=True, text=True).stderr


def test_a_node_execs_one_launch_and_waits_for_several():
    """One launch replaces the node's task (same process id, so slurm's signals reach the program);
    several run side by side and the first failure's exit code is the task's."""
    one = [Launch({"GAINRL_TEST": "set"}, ["sh", "-c", 'echo "$GAINRL_TEST $$"'])]
    several = [Launch({}, ["sh", "-c", "sleep 0.2; exit 0"]), Launch({}, ["sh", "-c", "exit 3"])]
    code = ("import os, sys; from gainrl.slurm import Launch, run_launches; print(os.getpid(), flush=True); "
            "sys.exit(run_launches(eval(sys.argv[1])))")
    result = subprocess.run([PYTHON, "-c", code, repr(one)], cwd=REPO, capture_output=True, text=True, timeout=60)
    pid, line = result.stdout.splitlines()
    assert result.returncode == 0 and line == f"set {pid}"
    result = subprocess.run([PYTHON, "-c", code, repr(several)], cwd=REPO, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 3, result.stderr


def test_the_eval_slots_of_a_node_get_disjoint_vllm_port_ranges_clear_of_the_rendezvous():
    from gainrl.slurm import BASE_PORT, NUM_PORTS, VLLM_PORTS_PER_SLOT, vllm_port
    rendezvous = range(BASE_PORT, BASE_PORT + NUM_PORTS)
    for job in ("1", "7", "123456"):
        ranges = [range(vllm_port({}, job, slot), vllm_port({}, job, slot) + VLLM_PORTS_PER_SLOT) for slot in range(8)]
        ports = [p for r in ranges for p in r]
        assert len(set(ports)) == len(ports) and not set(ports) & set(rendezvous) and max(ports) < 32768
    assert [vllm_port({"VLLM_PORT": "40000"}, "1", slot) for slot in (0, 1, 2)] == [40000, 40100, 40200]
    with pytest.raises(ValueError, match="eval slot 8: more than 8 model copies on a node; set VLLM_PORT"):
        vllm_port({}, "1", 8)  # a 16-GPU node at tensor parallel 1 would otherwise reuse slot 0's ports
    launches = node_launches({**ALLOCATION, "SLURM_NODEID": "0", "VLLM_WORKER_MULTIPROC_METHOD": "fork"}, "eval",
                             [*EVAL_ARGS, "generation.tensor_parallel_size=2"])
    assert {launch.env["VLLM_WORKER_MULTIPROC_METHOD"] for launch in launches} == {"fork"}  # the user's choice kept
    assert len({launch.env["VLLM_PORT"] for launch in launches}) == len(launches) == 4
