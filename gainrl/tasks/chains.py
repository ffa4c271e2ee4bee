"""Chains of additions and subtractions with worked solutions: the CPU task on which RL generalises.

A problem starts from a one-digit number and takes 1 to 5 steps, each adding or subtracting
a one-digit number (the running total never drops below 0). It is written either as a bare
expression or as one of several word problems (a lift, a thermometer, a score), so that
prompt lengths differ several-fold at the same difficulty. The worked solution takes one
step per sentence, `7+2=9. 9-5=4. The answer is \\boxed{4}.`; the difficulty label (for
analysis only) is the number of steps.

Every step is one of a few hundred facts (total + digit), each seen many times in a
training set of thousands of chains, while a held-out chain is a combination never seen:
a model that learns the steps, rather than the problems, answers it. Held-out rows share
no chain (start and steps) with the training rows, whatever the wording, so a problem's
answer never leaks through another template.

    python -m gainrl.tasks.chains --out runs/data/chains --num_train 4000 --num_test 500 --seed 0
"""
from __future__ import annotations

import argparse
import os
import random
from typing import Collection, Optional, Sequence

from .arithmetic import describe, level_counts, write_split

MAX_STEPS = 5
DEFAULT_WEIGHTS: tuple[float, ...] = (0.1, 1, 1, 1, 1)  # relative share of chains of 1..5 steps (only 135
# one-step chains exist: 2.4% of 4500 rows is 109 of them)
# Word problems: {start} and {steps} filled in; a step is ("+" or "-", digit) rendered by the
# template's phrases. The bare expressions are the shortest prompts, the thermometer the longest.
TEMPLATES: dict[str, dict] = {
    "expression": {"text": "What is {chain}?"},
    "compute": {"text": "Compute {chain}."},
    "start": {"text": "Start at {start}, then {steps}. What number do you end at?",
              "+": "add {d}", "-": "subtract {d}"},
    "lift": {"text": "A lift is on floor {start}. It goes {steps}. Which floor is it on now?",
             "+": "up {d} floors", "-": "down {d} floors"},
    "score": {"text": "Ana has {start} points in a game. Then she {steps}. How many points does she have now?",
              "+": "wins {d} points", "-": "loses {d} points"},
    "thermometer": {"text": "A thermometer reads {start} degrees. The temperature {steps}. "
                            "What does the thermometer read now?",
                    "+": "rises by {d} degrees", "-": "falls by {d} degrees"},
}


def chain_text(start: int, steps: Sequence[tuple[str, int]]) -> str:
    """`7+2-5`: the chain as an expression."""
    return str(start) + "".join(f"{op}{d}" for op, d in steps)


def totals(start: int, steps: Sequence[tuple[str, int]]) -> list[int]:
    """The running total after each step."""
    out, value = [], start
    for op, d in steps:
        value = value + d if op == "+" else value - d
        out.append(value)
    return out


def solution_text(start: int, steps: Sequence[tuple[str, int]]) -> str:
    """One sentence per step, then the boxed answer: `7+2=9. 9-5=4. The answer is \\boxed{4}.`"""
    sentences, value = [], start
    for (op, d), total in zip(steps, totals(start, steps)):
        sentences.append(f"{value}{op}{d}={total}.")
        value = total
    return " ".join(sentences) + f" The answer is \\boxed{{{value}}}."


def _join(phrases: Sequence[str]) -> str:
    """`a`, `a, then b`, `a, b, then c`."""
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + ", then " + phrases[-1]


def problem_text(template: str, start: int, steps: Sequence[tuple[str, int]]) -> str:
    spec = TEMPLATES[template]
    if "+" not in spec:
        return spec["text"].format(chain=chain_text(start, steps))
    return spec["text"].format(start=start, steps=_join([spec[op].format(d=d) for op, d in steps]))


def draw_chain(num_steps: int, rng: random.Random) -> tuple[int, tuple[tuple[str, int], ...]]:
    """A start in 0..9 and `num_steps` steps of +d or -d (d in 1..9) that keep the total >= 0."""
    start = value = rng.randint(0, 9)
    steps = []
    for _ in range(num_steps):
        op = rng.choice("+-") if value >= 1 else "+"
        d = rng.randint(1, 9) if op == "+" else rng.randint(1, min(9, value))
        value = value + d if op == "+" else value - d
        steps.append((op, d))
    return start, tuple(steps)


def problem_key(row: dict) -> str:
    """What must not repeat across splits: the chain, whatever its wording."""
    return row["chain"]


def make_problems(num_rows: int, seed: int, weights: Optional[Sequence[float]] = None, *,
                  exclude: Collection[str] = (), id_prefix: str = "chain", max_draws_per_row: int = 1000) -> list[dict]:
    """`num_rows` rows with distinct chains, none in `exclude` (chain texts), shuffled.

    Rows are {id, problem, answer, solution, difficulty, chain, template}; difficulty is the
    number of steps, drawn with shares `weights` (one per 1..MAX_STEPS); the wording is drawn
    uniformly from TEMPLATES. The same arguments give the same rows.
    """
    weights = DEFAULT_WEIGHTS if weights is None else tuple(weights)
    if len(weights) != MAX_STEPS or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights: need {MAX_STEPS} values >= 0 (chains of 1..{MAX_STEPS} steps) with a positive "
                         f"sum, got {list(weights)}")
    rng = random.Random(seed)
    rows, seen = [], set(exclude)
    for num_steps, count in enumerate(level_counts(num_rows, weights), 1):
        for _ in range(count):
            for _ in range(max_draws_per_row):
                start, steps = draw_chain(num_steps, rng)
                chain = chain_text(start, steps)
                if chain not in seen:
                    break
            else:
                raise ValueError(f"chains of {num_steps} steps: no new one left after {max_draws_per_row} draws "
                                 f"({count} wanted): lower its weight or ask for fewer rows")
            seen.add(chain)
            template = rng.choice(sorted(TEMPLATES))
            rows.append({"problem": problem_text(template, start, steps), "answer": str(totals(start, steps)[-1]),
                         "solution": solution_text(start, steps), "difficulty": num_steps,
                         "chain": chain, "template": template})
    rng.shuffle(rows)
    return [{"id": f"{id_prefix}-{index:06d}", **row} for index, row in enumerate(rows)]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for train.jsonl and test.jsonl")
    parser.add_argument("--num_train", type=int, default=4000)
    parser.add_argument("--num_test", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.num_train <= 0 or args.num_test < 0:
        raise ValueError(f"--num_train must be positive and --num_test >= 0, got {args.num_train}, {args.num_test}")
    train = make_problems(args.num_train, args.seed, id_prefix="train")
    test = make_problems(args.num_test, args.seed + 1, id_prefix="test", exclude={problem_key(r) for r in train})
    for name, split in (("train", train), ("test", test)):
        path = write_split(os.path.join(args.out, f"{name}.jsonl"), split)
        print(f"wrote {path}: {describe(split)}")


if __name__ == "__main__":
    main()
