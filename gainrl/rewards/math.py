"""Math answer grading: a completion's last \\boxed{} against a reference, by per-benchmark rules, under a time limit.

A completion is graded in three steps:
1. `extract_boxed` takes the content of the last `\\boxed{...}` / `\\fbox{...}` / `\\framebox{...}`
   (braces matched, escaped `\\{ \\}` skipped) or `\\boxed 5` (space form: the next token). No box,
   or a last box left open (a truncated completion), grades wrong ("no_boxed").
2. An answer that qualifies its value where the reference (or one of the problem's choices) does
   not grades wrong ("hedged"): bounds (`18 or more`, `at least 18`, `between 5 and 7`, `18 max`) and,
   under exact rules, estimates (`about 18`, `18-ish`; with a tolerance, `9.6 (approx.)` is 9.6); see
   `math_normalize.hedges`. Both answers are normalised (`math_normalize.normalize_answer`: units,
   `\\text{}`, degrees, percent and dollar signs, spacing, thousands separators, `or`/`and` lists,
   scale and number words; its docstring lists the rules). A reference may be a string or a JSON
   number (142.0 -> "142"). Then, in this process:
   - equal texts grade right ("exact"); a plain `1,000` is read as one number, and failing
     that as a list (`70,110`: MATH's "enter all solutions");
   - multiple choice: a letter `(C)`, `\\text{(C)}`, `\\textbf{(C) }12` (or a bare `C` where the
     problem has choices) grades right against a value only through `GradingRules.choices`, the
     problem's letter -> value map: the letter's value must grade right, and so must a value
     written after the letter. Without choices a lone letter grades wrong against a value (the
     AMC files here have no choices in their problem text: amc22_23, amc23 and amc_train), and
     a letter with a value is graded by its value; two letters are compared as letters;
   - structure: a set `\\{..\\}`, a tuple or interval `(a,b)`, `[a,b)`, .. (brackets must agree:
     `(1,2)` is not `[1,2]`), or a bare list `a, b` is compared item by item. A set is unordered;
     a bare list is unordered (a multiset: `1, 2` == `2, 1`, `-2,-2` != `-2`) when
     `GradingRules.unordered_lists` (the default: MATH's "enter all solutions", OlympiadBench's own
     judge pairs answers in any order), else in order (Minerva: its lists name quantities in the
     order asked). A bare list may stand for a set, or for a parenthesised tuple (then in order:
     `6,31,-1` == `(6,31,-1)`), never for `[a,b]` or a half-open interval; a set is never a tuple
     or an interval (`\\{1,2\\}` != `(1,2)`); `1\\pm\\sqrt2` is the two values; `1,2` is never 12;
   - assignments: `x=3`, `f(x)=2x`, `x\\in[0,1]` against a bare value compare their right-hand
     side (`y = 2x+3` == `2x+3`); two assignments to the same name compare values, to different
     names the whole equations; a list of assignments to distinct names is a mapping
     (`x=1, y=2` == `y=2, x=1` != `x=2, y=1`);
   - two plain numbers (`math_normalize.parse_number`: 025, 18.00, 1.2e5, `1.2\\times10^{5}`,
     `\\frac12`, `2\\frac{1}{2}`, `0.\\overline{3}`) are compared by exact value ("numeric": 12 == 12.00,
     12 != 1.2, `\\frac{1}{2}` == 0.5, 0.333333 != `\\frac13` == `0.\\overline{3}`), or within
     `GradingRules.numeric_rel_tol` of the reference when it is set;
   - two runs of letters, one of them >= 3 long, are text: equal only up to case (`\\text{Yes}` ==
     `yes`; `step` != `pets`, which math_verify would take as equal products of symbols). Two
     two-letter runs are left to math_verify (`xy` == `yx`).
3. Anything else goes to math_verify (`parse` + `verify`) on the normalised items: symbolic
   equality (`2\\sqrt{2}` == `\\sqrt{8}`, `\\frac{\\pi}{2}` == `\\pi/2`), equations, inequalities,
   unions of intervals, matrices. Its own unit stripping is off (units are gone by step 2, and it
   dropped a trailing letter: `\\frac{1}{\\sqrt{2}}c` parsed as `\\frac{1}{\\sqrt{2}}`). Every
   decimal reaches it as its exact fraction (alone, or inside a tuple or a matrix), so its rounding of
   floats (to 6 places: 3.141593 == `\\pi`) never accepts an approximation. With `numeric_rel_tol` set, two answers that evaluate to
   numbers (`\\frac{\\pi}{2}` vs 1.5708) are compared within it instead: the one way an
   approximation grades right.

Benchmarks (`BENCHMARK_RULES`, `rules_for`): exact numbers everywhere except Minerva, whose
answers are rounded physical quantities ("to two significant figures"): the evaluation code
those results are usually reported with (Qwen2.5-Math's `math_equal`, used by DeepScaleR-style
evaluations) compares numbers with `math.isclose(rel_tol=1e-4)`, so Minerva uses
`numeric_rel_tol=1e-4` (9.6 == 9.60 == 9.6004, != 9.61); a looser tolerance is one field away.
Percent signs are dropped, never divided out: `50\\%` == 50 (GSM8K and MATH golds for "what
percent"), and unlike OlympiadBench's own judge 0.625 does not match a gold `62.5\\%`. Choices
are per problem: `rules_for(name).with_choices(parse_choices(problem))`, one rules object per sample.

math_verify can run for minutes on inputs like `9^{9^{9^{9}}}`, and its own time limits use
SIGALRM (main thread only; a timed-out comparison silently returns False). `MathGrader`
therefore runs step 3 in persistent worker processes (spawned once; one answer in flight
per worker) and enforces its own wall-clock limit per answer from any thread: a worker that
overruns is killed and replaced, and that sample scores 0 as "timeout". Steps 1-2 run in the
calling process (microseconds, no IPC), so most GSM8K answers never leave it.
`grade` runs all three steps in the calling process with no time limit (trusted input).
"""
from __future__ import annotations

