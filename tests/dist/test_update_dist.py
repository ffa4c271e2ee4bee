"""The policy update under DeepSpeed ZeRO-3: 2 ranks give the same gradient step and loss as 1 process."""
import json
import os
import sys

import pytest
import torch

from tests.helpers import REPO
from tests.launch import expect_ok, torchrun

SCRIPT = os.path.join(REPO, "tests", "dist", "update_ranks.py")


def sgd_config(folder, name: str) -> str:
    """ds_configs/<name> with SGD of lr 1 in place of AdamW: the parameter change is minus the gradient."""
    with open(os.path.join(REPO, "ds_configs", name)) as f:
        config = json.load(f)
    config["optimizer"] = {"type": "SGD", "params": {"lr": 1.0}}
    config["zero_allow_untested_optimizer"] = True
    config["zero_force_ds_cpu_optimizer"] = False  # the offload config: a torch optimizer on the CPU copy
    path = folder / name.replace(".json", "_sgd.json")
    path.write_text(json.dumps(config))
    return str(path)


@pytest.fixture(scope="module")
def sgd_zero3_config(tmp_path_factory):
    return sgd_config(tmp_path_factory.mktemp("ds"), "zero3.json")


# sequence aggregation's cross-rank normaliser: tests/dist/test_loss_dist.py; the whole update with it: -m slow
@pytest.mark.parametrize("aggregation", ["token", pytest.param("sequence", marks=pytest.mark.slow)])
def test_two_ranks_take_the_same_step_as_one_process(tmp_path, tiny_model_dir, sgd_zero3_config, aggregation):
    """...and with the rows cut to a token budget (sorted by length, 3 micro-batches on each rank) rather than
    2 at a time in order, and the learner offloaded to CPU memory and back between forwards: the accumulated
    gradient is the same."""
    one, two = str(tmp_path / "one.pt"), str(tmp_path / "two.pt")
    expect_ok([sys.executable, SCRIPT, tiny_model_dir, sgd_zero3_config, one, aggregation], 300)
    expect_ok(torchrun(SCRIPT, 2, tiny_model_dir, sgd_zero3_config, two, aggregation,
                       "train.max_tokens_per_micro_batch=26",  # 2 and 3 micro-batches: both run 3
                       "rollout.offload_learner=true"), 300)  # and DeepSpeed's offload_states and back, twice
    a, b = torch.load(one), torch.load(two)
    assert (a["num_micro_batches"], b["num_micro_batches"]) == (4, 3)
    assert a["offloaded"] == [] and b["offloaded"] == [["lp_params", "lp_grads", "contiguous_grad_buffer"]] * 2
    assert a["delta"].keys() == b["delta"].keys()
    moved = sum(float(d.abs().sum()) for d in a["delta"].values())
    assert moved > 1e-3, "the update changed nothing: the comparison would be empty"
    for name in a["delta"]:
        torch.testing.assert_close(b["delta"][name], a["delta"][name], atol=1e-6, rtol=1e-4, msg=name)
    for key in ("loss", "num_tokens", "num_clipped_low", "num_clipped_high", "kl_sum", "entropy_sum"):
        assert b["totals"][key] == pytest.approx(a["totals"][key], rel=1e-5, abs=1e-7), key
    assert a["totals"]["num_clipped_low"] + a["totals"]["num_clipped_high"] > 0
    assert a["totals"]["kl_sum"] > 0.1 and a["ref_gap"] < 1e-6  # the reference model is the initial policy
    torch.testing.assert_close(torch.tensor(b["angles"]), torch.tensor(a["angles"]), atol=1e-6, rtol=0)


def test_gradient_checkpointing_and_the_offload_config_take_the_same_step(tmp_path, tiny_model_dir, sgd_zero3_config):
    """The recipe paths no other test runs: ZeRO-3 with gradient checkpointing (the 7B recipe's setting),
    micro-batches to a token budget, and ds_configs/zero3_offload.json (parameters and optimizer states in
    CPU memory), each in one process."""
    steps = {}
    for name, ds_config, extra in [("plain", sgd_zero3_config, []),
                                   ("checkpointed", sgd_zero3_config, ["train.gradient_checkpointing=true"]),
                                   ("token_budget", sgd_zero3_config, ["train.max_tokens_per_micro_batch=20"]),
                                   ("offload", sgd_config(tmp_path, "zero3_offload.json"), [])]:
        out = str(tmp_path / f"{name}.pt")
        expect_ok([sys.executable, SCRIPT, tiny_model_dir, ds_config, out, "token", *extra], 300)
        steps[name] = torch.load(out)
    plain = steps["plain"]
    assert sum(float(d.abs().sum()) for d in plain["delta"].values()) > 1e-3
    assert (plain["num_micro_batches"], steps["token_budget"]["num_micro_batches"]) == (4, 6)
    for name in ("checkpointed", "token_budget", "offload"):
        for param in plain["delta"]:
            torch.testing.assert_close(steps[name]["delta"][param], plain["delta"][param], atol=1e-6, rtol=1e-4,
                                       msg=f"{name}: {param}")
        assert steps[name]["totals"]["loss"] == pytest.approx(plain["totals"]["loss"], rel=1e-5, abs=1e-7), name
