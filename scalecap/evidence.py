"""OCR evidence for the writer, and the quote check of the final caption against it.

For images whose text matters (documents, infographics, UI, code: ``--ocr auto`` with a declared or
routed domain, or ``--ocr on`` for every image), real OCR (``tools/ocr.py``) reads the image beside
the first caption. Its text is given to the writer with the final-caption prompt (the preset's
``evidence.txt``), and every sentence of the final caption that quotes text the OCR does not
contain (fuzzy, ``text/quotes.py``) is marked in the record, or dropped when
``drop_unsupported_quotes`` is set: a hallucination check that needs no language model.

OCR engines block (a subprocess, an ONNX session), so they run on a worker thread, never on the
event loop.
"""

from __future__ import annotations

import asyncio
import time

from .backends.base import ImageRef
from .config import Settings
from .records import OcrEvidence, QuoteMark
from .stages import Trace
from .text.quotes import check_quotes
from .text.sentences import split_sentences
from .tools.ocr import OcrEngine, OcrResult, open_ocr


class OcrTool:
    """The OCR tool agent of one pipeline; the engine is opened once, before any image."""

    def __init__(self, settings: Settings, evidence_prompt: str | None) -> None:
        self.mode, self.domains = settings.ocr, set(settings.ocr_domains)
        self.threshold, self.drop = settings.quote_threshold, settings.drop_unsupported_quotes
        self.prompt = evidence_prompt
        self.engine: OcrEngine | None = None
        if self.mode != "off":
            if evidence_prompt is None:
                raise ValueError("--ocr needs the prompt preset's evidence.txt (one {} slot for the OCR text)")
            self.engine = open_ocr(settings.ocr_engine)  # a missing engine fails here, not per image

    def applies(self, domain: str | None) -> bool:
        return self.mode == "on" or (self.mode == "auto" and domain in self.domains)

    async def read(self, trace: Trace, image: ImageRef, domain: str | None) -> OcrResult | None:
        if self.engine is None or not self.applies(domain):
            return None
        t0 = time.perf_counter()
        result = await asyncio.to_thread(self.engine.read, image.pil)
        trace.timings["ocr"] = round(time.perf_counter() - t0, 4)
        return result

    def brief(self, ocr: OcrResult | None) -> str:
        """The evidence block put before the final-caption prompt ("" without OCR text)."""
        if ocr is None or not ocr.text or self.prompt is None:
            return ""
        return self.prompt.replace("{}", ocr.text, 1)

    def check(self, caption: str | None, ocr: OcrResult) -> tuple[str | None, OcrEvidence]:
        """The caption (without its unsupported-quote sentences, if dropping) and the evidence record."""
        marks: list[QuoteMark] = []
        if not caption:
            return caption, OcrEvidence(engine=ocr.engine, text=ocr.text)
        kept: list[str] = []
        spans = split_sentences(caption)
        ends = [s.start for s in spans[1:]] + [len(caption)]
        for sentence, end in zip(spans, ends):
            checks = check_quotes(sentence.text, ocr.text, self.threshold)
            drop = self.drop and any(not c.supported for c in checks)
            marks.extend(QuoteMark(sentence=sentence.text, quote=c.quote, similarity=c.similarity,
                                   supported=c.supported, dropped=drop and not c.supported) for c in checks)
            if not drop:
                kept.append(caption[sentence.start:end])
        text = (caption[:spans[0].start] + "".join(kept)).strip() if spans else caption
        return text, OcrEvidence(engine=ocr.engine, text=ocr.text, quotes=marks)
