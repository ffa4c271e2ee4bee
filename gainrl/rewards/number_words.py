"""English number words (pure functions): `five` -> 5, `twenty-one` -> 21, `one hundred and five` -> 105.

`parse_number_words` reads a whole phrase or nothing. The grammar is the usual one, strictly:
a group below a thousand is `[unit hundred [and]] [tens[-unit] | teen | unit]` (`a hundred` is 100),
and groups are joined by scale words in decreasing order (`two million three thousand and five`;
`a thousand`). `zero` stands alone; `negative` / `minus` may lead. Anything else is not a number:
`five five`, `twenty twenty`, `hundred`, `thousand million`, `one and two`, `fifth`, `half`.
Hyphens and case do not matter.
"""
from __future__ import annotations

from typing import Optional

UNITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TEENS = ("ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
TENS = ("twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
SCALES = {"thousand": 10 ** 3, "million": 10 ** 6, "billion": 10 ** 9, "trillion": 10 ** 12}
VOCABULARY = frozenset(UNITS + TEENS + TENS + tuple(SCALES) + ("hundred", "and", "a", "negative", "minus"))


def _below_hundred(tokens: list[str], i: int) -> Optional[tuple[int, int]]:
    """(value, next index) of a group 1..99 at tokens[i], or None."""
    word = tokens[i] if i < len(tokens) else None
    if word in TENS:
        value = 20 + 10 * TENS.index(word)
        if i + 1 < len(tokens) and tokens[i + 1] in UNITS[1:]:
            return value + UNITS.index(tokens[i + 1]), i + 2
        return value, i + 1
    if word in TEENS:
        return 10 + TEENS.index(word), i + 1
    if word in UNITS[1:]:
        return UNITS.index(word), i + 1
    return None


def _below_thousand(tokens: list[str], i: int) -> Optional[tuple[int, int]]:
    """(value, next index) of a group 1..999 at tokens[i], or None."""
    if tokens[i] == "a" and i + 1 < len(tokens) and tokens[i + 1] == "hundred":
        hundreds, j = 1, i + 1
    else:
        group = _below_hundred(tokens, i)
        if group is None or group[0] >= 10 or group[1] >= len(tokens) or tokens[group[1]] != "hundred":
            return group
        hundreds, j = group
    j += 1  # past "hundred"
    if j < len(tokens) and tokens[j] == "and":
        rest = _below_hundred(tokens, j + 1)
        return None if rest is None else (100 * hundreds + rest[0], rest[1])
    rest = _below_hundred(tokens, j)
    return (100 * hundreds, j) if rest is None else (100 * hundreds + rest[0], rest[1])


def parse_number_words(text: str) -> Optional[int]:
    """The integer a whole phrase of English number words names, or None (the grammar is in the module docstring)."""
    tokens = text.lower().replace("-", " ").split()
    sign = 1
    if tokens[:1] in (["negative"], ["minus"]):
        sign, tokens = -1, tokens[1:]
    if tokens == ["zero"]:
        return 0
    if not tokens:
        return None
    total, i, last_scale = 0, 0, None
    while i < len(tokens):
        if tokens[i] == "a" and i + 1 < len(tokens) and tokens[i + 1] in SCALES:
            group = (1, i + 1)
        else:
            group = _below_thousand(tokens, i)
        if group is None:
            return None
        value, i = group
        if i < len(tokens) and tokens[i] in SCALES:
            scale = SCALES[tokens[i]]
            if last_scale is not None and scale >= last_scale:
                return None
            total, last_scale, i = total + value * scale, scale, i + 1
            if i < len(tokens) and tokens[i] == "and":  # `two thousand and five`: the last group, below a hundred
                rest = _below_hundred(tokens, i + 1)
                if rest is None or rest[1] != len(tokens):
                    return None
                return sign * (total + rest[0])
        elif i == len(tokens):
            total += value
        else:
            return None
    return sign * total
