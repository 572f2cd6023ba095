"""What the in-process backends (transformers, vLLM) share: capabilities, checks, an identity.

Both keep a model in this process. transformers funnels every request through one ``MicroBatcher``
(subclasses set ``_batcher``; ``aclose`` closes it); vLLM instead adds each request to its running
engine (``vllm_stepper``) and overrides ``aclose``. Subclasses set ``config``, ``_capabilities`` and
``_dtype_name`` in their constructors.
"""

from __future__ import annotations

from typing import Any

from ..config import ModelConfig
from .base import Capabilities, CapabilityError, ChatPrompt
from .batching import MicroBatcher


class InProcessBackend:
    config: ModelConfig
    _capabilities: Capabilities
    _dtype_name: str
    _batcher: MicroBatcher

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    @property
    def batcher(self) -> MicroBatcher:
        return self._batcher

    def describe(self) -> dict[str, Any]:
        return {**self.config.public(), "dtype": self._dtype_name}

    def _check_image(self, prompt: ChatPrompt) -> None:
        if prompt.image is not None and not self._capabilities.vision:
            raise CapabilityError(f"{self.config.model} is a text-only model: it cannot take an image")

    def _check_regex(self, regex: str | None, why: str) -> None:
        if regex and not self._capabilities.can_constrain:
            raise CapabilityError(f"constrained decoding is not available: {why}")

    async def aclose(self) -> None:
        self._batcher.close()
