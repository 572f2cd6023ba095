"""An image resized on the client exactly as the server's Qwen2-VL processor would resize it.

A Qwen2-VL-family processor (``Qwen2VLImageProcessor``: Qwen2-VL, Qwen2.5-VL, Qwen3-VL) resizes
every image to ``smart_resize(h, w)``: each side rounded to a multiple of ``patch_size * merge_size``
(28 for Qwen2-VL), the area kept within ``[min_pixels, max_pixels]`` of its ``size`` config. A 4000 x
3000 photo sent in full is PNG-encoded, sent, decoded and resized on the server for every one of the
2 + 4N requests about it, and only ``max_pixels`` of it ever reach the model.

So, by default, the HTTP backend does that resize once on the client, with the very operation the
processor uses (torchvision ``resize``, bicubic, antialiased, on the uint8 image), and sends the
result. The server's processor then finds an image whose sides are already ``smart_resize`` of
themselves and leaves it as it is: the model sees the same pixels and the same number of image
tokens as with the full image, while far fewer bytes are encoded, sent and decoded.

Why not ``fit_pixels`` to ``max_pixels``: a plain downscale to the budget is then resized again by the
processor (two resamplings: other pixel values, scores differ), and its sides may round to another
grid: a 2000 x 1500 photo goes to 504 x 364 (26 x 36 patches) in the processor, but fitted to
200704 px it is 517 x 387, which the processor maps to 504 x 392 (28 x 36 patches, more image
tokens). Only the processor's own target size is exact (checked: identical ``pixel_values``).

Used only when the model folder names a Qwen2-VL image processor with bicubic resampling and
torchvision is importable; a server started with other processor settings
(``--mm-processor-kwargs``) is not visible to the client: set ``ModelConfig.max_pixels`` then.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

log = logging.getLogger(__name__)

#: PIL's BICUBIC, the resampling Qwen2-VL checkpoints configure (``resample: 3``).
_BICUBIC = 3


@dataclass(frozen=True)
class ProcessorResize:
    """The resize rule of a Qwen2-VL image processor, as read from its config."""

    factor: int
    min_pixels: int
    max_pixels: int

    def target(self, width: int, height: int) -> tuple[int, int]:
        """``(width, height)`` the processor resizes an image of this size to (its ``smart_resize``)."""
        f = self.factor
        if max(width, height) / min(width, height) > 200:
            raise ValueError(f"aspect ratio {width}x{height} is beyond the processor's limit of 200")
        h, w = round(height / f) * f, round(width / f) * f
        if h * w > self.max_pixels:
            beta = math.sqrt(height * width / self.max_pixels)
            h, w = max(f, math.floor(height / beta / f) * f), max(f, math.floor(width / beta / f) * f)
        elif h * w < self.min_pixels:
            beta = math.sqrt(self.min_pixels / (height * width))
            h, w = math.ceil(height * beta / f) * f, math.ceil(width * beta / f) * f
        return w, h

    def apply(self, image: Image.Image) -> Image.Image:
        """The image at the processor's target size, resized as the processor resizes it."""
        image = image if image.mode == "RGB" else image.convert("RGB")
        size = self.target(*image.size)
        if size == image.size:
            return image
        import numpy as np
        import torch
        from torchvision.transforms.v2 import functional as tvF

        tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous()
        out = tvF.resize(tensor, [size[1], size[0]], interpolation=tvF.InterpolationMode.BICUBIC, antialias=True)
        return Image.fromarray(out.permute(1, 2, 0).numpy())

    @property
    def tag(self) -> str:
        """Names this rule in cache keys and image uuids (images resized by it differ from others)."""
        return f"qwen2vl:{self.factor}:{self.min_pixels}:{self.max_pixels}"


def read_processor_resize(folder: str | Path | None) -> ProcessorResize | None:
    """The resize rule stated by a local model folder, or None (not a folder, not Qwen2-VL-style,
    another resampling, or torchvision missing)."""
    if not folder:
        return None
    path = Path(folder).expanduser()
    config = None
    for name in ("preprocessor_config.json", "processor_config.json"):
        try:
            data = json.loads((path / name).read_text())
        except (OSError, ValueError):
            continue
        config = data.get("image_processor", data) if isinstance(data, dict) else None
        if isinstance(config, dict) and config.get("image_processor_type"):
            break
    if not isinstance(config, dict) or not str(config.get("image_processor_type", "")).startswith("Qwen2VLImageProcessor"):
        return None
    if config.get("do_resize", True) is False or config.get("resample", _BICUBIC) != _BICUBIC:
        return None
    size = config.get("size") or {}
    max_pixels = config.get("max_pixels") or size.get("longest_edge") or size.get("max_pixels")
    min_pixels = config.get("min_pixels") or size.get("shortest_edge") or size.get("min_pixels")
    try:
        rule = ProcessorResize(factor=int(config.get("patch_size", 14)) * int(config.get("merge_size", 2)),
                               min_pixels=int(min_pixels), max_pixels=int(max_pixels))
    except (TypeError, ValueError):
        return None
    try:
        import torch  # noqa: F401
        from torchvision.transforms.v2 import functional  # noqa: F401
    except ImportError:
        log.info("torchvision is not installed: images go to the server at full size (the processor's resize "
                 "cannot be reproduced exactly without it)")
        return None
    return rule


__all__ = ["ProcessorResize", "read_processor_resize"]
