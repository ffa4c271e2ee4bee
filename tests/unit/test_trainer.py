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
from gainrl.config import DataConfig, TrainRunConfig, layered_overrides, load_config
from gainrl.data import dataset_fingerprint, load_rows
from gainrl.metric_names import phase_of, phase_seconds_key
from gainrl.prompts import PromptBuilder, build_prompts
from gainrl.sampler import build_sampler
from gainrl.trainer import LoopState, Run, TrainData, no_grad_logprobs, restore, run_training, update_policy
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
    cfg = load_config(layered_overrides(
        [f"model.path={tiny_model_dir}", f"data.path={BUNDLED_ROWS}", f"train.output_dir={tmp_path}",
         "sampler.order=random", "sampler.prompts_per_epoch=8", "sampler.adj_max=8", "sampler.sigma=5", "sampler.n=2",
         "train.prompts_per_step=4", f"grpo.group_size={GROUP_SIZE}", "train.micro_batch_size=4", "train.epochs=2",
         "train.checkpoint_every=0", "train.keep_checkpoints=9", "log.tensorboard=false", "log.plots=false",
         "rollout.temperature=0.9"], list(overrides)), TrainRunConfig)
    rows, prompts = rows_and_prompts
    data = TrainData(rows[:NUM_ROWS], prompts[:NUM_ROWS], dataset_fingerprint(rows[:NUM_ROWS]))
    torch.manual_seed(cfg.seed)
    events = []
    heldout = ValidationSet(rows[NUM_ROWS:], prompts[NUM_ROWS:]) if validate else None
    policy = FakePolicy(tiny_model_dir, events, nan_steps)
    rollout = FakeRollout(events, on_generate, policy.module, cfg.rollout.temperature, skip_pushes)
    run = Run(cfg, data, tiny_tokenizer, build_sampler(cfg.sampler, columns, NUM_ROWS, seed=cfg.seed), policy, None,
              rollout, FakeReward(), tiny_tokenizer.pad_token_id, heldout=heldout)
    return run, events


def one_update(model_dir, parts, advantages, old_logp_forward: bool, **grpo):
    """The change of every parameter under SGD of lr 1 (minus the accumulated gradient), the loss terms,
    and what update_policy returns of its first pass."""
    from gainrl.config import GrpoConfig
    policy = FakePolicy(model_dir, [])
    policy.optimizer = torch.optim.SGD(policy.module.parameters(), lr=1.0)
    before = {name: p.detach().clone() for name, p in policy.module.named_parameters()}
    cfg = GrpoConfig(**grpo)
    old_logp = no_grad_logprobs(policy, None, parts, 0.9)[0] if old_logp_forward else None
    sums, first_pass = update_policy(policy, cfg, 0.9, parts, advantages, old_logp, None)
    delta = {name: p.detach() - before[name] for name, p in policy.module.named_parameters()}
    return delta, sums, first_pass, old_logp


def random_rollouts(vocab_size, lengths, seed=0):
    from gainrl.algo import pack_sequences
    generator = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(3, vocab_size, (4 + k % 3,), generator=generator).tolist() for k in range(len(lengths))]
    responses = [torch.randint(3, vocab_size, (n,), generator=generator).tolist() for n in lengths]
    advantages = torch.randn(len(lengths), generator=generator)
    return pack_sequences(prompts, responses, pad_id=0), advantages


