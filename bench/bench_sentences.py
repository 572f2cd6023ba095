"""Wall time of the sentence splitter: the real MM-Vet captions and pathological inputs at growing sizes.

    .venv/bin/python bench/bench_sentences.py

The tests measure the splitter's work deterministically (Python lines executed, see
tests/text/test_sentences.py); this script reports seconds, which also include the regular
expressions' C work, and the ratio of times between an input and one four times as long
(linear: about 4, quadratic: about 16). Best of three runs per input.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from scalecap.text import split_sentences  # noqa: E402

CAPTIONS = Path(__file__).resolve().parent.parent / "tests" / "data" / "mmvet_scalecap_captions.jsonl"
UNITS = {"periods": ". ", "ellipses": "a... b... ", "closed LaTeX": "\\(a. B\\) ", "unclosed LaTeX": "\\(a. ",
         "abbreviations": "Dr. ", "numbering": "No. 5. ", "list items": "1. A\n", "long words": "x" * 40 + ". "}


def best_of(fn, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    rows = [json.loads(line) for line in CAPTIONS.read_text(encoding="utf-8").splitlines() if line]
    captions = [row[key] for row in rows for key in ("ori_caption", "final_caption")]
    chars = sum(map(len, captions))
    t = best_of(lambda: [split_sentences(c) for c in captions])
    print(f"real captions: {len(captions)} captions, {chars:,} chars in {t * 1000:.1f} ms ({chars / t / 1e6:.2f} M chars/s)")
    print(f"{'input':<16}{'chars (1x)':>12}{'1x s':>10}{'4x s':>10}{'ratio':>8}")
    for name, unit in UNITS.items():
        reps = 20_000 // len(unit) + 1
        small = best_of(lambda: split_sentences(unit * reps))
        large = best_of(lambda: split_sentences(unit * reps * 4))
        print(f"{name:<16}{len(unit) * reps:>12,}{small:>10.4f}{large:>10.4f}{large / small:>8.1f}")


if __name__ == "__main__":
    main()
