"""``rate_text`` computes only the content tokens' deltas; its results equal the full computation.

The reference below is the rating as it was: every token's delta from ``token_deltas``, then each
sentence's maximum over its content tokens. Compared exactly (same floats) on random token layouts:
tokens with leading spaces, tokens across a sentence boundary, empty (special) tokens, every mode,
with and without stored tokens.
"""

import math
import random
import re

import pytest

from scalecap.backends.base import TokenScores
from scalecap.rating import content_token_mask, rate_text, token_deltas
from scalecap.records import ScoredSentence, TokenDetail
from scalecap.text.content import LexiconTagger
from scalecap.text.sentences import split_sentences

WORDS = "a red bus stops the sky is blue and it rains on two old dogs near 3.5 km of road".split()


def reference(text, with_image, without_image, content_spans, mode, tau, store_tokens):
    deltas = token_deltas(with_image, without_image, mode)
    offsets = with_image.offsets
    content = content_token_mask(offsets, content_spans)
    out = []
    for sent in split_sentences(text):
        members = [t for t, (s, e) in enumerate(offsets) if s < sent.end and e > sent.start]
        scores = [deltas[i] for i in members if content[i]]
        score = max(scores) if scores else None
        tokens = [TokenDetail(text=text[offsets[i][0]:offsets[i][1]], start=offsets[i][0], end=offsets[i][1],
                              delta=deltas[i], content=content[i]) for i in members] if store_tokens else None
        out.append(ScoredSentence(text=sent.text, start=sent.start, end=sent.end, score=score,
                                  kept=score is not None and score > tau, tokens=tokens))
    return out


def random_case(rng: random.Random):
    sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 8))).capitalize() + rng.choice(".!?")
                 for _ in range(rng.randint(1, 5))]
    text = rng.choice([" ", "\n", "  "]).join(sentences)
    offsets = []
    for m in re.finditer(r"\s*\S+", text):  # a token keeps its leading space, as BPE tokens do
        start, end = m.span()
        if rng.random() < 0.3 and end - start > 2:  # split a word into two sub-word tokens
            cut = rng.randint(start + 1, end - 1)
            offsets += [(start, cut), (cut, end)]
        else:
            offsets.append((start, end))
        if rng.random() < 0.05:
            offsets.append((end, end))  # an empty special token
    if rng.random() < 0.3 and len(offsets) > 1:  # one token across a sentence boundary
        i = rng.randrange(len(offsets) - 1)
        offsets[i:i + 2] = [(offsets[i][0], offsets[i + 1][1])]
    n = len(offsets)

    def values():
        return tuple(rng.choice([-0.0, -1e-9, -30.0]) if rng.random() < 0.1 else -rng.random() * 6 for _ in range(n))

    ids = tuple(range(n))
    with_image = TokenScores(token_ids=ids, offsets=tuple(offsets), logprobs=values(), logits=values())
    without_image = TokenScores(token_ids=ids, offsets=tuple(offsets), logprobs=values(), logits=values())
    return text, with_image, without_image


@pytest.mark.parametrize("mode", ["prob", "logprob", "logit"])
@pytest.mark.parametrize("store_tokens", [False, True])
def test_rating_equals_the_full_computation(mode, store_tokens):
    rng = random.Random(f"{mode}-{store_tokens}")
    tagger = LexiconTagger()
    for _ in range(400):
        text, with_image, without_image = random_case(rng)
        spans = tagger.content_spans(text)
        tau = rng.choice([0.0, 0.1, 0.5, 2.0])
        got = rate_text(text, with_image, without_image, spans, mode, tau, store_tokens)
        want = reference(text, with_image, without_image, spans, mode, tau, store_tokens)
        assert [s.model_dump() for s in got.sentences] == [s.model_dump() for s in want]
        assert got.fallback == (bool(want) and not any(s.kept for s in want))


def test_nan_values_give_the_same_scores_as_the_full_computation():
    text = "A red bus stops. The sky is blue."
    offsets = ((0, 1), (1, 5), (5, 9), (9, 15), (15, 16), (16, 20), (20, 24), (24, 27), (27, 32), (32, 33))
    nan = math.nan
    a = TokenScores(token_ids=tuple(range(10)), offsets=offsets, logprobs=(-1, nan, -2, -0.5, -1, -1, nan, -1, -3, -1))
    b = TokenScores(token_ids=tuple(range(10)), offsets=offsets, logprobs=(-2,) * 10)
    spans = LexiconTagger().content_spans(text)
    got = rate_text(text, a, b, spans, "prob", 0.1)
    want = reference(text, a, b, spans, "prob", 0.1, False)
    assert [repr(s.score) for s in got.sentences] == [repr(s.score) for s in want]