import atexit
import dataclasses
import functools
import logging
import multiprocessing
import os
import re
import threading
import time
import types
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from multiprocessing.connection import wait as wait_for_connections
from typing import Optional, Sequence, Union

from .math_normalize import (Group, hedges, matching_brace, normalize_answer, parse_choices, parse_group,
                             parse_number, reference_text, split_assignment, split_choice_label,
                             thousands_number)

__all__ = ["BENCHMARK_RULES", "DEFAULT_RULES", "GradingRules", "MathGrader", "Verdict", "extract_boxed", "grade",
           "math_reward", "normalize_answer", "parse_choices", "reference_text", "rules_for"]

# Verdict reasons: which step decided, or why grading failed.
NO_BOXED, EMPTY_BOXED, HEDGED, EXACT, NUMERIC, MATH_VERIFY, TIMEOUT, ERROR = (
    "no_boxed", "empty_boxed", "hedged", "exact", "numeric", "math_verify", "timeout", "error")


@dataclass(frozen=True)
class Verdict:
    correct: bool
    extracted: Optional[str]  # content of the last box; None when absent or unbalanced
    reason: str  # one of the reasons above
    detail: str = ""  # the exception, for reason == "error"


@dataclass(frozen=True)
class GradingRules:
    """How a benchmark's (or one problem's) answers are compared; the module docstring gives the meaning of each field.

    `choices` takes a letter -> value mapping (e.g. from `parse_choices(problem)`) and keeps it as sorted pairs.
    """
    numeric_rel_tol: float = 0.0  # 0: numbers must be equal; else |answer - ref| <= tol * |ref|
    unordered_lists: bool = True  # a bare list `a, b` is a multiset (True) or a sequence (False)
    choices: tuple[tuple[str, str], ...] = ()  # multiple-choice letter -> value text

    def __post_init__(self):
        tol = self.numeric_rel_tol
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 <= tol < 1:
            raise ValueError(f"numeric_rel_tol must be a number in [0, 1), got {tol!r}")
        if not isinstance(self.unordered_lists, bool):
            raise ValueError(f"unordered_lists must be a bool, got {self.unordered_lists!r}")
        pairs = tuple(self.choices.items()) if isinstance(self.choices, Mapping) else tuple(self.choices)
        for pair in pairs:
            if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)
                    and re.fullmatch(r"[A-Z]", pair[0]) and isinstance(pair[1], str) and pair[1].strip()):
                raise ValueError(f"a choice must be (capital letter, non-empty text), got {pair!r}")
        if len({letter for letter, _ in pairs}) != len(pairs):
            raise ValueError(f"choices repeat a letter: {pairs!r}")
        object.__setattr__(self, "choices", tuple(sorted(pairs)))

    @property
    def choice_map(self) -> dict[str, str]:
        return dict(self.choices)

    def with_choices(self, choices: Mapping[str, str]) -> "GradingRules":
        """These rules for one problem whose answer choices are `choices` (letter -> value text)."""
        return dataclasses.replace(self, choices=choices)


