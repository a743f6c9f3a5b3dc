"""Grading a model's final answer against the ground truth, for multiple-choice and free-form questions.

The paper's accuracy reward is 1 when the final answer "matches the ground-truth response" (paper Sec. 4.1); its
Stage I sources are mostly open-ended QA (paper Sec. 5.1). Rules settle what they can: option letters or option
text when the question has options, numbers (units, thousands separators, number words), yes/no, and text equal
after normalisation (case, punctuation, articles, whitespace). A rule either decides (True/False) or leaves the
answer undecided (None); only undecided answers go to the optional judge (:mod:`lfpc.judge`).

A number or yes/no said under a negation, an exclusion, a comparison or a hedge ("not 5", "anything but 5", "more
than 5", "I wouldn't say no", "maybe yes") is never graded correct by rule: no rule can tell what such an answer
claims, so it is undecided. Numbers are compared exactly (as decimals, never overflowing to infinity).
"""

from __future__ import annotations

import re
import unicodedata
from decimal import Context, Decimal
from typing import Protocol, Sequence

from lfpc.data.records import LETTERS, Sample


class Judge(Protocol):
    """Decides whether ``answer`` says the same as ``truth`` for ``question`` (implemented in :mod:`lfpc.judge`)."""

    def __call__(self, question: str, truth: str, answer: str) -> bool:
        ...


_EDGE_JUNK = re.compile(r"^[\W_]+|[\W_]+$")
# "B", "Option B", "The answer is (B)", "B. red", "B) red", "B: red" (surrounding punctuation already stripped).
_LETTER = re.compile(r"^(?:(?:the\s+)?(?:option|choice|answer)(?:\s+is)?(?:\s*:\s*|\s+|(?=\()))?"
                     r"\(?([a-z])(?:\s*[.):]\s*(.*)|\)?$)", re.IGNORECASE | re.DOTALL)
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
# A number: thousands separated by commas ("1,000") or plain digits, with an optional decimal part.
_NUMBER = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?!\d)|[-+]?\.\d+"
_NUMBER_RE = re.compile(_NUMBER)
_CURRENCY = {"$": "dollar", "€": "euro", "£": "pound"}
# The whole text is one quantity: optional currency sign, a number, an optional unit of at most three words.
_QUANTITY = re.compile(rf"^(?P<cur>[$€£])?\s*(?P<num>{_NUMBER})\s*"
                       r"(?P<unit>(?:%|°|[a-z]+\.?)(?:\s+[a-z]+\.?){0,2})?$")
