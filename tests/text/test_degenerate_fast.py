"""The degenerate checks' fast paths decide exactly as the plain forms they replace.

Each fast path (the reversed dangling-ending match, whole-text lowering of ASCII texts, zipped
n-grams) is compared with the plain computation on the 436 real captions, on every ending of
them, and on random texts built from the characters the patterns care about (non-ASCII ones too).
"""

import json
import random
from pathlib import Path

import pytest

from scalecap.text import degenerate as d

DATA = Path(__file__).resolve().parent.parent / "data"
ROWS = [json.loads(line) for line in (DATA / "mmvet_scalecap_captions.jsonl").read_text().splitlines()]
CAPTIONS = [row[f] for row in ROWS for f in ("ori_caption", "final_caption")]

# What the patterns look at: markers, digits (also non-ASCII ones), spaces of every kind, the
# dangling words inside longer words, apostrophes, letters whose lowering changes the length.
PIECES = [" ", "  ", "\n", "\n\n", "\t", "\u00a0", "\u2003", ",", ";", ":", "(", "-", "–", "*", "#", "+", ".", ")",
          "1", "12", "٣", "and", "AND", "band", "or", "for", "the", "a", "an", "of", "with", "to", "in", "on",
          "is", "are", "cat", "İ", "ß", "Σ", "don't", "it’s", "x", "_", "é"]


def random_texts(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(PIECES) for _ in range(rng.randint(0, 12))) for _ in range(n)]


def endings(text: str, longest: int = 30) -> list[str]:
    return [text[:i] for i in range(max(0, len(text) - longest), len(text) + 1)]


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    texts = CAPTIONS + random_texts(20_000)
    for caption in CAPTIONS[:60]:
        texts.extend(endings(caption))
    texts += ["Key elements:\n- A red bicycle\n-", "The menu:\n1. Eggs\n  \n 23.", "Items:\n 4)", "x\n\u2003+ ",
              "A cat sits with", "A cat sits sandwith", "with", "and\n", "Sale: 20%\n٣٣.", "done."]
    return texts


def test_the_reversed_dangling_match_decides_as_the_search(corpus):
    for text in corpus:
        for t in (text, text.strip()):
            assert (d._DANGLING_REVERSED.match(t[::-1]) is not None) == (d._DANGLING.search(t) is not None), repr(t)


def test_lowered_words_are_the_words_lowered_one_by_one(corpus):
    for text in corpus:
        assert d._lower_words(text) == [w.lower() for w in d._WORD.findall(text)], repr(text)


@pytest.mark.parametrize("n", [1, 2, 4, 7])
def test_zipped_ngrams_are_the_sliced_ngrams(n):
    for text in CAPTIONS:
        words = d._lower_words(text)
        assert d._ngrams(words, n) == [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