DEFAULT_RULES = GradingRules()
_MINERVA = GradingRules(numeric_rel_tol=1e-4, unordered_lists=False)
BENCHMARK_RULES: Mapping[str, GradingRules] = types.MappingProxyType({  # evaluation names and rows' `source`
    "gsm8k": DEFAULT_RULES, "math": DEFAULT_RULES, "math500": DEFAULT_RULES, "aime24": DEFAULT_RULES,
    "amc23": DEFAULT_RULES, "amc22_23": DEFAULT_RULES, "amc_train": DEFAULT_RULES, "olympiadbench": DEFAULT_RULES,
    "minerva": _MINERVA, "minerva_math": _MINERVA,
})


def rules_for(benchmark: str) -> GradingRules:
    """The grading rules of a benchmark, by its evaluation name or its rows' `source`."""
    if benchmark not in BENCHMARK_RULES:
        raise ValueError(f"no grading rules for benchmark {benchmark!r}; known: {', '.join(sorted(BENCHMARK_RULES))}")
    return BENCHMARK_RULES[benchmark]


# ---------------------------------------------------------------- step 1: extraction
_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox|framebox)(?![A-Za-z])")
_BOX_TOKEN = re.compile(r"\s+([^\s${}]+)")


def _braced_content(text: str, open_index: int) -> Optional[str]:
    """Content between text[open_index] == '{' and its matching '}', or None if it never closes."""
    close = matching_brace(text, open_index)
    return None if close is None else text[open_index + 1:close]


def extract_boxed(text: str) -> Optional[str]:
    """Content of the last \\boxed{..}, \\fbox{..}, \\framebox{..} or `\\boxed 5`; None if absent or unbalanced."""
    commands = list(_BOX_COMMAND.finditer(text))
    if not commands:
        return None
    end = commands[-1].end()
    after = text[end:].lstrip()
    if after.startswith("{"):
        return _braced_content(text, len(text) - len(after))
    token = _BOX_TOKEN.match(text, end)
    return token.group(1) if token else None


# ---------------------------------------------------------------- step 2: comparison (math_verify only where needed)
class _NeedsMathVerify(Exception):
    """Raised by the in-process screen where only math_verify can decide."""


_WORD, _LETTER = re.compile(r"[A-Za-z]{2,}"), re.compile(r"[A-Za-z]")


