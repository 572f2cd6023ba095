"""The one protocol every model backend speaks.

The pipeline needs exactly two things from a model: *generate* text for a chat prompt (optionally
with an image), and *score* a given text under a chat prompt by teacher forcing (the per-token
log-probabilities, and raw logits where the backend has them). Everything else (batching, servers,
retries, devices) lives behind this protocol, so the pipeline never knows which backend it talks to.

Requests are plain frozen values so that they can be queued, batched, hashed and logged safely.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from PIL import Image


class BackendError(RuntimeError):
    """A model call failed in a way the caller should record (per image), not crash on.

    ``kind`` (the record's ``error_kind`` when set) names failures that are the server's, not the
    image's: ``backend_unreachable``, ``backend_auth``, ``backend_not_found``. When many items in
    a row fail with one of them (``scalecap.breaker.Breaker``) a run pauses through an outage or
    stops (``scalecap.outage``). Backends that talk to a server also have ``async check()``, one
    probe of whether it answers now, which the pause uses (optional: not part of ``Backend``).
    """

    kind: str | None = None

    def __init__(self, message: str = "", kind: str | None = None) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind


class CapabilityError(BackendError):
    """The backend cannot do what a role needs (e.g. a closed API asked to score)."""


@dataclass(frozen=True, eq=False)
class ImageRef:
    """An image decoded once, shared by every request about it.

    ``key`` identifies the image for the backend's per-image caches (encoded bytes, processor
    outputs), so that the captioner and the scorer see exactly the same pixels and servers see
    byte-identical requests (prefix and encoder caches hit).
    """

    key: str
    pil: Image.Image

    @property
    def size(self) -> tuple[int, int]:
        return self.pil.size


@dataclass(frozen=True)
class ChatPrompt:
    """One user turn, the system prompt and the image first, the question last.

    ``history`` holds earlier (user, assistant) turns of the same conversation, oldest first; the
    image then belongs to the first user turn, so every request about an image still starts with
    the same prefix (the self-correction turn re-asks about a caption already given)."""

    user: str
    system: str | None = None
    image: ImageRef | None = None
    history: tuple[tuple[str, str], ...] = ()

    def without_image(self) -> "ChatPrompt":
        return ChatPrompt(user=self.user, system=self.system, image=None, history=self.history)

    def turns(self) -> list[tuple[str, str | None]]:
        """Every (user, assistant) turn in order, the last one's assistant still to come (None)."""
        return [*self.history, (self.user, None)]


@dataclass(frozen=True)
class GenerationParams:
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    # A regular expression the whole output must match; only honoured where
    # ``Capabilities.can_constrain`` is true (callers check, backends never ignore it silently).
    regex: str | None = None
    stop: tuple[str, ...] = ()
    seed: int = 0


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = "stop"  # "stop" | "length"


@dataclass(frozen=True)
class TokenScores:
    """Teacher-forced values of the tokens of one text under one conditioning.

    ``offsets[i]`` is the character span of token i in the scored text, so that sentences found
    on the text can be mapped to tokens. ``logits`` is the raw (pre-softmax) logit of each target
    token, present only where the backend exposes logits.
    """

    token_ids: tuple[int, ...]
    offsets: tuple[tuple[int, int], ...]
    logprobs: tuple[float, ...]
    logits: tuple[float, ...] | None = None
    prompt_tokens: int = 0
    # "teacher_forced" (a scoring pass) or "generation" (the generation's own values, see reuse.py).
    source: str = "teacher_forced"

    def __post_init__(self) -> None:
        n = len(self.token_ids)
        if len(self.offsets) != n or len(self.logprobs) != n or (self.logits is not None and len(self.logits) != n):
            raise ValueError("TokenScores fields must have one entry per token")


@dataclass(frozen=True)
class Capabilities:
    vision: bool = False
    can_score: bool = False
    has_logits: bool = False
    can_constrain: bool = False
    context_window: int | None = None


@runtime_checkable
class Backend(Protocol):
    """What a role is bound to. Implementations: transformers, OpenAI-compatible HTTP, vLLM."""

    @property
    def capabilities(self) -> Capabilities: ...

    def describe(self) -> dict[str, Any]:
        """What identifies this model for the run fingerprint (kind, model, revision, dtype). No secrets."""
        ...

    async def generate(self, prompt: ChatPrompt, params: GenerationParams) -> Generation: ...

    async def score(self, prompt: ChatPrompt, text: str) -> TokenScores:
        """Teacher-force ``text`` as the assistant's reply to ``prompt``; see TokenScores."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` (exact where a tokenizer is at hand, else a stated estimate)."""
        ...

    async def aclose(self) -> None: ...


def chat_messages(prompt: ChatPrompt, image_part: dict[str, Any] | None = None,
                  answer: str | None = None) -> list[dict[str, Any]]:
    """OpenAI-style chat messages: system, then the image, then the question, then (for scoring) the
    text as the assistant's reply. This order lets a server or engine reuse the image prefix across
    all the requests about one image. ``image_part`` is the backend's own encoding of the image."""
    messages: list[dict[str, Any]] = []
    if prompt.system is not None:
        messages.append({"role": "system", "content": prompt.system})
    for i, (user, reply) in enumerate(prompt.turns()):
        if i == 0 and image_part is not None:
            messages.append({"role": "user", "content": [image_part, {"type": "text", "text": user}]})
        else:
            messages.append({"role": "user", "content": user})
        if reply is not None:
            messages.append({"role": "assistant", "content": reply})
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return messages
