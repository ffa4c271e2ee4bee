"""The scorer across processes: 2 ranks (replicated and ZeRO-3) equal 1 process; kill and resume."""
import glob
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from gainrl.scores import read_score_file
from tests.helpers import BUNDLED_ROWS, REPO, SHARED
from tests.launch import child_env, deepspeed, expect_ok, run, torchrun

SCORE = "launchers/score.py"
TIMEOUT = 300


def recipe(tmp_path, model_dir, **scorer):
    scorer = {"max_tokens_per_batch": 1024, "plot": "false", **scorer}
    lines = [f"model: {{path: {model_dir}, dtype: float32}}", f"data: {{path: {BUNDLED_ROWS}, limit: 96}}", "scorer:"]
    lines += [f"  {k}: {v}" for k, v in scorer.items()]
    path = tmp_path / f"recipe-{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def single(*args):
    return [sys.executable, SCORE, *args]


def assert_same_scores(a_path, b_path, tol=1e-5):
    a, b = read_score_file(a_path), read_score_file(b_path)
    assert a.columns["id"] == b.columns["id"]
    assert a.metadata["dataset_fingerprint"] == b.metadata["dataset_fingerprint"]
    for name in ("c_intra", "c_inter", "score"):
        np.testing.assert_allclose(a.columns[name], b.columns[name], atol=tol, rtol=0, err_msg=name)
    assert a.columns["prompt_tokens"] == b.columns["prompt_tokens"]
    assert np.std(a.columns["score"]) > 1e-3  # the comparison is not between constants


@pytest.fixture(scope="module")
def one_process_scores(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("one")
    out = str(tmp / "one.scores.json")
    expect_ok(single("--config", recipe(tmp, tiny_model_dir), f"scorer.output={out}"), TIMEOUT)
    return out


def test_two_ranks_equal_one_process(tmp_path, tiny_model_dir, one_process_scores):
    out = str(tmp_path / "two.scores.json")
    expect_ok(torchrun(SCORE, 2, "--config", recipe(tmp_path, tiny_model_dir), f"scorer.output={out}"), TIMEOUT)
    assert_same_scores(one_process_scores, out)
    assert read_score_file(out).metadata["world_size"] == 2


def test_zero3_two_ranks_equal_one_process(tmp_path, tiny_model_dir, one_process_scores):
    out = str(tmp_path / "z3.scores.json")
    ds = os.path.join(REPO, "ds_configs", "zero3_inference.json")
    expect_ok(torchrun(SCORE, 2, "--config", recipe(tmp_path, tiny_model_dir, ds_config=ds), f"scorer.output={out}"),
              TIMEOUT)
    assert_same_scores(one_process_scores, out)


def test_killed_run_resumes_under_deepspeed_launcher(tmp_path, tiny_model_dir):
    # One row per batch, so that the run is still going when it is killed.
    cfg = recipe(tmp_path, tiny_model_dir, max_tokens_per_batch=1)
    out = str(tmp_path / "resumed.scores.json")
    cmd = deepspeed(SCORE, 2, "--config", cfg, f"scorer.output={out}", "data.limit=null")
    proc = subprocess.Popen(cmd, cwd=REPO, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline, scored = time.time() + TIMEOUT, 0
    while time.time() < deadline and proc.poll() is None:
        scored = sum(sum(1 for _ in open(p)) for p in glob.glob(out + ".partial/rank-*.jsonl"))
        if scored >= 20:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait()
    assert scored >= 20 and not os.path.exists(out), "the run was not killed part-way"
    done_before = sum(sum(1 for _ in open(p)) for p in glob.glob(out + ".partial/rank-*.jsonl"))

    result = expect_ok(cmd, TIMEOUT)
    table = read_score_file(out)
    assert table.num_rows == 512
    assert done_before - 2 <= table.metadata["resumed_rows"] <= done_before  # at most a torn line per rank lost
    assert f"{table.metadata['resumed_rows']} already scored" in result.stderr
    assert not os.path.exists(out + ".partial")

    fresh = str(tmp_path / "fresh.scores.json")
    expect_ok(single("--config", cfg, f"scorer.output={fresh}", "data.limit=null"), TIMEOUT)
    assert_same_scores(fresh, out)


def test_existing_score_file_for_another_dataset_is_refused(tmp_path, tiny_model_dir, one_process_scores):
    cfg = recipe(tmp_path, tiny_model_dir)
    result = run(single("--config", cfg, f"scorer.output={one_process_scores}", "data.limit=50"), TIMEOUT,
                 env=os.environ)  # the caller's env unchanged, as before
    assert result.returncode == 2
    assert "does not match the dataset in use" in result.stderr


@pytest.mark.skipif(not os.path.isdir(SHARED), reason="../shared is not beside the checkout")
def test_reference_order_correlation_is_reported(tmp_path, tiny_model_dir):
    order = os.path.join(SHARED, "data", "angle_sorted", "qwen2_5_05b_Instruct", "processed_gsm8k.pt")
    out = str(tmp_path / "ref.scores.json")
    result = expect_ok(single("--config", recipe(tmp_path, tiny_model_dir, reference_order=order, plot="true"),
                              f"scorer.output={out}"), TIMEOUT)
    summary = read_score_file(out).metadata["summary"]
    assert -1 <= summary["spearman_reference_order"] <= 1
    assert "Spearman(our order, reference order)" in result.stderr
    assert os.path.getsize(out.removesuffix(".json") + ".png") > 10_000


def test_bad_starts_fail_by_name_and_leave_no_partial_folder(tmp_path, tiny_model_dir):
    """One process each: a prompt over scorer.max_prompt_tokens, a weight file cut short, a DeepSpeed config
    that is not there (after the plan: the partial folder is made by the first batch, so none is left)."""
    out = tmp_path / "scores" / "x.scores.json"
    long_prompt = run(single("--config", recipe(tmp_path, tiny_model_dir), f"scorer.output={out}",
                             "scorer.max_prompt_tokens=20"), TIMEOUT)
    assert long_prompt.returncode == 2, long_prompt.stderr[-2000:]
    assert "error: config key 'scorer.max_prompt_tokens': row 'gsm8k-train-" in long_prompt.stderr
    assert "tokens, over the limit of 20" in long_prompt.stderr and "Traceback" not in long_prompt.stderr
    cut = tmp_path / "cut_model"
    shutil.copytree(tiny_model_dir, cut)
    os.truncate(cut / "model.safetensors", 1000)
    damaged = run(single("--config", recipe(tmp_path, str(cut)), f"scorer.output={out}"), TIMEOUT)
    assert damaged.returncode == 2 and f"model.path: {cut}/model.safetensors is 1000 bytes" in damaged.stderr
    no_ds = run(single("--config", recipe(tmp_path, tiny_model_dir, ds_config=str(tmp_path / "none.json")),
                       f"scorer.output={out}"), TIMEOUT)
    assert no_ds.returncode != 0 and "none.json" in no_ds.stderr
    assert not glob.glob(str(tmp_path / "scores" / "*.partial")), os.listdir(tmp_path / "scores")
