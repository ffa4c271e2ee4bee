"""Synthetic arithmetic problems of graded difficulty, for the CPU demo and tests.

Each difficulty level fixes the number of operands, their digit count, the operators
(+ - *) and whether a parenthesised group appears; answers follow the usual precedence.
Problems are drawn deterministically from a seed, with no problem text repeated, and
written as JSON Lines rows {id, problem, answer, difficulty} that gainrl.data reads.

    python -m gainrl.tasks.arithmetic --out data/arith --num_train 512 --num_test 128 --seed 0
"""
from __future__ import annotations

import argparse
import json
import os
import random
from dataclasses import dataclass
from typing import Collection, Optional, Sequence


@dataclass(frozen=True)
class Level:
    num_operands: int  # numbers in the expression (>= 2); operations = num_operands - 1
    digits: Sequence[int]  # digit count of each operand, cycled (1 = 0..9, 2 = 10..99, ...)
    operators: str  # the operators drawn from, e.g. "+-*"
    parentheses: bool = False  # group a random run of >= 2 operands (not all of them) in parentheses


# Difficulty 1..8, easiest first. The levels are disjoint (no problem text fits two of them).
LEVELS: tuple[Level, ...] = (
    Level(2, (1, 1), "+"),  # 1: 3 + 4            (100 problems)
    Level(2, (1, 1), "-"),  # 2: 3 - 7            (100)
    Level(2, (1, 1), "*"),  # 3: 6 * 7            (100)
    Level(2, (2, 1), "+-"),  # 4: 45 + 7          (1,800)
    Level(3, (1, 1, 1), "+-*"),  # 5: 7 + 2 * 3   (9,000)
    Level(2, (2, 2), "+-"),  # 6: 45 - 67         (16,200)
    Level(2, (2, 1), "*"),  # 7: 45 * 7           (900)
    Level(3, (2, 1, 2), "+-*", parentheses=True),  # 8: (45 - 7) * 23
)
# The demo's mix (relative weights of levels 1..8): 45% one-digit facts. Levels 1-3 hold
# 100 problems each, so at these weights train + test hold at most ~660 rows. A 140k-430k
# parameter model warm-started on 512 of them (gainrl.warmstart's defaults) samples ~0.4
# correct on them; it learns them by rote, so that accuracy is about even across levels,
# while on unseen problems levels 1-3 get ~0.1-0.2 and the multi-digit ones ~0.
DEFAULT_WEIGHTS: tuple[float, ...] = (3, 3, 3, 2, 2, 2, 2, 3)
QUESTION = "What is {expression}?"


def evaluate(operands: Sequence[int], operators: Sequence[str]) -> int:
    """Value of `o0 op0 o1 op1 ...` with * before + and -, left to right."""
    assert len(operators) == len(operands) - 1
    terms, signs = [operands[0]], []  # products of consecutive '*' factors, and the +/- between them
    for op, value in zip(operators, operands[1:]):
        if op == "*":
            terms[-1] *= value
        else:
            assert op in "+-", op
            terms.append(value)
            signs.append(op)
    total = terms[0]
    for sign, term in zip(signs, terms[1:]):
        total = total + term if sign == "+" else total - term
    return total


def _operand(rng: random.Random, digits: int) -> int:
    low = 0 if digits == 1 else 10 ** (digits - 1)
    return rng.randint(low, 10 ** digits - 1)


def draw_problem(level: Level, rng: random.Random) -> tuple[str, int]:
    """One problem of `level`: (question text, integer answer)."""
    operands = [_operand(rng, level.digits[i % len(level.digits)]) for i in range(level.num_operands)]
    operators = [rng.choice(level.operators) for _ in range(level.num_operands - 1)]
    words = [str(v) for v in operands]
    if level.parentheses and level.num_operands >= 3:
        # group operands [first, last] (2 <= size < num_operands) and evaluate the group first
        size = rng.randint(2, level.num_operands - 1)
        first = rng.randint(0, level.num_operands - size)
        last = first + size - 1
        group = evaluate(operands[first:last + 1], operators[first:last])
        words[first], words[last] = "(" + words[first], words[last] + ")"
        value = evaluate(operands[:first] + [group] + operands[last + 1:], operators[:first] + operators[last:])
    else:
        value = evaluate(operands, operators)
    expression = words[0] + "".join(f" {op} {word}" for op, word in zip(operators, words[1:]))
    return QUESTION.format(expression=expression), value


