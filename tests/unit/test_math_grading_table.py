"""Math grading by benchmark rules: tricky answers that must and must not match, in process and in workers."""
import json
import os
from fractions import Fraction

import pytest

from gainrl.rewards.math import (EMPTY_BOXED, EXACT, HEDGED, MATH_VERIFY, NO_BOXED, NUMERIC, BENCHMARK_RULES, DEFAULT_RULES,
                                 GradingRules, MathGrader, grade, math_reward, parse_choices, reference_text, rules_for)
from gainrl.rewards.math_normalize import (Group, hedges, normalize_answer, parse_group, parse_number,
                                           split_assignment, split_choice_label, thousands_number)

from tests.helpers import SHARED

AMC_PROBLEM = (r"What is the answer? $\textbf{(A) }10 \qquad\textbf{(B) }12 \qquad\textbf{(C) }14 \qquad"
               r"\textbf{(D) }\frac{1}{2} \qquad\textbf{(E) }\text{none of these}$")
RULES = {
    None: DEFAULT_RULES,
    "minerva": rules_for("minerva"),  # numbers within 1e-4 relative, lists in order
    "ordered": GradingRules(unordered_lists=False),
    "amc": GradingRules(choices=parse_choices(AMC_PROBLEM)),  # A=10, B=12, C=14, D=1/2, E=none of these
}


def B(answer: str) -> str:
    return "so the answer is $\\boxed{" + answer + "}$."


MATCH = [  # (completion, reference, rules) that must grade right
    # GSM8K numbers: trailing zeros, dollars, words, thousands separators
    (B("18.00"), "18", None), (B(r"\$18"), "18", None), (B("18 dollars"), "18", None),
    (B(r"18 \text{ dollars}"), "18", None), (B("1,000"), "1000", None), (B(r"\$1,234.50"), "1234.5", None),
    (B("-7"), "-7", None), (B("25"), "025", None),
    # references that are JSON numbers or float-looking strings (amc22_23, amc23)
    (B("142"), 142.0, None), (B("27"), "27.0", None), (B("0.25"), 0.25, None),
    # AMC letters through the problem's choices, and letters against letters
    (B("(C)"), "14", "amc"), (B("C"), "14", "amc"), (B(r"\text{(C)}"), "14", "amc"),
    (B(r"\textbf{(C) }14"), "14", "amc"),
    (B(r"\textbf{(D)}\ \frac12"), "0.5", "amc"), (B("14"), r"\text{(C)}", "amc"), (B("C"), r"\text{(C)}", None),
    (B(r"\textbf{(C) }14"), "14", None),  # no choices: the value after the letter is graded
    (B(r"(D)\ AB=9, CD=4"), "AB=9, CD=4", None), (B(r"\text{C, A}"), r"\text{A,C}", None),  # MATH's "all letters"
    # tuples, intervals, sets, lists
    (B("(1, 2)"), "(1,2)", None), (B("[0, 1)"), "[0,1)", None), (B(r"\left[ \frac{1}{2}, 8 \right]"), "[0.5,8]", None),
    (B(r"\{1,2\}"), "2,1", None), (B("2, 1"), "1, 2", None), (B("x=1, y=2"), "(1,2)", None),
    (B("y=2, x=1"), "x=1, y=2", None), (B("(3,2),(1,1)"), "(1,1), (3,2)", None),
    (B(r"1+\sqrt{19}, 1-\sqrt{19}"), r"1 \pm \sqrt{19}", None), (B(r"(-\infty, 3]"), r"\left(-\infty,3\right]", None),
    (B("6,31,-1"), "(6,31,-1)", None), (B("70, 110"), "70,110", None), (B("E_1, E_2"), "E_{1},E_{2}", "minerva"),
    # units and degrees
    (B(r"30^\circ"), "30", None), (B("30\u00b0"), "30", None), (B("30 degrees"), "30", None),
    (B(r"5 \text{ cm}"), "5", None), (B(r"5\text{m/s}"), "5", None), (B(r"5\,\mathrm{m}"), "5", None),
    (B(r"864 \mbox{ inches}^2"), "864", None), (B("1950"), r"1950^\circ C", "minerva"),
    # scientific notation and Minerva's relative tolerance
    (B("9.6"), "9.6", "minerva"), (B("9.6004"), "9.6", "minerva"), (B(r"1.2 \times 10^{5}"), "1.2e5", None),
    (B("120000"), r"1.2 \times 10^{5}", None), (B(r"4.4 \times 10^7"), "4.4e7", "minerva"),
    (B(r"\frac{\pi}{2}"), "1.5708", "minerva"),
    # fractions, roots, pi, percent, infinity
    (B(r"\frac12"), "0.5", None), (B(r"\dfrac{1}{2}"), "0.5", None), (B("0.5"), r"\frac{1}{2}", None),
    (B("137.5"), r"137 \frac{1}{2}", None), (B(r"\frac{-1}{2}"), "-0.5", None), (B(r"\sqrt2"), r"\sqrt{2}", None),
    (B(r"2\sqrt{2}"), r"\sqrt{8}", None), (B(r"\frac{\pi}{2}"), r"\pi/2", None), (B(r"50\%"), "50", None),
    (B("62.5"), "62.5%", None), (B("\u221e"), r"\infty", None),
    # text
    (B(r"\text{yes}"), "Yes", None), (B(r"\text{Evelyn}"), "Evelyn", None),
    # equations and assignments
    (B("y = 2x+3"), "2x+3", None), (B("2x+3"), "y=2x+3", None), (B("x=3"), "3", None),
    (B(r"x \in [-2,7]"), "[-2,7]", None), (B("f(x)=2-x, f(x)=x"), "f(x)=x,f(x)=2-x", None),
    (B(r"\frac{1}{\sqrt{2}}c"), r"\frac{c}{\sqrt{2}}", None),
    (B(r"x' + \frac{r}{V}x - rc = 0"), r"x^{\prime}+\frac{r}{V} x-r c=0", None),
]

