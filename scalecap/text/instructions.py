"""Object instructions: parse the writer's output, plan the questions, constrain the decoder.

METHOD.md section 3, step 3. The writer answers the few-shot prompt with lines like
"Describe more details about the man." Real writers wander: they continue the few-shot pattern
with a new ``Sentence:``, add bullets, numbers or bold, echo the position template, or repeat one
line until the token limit. The parser keeps only well-formed instruction lines and never cuts a
name at an inner period ("U.S. flag"). Deduplication is order-preserving (the reference code used a
``set``, so its questions changed from run to run), and the budget N cuts in sentence order.
"""

from __future__ import annotations

import re

__all__ = [
    "MAX_NAME_CHARS",
    "OBJECT_TEMPLATE",
    "POSITION_TEMPLATE",
    "first_sentence_of",
    "instruction_regex",
    "object_key",
    "parse_instructions",
    "plan_objects",
]

OBJECT_TEMPLATE = "Describe more details about the {}."
POSITION_TEMPLATE = "Describe more details about the position of the {}."

# Longer "names" are degenerate generations (a run-on line), not objects.
MAX_NAME_CHARS = 80

_PHRASE = re.compile(r"describe\s+more\s+details?\s+about\s+", re.IGNORECASE)
_STOP = re.compile(r"^[\W_]*sentence\s*:", re.IGNORECASE | re.MULTILINE)
_LINE_PREFIX = re.compile(
    r"^(?:\s+|[-*•+‣◦▪>]|\d{1,3}[.)]|\(\d{1,3}\)|[`*_\"“‘']+|instructions?\s*:)",
    re.IGNORECASE,
)
_ARTICLE = re.compile(r"^(?:the|a|an)\s+(?=\S)", re.IGNORECASE)
_POSITION = re.compile(r"^position\s+of\s+(?:the\s+|a\s+|an\s+)?(?=\S)", re.IGNORECASE)
_TRAILING = ".,;:!?"
_QUOTE_PAIRS = {'"': '"', "'": "'", "“": "”", "‘": "’", "`": "`", "«": "»"}
_CLOSING_QUOTES = {closer: opener for opener, closer in _QUOTE_PAIRS.items()}
_ACRONYM_TAIL = re.compile(r"(?:^|\s)(?:[A-Za-z]\.)+[A-Za-z]$")
_PLACEHOLDER = re.compile(r"^[\[<{(].*[\]>})]$")


def parse_instructions(text: str, truncated: bool = False) -> list[str]:
    """Object names, in order and without duplicates, from the writer's output for one sentence.

    ``truncated``: the output stopped at its token limit, so an unterminated last instruction is a
    cut name ("advertisemen") and is dropped rather than asked about."""
    stop = _STOP.search(text)
    body = text[: stop.start()] if stop else text
    lines = body.split("\n")
    names: list[str] = []
    seen: set[str] = set()
    for index, raw in enumerate(lines):
        line = _strip_line_markup(raw)
        if not _PHRASE.match(line):
            continue
        pieces = _PHRASE.split(line)[1:]
        last_line = index == len(lines) - 1
        for piece_index, piece in enumerate(pieces):
            name = _clean_name(piece)
            if not name:
                continue
            key = object_key(name)
            unterminated = last_line and piece_index == len(pieces) - 1 and not _terminated(piece)
            if unterminated and (truncated or any(k.startswith(key) for k in seen)):
                continue  # a line cut off by the token limit
            if key not in seen:
                seen.add(key)
                names.append(name)
    return names


def object_key(name: str) -> str:
    """The identity of an object for deduplication: case-, article- and spacing-insensitive."""
    key = " ".join(name.casefold().split()).rstrip(_TRAILING).rstrip()
    return _ARTICLE.sub("", key)


def plan_objects(per_sentence: list[list[str]], budget: int | None) -> list[str]:
    """The objects to ask about: first spelling of each, sentence order, at most ``budget``.

    METHOD over the paper: the paper's N counts object *and* position instructions; here N counts
    object instructions, each bringing its position twin (N = all is the same either way)."""
    if budget is not None and budget < 0:
        raise ValueError(f"budget must be None (all) or >= 0, got {budget}")
    planned: list[str] = []
    seen: set[str] = set()
    for names in per_sentence:
        for name in names:
            if budget is not None and len(planned) >= budget:
                return planned
            key = object_key(name)
            if key and key not in seen:
                seen.add(key)
                planned.append(name)
    return planned


