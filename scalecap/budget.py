"""How many questions an image gets: the budget N of METHOD step 3, fixed or adaptive.

A fixed budget asks every planned object at once (METHOD as written). The adaptive budget (beyond
the paper, ``budget="auto[:MAX]"``) asks the same objects in the same order, in waves of
``wave_size`` objects (each with its position twin), and after each wave measures what the wave's
kept answers added: the share of their distinct content words that nothing known before mentioned
(known: the golden sentences and the kept answers of earlier waves). A wave under ``threshold``
ends the questions; MAX caps them. Most images stop early; rich ones go on.

Novelty is model-free and deterministic: content words come from the same tagger that masks
tokens for rating (``scalecap.text.content``), compared case-folded as written (no lemmas, so
"cup"/"cups" count as two words, an over-estimate of novelty that errs toward asking more).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from .config import Settings
from .records import AdaptiveBudget, Question, Wave

#: Ask about these objects (object and position question each) -> the rated questions, in order.
Ask = Callable[[list[str]], Awaitable[list[Question]]]
#: The content words of each text, case-folded, in text order.
Words = Callable[[list[str]], Awaitable[list[list[str]]]]


class Budget(Protocol):
    async def ask(self, objects: list[str], ask: Ask, golden: list[str]) -> tuple[list[Question], AdaptiveBudget | None]:
        """The questions asked about ``objects`` (planned in METHOD order) and, if adaptive, why it stopped."""
        ...


class FixedBudget:
    """METHOD step 3 as written: every planned object (already cut to N) asked at once."""

    async def ask(self, objects: list[str], ask: Ask, golden: list[str]) -> tuple[list[Question], None]:
        return await ask(objects), None


@dataclass(frozen=True)
class WavedBudget:
    """The adaptive budget: waves until one adds less than ``threshold`` novelty, MAX, or no object is left."""

    wave_size: int
    threshold: float
    max_objects: int | None
    words: Words

    async def ask(self, objects: list[str], ask: Ask, golden: list[str]) -> tuple[list[Question], AdaptiveBudget]:
        known = set(_unique(w for ws in await self.words(golden) for w in ws))
        questions: list[Question] = []
        waves: list[Wave] = []
        stop = None
        asked = 0
        while asked < len(objects):
            wave = objects[asked:asked + self.wave_size]
            asked += len(wave)
            answered = await ask(wave)
            questions.extend(answered)
            kept = [kept_answer(q) for q in answered if q.kept]
            words = _unique(w for ws in await self.words(kept) for w in ws)
            new = [w for w in words if w not in known]
            known.update(words)
            novelty = len(new) / len(words) if words else 0.0
            waves.append(Wave(objects=wave, words=words, new_words=new, novelty=round(novelty, 6)))
            # The threshold only decides when there is something left to ask.
            if asked < len(objects) and novelty < self.threshold:
                stop = "novelty"
                break
        if stop is None:
            stop = "max" if self.max_objects is not None and asked >= self.max_objects else "exhausted"
        return questions, AdaptiveBudget(wave_size=self.wave_size, threshold=self.threshold,
                                         max_objects=self.max_objects, planned=len(objects), asked=asked,
                                         saved=len(objects) - asked, stop=stop, waves=waves)


def budget_for(settings: Settings, words: Words) -> Budget:
    """The budget the settings ask for (``words`` serves only the adaptive one)."""
    if settings.adaptive_budget:
        return WavedBudget(settings.wave_size, settings.novelty_threshold, settings.budget, words)
    return FixedBudget()


def kept_answer(q: Question) -> str:
    """The sentences of an answer that passed rating (what reaches the summaries)."""
    return " ".join(s.text for s in q.answer_sentences if s.kept)


def content_words(text: str, spans: Sequence[tuple[int, int]]) -> list[str]:
    """The tagger's content-word spans of ``text`` as case-folded words."""
    return [text[a:b].casefold() for a, b in spans]


def _unique(words: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(words))


__all__ = ["Budget", "FixedBudget", "WavedBudget", "budget_for", "content_words", "kept_answer"]