class _Judge:
    """One comparison of normalised answers under `rules`; without math_verify it raises _NeedsMathVerify instead."""

    def __init__(self, rules: GradingRules, with_math_verify: bool):
        self.rules, self.with_math_verify = rules, with_math_verify
        self.choices = rules.choice_map
        self.used_numeric = self.used_math_verify = False

    def reason(self) -> str:
        return MATH_VERIFY if self.used_math_verify else NUMERIC if self.used_numeric else EXACT

    def _label(self, text: str, bare_letters: bool) -> tuple[Optional[str], str]:
        letter, rest = split_choice_label(text, bare_letters)
        return (letter, rest) if letter is not None and letter in (self.choices or "ABCDE") else (None, text)

    def top(self, answer: str, gold: str) -> bool:
        """answer against gold, multiple-choice letters first."""
        if answer == gold:
            return True
        answer_letter, answer_rest = self._label(answer, bool(self.choices))
        gold_letter, gold_rest = self._label(gold, bool(self.choices))
        if gold_letter is not None and answer_letter is None:
            answer_letter, answer_rest = self._label(answer, True)  # `C` against `(C)`
        if answer_letter is not None and gold_letter is None:
            gold_letter, gold_rest = self._label(gold, True)
        if answer_letter is not None and gold_letter is not None:  # and values, where both give one
            return answer_letter == gold_letter and (not answer_rest or not gold_rest
                                                     or self.compare(answer_rest, gold_rest))
        if answer_letter is not None:  # every value the answer names must be the reference's
            values = [normalize_answer(self.choices[answer_letter])] if answer_letter in self.choices else []
            values += [answer_rest] if answer_rest else []
            return bool(values) and all(self.compare(value, gold) for value in values)
        if gold_letter is not None:  # the answer may give the reference's value instead of its letter
            values = [normalize_answer(self.choices[gold_letter])] if gold_letter in self.choices else []
            values += [gold_rest] if gold_rest else []
            return any(self.compare(answer, value) for value in values)
        return self.compare(answer, gold)

    def compare(self, answer: str, gold: str) -> bool:
        if answer == gold:
            return True
        answer_number, gold_number = thousands_number(answer), thousands_number(gold)
        if (answer_number or gold_number) and self.compare(answer_number or answer, gold_number or gold):
            return True  # `1,000` read as one number; else as a list below (`70,110`: the solutions 70 and 110)
        answer_group, gold_group = parse_group(answer), parse_group(gold)
        if answer_group is None and gold_group is None:
            return self._single(answer, gold)
        return self._groups(answer_group or self._as_group(answer), gold_group or self._as_group(gold))

    @staticmethod
    def _as_group(text: str) -> Group:
        """A single value as a one-item list; an assignment of a set or interval (`x\\in[0,1]`) as that group."""
        assignment = split_assignment(text)
        if assignment:
            group = parse_group(assignment[1])
            return group if group else Group("list", (assignment[1],))
        return Group("list", (text,))

    def _groups(self, answer: Group, gold: Group) -> bool:
        answer_named = [split_assignment(item) for item in answer.items]
        gold_named = [split_assignment(item) for item in gold.items]
        if all(answer_named) and all(gold_named):
            answer_map, gold_map = dict(answer_named), dict(gold_named)
            if (len(answer_map) == len(answer.items) and len(gold_map) == len(gold.items) >= 2
                    and answer_map.keys() == gold_map.keys()):  # x=1, y=2: a mapping
                return all(self.compare(answer_map[name], gold_map[name]) for name in gold_map)
        answer_items = [named[1] if named else item for named, item in zip(answer_named, answer.items)]
        gold_items = [named[1] if named else item for named, item in zip(gold_named, gold.items)]
        if len(answer_items) != len(gold_items):
            return False
        kinds = {answer.kind, gold.kind}
        if len(kinds) == 1:
            ordered = not (answer.kind == "set" or answer.kind == "list" and self.rules.unordered_lists)
        elif kinds == {"set", "list"}:
            ordered = False
        elif kinds == {"list", "()"}:  # a tuple written without its parentheses
            ordered = True
        else:  # a set against a tuple, or brackets that differ: (1,2) vs [1,2]
            return False
        if ordered:
            return all(self.compare(a, g) for a, g in zip(answer_items, gold_items))
        return self._multiset_match(answer_items, gold_items)

    def _multiset_match(self, answer_items: list[str], gold_items: list[str]) -> bool:
        """Whether the items pair up one to one (a bipartite matching), trying the given order first."""
        if sorted(answer_items) == sorted(gold_items):
            return True
        equal: dict[tuple[int, int], bool] = {}

        def same(i: int, j: int) -> bool:
            if (i, j) not in equal:
                equal[i, j] = self.compare(answer_items[i], gold_items[j])
            return equal[i, j]

        if all(same(i, i) for i in range(len(gold_items))):
            return True
        owner = [-1] * len(gold_items)  # gold item -> the answer item it is paired with

        def pair(i: int, seen: set) -> bool:
            for j in range(len(gold_items)):
                if j not in seen and same(i, j):
                    seen.add(j)
                    if owner[j] < 0 or pair(owner[j], seen):
                        owner[j] = i
                        return True
            return False

        return all(pair(i, set()) for i in range(len(answer_items)))

    def _single(self, answer: str, gold: str) -> bool:
        answer_assignment, gold_assignment = split_assignment(answer), split_assignment(gold)
        if answer_assignment and gold_assignment:
            if answer_assignment[0] == gold_assignment[0]:
                return self.compare(answer_assignment[1], gold_assignment[1])
            return self._symbolic(answer, gold)
        if answer_assignment:
            return self._symbolic(answer, gold) if "=" in gold else self.compare(answer_assignment[1], gold)
        if gold_assignment:
            return self._symbolic(answer, gold) if "=" in answer else self.compare(answer, gold_assignment[1])
        return self._scalar(answer, gold)

    def _scalar(self, answer: str, gold: str) -> bool:
        answer_value, gold_value = parse_number(answer), parse_number(gold)
        if answer_value is not None and gold_value is not None:  # exact: 0.333333 is not 1/3
            self.used_numeric = True
            if self.rules.numeric_rel_tol:
                return abs(answer_value - gold_value) <= Fraction(repr(self.rules.numeric_rel_tol)) * abs(gold_value)
            return answer_value == gold_value
        if _WORD.fullmatch(answer) and _WORD.fullmatch(gold) and max(len(answer), len(gold)) >= 3:
            return answer.lower() == gold.lower()  # words are text, not products of letters: `step` is not `pets`
        if _LETTER.fullmatch(answer) and _LETTER.fullmatch(gold):  # two symbols, or the letters of `\text{A, C}`
            return answer == gold
        if not self.rules.numeric_rel_tol:  # a decimal against `\pi` or `\sqrt{2}`: its exact value, not a rounding
            answer, gold = _exact_text(answer, answer_value), _exact_text(gold, gold_value)
        return self._symbolic(answer, gold)

    def _symbolic(self, answer: str, gold: str) -> bool:
        if not self.with_math_verify:
            raise _NeedsMathVerify
        self.used_math_verify = True
        return _math_verify_equivalent(answer, gold, self.rules.numeric_rel_tol)


