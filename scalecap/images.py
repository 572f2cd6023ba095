"""Image items and safe decoding.

A dataset holds every kind of broken file. Decoding here turns each one into either an RGB image
the models can read or an ``ImageError`` with a short, stable ``kind`` that becomes a per-image
failure record; it never takes the run down and never decodes a decompression bomb.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from PIL import Image, ImageOps, UnidentifiedImageError

from .backends.base import ImageRef

#: Default pixel limit (width x height) above which an image is refused before it is decoded.
DEFAULT_MAX_PIXELS = 64_000_000


class ImageError(ValueError):
    """An image that cannot be used; ``kind`` is a stable reason for reports and filters."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class ImageItem:
    """One unit of work: an id, where it came from, and how to get its bytes.

    Sources build these lazily (``loader`` reads the bytes only when the engine gets to the item),
    so that a million-image manifest never sits in memory.
    """

    id: str
    source: str
    loader: Callable[[], bytes] | None = None
    data: bytes | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def read_bytes(self) -> bytes:
        if self.data is not None:
            return self.data
        if self.loader is None:
            return Path(self.source).read_bytes()
        return self.loader()

    @classmethod
    def from_path(cls, path: str | Path, id: str | None = None) -> "ImageItem":
        p = Path(path)
        return cls(id=id or p.name, source=str(p), loader=p.read_bytes)


#: What ``ScaleCap.caption`` accepts as an image.
ImageLike = str | Path | bytes | Image.Image | ImageItem


def as_item(image: ImageLike, id: str | None) -> ImageItem:
    """One work item from a path, encoded bytes, a PIL image (kept losslessly as PNG) or an item."""
    if isinstance(image, ImageItem):
        return image
    if isinstance(image, (str, Path)):
        return ImageItem.from_path(image, id=id)
    if isinstance(image, bytes):
        return ImageItem(id=id or "image", source="<bytes>", data=image)
    if isinstance(image, Image.Image):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return ImageItem(id=id or "image", source="<PIL.Image>", data=buf.getvalue())
    raise TypeError(f"cannot caption a {type(image).__name__}: pass a path, bytes, a PIL image or an ImageItem")


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[Image.Image, list[str]]:
    """Decode bytes to an RGB image; return it with notes on what was done to it.

    Handles CMYK, 16-bit, palette and alpha images (alpha is composited on white), EXIF rotation,
    and animated images (the first frame is used, and a note says so).
    """
    if not data:
        raise ImageError("empty_file", "the file is empty (0 bytes)")
    notes: list[str] = []
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError("not_an_image", "not a readable image (unknown or corrupt format)") from None
    except Image.DecompressionBombError as exc:
        raise ImageError("too_large", f"refused as a decompression bomb: {exc}") from None
    except OSError as exc:
        raise ImageError("corrupt", f"cannot open image: {exc}") from None
    w, h = img.size
    if w <= 0 or h <= 0:
        raise ImageError("corrupt", f"image has no pixels ({w}x{h})")
    if w * h > max_pixels:
        raise ImageError("too_large", f"{w}x{h} = {w * h} pixels exceeds the limit of {max_pixels}")
    if getattr(img, "is_animated", False):
        notes.append(f"animated image with {getattr(img, 'n_frames', '?')} frames: the first frame was used")
        img.seek(0)
    try:
        img.load()
        img = ImageOps.exif_transpose(img) or img
    except Image.DecompressionBombError as exc:
        raise ImageError("too_large", f"refused as a decompression bomb: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError("corrupt", f"cannot decode image: {exc}") from None
    if img.mode != "RGB":
        notes.append(f"converted from mode {img.mode} to RGB")
        img = _to_rgb(img)
    return img, notes


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bits by the actual range rather than clipping to white.
        lo, hi = img.getextrema()
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        img = img.point(lambda v: (v - lo) * scale + 0.5).convert("L")
    if img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def image_ref(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[ImageRef, list[str]]:
    """Decode and key an image: the key is the sha256 of its bytes."""
    pil, notes = decode_image(data, max_pixels)
    return ImageRef(key=hashlib.sha256(data).hexdigest(), pil=pil), notes
