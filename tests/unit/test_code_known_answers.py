"""Known answers: every canonical solution passes its own tests through the sandbox; mismatched ones fail.

CI runs HumanEval (164), MBPP-sanitized (427) and MBPP+'s base asserts (378) in full, and 10 fixed
fast rows of HumanEval+ and MBPP+ (their full tests are heavy: ~27 and ~57 CPU-s per set here, up to
17 CPU-s and 2.2 GB RSS for one task); `-m slow` runs all of MBPP (974, 26 s; the sanitized set is a
re-edited subset of its problems), HumanEval+ and MBPP+.
"""
import json
import os

import pytest

from gainrl.rewards.code import build_job
from gainrl.rewards.sandbox import Limits, run_many

from tests.helpers import SHARED

CODE = os.path.join(SHARED, "data", "code")
LIMITS = Limits()  # the defaults are meant for the heavy HumanEval+/MBPP+ tests
# rows spread over each set (every 16th / 37th row, skipping to the next one under 0.1 CPU-s)
PLUS_SUBSETS = {
    "humanevalplus": ["HumanEval/0", "HumanEval/16", "HumanEval/32", "HumanEval/48", "HumanEval/64", "HumanEval/80",
                      "HumanEval/97", "HumanEval/112", "HumanEval/128", "HumanEval/144"],
    "mbppplus": ["Mbpp/2", "Mbpp/85", "Mbpp/129", "Mbpp/242", "Mbpp/287", "Mbpp/420", "Mbpp/471", "Mbpp/590",
                 "Mbpp/635", "Mbpp/755"],
}


def _rows(name):
    with open(os.path.join(CODE, name + ".jsonl")) as f:
        return [json.loads(line) for line in f]


def _run_canonical(rows, tests=None):
    jobs = [build_job(row, row["canonical_solution"], extract=False,
                      tests=None if tests is None else tests(row)) for row in rows]
    return run_many(jobs, LIMITS)


def _failures(rows, results):
    return [(row["id"], r.status, r.reason, r.detail[:300], r.stderr[-300:]) for row, r in zip(rows, results)
            if not r.passed]


@pytest.mark.parametrize("name, count", [("humaneval", 164), ("mbpp_sanitized", 427),
                                         pytest.param("mbpp", 974, marks=pytest.mark.slow)])
def test_every_canonical_solution_passes(name, count):
    rows = _rows(name)
    assert len(rows) == count
    assert _failures(rows, _run_canonical(rows)) == []


@pytest.mark.parametrize("name", sorted(PLUS_SUBSETS))
def test_plus_subset_canonical_solutions_pass(name):
    wanted = set(PLUS_SUBSETS[name])
    rows = [row for row in _rows(name) if row["id"] in wanted]
    assert len(rows) == len(wanted)
    assert _failures(rows, _run_canonical(rows)) == []


@pytest.mark.slow
@pytest.mark.parametrize("name, count", [("humanevalplus", 164), ("mbppplus", 378)])
def test_every_plus_canonical_solution_passes(name, count):
    rows = _rows(name)
    assert len(rows) == count
    assert _failures(rows, _run_canonical(rows)) == []


def test_mbppplus_base_tests_pass_except_mbpp120_which_lacks_import_math():
    # MBPP+'s original asserts (meta.base_test) call math.isclose for Mbpp/120 without importing math
    rows = _rows("mbppplus")
    results = _run_canonical(rows, tests=lambda row: row["meta"]["base_test"])
    failures = _failures(rows, results)
    assert [failure[:4] for failure in failures] == [
        ("Mbpp/120", "failed", "exception", "NameError: name 'math' is not defined")]
    fixed = [row for row in rows if row["id"] == "Mbpp/120"]
    assert _failures(fixed, _run_canonical(fixed, tests=lambda row: "import math\n" + row["meta"]["base_test"])) == []


@pytest.mark.parametrize("name", ["humaneval", "mbpp_sanitized", "mbpp", "humanevalplus", "mbppplus"])
def test_canonical_solution_of_another_problem_fails(name):
    rows = _rows(name)
    picks = [0, 7, 42, 99, 150]
    jobs = [build_job(rows[i], rows[i + 1]["canonical_solution"], extract=False) for i in picks]
    results = run_many(jobs, LIMITS)
    assert [r.status for r in results] == ["failed"] * len(picks), [(r.reason, r.detail[:100]) for r in results]
