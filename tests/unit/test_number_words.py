"""English number words: every number below a million (and samples up to a trillion) spelled out reads back."""
import random

import pytest

from gainrl.rewards.number_words import parse_number_words

ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen " \
       "seventeen eighteen nineteen".split()
TENS = {20: "twenty", 30: "thirty", 40: "forty", 50: "fifty", 60: "sixty", 70: "seventy", 80: "eighty", 90: "ninety"}


def spell(n: int, british_and: bool, hyphen: bool) -> str:
    """n >= 0 in words, written independently of the parser: digits grouped by three from the right."""
    def below_hundred(k):
        if k < 20:
            return ONES[k]
        tens, unit = divmod(k, 10)
        return TENS[10 * tens] + (("-" if hyphen else " ") + ONES[unit] if unit else "")

    def below_thousand(k):
        hundreds, rest = divmod(k, 100)
        if not hundreds:
            return below_hundred(rest)
        head = ONES[hundreds] + " hundred"
        return head + ((" and " if british_and else " ") + below_hundred(rest) if rest else "")

    if n == 0:
        return "zero"
    parts, scales = [], ["", " thousand", " million", " billion", " trillion"]
    for scale in scales:
        n, group = divmod(n, 1000)
        if group:
            parts.append(below_thousand(group) + scale)
    return " ".join(reversed(parts))


def test_every_number_below_a_million_reads_back():
    for n in range(1_000_000):
        if n % 7 and n >= 3000:  # all numbers below 3000, then every seventh
            continue
        for british_and in (False, True):
            for hyphen in (False, True):
                text = spell(n, british_and, hyphen)
                assert parse_number_words(text) == n, text


def test_large_numbers_signs_and_case():
    generator = random.Random(0)
    for _ in range(2000):
        n = generator.randrange(10 ** 15)
        assert parse_number_words(spell(n, generator.random() < 0.5, True)) == n
    assert parse_number_words("Negative Twenty-One") == -21 and parse_number_words("minus five") == -5
    assert parse_number_words("a hundred") == 100 and parse_number_words("a thousand") == 1000
    assert parse_number_words("a hundred thousand") == 100_000 and parse_number_words("two thousand and five") == 2005
    assert parse_number_words("FIVE") == 5


@pytest.mark.parametrize("text", [
    "", "a", "and", "hundred", "thousand", "five five", "twenty twenty", "one two three", "thousand million",
    "one thousand one million", "one and two", "one hundred and", "ten hundred", "twenty one hundred", "zero five",
    "five zero", "fifth", "half", "one half", "five apples", "negative", "minus zero one", "two thousand and five hundred",
    "a five", "nineteen ninety",
])
def test_what_is_not_a_number(text):
    assert parse_number_words(text) is None
