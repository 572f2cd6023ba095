"""The writer's context guard: every writer prompt plus its completion fits the window.

METHOD.md section 3, step 6: "if the inputs exceed the writer's window, summarise in chunks". The
guard turns that into guarantees rather than hopes:

* the window is the server's (``Capabilities.context_window``) or, where the server reports none
  (Ollama, closed APIs), the ``context_window`` setting; with neither the guard is off, and the
  fingerprint shows ``context_window: null``;
* a call's completion limit is what the window leaves after its prompt (never more than
  ``max_tokens_summary``), so prompt + completion always fit;
* inputs are cut into chunks at sentence boundaries (a sentence longer than a chunk is cut between
  words, the only place a cut can fall inside a sentence), each chunk is asked for at most half its
  size back, and the result is measured again: condensing repeats until the input fits, and a text
  that still does not fit after ``MAX_ROUNDS`` is a recorded failure (``ContextOverflow``), never a
  prompt the server would truncate or refuse.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator

from .backends.base import BackendError
from .text.sentences import split_sentences

__all__ = ["ContextGuard", "ContextOverflow", "chunk_lines"]

#: Tokens kept free for the chat template's own tokens around the system prompt and the user turn.
MARGIN = 64
#: Condensing rounds before giving up (each at least halves the input).
MAX_ROUNDS = 4
#: The smallest completion a writer call is allowed; below it, the input is condensed first.
MIN_COMPLETION = 64

Count = Callable[[str], int]
Write = Callable[[str, int], Awaitable[str]]


class ContextOverflow(BackendError):
    """The writer's inputs cannot be brought inside its window."""


class ContextGuard:
    """Fits writer prompts into ``window`` tokens (``None``: no guard) beside their completion."""

    def __init__(self, count: Count, window: Callable[[], int | None], max_completion: int,
                 system: str | None = None) -> None:
        self._count_sync = count
        self._window = window  # asked at each use: HTTP backends learn theirs when first probed
        self.max_completion = max_completion
        self._system = system or ""
        self._system_tokens: int | None = None

    @property
    def window(self) -> int | None:
        return self._window()

    async def count(self, text: str) -> int:
        # count_tokens may ask a server (HTTP backends): keep it off the event loop
        return await asyncio.to_thread(self._count_sync, text)

    async def completion_room(self, prompt: str) -> int:
        """The completion limit for ``prompt``: ``max_completion``, or less where the window ends."""
        if self.window is None:
            return self.max_completion
        free = self.window - await self._overhead() - await self.count(prompt)
        if free < min(MIN_COMPLETION, self.max_completion):
            raise ContextOverflow(f"a writer prompt of {await self.count(prompt)} tokens leaves no room for a "
                                  f"completion in the {self.window}-token window")
        return min(self.max_completion, free)

    async def input_room(self, template: str) -> int | None:
        """Tokens the text filling ``template`` may take so that a full completion still fits."""
        if self.window is None:
            return None
        completion = min(self.max_completion, max(MIN_COMPLETION, self.window // 4))
        room = self.window - await self._overhead() - await self.count(template.replace("{}", "")) - completion
        if room < MIN_COMPLETION:
            raise ContextOverflow(f"the prompt template alone nearly fills the {self.window}-token window")
        return room

    async def fit(self, lines: list[str], room: int | None, template: str, write: Write) -> list[str]:
        """``lines`` condensed (chunk by chunk through ``template``) until they take at most ``room``."""
        if room is None:
            return lines
        chunk_room = await self.input_room(template)
        for _ in range(MAX_ROUNDS):
            if await self.count("\n".join(lines)) <= room:
                return lines
            # Each chunk is asked for at most half of itself back, so every round shrinks the text.
            size = max(MIN_COMPLETION, min(chunk_room, room))
            chunks = await asyncio.to_thread(chunk_lines, lines, size, self._count_sync)
            budget = max(MIN_COMPLETION // 2, min(self.max_completion, size // 2))
            outputs = await asyncio.gather(*(write(template.replace("{}", "\n".join(c), 1), budget) for c in chunks))
            lines = [o for o in outputs if o.strip()]
        if await self.count("\n".join(lines)) <= room:
            return lines
        raise ContextOverflow(f"the writer's input still exceeds {room} tokens after {MAX_ROUNDS} condensing rounds")

    async def _overhead(self) -> int:
        if self._system_tokens is None:
            self._system_tokens = await self.count(self._system) if self._system else 0
        return self._system_tokens + MARGIN


def chunk_lines(lines: list[str], budget: int, count: Count) -> list[list[str]]:
    """Group lines into chunks of at most ``budget`` tokens, cutting long lines at sentence ends."""
    chunks: list[list[str]] = [[]]
    used = 0
    for piece in _pieces(lines, budget, count):
        n = count(piece) + 1
        if chunks[-1] and used + n > budget:
            chunks.append([])
            used = 0
        chunks[-1].append(piece)
        used += n
    return chunks


def _pieces(lines: list[str], budget: int, count: Count) -> Iterator[str]:
    """Lines that fit whole; longer ones as runs of whole sentences (a too-long sentence by words)."""
    for line in lines:
        if count(line) <= budget:
            yield line
            continue
        parts = (part for sentence in (s.text for s in split_sentences(line))
                 for part in ([sentence] if count(sentence) <= budget else _pack(sentence.split(), budget, count)))
        yield from _pack(parts, budget, count)


def _pack(parts: Iterable[str], budget: int, count: Count) -> Iterator[str]:
    """Parts joined by spaces into runs of at most ``budget`` tokens (a part longer than that stands alone)."""
    run = ""
    for part in parts:
        candidate = f"{run} {part}" if run else part
        if run and count(candidate) > budget:
            yield run
            candidate = part
        run = candidate
    if run:
        yield run
