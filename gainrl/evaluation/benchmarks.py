"""The benchmark registry and loading a benchmark's problems from its file or dataset name.

Math files hold `{id, problem, answer, ...}` rows; code files hold `{id, prompt, entry_point,
test, test_type, canonical_solution, ...}` rows (eval/data/README.md). Small sets are bundled
in eval/data; HumanEval+ and MBPP+ are read from `$GAINRL_DATA/code/` (GAINRL_DATA defaults to
the `shared/data` folder beside the repository) unless a path or dataset name is given.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Union

import datasets

from ..data import FILE_FORMATS
from ..prompts import code_problem_text
from ..rewards.math import reference_text

REPO_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUNDLED_DIR = os.path.join(REPO_DIR, "eval", "data")


def external_data_dir() -> str:
    return os.environ.get("GAINRL_DATA", os.path.join(os.path.dirname(REPO_DIR), "shared", "data"))


@dataclass(frozen=True)
class Benchmark:
    name: str
    kind: str  # "math" (last \boxed{} against `answer`) or "code" (the program runs the row's tests)
    file: str  # a file in eval/data, or (external=True) a path under $GAINRL_DATA
    split: Optional[str] = None  # keep only rows whose meta.split is this
    external: bool = False  # too large to bundle: read from $GAINRL_DATA or a given path
    custom: bool = False  # a user's math set (math_files): `file` is its path

    def default_source(self) -> str:
        if self.custom:
            return self.file
        return os.path.join(external_data_dir() if self.external else BUNDLED_DIR, self.file)


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in [
    Benchmark("gsm8k", "math", "gsm8k_test.jsonl"),
    Benchmark("math500", "math", "math500.jsonl"),
    Benchmark("aime24", "math", "aime24.jsonl"),
    Benchmark("amc23", "math", "amc23.jsonl"),
    Benchmark("amc22_23", "math", "amc22_23.jsonl"),
    Benchmark("minerva", "math", "minerva_math.jsonl"),
    Benchmark("olympiadbench", "math", "olympiadbench.jsonl"),
    Benchmark("humaneval", "code", "humaneval.jsonl"),
    Benchmark("humanevalplus", "code", "code/humanevalplus.jsonl", external=True),
    Benchmark("mbpp", "code", "mbpp_sanitized.jsonl", split="test"),
    Benchmark("mbppplus", "code", "code/mbppplus.jsonl", external=True),
]}

def resolve_benchmark(name: str, math_files: Optional[dict[str, str]] = None) -> Benchmark:
    """A registered benchmark, or a user's math set named in `math_files` (name -> file of {id, problem, answer})."""
    if name in BENCHMARKS:
        return BENCHMARKS[name]
    if math_files and name in math_files:
        return Benchmark(name, "math", math_files[name], custom=True)
    raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)} (or add it to math_files)")


REQUIRED_FIELDS = {"math": ("id", "problem", "answer"),
                   "code": ("id", "prompt", "entry_point", "test", "test_type")}


@dataclass(frozen=True)
class Problem:
    id: str
    text: str  # what the prompt's {problem} receives
    answer: Optional[str]  # math: the reference answer; code: None
    row: dict  # the whole record (code: tests, entry point; math: meta)


def _read_table(source: str, benchmark: Benchmark) -> datasets.Dataset:
    name = benchmark.name
    ext = os.path.splitext(source)[1].lower()
    if ext in FILE_FORMATS:
        if not os.path.isfile(source):
            hint = " (set GAINRL_DATA or paths." + name + ")" if benchmark.external else ""
            raise ValueError(f"benchmark {name}: file not found: {source}{hint}")
        return datasets.load_dataset(FILE_FORMATS[ext], data_files=source, split="train")
    try:
        return datasets.load_dataset(source, split="test")
    except Exception as e:
        raise ValueError(f"benchmark {name}: {source!r} is neither a local file nor a loadable dataset: {e}") from e


def problem_text(kind: str, row: dict) -> str:
    """The text a prompt asks about: a math problem as it is, a code task as training shows it."""
    if kind == "math":
        return row["problem"]
    return code_problem_text(row["prompt"], row["test"], row["test_type"])


def load_problems(benchmark: Union[Benchmark, str], source: Optional[str] = None,
                  limit: Optional[int] = None) -> list[Problem]:
    """The benchmark's problems in file order (the first `limit` of them), validated."""
    if isinstance(benchmark, str):
        benchmark = BENCHMARKS[benchmark]
    name = benchmark.name
    source = source or benchmark.default_source()
    table = _read_table(source, benchmark)
    problems, seen = [], set()
    for index, row in enumerate(table):
        if benchmark.split is not None and (row.get("meta") or {}).get("split") != benchmark.split:
            continue
        where = f"{source}, row {index}"
        missing = [key for key in REQUIRED_FIELDS[benchmark.kind] if row.get(key) in (None, "")]
        if missing:
            raise ValueError(f"benchmark {name}: {where} has no {', '.join(missing)}")
        problem_id = str(row["id"])
        if problem_id in seen:
            raise ValueError(f"benchmark {name}: {where} repeats id {problem_id!r}")
        seen.add(problem_id)
        if benchmark.kind == "code" and row["test_type"] not in ("check_fn", "script"):
            raise ValueError(f"benchmark {name}: {where} has test_type {row['test_type']!r} (check_fn or script)")
        answer = reference_text(row["answer"]).strip() if benchmark.kind == "math" else None
        problems.append(Problem(problem_id, problem_text(benchmark.kind, row), answer, row))
        if limit is not None and len(problems) == limit:
            break
    if not problems:
        raise ValueError(f"benchmark {name}: no problems in {source}")
    return problems
