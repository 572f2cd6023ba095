"""How many images to keep in flight: a number the user fixed, or as many as keep the servers busy.

An image is a chain of requests with waits between them (a caption, its two ratings, the
instructions, N answers at once, 2N ratings, the summaries, the final caption), so a fixed number
of images leaves a server idle in some phases and queues it in others. With model servers the
engine instead admits the next image while every server backend has fewer requests wanting to go
(``demand``: sent or waiting for a connection) than its ``target`` (twice its
``ModelConfig.max_concurrency`` connections: the connections stay busy and a queue as deep waits
behind them), up to ``MAX_IMAGES`` images for memory. In-process backends batch what is queued, so a fixed
``DEFAULT_IMAGES`` is kept for them; ``--concurrency N`` fixes the number of images everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DEFAULT_IMAGES = 8
#: The cap with request-based admission: decoded images in memory (a few MB each) and records held.
MAX_IMAGES = 64


@dataclass(frozen=True)
class Admission:
    max_images: int
    #: None: ``max_images`` images are kept in flight; else a new image starts only when this says so.
    admit: Callable[[], bool] | None = None

    def describe(self) -> str:
        return (f"{self.max_images} images in flight" if self.admit is None
                else f"images admitted while the servers have room (up to {self.max_images})")


def admission_for(captioner: Any, concurrency: int | None) -> Admission:
    """``concurrency`` images when given; otherwise by request demand when the models are served."""
    if concurrency is not None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        return Admission(concurrency)
    backends = _served(captioner)
    if not backends:
        return Admission(DEFAULT_IMAGES)
    return Admission(MAX_IMAGES, lambda: all(b.demand < b.target for b in backends))


def distinct_backends(captioner: Any) -> list[Any]:
    """The backends behind a ScaleCap (or a ``run.Worker`` around one), each once: a model bound
    to several roles is one backend (one server to watch, one demand to read)."""
    inner = captioner if hasattr(captioner, "backends") else getattr(captioner, "captioner", None)
    backends = getattr(inner, "backends", None)
    if not isinstance(backends, dict):
        return []
    return list({id(b): b for b in backends.values()}.values())


def _served(captioner: Any) -> list[Any]:
    """The backends that report their demand (HTTP servers)."""
    return [b for b in distinct_backends(captioner) if hasattr(b, "demand") and hasattr(b, "target")]
