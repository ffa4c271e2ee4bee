"""Math answer text (pure functions): the normaliser, exact numbers, lists and intervals, assignments, choices.

`normalize_answer` rewrites an answer, in this order:
 1. Unicode: a minus sign becomes `-`, `∞ π × · ≤ ≥ ≠` become `\\infty \\pi \\times \\cdot \\le \\ge \\ne`.
 2. Units ending an answer that has something before them are dropped, repeatedly, with any
    power: `\\text{..}`, `\\mbox{..}`, `\\textrm{..}` (`5 \\text{ cm}` -> 5, `5\\text{m/s}` -> 5,
    `15000 \\text{ kcal m}^{-2} \\text{yr}^{-1}` -> 15000), and `\\mathrm{..}` when it reads as a
    unit: two letters or more, a `/`, or LaTeX spacing before it (`5\\,\\mathrm{m}` -> 5, while
    `3+4\\mathrm{i}` and `3+4 \\mathrm{i}` keep their `i`).
 3. Wrappers are unwrapped, nested braces included: `\\text \\textbf \\textit \\textrm \\textnormal
    \\mbox \\mathrm \\mathbf \\boldsymbol \\emph` (`\\text{(A)}` -> (A), `\\textbf{(C) }12` -> (C)12).
 4. `\\dfrac \\tfrac` -> `\\frac`; `\\geq \\geqslant` -> `\\ge`, `\\leq \\leqslant` -> `\\le`, `\\neq` -> `\\ne`,
    `\\approx` -> `=`; `^{\\prime}` -> `'`; braces around one character after `^` or `_` are
    dropped (`x_{1}^{2}` -> `x_1^2`); thousands separators written `{,}` or `,\\!` are dropped
    (`10,\\!080` -> 10080), another `{,}` becomes `,`; `\\left \\right \\big.. \\displaystyle`,
    spacing (`\\! \\, \\; \\: \\  ~ \\quad \\qquad`) and math delimiters `\\( \\) \\[ \\]` are dropped.
 5. Degrees (`^\\circ`, `^{\\circ}`, `30\\circ`, `\\degree`, `°`, and a temperature letter after them:
    `1950^\\circ C` -> 1950), percent signs (`\\%`, `%`: 50\\% is 50, not 0.5) and dollar signs
    (`\\$`, `$`, `\\textdollar`) are dropped.
 6. Words are read:
    - `or` / `and` between two values make the set of alternatives (`1 \\text{ or } 5` -> \\{1,5\\},
      `2, 3, and 4` -> \\{2,3,4\\}, `x=2 or x=-3`, `A and C`; a set, so `2 or 3` is never the tuple (2,3)),
      but not between words (`pens and pencils`, `Austin and Sue`) or inside brackets;
    - the imaginary unit loses an explicit product (`4\\cdot i` -> 4i, `i\\cdot\\sqrt{2}` -> i\\sqrt{2}), and a
      leading `=` (from `\\approx 2.24`) goes;
    - scale words multiply (`1.5 million` -> 1500000, `3 hundred` -> 300), and bare number words are read
      (`five` -> 5, `twenty-one` -> 21; `number_words.parse_number_words`; not `two lines`, whose noun
      is the answer);
    - a number (scientific notation included) followed by unit words is the number: `18 dollars` -> 18,
      `4.4 \\times 10^{14} Hz` -> its number (words of >= 2 letters; `2 x` stays a product).
    Unit words have letters and no digits, and no qualifier (`hedges`), scale, number, fraction or sign
    word among them: `5\\text{ or more}`, `2\\text{ million}`, `18\\text{ (or 19)}`, `3 tenths`, `18\\text{+}` keep
    their words. Step 2's trailing units pass the same test (`_are_units`).
 7. Whitespace is dropped (one space is kept after a command before a letter: `\\pi r`), and so is
    a trailing period; primes after a plain number (`0.003^{\\prime\\prime}`, `3''`) are dropped.
A plain comma stays: `1,000` may be a number or a list (`70,110`: MATH's solutions 70 and 110);
`thousands_number` gives the number reading and the grader accepts either reading.

`parse_number` reads the exact value (a Fraction) of a normalised plain number: integers and
decimals (`025`, `.5`, `18.00`), scientific notation (`1.2e5`, `1.2\\times10^{5}`, `10^{-3}`),
simple fractions (`\\frac{1}{2}`, `\\frac12`, `-3/2`), mixed numbers (`2\\frac{1}{2}` = 5/2), repeating
decimals (`0.\\overline{3}` = 1/3, `0.1\\overline{6}` = 1/6; `\\bar` and `\\dot` too) and a number in
parentheses (`(-3)`); anything else (`\\sqrt2`, `\\pi`, `2x`, `0.333\\ldots`) is not a plain number.

`hedges` names the qualifiers in an answer (bounds before its number: `at least`, `more than`, `between`;
after it: `or more`, `and up`, `max`; estimates anywhere: `about`, `or so`, `-ish`): the grader rejects an
answer whose qualifiers the reference does not have.

`parse_group` reads the structure of a normalised answer: a set `\\{a,b\\}`, a bracketed tuple or
interval (`(a,b)`, `[a,b]`, `[a,b)`, `(a,b]`), or a bare list `a,b` (top-level commas); an item
with one `\\pm` counts as its two values (`1\\pm\\sqrt2`). `split_assignment` reads `x=3`,
`f(x)=2x`, `m_{\\max}=5` or `x\\in[0,1]` as (name, value). `split_choice_label` reads a multiple-
choice letter `(C)`, `(C)12` or a bare `C`; `parse_choices` reads the answer choices
`\\textbf{(A) }12\\qquad\\textbf{(B) }..` or `(A) Line (B) Circle` out of a problem statement.
"""
from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Optional

