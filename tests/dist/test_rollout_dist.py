"""Colocated rollouts: vLLM per rank beside a ZeRO-3 learner (2 ranks) or a plain model (1 process):
sampling differs per rank, pushed weights reproduce the learner's log-probs, tied heads are pushed."""
import json
import os
import sys

import pytest

from tests.helpers import REPO
from tests.launch import expect_ok, torchrun

SCRIPT = os.path.join(REPO, "tests", "dist", "rollout_ranks.py")
TIMEOUT = 300
TOLERANCE = 1e-4


def run_ranks(nproc: int, model_dir: str, out_dir, tp: int = 1) -> list[dict]:
    args = ["--model", model_dir, "--out", str(out_dir), "--tp", str(tp)]
    expect_ok(torchrun(SCRIPT, nproc, *args) if nproc > 1 else [sys.executable, SCRIPT, *args], TIMEOUT)
    return [json.loads((out_dir / f"rank{rank}.json").read_text()) for rank in range(nproc)]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory, tiny_model_dir):
    return run_ranks(2, tiny_model_dir, tmp_path_factory.mktemp("two"))


@pytest.fixture(scope="module")
def one_tensor_parallel_engine(tmp_path_factory, tiny_model_dir):
    return run_ranks(2, tiny_model_dir, tmp_path_factory.mktemp("tp"), tp=2)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, tiny_model_dir):
    return run_ranks(1, tiny_model_dir, tmp_path_factory.mktemp("one"))


def check_rank(report: dict) -> None:
    # (a) generation: shapes, and the reported log-probs are the model's own
    assert all(len(c) == 4 for c in report["completions"])
    assert report["logprob_lengths_match"]
    assert report["sample_logprob_gap"] < TOLERANCE
    # (b) after each training round and push, vLLM equals the learner and has moved
    assert report["initial_gap"] < TOLERANCE
    assert len(report["rounds"]) == 2
    for round_ in report["rounds"]:
        assert round_["gap"] < TOLERANCE, round_
        assert round_["changed"] > 0.1, round_  # 1000x the tolerance: a missed push fails the test
        assert round_["sample_logprob_gap"] < TOLERANCE, round_
        assert round_["stats"]["num_buckets"] > 2  # several buckets, reloaded in one session
    # (c) the tied head is pushed under its own name; a list without it is refused
    assert "lm_head.weight" in report["learner_names"]
    assert all(r["stats"]["num_tied_aliases"] == 1 for r in report["rounds"])
    assert "lm_head.weight (0/1 sources)" in report["check_errors"]["without_tied_head"]
    assert "model.layers.0.mlp.extra_proj.weight" in report["check_errors"]["stray_name"]
    # sleep protocol: no generation while asleep or before the push, no push into sleeping weights
    errors = report["protocol_errors"]
    assert "wake() it before generating" in errors["generate_asleep"]
    assert 'wake(["weights"]) before pushing' in errors["push_asleep"]
    assert "push the policy's weights before generating" in errors["generate_before_push"]
    # vLLM's shutdown takes the default process group with it (documented in RolloutEngine.close)
    assert report["dist_initialized_after_close"] is False


def test_two_ranks_zero3(two_ranks):
    for report in two_ranks:
        check_rank(report)
    assert [r["rank"] for r in two_ranks] == [0, 1] and two_ranks[0]["world_size"] == 2
    assert two_ranks[0]["completions"] != two_ranks[1]["completions"]  # seed + rank: ranks sample differently
    assert [len(r["uneven_calls"]) for r in two_ranks] == [1, 3]  # rank 1 generated 3 times, rank 0 once


def test_one_process_plain_model(one_process):
    check_rank(one_process[0])


def test_one_process_samples_like_rank0(one_process, two_ranks):
    # same seed, same model, rank 0: the engine does not depend on the launch mode
    assert one_process[0]["completions"] == two_ranks[0]["completions"]


def test_two_ranks_share_one_tensor_parallel_engine(one_tensor_parallel_engine, one_process):
    """rollout.tensor_parallel_size=2: the ranks' prompts are generated together, each gets its own back;
    greedy decoding gives the one-GPU engine's tokens and log-probs; pushes of the ZeRO-3 learner's weights
    reach both halves of the engine (the log-prob gap after each push)."""
    for report in one_tensor_parallel_engine:
        check_rank(report)
        assert [c[0] for c in report["greedy"]] == [c[0] for c in one_process[0]["greedy"]]
        for (_, logprobs), (_, expected) in zip(report["greedy"], one_process[0]["greedy"]):
            assert max(abs(a - b) for a, b in zip(logprobs, expected)) < TOLERANCE
    rank0, rank1 = one_tensor_parallel_engine
    assert rank0["uneven_calls"] == [2, 2] and rank1["uneven_calls"] == [1, 0]
    # one engine sampled all four prompts at once (one seed): the ranks' halves are different samples
    assert rank0["completions"] != rank1["completions"]

