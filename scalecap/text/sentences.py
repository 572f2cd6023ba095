"""Sentence splitting on the text itself, with character offsets.

The reference code split captions on single decoded tokens, so it missed ``.\\n``, ``."`` and
``).``, dropped unterminated trailing text and broke numbered lists (METHOD.md section 7). Rating
maps sentences to token spans through character offsets, so this splitter works on characters only
and guarantees a partition: every non-space character of the input lies in exactly one sentence.

The splitter is rule-based on purpose: captions are LLM markdown (bullets, headers, numbered steps,
LaTeX blocks), which statistical sentence splitters handle poorly, and a model dependency here would
make the rating step slow and non-deterministic across installs.

How cuts are found, per paragraph (a blank line always ends one):

* between two lines, unless the second line merely continues the first (it starts lowercase, is no
  list item, and the first line is no header and ends without terminal punctuation or colon);
* after terminal punctuation (``.``, ``!``, ``?``, ``…``, runs of them) plus closing quotes,
  brackets or emphasis markers, when whitespace and a plausible sentence start follow. Not after a
  list number that opens a sentence or follows a colon (``1.``), a title or Latin abbreviation
  (``Dr.``, ``e.g.``), or a numbering abbreviation before a digit (``No. 5``). A lowercase
  continuation also blocks the cut: that keeps ``etc. and``, ``U.S. flag`` and mid-sentence
  ellipses together;
* never inside display/inline LaTeX (``\\[..\\]``, ``\\(..\\)``, ``$$..$$``) or fenced code.

A dotted initialism (``U.S.``, ``D.C.``) or a personal initial (``John F. Kennedy``) before a
capitalised word is ambiguous: "the U.S. Army" goes on, "made in the U.S. The flag" does not. The
splitter cuts there only when the next word is one that typically opens a caption sentence (an
article, pronoun, demonstrative or leading preposition), so a proper noun after the initialism keeps
the sentence whole.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

__all__ = ["Sentence", "split_sentences"]


@dataclass(frozen=True)
class Sentence:
    """One sentence: ``text == original[start:end]``; both ends are non-space characters."""

    text: str
    start: int
    end: int


# Terminal punctuation, then closers that belong to the sentence, then whitespace or the end.
_TERMINAL = re.compile(r"[.!?…]+[\"'”’»)\]*_]*(?!\S)")
_CLOSERS = "\"'”’»)]*_"
_OPENERS = "\"'“‘«([*_`"

# Lines that always open a new sentence: bullets, numbered/lettered items, headers, quotes, tables.
_STRUCTURAL = re.compile(
    r"\s*(?:[-*+•‣◦▪]\s|\d{1,3}[.)](?:\s|$)|[A-Za-z][.)]\s|\(\d{1,3}\)\s"
    r"|#{1,6}(?:\s|$)|>|\|)"
)
_HEADER = re.compile(r"\s*(?:#{1,6}(?:\s.*)?|(?:\*\*|__)[^*_\n]+(?:\*\*|__)\s*:?)\s*$")
# A sentence consisting only of this is a list marker, so its period is not a sentence end.
_LIST_MARKER = re.compile(
    r"(?:#{1,6}\s+|[-*+•]\s+)?(?:\*\*|__)?(?:\d{1,3}|[A-Za-z]|[ivx]{1,4}|[IVX]{1,4})")
# Spans whose punctuation and newlines are never sentence ends: opener -> closer.
_PROTECTED = {"\\[": "\\]", "\\(": "\\)", "$$": "$$", "```": "```"}
_PROTECTED_OPENER = re.compile(r"\\\[|\\\(|\$\$|```")

# A period after these never ends a sentence (titles and Latin abbreviations; case matters).
_ABBREVIATIONS = frozenset(
    "Mr Mrs Ms Dr Prof St Mt Sgt Capt Lt Col Gen Rev Hon Gov Sen Rep Fig Figs Eq Eqs "
    "e.g E.g i.e I.e vs Vs cf Cf viz approx Approx incl esp".split()
)
# A period after these does not end a sentence when a number follows (``No. 5``, ``Dec. 25``).
_NUMBERING = frozenset(
    "No no Nos nos Vol vol p pp Sec Ch Art Op Ex Tab Table Jan Feb Mar Apr Jun Jul Aug Sep Sept "
    "Oct Nov Dec".split()
)
# Dotted initialisms without their final period ("U.S", "D.C", "e.g" is an abbreviation above).
_INITIALISM = re.compile(r"(?:[A-Za-z]\.)+[A-Za-z]")
# Words that open a new sentence after an ambiguous initialism or initial ("... the U.S. The flag").
_SENTENCE_OPENERS = frozenset(
    "The A An This That These Those It Its There Here They Their He His She Her We Our I You "
    "In On At Behind Above Below Beside Next Near Under Overall Additionally Also However Some "
    "Several Many Each Both All Two Three Four Five One To As If When While".split()
)
# After terminal punctuation, a sentence does not start with one of these.
_NO_START = frozenset(",;:=<>+)]}%&|~^/")


def split_sentences(text: str) -> list[Sentence]:
    """Split ``text`` into sentences covering all of its non-space characters, in order."""
    cuts: list[int] = [0]
    for para_start, para_end in _paragraphs(text):
        cuts.extend(_paragraph_cuts(text, para_start, para_end))
        cuts.append(para_end)
    cuts.append(len(text))
    sentences: list[Sentence] = []
    for begin, end in zip(cuts, cuts[1:]):
        while begin < end and text[begin].isspace():
            begin += 1
        while end > begin and text[end - 1].isspace():
            end -= 1
        if begin < end:
            sentences.append(Sentence(text[begin:end], begin, end))
    return sentences


def _lines(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Spans of the lines of ``text[start:end]``, without their newline."""
    spans = []
    while start <= end:
        newline = text.find("\n", start, end)
        stop = end if newline < 0 else newline
        spans.append((start, stop))
        start = stop + 1
    return spans