from .number_words import SCALES, TEENS, TENS, UNITS, parse_number_words

# ---------------------------------------------------------------- braces
_WRAPPERS = ("text", "textbf", "textit", "textrm", "textnormal", "mbox", "mathrm", "mathbf", "boldsymbol", "emph")
_WRAPPER = re.compile(r"\\(" + "|".join(_WRAPPERS) + r")(?![A-Za-z])\s*\{")


def matching_brace(text: str, open_index: int) -> Optional[int]:
    """Index of the `}` that closes text[open_index] == '{' (escaped `\\{ \\}` skipped), or None if it never closes."""
    depth, index = 0, open_index
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return index
        index += 1
    return None


def _unwrap(text: str) -> str:
    """`\\text{..}` and the other wrappers replaced by their content, innermost and nested ones too."""
    while True:
        match = _WRAPPER.search(text)
        if not match:
            return text
        close = matching_brace(text, match.end() - 1)
        if close is None:  # an unclosed wrapper: drop the command only
            return text[:match.start()] + text[match.end():]
        text = text[:match.start()] + text[match.end():close] + text[close + 1:]


# ---------------------------------------------------------------- the normaliser
_UNICODE = {"\u2212": "-", "\u2013": "-", "\u221e": "\\infty ", "\u03c0": "\\pi ", "\u00d7": "\\times ",
            "\u00b7": "\\cdot ", "\u22c5": "\\cdot ", "\u2264": "\\le ", "\u2265": "\\ge ", "\u2260": "\\ne "}
_POWER = r"(?:\^\{?-?\d+\}?)?"
_TEXT_UNIT = re.compile(r"(?<=\S)\s*\\(?:text|mbox|textrm)\s*\{([^{}]*)\}" + _POWER + r"\s*$")
_MATHRM_UNIT = re.compile(r"(?<=\S)(\s*(?:\\[,;:! ]|~)*)\\mathrm\s*\{([^{}]*)\}" + _POWER + r"\s*$")


def _primes(match: re.Match) -> str:
    return "'" * match.group(1).count("\\prime")


