"""Code rewards: extract a program from a completion, build the sandbox job for a code problem, score it.

Problem rows follow ../shared/data/code/*.jsonl: `{id, prompt, entry_point, test, test_type,
canonical_solution, source, meta}`.

* `test_type == "check_fn"` (HumanEval, HumanEval+): `test` defines `check(candidate)`. A
  completion that defines `entry_point` at top level (a whole function, the usual chat answer)
  runs after the prompt (`prompt + "\\n" + program`: the prompt's imports and helper functions
  stay available, and the completion's definition replaces the prompt's stub); any other
  completion continues the prompt's function body (`prompt + program`, the base-model style).
  The tests are `test + "\\n\\ncheck(<entry_point>)\\n"`.
* `test_type == "script"` (MBPP, MBPP-sanitized, MBPP+): the program alone, then `test`
  (top-level asserts, or MBPP+'s input/expected-output loop); it must define `entry_point`.

Rewards are all-or-nothing by default. With `pass_fraction=True` a script test's top-level
`assert` statements run one by one in the same process and the reward is the fraction that
passed (also after a timeout: the asserts finished before it count). check_fn tests (the
asserts live inside `check`) and MBPP+'s loop tests are a single check, so they stay 0 or 1.

The program runs as module "solution", not "__main__": a trailing `if __name__ == "__main__":`
demo block is left in place and does not run, so `extract_program` never has to cut code.
"""
from __future__ import annotations

import re
from typing import Callable, List, Mapping, Optional, Sequence, Union

from gainrl.rewards.sandbox import Job, Limits, SandboxResult, run_many

_FENCE = re.compile(r"^([ \t]*)(`{3,})[ \t]*([^\n`]*)\n(.*?)(?:^[ \t]*\2[ \t]*$|\Z)", re.M | re.S)
_PYTHON_TAGS = {"", "python", "py", "python3", "py3"}
_REQUIRED = ("id", "prompt", "entry_point", "test", "test_type")


def _fenced_blocks(completion: str) -> List[str]:
    """Code of each fenced block tagged python/py/... or untagged, in order; an unclosed last fence runs to the end."""
    blocks = []
    for match in _FENCE.finditer(completion):
        indent, tag, body = match.group(1), match.group(3).strip().lower(), match.group(4)
        if (tag.split()[0] if tag else "") not in _PYTHON_TAGS:
            continue
        if indent:  # a fence indented in a list: drop that indentation from its lines
            body = "\n".join(line[len(indent):] if line.startswith(indent) else line.lstrip()
                             for line in body.split("\n"))
        blocks.append(body)
    return blocks


def _defines(code: str, name: str) -> bool:
    return re.search(rf"^(?:async[ \t]+)?def[ \t]+{re.escape(name)}[ \t]*\(", code, re.M) is not None


def extract_program(completion: str, entry_point: Optional[str] = None) -> str:
    """The program in a completion.

    Among the fenced blocks (```python, ```py, ``` ...; other languages are ignored) the last one
    that defines `entry_point` wins, else the last one that defines any function or class, else
    the last block. Without a fenced block the completion itself is the program, unchanged (a
    base model's continuation of a function body keeps its indentation). Text without code is
    returned as is and fails to compile in the sandbox.
    """
    if not isinstance(completion, str):
        raise ValueError(f"completion must be a str, got {type(completion).__name__}")
    blocks = _fenced_blocks(completion)
    if not blocks:
        return completion
    if entry_point:
        defining = [block for block in blocks if _defines(block, entry_point)]
        if defining:
            return defining[-1]
    defining = [block for block in blocks if re.search(r"^(?:async[ \t]+)?(?:def|class)[ \t]", block, re.M)]
    return (defining or blocks)[-1]


def _check_row(problem: Mapping) -> str:
    if not isinstance(problem, Mapping):
        raise ValueError(f"problem must be a mapping, got {type(problem).__name__}")
    row_id = problem.get("id", "<no id>")
    missing = [key for key in _REQUIRED if not isinstance(problem.get(key), str)]
    if missing:
        raise ValueError(f"problem {row_id!r}: missing or non-string keys {missing}")
    if problem["test_type"] not in ("check_fn", "script"):
        raise ValueError(f"problem {row_id!r}: unknown test_type {problem['test_type']!r}")
    if not problem["entry_point"].isidentifier():
        raise ValueError(f"problem {row_id!r}: entry_point {problem['entry_point']!r} is not an identifier")
    return row_id


def build_job(problem: Mapping, completion: str, *, pass_fraction: bool = False, tests: Optional[str] = None,
              extract: bool = True) -> Job:
    """The sandbox job that checks `completion` on `problem`.

    `tests`: replaces the row's `test` (e.g. MBPP+'s `meta["base_test"]`). `extract=False` takes
    the completion as the program verbatim (e.g. a canonical solution).
    """
    row_id = _check_row(problem)
    entry = problem["entry_point"]
    program = extract_program(completion, entry) if extract else completion
    test = problem["test"] if tests is None else tests
    trusted = ""
    if problem["test_type"] == "check_fn":
        solution = problem["prompt"] + "\n" + program if _defines(program, entry) else problem["prompt"] + program
        test = test + f"\n\ncheck({entry})\n"
        trusted = problem["prompt"]  # the helpers a check calls are the prompt's, not the program's
    else:
        solution = program
    return Job(solution=solution, tests=test, entry_point=entry, split_tests=pass_fraction, name=str(row_id),
               trusted=trusted)


def run_completions(completions: Sequence[str], problems: Sequence[Mapping], *, pass_fraction: bool = False,
                    limits: Optional[Limits] = None, workers: Optional[int] = None, isolation: str = "auto",
                    progress: Union[None, bool, Callable[[int, int], None]] = None) -> List[SandboxResult]:
    """Sandbox results of completion i on problem i, in order (all run concurrently)."""
    if len(completions) != len(problems):
        raise ValueError(f"{len(completions)} completions for {len(problems)} problems")
    jobs = [build_job(problem, completion, pass_fraction=pass_fraction)
            for completion, problem in zip(completions, problems)]
    return run_many(jobs, limits, workers=workers, isolation=isolation, progress=progress, desc="code reward")


def code_reward(completions: Sequence[str], problems: Sequence[Mapping], *, pass_fraction: bool = False,
                limits: Optional[Limits] = None, workers: Optional[int] = None, isolation: str = "auto",
                progress: Union[None, bool, Callable[[int, int], None]] = None) -> List[float]:
    """Reward of completion i on problem i: 1.0 if every test passes, else 0.0 (or the passed fraction of
    a script test's top-level asserts with `pass_fraction=True`). Timeouts and sandbox errors score 0
    (plus the asserts that passed before a timeout, with `pass_fraction`)."""
    results = run_completions(completions, problems, pass_fraction=pass_fraction, limits=limits, workers=workers,
                              isolation=isolation, progress=progress)
    if pass_fraction:
        return [result.fraction for result in results]
    return [1.0 if result.passed else 0.0 for result in results]
