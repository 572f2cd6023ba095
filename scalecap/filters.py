"""Pre-filters: images that should not be captioned, decided before any model sees them.

The paper builds its 450k dataset by keeping "only images with high resolution and moderate
complexity" (Appendix B): it drops images whose *short edge is below 600 pixels*, and keeps images
whose complexity score, from the model of its reference [17] (IC9600's ICNet), lies in
*[0.4, 0.8]*. Both are offered here:

- ``MinShortEdge(600)`` reads only the image header (the file's first bytes, for a local file;
  nothing is decoded), so it is cheap enough for any dataset.
- ``ComplexityRange(0.4, 0.8, scorer)`` decodes the image and asks a *complexity scorer* for a
  value in [0, 1]. The default scorer, ``JpegComplexity``, is **model-free and is NOT the paper's
  model**: it is the size of a JPEG encoding of the downscaled greyscale image, in bits per pixel,
  divided by 3 and clipped to [0, 1] (flat, simple pictures compress well; cluttered, textured ones
  do not). Its numbers are on a different scale from ICNet's, so the paper's [0.4, 0.8] range is a
  starting point, not a reproduction. Every record says which scorer measured it. To use ICNet
  (or any model), pass an object with a ``name`` and ``__call__(PIL.Image) -> float`` (the
  ``ComplexityScorer`` protocol), e.g. ``--complexity-scorer mypkg.icnet:load_scorer``.

A filtered image gets a record with status ``filtered`` and ``meta.filter_reason``,
``meta.filter_value`` (the measured value) and ``meta.filter_threshold``; it is never sent to a
model. Images that pass carry their measurements in ``meta.prefilter``. An image whose header
cannot be read is passed through: the pipeline then fails it with a precise error kind.
"""

from __future__ import annotations

import importlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from PIL import Image

from .images import DEFAULT_MAX_PIXELS, ImageError, decode_image


@runtime_checkable
class ComplexityScorer(Protocol):
    """Scores how complex an image is, in [0, 1]. ``name`` goes into every record it measures."""

    name: str

    def __call__(self, image: Image.Image) -> float: ...


class JpegComplexity:
    """Model-free complexity proxy: JPEG bits per pixel of the greyscale image at 256 px short edge
    (quality 75), divided by 3, clipped to [0, 1]. NOT the paper's ICNet [17]."""

    name = "jpeg-bpp-v1 (model-free proxy, not the paper's IC9600/ICNet)"

    def __init__(self, short_edge: int = 256, quality: int = 75, full_scale_bpp: float = 3.0) -> None:
        self.short_edge, self.quality, self.full_scale_bpp = short_edge, quality, full_scale_bpp

    def __call__(self, image: Image.Image) -> float:
        g = image.convert("L")
        w, h = g.size
        scale = self.short_edge / min(w, h)
        g = g.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        g.save(buf, format="JPEG", quality=self.quality)
        bpp = 8.0 * buf.tell() / (g.size[0] * g.size[1])
        return round(min(1.0, bpp / self.full_scale_bpp), 4)