_DECIMAL_LITERAL = re.compile(r"(?<![\d.,])(?:\d+\.\d+|\.\d+)(?![\d.])")


def _exact_text(text: str, value: Optional[Fraction]) -> str:
    """An answer whose decimals math_verify cannot round: a plain number as its exact fraction (`3.141593` ->
    `\\frac{3141593}{1000000}`), and in anything else each decimal literal (`\\begin{pmatrix}0.333333..`)."""
    if value is not None:
        return reference_text(value)
    return _DECIMAL_LITERAL.sub(lambda m: "{" + reference_text(Fraction(m.group(0))) + "}", text)


def _normalized_pair(extracted: str, reference) -> tuple[str, str]:
    gold = normalize_answer(reference_text(reference))
    if not gold:
        raise ValueError(f"reference answer {reference!r} is empty")
    return normalize_answer(extracted), gold


def _quick_verdict(extracted: Optional[str], reference, rules: GradingRules) -> Optional[Verdict]:
    """Steps 1-2: a verdict that needs no math_verify, or None when step 3 must decide."""
    answer, gold = _normalized_pair("" if extracted is None else extracted, reference)
    if extracted is None:
        return Verdict(False, None, NO_BOXED)
    if not answer:
        return Verdict(False, extracted, EMPTY_BOXED)
    estimates = not rules.numeric_rel_tol  # where answers are rounded anyway, `about 9.6` is 9.6
    allowed = hedges(reference_text(reference), estimates).union(*(hedges(v, estimates) for _, v in rules.choices))
    if not hedges(extracted, estimates) <= allowed:  # `18 or more`, `about 18`: the reference says no such thing
        return Verdict(False, extracted, HEDGED)
    judge = _Judge(rules, with_math_verify=False)
    try:
        return Verdict(judge.top(answer, gold), extracted, judge.reason())
    except _NeedsMathVerify:
        return None