def level_counts(num_rows: int, weights: Sequence[float]) -> list[int]:
    """Rows per level: proportional to `weights`, rounded by largest remainder (sums to num_rows)."""
    total = sum(weights)
    shares = [num_rows * w / total for w in weights]
    counts = [int(s) for s in shares]
    by_remainder = sorted(range(len(weights)), key=lambda i: (counts[i] - shares[i], i))
    for i in by_remainder[:num_rows - sum(counts)]:
        counts[i] += 1
    return counts


def make_problems(num_rows: int, seed: int, weights: Optional[Sequence[float]] = None, *,
                  levels: Sequence[Level] = LEVELS, exclude: Collection[str] = (), id_prefix: str = "arith",
                  max_draws_per_row: int = 1000) -> list[dict]:
    """`num_rows` distinct problems, shuffled, with difficulty shares given by `weights` (one per level).

    Rows are {id, problem, answer, difficulty}; difficulty is the level's 1-based index and
    ids are `{id_prefix}-{index:06d}`. No problem is in `exclude`. The same arguments give
    the same rows. A level too small for its share of distinct problems is a ValueError.
    """
    weights = DEFAULT_WEIGHTS if weights is None else tuple(weights)
    if len(weights) != len(levels):
        raise ValueError(f"weights: {len(weights)} given for {len(levels)} difficulty levels")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights: must be >= 0 with a positive sum, got {list(weights)}")
    for number, level in enumerate(levels, 1):
        if level.num_operands < 2 or not level.operators or set(level.operators) - set("+-*"):
            raise ValueError(f"level {number}: needs >= 2 operands and operators among + - *, got {level}")
    rng = random.Random(seed)
    drawn, seen = [], set(exclude)
    for difficulty, count in enumerate(level_counts(num_rows, weights), 1):
        for _ in range(count):
            for _ in range(max_draws_per_row):
                problem, answer = draw_problem(levels[difficulty - 1], rng)
                if problem not in seen:
                    break
            else:
                raise ValueError(f"difficulty level {difficulty} has no new problem left after {max_draws_per_row} "
                                 f"draws ({count} wanted): lower its weight or ask for fewer rows")
            seen.add(problem)
            drawn.append((problem, str(answer), difficulty))
    rng.shuffle(drawn)
    return [{"id": f"{id_prefix}-{index:06d}", "problem": problem, "answer": answer, "difficulty": difficulty}
            for index, (problem, answer, difficulty) in enumerate(drawn)]


def problem_key(row: dict) -> str:
    """What must not repeat across splits: the problem text."""
    return row["problem"]


def write_split(path: str, rows: Sequence[dict]) -> str:
    """Write `rows` as JSON Lines at `path` (atomically); returns the path."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    staging = f"{path}.partial"
    with open(staging, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(staging, path)
    return path


def difficulty_counts(rows: Sequence[dict]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for row in rows:
        counts[row["difficulty"]] = counts.get(row["difficulty"], 0) + 1
    return dict(sorted(counts.items()))


def describe(rows: Sequence[dict]) -> str:
    """`N rows, by difficulty {...}, problem length A-B characters (median M)`: the spread a curriculum works on."""
    lengths = sorted(len(row["problem"]) for row in rows)
    if not lengths:
        return "0 rows"
    return (f"{len(rows)} rows, by difficulty {difficulty_counts(rows)}, problem length {lengths[0]}-{lengths[-1]} "
            f"characters (median {lengths[len(lengths) // 2]})")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for train.jsonl and test.jsonl")
    parser.add_argument("--num_train", type=int, default=512)
    parser.add_argument("--num_test", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", default=None,
                        help=f"comma-separated relative weights of difficulty 1..{len(LEVELS)} "
                             f"(default {','.join(f'{w:g}' for w in DEFAULT_WEIGHTS)})")
    args = parser.parse_args(argv)
    if args.num_train <= 0 or args.num_test < 0:
        raise ValueError(f"--num_train must be positive and --num_test >= 0, got {args.num_train}, {args.num_test}")
    weights = None if args.weights is None else [float(w) for w in args.weights.split(",")]
    train = make_problems(args.num_train, args.seed, weights, id_prefix="train")
    test = make_problems(args.num_test, args.seed + 1, weights, id_prefix="test",
                         exclude={row["problem"] for row in train})
    for name, split in (("train", train), ("test", test)):
        path = write_split(os.path.join(args.out, f"{name}.jsonl"), split)
        print(f"wrote {path}: {describe(split)}")


if __name__ == "__main__":
    main()
