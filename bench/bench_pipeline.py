"""Pipeline benchmarks on tiny real models (CPU). Prints figures and ratios from one run.

1. Engine throughput: images per minute at concurrency 1 and 8 (same images, same settings).
2. The rating step on a tiny Qwen2-VL with a realistic 152k vocabulary, three ways:
   - ours:  backend.score with and without the image (values gathered on the device) + rate_text;
   - limit: the two bare forward passes alone, LM head on the caption positions only (what rating
            cannot beat);
   - naive: the two full forward passes (logits at every position), then the caption's full-vocabulary logit rows turned into Python
            lists and normalised in Python, as the authors' reference code did.

Usage: .venv/bin/python bench/bench_pipeline.py [--images 16] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import asyncio
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from scalecap import ScaleCap  # noqa: E402
from scalecap.backends.base import ChatPrompt  # noqa: E402
from scalecap.images import image_ref  # noqa: E402
from scalecap.rating import rate_text  # noqa: E402
from scalecap.testing.tiny_models import build_tiny_model, build_tiny_models, default_cache_dir  # noqa: E402

SETTINGS = dict(max_tokens_caption=48, max_tokens_instructions=40, max_tokens_answer=32, max_tokens_summary=48,
                budget=2, tau=0.0)
PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "hubble_deep_field.jpg", "retina.jpg",
          "motorcycle_left.png", "page.png", "text.png", "camera.png", "brick.png", "grass.png", "gravel.png",
          "coins.png", "moon.png", "ihc.png"]


def photos(n: int) -> list[Path]:
    import skimage.data

    folder = Path(skimage.data.__file__).parent
    return [folder / PHOTOS[i % len(PHOTOS)] for i in range(n)]


def bench_engine(models: dict, n_images: int) -> None:
    vlm, llm = str(models["qwen2vl"]), str(models["qwen2"])
    images = photos(n_images)
    rates = {}
    for concurrency in (1, 8):
        sc = ScaleCap(captioner=vlm, scorer=vlm, writer=llm, **SETTINGS)
        list(sc.caption_many(images[:2], concurrency=2))  # warm-up: kernels, tagger
        t0 = time.perf_counter()
        results = list(sc.caption_many(images, concurrency=concurrency))
        dt = time.perf_counter() - t0
        assert all(r.ok for r in results), [r.error for r in results if not r.ok]
        rates[concurrency] = len(results) / dt * 60
        batches = sc.captioner.batcher
        print(f"  concurrency {concurrency}: {len(results)} images in {dt:.1f}s = {rates[concurrency]:.1f} images/min "
              f"(mean batch {batches.items_run / max(batches.batches_run, 1):.2f} requests)")
    print(f"  ratio concurrency 8 / 1: {rates[8] / rates[1]:.2f}x")


def bench_processed_images(models: dict, n_images: int) -> None:
    """The image processor once per image (hf_images.py) against once per request, at concurrency 8."""
    vlm, llm = str(models["qwen2vl"]), str(models["qwen2"])
    images = photos(n_images)
    rates, records = {}, {}
    for cache in (False, True):
        spec = {"model": vlm, "cache_processed_images": cache}
        sc = ScaleCap(captioner=spec, scorer=spec, writer=llm, **SETTINGS)
        list(sc.caption_many(images[:2], concurrency=2))
        t0 = time.perf_counter()
        results = list(sc.caption_many(images, concurrency=8))
        dt = time.perf_counter() - t0
        rates[cache] = len(results) / dt * 60
        records[cache] = {r.id: r.stable_json() for r in results}
        cached = sc.captioner._images
        extra = f" ({cached.hits} hits, {cached.misses} misses)" if cached is not None else ""
        print(f"  processor cache {'on ' if cache else 'off'}: {rates[cache]:.1f} images/min{extra}")
    same = records[True] == records[False]
    print(f"  ratio on / off: {rates[True] / rates[False]:.2f}x; records identical: {same}")


def bench_rating(repeats: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="scalecap-bench-")) / "tiny-qwen2vl-152k"
    build_tiny_model("qwen2vl", folder, vocab_pad_to=151_936)
    sc = ScaleCap(model=str(folder), budget=0, max_tokens_caption=96, max_tokens_summary=8)
    backend = sc.scorer
    image, _ = image_ref(photos(1)[0].read_bytes())
    prompt = ChatPrompt(user=sc.prompts.caption, system=sc.prompts.system, image=image)
    # A real caption written by Qwen2.5-VL-7B (the random model's own text would be a few tokens).
    data = Path(__file__).resolve().parent.parent / "tests" / "data" / "mmvet_scalecap_captions.jsonl"
    caption = json.loads(data.read_text(encoding="utf-8").splitlines()[0])["ori_caption"]
    n_tokens = backend.count_tokens(caption)
    vocab = backend._vocab_size
    print(f"  vocabulary {vocab}, caption of {n_tokens} tokens")

    async def ours() -> None:
        a, b = await asyncio.gather(backend.score(prompt, caption), backend.score(prompt.without_image(), caption))
        rate_text(caption, a, b, sc.tagger.content_spans(caption), "prob", 0.1)

    def forward_inputs(with_image: bool):
        p = prompt if with_image else prompt.without_image()
        text = backend._chat_text(p)
        enc = backend._encode([text], [image] if with_image else None)
        ids = backend.tokenizer(caption, add_special_tokens=False)["input_ids"]
        full = torch.cat([enc["input_ids"], torch.tensor([ids])], 1)
        extra = {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask")}
        if "mm_token_type_ids" in extra:
            extra["mm_token_type_ids"] = torch.cat([extra["mm_token_type_ids"], torch.zeros(1, len(ids), dtype=torch.long)], 1)
        return dict(input_ids=full, attention_mask=torch.ones_like(full), **extra), ids

    inputs = [forward_inputs(True), forward_inputs(False)]

    def limit() -> None:
        # the cheapest forward that yields the needed logits: LM head on the caption positions only
        with torch.inference_mode():
            for kw, ids in inputs:
                backend.model(**kw, use_cache=False, logits_to_keep=len(ids) + 1)

    def naive() -> None:
        with torch.inference_mode():
            for kw, ids in inputs:
                rows = backend.model(**kw, use_cache=False).logits[0, -len(ids) - 1:-1].tolist()
                for row, target in zip(rows, ids):
                    top = max(row)
                    math.exp(row[target] - top) / sum(math.exp(v - top) for v in row)

    async def ours_timed() -> list[float]:
        # one event loop for all repeats, as in a pipeline run (no loop start-up in the figure)
        await ours()
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            await ours()
            runs.append(time.perf_counter() - t0)
        return runs

    def timed(fn) -> list[float]:
        fn()
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - t0)
        return runs

    timings = {}
    for name, runs in (("ours", asyncio.run(ours_timed())), ("limit", timed(limit)), ("naive", timed(naive))):
        timings[name] = statistics.median(runs)
        print(f"  {name:5s}: {timings[name] * 1000:8.1f} ms (median of {repeats})")
    print(f"  ours / limit: {timings['ours'] / timings['limit']:.2f}x   naive / ours: {timings['naive'] / timings['ours']:.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(2)
    models = build_tiny_models(default_cache_dir(), ("qwen2vl", "qwen2"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    print("engine throughput (tiny Qwen2-VL captioner/scorer + tiny Qwen2 writer, budget 2):")
    bench_engine(models, args.images)
    print("image processor once per image vs once per request (same models, concurrency 8):")
    bench_processed_images(models, args.images)
    print("rating step (tiny Qwen2-VL, 152k vocabulary):")
    bench_rating(args.repeats)


if __name__ == "__main__":
    main()
