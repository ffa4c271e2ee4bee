"""The chains task: answers and solutions checked independently, held-out rows share no chain, lengths spread."""
import ast
import json
import re

import pytest

from gainrl.config import ArithmeticDataConfig, DataConfig, PromptConfig
from gainrl.inputs import ensure_data
from gainrl.prompts import PromptBuilder
from gainrl.tasks import chains
from gainrl.tasks.arithmetic import level_counts

WORDS = {"add": "+", "subtract": "-", "up": "+", "down": "-", "wins": "+", "loses": "-", "rises": "+", "falls": "-"}


def chain_from_words(problem: str) -> str:
    """The chain a problem states, read back from its text by a parser independent of the generator."""
    match = re.fullmatch(r"(?:What is|Compute) ([0-9+-]+)[?.]", problem)
    if match:
        return match.group(1)
    start = re.search(r"\d+", problem).group()
    steps = re.findall(r"\b(add|subtract|up|down|wins|loses|rises|falls)(?: by)? (\d)\b", problem)
    assert steps, problem
    return start + "".join(WORDS[word] + digit for word, digit in steps)


def python_value(chain: str) -> int:
    tree = ast.parse(chain, mode="eval")
    assert all(isinstance(n, (ast.Expression, ast.BinOp, ast.Constant, ast.Add, ast.Sub)) for n in ast.walk(tree)), chain
    return eval(compile(tree, "<chain>", "eval"))


def test_answers_and_solutions_check_out_independently():
    rows = chains.make_problems(600, seed=3)
    assert {r["template"] for r in rows} == set(chains.TEMPLATES)
    for row in rows:
        assert chain_from_words(row["problem"]) == row["chain"], row
        assert str(python_value(row["chain"])) == row["answer"], row
        steps = re.findall(r"(\d+)([+-])(\d)=(\d+)\.", row["solution"])
        assert len(steps) == row["difficulty"] == len(re.findall(r"[+-]", row["chain"])), row
        value = int(re.match(r"\d+", row["chain"]).group())
        for left, op, digit, total in steps:  # each sentence continues from the last and is right
            assert int(left) == value and int(total) == python_value(f"{left}{op}{digit}") >= 0, row
            value = int(total)
        assert row["solution"].endswith(f"The answer is \\boxed{{{row['answer']}}}."), row


def test_deterministic_distinct_chains_and_shares_follow_the_weights():
    rows = chains.make_problems(500, seed=5, weights=[1, 1, 2, 2, 2])
    assert rows == chains.make_problems(500, seed=5, weights=[1, 1, 2, 2, 2])
    assert rows != chains.make_problems(500, seed=6, weights=[1, 1, 2, 2, 2])
    assert len({r["chain"] for r in rows}) == len(rows) and len({r["id"] for r in rows}) == len(rows)
    assert [sum(r["difficulty"] == d for r in rows) for d in range(1, 6)] == level_counts(500, [1, 1, 2, 2, 2])
    with pytest.raises(ValueError, match="chains of 1 steps"):
        chains.make_problems(400, seed=0, weights=[1, 0, 0, 0, 0])  # only 135 one-step chains exist
    with pytest.raises(ValueError, match="weights"):
        chains.make_problems(10, seed=0, weights=[1, 2])


def test_the_recipe_build_writes_a_held_out_split_sharing_no_chain(tmp_path):
    train_path, test_path = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    ensure_data(DataConfig(path=str(train_path), build_arithmetic=ArithmeticDataConfig(
        task="chains", num_rows=3000, seed=0, test_path=str(test_path), num_test=500)))
    train = [json.loads(line) for line in train_path.read_text().splitlines()]
    test = [json.loads(line) for line in test_path.read_text().splitlines()]
    assert (len(train), len(test)) == (3000, 500)
    # no chain in both splits, whatever its wording: read back from the problem texts themselves
    assert not {chain_from_words(r["problem"]) for r in train} & {chain_from_words(r["problem"]) for r in test}
    assert not {r["id"] for r in train} & {r["id"] for r in test}
    assert {r["difficulty"] for r in test} == set(range(1, 6))


def test_prompt_lengths_spread_several_fold(tiny_tokenizer):
    builder = PromptBuilder(tiny_tokenizer, PromptConfig(system_prompt=None, one_shot_question=None,
                                                         one_shot_answer=None))
    lengths = [builder.build(r["problem"]).num_tokens for r in chains.make_problems(400, seed=0)]
    assert max(lengths) >= 3 * min(lengths), (min(lengths), max(lengths))
