"""Adaptive budget vs fixed N = 20 on a scripted backend whose answers lose novelty realistically.

Each image's caption names 30 objects (all of them known words). The answer about the k-th object
brings round(6 * exp(-k / r)) words never seen before (one more every third object: a thin tail that
never ends) plus four words of the caption, so an image of richness r keeps adding for about r
objects and then mostly repeats itself (r from 2, a plain image, to 24, a crowded one). Every model call holds one shared "device" for ``--delay`` seconds, so the run is
throughput-bound like a dataset run on one GPU server, and time follows the calls made.

Printed: questions asked per image, seconds per image, and the new words that reached the kept
answers (what the extra questions buy), for fixed N = 20 and --budget auto:20, with their ratios.

Usage: .venv/bin/python bench/bench_adaptive.py [--images 24] [--delay 0.002] [--wave-size 4]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import math
import time
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from scalecap import ScaleCap
from scalecap.images import ImageItem, image_ref
from scalecap.prompts import load_preset
from scalecap.testing.scripted import ScriptedBackend
from scalecap.text.instructions import OBJECT_TEMPLATE

PROMPTS = load_preset("paper")
N_OBJECTS = 30
RICHNESS = (2, 3, 4, 6, 8, 12, 16, 24)


@dataclass
class Device(ScriptedBackend):
    """The scripted backend behind one lock: calls queue for the device as on a busy server."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    hold: float = 0.0

    async def generate(self, prompt, params):
        async with self.lock:
            await asyncio.sleep(self.hold)
        return await super().generate(prompt, params)

    async def score(self, prompt, text):
        async with self.lock:
            await asyncio.sleep(self.hold)
        return await super().score(prompt, text)


def objects(image: int) -> list[str]:
    return [f"thing{image}x{k}" for k in range(N_OBJECTS)]


def answer(image: int, richness: int, k: int) -> str:
    # a decaying burst of new detail, and a thin tail (one new word every third object) that never ends
    fresh = [f"detail{image}x{k}x{j}" for j in range(round(6 * math.exp(-k / richness)) + (k % 3 == 0))]
    known = objects(image)[(k + 1) % N_OBJECTS:][:4]
    return "It shows " + " ".join(fresh + known) + "."


def images(n: int) -> tuple[list[ImageItem], dict[str, int]]:
    """``n`` distinct tiny images, and the number of each by the key the backend sees."""
    items, numbers = [], {}
    for i in range(n):
        buf = io.BytesIO()
        Image.new("RGB", (16, 16), (i % 256, i // 256, 0)).save(buf, format="PNG")
        items.append(ImageItem(id=str(i), source="<bench>", data=buf.getvalue()))
        numbers[image_ref(buf.getvalue(), 64_000_000)[0].key] = i
    return items, numbers


def backends(delay: float, numbers: dict[str, int]) -> tuple[Device, Device]:
    def reply(prompt, params):
        if prompt.user == PROMPTS.caption:
            return "The scene has " + ", ".join(objects(numbers[prompt.image.key])) + "."
        name = prompt.user.removeprefix("Describe more details about the ").removeprefix("position of the ")
        image, k = (int(x) for x in name.rstrip(".").removeprefix("thing").split("x"))
        return answer(image, RICHNESS[image % len(RICHNESS)], k)

    def writer_reply(prompt, params):
        if prompt.user.endswith("Instructions:\n"):
            image = int(prompt.user.rsplit("thing", 1)[1].split("x")[0])
            return "".join(OBJECT_TEMPLATE.format(o) + "\n" for o in objects(image))
        return "SUMMARY."

    captioner = Device(default=reply, support=lambda w: 0.9, base=0.25, hold=delay, name="scripted-vlm")
    writer = Device(default=writer_reply, vision=False, can_score=False, hold=delay, name="scripted-writer")
    return captioner, writer


async def run(budget: str, n_images: int, delay: float, wave_size: int) -> dict[str, Any]:
    items, numbers = images(n_images)
    captioner, writer = backends(delay, numbers)
    sc = ScaleCap(captioner=captioner, scorer=captioner, writer=writer, tagger="lexicon", tau=0.1, budget=budget,
                  wave_size=wave_size, constrain_instructions=False)
    t0 = time.perf_counter()
    results = await asyncio.gather(*(sc.caption_item(item) for item in items))
    wall = time.perf_counter() - t0
    assert all(r.status == "ok" for r in results), [r.error for r in results if r.error]
    asked = [sum(q.kind == "object" for q in r.questions) for r in results]
    new_words = [len({w for q in r.questions if q.kept for s in q.answer_sentences if s.kept
                      for w in s.text.split() if w.startswith("detail")}) for r in results]
    per_richness = {r: [a for i, a in enumerate(asked) if RICHNESS[i % len(RICHNESS)] == r] for r in RICHNESS}
    return {"per_richness": {r: sum(v) / len(v) for r, v in per_richness.items() if v},
            "questions": sum(asked) / n_images, "seconds": wall / n_images, "new_words": sum(new_words) / n_images,
            "stops": ",".join(sorted({r.adaptive_budget.stop for r in results if r.adaptive_budget})) or "-"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--delay", type=float, default=0.002)
    ap.add_argument("--wave-size", type=int, default=4)
    args = ap.parse_args()
    fixed = asyncio.run(run("20", args.images, args.delay, args.wave_size))
    auto = asyncio.run(run("auto:20", args.images, args.delay, args.wave_size))
    print(f"{'':>14} {'questions/img':>14} {'s/img':>8} {'new words/img':>14}  stops")
    for name, r in (("fixed N=20", fixed), ("auto:20", auto)):
        print(f"{name:>14} {r['questions']:>14.2f} {r['seconds']:>8.4f} {r['new_words']:>14.2f}  {r['stops']}")
    print("objects asked by richness r (auto:20):",
          ", ".join(f"r={r}: {v:g}" for r, v in auto["per_richness"].items()))
    print(f"{'auto / fixed':>14} {auto['questions'] / fixed['questions']:>14.3f} "
          f"{auto['seconds'] / fixed['seconds']:>8.3f} {auto['new_words'] / fixed['new_words']:>14.3f}")


if __name__ == "__main__":
    main()
