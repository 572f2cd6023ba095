"""Generation log-probs kept for the with-image rating of the same text.

The pipeline rates every first caption and answer with the image, teacher-forced, under the very
prompt that generated it. When the scorer is the captioner and decoding is greedy with no penalty
or constraint, that pass recomputes the log-probs the generation already produced (measured on the
real vLLM server: |difference| = 0.0). A backend that can return them keeps them here, keyed by the
prompt and the generated text, and its ``score`` uses them instead of a second forward pass over the
image prompt, but only when the stripped text re-tokenises to exactly the generated ids: otherwise
the values belong to other tokens and the teacher-forced pass runs as before.

Entries are taken once (a text is rated with its image once) and the map is bounded, so texts that
are never rated (instructions, summaries) cannot grow it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Hashable

from .base import ChatPrompt

__all__ = ["GeneratedTokens", "GenerationLogprobs", "reusable"]

#: Sources of a TokenScores, as recorded per rating.
FROM_GENERATION = "generation"
TEACHER_FORCED = "teacher_forced"


@dataclass(frozen=True)
class GeneratedTokens:
    """The ids a generation produced and the model's log-prob (and raw logit, where known) of each."""

    ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    logits: tuple[float, ...] | None = None


def reusable(temperature: float, repetition_penalty: float, regex: str | None, stop: tuple[str, ...]) -> bool:
    """Whether a generation's reported log-probs are the model's own values on its tokens.

    Greedy only (a sampler's reported values may be of the tempered distribution); no repetition
    penalty (it alters the logits); no regex constraint (vLLM renormalises over the allowed tokens:
    +0.49 nats a token measured); no stop strings (the text is cut inside a token).
    """
    return temperature == 0 and repetition_penalty == 1.0 and not regex and not stop


class GenerationLogprobs:
    """A bounded, thread-safe map ``(prompt, text) -> GeneratedTokens``."""

    def __init__(self, capacity: int = 4096) -> None:
        self._entries: OrderedDict[Hashable, GeneratedTokens] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    @staticmethod
    def _key(prompt: ChatPrompt, text: str) -> Hashable:
        # The earlier turns are part of the context: a reply written after them (the self-correction
        # turn) has other log-probs than the same text rated after the same last user turn alone.
        image = prompt.image
        return (prompt.system, prompt.history, prompt.user, None if image is None else (image.key, id(image.pil)),
                text)

    def put(self, prompt: ChatPrompt, text: str, tokens: GeneratedTokens) -> None:
        with self._lock:
            self._entries[self._key(prompt, text)] = tokens
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)

    def take(self, prompt: ChatPrompt, text: str) -> GeneratedTokens | None:
        with self._lock:
            return self._entries.pop(self._key(prompt, text), None)

    def __len__(self) -> int:
        return len(self._entries)


def match_ids(generated: tuple[int, ...], text_ids: tuple[int, ...], trailing_is_empty: bool) -> bool:
    """The generated ids are the text's ids, followed at most by tokens that decode to nothing
    (an end-of-sequence token, stripped whitespace) when ``trailing_is_empty`` says so."""
    n = len(text_ids)
    return n > 0 and generated[:n] == text_ids and (len(generated) == n or trailing_is_empty)
