"""Added cost per image of the degenerate-output filter, routing and OCR, as ratios to a run without them.

A scripted backend stands in for the models: every model call awaits ``--delay`` seconds (default
0.05 s, a small served model's short call), so model time is simulated and the checks themselves
are real: the degenerate filter's regexes over every generated text, the routing call (one more
model call, counted), and real Tesseract OCR on scikit-image's ``page`` photo (on a worker thread,
beside the first caption). Images are the ``page`` and ``chelsea`` photos, one at a time.

Printed per configuration: seconds per image, model calls per image, and the ratio to the baseline
(filter off, routing off, OCR off).

Usage: .venv/bin/python bench/bench_filters.py [--images 8] [--delay 0.05]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import skimage.data

from scalecap import ScaleCap
from scalecap.backends.base import Generation
from scalecap.config import Settings
from scalecap.screen import Screen
from scalecap.images import ImageItem
from scalecap.testing.scripted import ScriptedBackend

FOLDER = Path(skimage.data.__file__).parent
FIRST = ("A printed page of a book about image segmentation. The heading reads \"Region-based segmentation\". "
         "The text is black on a grey background, darker at the left edge.")
FINAL = FIRST + ' The page mentions "markers of the coins and the background".'

CONFIGS = {
    "baseline (all off)": dict(degenerate_filter=False),
    "+ degenerate filter": dict(),
    "+ routing": dict(degenerate_filter=False, route="auto"),
    "+ OCR (on)": dict(degenerate_filter=False, ocr="on"),
    "+ all three": dict(route="auto", ocr="on"),
}


def backends(delay: float) -> tuple[ScriptedBackend, ScriptedBackend]:
    captioner = ScriptedBackend(rules=[(r"^Which domain", "infographic_document 3"),
                                       (r"^Describe more details about the position", "It is at the top of the page."),
                                       (r"^Describe more details", "It is printed in a bold serif typeface.")],
                                default=FIRST, support={w: 0.9 for w in ("page", "book", "heading", "text", "grey")},
                                can_constrain=True, delay=delay)
    writer = ScriptedBackend(rules=[(r"Basic Context:", FINAL), (r"Instructions:", "Describe more details about the heading.")],
                             default="The heading is bold.", vision=False, can_score=False, delay=delay, name="writer")
    return captioner, writer


def run(config: dict, images: list[Path], delay: float) -> tuple[float, float, float]:
    captioner, writer = backends(delay)
    sc = ScaleCap(captioner=captioner, scorer=captioner, writer=writer, tagger="lexicon", budget=2, **config)
    sc.caption(ImageItem.from_path(images[0], id="warm-up"))  # engine start-up is not per-image cost
    captioner.calls.clear(), writer.calls.clear()
    t0 = time.perf_counter()
    ocr = 0.0
    for i, path in enumerate(images):
        r = sc.caption(ImageItem.from_path(path, id=f"im{i}"))
        assert r.status == "ok", r.error
        ocr += r.timings.get("ocr", 0.0)
    seconds = (time.perf_counter() - t0) / len(images)
    calls = (len(captioner.calls) + len(writer.calls)) / len(images)
    return seconds, calls, ocr / len(images)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--delay", type=float, default=0.05)
    args = ap.parse_args()
    images = [FOLDER / ("page.png" if i % 2 == 0 else "chelsea.png") for i in range(args.images)]
    base = None
    print(f"{args.images} images, {args.delay:.3f} s per simulated model call")
    print(f"{'configuration':22} {'s/image':>9} {'calls/image':>12} {'time ratio':>11} {'call ratio':>11} {'OCR s':>7}")
    for name, config in CONFIGS.items():
        seconds, calls, ocr = run(config, images, args.delay)
        base = base or (seconds, calls)
        print(f"{name:22} {seconds:9.4f} {calls:12.1f} {seconds / base[0]:11.3f} {calls / base[1]:11.3f} {ocr:7.3f}")
    # The filter's own cost, measured directly (the wall-clock difference above is within noise).
    screen = Screen(Settings())
    texts = [Generation(t, 0, 0, "stop") for t in (FIRST, FINAL, "It is printed in a bold serif typeface.") * 2]
    t0 = time.perf_counter()
    for _ in range(200):
        for t in texts:
            screen.check(t)
    print(f"degenerate checks: {(time.perf_counter() - t0) / 200 * 1000:.3f} ms per image (6 texts), measured directly")


if __name__ == "__main__":
    main()