_COMMANDS = [(re.compile(pattern), replacement) for pattern, replacement in [
    (r"\\[dt]frac(?![A-Za-z])", r"\\frac"), (r"\\geq(?:slant)?(?![A-Za-z])", r"\\ge"),
    (r"\\leq(?:slant)?(?![A-Za-z])", r"\\le"), (r"\\neq(?![A-Za-z])", r"\\ne"), (r"\\approx(?![A-Za-z])", "="),
    (r"(?<=\d)(?:\{,\}|,\s*\\!)\s*(?=\d{3}(?!\d))", ""), (r"\{,\}", ","), (r"\\textdollar(?![A-Za-z])", ""),
    (r"\^\s*\{?\s*((?:\\prime\s*)+)\}?", _primes),
    (r"([_^])\{\s*([A-Za-z0-9])\s*\}", r"\1\2"),
    (r"\\(?:left|right|[bB]igg?[lr]?|displaystyle|q?quad)(?![A-Za-z])|(?<!\\)\\[!,;: ()\[\]]|~", " "),
]]
_DEGREES = re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ(?![A-Za-z])|(?<=\d)\s*\\circ(?![A-Za-z])|\\degree(?![A-Za-z])"
                      r"|\u00b0")
_TEMPERATURE = re.compile(r"(\d)\s*(?:" + _DEGREES.pattern + r")\s*[CFK](?![A-Za-z])")
_PERCENT_DOLLAR = re.compile(r"\\%|%|\\\$|\$")
_SCI_TEXT = r"[+-]?(?:\d[\d,]*(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+|\s*\\(?:times|cdot)\s*10\s*\^\s*\{?\s*-?\d+\s*\}?)?"
_WORDS = r"[A-Za-z]{2,}(?:[\s/.-]+[A-Za-z]{2,})*"
_NUMBER_WITH_WORDS = re.compile(r"(" + _SCI_TEXT + r")\s+(" + _WORDS + r")\.?")
_SCALE_VALUES = {"hundred": 100, **SCALES}
_SCALED_NUMBER = re.compile(r"([+-]?(?:\d[\d,]*(?:\.\d*)?|\.\d+))\s+(" + "|".join(_SCALE_VALUES) + r")"
                            r"(?:\s+(" + _WORDS + r"))?\.?")
_IMAGINARY_PRODUCT = re.compile(r"(?<=[\d})])\s*(?:\\cdot|\\times|\*)\s*i(?![A-Za-z])"  # 4\cdot i -> 4i
                                r"|(?<![A-Za-z\\])i\s*(?:\\cdot|\\times|\*)\s*(?=\\[A-Za-z]|\()")  # i\cdot\sqrt2 -> i\sqrt2
_SPACES = re.compile(r"(\\[A-Za-z]+)\s+(?=[A-Za-z])|\s+")
_PRIMES = re.compile(r"((?:\d+(?:\.\d*)?|\.\d+))(?:'+|\")")
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")


def _drop_trailing_units(text: str) -> str:
    while True:
        unit = _TEXT_UNIT.search(text)
        if unit and not _are_units(unit.group(1)):  # `5\text{ or more}`, `2\text{ million}`
            return text
        stripped = _TEXT_UNIT.sub("", text)
        unit = _MATHRM_UNIT.search(stripped)
        if unit:
            content = unit.group(2).replace("~", " ")
            letters = sum(char.isalpha() for char in content)
            spaced = bool(re.search(r"\\[,;:! ]|~", unit.group(1))) and content.strip() not in ("i", "e", "d", "j")
            if (letters >= 2 or content[:1].isspace() or "/" in content or spaced) and _are_units(content):
                stripped = stripped[:unit.start()]
        stripped = stripped.rstrip()
        if stripped == text:
            return text
        text = stripped