class Probe:
    """One image as the filters see it: header size first, pixels only if a filter asks."""

    def __init__(self, data: bytes | None = None, path: Path | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.data, self.path, self.max_pixels = data, path, max_pixels
        self._size: tuple[int, int] | None = None
        self._image: Image.Image | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) from the header only, EXIF rotation ignored (it does not change the short edge)."""
        if self._size is None:
            if self.data is not None:
                with Image.open(io.BytesIO(self.data)) as im:
                    self._size = im.size
            else:
                assert self.path is not None
                with Image.open(self.path) as im:
                    self._size = im.size
        return self._size

    @property
    def image(self) -> Image.Image:
        if self._image is None:
            data = self.data if self.data is not None else Path(self.path).read_bytes()  # type: ignore[arg-type]
            self._image, _ = decode_image(data, self.max_pixels)
        return self._image


@dataclass
class Rejection:
    reason: str
    value: Any
    threshold: Any
    extra: dict[str, Any] = field(default_factory=dict)

    def meta(self) -> dict[str, Any]:
        return {"filter_reason": self.reason, "filter_value": self.value, "filter_threshold": self.threshold,
                **self.extra}


class ImageFilter(Protocol):
    #: True when the filter needs decoded pixels (False: the header is enough).
    needs_pixels: bool

    def __call__(self, probe: Probe, measured: dict[str, Any]) -> Rejection | None: ...

    def describe(self) -> dict[str, Any]: ...


class MinShortEdge:
    needs_pixels = False

    def __init__(self, min_px: int = 600) -> None:
        if min_px < 1:
            raise ValueError("--min-short-edge must be a positive number of pixels")
        self.min_px = min_px

    def __call__(self, probe: Probe, measured: dict[str, Any]) -> Rejection | None:
        edge = min(probe.size)
        measured["short_edge"] = edge
        if edge < self.min_px:
            return Rejection("short_edge", edge, self.min_px)
        return None

    def describe(self) -> dict[str, Any]:
        return {"filter": "min_short_edge", "min_px": self.min_px}


class ComplexityRange:
    needs_pixels = True

    def __init__(self, low: float = 0.4, high: float = 0.8, scorer: ComplexityScorer | None = None) -> None:
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"complexity range must satisfy 0 <= low <= high <= 1, got {low}:{high}")
        self.low, self.high = low, high
        self.scorer = scorer or JpegComplexity()

    def __call__(self, probe: Probe, measured: dict[str, Any]) -> Rejection | None:
        value = float(self.scorer(probe.image))
        measured["complexity"] = round(value, 4)
        measured["complexity_scorer"] = self.scorer.name
        if not self.low <= value <= self.high:
            return Rejection("complexity", round(value, 4), [self.low, self.high],
                             {"complexity_scorer": self.scorer.name})
        return None

    def describe(self) -> dict[str, Any]:
        return {"filter": "complexity", "range": [self.low, self.high], "scorer": self.scorer.name}


class FilterSet:
    """Filters in order: header-only ones first, so that a cheap rejection spares a decode."""

    def __init__(self, filters: Sequence[ImageFilter] = (), max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.filters = sorted(filters, key=lambda f: f.needs_pixels)
        self.max_pixels = max_pixels

    def __bool__(self) -> bool:
        return bool(self.filters)

    @property
    def header_only(self) -> bool:
        return not any(f.needs_pixels for f in self.filters)

    def check(self, probe: Probe) -> tuple[Rejection | None, dict[str, Any]]:
        """The first rejection (or None) and every value measured on the way.

        An image the filters cannot read passes: the pipeline fails it with a precise error kind.
        """
        measured: dict[str, Any] = {}
        for f in self.filters:
            try:
                rejection = f(probe, measured)
            except (ImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
                return None, measured
            if rejection is not None:
                return rejection, measured
        return None, measured

    def describe(self) -> list[dict[str, Any]]:
        return [f.describe() for f in self.filters]


def parse_range(text: str) -> tuple[float, float]:
    """``"0.4:0.8"`` -> (0.4, 0.8)."""
    low, sep, high = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return float(low), float(high)
    except ValueError:
        raise ValueError(f"--complexity expects LOW:HIGH (e.g. 0.4:0.8), got {text!r}") from None


def load_scorer(spec: str | None) -> ComplexityScorer:
    """``None``/``"jpeg"``: the model-free default; ``"module:attr"``: a scorer object, class or
    factory found there (a class or factory is called with no arguments)."""
    if spec in (None, "", "jpeg", "default"):
        return JpegComplexity()
    module, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(f"--complexity-scorer expects 'jpeg' or MODULE:NAME, got {spec!r}")
    obj: Any = getattr(importlib.import_module(module), attr)
    if isinstance(obj, type) or (callable(obj) and not hasattr(obj, "name")):
        obj = obj()
    if not callable(obj) or not hasattr(obj, "name"):
        raise ValueError(f"{spec} is not a complexity scorer: it needs a `name` and __call__(image) -> float")
    return obj


def build_filters(min_short_edge: int | None = None, complexity: str | tuple[float, float] | None = None,
                  scorer: str | ComplexityScorer | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> FilterSet:
    filters: list[ImageFilter] = []
    if min_short_edge:
        filters.append(MinShortEdge(min_short_edge))
    if complexity:
        low, high = parse_range(complexity) if isinstance(complexity, str) else complexity
        filters.append(ComplexityRange(low, high, scorer if not isinstance(scorer, (str, type(None))) else load_scorer(scorer)))
    return FilterSet(filters, max_pixels)


__all__ = ["ComplexityScorer", "JpegComplexity", "MinShortEdge", "ComplexityRange", "FilterSet", "Probe",
           "Rejection", "parse_range", "load_scorer", "build_filters"]
