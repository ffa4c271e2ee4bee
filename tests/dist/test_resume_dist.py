"""Operations of a 2-rank CPU training run under the deepspeed launcher: exact resume after a stop
request and a SIGKILL, a rank killed mid-run, and a run whose loss is NaN.

The exact-resume test: 6 steps in one go (3 epochs x 2 steps) against 1 step then a stop request
(a mid-epoch checkpoint), then a run SIGKILLed once step 2 is checkpointed (an epoch's last step,
before the sampler's update), then a run resumed from there to the end. The
sampler's draws, every step's metrics and the final weights must be bitwise equal: on this CPU
stack (gloo, torch CPU kernels at a fixed thread count, vLLM-CPU sampling from the restored torch
generator) every part is deterministic; only the timings differ.
"""
import json
import os
import shutil
import signal
import subprocess
import time

import pytest
import torch
from safetensors.torch import load_file, save_file

from gainrl import checkpoint
from gainrl.config import TrainRunConfig, layered_overrides, load_config
from gainrl.metric_names import phase_of
from tests.helpers import REPO
from tests.launch import DEMO, child_env, deepspeed, demo_overrides, expect_ok, run

SHORT = ["train.epochs=3", "sampler.prompts_per_epoch=24", "train.prompts_per_step=12", "train.checkpoint_every=2"]
TIMING_KEYS = ("elapsed_s", "tokens_per_s")


def command(inputs, run_dir, *overrides):
    return deepspeed("launchers/train.py", 2, "--config", DEMO, *layered_overrides(
        demo_overrides(inputs, run_dir) + ["validation.every_epochs=1", "log.tensorboard=false"], list(overrides)))


def train(inputs, run_dir, *overrides):
    return run(command(inputs, run_dir, *overrides), 600)


def start(inputs, run_dir, *overrides, log):
    return subprocess.Popen(command(inputs, run_dir, *overrides), cwd=REPO, env=child_env(), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)  # a group: killed as one


def wait_for(condition, process, timeout_s, what):
    deadline = time.time() + timeout_s
    while not condition():
        assert process.poll() is None, f"the run ended (rc={process.returncode}) before {what}"
        assert time.time() < deadline, f"no {what} after {timeout_s} s"
        time.sleep(0.2)


