"""The training loop (trainer.run_training) driven in one process with fakes at its two boundaries.

The policy is a real tiny causal LM with a torch optimizer standing in for the DeepSpeed engine
(same calls: log-probs with the angle probe, backward, step at the accumulation's end, a skipped
step on non-finite gradients, save/load); the rollout engine samples random tokens from torch's
global generator and checks the wake/sleep order. Everything between them is the real loop:
the sampler, advantages, the loss, the run log, checkpoints, the stop file, resume and validation.
"""
import json
import os

import pytest
import torch

from gainrl import checkpoint
from gainrl.config import DataConfig, TrainRunConfig, load_config
from gainrl.data import dataset_fingerprint, load_rows
from gainrl.metric_names import phase_of
from gainrl.prompts import PromptBuilder, build_prompts
from gainrl.sampler import build_sampler
from gainrl.trainer import LoopState, Run, TrainData, restore, run_training
from gainrl.validation import ValidationSet
from tests.fakes import FakePolicy, FakeReward, FakeRollout
from tests.helpers import BUNDLED_ROWS

NUM_ROWS, GROUP_SIZE = 16, 2


@pytest.fixture(scope="module")
def rows_and_prompts(tiny_model_dir, tiny_tokenizer):
    rows = load_rows(DataConfig(path=BUNDLED_ROWS, limit=NUM_ROWS + 4)).rows
    prompts = build_prompts(PromptBuilder(tiny_tokenizer, TrainRunConfig().prompt), rows)
    return rows, prompts


def make_run(tmp_path, tiny_model_dir, tiny_tokenizer, rows_and_prompts, *overrides, nan_steps=(), on_generate=None,
             validate=False, columns=None, skip_pushes=()):
    cfg = load_config([f"model.path={tiny_model_dir}", f"data.path={BUNDLED_ROWS}", f"train.output_dir={tmp_path}",
                       "sampler.order=random", "sampler.prompts_per_epoch=8", "sampler.adj_max=8",
                       "sampler.sigma=5", "sampler.n=2", "train.prompts_per_step=4",
                       f"grpo.group_size={GROUP_SIZE}", "train.micro_batch_size=4", "train.epochs=2",
                       "train.checkpoint_every=0", "train.keep_checkpoints=9", "log.tensorboard=false",
                       "log.plots=false", "rollout.temperature=0.9", *overrides], TrainRunConfig)
    rows, prompts = rows_and_prompts
    data = TrainData(rows[:NUM_ROWS], prompts[:NUM_ROWS], dataset_fingerprint(rows[:NUM_ROWS]))
    torch.manual_seed(cfg.seed)
    events = []
    accumulation = cfg.train.prompts_per_step * GROUP_SIZE // cfg.train.micro_batch_size
    heldout = ValidationSet(rows[NUM_ROWS:], prompts[NUM_ROWS:]) if validate else None
    policy = FakePolicy(tiny_model_dir, accumulation, events, nan_steps)
    rollout = FakeRollout(events, on_generate, policy.module, cfg.rollout.temperature, skip_pushes)
    run = Run(cfg, data, tiny_tokenizer, build_sampler(cfg.sampler, columns, NUM_ROWS, seed=cfg.seed), policy, None,
              rollout, FakeReward(), tiny_tokenizer.pad_token_id, heldout=heldout)
    return run, events


def records(path, name):
    with open(os.path.join(path, name)) as f:
        return [json.loads(line) for line in f]


def without_timings(rows):
    return [{k: v for k, v in r.items() if phase_of(k) is None and k not in ("elapsed_s", "tokens_per_s")}
            for r in rows]