def _full_verdict(extracted: str, reference, rules: GradingRules) -> tuple[bool, str]:
    """Steps 2-3 with math_verify, no time limit (any thread): (correct, reason)."""
    judge = _Judge(rules, with_math_verify=True)
    correct = judge.top(*_normalized_pair(extracted, reference))
    return correct, judge.reason()


# ---------------------------------------------------------------- step 3: math_verify
@functools.lru_cache(maxsize=1)
def _extraction_config() -> list:
    """math_verify's default extraction without its unit stripping: ours is done, and its own drops a trailing
    letter (`\\frac{1}{\\sqrt{2}}c` would parse as `\\frac{1}{\\sqrt{2}}`)."""
    from latex2sympy2_extended.latex2sympy2 import NormalizationConfig
    from math_verify import ExprExtractionConfig, LatexExtractionConfig
    normalization = NormalizationConfig(basic_latex=True, units=False, malformed_operators=True, nits=True, boxed="all",
                                        equations=False)
    return [LatexExtractionConfig(normalization_config=normalization), ExprExtractionConfig()]


@functools.lru_cache(maxsize=4096)
def _parse_latex(text: str) -> list:
    # Imported here: the training process only screens answers; sympy loads in the workers.
    from math_verify import parse
    return parse("\\boxed{" + text + "}", extraction_config=_extraction_config(), parsing_timeout=None)


def _numeric_value(parsed: list) -> Optional[float]:
    """The value of a parsed answer that is a real number (no free symbols), else None."""
    from sympy import Expr
    if not parsed or not isinstance(parsed[0], Expr) or parsed[0].free_symbols:
        return None
    try:
        value = complex(parsed[0].evalf())
    except (TypeError, ValueError):
        return None
    return value.real if value.imag == 0 else None


def _math_verify_equivalent(answer: str, gold: str, numeric_rel_tol: float = 0.0) -> bool:
    """math_verify's equivalence of two normalised answers (within numeric_rel_tol for numbers), no time limit."""
    from math_verify import verify
    gold_parsed, answer_parsed = _parse_latex(gold), _parse_latex(answer)
    if numeric_rel_tol:
        answer_value, gold_value = _numeric_value(answer_parsed), _numeric_value(gold_parsed)
        if answer_value is not None and gold_value is not None:
            return abs(answer_value - gold_value) <= numeric_rel_tol * abs(gold_value)
    return bool(verify(gold_parsed, answer_parsed, timeout_seconds=None))


def _rules_per_sample(rules, count: int) -> list[GradingRules]:
    if rules is None or isinstance(rules, GradingRules):
        return [rules or DEFAULT_RULES] * count
    if isinstance(rules, (str, Mapping)):
        raise ValueError(f"grading rules must be GradingRules or one per sample, got {rules!r}")
    rules = list(rules)
    if len(rules) != count:
        raise ValueError(f"{count} completions but {len(rules)} grading rules")
    for item in rules:
        if item is not None and not isinstance(item, GradingRules):
            raise ValueError(f"grading rules must be GradingRules or None, got {item!r}")
    return [item or DEFAULT_RULES for item in rules]


