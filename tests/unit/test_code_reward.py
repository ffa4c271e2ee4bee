"""Code rewards: program extraction, job building for HumanEval/MBPP rows, all-or-nothing and pass-fraction rewards."""
import json
import os

import pytest

from gainrl.rewards.code import build_job, code_reward, extract_program, run_completions

from tests.helpers import SHARED

CODE = os.path.join(SHARED, "data", "code")


def _rows(name):
    with open(os.path.join(CODE, name + ".jsonl")) as f:
        return {row["id"]: row for row in map(json.loads, f)}


@pytest.fixture(scope="module")
def humaneval():
    return _rows("humaneval")


@pytest.fixture(scope="module")
def mbpp():
    return _rows("mbpp")


# ------------------------------------------------------------------------------- extraction
@pytest.mark.parametrize("completion, entry_point, expected", [
    ("Here you go:\n```python\ndef f(x):\n    return x\n```\nDone.", None, "def f(x):\n    return x\n"),
    ("```py\nx = 1\n```", None, "x = 1\n"),
    ("```\nx = 2\n```", None, "x = 2\n"),
    ("```Python3\nx = 3\n```", None, "x = 3\n"),
    # the block defining the entry point wins over a later usage example
    ("```python\ndef f(x):\n    return x\n```\nUsage:\n```python\nprint(f(2))\n```", "f", "def f(x):\n    return x\n"),
    # without an entry point: the last block that defines something
    ("```python\ndef g():\n    pass\n```\n```python\ndef h():\n    pass\n```\n```python\nh()\n```", None,
     "def h():\n    pass\n"),
    # only the last of several definitions of the entry point counts (a corrected second attempt)
    ("```python\ndef f():\n    return 1\n```\nOops, fixed:\n```python\ndef f():\n    return 2\n```", "f",
     "def f():\n    return 2\n"),
    # other languages are ignored
    ("```bash\npip install x\n```\n```python\nimport x\n```", None, "import x\n"),
    # an unclosed fence (truncated generation) runs to the end
    ("Sure!\n```python\ndef f():\n    return 1", "f", "def f():\n    return 1"),
    # a fence indented inside a list loses that indentation
    ("1. code:\n   ```python\n   def f():\n       return 1\n   ```\n", "f", "def f():\n    return 1\n"),
    # no fence: the completion itself, unchanged (a base model's function-body continuation keeps its indent)
    ("    return x + 1\n\n", "f", "    return x + 1\n\n"),
    ("The answer is forty-two.", None, "The answer is forty-two."),
    ("```bash\nls\n```", None, "```bash\nls\n```"),
], ids=["fenced", "py", "untagged", "Python3", "entry-point-wins", "last-definition", "last-of-entry-points",
        "other-language", "unclosed", "indented-fence", "bare-body", "no-code", "only-other-language"])
def test_extract_program(completion, entry_point, expected):
    assert extract_program(completion, entry_point) == expected


def test_extract_program_rejects_non_strings():
    with pytest.raises(ValueError, match="completion"):
        extract_program(None)


# ------------------------------------------------------------------------------- job building
def test_humaneval_body_continues_the_prompt_and_full_function_follows_it(humaneval):
    row = humaneval["HumanEval/10"]  # the prompt defines a helper, is_palindrome, that the answer uses
    body_job = build_job(row, row["canonical_solution"])
    assert body_job.solution == row["prompt"] + row["canonical_solution"]
    assert body_job.tests.endswith("check(make_palindrome)\n") and body_job.entry_point == "make_palindrome"
    full = "def make_palindrome(string: str) -> str:\n" + row["canonical_solution"]
    full_job = build_job(row, "Here is my solution:\n```python\n" + full + "```\n")
    assert full_job.solution == row["prompt"] + "\n" + full


def test_mbpp_program_runs_alone_before_the_tests(mbpp):
    row = mbpp["mbpp/1"]
    job = build_job(row, "```python\n" + row["canonical_solution"] + "\n```", pass_fraction=True)
    assert job.solution == row["canonical_solution"] + "\n" and job.tests == row["test"] and job.split_tests


@pytest.mark.parametrize("change, message", [
    ({"test_type": "doctest"}, "'mbpp/1'.*test_type"),
    ({"entry_point": None}, "'mbpp/1'.*entry_point"),
    ({"entry_point": "not an identifier"}, "'mbpp/1'.*identifier"),
])
def test_bad_rows_raise_value_errors_naming_the_row(mbpp, change, message):
    with pytest.raises(ValueError, match=message):
        build_job({**mbpp["mbpp/1"], **change}, "pass")


def test_length_mismatch_is_a_value_error(mbpp):
    with pytest.raises(ValueError, match="2 completions for 1 problems"):
        code_reward(["a", "b"], [mbpp["mbpp/1"]])