NO_MATCH = [  # (completion, reference, rules) that must grade wrong
    # look-alike numbers and signs
    (B("12"), "1.2", None), (B("1,2"), "12", None), (B("(1,2)"), "12", None), (B("3"), "-3", None),
    (B("-3"), "3", None), (B("1001"), "1000", None), (B("10,000"), "1000", None), (B("1,000"), "1", None),
    (B(r"\$19"), "18", None), (B(r"45^\circ"), "30", None),
    # assignments
    (B("x=4"), "3", None), (B("y=2x+4"), "y=2x+3", None), (B("x=2, y=1"), "x=1,y=2", None),
    # letters: without the problem's choices a letter cannot be a value; with them it must be the right one
    (B("(C)"), "14", None), (B("C"), 142.0, None), (B("(B)"), "14", "amc"), (B(r"\textbf{(C) }12"), "14", "amc"),
    (B(r"\textbf{(B) }14"), "14", "amc"), (B("B"), r"\text{(C)}", None),
    (B(r"(A) \text{ and } (C)"), r"\text{(A)}", None), (B("A, B"), r"\text{A,C}", None),
    (B(r"\textbf{(C) }12"), r"\textbf{(C) }14", None),
    # brackets, order and multiplicity
    (B("(1,2)"), "[1,2]", None), (B("[1,2)"), "(1,2]", None), (B("(2,1)"), "(1,2)", None),
    (B(r"\{1,2\}"), "(1,2)", None), (B("2, 1"), "1, 2", "ordered"), (B("-2"), "-2,-2", None),
    (B("1,2"), "1,1,2", None), (B(r"1+\sqrt{19}"), r"1 \pm \sqrt{19}", None), (B("(1,1),(2,3)"), "(1,1), (3,2)", None),
    (B("f(x)=x"), "f(x)=x,f(x)=2-x", None),
    # tolerance only where the benchmark asks for it
    (B("9.61"), "9.6", "minerva"), (B(r"\frac{\pi}{2}"), "1.5708", None), (B("1.3e5"), r"1.2\times10^{5}", None),
    (B(r"1.2 \times 10^{6}"), "1.2e5", None), (B(r"\frac{1}{3}"), "0.333", None), (B("0.5"), r"\frac{1}{3}", None),
    (B("3.14"), r"\pi", None),
    # percent is not divided out; other symbols
    (B(r"50\%"), "0.5", None), (B(r"\sqrt{3}"), r"\sqrt{2}", None), (B(r"-\infty"), r"\infty", None),
    (B(r"\text{No}"), "Yes", None), (B(r"\frac{1}{\sqrt{2}}"), r"\frac{1}{\sqrt{2}}c", None),
    # no answer
    ("The answer is 18", "18", None), (r"so \boxed{18", "18", None), (B(" "), "18", None),
]