RulesArg = Union[GradingRules, Sequence[Optional[GradingRules]], None]


def grade(completion: str, reference, rules: Optional[GradingRules] = None) -> Verdict:
    """Grade one completion in this process, with no time limit: use MathGrader for model output."""
    rules = _rules_per_sample(rules, 1)[0]
    extracted = extract_boxed(completion)
    verdict = _quick_verdict(extracted, reference, rules)
    if verdict is None:
        correct, reason = _full_verdict(extracted, reference, rules)
        verdict = Verdict(correct, extracted, reason)
    return verdict


# ---------------------------------------------------------------- time-limited workers
_READY = "ready"


def _serve(connection) -> None:
    """Worker: (extracted, reference, rules) -> ((correct, reason), "") or (None, error text), till the pipe closes."""
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # its "timeout disabled" warning
    _math_verify_equivalent("\\frac{\\sqrt{2}}{2}", "\\sin(\\pi/4)")  # import sympy, warm up before any clock starts
    connection.send(_READY)
    while True:
        try:
            task = connection.recv()
        except EOFError:  # the grading process went away
            return
        try:
            connection.send((_full_verdict(*task), ""))
        except Exception as error:  # a grading failure is this sample's error, never the worker's end
            connection.send((None, f"{type(error).__name__}: {error}"))


class _Worker:
    """One grading process and this process's end of its pipe; started at once, ready later."""

    def __init__(self, context):
        self.connection, child_end = context.Pipe()
        self.process = context.Process(target=_serve, args=(child_end,), daemon=True, name="gainrl-math-grader")
        self.process.start()
        child_end.close()
        self.is_ready = False

    def wait_ready(self, timeout_s: float) -> None:
        if self.is_ready:
            return
        try:
            message = self.connection.recv() if self.connection.poll(timeout_s) else None
        except EOFError:
            message = None
        if message != _READY:
            raise RuntimeError(f"math grader worker did not start within {timeout_s} s "
                               f"(exit code {self.process.exitcode})")
        self.is_ready = True

    def stop(self) -> None:
        self.process.kill()
        self.process.join()
        self.connection.close()


