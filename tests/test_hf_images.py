"""The transformers backend processes each image once (backends/hf_images.py), and that changes
nothing: the same tensors into the model, the same scores out, bit for bit."""

import asyncio

import pytest
import torch
from PIL import Image

from scalecap.backends import ChatPrompt, ImageRef, open_backend
from scalecap.config import ModelConfig
from scalecap.testing.tiny_models import build_tiny_models

pytestmark = pytest.mark.slow


def _refs(sample_images):
    return [ImageRef(name, Image.open(sample_images[name]).convert("RGB")) for name in ("coffee", "chelsea")]


def _scores(backend, refs):
    async def run():
        prompts = [ChatPrompt("Describe the image.", None, r) for r in refs for _ in range(2)]
        texts = ["A cup of coffee.", "There is a saucer."] * len(refs)
        return await asyncio.gather(*(backend.score(p, t) for p, t in zip(prompts, texts)))

    return asyncio.run(run())


@pytest.mark.parametrize("family", ["qwen2vl", "llava"])
def test_cached_images_give_the_processors_own_tensors_and_scores(family, tiny_models, sample_images):
    refs = _refs(sample_images)
    cached = open_backend(ModelConfig(model=str(tiny_models[family]), max_pixels=160 * 120, score_batch_size=4))
    plain = open_backend(ModelConfig(model=str(tiny_models[family]), max_pixels=160 * 120, score_batch_size=4,
                                     cache_processed_images=False))
    assert cached._images is not None and plain._images is None
    prompts = [cached._chat_text(ChatPrompt("Describe the image.", None, r)) for r in refs]
    # A batch of two different images, then the same again (from the cache): equal to the processor's.
    for _ in range(2):
        got, want = cached._encode(prompts, refs), plain._encode(prompts, refs)
        assert set(got) == set(want)
        for name in want:
            assert torch.equal(got[name], want[name]), name
    assert cached._images.verified and cached._images.disabled is None
    assert cached._images.misses == 2 and cached._images.hits == 2
    # Scores through the micro-batcher (batched scoring, both images in one batch): bitwise equal.
    a, b = _scores(cached, refs), _scores(plain, refs)
    assert [s.logprobs for s in a] == [s.logprobs for s in b]
    assert [s.prompt_tokens for s in a] == [s.prompt_tokens for s in b]
    assert cached._images.hits > 2  # the scoring calls were served from the cache


def test_processors_that_pad_images_within_a_batch_are_not_cached(tiny_models, sample_images):
    folder = build_tiny_models(tiny_models["qwen2"].parent, ("idefics3",))["idefics3"]
    refs = _refs(sample_images)
    cached = open_backend(ModelConfig(model=str(folder), max_pixels=160 * 120, score_batch_size=4))
    plain = open_backend(ModelConfig(model=str(folder), max_pixels=160 * 120, score_batch_size=4,
                                     cache_processed_images=False))
    prompts = [cached._chat_text(ChatPrompt("Describe the image.", None, r)) for r in refs]
    got, want = cached._encode(prompts, refs), plain._encode(prompts, refs)
    for name in want:
        assert torch.equal(got[name], want[name]), name
    assert cached._images.hits == 0 and cached._images.misses == 0  # nested per sample: never cached