_NUMBER_WORDS = {word: str(i) for i, word in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
_NUMBER_WORDS.update({"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70",
                      "eighty": "80", "ninety": "90", "hundred": "100"})
_NUMBER_WORD_RE = re.compile(r"\b(?:" + "|".join(_NUMBER_WORDS) + r")\b")
_UNIT_ALIASES = {
    "%": "percent", "per cent": "percent", "percentage": "percent",
    "meter": "m", "meters": "m", "metre": "m", "metres": "m",
    "cm": "cm", "centimeter": "cm", "centimeters": "cm", "centimetre": "cm", "centimetres": "cm",
    "mm": "mm", "millimeter": "mm", "millimeters": "mm", "km": "km", "kilometer": "km", "kilometers": "km",
    "kg": "kg", "kilogram": "kg", "kilograms": "kg", "g": "g", "gram": "g", "grams": "g",
    "s": "s", "sec": "s", "second": "s", "seconds": "s", "min": "min", "minute": "min", "minutes": "min",
    "h": "h", "hr": "h", "hrs": "h", "hour": "h", "hours": "h", "°": "degree", "degrees": "degree",
    "usd": "dollar", "dollars": "dollar", "eur": "euro", "euros": "euro", "gbp": "pound", "pounds": "pound",
}
_YES_NO = {"yes": "yes", "true": "yes", "no": "no", "false": "no"}
# Words that reverse or exclude what is said next to them ("no" is left out: it is also the answer "no"); the
# apostrophe-less contractions are those a model writes ("dont", "isnt"), never other English words.
_NEGATION_WORDS = (
    "not never neither nor none nothing nobody nowhere cannot without hardly but except besides instead unlike "
    "excluding apart other\\s+than rather\\s+than wrong incorrect untrue dont doesnt didnt isnt arent wasnt werent "
    "cant couldnt wouldnt shouldnt wont hasnt havent hadnt aint mustnt").split()
# Words and signs that make a number a bound or an estimate ("more than 5", "about 5", "5+", "~5", ">= 5"), or
# change its sign in words ("minus 5": only a sign before the digits is read)
_BOUND_WORDS = (
    "more less fewer greater larger smaller higher lower over under above below least most almost nearly about around "
    "approximately approx roughly circa up\\s+to or\\s+so minus negative plus").split()
_BOUND_SIGNS = r"[<>≤≥≈~±]|\d\s*\+"
_HEDGE_WORDS = "maybe perhaps possibly unsure uncertain unclear".split()


def _any_word(words: list[str]) -> str:
    return r"\b(?:" + "|".join(words) + r")\b"


_NEGATION = re.compile(_any_word(_NEGATION_WORDS) + r"|n't\b")
_BOUND = re.compile(_any_word(_BOUND_WORDS) + "|" + _BOUND_SIGNS)
_HEDGE = re.compile(_any_word(_HEDGE_WORDS))
# all of them, "no" included: one scan of a number answer
_NUMBER_QUALIFIER = re.compile(_any_word([*_NEGATION_WORDS, "no", *_BOUND_WORDS, *_HEDGE_WORDS]) + r"|n't\b|"
                               + _BOUND_SIGNS)
# A yes/no word that opens the answer as a clause of its own: "No.", "Yes, it is open", "No - it isn't"
_LEADING_YES_NO = re.compile(r"^[\W_]*(yes|no|true|false)\s*(?:[,.;:!\-–—]|$)")
_FOLDED = str.maketrans({"\u2212": "-", "\u2019": "'"})  # the minus sign (NFKC keeps it), the typographic apostrophe


def _fold(text: str) -> str:
    """NFKC, lower-cased, with the minus sign U+2212 as ``-`` and ``’`` as ``'``."""
    return unicodedata.normalize("NFKC", text).lower().translate(_FOLDED)


def _qualified_number(text: str) -> bool:
    """Whether ``text`` says its number under a negation (``no`` included), a comparison or a hedge."""
    return bool(_NUMBER_QUALIFIER.search(_fold(text)))


def _strip_edges(text: str) -> str:
    return _EDGE_JUNK.sub("", " ".join(text.split()))


def normalize_text(text: str) -> str:
    """Lower-case, drop punctuation (but not decimal points or thousands commas inside numbers), articles and
    extra whitespace: ``"The Red-Car!"`` -> ``"red car"``."""
    text = _fold(text)
    text = re.sub(r"(?<!\d)[.,]|[.,](?!\d)", " ", text)  # keep "3.5" and "1,000", drop other dots and commas
    text = re.sub(r"[^\w\s.,]", " ", text.replace("_", " "))
    return " ".join(_ARTICLES.sub(" ", text).split())


def _words_to_digits(text: str) -> str:
    return _NUMBER_WORD_RE.sub(lambda m: _NUMBER_WORDS[m.group(0)], text)


def _number(text: str) -> Decimal:
    """The exact value of a number as :data:`_NUMBER` matches it (any length: never rounded, never infinite)."""
    return Decimal(text.replace(",", ""))


def _canonical(number: Decimal) -> str:
    """``number`` written without exponent, trailing zeros or a negative zero: 3.0 -> "3", 1E+2 -> "100"."""
    if number == 0:
        return "0"
    return format(number.normalize(Context(prec=max(len(number.as_tuple().digits), 1))), "f")


def _trim(text: str) -> str:
    """Lower-cased text without surrounding whitespace, quotes, brackets or sentence punctuation."""
    text = _fold(text).strip().strip("\"'()[]{}!?;:,").rstrip(".")
    return _words_to_digits(" ".join(text.split()))


def _quantity(text: str) -> tuple[Decimal, str | None] | None:
    """``(value, canonical unit or None)`` when the whole text is one number with an optional unit, else None (also
    for a number under a negation, a comparison or a hedge: "5 or more", "5 is wrong")."""
    match = _QUANTITY.match(_trim(text))
    if not match or _qualified_number(text):
        return None
    unit = match.group("unit") or _CURRENCY.get(match.group("cur") or "")
    if unit:
        unit = unit.rstrip(".")
        unit = _UNIT_ALIASES.get(unit, unit[:-1] if len(unit) > 3 and unit.endswith("s") else unit)
    return _number(match.group("num")), unit or None


def _match_number(prediction: str, truth: tuple[Decimal, str | None]) -> bool | None:
    value, unit = truth
    if _qualified_number(prediction):  # "not 5", "it's not five", "more than 5", "about 5", "5+"
        return None
    quantity = _quantity(prediction)
    if quantity is not None:
        if quantity[0] != value:
            return False
        return None if unit and quantity[1] and unit != quantity[1] else True
    # A sentence around the number ("There are 3 cars."): it must name exactly one number.
    numbers = {_number(n) for n in _NUMBER_RE.findall(_trim(prediction))}
    if not numbers:
        return None
    return numbers == {value}


def _yes_no_said(prediction: str) -> str | None:
    """"yes" or "no" when ``prediction`` says that one, "both" when it says both, None when it says neither or
    undecidably. A leading yes/no word decides when nothing after it says yes/no again ("No, it is not open.");
    otherwise a negation anywhere ("not yes", "I wouldn't say no") leaves it undecided, and so does a hedge."""
    words = normalize_text(prediction).split()
    said = {_YES_NO[word] for word in words if word in _YES_NO}
    folded = _fold(prediction)
    if not said or _HEDGE.search(folded):
        return None
    leading = _LEADING_YES_NO.match(folded)
    if leading and not any(word in _YES_NO for word in words[1:]):
        return _YES_NO[leading.group(1)]
    if _NEGATION.search(folded):
        return None
    return said.pop() if len(said) == 1 else "both"


def _match_yes_no(prediction: str, truth: str) -> bool | None:
    said = _yes_no_said(prediction)
    return None if said is None else said == truth


def match_free_form(prediction: str | None, truth: str) -> bool | None:
    """True/False when a rule decides whether ``prediction`` says ``truth``; None when no rule can tell.

    Rules by the form of ``truth``: a number (optionally with a unit or currency) must be the only number the
    prediction names, with the same unit when both give one, and not under a negation, a bound or a hedge ("not 5",
    "more than 5", "about 5": undecided); yes/no must be the only yes/no word said, not negated (a leading "No, ..."
    decides); any other text must be equal after :func:`normalize_text`.
    """
    if prediction is None or not normalize_text(prediction):
        return False
    quantity = _quantity(truth)
    if quantity is not None:
        return _match_number(prediction, quantity)
    yes_no = _YES_NO.get(normalize_text(truth))
    if yes_no is not None:
        return _match_yes_no(prediction, yes_no)
    return True if normalize_text(prediction) == normalize_text(truth) else None


def _option_matches(text: str, options: Sequence[str]) -> set[str]:
    """Letters of the options that ``text`` says (by :func:`match_free_form`)."""
    return {letter for letter, option in zip(LETTERS, options) if match_free_form(text, option) is True}


def extract_choice(answer: str | None, options: Sequence[str]) -> str | None:
    """Map a final answer ("B", "(B)", "B. red", "Option B", "The Red.", ...) to an option letter.

    Every reading of the answer (a letter, the text after a letter, the whole text as an option) adds
    its option; the letter is returned only when exactly one option matches, else None.
    """
    if len(options) > len(LETTERS):
        raise ValueError(f"at most {len(LETTERS)} options can be lettered, got {len(options)}")
    if answer is None:
        return None
    letters = LETTERS[: len(options)]
    candidates = _option_matches(answer, options)
    match = _LETTER.match(_strip_edges(answer))
    if match:
        letter, rest = match.group(1).upper(), match.group(2)
        rest_options = _option_matches(rest, options) if rest else set()
        # an out-of-range letter may still be an option's text, e.g. option "x"; "(B) is not correct" negates B
        if letter in letters and not (rest and _NEGATION.search(_fold(rest)) and rest_options != {letter}):
            candidates |= {letter} | rest_options
    return candidates.pop() if len(candidates) == 1 else None


def grade(prediction: str | None, sample: Sample) -> bool | None:
    """Whether ``prediction`` answers ``sample`` correctly by rule; None when no rule can tell.

    With options the answer must resolve to the correct letter (:func:`extract_choice`); a non-empty answer
    that resolves to no single option is undecided. Without options see :func:`match_free_form`.
    """
    if not sample.options:
        return match_free_form(prediction, sample.answer)
    choice = extract_choice(prediction, sample.options)
    if choice is None:
        return None if prediction is not None and normalize_text(prediction) else False
    return choice == sample.answer


def is_correct(prediction: str | None, sample: Sample, judge: Judge | None = None) -> bool:
    """:func:`grade`, with undecided answers settled by ``judge`` when one is given (else counted wrong)."""
    verdict = grade(prediction, sample)
    if verdict is None and judge is not None and prediction is not None:
        return judge(sample.question, sample.answer_text, prediction)
    return bool(verdict)


def answer_key(prediction: str | None, sample: Sample) -> str | None:
    """A canonical form of ``prediction`` for comparing two answers to the same question (None: no answer).

    The option letter with options; otherwise the number (with its unit), yes/no, or the normalised text.
    """
    if sample.options:
        return extract_choice(prediction, sample.options)
    if prediction is None or not normalize_text(prediction):
        return None
    quantity = _quantity(prediction)
    if quantity is not None:
        return f"{_canonical(quantity[0])} {quantity[1] or ''}".strip()
    said = _yes_no_said(prediction) if normalize_text(sample.answer) in _YES_NO else None
    if said in ("yes", "no"):
        return said
    # a bound keeps its sign: "~5", "<5" and "5" are three answers
    return " ".join(_fold(prediction).split()) if _BOUND.search(_fold(prediction)) else normalize_text(prediction)