def records(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def without_timings(rows):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS and phase_of(k) is None} for r in rows]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, built_inputs):
    """The demo's model (warm-started) and data (tests/dist/conftest.py); scored by the first run."""
    folder = tmp_path_factory.mktemp("inputs")
    shutil.copytree(built_inputs, folder, dirs_exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def uninterrupted(inputs):
    expect_ok(command(inputs, inputs / "one_go", *SHORT), 600)
    return inputs / "one_go"


def test_resume_after_stop_and_sigkill_equals_one_go(inputs, uninterrupted, tmp_path):
    run_dir = tmp_path / "interrupted"
    # 1) a stop request (what slurm's time-limit signal does): seen once step 1 has generated, before its
    # update; the state before step 1 is checkpointed (as step 0) and the run exits 0. An earlier run's stop
    # file, there before the start, is reported and not honoured; touched once the run has said so (then
    # it validates and generates for seconds), it is a request.
    stop_file = tmp_path / "stop"
    stop_file.touch()
    earlier = stop_file.stat().st_mtime_ns - 10**9
    os.utime(stop_file, ns=(earlier, earlier))
    log_path = tmp_path / "stopped.log"
    with open(log_path, "w") as log:
        process = start(inputs, run_dir, *SHORT, f"train.stop_file={stop_file}", log=log)
        wait_for(lambda: "was there before this run started" in log_path.read_text(), process, 300,
                 "the warning about the earlier run's stop file")
        stop_file.touch()
        assert process.wait(600) == 0, log_path.read_text()[-4000:]
    assert f"stopping (stop file {stop_file})" in log_path.read_text()
    assert sorted(n for n in os.listdir(run_dir / "checkpoints") if n.startswith("step_")) == ["step_00000000"]
    assert not (run_dir / "final").exists()
    assert not stop_file.exists()  # honoured, so removed: the next run must not stop on it

    # 2) resumed from step 1, then SIGKILLed (launcher and ranks) as soon as step 2 is checkpointed
    with open(tmp_path / "killed.log", "w") as log:
        process = start(inputs, run_dir, *SHORT, log=log)
        try:
            wait_for(lambda: (run_dir / "checkpoints" / "step_00000002").is_dir(), process, 300, "checkpoint 2")
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert not (run_dir / "final").exists()
    assert "resumed from" in (tmp_path / "killed.log").read_text()

    # 3) resumed again (resume=auto, the default) to the end
    resumed = expect_ok(command(inputs, run_dir, *SHORT), 600)
    assert f"resumed from {run_dir}/checkpoints/step_00000002: step 2, epoch 0" in resumed.stderr

    one_go, pieced = records(uninterrupted / "metrics.jsonl"), records(run_dir / "metrics.jsonl")
    assert [r["step"] for r in pieced] == [1, 2, 3, 4, 5, 6]
    assert without_timings(pieced) == without_timings(one_go)  # losses, rewards, mu, grad norms: bitwise
    assert records(run_dir / "draws.jsonl") == records(uninterrupted / "draws.jsonl")
    assert [r["epoch"] for r in records(run_dir / "validation.jsonl")] == [0, 1, 2, 3]
    assert records(run_dir / "validation.jsonl") == records(uninterrupted / "validation.jsonl")
    a, b = load_file(str(uninterrupted / "final" / "model.safetensors")), load_file(str(run_dir / "final" /
                                                                                         "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the newest 2 complete checkpoints are kept; no partial folder is left
    assert sorted(n for n in os.listdir(run_dir / "checkpoints") if n.startswith("step_")) == \
        ["step_00000004", "step_00000006"]


def test_changed_settings_and_mixed_histories_are_refused_on_resume(inputs, uninterrupted):
    """Against the real run's checkpoints, in this process (the launcher's exit 2 with a config error's
    message: tests/dist/test_train_dist.py)."""
    def resume_error(*overrides):
        cfg = load_config(command(inputs, uninterrupted, *SHORT, *overrides)[4:], TrainRunConfig)
        with pytest.raises(ValueError) as error:
            checkpoint.find_resume_point(cfg)
        return str(error.value)
    assert "config key 'optim.lr': differs from the config of checkpoint" in resume_error("optim.lr=1e-3")
    assert "holds checkpoints of an earlier run" in resume_error("train.resume=never")
    earlier = uninterrupted / "checkpoints" / "step_00000004"
    assert f"holds checkpoints after {earlier}" in resume_error(f"train.resume={earlier}")


def snapshot(folder) -> dict:
    """Every file under `folder` with its size and modification time: what a refused start must leave alone."""
    return {path: (os.path.getsize(path), os.path.getmtime(path))
            for parent, _, names in os.walk(folder) for path in (os.path.join(parent, n) for n in names)}


def test_damaged_checkpoints_and_other_runs_results_are_refused_by_name(inputs, uninterrupted, tmp_path):
    """In this process, against copies of the real run's folder: each damage names its file and the way on,
    before any model is built, and changes nothing there."""
    def refusal(name, damage):
        folder = tmp_path / name
        shutil.copytree(uninterrupted, folder)
        newest = checkpoint.complete_checkpoints(folder)[-1]
        damage(folder, newest)
        before = snapshot(folder)
        cfg = load_config(command(inputs, folder, *SHORT)[4:], TrainRunConfig)
        with pytest.raises(ValueError) as error:
            checkpoint.find_resume_point(cfg)
        assert snapshot(folder) == before
        return str(error.value), newest, checkpoint.complete_checkpoints(folder)[-2]

    def truncate(folder, newest):
        os.truncate(os.path.join(newest, "zero_pp_rank_1_mp_rank_00_optim_states.pt"), 1000)
    message, newest, earlier = refusal("truncated", truncate)
    shard = os.path.join(newest, "zero_pp_rank_1_mp_rank_00_optim_states.pt")
    assert f"checkpoint {newest}: {shard} is 1000 bytes" in message and "when written (truncated or damaged)" in message
    assert f"move {newest} out of" in message and f"train.resume=auto then continues from {earlier}" in message

    message, newest, _ = refusal("missing", lambda folder, newest: os.remove(os.path.join(newest, "rng",
                                                                                         "rank_00001.pt")))
    assert f"{os.path.join(newest, 'rng', 'rank_00001.pt')} is missing" in message

    def cut_state(folder, newest):
        path = os.path.join(newest, checkpoint.STATE_FILE)
        os.truncate(path, os.path.getsize(path) // 2)
    message, newest, _ = refusal("half_state", cut_state)
    assert f"{os.path.join(newest, checkpoint.STATE_FILE)} is damaged (not JSON:" in message

    def binary_state(folder, newest):
        with open(os.path.join(newest, checkpoint.STATE_FILE), "wb") as f:
            f.write(b"\xff\xfe\x00garbage")
    message, newest, _ = refusal("binary_state", binary_state)
    assert f"{os.path.join(newest, checkpoint.STATE_FILE)} is damaged (not UTF-8 text at byte 0)" in message

    gone = tmp_path / "checkpoints_deleted"  # to save disk: final/, metrics, draws, validation remain
    shutil.copytree(uninterrupted, gone)
    shutil.rmtree(gone / "checkpoints")
    before = snapshot(gone)
    with pytest.raises(ValueError, match=r"config key 'train.output_dir': .* holds another run's results \(final, "
                                         r"metrics.jsonl, draws.jsonl, validation.jsonl\) and no checkpoint"):
        checkpoint.find_resume_point(load_config(command(inputs, gone, *SHORT)[4:], TrainRunConfig))
    assert snapshot(gone) == before


def test_a_rank_that_cannot_load_its_shard_is_named_and_ends_the_run(inputs, uninterrupted, tmp_path):
    """Through the launcher: rank 1's optimizer shard damaged in place (its size unchanged, so only the load
    finds it). Rank 1 names the file; rank 0 says another rank failed; nothing hangs or changes."""
    folder = tmp_path / "damaged"
    shutil.copytree(uninterrupted, folder)
    shard = os.path.join(checkpoint.complete_checkpoints(folder)[-1], "zero_pp_rank_1_mp_rank_00_optim_states.pt")
    with open(shard, "r+b") as f:
        f.seek(-2000, os.SEEK_END)
        f.write(bytes(2000))
    before = snapshot(folder)
    started = time.time()
    longer = [o for o in SHORT if not o.startswith("train.epochs=")] + ["train.epochs=4"]  # a resumable change
    result = train(inputs, folder, *longer, "dist.timeout_s=60")
    assert result.returncode == 1 and time.time() - started < 120, result.stderr[-3000:]
    assert "error (rank 1 of 2): RuntimeError: rank 1: checkpoint" in result.stderr
    assert f"{shard} does not load" in result.stderr
    assert "stopped (rank 0 of 2): another rank failed" in result.stderr and "Invalid process group" not in result.stderr
    assert {k: v for k, v in snapshot(folder).items() if "/logs/" not in k} == \
        {k: v for k, v in before.items() if "/logs/" not in k}


def test_an_output_folder_that_is_a_file_fails_before_any_model(inputs, tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the run folder should be")
    result = train(inputs, blocker, *SHORT)
    assert result.returncode == 2
    message = f"error: config key 'train.output_dir': {blocker} is a file, not a folder"
    assert result.stderr.count(message) == 1, result.stderr[-3000:]  # rank 0 prints what both ranks found
    assert "policy, if ZeRO-3" not in result.stdout + result.stderr  # no model was built
    assert "reference model" not in result.stdout + result.stderr
    assert blocker.read_text() == "a file where the run folder should be"


def rank_pids(marker: str) -> dict[int, int]:
    """{local rank: pid} of the training processes whose command line holds `marker`."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().decode().split("\0")
        except OSError:
            continue
        if "launchers/train.py" in args and any(marker in a for a in args):
            for rank in (0, 1):
                if f"--local_rank={rank}" in args:
                    found[rank] = int(pid)
    return found


def test_a_killed_rank_ends_the_whole_run_quickly(inputs, uninterrupted, tmp_path):
    run_dir = tmp_path / "victim"
    with open(tmp_path / "victim.log", "w") as log:
        process = start(inputs, run_dir, "train.epochs=50", "sampler.prompts_per_epoch=24",
                        "train.prompts_per_step=12", "dist.timeout_s=60", log=log)
        try:
            wait_for(lambda: (run_dir / "metrics.jsonl").exists() and (run_dir / "metrics.jsonl").stat().st_size,
                     process, 300, "a first step")
            pids = rank_pids(str(run_dir))
            assert sorted(pids) == [0, 1], pids
            killed_at = time.time()
            os.kill(pids[1], signal.SIGKILL)
            rc = process.wait(timeout=120)
            took = time.time() - killed_at
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
    assert rc != 0
    assert took < 60, f"the run took {took:.0f} s to end after a rank died"
    assert not rank_pids(str(run_dir)), "a rank outlived the run"


@pytest.mark.slow  # 27 s; the loop's NaN handling with fakes: tests/unit/test_trainer.py
def test_nan_losses_stop_the_run_after_a_checkpoint(inputs, uninterrupted, tmp_path):
    """A model whose weights hold a NaN: every loss is NaN, every step is skipped (counted), and after
    train.max_nonfinite_steps of them the run saves a checkpoint and fails with the reason."""
    poisoned = tmp_path / "model"
    shutil.copytree(inputs / "model", poisoned)
    weights = load_file(str(poisoned / "model.safetensors"))
    name = next(k for k in weights if k.endswith("norm.weight") and "layers" not in k)  # the final norm
    weights[name][0] = float("nan")
    save_file(weights, str(poisoned / "model.safetensors"), metadata={"format": "pt"})
    score_file = next((inputs / "scores").glob("*.scores.json"))  # scored on the healthy model
    result = train(inputs, tmp_path / "run", "train.epochs=2", "sampler.prompts_per_epoch=24",
                   "train.prompts_per_step=12", "train.max_nonfinite_steps=2", "grpo.kl_coef=0",
                   f"model.path={poisoned}", f"train.score_file={score_file}",
                   "train.allow_score_file_from_other_model=true")
    assert result.returncode != 0
    assert "2 steps in a row had a NaN or inf loss (step 2)" in result.stderr, result.stderr[-4000:]
    assert (tmp_path / "run" / "checkpoints" / "step_00000002" / "train_state.json").exists()
    rows = records(tmp_path / "run" / "metrics.jsonl")
    assert [(r["step"], r["num_skipped_updates"], r["num_skipped_steps"]) for r in rows] == [(1, 1, 1), (2, 1, 2)]
    assert all(r["num_nonfinite_losses"] > 0 for r in rows)


def children(pid: int) -> list[int]:
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


@pytest.mark.slow  # 29 s; a killed rank under one launcher: test_a_killed_rank_ends_the_whole_run_quickly
def test_a_killed_rank_on_another_node_ends_the_survivor(inputs, uninterrupted, tmp_path):
    """No launcher watches both ranks here: two slurm "nodes" on this machine (gainrl.slurm's own
    node commands, one torchrun each, 1 rank per node). Killing node 1's rank must end node 0's
    rank through its next collective, not leave it waiting."""
    from gainrl import slurm
    from gainrl.dist import free_port
    run_dir = tmp_path / "two_nodes"
    env = {"SLURM_JOB_NODELIST": "localhost,127.0.0.1", "SLURM_NNODES": "2", "SLURM_JOB_ID": "78",
           "SLURM_GPUS_ON_NODE": "1", "SLURM_CPUS_PER_TASK": "1", "MASTER_PORT": str(free_port())}
    args = command(inputs, run_dir, "train.epochs=50", "sampler.prompts_per_epoch=24", "train.prompts_per_step=12",
                   "dist.timeout_s=30")[4:]  # the config and overrides after launchers/train.py
    agents = []
    with open(tmp_path / "nodes.log", "w") as log:
        try:
            for node_rank in (0, 1):
                alloc = slurm.read_allocation({**env, "SLURM_NODEID": str(node_rank)})
                launch = slurm.torchrun_launch(env, alloc, os.path.join(REPO, "launchers", "train.py"), args)
                agents.append(subprocess.Popen(launch.argv, cwd=REPO, env=child_env(**{**env, **launch.env}),
                                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
            wait_for(lambda: (run_dir / "metrics.jsonl").exists() and (run_dir / "metrics.jsonl").stat().st_size,
                     agents[0], 300, "a first step")
            survivor, victim = children(agents[0].pid), children(agents[1].pid)
            assert len(survivor) == 1 and len(victim) == 1, (survivor, victim)
            killed_at = time.time()
            os.kill(victim[0], signal.SIGKILL)
            codes = [agent.wait(timeout=120) for agent in agents]
            took = time.time() - killed_at
        finally:
            for agent in agents:
                if agent.poll() is None:
                    os.killpg(agent.pid, signal.SIGKILL)
    assert codes[0] != 0 and codes[1] != 0, codes
    assert took < 60, f"the surviving node took {took:.0f} s to end"
    assert not os.path.exists(f"/proc/{survivor[0]}"), "node 0's rank outlived its launcher"
