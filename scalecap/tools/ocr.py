"""OCR, the one tool agent here whose output means something offline: real text read from pixels.

Two engines, both real, trained, and installable from the package registries:

- ``tesseract`` (default): Debian's ``tesseract-ocr`` + ``tesseract-ocr-eng`` through ``pytesseract``.
  On scikit-image's ``page`` photo (``bench/bench_ocr.py``, docs/benchmarks.md): 0.58 CPU s, 56 %
  character accuracy; it loses the dark left part of the page (3 of 7 lines quotable).
- ``rapidocr``: ``rapidocr-onnxruntime`` (PaddleOCR's models in ONNX, shipped in the wheel). On the
  same photo: 3.1 CPU s (5.4x), 69 % character accuracy, 5 of 7 lines quotable, but two lines
  missed entirely and spaces dropped; it pulls in onnxruntime and OpenCV.

Both are blocking calls (a subprocess or an ONNX session): callers run them off the event loop.
"""

from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass, field
from typing import Protocol

from PIL import Image

__all__ = ["ENGINES", "OcrEngine", "OcrError", "OcrResult", "open_ocr"]

ENGINES = ("tesseract", "rapidocr")


class OcrError(RuntimeError):
    """The OCR engine is missing or failed; the message says how to install it."""


@dataclass(frozen=True)
class OcrResult:
    """What an engine read: the lines in reading order, and their text joined by newlines."""

    engine: str
    lines: tuple[str, ...] = field(default_factory=tuple)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


class OcrEngine(Protocol):
    name: str

    def read(self, image: Image.Image) -> OcrResult: ...


class TesseractOCR:
    """Tesseract 5 via pytesseract (which calls the ``tesseract`` binary)."""

    def __init__(self, lang: str = "eng") -> None:
        try:
            import pytesseract
        except ImportError as exc:
            raise OcrError("OCR with tesseract needs pytesseract: pip install 'scalecap[ocr]'") from exc
        if shutil.which("tesseract") is None:
            raise OcrError("OCR with tesseract needs the tesseract binary: apt-get install tesseract-ocr "
                           "tesseract-ocr-eng (or brew install tesseract)")
        self._tess = pytesseract
        self.lang = lang
        self.name = f"tesseract:{lang}"

    def read(self, image: Image.Image) -> OcrResult:
        try:
            raw = self._tess.image_to_string(image.convert("RGB"), lang=self.lang)
        except self._tess.TesseractError as exc:
            raise OcrError(f"tesseract failed: {exc}") from None
        return OcrResult(self.name, tuple(line.strip() for line in raw.splitlines() if line.strip()))


class RapidOCR:
    """rapidocr-onnxruntime; one session per process, guarded (the session is not thread-safe)."""

    def __init__(self) -> None:
        try:
            from rapidocr_onnxruntime import RapidOCR as _Engine
        except ImportError as exc:
            raise OcrError("OCR with rapidocr needs rapidocr-onnxruntime: pip install rapidocr-onnxruntime") from exc
        self._engine = _Engine()
        self._lock = threading.Lock()
        self.name = "rapidocr"

    def read(self, image: Image.Image) -> OcrResult:
        import numpy as np

        with self._lock:
            found, _ = self._engine(np.asarray(image.convert("RGB")))
        return OcrResult(self.name, tuple(str(row[1]).strip() for row in found or () if str(row[1]).strip()))


def open_ocr(engine: str = "tesseract") -> OcrEngine:
    if engine == "tesseract":
        return TesseractOCR()
    if engine == "rapidocr":
        return RapidOCR()
    raise OcrError(f"unknown OCR engine {engine!r}; choose from {', '.join(ENGINES)}")
