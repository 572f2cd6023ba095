"""Binding evaluation roles (answerer, extractor, judge, parser) to models, through ``ModelConfig``.

A role's model is given one of three ways:

* ``--ROLE MODEL``: a hub id or local path, loaded in-process by the transformers backend;
* ``--ROLE-model NAME`` with ``--api-base URL``: a served model on an OpenAI-compatible server;
* ``--ROLE-config FILE.toml``: any ``ModelConfig``. The file holds the fields at the top level
  (``backend = "openai"``, ``model = ...``), or in a ``[model]`` table, or is a run config with
  ``[models.NAME]`` tables, of which the one named by ``[roles].ROLE`` (else the only one) is used.

Roles bound to equal configs share one loaded model.
"""

from __future__ import annotations

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from pathlib import Path
from typing import Any

from ..config import ModelConfig
from .common import EvalInputError


def resolve_model(role: str, path: str | None = None, config_file: str | Path | None = None,
                  served: str | None = None, api_base: str | None = None,
                  api_key_env: str | None = None) -> ModelConfig | None:
    given = [n for n, v in ((f"--{role}", path), (f"--{role}-config", config_file), (f"--{role}-model", served)) if v]
    if len(given) > 1:
        raise EvalInputError(f"{role}: give only one of {', '.join(given)}")
    try:
        if path:
            return ModelConfig(backend="hf", model=path)
        if served:
            if not api_base:
                raise EvalInputError(f"{role}: --{role}-model names a served model and needs --api-base URL")
            return ModelConfig(backend="openai", model=served, api_base=api_base, api_key_env=api_key_env)
        if config_file:
            return load_model_config(config_file, role)
    except EvalInputError:
        raise
    except ValueError as exc:  # pydantic validation
        raise EvalInputError(f"{role}: invalid model settings: {_first_line(exc)}") from None
    return None


def load_model_config(path: str | Path, role: str) -> ModelConfig:
    p = Path(path)
    if not p.is_file():
        raise EvalInputError(f"{role}: config file {p} does not exist")
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise EvalInputError(f"{role}: {p} is not valid TOML ({exc})") from None
    if isinstance(raw.get("model"), str):
        spec = {k: v for k, v in raw.items() if k not in ("roles", "models", "settings")}
    elif isinstance(raw.get("model"), dict):
        spec = raw["model"]
    elif isinstance(raw.get("models"), dict) and raw["models"]:
        models = raw["models"]
        name = (raw.get("roles") or {}).get(role)
        if name is None:
            if len(models) != 1:
                raise EvalInputError(f"{role}: {p} defines {len(models)} models; name one in [roles] {role} = \"NAME\"")
            name = next(iter(models))
        if name not in models:
            raise EvalInputError(f"{role}: {p} names model {name!r} for this role, but has no [models.{name}]")
        spec = models[name]
    else:
        raise EvalInputError(f"{role}: {p} holds no model (expected model = \"...\", a [model] table or [models.NAME])")
    try:
        return ModelConfig(**spec)
    except ValueError as exc:
        raise EvalInputError(f"{role}: {p}: invalid model settings: {_first_line(exc)}") from None


def _first_line(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return " ".join(lines[:3]) if lines else type(exc).__name__


class BackendPool:
    """Opens each distinct ModelConfig once; ``close()`` closes them all."""

    def __init__(self) -> None:
        self._open: dict[str, Any] = {}

    def get(self, role: str, config: ModelConfig | None):
        if config is None:
            return None
        key = config.model_dump_json()
        if key not in self._open:
            from ..backends import open_backend

            try:
                self._open[key] = open_backend(config)
            except (OSError, ValueError, ImportError, RuntimeError) as exc:
                raise EvalInputError(f"{role}: cannot load model {config.model!r} ({config.backend}): {_first_line(exc)}") from None
        return self._open[key]

    async def close(self) -> None:
        for backend in self._open.values():
            try:
                await backend.aclose()
            except Exception:  # pragma: no cover - closing is best effort
                pass
        self._open.clear()


def describe(backend: Any, config: ModelConfig | None = None) -> dict[str, Any] | None:
    if backend is None:
        return None
    try:
        return dict(backend.describe())
    except Exception:  # pragma: no cover - a backend without describe()
        return config.public() if config else {"backend": type(backend).__name__}