def test_each_step_runs_its_phases_in_order_and_pushes_the_updated_weights(tmp_path, tiny_model_dir, tiny_tokenizer,
                                                                           rows_and_prompts):
    run, events = make_run(tmp_path, tiny_model_dir, tiny_tokenizer, rows_and_prompts)
    last = run_training(run)
    one_step = ["wake", "generate", "sleep"] + ["forward_no_grad"] * 2 + ["forward", "backward"] * 2 \
        + ["optimizer_step", "sync_weights"]
    assert events == one_step * 4 + ["close"]  # 2 micro-batches per step; no validation set
    steps = records(tmp_path, "metrics.jsonl")
    assert [r["step"] for r in steps] == [1, 2, 3, 4] and [r["epoch"] for r in steps] == [0, 0, 1, 1]
    assert last == steps[-1] and {"generate", "reward", "old_logprobs", "update", "push"} == \
        {phase_of(k) for k in last if phase_of(k)}
    assert all(r["num_skipped_steps"] == 0 and r["num_skipped_updates"] == 0 for r in steps)
    assert steps[0]["mu"] == steps[1]["mu"] != steps[2]["mu"]  # mu moves after an epoch only
    draws = records(tmp_path, "draws.jsonl")
    assert [d["epoch"] for d in draws] == [0, 1] and all(len(set(d["indices"])) == 8 for d in draws)
    model = run.policy.module
    assert all(torch.equal(run.rollout.pushed[name], p) for name, p in model.named_parameters())
    assert os.path.isfile(tmp_path / "final" / "config.json") and os.path.isfile(tmp_path / "run.json")


def test_validation_runs_before_training_and_after_each_epoch_then_reloads_the_engine(tmp_path, tiny_model_dir,
                                                                                      tiny_tokenizer, rows_and_prompts):
    run, events = make_run(tmp_path, tiny_model_dir, tiny_tokenizer, rows_and_prompts, "validation.every_epochs=1",
                           validate=True)
    run_training(run)
    assert [r["epoch"] for r in records(tmp_path, "validation.jsonl")] == [0, 1, 2]
    greedy = [k for k, e in enumerate(events) if e == "generate_greedy"]
    assert len(greedy) == 3 and all(events[k + 1] == "sync_weights" for k in greedy)


def test_a_step_saves_once_even_where_a_periodic_save_meets_the_final_one(tmp_path, tiny_model_dir, tiny_tokenizer,
                                                                          rows_and_prompts):
    run, _ = make_run(tmp_path, tiny_model_dir, tiny_tokenizer, rows_and_prompts, "train.checkpoint_every=2")
    run_training(run)
    names = [os.path.basename(p) for p in checkpoint.complete_checkpoints(str(tmp_path))]
    assert names == ["step_00000002", "step_00000004"] and run.policy.num_saves == 2


def test_skipped_steps_are_counted_and_a_streak_of_them_stops_the_run_after_saving(tmp_path, tiny_model_dir,
                                                                                   tiny_tokenizer, rows_and_prompts):
    run, _ = make_run(tmp_path / "one", tiny_model_dir, tiny_tokenizer, rows_and_prompts,
                      "train.max_nonfinite_steps=2", nan_steps={2})
    run_training(run)
    steps = records(tmp_path / "one", "metrics.jsonl")
    assert [r["num_skipped_updates"] for r in steps] == [0, 1, 0, 0]
    assert [r["num_skipped_steps"] for r in steps] == [0, 1, 1, 1] and steps[1]["num_nonfinite_losses"] == 2

    run, _ = make_run(tmp_path / "two", tiny_model_dir, tiny_tokenizer, rows_and_prompts,
                      "train.max_nonfinite_steps=2", nan_steps={2, 3})
    with pytest.raises(RuntimeError, match="2 steps in a row had a NaN or inf loss"):
        run_training(run)
    assert [os.path.basename(p) for p in checkpoint.complete_checkpoints(str(tmp_path / "two"))] == ["step_00000003"]
    assert len(records(tmp_path / "two", "metrics.jsonl")) == 3


