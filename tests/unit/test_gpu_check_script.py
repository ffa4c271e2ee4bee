"""benchmarks/gpu_check.py runs on CPU with --smoke (the same code on a tiny shape), printing its three lines:
the script a GPU session runs in its few minutes must not fail there on a typo."""
import subprocess
import sys

from tests.helpers import REPO


def test_the_gpu_check_script_runs_its_three_checks_on_a_tiny_shape():
    result = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--smoke"], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.split(":")[0] in ("learner", "memory", "scorer")]
    assert [line.split(":")[0] for line in lines] == ["learner", "memory", "scorer"], result.stdout
    assert "finite=True" in lines[0] and "ratio" in lines[2]
