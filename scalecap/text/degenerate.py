"""Degenerate model output: the failures every captioning run meets, found without a model.

Contrastive rating catches sentences the image does not support; it does not catch a caption that
loops, refuses, drifts into another language or stops mid-list. Peer tools meet these in practice
(repetition loops, "I'm sorry, I cannot", a Chinese reply to an English prompt, stock openings,
empty or truncated outputs); they are cheap to find from the text alone, so every generated text
of a run can be checked (first caption, answers, final caption).

Each check returns ``Hit`` values with a stable reason code and the numbers behind it, so that the
trace says why and a user can re-threshold offline. What to *do* about a hit (mark it, drop the
sentence, retry once) is the caller's decision: this module only looks.

Thresholds were set so that none of 436 real Qwen2.5-VL captions (218 MM-Vet images, first and
final captions, ``tests/data/mmvet_scalecap_captions.jsonl``) is hit; they are settings.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["CODES", "DegenerateConfig", "Hit", "check_text", "strip_stock_opening"]

#: Reason codes, stable across versions (they are written into records).
CODES = ("empty", "too_short", "too_long", "repetition", "refusal", "script_drift", "truncated", "stock_opening")

_WORD = re.compile(r"\w+(?:['’]\w+)?", re.UNICODE)
_REVERSED_LOOP = re.compile(r"\s*(.{2,40}?)\1{7,}", re.DOTALL)
_REFUSAL = re.compile(
    r"^\W*(?:i['’]?m\s+(?:sorry|afraid|unable)|i\s+am\s+(?:sorry|unable|not\s+able)|sorry,?\s+(?:but\s+)?i"
    r"|i\s+(?:can(?:not|['’]t)|could\s+not|won['’]t)\s+(?:help|assist|provide|describe|see|view|process|identify"
    r"|analy[sz]e|answer|comply|do\s+that)|as\s+an\s+ai\b|unfortunately,?\s+i\s+(?:can(?:not|['’]t)|am\s+unable))",
    re.IGNORECASE)
_STOCK = re.compile(
    r"^\s*(?:(?:the|this)\s+(?:image|picture|photo(?:graph)?)\s+(?:shows|depicts|displays|features|presents"
    r"|captures|showcases|is\s+of)|in\s+(?:the|this)\s+(?:image|picture|photo(?:graph)?),)\s*",
    re.IGNORECASE)
# Endings that no finished text has: a dangling conjunction, article, comma or list marker.
_DANGLING = re.compile(r"(?:[,;:(\-–*#]|\b(?:and|or|the|a|an|of|with|to|in|on|is|are))\s*$|\n\s*(?:[-*+]|\d+[.)])\s*$",
                       re.IGNORECASE)
# The same pattern reversed, matched at the start of the reversed text: it accepts exactly the texts
# that ``_DANGLING.search`` accepts (``\b`` is symmetric; ``$`` before a final newline is covered by
# the leading ``\s*``), without a search from every position of a long text (12 us on an answer).
_DANGLING_REVERSED = re.compile(
    r"\s*(?:[,;:(\-–*#]|(?:dna|ro|eht|a|na|fo|htiw|ot|ni|no|si|era)\b)|\s*(?:[-*+]|[.)]\d+)\s*\n", re.IGNORECASE)
# Sentence or line units for the run check (compiled once: ``re.split`` looks its cache up per call).
_UNITS = re.compile(r"(?<=[.!?])\s+|\n+")


@dataclass(frozen=True)
class Hit:
    """One finding: ``code`` (see CODES), a human-readable ``detail``, and the numbers behind it."""

    code: str
    detail: str
    value: float | None = None
    threshold: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class DegenerateConfig:
    """Thresholds (all settings; the defaults make no hit on the real captions named above)."""

    min_chars: int = 8
    max_chars: int = 60_000
    ngram: int = 4                    # repetition: word n-grams of this length
    min_words_for_ratio: int = 40     # the distinct-n-gram ratio is judged only on texts this long
    min_distinct_ratio: float = 0.35  # distinct n-grams / all n-grams below this: a loop
    max_run: int = 4                  # the same sentence (or line) this many times in a row: a loop
    max_foreign_share: float = 0.35   # letters outside the expected scripts, as a share of all letters
    scripts: tuple[str, ...] = ("LATIN", "GREEK")  # Greek letters appear in maths and science captions


def check_text(text: str, config: DegenerateConfig | None = None, *, truncated: bool = False,
               stock_opening: bool = False) -> list[Hit]:
    """Every degenerate trait of ``text``. ``truncated`` is the generator's own word (it stopped at
    max tokens); a dangling ending is reported too, because servers do not always say."""
    c = config or DegenerateConfig()
    stripped = text.strip()
    if not stripped:
        return [Hit("empty", "the text is empty")]
    hits: list[Hit] = []
    if len(stripped) < c.min_chars:
        hits.append(Hit("too_short", f"{len(stripped)} characters", len(stripped), c.min_chars))
    if len(stripped) > c.max_chars:
        hits.append(Hit("too_long", f"{len(stripped)} characters", len(stripped), c.max_chars))
    hits.extend(_repetition(stripped, c))
    if _REFUSAL.search(stripped):
        hits.append(Hit("refusal", f"starts as a refusal: {stripped[:40]!r}"))
    share = _foreign_share(stripped, c.scripts)
    if share > c.max_foreign_share:
        hits.append(Hit("script_drift", f"{share:.0%} of the letters are outside {'/'.join(c.scripts)}",
                        round(share, 4), c.max_foreign_share))
    if truncated:
        hits.append(Hit("truncated", "the generator stopped at its token limit"))
    elif _DANGLING_REVERSED.match(stripped[::-1]):
        hits.append(Hit("truncated", f"ends mid-sentence: {stripped[-20:]!r}"))
    if stock_opening and _STOCK.match(stripped):
        hits.append(Hit("stock_opening", f"opens with {_STOCK.match(stripped).group(0).strip()!r}"))
    return hits


def strip_stock_opening(text: str) -> str:
    """``"The image shows a cat."`` -> ``"A cat."``; other texts unchanged."""
    m = _STOCK.match(text)
    if not m:
        return text
    rest = text[m.end():]
    return rest[:1].upper() + rest[1:] if rest else text


def _repetition(text: str, c: DegenerateConfig) -> list[Hit]:
    """At most one repetition hit: the most specific evidence found (a run of identical sentences,
    then a low share of distinct n-grams, then a short unit repeated to the end)."""
    run = _longest_run(text)
    if run[0] >= c.max_run:
        return [Hit("repetition", f"{run[1]!r} {run[0]} times in a row", run[0], c.max_run)]
    words = _lower_words(text)
    if len(words) >= max(c.min_words_for_ratio, c.ngram + 1):
        grams = _ngrams(words, c.ngram)
        ratio = len(set(grams)) / len(grams)
        if ratio < c.min_distinct_ratio:
            top = " ".join(Counter(grams).most_common(1)[0][0])
            return [Hit("repetition", f"only {ratio:.0%} of {c.ngram}-word sequences are distinct "
                                      f"(most repeated: {top!r})", round(ratio, 4), c.min_distinct_ratio)]
    # A loop inside one unending sentence: the same short unit again and again at the end.
    # Searched on the reversed text, anchored at its start: the same texts match as with a search
    # for ``(unit)\1{7,}\s*$`` from every position (the unit comes out as its shortest rotation at
    # the end), at a fraction of the cost on long texts with no loop.
    tail = _REVERSED_LOOP.match(text[-2000:][::-1])
    if tail and tail.group(1).strip():
        return [Hit("repetition", f"{tail.group(1)[::-1]!r} repeated to the end")]
    return []


def _lower_words(text: str) -> list[str]:
    """The words of ``text``, lower-cased. An ASCII text is lowered whole first (the same words: ASCII
    lowering keeps every character's class and the length); other texts word by word, because
    lowering can change a non-ASCII text's length and so its word boundaries."""
    if text.isascii():
        return _WORD.findall(text.lower())
    return [w.lower() for w in _WORD.findall(text)]


def _ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    """Every run of ``n`` consecutive words, in order (zipped shifted views, not a slice per start)."""
    if n < 1:
        return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return list(zip(*(words[k:] for k in range(n))))


def _longest_run(text: str) -> tuple[int, str]:
    """The longest run of identical consecutive sentences or lines (normalised), and its unit."""
    units = [u.strip().lower() for u in _UNITS.split(text) if u.strip()]
    best, unit, n = 1, units[0] if units else "", 1
    for prev, cur in zip(units, units[1:]):
        n = n + 1 if cur == prev and len(_WORD.findall(cur)) >= 2 else 1
        if n > best:
            best, unit = n, cur
    return best, unit[:60]


def _foreign_share(text: str, scripts: tuple[str, ...]) -> float:
    if text.isascii():  # ASCII letters are Latin: the common case, without a name lookup per letter
        return 0.0 if "LATIN" in scripts else (1.0 if any(ch.isalpha() for ch in text) else 0.0)
    letters = foreign = 0
    for ch in text:
        if not ch.isalpha():
            continue
        letters += 1
        if not _in_scripts(ch, scripts):
            foreign += 1
    return foreign / letters if letters else 0.0


@functools.lru_cache(maxsize=8192)
def _in_scripts(ch: str, scripts: tuple[str, ...]) -> bool:
    name = unicodedata.name(ch, "")
    return any(name.startswith(s) for s in scripts)
