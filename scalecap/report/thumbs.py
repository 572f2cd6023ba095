"""Thumbnails for the report: small JPEGs made with Pillow from a record's ``source``.

Only local files are read (a plain path, or a ``file:`` URL); anything else (http, s3, a tar member
...) gets the page's placeholder. Nothing here ever raises for a bad image: it returns ``None``.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from urllib.parse import unquote, urlparse

from PIL import Image, ImageOps

#: Largest image (pixels) a thumbnail is made from; bigger ones get the placeholder.
MAX_SOURCE_PIXELS = 100_000_000


def local_path(source: str, images_root: Path | None = None, base_dirs: tuple[Path, ...] = ()) -> Path | None:
    """The readable local file a ``source`` names, or None (URL, missing file, not a file)."""
    if not source or "\x00" in source:
        return None
    if "://" in source or source.startswith("file:"):
        parsed = urlparse(source)
        if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
            return None
        source = unquote(parsed.path)
    p = Path(source).expanduser()
    candidates: list[Path] = []
    if images_root is not None:
        candidates.append(images_root / p if not p.is_absolute() else p)
        if p.is_absolute():
            candidates.append(images_root / p.name)
    else:
        candidates.append(p)
        if not p.is_absolute():
            candidates.extend(d / p for d in base_dirs)
    for c in candidates:
        try:
            if c.is_file():
                return c.resolve()
        except OSError:
            continue
    return None


def source_link(source: str, path: Path | None) -> str | None:
    """A URL the page may link to for the full image: a file: URL or an http(s) URL, else None."""
    if path is not None:
        return path.as_uri()
    parsed = urlparse(source)
    if parsed.scheme in ("http", "https") and parsed.netloc:
        return source
    return None


def make_thumbnail(path: Path, size: int = 160, quality: int = 70) -> bytes | None:
    """A JPEG at most ``size`` pixels on its longer side, or None if the file cannot be used."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                w, h = img.size
                if w <= 0 or h <= 0 or w * h > MAX_SOURCE_PIXELS:
                    return None
                img.draft("RGB", (size * 2, size * 2))  # JPEG: decode at reduced scale (fast)
                if getattr(img, "is_animated", False):
                    img.seek(0)
                im = ImageOps.exif_transpose(img)
                if im.mode not in ("RGB", "L"):
                    if "A" in im.getbands() or im.mode == "P":
                        rgba = im.convert("RGBA")
                        bg = Image.new("RGB", rgba.size, (255, 255, 255))
                        bg.paste(rgba, mask=rgba.getchannel("A"))
                        im = bg
                    else:
                        im = im.convert("RGB")
                im.thumbnail((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
                buf = io.BytesIO()
                im.save(buf, "JPEG", quality=quality, optimize=False, progressive=False)
                return buf.getvalue()
    except Exception:  # noqa: BLE001 - any unreadable image becomes a placeholder
        return None
