"""launchers/pass_rate.py with vLLM: 2 ranks give the file 1 process gives, up to sampling (each rank's engine
has its own seed): the same rows and sample counts, and per-row rates that agree as two samplings of the
same rates do (a row given another row's counts would not); a finished file is reused."""
import sys

import numpy as np
import pytest

from gainrl.scores import read_score_file
from tests.launch import DEMO, deepspeed, demo_overrides, expect_ok

SCRIPT = "launchers/pass_rate.py"


@pytest.mark.slow  # 80 s; CI runs the job on 2 ranks in tests/dist/test_experiment_dist.py
def test_two_ranks_equal_one_process_and_a_finished_file_is_reused(tmp_path, copy_inputs):
    inputs = copy_inputs(tmp_path / "inputs")
    args = ["--config", DEMO, *demo_overrides(inputs), "pass_rate.samples=4", "pass_rate.prompts_per_batch=64"]
    two, one = tmp_path / "two.json", tmp_path / "one.json"
    expect_ok(deepspeed(SCRIPT, 2, *args, f"pass_rate.output={two}"), 600)
    expect_ok([sys.executable, SCRIPT, *args, "pass_rate.prompts_per_batch=100", f"pass_rate.output={one}"], 300)
    a, b = read_score_file(str(two)), read_score_file(str(one))
    assert a.metadata["key"] == b.metadata["key"] and a.metadata["world_size"] == 2
    assert a.columns["id"] == b.columns["id"] and a.metadata["dataset_rows"] == len(a.columns["id"])
    assert a.columns["num_samples"] == b.columns["num_samples"] == [4] * a.num_rows
    rate_a, rate_b = np.asarray(a.columns["pass_rate"]), np.asarray(b.columns["pass_rate"])
    assert 0.1 < rate_a.mean() < 0.9 and abs(rate_a.mean() - rate_b.mean()) < 0.1
    assert np.corrcoef(rate_a, rate_b)[0, 1] > 0.5, np.corrcoef(rate_a, rate_b)
    assert a.columns["prompt_tokens"] == b.columns["prompt_tokens"]
    assert a.metadata["rollout_tokens"] == sum(a.columns["response_tokens"]) and a.metadata["seconds"] > 0
    again = expect_ok([sys.executable, SCRIPT, *args, f"pass_rate.output={one}"], 300)
    assert "pass rates already computed" in again.stderr
    assert read_score_file(str(one)).metadata == b.metadata
