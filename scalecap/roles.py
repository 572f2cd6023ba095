"""Models bound to the pipeline's roles: captioner, scorer, writer (and router, judge when used).

One backend is opened per distinct model config, so a model that plays several roles is loaded
once; a role left unbound falls back as METHOD section 2 says (the scorer, router and judge to the
captioner, everything to ``model``). ``check_roles`` fails before the first image when a bound model
cannot do its role's job, rather than failing every image of a run one by one.
"""

from __future__ import annotations

from typing import Any

from .backends import Backend, model_config_from, open_backend
from .backends.base import CapabilityError
from .config import ModelConfig, Settings

#: Roles that default to the captioner's model when unbound (rate with the model that wrote the text).
FOLLOW_THE_CAPTIONER = ("scorer", "router", "judge")


def bind_roles(model: Any, **roles: Any) -> dict[str, Backend]:
    """Open one backend per distinct model config; a model playing several roles is loaded once."""
    opened: dict[str, Backend] = {}
    bound: dict[str, Backend] = {}
    for role, spec in roles.items():
        if spec is None and role in FOLLOW_THE_CAPTIONER:
            spec = roles["captioner"]
        spec = spec if spec is not None else model
        if spec is None:
            raise ValueError(f"no model for the {role} role: pass model=... or {role}=...")
        if isinstance(spec, (str, dict, ModelConfig)):
            config = model_config_from(spec)
            key = config.model_dump_json()
            if key not in opened:
                opened[key] = open_backend(config)
            bound[role] = opened[key]
        elif isinstance(spec, Backend):
            bound[role] = spec
        else:
            raise TypeError(f"{role}: expected a model id/path, a ModelConfig or a Backend, got {type(spec).__name__}")
    return bound


def check_roles(captioner: Backend, scorer: Backend, settings: Settings) -> None:
    """Fail before any image is processed if a role's model cannot do its job."""
    if not captioner.capabilities.vision:
        raise CapabilityError(f"the captioner ({backend_name(captioner)}) cannot take images: bind a vision model")
    if not scorer.capabilities.can_score:
        raise CapabilityError(
            f"the scorer ({backend_name(scorer)}) cannot return prompt log-probs (closed APIs and Ollama cannot): "
            "bind the scorer role to an open model, in-process (transformers/vLLM) or on a vLLM/SGLang server")
    if not scorer.capabilities.vision:
        raise CapabilityError(f"the scorer ({backend_name(scorer)}) cannot take images: bind a vision model")
    if settings.score_mode == "logit" and not scorer.capabilities.has_logits:
        raise CapabilityError(f"score mode 'logit' needs raw logits, which {backend_name(scorer)} does not return; "
                              "use --score-mode prob or logprob")


def writer_window(writer: Backend, settings: Settings) -> int | None:
    """The writer's window: the server's, the ``context_window`` setting, or the smaller of both."""
    known = [w for w in (writer.capabilities.context_window, settings.context_window) if w]
    return min(known) if known else None


def backend_name(backend: Backend) -> str:
    return str(backend.describe().get("model", type(backend).__name__))