def normalize_answer(answer: str) -> str:
    """Canonical text of an answer, by the rules in the module docstring."""
    text = answer.strip()
    for char, replacement in _UNICODE.items():
        text = text.replace(char, replacement)
    text = _unwrap(_drop_trailing_units(text))
    for pattern, replacement in _COMMANDS:
        text = pattern.sub(replacement, text)
    text = _TEMPERATURE.sub(r"\1", text)
    text = _PERCENT_DOLLAR.sub("", _DEGREES.sub("", text)).strip()
    text = re.sub(r"^=\s*", "", _IMAGINARY_PRODUCT.sub("i", text))  # `\approx 2.24`: the value
    alternatives = _as_set_of_alternatives(text)
    if alternatives is not None:
        text = alternatives
    else:
        read = _read_words(text)  # the whole first: `1,500 thousand` is one number
        items = _split_top_level(text)
        text = read if read != text or len(items) == 1 else ",".join(_read_words(item.strip()) for item in items)
    text = _SPACES.sub(lambda m: m.group(1) + " " if m.group(1) else "", text).rstrip(".")
    primes = _PRIMES.fullmatch(text)
    if primes:
        text = primes.group(1)
    return text


# ---------------------------------------------------------------- words: hedges, lists, scale and number words
_COMPARATIVES = r"more|fewer|less|greater|higher|lower|larger|smaller|bigger|longer|shorter"
_DOUBT = r"maybe|perhaps|probably|possibly|likely"
_ESTIMATES = (r"about|around|approximately|approx|roughly|nearly|almost|circa|estimated|estimate|ballpark|ish"
              r"|close\s*to|more\s*or\s*less|give\s*or\s*take|or\s*so|or\s*something")
_BEFORE = (r"at\s*(?:least|most|minimum|maximum)|(?:" + _COMPARATIVES + r")\s*than|up\s*to|upwards\s*of"
           r"|between|within|under|over|above|below|minimum|maximum|min|max|" + _DOUBT)
_AFTER = (r"or\s*(?:" + _COMPARATIVES + r"|above|below|over|under|up|later|earlier|better|worse)"
          r"|and\s*(?:up|upwards|above|below|over|under|" + _COMPARATIVES + r")|at\s*(?:least|most|minimum|maximum)"
          r"|if\s*not\s*(?:" + _COMPARATIVES + r")|minimum|maximum|max|tops|plus|upwards|(?:lower|upper)?\s*bound|"
          + _DOUBT)


def _phrases(alternatives: str) -> re.Pattern:
    """Whole-word phrases (never part of a word or a command), and `-ish` after anything."""
    return re.compile(r"(?:(?<![A-Za-z\\])(?:" + alternatives + r")|-\s*ish)(?![A-Za-z])", re.IGNORECASE)


_BOUNDS_BEFORE, _BOUNDS_AFTER, _ESTIMATE = _phrases(_BEFORE), _phrases(_AFTER), _phrases(_ESTIMATES)
_FIRST_NUMBER = re.compile(r"\d|(?<![A-Za-z])(?:" + "|".join(UNITS + TEENS + TENS) + r")(?![A-Za-z])", re.IGNORECASE)
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"))


def hedges(answer: str, estimates: bool = True) -> frozenset[str]:
    """The qualifiers in an answer that change what its number claims, as lower-case words run together:
    bounds before its first number (`at least 18`, `more than 18`, `between 5 and 7`, `under 5`) or after it
    (`18 or more`, `18 and up`, `18 at most`, `18 max`), doubt (`maybe 18`), and with `estimates`, estimates
    anywhere (`about 18`, `18 or so`, `18-ish`). Words after a number that name a difference or a place are not
    qualifiers (`3 more than Tom`, `5 m below sea level`). LaTeX spacing, hyphens and invisible characters
    between words do not hide one (`at~least`, `at-least`, `or\\,more`); commands are not words (`\\approx`)."""
    text = _unwrap(answer).translate(_INVISIBLE).replace("\u00a0", " ")
    text = re.sub(r"\\[,;:! ]|~|_|(?<=[A-Za-z])-(?=[A-Za-z])", " ", text)
    text = re.sub(r"\\[A-Za-z]+", " ", text)
    number = _FIRST_NUMBER.search(text)
    before, after = (text, text) if number is None else (text[:number.start()], text[number.start():])
    found = [m.group(0) for m in _BOUNDS_BEFORE.finditer(before)] + [m.group(0) for m in _BOUNDS_AFTER.finditer(after)]
    if estimates:
        found += [m.group(0) for m in _ESTIMATE.finditer(text)]
    return frozenset(re.sub(r"[\s-]+", "", phrase.lower()) for phrase in found)