class MathGrader:
    """Grades batches with math_verify in `num_workers` persistent processes, each answer under a time limit.

    Workers start on first use (spawn + sympy import: ~0.6-1.3 s, together) and live until close().
    A worker that overruns the limit or dies is killed and a replacement starts at once.
    One batch at a time (a lock serialises callers); usable from any thread.
    """

    def __init__(self, num_workers: int = 1, startup_timeout_s: float = 120.0):
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        self._context = multiprocessing.get_context("spawn")  # fork is unsafe in a process with threads/CUDA
        self._workers: list[Optional[_Worker]] = [None] * num_workers
        self._startup_timeout_s = startup_timeout_s
        self._lock = threading.Lock()

    def grade_batch(self, completions: Sequence[str], references: Sequence, timeout_s: float,
                    rules: RulesArg = None) -> list[Verdict]:
        """One verdict per completion; a sample that fails or overruns timeout_s is wrong (no exception).

        references: strings or numbers. rules: one GradingRules for all samples, or one per sample
        (None entries: the defaults), e.g. `rules_for("minerva")` or `rules.with_choices(parse_choices(problem))`.
        """
        if len(completions) != len(references):
            raise ValueError(f"{len(completions)} completions but {len(references)} references")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        sample_rules = _rules_per_sample(rules, len(completions))
        verdicts: list[Optional[Verdict]] = [None] * len(completions)
        extracted: list[Optional[str]] = [None] * len(completions)
        tasks: list[Optional[tuple]] = [None] * len(completions)
        for index, (completion, reference) in enumerate(zip(completions, references)):
            try:
                extracted[index] = extract_boxed(completion)
                verdicts[index] = _quick_verdict(extracted[index], reference, sample_rules[index])
                tasks[index] = (extracted[index], reference_text(reference), sample_rules[index])
            except Exception as error:
                verdicts[index] = Verdict(False, extracted[index], ERROR, f"{type(error).__name__}: {error}")
        pending = deque(index for index, verdict in enumerate(verdicts) if verdict is None)
        with self._lock:
            try:
                self._verify_pending(pending, tasks, extracted, timeout_s, verdicts)
            except BaseException:  # e.g. a worker that cannot start, or Ctrl-C: no stale replies later
                self.close()
                raise
        return verdicts

    def _verify_pending(self, pending, tasks, extracted, timeout_s, verdicts) -> None:
        for slot in range(min(len(self._workers), len(pending))):  # start them together: each takes ~1 s
            if self._workers[slot] is None:
                self._workers[slot] = _Worker(self._context)
        in_flight: dict[int, tuple[int, float]] = {}  # worker slot -> (sample index, deadline)
        while pending or in_flight:
            for slot in range(len(self._workers)):
                if slot in in_flight or not pending:
                    continue
                worker = self._ready_worker(slot)
                index = pending.popleft()
                try:
                    worker.connection.send(tasks[index])
                    in_flight[slot] = (index, time.monotonic() + timeout_s)
                except OSError as error:  # the worker died while idle
                    verdicts[index] = Verdict(False, extracted[index], ERROR, f"worker lost: {error}")
                    self._replace(slot)
            by_connection = {self._workers[slot].connection: slot for slot in in_flight}
            next_deadline = min((deadline for _, deadline in in_flight.values()), default=time.monotonic())
            for connection in wait_for_connections(list(by_connection), max(0.0, next_deadline - time.monotonic())):
                slot = by_connection[connection]
                index, _ = in_flight.pop(slot)
                try:
                    outcome, detail = connection.recv()
                except (EOFError, OSError) as error:  # crashed (e.g. killed for memory)
                    outcome, detail = None, f"worker lost: {type(error).__name__}"
                    self._replace(slot)
                verdicts[index] = (Verdict(outcome[0], extracted[index], outcome[1]) if outcome is not None
                                   else Verdict(False, extracted[index], ERROR, detail))
            now = time.monotonic()
            for slot, (index, deadline) in list(in_flight.items()):
                if now >= deadline:
                    del in_flight[slot]
                    verdicts[index] = Verdict(False, extracted[index], TIMEOUT)
                    self._replace(slot)

    def _ready_worker(self, slot: int) -> _Worker:
        self._workers[slot].wait_ready(self._startup_timeout_s)
        return self._workers[slot]

    def _replace(self, slot: int) -> None:
        self._workers[slot].stop()
        self._workers[slot] = _Worker(self._context)  # starts now, in the background

    def close(self) -> None:
        for slot, worker in enumerate(self._workers):
            if worker is not None:
                worker.stop()
                self._workers[slot] = None

    def __enter__(self) -> "MathGrader":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


_default_grader: Optional[MathGrader] = None


def math_reward(completions: Sequence[str], references: Sequence, timeout_s: float,
                grader: Optional[MathGrader] = None, rules: RulesArg = None) -> tuple[list[float], int, int]:
    """Rewards in {0, 1} for a batch, plus (num_errors, num_timeouts) among the samples that scored 0.

    Uses `grader`, or a shared MathGrader (min(4, cpus) workers) created on first use and
    closed at exit.
    """
    global _default_grader
    if grader is None:
        if _default_grader is None:
            _default_grader = MathGrader(num_workers=min(4, os.cpu_count() or 1))
            atexit.register(_default_grader.close)
        grader = _default_grader
    verdicts = grader.grade_batch(completions, references, timeout_s, rules)
    rewards = [1.0 if verdict.correct else 0.0 for verdict in verdicts]
    num_errors = sum(verdict.reason == ERROR for verdict in verdicts)
    num_timeouts = sum(verdict.reason == TIMEOUT for verdict in verdicts)
    return rewards, num_errors, num_timeouts