def test_a_stop_mid_epoch_then_a_resume_gives_the_uninterrupted_run_exactly(tmp_path, tiny_model_dir, tiny_tokenizer,
                                                                            rows_and_prompts):
    whole, _ = make_run(tmp_path / "whole", tiny_model_dir, tiny_tokenizer, rows_and_prompts, validate=True)
    run_training(whole)

    out = tmp_path / "parts"
    stop = str(out / "STOP")

    def request_stop(num_generates):
        if num_generates == 3:  # (1: validation) while step 2 generates: honoured before its update, mid-epoch
            open(stop, "w").close()

    first, _ = make_run(out, tiny_model_dir, tiny_tokenizer, rows_and_prompts, on_generate=request_stop,
                        validate=True)
    assert run_training(first)["step"] == 1
    with open(out / "metrics.jsonl", "a") as f:  # what a killed run could log after its checkpoint
        f.write(json.dumps({"step": 2, "loss": 9.0}) + "\n")
    with open(out / "validation.jsonl", "a") as f:
        f.write(json.dumps({"epoch": 1, "step": 2, "accuracy": 9.0, "num_rows": 4}) + "\n")
    assert not os.path.exists(stop)  # honoured, then removed
    cfg = first.cfg
    path = checkpoint.resume_point(cfg)
    assert os.path.basename(path) == "step_00000001"

    second, events = make_run(out, tiny_model_dir, tiny_tokenizer, rows_and_prompts, validate=True)
    torch.manual_seed(1234)  # whatever the start-up drew: the checkpoint's RNG states replace it
    restore(second, path)
    assert second.state.step == 1 and second.state.step_in_epoch == 1 and second.state.indices is not None
    assert events == ["sync_weights"]  # the engine, built with the start weights, gets the checkpoint's (and no
    # validation before the first step: the run validated at epoch 0 before it stopped)
    run_training(second)

    assert without_timings(records(out, "metrics.jsonl")) == without_timings(records(tmp_path / "whole",
                                                                                     "metrics.jsonl"))
    assert records(out, "draws.jsonl") == records(tmp_path / "whole", "draws.jsonl")
    assert records(out, "validation.jsonl") == records(tmp_path / "whole", "validation.jsonl")  # epochs 0, 1, 2
    for (name, a), b in zip(whole.policy.module.named_parameters(), second.policy.module.parameters()):
        assert torch.equal(a, b), name
    assert isinstance(second.state, LoopState) and second.state.step == 4


CURRICULA = {  # the arena's curricula and filters, as the loop runs them (their rules: test_arena_samplers.py)
    "learnability": ["sampler.schedule=learnability"],
    "greso": ["sampler.schedule=uniform", "sampler.skip_zero_variance=true"],
    "dapo": ["sampler.schedule=uniform", "sampler.dynamic_sampling=true"],
    "gainrl_centred_rescore": ["sampler.order=score", "sampler.center_angle=true", "sampler.rescore_every_epochs=1"],
}


@pytest.mark.parametrize("name", sorted(CURRICULA))
def test_every_curriculum_resumes_from_a_stop_mid_epoch_exactly(name, tmp_path, tiny_model_dir, tiny_tokenizer,
                                                                rows_and_prompts):
    overrides = [*CURRICULA[name], "train.epochs=3"]
    columns = {"score": [float((7 * i) % NUM_ROWS) for i in range(NUM_ROWS)]}
    whole, _ = make_run(tmp_path / "whole", tiny_model_dir, tiny_tokenizer, rows_and_prompts, *overrides,
                        columns=columns)
    run_training(whole)
    steps = records(tmp_path / "whole", "metrics.jsonl")
    assert [r["num_trained_rollouts"] for r in steps] == [8] * 6  # 4 prompts x 2 rollouts per step, always
    for r in steps:
        assert r["num_rollouts"] == r["num_trained_rollouts"] + r["num_extra_rollouts"]
        assert 0 <= r["num_zero_variance_groups"] <= r["num_groups"] == r["num_rollouts"] // GROUP_SIZE
    if name == "dapo":  # random rewards: some groups are all-equal and get replaced
        assert sum(r["num_extra_rollouts"] for r in steps) > 0
        trained_zero = sum(r["wasted_group_fraction"] * 4 for r in steps)  # 4 groups trained per step
        assert trained_zero < sum(r["num_zero_variance_groups"] for r in steps)  # the dropped ones were replaced
    else:
        assert sum(r["num_extra_rollouts"] for r in steps) == 0
    if name.endswith("rescore"):
        assert [r["time_rescore_s"] > 0 for r in steps] == [False, False, True, False, True, False]
    out, parts = tmp_path / "parts", []

    def request_stop(num_generates):
        if parts and parts[0].state.step == 3:  # while step 4 (epoch 1) generates: honoured before its update
            open(out / "STOP", "w").close()

    first, _ = make_run(out, tiny_model_dir, tiny_tokenizer, rows_and_prompts, *overrides, columns=columns,
                        on_generate=request_stop)
    parts.append(first)
    assert run_training(first)["step"] == 3
    second, _ = make_run(out, tiny_model_dir, tiny_tokenizer, rows_and_prompts, *overrides, columns=columns)
    restore(second, checkpoint.resume_point(second.cfg))
    run_training(second)
    assert without_timings(records(out, "metrics.jsonl")) == without_timings(steps)
    assert records(out, "draws.jsonl") == records(tmp_path / "whole", "draws.jsonl")
    assert second.sampler.state_dict() == whole.sampler.state_dict()