def first_sentence_of(per_sentence: list[list[str]]) -> dict[str, int]:
    """For each object key, the index of the sentence that first named it (the order of the cut)."""
    first: dict[str, int] = {}
    for index, names in enumerate(per_sentence):
        for name in names:
            first.setdefault(object_key(name), index)
    return first


def instruction_regex(max_lines: int | None = None) -> str:
    """A decoding constraint that admits exactly the outputs the parser turns into whole names.

    Each line is one object instruction ending in a newline; the name may hold any letter or digit,
    spaces, periods, hyphens and apostrophes ("U.S. flag", "thought-provoking text", "No. 5 bus"),
    starts and ends with a letter or digit (the final period is the template's, so "U.S." is
    written "U.S" + "." and parsed back with its period) and is at most ``MAX_NAME_CHARS`` long, the
    parser's own limit. Zero lines are allowed: a sentence that names no concrete object is not
    forced to invent one. ``max_lines`` caps the lines at what the budget can still use (one
    sentence can never contribute more than N objects); ``None`` leaves them to ``max_tokens``.

    Kept to the regex subset that ``re``, xgrammar, outlines and llguidance agree on (literals,
    classes, bounded repeats, plain groups, ``*``).
    """
    if max_lines is not None and max_lines < 0:
        raise ValueError(f"max_lines must be None or >= 0, got {max_lines}")
    edge = "A-Za-z0-9À-ÖØ-öø-ÿ"
    name = f"[{edge}]([{edge} .'-]{{0,{MAX_NAME_CHARS - 2}}}[{edge}])?"
    line = OBJECT_TEMPLATE.replace(".", r"\.").format(name)
    repeat = "*" if max_lines is None else f"{{0,{max_lines}}}"
    return f"({line}\\n){repeat}"


def _strip_line_markup(line: str) -> str:
    """Remove bullets, numbering, emphasis, quotes and an "Instructions:" label before the text."""
    previous = None
    while previous != line:
        previous = line
        line = _LINE_PREFIX.sub("", line, count=1)
        line = _unquote(line.strip())
    return line


def _clean_name(piece: str) -> str:
    name = piece.replace("**", "").replace("__", "").strip().lstrip("*_` ")
    name = _trim_end(_ARTICLE.sub("", name))
    if _ACRONYM_TAIL.search(name) and _terminated(piece):
        name += "."  # "the U.S." keeps its final period
    name = _ARTICLE.sub("", _unquote(name))
    name = _POSITION.sub("", name)  # the position template echoed back
    name = _unquote(_ARTICLE.sub("", name)).strip()
    if (
        not name
        or len(name) > MAX_NAME_CHARS
        or not any(c.isalnum() for c in name)
        or _PLACEHOLDER.match(name)
    ):
        return ""
    return name


def _trim_end(name: str) -> str:
    """Strip final punctuation, emphasis and quotes that close nothing inside the name."""
    while True:
        trimmed = name.rstrip(_TRAILING + " *_`")
        if trimmed and trimmed[-1] in _CLOSING_QUOTES and _unbalanced(trimmed):
            trimmed = trimmed[:-1]
        if trimmed == name:
            return name
        name = trimmed


def _unbalanced(text: str) -> bool:
    closer = text[-1]
    opener = _CLOSING_QUOTES[closer]
    if opener == closer:
        return text.count(closer) % 2 == 1
    return text.count(opener) < text.count(closer)


def _unquote(text: str) -> str:
    """Drop quotes around the whole text, but not quotes that belong to a name inside it."""
    while len(text) >= 2 and _QUOTE_PAIRS.get(text[0]) == text[-1] and text[-1] not in text[1:-1]:
        text = text[1:-1].strip()
    return text


def _terminated(piece: str) -> bool:
    return piece.rstrip().rstrip("*_`\"'”’").endswith((".", "!", "?"))