W, R = False, True  # the verdict each row of NEW_PAIRS must get
NEW_PAIRS = [  # (boxed answer, reference, rules, correct, reason): hedges, approximations, text, words, i  # (boxed answer, reference, rules, correct, reason)
    # hedges and qualifiers: the answer claims something else than the value
    ("18 or more", "18", None, W, "a lower bound, not the value"),
    (r"18 \text{ or more}", "18", None, W, "the qualifier inside \\text is no unit"),
    (r"\text{18 or fewer}", "18", None, W, "an upper bound written as text"),
    ("at least 18", "18", None, W, "a leading qualifier"),
    (r"\text{at most } 7", "7", None, W, "a leading qualifier in text"),
    ("about 42", "42", None, W, "an estimate is not the value"),
    ("approximately 3.5", "3.5", None, W, "an estimate is not the value"),
    (r"\text{roughly } 100", "100", None, W, "an estimate is not the value"),
    ("nearly 50 dollars", "50", None, W, "a qualifier before a number with its unit"),
    ("more than 20", "20", None, W, "a strict bound"),
    ("fewer than 9 students", "9", None, W, "a strict bound with a unit"),
    ("up to 12", "12", None, W, "a range ending at the value"),
    ("between 5 and 7", "6", None, W, "a range around the value"),
    ("between 5 and 7", "5,7", None, W, "a range is not the list of its ends"),
    ("18 or so", "18", None, W, "an estimate after the number"),
    ("18 and up", "18", None, W, "a bound after the number"),
    ("18 or 19", "18", None, W, "an alternative: two values for one"),
    (r"3 \text{ or } 4", "4", None, W, "an alternative, the right value second"),
    (r"12\ \text{or more}", r"12\ \text{or more}", None, R, "the reference's own qualifier"),
    (r"12 \text{ or more}", r"12\ \text{or more}", None, R, "the same qualifier, spaced otherwise"),
    ("12", r"12\ \text{or more}", None, W, "the bound dropped: the reference is a bound"),
    ("7 cm", "7", None, R, "near neighbour: a unit is no qualifier"),
    (r"15 \text{ minutes}", "15", None, R, "near neighbour: a unit word in text"),
    ("5 ways", "5", None, R, "near neighbour: a counting noun"),
    # alternatives that are the reference's list
    (r"1 \text{ or } 5", "1,5", None, R, "`or` between the solutions: MATH's enter-all list"),
    (r"x=2 \text{ or } x=-3", "2,-3", None, R, "two assignments joined by `or`"),
    (r"2, 3, \text{ and } 4", "2,3,4", None, R, "a list ending in `and`"),
    (r"-2 \text{ or } -12", "-12,-2", None, R, "negative solutions in another order"),
    (r"1 \text{ or } 5", "1", None, W, "one solution too many"),
    # rounded approximations of values with no finite decimal: exact only, unless the rules give a tolerance
    ("0.333333", r"\frac{1}{3}", None, W, "6-decimal rounding of 1/3"),
    ("0.3333333333", r"\frac13", None, W, "a longer rounding is still not 1/3"),
    ("0.142857", r"\frac{1}{7}", None, W, "rounding of 1/7"),
    ("0.6667", r"\frac{2}{3}", None, W, "rounding of 2/3"),
    ("3.141593", r"\pi", None, W, "6-decimal rounding of pi"),
    ("6.283185", r"2\pi", None, W, "rounding of a multiple of pi"),
    ("1.414214", r"\sqrt{2}", None, W, "rounding of a square root"),
    ("0.707107", r"\frac{\sqrt{2}}{2}", None, W, "rounding of a surd fraction"),
    ("2.645751", r"\sqrt7", None, W, "rounding of sqrt 7"),
    ("1.732051", r"\sqrt{3}", "minerva", R, "Minerva's tolerance accepts the rounding"),
    ("0.3333", r"\frac{1}{3}", "minerva", R, "within 1e-4 of 1/3"),
    ("0.33", r"\frac{1}{3}", "minerva", W, "outside 1e-4 of 1/3"),
    ("0.25", r"\frac{1}{4}", None, R, "near neighbour: a finite decimal is exact"),
    ("0.125", r"\frac{1}{8}", None, R, "near neighbour: a finite decimal is exact"),
    ("2", r"\sqrt{4}", None, R, "near neighbour: an exact value in symbolic form"),
    ("1.5", r"\frac{\sqrt{9}}{2}", None, R, "near neighbour: a decimal equal to a symbolic value"),
    ("0.5", r"\sin\frac{\pi}{6}", None, R, "near neighbour: a decimal equal to a trig value"),
    # repeating-decimal notation
    (r"0.\overline{3}", r"\frac{1}{3}", None, R, "overline notation"),
    (r"0.\overline{142857}", r"\frac17", None, R, "a six-digit period"),
    (r"0.1\overline{6}", r"\frac{1}{6}", None, R, "a period after a fixed digit"),
    (r"1.\overline{27}", r"\frac{14}{11}", None, R, "a whole part and a two-digit period"),
    (r"0.\overline{9}", "1", None, R, "0.999... is 1"),
    (r"0.\bar{6}", r"\frac23", None, R, "bar notation"),
    (r"0.\dot{3}", r"\frac{1}{3}", None, R, "dot notation"),
    (r"-0.\overline{3}", r"-\frac{1}{3}", None, R, "a negative repeating decimal"),
    (r"0.\overline{3}", r"\frac{1}{6}", None, W, "a period of the wrong value"),
    (r"0.\overline{16}", r"\frac{1}{6}", None, W, "0.1616.. is not 0.1666.."),
    # text answers are text, not products of letters
    (r"\text{step}", r"\text{pets}", None, W, "the same letters in another order"),
    ("listen", r"\text{silent}", None, W, "an anagram"),
    (r"\text{east}", r"\text{seat}", None, W, "an anagram"),
    (r"\text{Tuesday}", r"\text{Thursday}", None, W, "different words"),
    (r"\text{Friday}", "Friday", None, R, "the same word, wrapped or not"),
    (r"\text{ODD}", r"\text{odd}", None, R, "case does not matter in text"),
    (r"\text{A and C}", r"\text{C, A}", None, R, "letters joined by `and` are the list of letters"),
    (r"\text{real and equal}", r"\text{equal and real}", None, W, "words joined by `and` are text, not a list"),
    ("xy", "yx", None, R, "near neighbour: two symbols are a product"),
    ("ab", "ba", None, R, "near neighbour: a product of two symbols"),
    # scale words
    ("1 million", "1000000", None, R, "a scale word multiplies"),
    (r"1\text{ million}", "1000000", None, R, "a scale word in text"),
    ("2.5 billion", "2500000000", None, R, "a decimal times a scale"),
    (r"\$3.2 \text{ million}", "3200000", None, R, "dollars and a scale word"),
    ("3 thousand", "3000", None, R, "thousand"),
    ("4 hundred", "400", None, R, "hundred after a numeral"),
    ("1 million", "1", None, W, "the scale is not a unit"),
    ("1.5 million dollars", "1500000", None, R, "a scale word then a unit"),
    ("2 million", "20000000", None, W, "the wrong scale"),
    # number words
    ("five", "5", None, R, "a number word"),
    (r"\text{Five}", "5", None, R, "a capitalised number word in text"),
    ("twenty-one", "21", None, R, "a hyphenated compound"),
    ("twenty one", "21", None, R, "a spaced compound"),
    ("one hundred and five", "105", None, R, "hundred with `and`"),
    ("two thousand twenty-four", "2024", None, R, "a year in words"),
    ("seven apples", "7", None, W, "number words are read bare only: in `two lines` the noun is the answer"),
    ("five", "6", None, W, "a number word of the wrong value"),
    ("twenty twenty", "40", None, W, "two groups are not a sum"),
    ("five five", "10", None, W, "two units are not a sum"),
    ("negative three", "-3", None, R, "a signed number word"),
    (r"\text{three}", r"\text{three}", None, R, "the reference in words"),
    ("3", r"\text{three}", None, R, "a numeral against the reference in words"),
    ("five or six", "5", None, W, "an alternative in words"),
    # found by an adversarial review: rounding behind notation, hedges behind spacing, units that are words
    (r"\approx 1.414214", r"\sqrt2", None, W, "\\approx leaves the decimal, which is not sqrt 2"),
    (r"\approx 2.24", "2.24", None, R, "\\approx before the asked rounding: the value"),
    (r"3.141593\ldots", r"\pi", None, W, "an ellipsis after a rounding is still the rounding"),
    (r"(\approx 1.414214, 2)", r"(\sqrt2, 2)", None, W, "a rounding inside a tuple"),
    ("[1.414214]", r"\sqrt2", None, W, "a rounding in brackets"),
    (r"\begin{pmatrix}0.333333\\0.666667\end{pmatrix}", r"\begin{pmatrix}1/3\\2/3\end{pmatrix}", None, W,
     "roundings inside a matrix reach math_verify as exact fractions"),
    (r"\begin{pmatrix}0.5\\0.25\end{pmatrix}", r"\begin{pmatrix}1/2\\1/4\end{pmatrix}", None, R,
     "near neighbour: exact decimals inside a matrix"),
    (r"18 \text{ minimum}", "18", None, W, "a bound after the number"),
    ("18 tops", "18", None, W, "a bound after the number"),
    ("18 (lower bound)", "18", None, W, "a bound named as such"),
    ("18 if not more", "18", None, W, "a bound after the number"),
    (r"18\text{-ish}", "18", None, W, "an estimate suffix"),
    (r"18\mathrm{~or~more}", "18", None, W, "a qualifier spaced with ~ in \\mathrm"),
    ("at-least 18", "18", None, W, "a qualifier joined by a hyphen"),
    ("at\u200bleast 18", "18", None, W, "a qualifier joined by a zero-width space"),
    (r"18\text{ (or 19)}", "18", None, W, "an alternative in parentheses is no unit"),
    (r"18\text{+}", "18", None, W, "a plus sign is no unit"),
    (r"1\,\mathrm{million}", "1", None, W, "a scale word in \\mathrm is no unit"),
    (r"1\,\mathrm{million}", "1000000", None, R, "a scale word in \\mathrm multiplies"),
    ("1 millions", "1", None, W, "a plural scale word is no unit"),
    ("3 tenths", "3", None, W, "a fraction word is no unit"),
    (r"5\text{ squared}", "5", None, W, "an operation word is no unit"),
    ("5 times ten", "5", None, W, "a number word among the unit words"),
    ("2 or 3", "(2,3)", None, W, "alternatives are a set, never a tuple"),
    ("1 or 500", "1500", None, W, "alternatives are no thousands separator"),
    (r"10 \text{ pens and pencils}", "10", None, R, "`and` inside a unit"),
    (r"12 \text{ red or blue marbles}", "12", None, R, "`or` inside a unit"),
    (r"5 \text{ meters below sea level}", "5", None, R, "`below` after the number is a place, not a bound"),
    (r"3 \text{ more than Tom}", "3", None, R, "`more than` after the number is a difference"),
    (r"9.6 \text{ (approx.)}", "9.6", "minerva", R, "an estimate word where the rules allow a tolerance"),
    (r"\text{two points}", r"\text{two lines}", None, W, "the noun after a number word is the answer"),
    ("2", r"\text{two lines}", None, W, "the number alone is not the described answer"),
    (r"\text{either }3-\sqrt{5}\text{ or }3+\sqrt{5}", r"3\pm\sqrt5", None, R, "`either .. or` lists the values"),
    ("= 20", "20", None, R, "a leading = (from \\approx) is dropped"),
    # the imaginary unit with an explicit product
    (r"3+4\cdot i", "3+4i", None, R, "a \\cdot before i"),
    (r"4 \times i", "4i", None, R, "a \\times before i"),
    (r"-1 + 2 \cdot i", "-1+2i", None, R, "a negative real part"),
    (r"i \cdot \sqrt{2}", r"i\sqrt{2}", None, R, "i before a root"),
    (r"\sqrt{3}\cdot i", r"i\sqrt{3}", None, R, "a root before i"),
    (r"2 \cdot \mathrm{i}", "2i", None, R, "an upright i"),
    (r"3+4\cdot i", "3-4i", None, W, "the conjugate"),
    (r"4\cdot i", "4", None, W, "the unit dropped"),
]