def _paragraphs(text: str) -> list[tuple[int, int]]:
    """Spans of maximal runs of non-blank lines."""
    paragraphs: list[tuple[int, int]] = []
    current: tuple[int, int] | None = None
    for start, stop in _lines(text, 0, len(text)):
        if text[start:stop].strip():
            current = (current[0], stop) if current else (start, stop)
        elif current:
            paragraphs.append(current)
            current = None
    if current:
        paragraphs.append(current)
    return paragraphs


def _paragraph_cuts(text: str, start: int, end: int) -> list[int]:
    spans = _protected_spans(text, start, end)
    span_starts = [a for a, _ in spans]

    def is_protected(pos: int) -> bool:
        index = bisect.bisect_left(span_starts, pos) - 1
        return index >= 0 and pos < spans[index][1]

    lines = _lines(text, start, end)
    cuts = [
        prev_end
        for (prev_start, prev_end), (next_start, next_end) in zip(lines, lines[1:])
        if not is_protected(prev_end)
        and not _continues(text[prev_start:prev_end], text[next_start:next_end])
    ]
    terminal_cuts: list[int] = []
    for match in _TERMINAL.finditer(text, start, end):
        if is_protected(match.start()):
            continue
        after = match.end()
        while after < end and text[after].isspace() and text[after] != "\n":
            after += 1
        if after >= end or text[after] == "\n":
            continue  # the line break decides
        line_index = bisect.bisect_right(cuts, match.start())
        line_cut = cuts[line_index - 1] if line_index else start
        sentence_start = max(line_cut, terminal_cuts[-1] if terminal_cuts else start)
        if _ends_sentence(text, sentence_start, match.start(), match.group(), _word_at(text, after)):
            terminal_cuts.append(match.end())
    return sorted(cuts + terminal_cuts)


def _protected_spans(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """LaTeX and code spans of ``text[start:end]``, leftmost first, each from an opener to its first
    closer. Linear: once an opener finds no closer, no later opener of that kind can (a lazy regex
    rescanned to the end from every unclosed opener, quadratic on "\\(a. " repeated)."""
    spans: list[tuple[int, int]] = []
    unclosed: set[str] = set()
    pos = start
    for m in _PROTECTED_OPENER.finditer(text, start, end):
        opener = m.group()
        if m.start() < pos or opener in unclosed:
            continue
        closer = _PROTECTED[opener]
        close = text.find(closer, m.end(), end)
        if close < 0:
            unclosed.add(opener)
            continue
        pos = close + len(closer)
        spans.append((m.start(), pos))
    return spans


def _continues(line: str, next_line: str) -> bool:
    """Whether ``next_line`` is a soft-wrapped continuation of ``line``'s sentence."""
    first = next_line.lstrip()[:1]
    if not first.islower() or _STRUCTURAL.match(next_line) or _HEADER.match(line):
        return False
    tail = line.rstrip().rstrip(_CLOSERS)
    return not tail or tail[-1] not in ".!?…:"


def _ends_sentence(text: str, sentence_start: int, at: int, punct: str, next_word: str) -> bool:
    following = next_word[:1]
    if following.islower() or following in _NO_START:
        return False
    if punct.rstrip(_CLOSERS) != ".":
        return True
    if punct == "." and at - sentence_start < 16:
        if _LIST_MARKER.fullmatch(text[sentence_start:at].strip()):
            return False
    word_start = at
    while word_start > sentence_start and not text[word_start - 1].isspace():
        word_start -= 1
    word = text[word_start:at].lstrip(_OPENERS)
    if word in _ABBREVIATIONS:
        return False
    if punct == "." and _is_initial(word, text, sentence_start, word_start):
        return next_word.strip(_OPENERS).rstrip(",.;:!?") in _SENTENCE_OPENERS
    if word.isdigit() and len(word) <= 3 and _previous_char(text, sentence_start, word_start) == ":":
        return False  # an inline list: "Steps: 1. Preheat."
    return not (word in _NUMBERING and (following.isdigit() or following == "#"))


def _word_at(text: str, at: int) -> str:
    """The whitespace-delimited word starting at ``at``."""
    stop = at
    while stop < len(text) and not text[stop].isspace():
        stop += 1
    return text[at:stop]


def _is_initial(word: str, text: str, floor: int, word_start: int) -> bool:
    """``U.S`` (a dotted initialism) or ``F`` after a capitalised name word (``John F.``)."""
    if _INITIALISM.fullmatch(word):
        return True
    if len(word) != 1 or not word.isupper():
        return False
    before = text[floor:word_start].split()
    return bool(before) and before[-1][:1].isupper() and before[-1].isalpha()


def _previous_char(text: str, floor: int, at: int) -> str:
    """The last non-space character of ``text[floor:at]``, or ""."""
    while at > floor and text[at - 1].isspace():
        at -= 1
    return text[at - 1] if at > floor else ""
