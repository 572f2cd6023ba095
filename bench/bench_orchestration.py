"""Orchestration benchmark: the whole pipeline over an instant in-process backend.

What is left when the models cost nothing: our per-call machinery (prompts, rating, sentence
splitting, planning, records) and the content-word tagger. The backend answers at once with texts
unique per image (drawn from a seeded word pool, realistic lengths: an 8-sentence caption, 40-word
answers), N=20 (40 questions per image).

Printed, from one run: images/s of the pipeline with the lexicon tagger and with spaCy, and the
spaCy tagger's own batched rate on one core over exactly the texts the pipeline tags (caption and
answers of each image), so the ratio shows what the pipeline's tagging path gets out of it.

Usage:  .venv/bin/python bench/bench_orchestration.py [--images 400] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import time
import zlib
from typing import Any

from PIL import Image

from scalecap import ScaleCap
from scalecap.backends.base import Capabilities, ChatPrompt, Generation, GenerationParams, TokenScores
from scalecap.engine import Engine
from scalecap.images import ImageItem
from scalecap.text.content import load_tagger

NOUNS = ("man woman child dog cat car bus tree house window door table chair lamp book bottle cup plate "
         "bicycle truck sign flag bench fence river bridge mountain cloud boat horse bird kite umbrella "
         "phone laptop screen poster clock vase plant shelf rug bag hat jacket shirt shoe ball").split()
ADJECTIVES = "red blue green small large wooden metal old bright dark white black striped round tall".split()
VERBS = "stands sits leans rests hangs lies waits shines appears remains".split()
PLACES = ("near the wall", "on the left", "in the background", "beside the road", "under the sky",
          "next to the window", "in the corner", "at the center", "behind the fence", "on the table")
_WORD = re.compile(r"\S+")


def _sentence(rng: random.Random, nouns: list[str]) -> str:
    a, b, c = nouns
    return (f"A {rng.choice(ADJECTIVES)} {a} {rng.choice(VERBS)} {rng.choice(PLACES)} with a "
            f"{rng.choice(ADJECTIVES)} {b} and a {c} nearby.")


class InstantBackend:
    """Every role at once, with no model: texts from a word pool seeded by the image and the prompt."""

    capabilities = Capabilities(vision=True, can_score=True, has_logits=True, can_constrain=False)

    def __init__(self) -> None:
        self._tokens: dict[str, Any] = {}

    def describe(self) -> dict[str, Any]:
        return {"backend": "instant", "model": "bench"}

    def count_tokens(self, text: str) -> int:
        return len(text) // 4 + 1

    async def aclose(self) -> None:
        return None

    async def generate(self, prompt: ChatPrompt, params: GenerationParams) -> Generation:
        key = (prompt.image.key if prompt.image is not None else "") + prompt.user
        rng = random.Random(zlib.crc32(key.encode()))
        user = prompt.user
        if prompt.image is not None and not user.startswith("Describe more details"):
            text = " ".join(_sentence(rng, rng.sample(NOUNS, 3)) for _ in range(8))  # first caption
        elif prompt.image is not None:
            text = " ".join(_sentence(rng, rng.sample(NOUNS, 3)) for _ in range(2))  # an answer
        elif "Sentence:" in user or "Instructions" in user:
            last = user.rstrip().rsplit("Sentence:", 1)[-1]
            words = [w for w in re.findall(r"[a-z]+", last) if w in NOUNS]
            text = "\n".join(f"Describe more details about the {w}." for w in dict.fromkeys(words))
        else:
            text = " ".join(_sentence(rng, rng.sample(NOUNS, 3)) for _ in range(6))  # summaries, final
        return Generation(text=text, prompt_tokens=len(user) // 4, completion_tokens=len(text) // 4)

    async def score(self, prompt: ChatPrompt, text: str) -> TokenScores:
        # As cheap as possible (the bench measures the pipeline, not this): words are tokens, each
        # text's tokens computed once for both passes, every third word "supported" by the image.
        cached = self._tokens.get(text)
        if cached is None:
            spans = tuple(m.span() for m in _WORD.finditer(text))
            n = len(spans)
            cached = self._tokens[text] = (spans, tuple(range(n)), (-2.0,) * n,
                                           tuple(-1.0 if i % 3 == 0 else -2.5 for i in range(n)))
        else:
            del self._tokens[text]
        spans, ids, without, with_image = cached
        values = with_image if prompt.image is not None else without
        return TokenScores(token_ids=ids, offsets=spans, logprobs=values, logits=values, prompt_tokens=len(text) // 4)


def items(n: int) -> list[ImageItem]:
    import io

    out = []
    for i in range(n):
        buf = io.BytesIO()
        Image.new("RGB", (32, 32), (i % 256, (i // 256) % 256, 7)).save(buf, "PNG")
        data = buf.getvalue()
        out.append(ImageItem(id=f"img-{i:05d}", source="bench", loader=lambda d=data: d))
    return out


async def run(sc: ScaleCap, batch: list[ImageItem], concurrency: int) -> tuple[float, list[Any]]:
    t0 = time.perf_counter()
    results = [r async for r in Engine(sc, concurrency=concurrency).run(batch)]
    return time.perf_counter() - t0, results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=400)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--budget", type=int, default=20)
    p.add_argument("--tagger-workers", type=int, default=None, help="spaCy tagging processes (default: the pipeline's)")
    args = p.parse_args()
    backend = InstantBackend()
    report: dict[str, Any] = {"images": args.images, "budget_N": args.budget, "concurrency": args.concurrency}
    texts: list[str] = []
    for tagger in ("lexicon", "auto"):
        kw = {} if args.tagger_workers is None or tagger == "lexicon" else {"tagger_workers": args.tagger_workers}
        sc = ScaleCap(captioner=backend, scorer=backend, writer=backend, budget=args.budget, tau=0.5,
                      tagger=tagger, **kw)
        asyncio.run(run(sc, items(8), 8))  # warm-up (spaCy's first call loads vectors)
        seconds, results = asyncio.run(run(sc, items(args.images), args.concurrency))
        ok = sum(r.status == "ok" for r in results)
        questions = sum(len(r.questions) for r in results) / max(1, len(results))
        report[f"pipeline_{tagger}"] = {"images_per_s": round(args.images / seconds, 1), "ok": ok,
                                        "questions_per_image": round(questions, 1), "tagger": repr(sc.tagger)}
        if tagger == "lexicon":
            texts = [t for r in results for t in [r.first_caption] + [q.answer for q in r.questions]]
        asyncio.run(sc.aclose())
    # spaCy alone, batched, one process (torch/thinc threads as configured), on the same texts
    spacy = load_tagger("auto")
    t0 = time.perf_counter()
    spacy.content_spans_many(texts)
    tagger_rate = args.images / (time.perf_counter() - t0)
    report["spacy_alone_one_core_images_per_s"] = round(tagger_rate, 1)
    report["texts_per_image"] = round(len(texts) / args.images, 1)
    report["ratio_pipeline_spacy_to_tagger_alone"] = round(report["pipeline_auto"]["images_per_s"] / tagger_rate, 2)
    print(json.dumps(report, indent=2))
    print(f"\nlexicon: {report['pipeline_lexicon']['images_per_s']} images/s; spaCy: "
          f"{report['pipeline_auto']['images_per_s']} images/s = {report['ratio_pipeline_spacy_to_tagger_alone']}x "
          f"the tagger's own batched rate on one core ({tagger_rate:.1f} images/s)")


if __name__ == "__main__":
    main()