TABLE = ([(c, r, k, True) for c, r, k in MATCH] + [(c, r, k, False) for c, r, k in NO_MATCH]
         + [(B(a), r, k, correct) for a, r, k, correct, _ in NEW_PAIRS])


def test_the_table_is_big_enough():
    assert len(MATCH) >= 35 and len(NO_MATCH) >= 30 and len(NEW_PAIRS) >= 60 and len(TABLE) >= 175
    assert all(reason.strip() for *_, reason in NEW_PAIRS)
    assert len({(a, r, k) for a, r, k, *_ in NEW_PAIRS}) == len(NEW_PAIRS)  # no row twice


@pytest.mark.parametrize("completion, reference, rules, correct", TABLE)
def test_grade_in_process(completion, reference, rules, correct):
    assert grade(completion, reference, RULES[rules]).correct is correct


def test_time_limited_workers_agree_with_the_table():
    completions, references, rules, expected = zip(*TABLE)
    with MathGrader(num_workers=2) as grader:
        verdicts = grader.grade_batch(completions, references, 20.0, [RULES[key] for key in rules])
        rewards, errors, timeouts = math_reward(completions, references, 20.0, grader, [RULES[key] for key in rules])
    assert [v.correct for v in verdicts] == list(expected)
    assert {v.reason for v in verdicts} <= {NO_BOXED, EMPTY_BOXED, HEDGED, EXACT, NUMERIC, MATH_VERIFY}
    assert rewards == [float(c) for c in expected] and (errors, timeouts) == (0, 0)


