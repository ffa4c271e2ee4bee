"""How the tests launch processes: the child env, torchrun/deepspeed commands, run, and the demo recipe's inputs.

Every command runs with cwd=REPO; the env is the caller's plus unbuffered output, 1 OpenMP thread
(2 CPU ranks share the machine) and REPO on PYTHONPATH (scripts under tests/ import `tests`).
"""
import os
import subprocess
import sys

from tests.helpers import REPO

BIN = os.path.dirname(sys.executable)
DEMO = os.path.join(REPO, "launchers", "recipes", "arith_cpu.yaml")  # the small, fast recipe the tests train


def child_env(**extra: str) -> dict:
    """The caller's environment with the test settings; `extra` wins over both (a node's own OMP_NUM_THREADS)."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO, **extra}


def torchrun(script: str, nproc: int, *args: str) -> list:
    return [os.path.join(BIN, "torchrun"), "--standalone", f"--nproc_per_node={nproc}", script, *args]


def deepspeed(script: str, nproc: int, *args: str) -> list:
    return [os.path.join(BIN, "deepspeed"), "--num_gpus", str(nproc), script, *args]


def run(cmd: list, timeout: float, env=None, **kwargs) -> subprocess.CompletedProcess:
    """`cmd` to its end, output captured as text; env defaults to child_env()."""
    return subprocess.run(cmd, cwd=REPO, env=child_env() if env is None else env, capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def expect_ok(cmd: list, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """run(), asserting exit status 0 and showing the output's tails otherwise."""
    result = run(cmd, timeout, **kwargs)
    assert result.returncode == 0, \
        f"{' '.join(map(str, cmd))} gave {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return result


def demo_overrides(tmp, output_dir=None) -> list:
    """The demo recipe's model, data and scores in the folder `tmp` (built there by its first run), and
    train.output_dir where given."""
    overrides = [f"model.path={tmp}/model", f"data.path={tmp}/train.jsonl", f"scorer.output_dir={tmp}/scores",
                 f"data.build_arithmetic.test_path={tmp}/test.jsonl", f"validation.path={tmp}/test.jsonl"]
    return overrides + ([f"train.output_dir={output_dir}"] if output_dir is not None else [])