_NOT_UNITS = (frozenset(UNITS + TEENS + TENS) | set(SCALES) | {scale + "s" for scale in SCALES}
              | {"hundred", "hundreds", "dozen", "dozens", "tenths", "hundredths", "thousandths", "millionths",
                 "squared", "cubed", "minus", "plus", "negative", "alternatively", "otherwise", "else", "nor"})


def _are_units(words: str) -> bool:
    """Whether the words after a number can be dropped as its unit: letters and no digits, with no qualifier, scale
    word, number word or sign word among them (`5\\text{ or more}`, `2\\text{ million}`, `18\\text{ (or 19)}` keep
    theirs, `18\\text{+}` has no letters); `pens and pencils` and `red or blue marbles` are units, and so are
    estimate words (`9.6 (approx.)`): where they matter the grader has rejected the answer already (`hedges`)."""
    tokens = re.findall(r"[a-z]+", words.lower())
    return bool(tokens) and not re.search(r"\d", words) and not hedges("1 " + words, estimates=False) \
        and not set(tokens) & _NOT_UNITS


_CONJUNCTION = re.compile(  # `or` / `and` between two values: `1 or 5`, `x=2 or x=-3`, `2, 3, and 4`, `A and C`
    r"(?<=[\w}\])'])\s*,?\s+(?:and|or)\s+(?=[-+]?\s*(?:\d|\.\d|\\[A-Za-z]|[(\[]|[A-Za-z](?![A-Za-z])))")


def _as_set_of_alternatives(text: str) -> Optional[str]:
    """`1 or 5` as the set `\\{1,5\\}` (never a tuple or an interval: `2 or 3` is not `(2,3)`), its items' words
    read; None unless `or` / `and` joins values at the top level (`pens and pencils`, `one hundred and five`)."""
    parts = _CONJUNCTION.split(text)
    if len(parts) < 2 or not all(map(_balanced, parts)):  # `(1 or 2)`: inside brackets
        return None
    parts[0] = re.sub(r"^(?:either|both)\s+", "", parts[0])
    items = [item.strip() for part in parts for item in _split_top_level(part)]
    return "\\{" + ",".join(_read_words(item) for item in items) + "\\}"


def _balanced(text: str) -> bool:
    depth = 0
    for char in text:
        depth += (char in _OPENERS) - (char in _CLOSERS)
        if depth < 0:
            return False
    return depth == 0


def _read_words(item: str) -> str:
    """One item with its words read: `1.5 million` -> 1500000, `twenty-one` -> 21, `18 dollars` -> 18."""
    scaled = _SCALED_NUMBER.fullmatch(item)
    if scaled and (scaled.group(3) is None or _are_units(scaled.group(3))):
        value = Decimal(scaled.group(1).replace(",", "")) * _SCALE_VALUES[scaled.group(2)]
        return format(value.normalize(), "f") if value != value.to_integral_value() else str(int(value))
    spelled = parse_number_words(item.rstrip("."))  # bare: in `two lines` the noun is the answer
    if spelled is not None:
        return str(spelled)
    with_words = _NUMBER_WITH_WORDS.fullmatch(item)
    if with_words and _are_units(with_words.group(2)):
        return with_words.group(1)
    return item


def thousands_number(text: str) -> Optional[str]:
    """`1,000` / `-12,345.5` without its commas: a normalised answer that may be one number written with thousands
    separators (it may also be a list: `70,110`); None if it cannot be."""
    return text.replace(",", "") if _THOUSANDS.fullmatch(text) else None