def test_reasons():
    assert grade(B("18 or more"), "18").reason == HEDGED and grade(B("about 18"), "18").reason == HEDGED
    assert grade(B("0.333333"), r"\frac13").reason == NUMERIC  # decided in this process, exactly
    assert grade(B("18.00"), "18").reason == NUMERIC
    assert grade(B("1,000"), "1000").reason == EXACT
    assert grade(B("C"), "14", RULES["amc"]).reason == EXACT
    assert grade(B(r"\frac{\pi}{2}"), "1.5708", RULES["minerva"]).reason == MATH_VERIFY


# ---------------------------------------------------------------- the rules object
def test_benchmark_rules():
    minerva = GradingRules(numeric_rel_tol=1e-4, unordered_lists=False)
    assert rules_for("minerva") == rules_for("minerva_math") == minerva
    for name in ("gsm8k", "math500", "aime24", "amc23", "amc22_23", "olympiadbench"):
        assert rules_for(name) == DEFAULT_RULES == GradingRules()
    assert set(BENCHMARK_RULES) >= {"gsm8k", "math500", "aime24", "amc23", "amc22_23", "minerva", "olympiadbench"}
    with pytest.raises(ValueError, match="'gsm9k'"):
        rules_for("gsm9k")


def test_rules_validate_and_keep_choices_hashable():
    rules = GradingRules(choices={"B": "12", "A": "10"})
    assert rules.choices == (("A", "10"), ("B", "12")) and rules.choice_map == {"A": "10", "B": "12"}
    assert hash(rules) == hash(DEFAULT_RULES.with_choices({"A": "10", "B": "12"}))
    for bad, match in [({"numeric_rel_tol": -0.1}, "-0.1"), ({"numeric_rel_tol": 1.5}, "1.5"),
                       ({"numeric_rel_tol": True}, "True"), ({"unordered_lists": "yes"}, "'yes'"),
                       ({"choices": {"a": "1"}}, "'a'"), ({"choices": {"A": ""}}, "''"),
                       ({"choices": [("A", "1"), ("A", "2")]}, "repeat")]:
        with pytest.raises(ValueError, match=match):
            GradingRules(**bad)


