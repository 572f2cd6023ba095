"""The transformers backend honours ModelConfig.max_pixels, as the HTTP and vLLM backends do."""

import asyncio

import pytest
from PIL import Image

from scalecap.backends import ChatPrompt, ImageRef, open_backend
from scalecap.config import ModelConfig

pytestmark = pytest.mark.slow


def test_max_pixels_shrinks_what_the_model_sees(tiny_models):
    image = ImageRef("big", Image.new("RGB", (448, 448), (200, 30, 30)))
    prompt = ChatPrompt("Describe the image.", None, image)
    tokens = {}
    for max_pixels in (None, 112 * 112):
        backend = open_backend(ModelConfig(model=str(tiny_models["qwen2vl"]), max_pixels=max_pixels))
        tokens[max_pixels] = asyncio.run(backend.score(prompt, "A red square.")).prompt_tokens
    assert tokens[112 * 112] < tokens[None]