def test_a_stop_requested_while_a_step_generates_is_honoured_before_its_update(tmp_path, tiny_model_dir,
                                                                              tiny_tokenizer, rows_and_prompts):
    def request_stop(num_generates):
        open(tmp_path / "STOP", "w").close()

    run, events = make_run(tmp_path, tiny_model_dir, tiny_tokenizer, rows_and_prompts, on_generate=request_stop)
    assert run_training(run) == {}  # no step finished
    assert events == ["wake", "generate", "sleep", "close"]  # no forward, backward or optimizer step
    names = [os.path.basename(p) for p in checkpoint.complete_checkpoints(str(tmp_path))]
    assert names == ["step_00000000"] and not os.path.exists(tmp_path / "STOP")
    assert checkpoint.read_train_state(checkpoint.complete_checkpoints(str(tmp_path))[0])["loop"]["step_in_epoch"] == 0


def test_time_based_checkpoints_save_when_the_minutes_have_passed(tmp_path, tiny_model_dir, tiny_tokenizer,
                                                                  rows_and_prompts):
    run, _ = make_run(tmp_path, tiny_model_dir, tiny_tokenizer, rows_and_prompts,
                      "train.checkpoint_every_minutes=1e-9")  # always due: every step saves
    run_training(run)
    names = [os.path.basename(p) for p in checkpoint.complete_checkpoints(str(tmp_path))]
    assert names == [f"step_{k:08d}" for k in (1, 2, 3, 4)]


def test_the_logprob_gap_is_tiny_after_every_push_and_jumps_when_a_push_is_skipped(tmp_path, tiny_model_dir,
                                                                                   tiny_tokenizer, rows_and_prompts,
                                                                                   capsys):
    run, _ = make_run(tmp_path / "pushed", tiny_model_dir, tiny_tokenizer, rows_and_prompts)
    run_training(run)
    gaps = [r["logprob_gap_max"] for r in records(tmp_path / "pushed", "metrics.jsonl")]
    assert len(gaps) == 4 and max(gaps) < 1e-4  # fp32, the same model: only summation order differs
    assert "jumped" not in capsys.readouterr().err

    run, _ = make_run(tmp_path / "skipped", tiny_model_dir, tiny_tokenizer, rows_and_prompts, skip_pushes={2})
    run_training(run)  # step 2's push is lost: step 3 samples with step 1's weights, step 4 with step 3's again
    steps = records(tmp_path / "skipped", "metrics.jsonl")
    assert [r["logprob_gap_max"] < 1e-4 for r in steps] == [True, True, False, True]
    assert steps[2]["logprob_gap_mean"] > 1e-3
    assert "step 3: the log-prob gap between vLLM's sampling and the learner jumped" in capsys.readouterr().err
