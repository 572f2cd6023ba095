"""A scripted backend: the real ``Backend`` protocol with outputs a test chooses.

Tiny random models keep or drop everything, so they cannot show that *only* supported sentences
reach the writer. This backend can: the test says what each generation returns (rules matched on
the prompt) and how strongly the image supports each word (the with-image probability of a token;
the without-image probability is a constant), and every call is recorded so that a test can read
the exact prompts the writer was given.

Tokens are whitespace-delimited words with their leading space, so offsets and token ids are exact
and readable. Nothing here is a model: it is the protocol, driven by the test.
"""

from __future__ import annotations

import asyncio
import math
import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..backends.base import Capabilities, ChatPrompt, Generation, GenerationParams, TokenScores

Reply = str | Callable[[ChatPrompt, GenerationParams], str]

_TOKEN = re.compile(r"\s*\S+|\s+$")


@dataclass(frozen=True)
class Call:
    """One recorded request: ``kind`` is "generate" or "score"; ``text`` is the scored text;
    ``reply`` is what a generation returned (recorded by ``RecordingBackend`` only)."""

    kind: str
    prompt: ChatPrompt
    params: GenerationParams | None = None
    text: str = ""
    reply: Generation | None = None

    @property
    def with_image(self) -> bool:
        return self.prompt.image is not None


@dataclass
class ScriptedBackend:
    """``rules``: (regex, reply) pairs tried in order against the user turn; the first that matches
    answers (a string, or a function of prompt and params). ``support``: word -> probability of that
    token with the image (default ``base``: no contrast); ``base``: the probability without it.
    ``delay`` seconds are awaited per call (for concurrency tests)."""

    rules: Sequence[tuple[str, Reply]] = ()
    default: Reply = ""
    support: Callable[[str], float] | dict[str, float] = field(default_factory=dict)
    base: float = 0.25
    vision: bool = True
    can_score: bool = True
    can_constrain: bool = False
    context_window: int | None = None
    name: str = "scripted"
    delay: float = 0.0
    calls: list[Call] = field(default_factory=list)

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(vision=self.vision, can_score=self.can_score, has_logits=True,
                            can_constrain=self.can_constrain, context_window=self.context_window)

    def describe(self) -> dict[str, Any]:
        return {"backend": "scripted", "model": self.name}

    async def generate(self, prompt: ChatPrompt, params: GenerationParams) -> Generation:
        self.calls.append(Call("generate", prompt, params))
        if self.delay:
            await asyncio.sleep(self.delay)
        reply = next((r for pattern, r in self.rules if re.search(pattern, prompt.user)), self.default)
        text = reply(prompt, params) if callable(reply) else reply
        tokens = _TOKEN.findall(text)
        finish = "length" if len(tokens) > params.max_tokens else "stop"
        text = "".join(tokens[: params.max_tokens])
        return Generation(text=text, prompt_tokens=self.count_tokens(prompt.user),
                          completion_tokens=min(len(tokens), params.max_tokens), finish_reason=finish)

    async def score(self, prompt: ChatPrompt, text: str) -> TokenScores:
        self.calls.append(Call("score", prompt, None, text))
        if self.delay:
            await asyncio.sleep(self.delay)
        spans = [(m.start(), m.end()) for m in _TOKEN.finditer(text)]
        words = [text[a:b].strip() for a, b in spans]
        probs = [self._support(w) if prompt.image is not None else self.base for w in words]
        logprobs = tuple(math.log(max(p, 1e-12)) for p in probs)
        return TokenScores(token_ids=tuple(zlib.crc32(w.encode()) % 50_000 for w in words), offsets=tuple(spans),
                           logprobs=logprobs, logits=logprobs, prompt_tokens=self.count_tokens(prompt.user) + len(words))

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    async def aclose(self) -> None:
        return None

    # ------------------------------------------------------------------ for tests
    def _support(self, word: str) -> float:
        key = word.strip(".,;:!?\"'()").lower()
        if callable(self.support):
            return self.support(key)
        return self.support.get(key, self.base)

    def generations(self, pattern: str = "") -> list[Call]:
        """Recorded generation calls whose user turn matches ``pattern``."""
        return [c for c in self.calls if c.kind == "generate" and re.search(pattern, c.prompt.user)]


@dataclass
class RecordingBackend:
    """Any backend, with every request it receives recorded (as ``Call`` values, like the scripted
    backend's), so that a test can read the exact prompts a real model was given and what it
    replied. Generations are recorded when they return, so in completion order."""

    inner: Any
    calls: list[Call] = field(default_factory=list)

    @property
    def capabilities(self) -> Capabilities:
        return self.inner.capabilities

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()

    async def generate(self, prompt: ChatPrompt, params: GenerationParams) -> Generation:
        out = await self.inner.generate(prompt, params)
        self.calls.append(Call("generate", prompt, params, reply=out))
        return out

    async def score(self, prompt: ChatPrompt, text: str) -> TokenScores:
        self.calls.append(Call("score", prompt, None, text))
        return await self.inner.score(prompt, text)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def generations(self, pattern: str = "") -> list[Call]:
        """Recorded generation calls whose user turn matches ``pattern``."""
        return [c for c in self.calls if c.kind == "generate" and re.search(pattern, c.prompt.user)]


__all__ = ["Call", "RecordingBackend", "ScriptedBackend"]