# ------------------------------------------------------------------------------- rewards
def test_all_or_nothing_rewards_on_real_rows(humaneval, mbpp):
    he, mb = humaneval["HumanEval/2"], mbpp["mbpp/1"]
    completions = [
        he["canonical_solution"],  # base-model body continuation
        "```python\ndef truncate_number(number: float) -> float:\n    return number % 1.0\n```",  # chat answer
        "```python\ndef truncate_number(number: float) -> float:\n    return number // 1.0\n```",  # wrong
        "```python\ndef truncate_number(number):\n    return 0.5\nimport sys\nsys.exit(0)\n```",  # exits early
        "I cannot solve this.",
        "```python\n" + mb["canonical_solution"] + "\n```",
        "```python\ndef min_cost(cost, m, n):\n    return 8\n```",  # passes one of three asserts
    ]
    problems = [he, he, he, he, he, mb, mb]
    assert code_reward(completions, problems) == [1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def test_pass_fraction_counts_script_asserts_but_not_check_functions(humaneval, mbpp):
    mb, he = mbpp["mbpp/1"], humaneval["HumanEval/2"]
    completions = ["def min_cost(cost, m, n):\n    return 8\n",  # expected outputs are 8, 12, 16
                   "def min_cost(cost, m, n):\n    return {1: 8, 2: 12}.get(cost[0][0], 0)\n",  # cost[0][0] is 1, 2, 3
                   "def min_cost(cost, m, n):\n    raise ValueError\n",
                   mb["canonical_solution"],
                   "    return 0.5\n"]  # HumanEval/2: passes check's first assert only, but check is one unit
    rewards = code_reward(completions, [mb, mb, mb, mb, he], pass_fraction=True)
    assert rewards == pytest.approx([1 / 3, 2 / 3, 0.0, 1.0, 0.0])


ALWAYS_EQUAL = """
class Anything:
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False
    def __lt__(self, other):
        return True
    __le__ = __gt__ = __ge__ = __lt__
    __hash__ = object.__hash__
    def __abs__(self):
        return 0
    def __sub__(self, other):
        return self
    __rsub__ = __add__ = __radd__ = __sub__
"""


@pytest.mark.parametrize("value, kind", [("Anything()", "Anything"), ("Liar(5)", "Liar"), ("Posing()", "Posing"),
                                         ("[1, (2, {'k': Anything()})]", "Anything"), ("iter([8])", "list_iterator")])
def test_a_return_value_that_fakes_equality_fails_on_humaneval_and_mbpp_rows(humaneval, mbpp, value, kind):
    """The entry point's return value reaches the tests only as plain data: an object that compares equal
    to anything (alone or nested in a list), an int subclass that lies, a lazy iterator: each fails the
    check, for HumanEval's check(candidate) and MBPP's script asserts (every one of them, with
    pass_fraction), even though the comparison itself would have said equal."""
    he, mb = humaneval["HumanEval/2"], mbpp["mbpp/1"]
    liar = ("class Liar(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n"
            # a metaclass that makes its class hash and compare like int: equal to `int` in a set lookup
            "class PoseAsInt(type):\n    def __hash__(cls):\n        return hash(int)\n"
            "    def __eq__(cls, other):\n        return True\n"
            "class Posing(Anything, metaclass=PoseAsInt):\n    pass\n")
    programs = [f"def truncate_number(number):\n    return {value}\n", f"def min_cost(cost, m, n):\n    return {value}\n"]
    completions = ["```python\n" + ALWAYS_EQUAL + liar + program + "```" for program in programs]
    results = run_completions(completions, [he, mb], pass_fraction=True)
    for result in results:
        assert (result.status, result.reason, result.passed_checks) == ("failed", "not_plain_data", 0), result
        assert f"returned {kind}, not plain data" in result.detail


def test_a_check_calls_the_prompts_own_helpers_not_the_programs(humaneval):
    """HumanEval/38's check encodes with the prompt's encode_cyclic and asks decode_cyclic to invert it;
    HumanEval/32's checks find_zero's root with the prompt's poly. A program that redefines the helper to
    make the check trivial (identity encoding, a poly that is always 0) fails; the canonical ones pass."""
    cyclic, zero = humaneval["HumanEval/38"], humaneval["HumanEval/32"]
    cheats = ["```python\ndef encode_cyclic(s):\n    return s\n\ndef decode_cyclic(s):\n    return s\n```",
              "```python\ndef poly(xs, x):\n    return 0\n\ndef find_zero(xs):\n    return 0.0\n```"]
    assert code_reward(cheats, [cyclic, zero]) == [0.0, 0.0]
    assert code_reward([cyclic["canonical_solution"], zero["canonical_solution"]], [cyclic, zero]) == [1.0, 1.0]


def test_plain_data_of_every_builtin_kind_passes(mbpp):
    row = dict(mbpp["mbpp/1"], test="from collections import Counter, deque\nfrom fractions import Fraction\n"
               "assert min_cost(1, 2, 3) == [1, 2.5, (3, 'a', b'b'), {4: {5}}, frozenset({6}), None, True, "
               "Counter('ab'), deque([7]), Fraction(1, 3), range(2)]\n")
    program = ("from collections import Counter, deque\nfrom fractions import Fraction\n"
               "def min_cost(cost, m, n):\n    x = [1, 2.5, (3, 'a', b'b'), {4: {5}}, frozenset({6}), None, True, "
               "Counter('ab'), deque([7]), Fraction(1, 3), range(2)]\n    x.append(x)\n    x.pop()\n    return x\n")
    assert code_reward([program], [row]) == [1.0]


def test_run_completions_reports_why(mbpp):
    row = mbpp["mbpp/1"]
    results = run_completions(["def min_cost(cost, m, n):\n    return 8\n", "def min_cost(:\n"], [row, row],
                              pass_fraction=True)
    assert (results[0].status, results[0].reason, results[0].passed_checks, results[0].total_checks) == (
        "failed", "assertion", 1, 3)
    assert (results[1].status, results[1].reason) == ("failed", "syntax_error")
