"""Model backends behind one protocol (``base.Backend``), and the registry that opens them.

Backends are imported lazily by kind, so that a user of the HTTP backend never imports torch and
a user of transformers never needs the openai SDK.
"""

from __future__ import annotations

from typing import Any

from ..config import ModelConfig
from .base import (Backend, BackendError, Capabilities, CapabilityError, ChatPrompt, Generation,
                   GenerationParams, ImageRef, TokenScores)

__all__ = ["Backend", "BackendError", "Capabilities", "CapabilityError", "ChatPrompt", "Generation",
           "GenerationParams", "ImageRef", "TokenScores", "open_backend", "model_config_from"]


def open_backend(config: ModelConfig) -> Backend:
    """Load the model a ModelConfig describes."""
    if config.backend == "hf":
        from .hf import HFBackend

        return HFBackend(config)
    if config.backend == "openai":
        from .openai_compat import OpenAIBackend

        return OpenAIBackend(config)
    if config.backend == "vllm":
        from .vllm_engine import VLLMBackend

        return VLLMBackend(config)
    raise ValueError(f"unknown backend {config.backend!r}")


def model_config_from(spec: Any, **defaults: Any) -> ModelConfig:
    """A ModelConfig from a config, a mapping, or a model string (hub id or local path: transformers)."""
    if isinstance(spec, ModelConfig):
        return spec
    if isinstance(spec, dict):
        return ModelConfig(**{**defaults, **spec})
    if isinstance(spec, str):
        return ModelConfig(**{"backend": "hf", **defaults, "model": spec})
    raise TypeError(f"cannot make a model config from {type(spec).__name__}")
