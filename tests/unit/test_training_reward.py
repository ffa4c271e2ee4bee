"""The training reward chosen by reward.kind: math answers and sandboxed code tests on data rows."""
import os

import pytest

from gainrl.config import DataConfig, RewardConfig, TrainRunConfig, load_config
from gainrl.data import Row, load_rows
from gainrl.prompts import problem_text
from gainrl.rewards.training import build_reward
from tests.helpers import REPO

MBPP = os.path.join(REPO, "eval", "data", "mbpp_sanitized.jsonl")
CODE_FIELDS = ["entry_point", "test", "test_type"]


def test_code_rows_keep_their_test_fields_and_canonical_programs_earn_full_reward():
    rows = load_rows(DataConfig(path=MBPP, problem_field="prompt", answer_field="canonical_solution",
                                keep_fields=CODE_FIELDS, limit=3)).rows
    assert all(set(row.fields) == set(CODE_FIELDS) for row in rows)
    for row in rows:  # the prompt the trainer builds names the function the tests call
        assert row.fields["entry_point"] in problem_text(row)
    reward = build_reward(RewardConfig(kind="code", timeout_s=30, num_workers=2))
    try:
        solutions = [f"```python\n{row.answer}\n```" for row in rows]
        rewards, num_errors, num_timeouts = reward(solutions + solutions[:1], rows + rows[1:2])
        assert rewards == [1.0, 1.0, 1.0, 0.0]  # the last one is another problem's program
        assert (num_errors, num_timeouts) == (0, 0)
    finally:
        reward.close()
    rewards, _, num_timeouts = build_reward(RewardConfig(kind="code", timeout_s=2, num_workers=1))(
        ["while True:\n    pass\n"], rows[:1])
    assert (rewards, num_timeouts) == ([0.0], 1)


def test_pass_fraction_counts_the_asserts_that_pass():
    row = Row("add", "Write add(a, b).", "-", 0, {"entry_point": "add", "test_type": "script",
                                                  "test": "assert add(1, 1) == 2\nassert add(2, 2) == 4\nassert add(0, 5) == 5\n"})
    doubles = "def add(a, b):\n    return 2 * a\n"  # right for the first two asserts only
    fraction = build_reward(RewardConfig(kind="code", timeout_s=30, num_workers=1, pass_fraction=True))
    all_or_nothing = build_reward(RewardConfig(kind="code", timeout_s=30, num_workers=1))
    assert fraction([doubles], [row])[0] == [pytest.approx(2 / 3)]
    assert all_or_nothing([doubles], [row])[0] == [0.0]


def test_math_reward_through_the_same_interface():
    rows = [Row("a", "1+1?", "2", 0), Row("b", "half?", "\\frac{1}{2}", 1)]
    reward = build_reward(RewardConfig(kind="math", timeout_s=10, num_workers=1))
    try:
        assert reward(["\\boxed{2}", "so \\boxed{0.5}"], rows)[0] == [1.0, 1.0]
        assert reward(["\\boxed{3}", "no box"], rows)[0] == [0.0, 0.0]
    finally:
        reward.close()


def test_code_reward_without_the_test_fields_is_a_config_error_and_a_missing_field_a_data_error(tmp_path):
    with pytest.raises(ValueError, match="'data.keep_fields'"):
        load_config(["model.path=m", f"data.path={MBPP}", "reward.kind=code"], TrainRunConfig)
    with pytest.raises(ValueError, match=r"no field\(s\) \['entry_pont'\]"):
        load_rows(DataConfig(path=MBPP, problem_field="prompt", answer_field="canonical_solution",
                             keep_fields=["entry_pont"]))