def test_grade_batch_takes_one_rules_object_or_one_per_sample():
    completions, references = [B("(C)"), B("(C)"), B("9.6004")], ["14", "14", "9.6"]
    with MathGrader(num_workers=1) as grader:
        verdicts = grader.grade_batch(completions, references, 5.0, RULES["amc"])
        assert [v.correct for v in verdicts] == [True, True, False]
        per_sample = [RULES["amc"], None, RULES["minerva"]]
        assert [v.correct for v in grader.grade_batch(completions, references, 5.0, per_sample)] == [True, False, True]
        with pytest.raises(ValueError, match="3 completions but 2 grading rules"):
            grader.grade_batch(completions, references, 5.0, per_sample[:2])
        with pytest.raises(ValueError, match="'minerva'"):
            grader.grade_batch(completions, references, 5.0, ["minerva"] * 3)
    with pytest.raises(ValueError, match="'minerva'"):
        grade(B("1"), "1", "minerva")


def test_bad_references_score_zero_in_batches_and_raise_alone():
    with MathGrader(num_workers=1) as grader:
        verdicts = grader.grade_batch([B("1")] * 4, [None, True, float("nan"), "  "], 5.0)
    assert [v.reason for v in verdicts] == ["error"] * 4
    assert "None" in verdicts[0].detail and "True" in verdicts[1].detail and "nan" in verdicts[2].detail
    with pytest.raises(ValueError, match="reference answer None"):
        grade(B("1"), None)


@pytest.mark.parametrize("reference, text", [
    (142.0, "142"), (142, "142"), (0.25, "0.25"), (1e-05, "0.00001"), (-3.0, "-3"), (2.5e20, "250000000000000000000"),
    (Fraction(3, 4), r"\frac{3}{4}"), ("27.0", "27.0"),
])
def test_reference_text(reference, text):
    assert reference_text(reference) == text