# ---------------------------------------------------------------- reference answers of any JSON type
def reference_text(reference) -> str:
    """A reference answer as text: a string as it is, a JSON number by its value (142.0 -> "142", 0.25 -> "0.25")."""
    if isinstance(reference, str):
        return reference
    if isinstance(reference, bool) or not isinstance(reference, (numbers.Real, Decimal)):
        raise ValueError(f"reference answer {reference!r} is not a string or a number")
    if isinstance(reference, Fraction):
        return str(reference.numerator) if reference.denominator == 1 else \
            f"\\frac{{{reference.numerator}}}{{{reference.denominator}}}"
    if isinstance(reference, numbers.Integral):
        return str(int(reference))
    if not isinstance(reference, Decimal):  # float, numpy floats: their shortest repr, exactly
        reference = float(reference)
        if not math.isfinite(reference):
            raise ValueError(f"reference answer {reference!r} is not a finite number")
    value = Decimal(repr(reference)) if isinstance(reference, float) else reference
    if not value.is_finite():
        raise ValueError(f"reference answer {reference!r} is not a finite number")
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


# ---------------------------------------------------------------- exact numbers
_DECIMAL = r"(?:\d+(?:\.\d*)?|\.\d+)"
_EXPONENT = r"\^(?:\{([+-]?\d+)\}|([+-]?\d))"
_PLAIN = re.compile(r"(" + _DECIMAL + r")(?:[eE]([+-]?\d+))?")
_TIMES_TEN = re.compile(r"(" + _DECIMAL + r")\\(?:times|cdot)10" + _EXPONENT)
_POWER_OF_TEN = re.compile(r"10" + _EXPONENT)
_FRACTION = re.compile(r"\\frac(?:\{([+-]?" + _DECIMAL + r")\}|(\d))(?:\{(" + _DECIMAL + r")\}|(\d))"
                       r"|(" + _DECIMAL + r")/(" + _DECIMAL + r")")
_MIXED = re.compile(r"(\d+)\\frac(?:\{(\d+)\}|(\d))(?:\{(\d+)\}|(\d))")
_REPEATING = re.compile(r"(\d*)\.(\d*)\\(?:overline|bar|dot)(?:\{(\d+)\}|(\d))")  # 0.1\overline{6} = 1/6
_MAX_EXPONENT = 400  # 10^400 is exact and cheap; 10^(10^9) is left to the time-limited workers


def _power_of_ten(groups: tuple) -> Optional[Fraction]:
    exponent = int(groups[0] if groups[0] is not None else groups[1])
    return Fraction(10) ** exponent if abs(exponent) <= _MAX_EXPONENT else None


def _unsigned_number(text: str) -> Optional[Fraction]:
    match = _PLAIN.fullmatch(text)
    if match:
        exponent = int(match.group(2)) if match.group(2) else 0
        return Fraction(Decimal(match.group(1))) * Fraction(10) ** exponent if abs(exponent) <= _MAX_EXPONENT else None
    match = _TIMES_TEN.fullmatch(text)
    if match:
        scale = _power_of_ten(match.groups()[1:])
        return None if scale is None else Fraction(Decimal(match.group(1))) * scale
    match = _POWER_OF_TEN.fullmatch(text)
    if match:
        return _power_of_ten(match.groups())
    match = _FRACTION.fullmatch(text)
    if match:
        numerator, denominator = [g for g in match.groups() if g is not None]
        denominator = Fraction(Decimal(denominator))
        return Fraction(Decimal(numerator)) / denominator if denominator else None
    match = _REPEATING.fullmatch(text)
    if match:
        whole, fixed, repeat = match.group(1), match.group(2), match.group(3) or match.group(4)
        fixed_value = Fraction(int(fixed or "0"), 10 ** len(fixed))
        return int(whole or "0") + fixed_value + Fraction(int(repeat), (10 ** len(repeat) - 1) * 10 ** len(fixed))
    match = _MIXED.fullmatch(text)
    if match:
        whole, numerator, denominator = [g for g in match.groups() if g is not None]
        return int(whole) + Fraction(int(numerator), int(denominator)) if int(denominator) else None
    return None


