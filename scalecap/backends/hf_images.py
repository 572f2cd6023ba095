"""The image processor's output for each image, computed once per image instead of once per request.

One image is sent with 2 + 4N requests (first caption, its rating, every question's answer and its
rating). In-process with transformers, each of those calls the processor, which resizes,
normalises and patches the same pixels again: about 10 ms of CPU per call for a 640 x 480 photo
with Qwen2-VL's processor, on the thread that feeds the model. ``ProcessedImages`` keeps one
output per image (by ``ImageRef.key``) and hands batches their concatenation.

How it plugs in: it stands in for ``processor.image_processor`` (every other attribute is the real
one), so the processor's own code still builds the prompt and expands the image placeholders from
the ``image_grid_thw`` (or sizes) we return. The backend names the images of the next call with
``keyed(keys)``; a call without keys goes to the real image processor.

Exact or off. A cached single image is the real processor's output for that image. A batch is the
per-image outputs joined along the first dimension, which is what Qwen-VL and LLaVA-style
processors produce; processors that pad images to each other within a batch (Idefics3 / SmolVLM
nest images per sample) would differ, so: nested inputs are never cached, and the first call with
two or more images is also computed by the real processor and compared tensor by tensor. Any
difference turns the cache off for good (``disabled`` says why).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

#: Processed images kept (bytes of their tensors). A 640 x 480 photo is ~4.4 MB of Qwen2-VL
#: ``pixel_values`` in float32; an image is needed only while it is in flight.
DEFAULT_MAX_BYTES = 1 << 30


class ProcessedImages:
    def __init__(self, processor: Any, pixels: Callable[[Any], Any], max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._inner = processor.image_processor
        self._pixels = pixels
        self._max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[dict[str, Any], int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._local = threading.local()
        self.verified = False
        self.disabled: str | None = None
        self.hits = self.misses = 0
        processor.image_processor = self

    def __getattr__(self, name: str) -> Any:  # merge_size, fetch_images, ...: the real processor's
        return getattr(self._inner, name)

    @contextmanager
    def keyed(self, keys: Sequence[str] | None) -> Iterator[None]:
        """The images of the processor call inside this block are these (``ImageRef.key``s)."""
        self._local.keys = list(keys) if keys else None
        try:
            yield
        finally:
            self._local.keys = None

    def __call__(self, images: Any, **kwargs: Any) -> Any:
        keys = getattr(self._local, "keys", None)
        flat = isinstance(images, (list, tuple)) and not any(isinstance(i, (list, tuple)) for i in images)
        if self.disabled or not keys or not flat or len(keys) != len(images):
            return self._inner(self._resized(images), **kwargs)
        parts = [self._one(key, image, kwargs) for key, image in zip(keys, images)]
        if parts and not all(set(p) == set(parts[0]) for p in parts):
            self.disabled = "the processor's outputs differ in their fields from image to image"
            return self._inner([self._pixels(i) for i in images], **kwargs)
        joined = _join(parts)
        if joined is None:
            self.disabled = "the processor returns values that cannot be joined across images"
        elif not self.verified and len(set(keys)) > 1:
            real = self._inner([self._pixels(i) for i in images], **kwargs)
            if not _same(joined, real):
                self.disabled = "a batch of cached images differs from the processor's own batch"
                return real
            self.verified = True
        if joined is None:
            return self._inner([self._pixels(i) for i in images], **kwargs)
        return joined  # the processor merges it into its own BatchFeature

    def _resized(self, images: Any) -> Any:
        if isinstance(images, (list, tuple)):
            return [self._resized(i) for i in images]
        return self._pixels(images)

    def _one(self, key: str, image: Any, kwargs: dict[str, Any]) -> Any:
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return hit[0]
        out = self._inner([self._pixels(image)], **kwargs)
        size = sum(v.element_size() * v.nelement() for v in out.values() if hasattr(v, "nelement"))
        with self._lock:
            self.misses += 1
            if key not in self._entries:
                self._entries[key] = (out, size)
                self._bytes += size
                while self._bytes > self._max_bytes and len(self._entries) > 1:
                    _, (_, dropped) = self._entries.popitem(last=False)
                    self._bytes -= dropped
        return out


def _join(parts: list[Any]) -> dict[str, Any] | None:
    import torch

    if len(parts) == 1:
        return dict(parts[0])
    joined: dict[str, Any] = {}
    for name in parts[0]:
        values = [p[name] for p in parts]
        if all(isinstance(v, torch.Tensor) for v in values):
            try:
                joined[name] = torch.cat(values, dim=0)
            except RuntimeError:  # shapes that do not stack: this processor pads within a batch
                return None
        elif all(isinstance(v, list) for v in values):
            joined[name] = [x for v in values for x in v]
        else:
            return None
    return joined


def _same(a: dict[str, Any], b: Any) -> bool:
    import torch

    if set(a) != set(b.keys()):
        return False
    for name, value in a.items():
        other = b[name]
        if isinstance(value, torch.Tensor):
            if not (isinstance(other, torch.Tensor) and value.shape == other.shape and torch.equal(value, other)):
                return False
        elif value != other:
            return False
    return True


__all__ = ["ProcessedImages", "DEFAULT_MAX_BYTES"]