# ---------------------------------------------------------------- the pure pieces
@pytest.mark.parametrize("text, value", [
    ("025", 25), ("18.00", 18), (".5", Fraction(1, 2)), ("-3", -3), ("(-3)", -3), ("1.2e5", 120000),
    (r"1.2\times10^{5}", 120000), (r"3\cdot10^-3", Fraction(3, 1000)), ("10^{-3}", Fraction(1, 1000)),
    (r"\frac{1}{2}", Fraction(1, 2)), (r"\frac12", Fraction(1, 2)), (r"\frac{270}7", Fraction(270, 7)),
    ("-3/2", Fraction(-3, 2)), (r"2\frac{1}{2}", Fraction(5, 2)), (r"-\frac{1}{3}", Fraction(-1, 3)),
    (r"\sqrt2", None), (r"\pi", None), ("2x", None), ("1,000", None), ("1e999999", None), (r"\frac{1}{0}", None),
    (r"0.\overline{3}", Fraction(1, 3)), (r"-2.\overline{142857}", -2 - Fraction(1, 7)), (r".\bar{6}", Fraction(2, 3)),
    (r"0.333\ldots", None),
])
def test_parse_number(text, value):
    assert parse_number(text) == value


def _decimal_digits(value: Fraction, count: int) -> str:
    """The first `count` digits after the point of 0 <= value < 1, by long division."""
    digits, remainder = [], value.numerator
    for _ in range(count):
        remainder *= 10
        digits.append(str(remainder // value.denominator))
        remainder %= value.denominator
    return "".join(digits)


def test_repeating_decimals_against_long_division():
    """Every fixed part (0-2 digits) and period (1-3 digits) over a sample: the value's expansion is the notation's."""
    import random
    generator = random.Random(0)
    for _ in range(300):
        fixed = "".join(generator.choice("0123456789") for _ in range(generator.randrange(3)))
        period = "".join(generator.choice("0123456789") for _ in range(generator.randrange(1, 4)))
        value = parse_number(f"0.{fixed}\\overline{{{period}}}")
        if set(period) == {"9"}:  # 0.51\overline{9} is 0.52, whose long division ends in zeros
            assert value == Fraction(int(fixed or "0") + 1, 10 ** len(fixed)), (fixed, period)
        else:
            assert 0 <= value < 1 and _decimal_digits(value, len(fixed) + 3 * len(period)) == fixed + period * 3


@pytest.mark.parametrize("answer, found", [
    ("18 or more", {"ormore"}), (r"\text{at least }3\text{ and no more than }35", {"atleast"}),
    ("About  18", {"about"}), ("between 5 and 7", {"between"}), (r"18 \approx", set()), ("7 cm", set()),
    (r"\overline{AB}", set()), ("1 or 5", set()), (r"x\le 5", set()), ("3 more than Tom", set()),
    ("5 m below sea level", set()), ("below 5", {"below"}), ("18-ish", {"ish"}), (r"at~least 18", {"atleast"}),
    (r"18\mathrm{~or~more}", {"ormore"}), ("18 ormore", {"ormore"}), ("at-least 18", {"atleast"}),
    ("at\u200bleast 18", {"atleast"}), ("18 max", {"max"}), ("max 18", {"max"}), ("18 (lower bound)", {"lowerbound"}),
])
def test_hedges(answer, found):
    assert hedges(answer) == found


@pytest.mark.parametrize("text, group", [
    ("(1,2)", Group("()", ("1", "2"))), ("[0,1)", Group("[)", ("0", "1"))), (r"\{1,2\}", Group("set", ("1", "2"))),
    ("1,2", Group("list", ("1", "2"))), ("(1,2),(3,4)", Group("list", ("(1,2)", "(3,4)"))),
    (r"1\pm\sqrt{2}", Group("list", (r"1+\sqrt{2}", r"1-\sqrt{2}"))), (r"\{1\}\cup\{2\}", None),
    (r"(-\infty,2)\cup(3,\infty)", None), ("(x+1)^2", None), ("5", None), (r"f(1,2)", None),
])
def test_parse_group(text, group):
    assert parse_group(text) == group


@pytest.mark.parametrize("text, parts", [
    ("x=3", ("x", "3")), ("f(x)=2x", ("f(x)", "2x")), (r"m_{\max}=5", (r"m_{\max}", "5")), ("x'=1", ("x'", "1")),
    (r"x\in[0,1]", ("x", "[0,1]")), ("x^2+y^2=1", None), ("SRAC=LRAC", None), ("x=y=1", None), (r"x\infty", None),
])
def test_split_assignment(text, parts):
    assert split_assignment(text) == parts


def test_choice_labels_and_thousands():
    assert split_choice_label("(C)", False) == ("C", "") and split_choice_label("(C)14", False) == ("C", "14")
    assert split_choice_label("C", False) == (None, "C") and split_choice_label("C", True) == ("C", "")
    assert split_choice_label("(1,2)", True) == (None, "(1,2)")
    assert thousands_number("1,000") == "1000" and thousands_number("-12,345.5") == "-12345.5"
    assert thousands_number("1,2") is None and thousands_number("1000") is None


@pytest.mark.parametrize("answer, normal", [
    (r"15000 \text{ kcal m}^{-2} \text{yr}^{-1}", "15000"), (r"5 \mathrm{~m}", "5"), (r"3+4 \mathrm{i}", "3+4i"),
    (r"4.4677 \times 10^{14} Hz", r"4.4677\times10^{14}"), (r"0.003^{\prime \prime}", "0.003"),
    (r"10,\!080", "10080"), (r"11,\! 111,\! 111,\! 100", "11111111100"), ("45^\\circ, 135^\\circ", "45,135"),
    (r"f\circ g", r"f\circ g"), (r"x_{1}^{2}", "x_1^2"),
    (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix}1\\2\end{pmatrix}"),
    (r"\textbf{(C) }12", "(C)12"), (r"\mathrm{(B) \ \frac{3}{25}}", r"(B)\frac{3}{25}"), ("2 x", "2x"),
    (r"1 \text{ or } 5", r"\{1,5\}"), (r"2, 3, \text{ and } 4", r"\{2,3,4\}"), ("12 or more", "12ormore"),
    ("10 pens and pencils", "10"), ("12 red or blue marbles", "12"), (r"18\text{ (or 19)}", "18(or19)"),
    (r"\approx 2.24", "2.24"), (r"1\,\mathrm{million}", "1000000"), ("5 dozen", "5dozen"), (r"18\text{+}", "18+"),
    (r"5\text{ million}", "5000000"), ("1,500 thousand", "1500000"), ("0.5 million", "500000"),
    ("twenty-one", "21"), ("one hundred and five", "105"), ("five or six", "fiveorsix"), ("a car", "acar"),
    (r"3+4\cdot i", "3+4i"), (r"i\times\sqrt{2}", r"i\sqrt{2}"), (r"x\cdot i", r"x\cdot i"), ("2\cdot 3", "2\cdot3"),
])
def test_normalize_answer_more(answer, normal):
    assert normalize_answer(answer) == normal


def test_parse_choices_reads_the_amc_forms():
    assert parse_choices(AMC_PROBLEM) == {"A": "10", "B": "12", "C": "14", "D": r"\frac{1}{2}",
                                          "E": r"\text{none of these}"}
    mathrm = (r"$\mathrm{(A) \ } 3.75 \qquad \mathrm{(B) \ } 4 \qquad \mathrm{(C) \ } 5 \qquad "
              r"\mathrm{(D) \ } 6 \qquad \mathrm{(E) \ } 7$")
    assert parse_choices(mathrm) == dict(zip("ABCDE", ["3.75", "4", "5", "6", "7"]))
    bold_letters = r"$(\textbf{A})\ 1\qquad(\textbf{B})\ 2\qquad(\textbf{C})\ 3\qquad(\textbf{D})\ 4$"
    assert parse_choices(bold_letters) == {"A": "1", "B": "2", "C": "3", "D": "4"}
    assert parse_choices("Find (A) the area") == {} and parse_choices("no choices") == {}


def test_parse_choices_on_math500_problems_that_have_them():
    path = os.path.join(SHARED, "data", "math", "math500.jsonl")
    if not os.path.exists(path):
        pytest.skip(f"{path} is absent")
    with open(path) as f:
        rows = {row["id"]: row for row in map(json.loads, f)}
    plane = rows["math500-test/precalculus/819.json"]  # (A) Line (B) Circle (C) Plane ..., answer \text{(C)}
    choices = parse_choices(plane["problem"])
    assert choices["C"] == "Plane" and len(choices) == 6
    rules = GradingRules(choices=choices)
    assert grade(B(r"\text{Plane}"), plane["answer"], rules).correct and grade(B("C"), plane["answer"], rules).correct
    assert not grade(B("Circle"), plane["answer"], rules).correct
    equations = rows["math500-test/intermediate_algebra/754.json"]  # $\textbf{(A)}\ 3(1 + r)^x = 7\qquad ...$
    choices = parse_choices(equations["problem"])
    assert choices["B"] == "3(1 + r/10)^x = 7" and sorted(choices) == list("ABCDE")
    assert grade(B("3(1+r/10)^x=7"), equations["answer"], GradingRules(choices=choices)).correct