def parse_number(text: str) -> Optional[Fraction]:
    """Exact value of a normalised plain number (see the module docstring), or None if it is not one."""
    if len(text) > 2000:
        return None
    if text.startswith("(") and text.endswith(")") and "," not in text:
        text = text[1:-1]
    sign = 1
    if text[:1] in "+-":
        sign, text = (-1 if text[0] == "-" else 1), text[1:]
    try:
        value = _unsigned_number(text)
    except (InvalidOperation, ValueError, ZeroDivisionError):
        return None
    return None if value is None else sign * value


# ---------------------------------------------------------------- structure: sets, tuples, intervals, lists
@dataclass(frozen=True)
class Group:
    kind: str  # "set" (\{..\}), "list" (bare commas), or the brackets of a tuple/interval: "()", "[]", "[)", "(]"
    items: tuple[str, ...]


_OPENERS, _CLOSERS = "([{", ")]}"


def _split_top_level(text: str) -> list[str]:
    """text split at its commas outside any brackets or braces (`\\{ \\}` count as braces)."""
    parts, depth, start, index = [], 0, 0, 0
    while index < len(text):
        char = text[index]
        if char == "\\" and text[index + 1:index + 2] in ("{", "}"):
            depth += 1 if text[index + 1] == "{" else -1
            index += 2
            continue
        if char in _OPENERS:
            depth += 1
        elif char in _CLOSERS:
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
        index += 1
    parts.append(text[start:])
    return parts


def _encloses(text: str) -> bool:
    """Whether text[0] is a bracket whose partner (of any shape: `[0,1)`) is the last character."""
    if len(text) < 2 or text[0] not in "([" or text[-1] not in ")]":
        return False
    depth = 0
    for index, char in enumerate(text):
        if char in _OPENERS:
            depth += 1
        elif char in _CLOSERS:
            depth -= 1
            if depth == 0:
                return index == len(text) - 1
    return False


def _encloses_set(text: str) -> bool:
    """Whether text is one set `\\{..\\}` (not `\\{1\\}\\cup\\{2\\}`)."""
    if not text.startswith("\\{"):
        return False
    depth, index = 0, 0
    while index < len(text):
        if text.startswith("\\{", index) or text.startswith("\\}", index):
            depth += 1 if text[index + 1] == "{" else -1
            index += 2
            if depth == 0:
                return index == len(text)
            continue
        index += 1
    return False


def _expand_plus_minus(items: list[str]) -> list[str]:
    expanded = []
    for item in items:
        if item.count("\\pm") == 1 and not re.search(r"\\pm[A-Za-z]", item):
            expanded += [item.replace("\\pm", "+"), item.replace("\\pm", "-")]
        else:
            expanded.append(item)
    return expanded


def parse_group(text: str) -> Optional[Group]:
    """The set, tuple, interval or bare list a normalised answer is, or None for a single value."""
    if _encloses_set(text):
        return Group("set", tuple(_expand_plus_minus(_split_top_level(text[2:-2]))))
    if _encloses(text):
        items = _split_top_level(text[1:-1])
        if len(items) >= 2:
            return Group(text[0] + text[-1], tuple(items))
        return None
    items = _expand_plus_minus(_split_top_level(text))
    return Group("list", tuple(items)) if len(items) >= 2 else None


_NAME = r"(?:[A-Za-z]|\\[A-Za-z]+)(?:_(?:\{[^{}]*\}|[A-Za-z0-9]))?'*(?:\([^()=]*\))?"
_ASSIGNMENT = re.compile(r"(" + _NAME + r")(?:=|\\in(?![A-Za-z]))(.+)")


