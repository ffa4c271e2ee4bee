"""The pass-rate job's parts (gainrl.pass_rate): the row split over ranks, the counting loop driven by
the fake engine and reward (checked against what the reward was asked to grade), the columns and the
file a difficulty curriculum walks. The job end to end, with vLLM, runs in tests/dist/test_pass_rate_dist.py."""
import json

import numpy as np
import pytest

from gainrl.config import DataConfig, TrainRunConfig, load_config
from gainrl.data import dataset_fingerprint, load_rows
from gainrl.pass_rate import (Job, PassRateRunConfig, columns_from_counts, count_passes, file_metadata,
                              rank_rows, summarize, validate_pass_rate)
from gainrl.prompts import PromptBuilder, build_prompts
from gainrl.sampler import build_ordering
from gainrl.scores import read_score_file, write_score_file
from gainrl.train_data import TrainData
from tests.fakes import FakeReward, FakeRollout
from tests.helpers import BUNDLED_ROWS


@pytest.fixture(scope="module")
def data(tiny_tokenizer):
    rows = load_rows(DataConfig(path=BUNDLED_ROWS, limit=11)).rows
    prompts = build_prompts(PromptBuilder(tiny_tokenizer, TrainRunConfig().prompt), rows)
    return TrainData(rows, prompts, dataset_fingerprint(rows))


class RecordingReward(FakeReward):
    """FakeReward that remembers what it graded: (text, row id, reward)."""

    def __init__(self):
        self.graded = []

    def __call__(self, completions, rows):
        rewards, errors, timeouts = super().__call__(completions, rows)
        self.graded += [(text, row.id, r) for text, row, r in zip(completions, rows, rewards)]
        return rewards, errors, timeouts


@pytest.mark.parametrize("world_size", [1, 2, 3, 8])
@pytest.mark.parametrize("num_rows", [0, 1, 7, 40])
def test_the_ranks_take_every_row_once(num_rows, world_size):
    taken = [i for rank in range(world_size) for i in rank_rows(num_rows, rank, world_size)]
    assert sorted(taken) == list(range(num_rows))
    sizes = [len(rank_rows(num_rows, rank, world_size)) for rank in range(world_size)]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("prompts_per_batch", [1, 3, 100])