def test_token_budget_micro_batches_and_the_skipped_forward_take_the_same_step(tiny_model_dir):
    """Item 3: rows sorted by length and cut to a token budget accumulate the gradient of the fixed split.
    Item 4: one update taking its old log-probs from its own forward makes the step of one that runs a
    separate no-grad forward first (ratio 1, nothing clipped), and returns the same log-probs and angles."""
    from gainrl.algo import micro_batches, padded_tokens, token_budget_micro_batches
    lengths = [3, 40, 7, 2, 25, 12, 60, 5]  # long-tailed answers
    seqs, advantages = random_rollouts(500, lengths)
    tokens = seqs.attention_mask.sum(dim=1).tolist()
    fixed_rows = micro_batches(len(lengths), 2)
    budget_rows = token_budget_micro_batches(tokens, 80)
    assert budget_rows == [[6], [1], [4, 5], [2, 7, 0, 3]]
    assert (padded_tokens(tokens, budget_rows), padded_tokens(tokens, fixed_rows)) == (221, 304)

    def parts(rows):
        return [seqs.select(r) for r in rows], [advantages[r] for r in rows]

    fixed = one_update(tiny_model_dir, *parts(fixed_rows), old_logp_forward=True)
    budget = one_update(tiny_model_dir, *parts(budget_rows), old_logp_forward=True)
    skipped = one_update(tiny_model_dir, *parts(budget_rows), old_logp_forward=False)
    assert sum(float(d.abs().sum()) for d in fixed[0].values()) > 1e-3
    for other in (budget, skipped):
        for name in fixed[0]:
            torch.testing.assert_close(other[0][name], fixed[0][name], atol=1e-6, rtol=1e-5, msg=name)
        for key in ("loss", "ratio_sum", "num_tokens"):
            assert other[1][key] == pytest.approx(fixed[1][key], rel=1e-6, abs=1e-7), key
    assert skipped[1]["num_clipped_low"] == skipped[1]["num_clipped_high"] == 0
    assert skipped[1]["ratio_sum"] == skipped[1]["num_tokens"]  # every ratio exactly 1
    assert budget[2] is None and skipped[3] is None
    first_logp, first_angle = skipped[2]
    assert len(first_logp) == len(first_angle) == len(budget_rows)
    for logp, old in zip(first_logp, budget[3]):
        torch.testing.assert_close(logp, old, atol=1e-6, rtol=0)
    # a second pass over the same batch needs the old log-probs of before the first: not taken from it
    two = one_update(tiny_model_dir, *parts(budget_rows), old_logp_forward=True, updates_per_batch=2)
    assert two[2] is None and two[1]["num_tokens"] == fixed[1]["num_tokens"]


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
    # one update per batch: the old log-probs come from its forward (no separate no-grad one)
    one_step = ["wake", "generate", "sleep"] + ["forward", "backward"] * 2 + ["optimizer_step", "sync_weights"]
    assert events == one_step * 4 + ["close"]  # 2 micro-batches per step; no validation set
    steps = records(tmp_path, "metrics.jsonl")
    assert [r["step"] for r in steps] == [1, 2, 3, 4] and [r["epoch"] for r in steps] == [0, 0, 1, 1]
    assert last == steps[-1] and {"generate", "reward", "update", "push"} == \
        {phase_of(k) for k in last if phase_of(k)}
    assert all(r["ratio_mean"] == 1.0 and r["clip_fraction"] == 0.0 for r in steps)
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


def test_an_offloaded_learner_is_away_exactly_while_the_engine_generates(tmp_path, tiny_model_dir, tiny_tokenizer,
                                                                         rows_and_prompts):
    plain, _ = make_run(tmp_path / "plain", tiny_model_dir, tiny_tokenizer, rows_and_prompts,
                        "validation.every_epochs=1", validate=True)
    run_training(plain)
    run, events = make_run(tmp_path / "away", tiny_model_dir, tiny_tokenizer, rows_and_prompts,
                           "validation.every_epochs=1", "rollout.offload_learner=true", validate=True)
    run_training(run)
    validation = ["offload", "wake", "generate_greedy", "reload", "sync_weights"]
    step = ["offload", "wake", "generate", "sleep", "reload"] + ["forward", "backward"] * 2 + \
        ["optimizer_step", "sync_weights"]
    assert events == validation + step * 2 + validation + step * 2 + validation + ["close"]
    assert all(phase_seconds_key("offload") in r for r in records(tmp_path / "away", "metrics.jsonl"))
    for name, p in run.policy.module.named_parameters():  # where the state sleeps changes nothing it computes
        assert torch.equal(p, dict(plain.policy.module.named_parameters())[name])


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
