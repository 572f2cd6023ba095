"""Turning free model text into something scoreable: an option letter, a yes/no, a judge's grade.

All rules are pure functions of the text so that they can be tested on known outputs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# ----------------------------------------------------------------------------- options

_MD = re.compile(r"[*_`#]+")
_WHOLE_LETTER = re.compile(r"\(?\s*([A-Za-z])\s*\)?\s*[.):]?")
_CUE = re.compile(r"(?i:\b(?:answer|option|choice)\b(?:\s+(?:is|would\s+be|should\s+be))?\s*[:=]?\s*(?:(?i:option|choice)\s*)?)"
                  r"\(?([A-Z])\)?(?![A-Za-z0-9])")
_LEADING = re.compile(r"^\s*\(?([A-Z])(?:\)|\.|:)(?:\s|$)")
_NOT_AFTER_ARTICLE = frozenset({"and", "or", "is", "was", "seems", "because", "since", "as", "but", "nor"})
_BARE = re.compile(r"(?<![A-Za-z0-9'’])([A-Z])(?![A-Za-z0-9'’])")


@dataclass(frozen=True)
class Extraction:
    value: str | None  # a letter (multiple choice) or "yes"/"no"
    how: str  # which rule found it, or why nothing was found


def extract_option(text: str, options: dict[str, str]) -> Extraction:
    """The option a free-text answer chooses, by rule (no model). ``options``: letter -> text.

    In order: the whole answer is a letter (``B``, ``(B)``, ``B.``); an explicit cue (``answer is
    B``, ``Option: B``); a leading ``B.``/``(B)``; exactly one standalone capital option letter
    (``A``/``I`` followed by a lowercase word are read as the article/pronoun); exactly one option
    text found in the answer (an option whose text only occurs inside a longer matching option's
    text does not count). Several different letters, or none, give ``None``.
    """
    if not text or not text.strip():
        return Extraction(None, "empty answer")
    clean = _MD.sub("", text).strip()
    letters = set(options)
    m = _WHOLE_LETTER.fullmatch(clean)
    if m and m.group(1).upper() in letters:
        return Extraction(m.group(1).upper(), "letter")
    cued = {g for g in _CUE.findall(clean) if g in letters}
    if len(cued) == 1:
        return Extraction(cued.pop(), "cue")
    if len(cued) > 1:
        return Extraction(None, f"several options named ({', '.join(sorted(cued))})")
    m = _LEADING.match(clean)
    if m and m.group(1) in letters:
        return Extraction(m.group(1), "leading letter")
    bare = set()
    for m in _BARE.finditer(clean):
        letter = m.group(1)
        if letter not in letters:
            continue
        nxt = re.match(r"\s+([a-z]+)", clean[m.end():])
        if letter in ("A", "I") and nxt and nxt.group(1) not in _NOT_AFTER_ARTICLE:
            continue  # "A dog ...", "I think ..."; but "A and B", "A is right" name options
        bare.add(letter)
    if len(bare) == 1:
        return Extraction(bare.pop(), "standalone letter")
    if len(bare) > 1:
        return Extraction(None, f"several option letters ({', '.join(sorted(bare))})")
    low = " " + re.sub(r"\s+", " ", clean.lower()) + " "
    found = {}
    for k, v in options.items():
        t = re.sub(r"\s+", " ", v.strip().lower().rstrip("."))
        if t and re.search(r"(?<![a-z0-9])" + re.escape(t) + r"(?![a-z0-9])", low):
            found[k] = t
    found = {k: t for k, t in found.items() if not any(t != u and t in u for u in found.values())}
    if len(found) == 1:
        return Extraction(next(iter(found)), "option text")
    if len(found) > 1:
        return Extraction(None, f"several option texts ({', '.join(sorted(found))})")
    return Extraction(None, "no option found")


def extract_yes_no(text: str) -> Extraction:
    """``yes``/``no`` from an answer: its first word, else the only one of the two it contains."""
    if not text or not text.strip():
        return Extraction(None, "empty answer")
    low = _MD.sub("", text).strip().lower()
    m = re.match(r"[\s\"'(]*(yes|no)\b", low)
    if m:
        return Extraction(m.group(1), "first word")
    kinds = set(re.findall(r"\b(yes|no)\b", low))
    if len(kinds) == 1:
        return Extraction(kinds.pop(), "only yes/no word")
    return Extraction(None, "both yes and no" if kinds else "no yes/no found")


# ----------------------------------------------------------------------------- judge grades

_LEAD_NUMBER = re.compile(r"^[\s|>*_`]*(?:(?i:correctness|score|grade)\s*[:=]?\s*)?(\d+(?:\.\d+)?|\.\d+)(?![\d])")
_ANY_NUMBER = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?|\.\d+)(?![\d])")


@dataclass(frozen=True)
class Grade:
    score: float | None
    reason: str  # "ok" or why no score was read


def parse_grade(text: str) -> Grade:
    """A correctness score in [0, 1] from a judge's reply.

    The reply should be just the number. Accepted: a number at the start (after table pipes,
    markdown or a ``Correctness:`` label), else the only number anywhere in the reply. Refused,
    with the reason: no number, a number outside [0, 1], several numbers and none at the start.
    """
    if text is None or not text.strip():
        return Grade(None, "empty reply")
    m = _LEAD_NUMBER.match(text)
    if m:
        return _in_range(float(m.group(1)), m.group(1))
    nums = _ANY_NUMBER.findall(text)
    if not nums:
        return Grade(None, f"no number in reply {_excerpt(text)}")
    if len(nums) > 1:
        return Grade(None, f"several numbers and none first in reply {_excerpt(text)}")
    return _in_range(float(nums[0]), nums[0])


def _in_range(x: float, raw: str) -> Grade:
    if 0.0 <= x <= 1.0:
        return Grade(x, "ok")
    return Grade(None, f"score {raw} outside [0, 1]")


def _excerpt(text: str, n: int = 60) -> str:
    t = re.sub(r"\s+", " ", text).strip()
    return repr(t if len(t) <= n else t[: n - 1] + "…")
