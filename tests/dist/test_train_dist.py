"""End-to-end training on 2 CPU ranks under the deepspeed launcher: the demo recipe, a few steps."""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from gainrl.config import TrainRunConfig, layered_overrides, load_config
from gainrl.dist import DistInfo
from gainrl.trainer import build_run
from tests.launch import DEMO, deepspeed, demo_overrides, expect_ok, run


def command(tmp_path, *overrides):
    return deepspeed("launchers/train.py", 2, "--config", DEMO,
                     *layered_overrides(demo_overrides(tmp_path, f"{tmp_path}/run"), list(overrides)))


def train(tmp_path, *overrides):
    return run(command(tmp_path, *overrides), 600)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, built_inputs):
    tmp = tmp_path_factory.mktemp("train")
    shutil.copytree(built_inputs, tmp, dirs_exist_ok=True)
    result = expect_ok(command(tmp, "train.epochs=2", "sampler.prompts_per_epoch=24", "train.prompts_per_step=12"), 600)
    return tmp, result


def test_metrics_are_written_and_finite(demo_run):
    tmp, _ = demo_run
    records = [json.loads(line) for line in open(tmp / "run" / "metrics.jsonl")]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for r in records:
        for key in ("loss", "reward_mean", "accuracy", "kl_mean", "grad_norm", "angle_mean", "tokens_per_s"):
            assert r[key] is not None and torch.isfinite(torch.tensor(r[key])), (key, r)
        assert 0 <= r["accuracy"] <= 1 and 0 <= r["wasted_group_fraction"] <= 1
        assert r["response_tokens_mean"] > 0 and r["grad_norm"] > 0
    assert 0 < sum(r["reward_mean"] for r in records) < len(records)  # the warm start gives mixed rewards
    assert records[0]["mu"] == 0 and records[-1]["epoch"] == 1
    # vLLM (built without weights, filled by the learner's push) samples with the learner's distribution: fp32
    assert all(r["logprob_gap_max"] < 1e-4 for r in records), [r["logprob_gap_max"] for r in records]


def test_every_trainable_parameter_changed(demo_run):
    tmp, _ = demo_run
    before = load_file(str(tmp / "model" / "model.safetensors"))
    after = load_file(str(tmp / "run" / "final" / "model.safetensors"))
    assert before.keys() == after.keys()
    unchanged = [name for name in before if torch.equal(before[name], after[name])]
    assert not unchanged, f"parameters that training did not change: {unchanged}"


def test_each_epoch_draw_is_recorded(demo_run):
    # that every rank trains on rank 0's draw is checked by the trainer each epoch
    # (dist.check_same_on_every_rank, tested to fail on a mismatch in test_sampler_dist.py)
    tmp, _ = demo_run
    draws = [json.loads(line) for line in open(tmp / "run" / "draws.jsonl")]
    assert [d["epoch"] for d in draws] == [0, 1]
    for d in draws:
        assert len(d["indices"]) == 24 == len(set(d["indices"])) and all(0 <= i < 192 for i in d["indices"])
        assert len(d["positions"]) == 24


def test_bad_inputs_fail_before_training_with_the_key(tmp_path, demo_run):
    trained, _ = demo_run
    cases = [
        (["sampler.prompts_per_epoch=500", "train.prompts_per_step=100"], "sampler.prompts_per_epoch"),
        (["rollout.max_prompt_tokens=20"], "rollout.max_prompt_tokens"),
        (["train.ds_config=ds_configs/zero4.json"], "train.ds_config"),
    ]
    score_file = next((trained / "scores").glob("*.scores.json"))
    cases.append(([f"data.path={trained}/other.jsonl", "data.build_arithmetic.num_rows=100", "model.warm_start=false",
                   f"train.score_file={score_file}"], "does not match the dataset"))
    info = DistInfo(0, 1, 0, 1, torch.device("cpu"))
    for overrides, expected in cases:  # in this process (seconds each); a fresh output folder, as the
        args = command(trained, *overrides, "train.epochs=1", f"train.output_dir={tmp_path}/bad")[4:]
        with pytest.raises(ValueError, match=expected):  # trained one would be resumed
            build_run(load_config(args, TrainRunConfig), info)
    # through the launcher: the error, naming the key, on stderr, and a failed exit
    missing = train(tmp_path, "model.build_tiny=null", "model.warm_start=false", "train.epochs=1")
    assert missing.returncode != 0 and "model.path" in missing.stderr
    bad_group = train(trained, "grpo.group_size=1", f"train.output_dir={tmp_path}/bad")
    assert bad_group.returncode == 2 and "config key 'grpo.group_size'" in bad_group.stderr


def test_the_run_leaves_plots_tensorboard_and_a_checkpoint(demo_run):
    tmp, _ = demo_run
    run = tmp / "run"
    assert sorted(p.name for p in (run / "plots").glob("*.png")) == \
        ["curriculum.png", "mu_terms.png", "optimization.png", "progress.png", "scores.png", "time.png"]
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert json.load(open(run / "run.json"))["score_file"].endswith(".scores.json")
    assert (run / "checkpoints" / "step_00000004" / "train_state.json").exists()  # the end of the run


def test_vllm_logs_go_to_the_run_folder_and_the_console_shows_each_warning_once(demo_run):
    tmp, result = demo_run
    console = result.stdout + result.stderr
    for rank in (0, 1):  # 4 steps, 5 pushes: vLLM's per-push lines are in each rank's file
        text = (tmp / "run" / "logs" / f"vllm.rank{rank}.log").read_text()
        assert text.count("Successfully reset prefix cache") >= 5
    assert "Successfully reset prefix cache" not in console  # INFO: the file only
    warnings = [line for line in console.splitlines() if line.startswith("[vllm WARNING]")]
    assert warnings and len(warnings) == len(set(warnings))  # rank 0's, each once
