"""Contrastive sentence rating (METHOD.md section 3, step 2): which sentences does the image support?

For every token c_t of a text, p_t = P(c_t | image, T, c_<t) and p'_t = P(c_t | T, c_<t) come from
two teacher-forced passes (``TokenScores`` with and without the image). A sentence's score is the
largest difference over its *content* tokens; the sentence is kept, whole, iff that score exceeds
tau. Everything here is a pure function of plain values: no model, no I/O.

Score modes (each with its own tau, recorded in every result):

- ``prob``    p_t - p'_t, the paper's definition (default);
- ``logprob`` log p_t - log p'_t;
- ``logit``   raw logit difference of the target token, what the authors' reference code computed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from .backends.base import TokenScores
from .records import ScoredSentence, TokenDetail
from .text.sentences import split_sentences

SCORE_MODES = ("prob", "logprob", "logit")


class RatingError(ValueError):
    """The two passes do not describe the same tokens, or the mode cannot be computed."""


@dataclass(frozen=True)
class RatedText:
    sentences: list[ScoredSentence]
    fallback: bool  # nothing survived: the whole text stands in for the golden sentences
    # where the with-image values came from: "teacher_forced" or "generation" (backends/reuse.py)
    scored_from: str = "teacher_forced"

    @property
    def golden(self) -> list[str]:
        if self.fallback:
            return [s.text for s in self.sentences]
        return [s.text for s in self.sentences if s.kept]


def token_deltas(with_image: TokenScores, without_image: TokenScores, mode: str) -> list[float]:
    """Per-token contrast between the pass with the image and the pass without it."""
    a, b = _pass_values(with_image, without_image, mode)
    if mode == "prob":
        return [math.exp(x) - math.exp(y) for x, y in zip(a, b)]
    return [x - y for x, y in zip(a, b)]


def _pass_values(with_image: TokenScores, without_image: TokenScores,
                 mode: str) -> tuple[Sequence[float], Sequence[float]]:
    """The two passes' values that ``mode`` contrasts, after checking they describe the same tokens."""
    if with_image.token_ids != without_image.token_ids:
        raise RatingError("the passes with and without the image scored different tokens")
    if mode in ("prob", "logprob"):
        return with_image.logprobs, without_image.logprobs
    if mode == "logit":
        if with_image.logits is None or without_image.logits is None:
            raise RatingError("score mode 'logit' needs a scorer backend that returns raw logits "
                              "(transformers or in-process vLLM); use 'prob' or 'logprob' with a server")
        return with_image.logits, without_image.logits
    raise RatingError(f"unknown score mode {mode!r}; choose from {', '.join(SCORE_MODES)}")


def content_token_mask(offsets: Sequence[tuple[int, int]], content_spans: Sequence[tuple[int, int]]) -> list[bool]:
    """A token counts iff its characters overlap a content word (a token may carry a leading space)."""
    mask = []
    j = 0
    spans = sorted(content_spans)
    for start, end in offsets:
        while j < len(spans) and spans[j][1] <= start:
            j += 1
        k, hit = j, False
        while k < len(spans) and spans[k][0] < end:
            if spans[k][1] > start and end > start:
                hit = True
                break
            k += 1
        mask.append(hit)
    return mask


def rate_text(
    text: str,
    with_image: TokenScores,
    without_image: TokenScores,
    content_spans: Sequence[tuple[int, int]],
    mode: str,
    tau: float,
    store_tokens: bool = False,
) -> RatedText:
    """Split ``text`` into sentences, score each from its content tokens, keep those above tau."""
    # Only content tokens' deltas decide a score, so only theirs are computed (each as
    # ``token_deltas`` computes it, so the scores are the same floats); all, when tokens are stored.
    a, b = _pass_values(with_image, without_image, mode)
    prob = mode == "prob"
    exp = math.exp
    offsets = with_image.offsets
    content = content_token_mask(offsets, content_spans)
    rated = []
    t0, n = 0, len(offsets)
    for sent in split_sentences(text):
        # tokens are in text order: skip those that end before this sentence starts
        while t0 < n and offsets[t0][1] <= sent.start:
            t0 += 1
        members = []
        t = t0
        while t < n and offsets[t][0] < sent.end:
            if offsets[t][1] > sent.start:
                members.append(t)
            t += 1
        tokens = None
        if store_tokens:
            deltas = [exp(a[i]) - exp(b[i]) if prob else a[i] - b[i] for i in members]
            scores = [d for i, d in zip(members, deltas) if content[i]]
            tokens = [TokenDetail(text=text[offsets[i][0]:offsets[i][1]], start=offsets[i][0], end=offsets[i][1],
                                  delta=d, content=content[i]) for i, d in zip(members, deltas)]
        elif prob:
            scores = [exp(a[i]) - exp(b[i]) for i in members if content[i]]
        else:
            scores = [a[i] - b[i] for i in members if content[i]]
        score = max(scores) if scores else None
        # Built without re-validation: every field is already of its type (this runs for every
        # sentence of every caption and answer, ~40 texts an image).
        rated.append(ScoredSentence.model_construct(text=sent.text, start=sent.start, end=sent.end, score=score,
                                                    kept=score is not None and score > tau, tokens=tokens))
    fallback = bool(rated) and not any(s.kept for s in rated)
    return RatedText(sentences=rated, fallback=fallback, scored_from=with_image.source)