def test_counts_are_the_graded_rollouts_of_each_row(data, tiny_tokenizer, prompts_per_batch):
    reward, engine = RecordingReward(), CountingRollout()
    rows, samples, done = [0, 2, 3, 5, 6, 9, 10], 5, []
    counts, errors = count_passes(Job(data, engine, tiny_tokenizer, reward), rows, samples, prompts_per_batch,
                                  done.append)
    assert sorted(counts) == rows and errors == 0
    assert sum(done) == len(rows) and len(done) == -(-len(rows) // prompts_per_batch)
    for i in rows:  # brute force: the rewards the reward gave this row's rollouts
        rewards = [r for _, row_id, r in reward.graded if row_id == data.rows[i].id]
        assert counts[i][:2] == (sum(r >= 1 for r in rewards), samples) == (sum(rewards), len(rewards))
    assert sum(c[2] for c in counts.values()) == engine.tokens_generated


def test_a_rank_with_fewer_batches_still_calls_the_engine_as_often(data, tiny_tokenizer):
    """With rollout.tensor_parallel_size > 1 the members of an engine generate together: every rank makes
    the most calls any rank needs, its extra ones empty and last."""
    engine = CountingRollout()
    counts, _ = count_passes(Job(data, engine, tiny_tokenizer, RecordingReward()), [0, 2, 3], 2, 2, num_calls=4)
    assert sorted(counts) == [0, 2, 3]
    assert [len(call) for call in engine.calls] == [2, 1, 0, 0]


class CountingRollout(FakeRollout):
    """FakeRollout that counts the tokens it generated."""

    def __init__(self):
        super().__init__([])
        self.tokens_generated, self.calls = 0, []

    def generate(self, prompt_token_ids, num_samples, greedy=False):
        self.calls.append(list(prompt_token_ids))
        out = super().generate(prompt_token_ids, num_samples, greedy)
        self.tokens_generated += sum(len(c.token_ids) for group in out for c in group)
        return out


def test_columns_in_row_order_and_a_missing_row_is_named(data):
    n = len(data.rows)
    counts = {i: (i % 3, 4, 10 * i) for i in reversed(range(n))}
    columns = columns_from_counts(data.rows, data.prompts, counts)
    assert columns["id"] == [row.id for row in data.rows]
    assert columns["pass_rate"] == [(i % 3) / 4 for i in range(n)]
    assert columns["response_tokens"] == [10 * i for i in range(n)]
    del counts[4]
    with pytest.raises(RuntimeError, match=data.rows[4].id):
        columns_from_counts(data.rows, data.prompts, counts)


def test_summary_against_hand_counts():
    summary = summarize(np.array([0, 4, 2, 0]), np.array([4, 4, 4, 4]), np.array([10, 20, 30, 40]))
    assert summary["mean_pass_rate"] == pytest.approx(6 / 16)
    assert summary["none_correct"] == 0.5 and summary["all_correct"] == 0.25


def test_the_file_reads_back_and_orders_easiest_first(data, tmp_path, tiny_model_dir):
    cfg = load_config([f"model.path={tiny_model_dir}", f"data.path={BUNDLED_ROWS}", "pass_rate.samples=4"],
                      PassRateRunConfig, validate_pass_rate)
    n = len(data.rows)
    correct = [3, 0, 4, 1, 2, 4, 0, 1, 3, 2, 1][:n]
    columns = columns_from_counts(data.rows, data.prompts, {i: (c, 4, 7) for i, c in enumerate(correct)})
    path = str(tmp_path / "pass_rate.json")
    write_score_file(path, file_metadata(cfg, data, "float32"), columns)
    table = read_score_file(path, data.fingerprint)
    order = build_ordering(table.columns, "pass_rate", True, seed=0)
    rates = np.asarray(correct)[order]
    assert (np.diff(rates) <= 0).all() and rates[0] == 4  # highest pass rate first: the easiest
    with pytest.raises(ValueError, match="does not match the dataset"):
        read_score_file(path, "another fingerprint")


def test_the_key_changes_with_what_makes_the_rates(data, tiny_model_dir):
    def key(*overrides):
        cfg = load_config([f"model.path={tiny_model_dir}", f"data.path={BUNDLED_ROWS}", *overrides],
                          PassRateRunConfig, validate_pass_rate)
        return file_metadata(cfg, data, "float32")["key"]
    base = key()
    assert key() == base
    changed = [key("pass_rate.samples=3"), key("rollout.temperature=0.7"), key("rollout.max_new_tokens=9"),
               key("seed=1"), key("reward.timeout_s=9"), key("reward.pass_fraction=true")]
    assert len({base, *changed}) == 1 + len(changed)
    assert key("pass_rate.prompts_per_batch=3") == base  # how the work is batched does not change the rates


@pytest.mark.parametrize("key", ["pass_rate.samples=0", "pass_rate.prompts_per_batch=0"])
def test_bad_settings_name_the_key(key, tiny_model_dir):
    with pytest.raises(ValueError, match=key.split("=")[0]):
        load_config([f"model.path={tiny_model_dir}", f"data.path={BUNDLED_ROWS}", key], PassRateRunConfig,
                    validate_pass_rate)


def test_a_finished_file_is_reused_and_another_runs_file_is_refused(data, tmp_path, tiny_model_dir):
    import torch
    from gainrl.dist import DistInfo
    from gainrl.pass_rate import run_pass_rates
    path = str(tmp_path / "pass_rate.json")
    cfg = load_config([f"model.path={tiny_model_dir}", f"data.path={BUNDLED_ROWS}", "data.limit=11",
                       f"pass_rate.output={path}"],  # 256 prompts per epoch > 11 rows: not checked here
                      PassRateRunConfig, validate_pass_rate)
    columns = columns_from_counts(data.rows, data.prompts, {i: (1, 4, 7) for i in range(len(data.rows))})
    write_score_file(path, file_metadata(cfg, data, "float32"), columns)
    info = DistInfo(0, 1, 0, 1, torch.device("cpu"))
    before = open(path).read()
    assert run_pass_rates(cfg, info) == path
    assert open(path).read() == before  # reused: a computed file would hold other counts
    cfg.pass_rate.samples = 5  # what made the file differs from what is asked for
    with pytest.raises(ValueError, match="pass_rate.output.*delete it"):
        run_pass_rates(cfg, info)
    with open(path, "w") as f:  # a damaged file: an error, not overwritten
        f.write("{")
    with pytest.raises(ValueError, match="pass_rate.output.*not valid JSON"):
        run_pass_rates(cfg, info)


def test_a_pass_rate_order_without_its_file_is_refused_before_any_scoring(data, tiny_model_dir):
    import torch
    from gainrl.dist import DistInfo
    from gainrl.train_data import load_ranking
    cfg = load_config([f"model.path={tiny_model_dir}", f"data.path={BUNDLED_ROWS}", "sampler.order=pass_rate"],
                      TrainRunConfig)
    with pytest.raises(ValueError, match="sampler.order.*train.score_file"):
        load_ranking(cfg, DistInfo(0, 1, 0, 1, torch.device("cpu")), data)


def test_a_score_file_made_with_another_model_is_refused_unless_allowed(data, tmp_path, tiny_model_dir):
    import shutil

    import torch
    from gainrl.dist import DistInfo
    from gainrl.train_data import load_ranking
    cfg = load_config([f"model.path={tiny_model_dir}", f"data.path={BUNDLED_ROWS}", "pass_rate.samples=4"],
                      PassRateRunConfig, validate_pass_rate)
    columns = columns_from_counts(data.rows, data.prompts, {i: (i % 5, 4, 7) for i in range(len(data.rows))})
    path = str(tmp_path / "pass_rate.json")
    write_score_file(path, file_metadata(cfg, data, "float32"), columns)  # made with the tiny model
    other = tmp_path / "other-model"
    shutil.copytree(tiny_model_dir, other)
    config = json.load(open(other / "config.json"))
    json.dump({**config, "rms_norm_eps": 1e-5}, open(other / "config.json", "w"))  # another model
    info = DistInfo(0, 1, 0, 1, torch.device("cpu"))

    def ranking(model, *extra):
        train_cfg = load_config([f"model.path={model}", f"data.path={BUNDLED_ROWS}", "sampler.order=pass_rate",
                                 f"train.score_file={path}", *extra], TrainRunConfig)
        return load_ranking(train_cfg, info, data)

    assert ranking(tiny_model_dir)[1]["pass_rate"] == columns["pass_rate"]  # its own model: used
    with pytest.raises(ValueError, match=r"config key 'train.score_file': .*pass_rate.json was made with another "
                                         r"model .*train.allow_score_file_from_other_model=true"):
        ranking(other)
    assert ranking(other, "train.allow_score_file_from_other_model=true")[1]["pass_rate"] == columns["pass_rate"]
