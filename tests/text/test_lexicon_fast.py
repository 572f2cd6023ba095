"""The lexicon tagger's remembered verdicts give the spans of the plain per-word judgement.

The plain form is the tagger as it was: every word of ``_WORD`` judged by ``_is_content``.
"""

import json
import random
from pathlib import Path

from scalecap.text import content as c

DATA = Path(__file__).resolve().parent.parent / "data"
CAPTIONS = [row[f] for row in map(json.loads, (DATA / "mmvet_scalecap_captions.jsonl").read_text().splitlines())
            for f in ("ori_caption", "final_caption")]
# Case, apostrophes (straight and curly), casefolding that changes the word (ß, ﬁ, İ), numbers.
PIECES = ["The", "THE", "the", "Don't", "don’t", "DON’T", "it's", "It’s", "there're", "cat's", "ß", "Straße", "ﬁsh",
          "İt", "ΣΑΣ", "3.5", "1,000", "a", "An", "with", "within", "x_y", " ", "\n", ", ", ". ", "'", "’", "-"]


def plain(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in c._WORD.finditer(text) if c._is_content(m.group())]


def random_texts(n: int, seed: int = 3) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(PIECES) for _ in range(rng.randint(0, 15))) for _ in range(n)]


def test_spans_equal_the_plain_judgement():
    tagger = c.LexiconTagger()
    texts = CAPTIONS + random_texts(5_000)
    for text in texts:
        assert tagger.content_spans(text) == plain(text), repr(text)
    assert tagger.content_spans_many(texts[:50]) == [plain(t) for t in texts[:50]]


def test_the_remembered_words_stay_bounded_and_right(monkeypatch):
    monkeypatch.setattr(c, "_KNOWN_WORDS", {})
    monkeypatch.setattr(c, "_KNOWN_WORDS_MAX", 10)
    tagger = c.LexiconTagger()
    for text in random_texts(500, seed=11) + CAPTIONS[:20]:
        assert tagger.content_spans(text) == plain(text)
        assert len(c._KNOWN_WORDS) <= 10