def split_assignment(text: str) -> Optional[tuple[str, str]]:
    """(name, value) of `x=3`, `f(x)=2x`, `m_{\\max}=5` or `x\\in[0,1]` (one `=`), else None."""
    match = _ASSIGNMENT.fullmatch(text)
    if not match or "=" in match.group(2):
        return None
    return match.group(1), match.group(2)


# ---------------------------------------------------------------- multiple choice
_LABEL = re.compile(r"\(([A-Z])\)[.:]?(.*)")
_MORE_LETTERS = re.compile(r"\([A-Z]\)|^(?:[,;&]|and|or)*[A-Z](?:(?:[,;&]|and|or)+[A-Z])*$")  # `(A),(C)`, `(A),C`


def split_choice_label(text: str, bare_letters: bool) -> tuple[Optional[str], str]:
    """(letter, rest) of a normalised `(C)` or `(C)12`, or a bare `C` when bare_letters; else (None, text)."""
    match = _LABEL.fullmatch(text)
    if match and not _MORE_LETTERS.search(match.group(2)):
        return match.group(1), match.group(2).strip(",;:.")
    if bare_letters and re.fullmatch(r"[A-Z]", text):
        return text, ""
    return None, text


_CHOICE = re.compile(r"\\(?:textbf|mathrm|text|mathbf|textrm)\s*\{\s*\(([A-J])\)\s*\}"  # \textbf{(A)} 12
                     r"|\\(?:textbf|mathrm|text|mathbf|textrm)\s*\{\s*\(([A-J])\)"  # \textbf{(A) }12, \mathrm{(A) 12}
                     r"|\(\s*\\(?:textbf|mathrm|text|mathbf)\s*\{([A-J])\}\s*\)"  # (\textbf{A}) 12
                     r"|(?<![A-Za-z0-9_])\(([A-J])\)")  # (A) 12, but not dot(A)
_CHOICE_END = re.compile(r"\\q?quad(?![A-Za-z])|\$|\\\\|\n|\s{2,}")
_EDGE_SPACING = re.compile(r"^(?:\\[ ,;:!]|\\indent|~|\s|\})+|(?:\\[ ,;:!]|~|\s|[.,;])+$")


def _choice_runs(labels: list) -> list[list]:
    """The label matches grouped into runs (A), (B), (C), .. in letter order."""
    runs: list[list] = []
    for match in labels:
        letter = next(group for group in match.groups() if group)
        if letter == "A":
            runs.append([(letter, match)])
        elif runs and runs[-1] and ord(letter) == ord(runs[-1][-1][0]) + 1:
            runs[-1].append((letter, match))
        elif runs:
            runs.append([])  # a label out of order ends the run
    return runs


def parse_choices(problem: str) -> dict[str, str]:
    """Letter -> answer text of the choices (A), (B), .. in a problem statement; {} unless (A) to (D) are there.

    Reads the AMC forms `$\\textbf{(A) }12 \\qquad\\textbf{(B) }15 ..$`, `\\textbf{(A)}\\ 12`, `\\mathrm{(A) \\ }12`,
    `(\\textbf{A})\\ 12` and plain `(A) Line (B) Circle` (never `dot(A)`); the last run of labels in letter order
    counts, and a choice's text runs to the next label, `\\qquad`, `$`, a line end or a double space.
    """
    runs = [run for run in _choice_runs(list(_CHOICE.finditer(problem))) if len(run) >= 4]
    if not runs:
        return {}
    run, choices = runs[-1], {}
    for index, (letter, match) in enumerate(run):
        end = run[index + 1][1].start() if index + 1 < len(run) else len(problem)
        text = problem[match.end():end]
        if match.group(2):  # the label's brace is still open: `\textbf{(A) }12` or `\mathrm{(A) 12}`
            close = matching_brace("{" + text, 0)
            if close is not None:
                text = text[:close - 1] + " " + text[close:]
        text = _EDGE_SPACING.sub("", text)
        stop = _CHOICE_END.search(text)
        text = _EDGE_SPACING.sub("", text[:stop.start()] if stop else text)
        if not text:
            return {}
        choices[letter] = text
    return choices
