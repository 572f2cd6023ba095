"""Images for HTTP model servers: resized once, encoded once, sent byte-identical every time.

A server can only reuse work across the 2 + 4K requests about one image (its prefix KV cache and its
multimodal encoder cache are keyed by the request's bytes/tokens) if every one of those requests
carries exactly the same image bytes. So each image is resized to the model's pixel budget and
encoded a single time, keyed by ``ImageRef.key``, and the data URL is reused from a bounded LRU.

Lossless, never JPEG: a server scorer must see exactly the pixels an in-process scorer (or captioner)
sees, which is what makes server and transformers scores agree to 1e-4. JPEG would be 3-10x smaller
on the wire, but it changes the pixels (and so the scores) and its bytes depend on the encoder's
quality settings.

BMP to vLLM and SGLang, PNG to every other server. Both carry the same 8-bit RGB pixels, but a
server decodes the image of every request that carries it, and a 532x364 photo costs ~14 ms to
encode and ~5.5 ms to decode as PNG (compress level 1) against 0.3 and 0.2 ms as BMP, at 1.8x the
bytes (measured here, 640 px photos). Per image that is one encoding on the client and a decoding
for each of its 2 + 4N requests on the server, which on loopback or a LAN outweighs the bytes.
Those two servers open images with PIL, which reads BMP; the OpenAI API and Ollama accept only the
common web formats, so they get PNG.
"""

from __future__ import annotations

import base64
import io
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

from PIL import Image

from .base import ImageRef


def fit_pixels(image: Image.Image, max_pixels: int | None) -> Image.Image:
    """Downscale (never upscale) so that width x height <= max_pixels, keeping the aspect ratio."""
    w, h = image.size
    if not max_pixels or w * h <= max_pixels:
        return image
    scale = math.sqrt(max_pixels / (w * h))
    size = (max(1, int(w * scale)), max(1, int(h * scale)))
    return image.resize(size, Image.Resampling.BICUBIC)


#: The lossless encodings a data URL may carry: format -> (PIL format, MIME type, PIL options).
ENCODINGS = {"png": ("PNG", "image/png", {"compress_level": 1}), "bmp": ("BMP", "image/bmp", {})}


def encode_png(image: Image.Image) -> bytes:
    return encode(image, "png")


def encode(image: Image.Image, fmt: str = "png") -> bytes:
    """The image's 8-bit RGB pixels, losslessly, as ``fmt`` (a key of ``ENCODINGS``)."""
    pil_format, _, options = ENCODINGS[fmt]
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format=pil_format, **options)
    return buf.getvalue()


def data_url(image: Image.Image, fmt: str = "png") -> str:
    return f"data:{ENCODINGS[fmt][1]};base64," + base64.b64encode(encode(image, fmt)).decode("ascii")


class DataURLCache:
    """``ImageRef`` -> ``data:image/...;base64,...``, computed once per (key, pixel budget, format).

    The budget is ``max_pixels`` (``fit_pixels``) or any hashable tag with its own ``fit``
    (e.g. ``pixel_budget.ProcessorResize``).

    Bounded by entries and by total characters (the URLs of large images are megabytes), so a long
    run holds only the images in flight plus a few recent ones.
    """

    def __init__(self, max_items: int = 256, max_chars: int = 512 << 20) -> None:
        self.max_items, self.max_chars = max_items, max_chars
        self._urls: OrderedDict[tuple[str, Hashable, str], str] = OrderedDict()
        self._chars = 0
        self._lock = threading.Lock()
        self.hits = self.misses = self.bytes_encoded = 0

    def peek(self, image: ImageRef, max_pixels: Hashable, fmt: str = "png") -> str | None:
        """The cached URL, or None (cheap enough for the event loop; ``get`` may encode)."""
        with self._lock:
            return self._urls.get((image.key, max_pixels, fmt))

    def get(self, image: ImageRef, max_pixels: Hashable,
            fit: Callable[[Image.Image], Image.Image] | None = None, fmt: str = "png") -> str:
        key = (image.key, max_pixels, fmt)
        with self._lock:
            url = self._urls.get(key)
            if url is not None:
                self._urls.move_to_end(key)
                self.hits += 1
                return url
        pil = fit(image.pil) if fit is not None else fit_pixels(image.pil, max_pixels)  # type: ignore[arg-type]
        url = data_url(pil, fmt)
        self.bytes_encoded += len(url)
        with self._lock:
            self.misses += 1
            if key not in self._urls:
                self._urls[key] = url
                self._chars += len(url)
                while self._urls and (len(self._urls) > self.max_items or self._chars > self.max_chars):
                    _, old = self._urls.popitem(last=False)
                    self._chars -= len(old)
            return self._urls.get(key, url)
