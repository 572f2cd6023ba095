"""Quoted text in a caption, checked against what OCR read in the image.

A caption that says a sign reads "OPEN 24 HOURS" makes a claim that can be verified without any
language model: real OCR either found those words in the image or it did not. Contrastive rating
cannot catch an invented quote well (the language prior of a plausible sign text is high with or
without the image); OCR can. Matching is fuzzy because OCR drops and confuses characters: a quote is
*supported* when some window of the OCR words, as long as the quote, is at least ``threshold``
similar to it (difflib's ratio on normalised text).

Pure functions: the OCR itself lives in ``scalecap.tools.ocr``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from difflib import SequenceMatcher

__all__ = ["QuoteCheck", "check_quotes", "find_quotes", "quote_support"]

# Straight and typographic double quotes, and single quotes that are not apostrophes (a quote
# opens after a non-letter and closes before a non-letter).
_QUOTE = re.compile(r'"([^"\n]{1,200})"|“([^”\n]{1,200})”|‘([^’\n]{1,200})’|(?<![\w])\'([^\'\n]{1,200})\'(?![\w])')
_NORM = re.compile(r"[^\w]+", re.UNICODE)
#: Quotes shorter than this (after normalisation) say too little to check ("x", "2").
MIN_CHARS = 3


@dataclass(frozen=True)
class QuoteCheck:
    quote: str
    similarity: float
    supported: bool


def find_quotes(text: str) -> list[str]:
    """The quoted strings of ``text``, in order."""
    return [next(g for g in m.groups() if g is not None) for m in _QUOTE.finditer(text)]


def _normalise(text: str) -> list[str]:
    return [w for w in _NORM.split(text.lower()) if w]


def quote_support(quote: str, ocr_text: str) -> float:
    """Best similarity (0..1) of ``quote`` to any run of OCR words of about its length."""
    q = _normalise(quote)
    o = _normalise(ocr_text)
    if not q or not o:
        return 0.0
    target = " ".join(q)
    best = 0.0
    for width in {max(1, len(q) - 1), len(q), len(q) + 1}:
        for i in range(max(1, len(o) - width + 1)):
            window = " ".join(o[i:i + width])
            matcher = SequenceMatcher(None, target, window, autojunk=False)
            if matcher.real_quick_ratio() <= best or matcher.quick_ratio() <= best:
                continue
            best = max(best, matcher.ratio())
            if best == 1.0:
                return best
    return best


def check_quotes(text: str, ocr_text: str, threshold: float = 0.8) -> list[QuoteCheck]:
    """Each checkable quote of ``text`` with its best similarity to the OCR text."""
    out = []
    for quote in find_quotes(text):
        if len("".join(_normalise(quote))) < MIN_CHARS:
            continue
        sim = quote_support(quote, ocr_text)
        out.append(QuoteCheck(quote=quote, similarity=round(sim, 4), supported=sim >= threshold))
    return out
