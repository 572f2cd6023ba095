"""What produced a result file: metric and version, models, prompts, data files, seed, scalecap version, time.

Every result file of ``scalecap eval`` carries one ``provenance`` block, so that two numbers are
never compared without knowing whether they came from the same models, prompts and data.
"""

from __future__ import annotations

import datetime as _dt
import platform
import sys
from pathlib import Path
from typing import Any, Mapping

from .. import __version__
from .common import sha256_file, sha256_text


def data_file(path: str | Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        return {"path": str(p), "sha256": None}
    return {"path": str(p), "sha256": sha256_file(p), "bytes": p.stat().st_size}


def build(
    metric: str,
    version: str,
    *,
    models: Mapping[str, Mapping[str, Any] | None] | None = None,
    prompts: Mapping[str, str] | None = None,
    data: Mapping[str, str | Path | list[str | Path] | None] | None = None,
    seed: int | None = None,
    settings: Mapping[str, Any] | None = None,
    argv: list[str] | None = None,
) -> dict[str, Any]:
    """The provenance block. ``prompts`` maps a name to the prompt text (stored as sha256 + length)."""
    files: dict[str, Any] = {}
    for role, value in (data or {}).items():
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            files[role] = [data_file(v) for v in value]
        else:
            files[role] = data_file(value)
    return {
        "metric": metric,
        "metric_version": version,
        "scalecap_version": __version__,
        "timestamp": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "models": {k: dict(v) for k, v in (models or {}).items() if v is not None},
        "prompts": {k: {"sha256": sha256_text(v), "chars": len(v)} for k, v in (prompts or {}).items()},
        "data": files,
        "seed": seed,
        "settings": dict(settings or {}),
        "python": sys.version.split()[0],
        "platform": platform.platform(terse=True),
        "argv": list(argv) if argv is not None else None,
    }
