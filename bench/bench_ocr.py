"""Tesseract against RapidOCR on scikit-image's two photos of text: time per image and accuracy.

Both engines run through ``scalecap.tools.ocr`` (the classes the pipeline uses), on the ``page``
photo (a printed book page under uneven light) and the ``text`` photo (hand-written mathematics on
ruled paper, upside down and at an angle). Each engine is loaded once (the load is timed apart),
then reads each image ``--runs`` times; the median of those reads is the figure, the first read
is printed too (it includes the engine's warm-up). Besides wall time, the CPU time of the read
(this process and its children: Tesseract is a subprocess) is printed: on a shared, loaded machine
wall time swells with the load, CPU time much less.

Accuracy is against ``REFERENCE``, transcribed by hand from the images: character accuracy
``1 - edit distance / reference length`` over the whitespace-collapsed text (floored at 0), and
the share of the reference's words found among the words read, and how many of the reference's
lines, each taken as a caption's quote, the quote check (``text.quotes``, threshold 0.8) finds
supported by what the engine read: the use the pipeline makes of OCR.
The ``text`` photo has no reference: its marks are hand-written symbols (fractions, ``t``, ``s``,
an integral sign), not words, so only what each engine read is printed (anything it reads is
invented text, which a quote check could wrongly find "supported").

An engine that is not installed is reported as such and skipped. RapidOCR is not in the project's
environment; to run it, use a separate venv::

    python3 -m venv /tmp/ocrvenv && /tmp/ocrvenv/bin/pip install rapidocr-onnxruntime pytesseract scikit-image
    PYTHONPATH=. /tmp/ocrvenv/bin/python bench/bench_ocr.py --runs 3

Usage: .venv/bin/python bench/bench_ocr.py [--runs 3] [--engines tesseract,rapidocr]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import time
from pathlib import Path

import skimage.data
from PIL import Image

from scalecap.text.quotes import quote_support
from scalecap.tools.ocr import ENGINES, OcrError, open_ocr

FOLDER = Path(skimage.data.__file__).parent
IMAGES = {"page": FOLDER / "page.png", "text": FOLDER / "text.png"}

# The printed lines of ``page``, as they read on the photo. The cut-off fragment at the bottom-left
# corner (a few letters of the next line, sliced by the image edge) is left out.
REFERENCE = {
    "page": "\n".join([
        "Region-based segmentation",
        "Let us first determine markers of the coins and the",
        "background. These markers are pixels that we can label",
        "unambiguously as either object or background. Here,",
        "the markers are found at the two extreme parts of the",
        "histogram of grey values:",
        ">>> markers = np.zeros_like(coins)",
    ]),
    "text": None,
}

_WS = re.compile(r"\s+")


def normalize(text: str) -> str:
    return _WS.sub(" ", text).strip()


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions cost 1), two rows of the table."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def char_accuracy(reference: str, read: str) -> float:
    ref, hyp = normalize(reference), normalize(read)
    return max(0.0, 1.0 - edit_distance(ref, hyp) / len(ref))


def word_recall(reference: str, read: str) -> float:
    words = normalize(reference).split()
    seen = normalize(read).split()
    found = 0
    for w in words:
        if w in seen:
            seen.remove(w)
            found += 1
    return found / len(words)


def quotes_supported(reference: str, read: str, threshold: float = 0.8) -> int:
    return sum(1 for line in reference.splitlines() if quote_support(line, read) >= threshold)


def cpu_seconds() -> float:
    """User + system time of this process and of its finished children (a Tesseract call is one)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def bench(engine_name: str, runs: int) -> dict | None:
    t0 = time.perf_counter()
    try:
        engine = open_ocr(engine_name)
    except OcrError as exc:
        print(f"{engine_name}: not available ({exc})")
        return None
    load = time.perf_counter() - t0
    out = {"engine": engine.name, "load": load, "images": {}}
    for key, path in IMAGES.items():
        image = Image.open(path)
        image.load()
        times, cpu, text = [], [], ""
        for _ in range(runs):
            t, c = time.perf_counter(), cpu_seconds()
            text = engine.read(image).text
            times.append(time.perf_counter() - t)
            cpu.append(cpu_seconds() - c)
        ref = REFERENCE[key]
        out["images"][key] = {
            "first": times[0], "median": statistics.median(times), "cpu": statistics.median(cpu), "text": text,
            "chars": len(normalize(text)),
            "char_acc": char_accuracy(ref, text) if ref else None,
            "word_recall": word_recall(ref, text) if ref else None,
            "quotes": f"{quotes_supported(ref, text)}/{len(ref.splitlines())}" if ref else None,
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="reads per image per engine (the median is reported)")
    ap.add_argument("--engines", default=",".join(ENGINES), help=f"comma-separated, of {', '.join(ENGINES)}")
    ap.add_argument("--show-text", action="store_true", help="print what each engine read")
    args = ap.parse_args()
    results = [r for r in (bench(e.strip(), max(1, args.runs)) for e in args.engines.split(",")) if r]
    print(f"\nruns per image: {args.runs}; times in seconds (median of the runs; first read in brackets); "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'engine':<16} {'load':>6} {'image':<6} {'median':>7} {'first':>7} {'cpu':>6} {'chars':>6} {'char acc':>9} {'words':>7} {'quotes':>6}")
    for r in results:
        for key, m in r["images"].items():
            acc = "-" if m["char_acc"] is None else f"{100 * m['char_acc']:.1f} %"
            rec = "-" if m["word_recall"] is None else f"{100 * m['word_recall']:.1f} %"
            print(f"{r['engine']:<16} {r['load']:>6.2f} {key:<6} {m['median']:>7.3f} {'(' + format(m['first'], '.3f') + ')':>7}"
                  f" {m['cpu']:>6.2f} {m['chars']:>6} {acc:>9} {rec:>7} {m['quotes'] or '-':>6}")
    if args.show_text:
        for r in results:
            for key, m in r["images"].items():
                print(f"\n--- {r['engine']} on {key}:\n{m['text']}")


if __name__ == "__main__":
    main()
