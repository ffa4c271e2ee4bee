"""Periodic re-scoring: the learner's own forward gives the offline scorer's scores (same layer, same
closed forms), and the new ordering follows them."""
import numpy as np
import pytest
import torch

from gainrl.config import DataConfig, TrainRunConfig
from gainrl.data import load_rows
from gainrl.prefill import load_prefill_model
from gainrl.prompts import PromptBuilder, build_prompts
from gainrl.rescore import policy_scores, spearman
from gainrl.scorer import score_batch
from tests.fakes import FakePolicy
from tests.helpers import BUNDLED_ROWS


def test_the_policys_scores_equal_the_offline_scorers(tiny_model_dir, tiny_tokenizer):
    rows = load_rows(DataConfig(path=BUNDLED_ROWS, limit=12)).rows
    prompts = build_prompts(PromptBuilder(tiny_tokenizer, TrainRunConfig().prompt), rows)
    pad_id = tiny_tokenizer.pad_token_id
    policy = FakePolicy(tiny_model_dir, [])
    got = policy_scores(policy, rows, prompts, pad_id, max_tokens=300, w_inter=8.0)  # several batches
    offline = load_prefill_model(tiny_model_dir, -1, dtype="float32")
    records = score_batch(offline, rows, prompts, pad_id)
    expected = np.array([r["c_intra"] + 8.0 * r["c_inter"] for r in records])
    assert got == pytest.approx(expected, abs=1e-5)
    assert len(set(np.round(got, 6))) > 6  # the rows differ: the comparison is not of constants
    assert policy.module.training  # back in training mode


def test_rank_correlation():
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([10.0, 20.0, 30.0])) == pytest.approx(1.0)
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0])) == pytest.approx(-1.0)
    x = np.random.default_rng(0).random(50)
    assert spearman(x, torch.tensor(x).exp().numpy()) == pytest.approx(1.0)  # monotone: ranks only
