"""Contrastive sentence rating on hand-made token scores: the arithmetic of METHOD.md step 2."""

import math

import pytest

from scalecap.backends.base import TokenScores
from scalecap.rating import RatingError, content_token_mask, rate_text, token_deltas


def scores(text: str, pieces: list[str], logprobs: list[float], logits: list[float] | None = None) -> TokenScores:
    offsets, pos = [], 0
    for p in pieces:
        start = text.index(p, pos)
        offsets.append((start, start + len(p)))
        pos = start + len(p)
    return TokenScores(token_ids=tuple(range(len(pieces))), offsets=tuple(offsets), logprobs=tuple(logprobs),
                       logits=tuple(logits) if logits else None)


TEXT = "A red bus stops. The sky is blue."
PIECES = ["A", " red", " bus", " stops", ".", " The", " sky", " is", " blue", "."]
CONTENT = [(2, 5), (6, 9), (10, 15), (21, 24), (28, 32)]  # red bus stops | sky blue


def test_prob_mode_is_difference_of_probabilities():
    a = scores(TEXT, PIECES, [math.log(0.5)] * 10)
    b = scores(TEXT, PIECES, [math.log(0.2)] * 10)
    assert token_deltas(a, b, "prob") == pytest.approx([0.3] * 10)
    assert token_deltas(a, b, "logprob") == pytest.approx([math.log(0.5) - math.log(0.2)] * 10)


def test_logit_mode_needs_logits():
    a = scores(TEXT, PIECES, [0.0] * 10)
    with pytest.raises(RatingError, match="raw logits"):
        token_deltas(a, a, "logit")
    c = scores(TEXT, PIECES, [0.0] * 10, logits=[3.0] * 10)
    d = scores(TEXT, PIECES, [0.0] * 10, logits=[1.0] * 10)
    assert token_deltas(c, d, "logit") == [2.0] * 10


def test_mismatched_tokens_are_refused():
    a = scores(TEXT, PIECES, [0.0] * 10)
    b = TokenScores(token_ids=tuple(range(1, 11)), offsets=a.offsets, logprobs=a.logprobs)
    with pytest.raises(RatingError, match="different tokens"):
        token_deltas(a, b, "prob")


def test_content_mask_counts_tokens_overlapping_content_words():
    a = scores(TEXT, PIECES, [0.0] * 10)
    assert content_token_mask(a.offsets, CONTENT) == [False, True, True, True, False, False, True, False, True, False]


def test_sentence_score_is_max_over_content_tokens_only():
    # sentence 1: the function word "A" has the largest gain but must not count; best content gain is 0.3 (bus)
    with_img = [0.9, 0.3, 0.5, 0.25, 0.9, 0.9, 0.05, 0.9, 0.05, 0.9]
    without = [0.1, 0.2, 0.2, 0.2, 0.1, 0.1, 0.04, 0.1, 0.03, 0.1]
    a = scores(TEXT, PIECES, [math.log(p) for p in with_img])
    b = scores(TEXT, PIECES, [math.log(p) for p in without])
    rated = rate_text(TEXT, a, b, CONTENT, "prob", tau=0.1)
    first, second = rated.sentences
    assert (first.text, first.start, first.end) == ("A red bus stops.", 0, 16)
    assert first.score == pytest.approx(0.3) and first.kept
    assert second.score == pytest.approx(0.02) and not second.kept  # max(0.01, 0.02); "is" (0.8) ignored
    assert rated.golden == ["A red bus stops."] and not rated.fallback


def test_whole_sentences_only_and_fallback_when_nothing_survives():
    a = scores(TEXT, PIECES, [math.log(0.2)] * 10)
    rated = rate_text(TEXT, a, a, CONTENT, "prob", tau=0.1)
    assert [s.kept for s in rated.sentences] == [False, False]
    assert rated.fallback and rated.golden == ["A red bus stops.", "The sky is blue."]


def test_sentence_without_content_words_scores_none_and_is_dropped():
    text = "It is. A dog runs."
    pieces = ["It", " is", ".", " A", " dog", " runs", "."]
    a = scores(text, pieces, [math.log(0.9)] * 7)
    b = scores(text, pieces, [math.log(0.1)] * 7)
    rated = rate_text(text, a, b, [(9, 12), (13, 17)], "prob", tau=0.1, store_tokens=True)
    assert rated.sentences[0].score is None and not rated.sentences[0].kept
    assert rated.sentences[1].kept
    detail = rated.sentences[1].tokens
    assert [t.text for t in detail] == [" A", " dog", " runs", "."]
    assert [t.content for t in detail] == [False, True, True, False]


def test_token_spanning_a_sentence_boundary_belongs_to_both():
    # BPE merges across the cut: ". D" covers the end of "Cat." and the start of "Dog", and it is the
    # only token with a large contrast, so each sentence's score can only come from it.
    text = "Cat. Dog"
    pieces = ["Cat", ". D", "og"]
    a = scores(text, pieces, [math.log(0.3), math.log(0.9), math.log(0.2)])
    b = scores(text, pieces, [math.log(0.25), math.log(0.1), math.log(0.15)])
    rated = rate_text(text, a, b, [(0, 3), (5, 8)], "prob", tau=0.5, store_tokens=True)
    assert [s.text for s in rated.sentences] == ["Cat.", "Dog"]
    assert [s.score for s in rated.sentences] == pytest.approx([0.8, 0.8])
    assert [s.kept for s in rated.sentences] == [True, True]
    assert [[t.text for t in s.tokens] for s in rated.sentences] == [["Cat", ". D"], [". D", "og"]]


def test_token_ending_at_a_sentence_start_does_not_belong_to_it():
    # ".\n" ends where "Dog" starts (offset 5): it touches the second sentence but lies outside it.
    text = "Cat.\nDog"
    pieces = ["Cat", ".\n", "Dog"]
    a = scores(text, pieces, [math.log(0.9), math.log(0.9), math.log(0.5)])
    b = scores(text, pieces, [math.log(0.1), math.log(0.1), math.log(0.45)])
    rated = rate_text(text, a, b, [(0, 3), (3, 5), (5, 8)], "prob", tau=0.1, store_tokens=True)
    assert [s.text for s in rated.sentences] == ["Cat.", "Dog"]  # the unterminated tail is a sentence
    assert [[t.text for t in s.tokens] for s in rated.sentences] == [["Cat", ".\n"], ["Dog"]]
    assert [s.score for s in rated.sentences] == pytest.approx([0.8, 0.05])
    assert [s.kept for s in rated.sentences] == [True, False]
