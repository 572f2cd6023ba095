"""The client-side resize reproduces the Qwen2-VL processor exactly (pixel_budget.py, issue 11)."""

from __future__ import annotations

import pytest
from PIL import Image

from scalecap.backends.images_http import fit_pixels
from scalecap.backends.pixel_budget import ProcessorResize, read_processor_resize


@pytest.fixture(scope="module")
def processor(tiny_models):
    from transformers import AutoImageProcessor

    return AutoImageProcessor.from_pretrained(tiny_models["qwen2vl"])


def test_rule_is_read_from_the_model_folder(tiny_models):
    rule = read_processor_resize(tiny_models["qwen2vl"])
    assert rule == ProcessorResize(factor=28, min_pixels=3136, max_pixels=200704)
    assert read_processor_resize(tiny_models["qwen2"]) is None  # a text model: no image processor
    assert read_processor_resize(tiny_models["llava"]) is None  # another processor: its own rules
    assert read_processor_resize(None) is None


@pytest.mark.parametrize("size", [None, (2000, 1500), (300, 1700), (60, 40)], ids=["photo", "large", "tall", "tiny"])
def test_processor_sees_identical_pixels(tiny_models, processor, sample_images, size):
    rule = read_processor_resize(tiny_models["qwen2vl"])
    image = Image.open(sample_images["coffee"]).convert("RGB")
    if size is not None:
        image = image.resize(size, Image.Resampling.BICUBIC)
    small = rule.apply(image)
    assert small.size == rule.target(*image.size) and small.size[0] % 28 == 0 and small.size[1] % 28 == 0
    full, resized = processor(images=[image], return_tensors="pt"), processor(images=[small], return_tensors="pt")
    assert full["image_grid_thw"].tolist() == resized["image_grid_thw"].tolist()
    assert bool((full["pixel_values"] == resized["pixel_values"]).all())
    assert rule.target(*small.size) == small.size and rule.apply(small) is small  # the processor leaves it as is


def test_plain_budget_fit_would_change_the_grid(tiny_models, processor):
    """Why fit_pixels is not used for the default: it lands on another grid (more image tokens)."""
    rule = read_processor_resize(tiny_models["qwen2vl"])
    image = Image.new("RGB", (2000, 1500), "gray")
    fitted = fit_pixels(image, rule.max_pixels)
    assert rule.target(*image.size) == (504, 364)
    assert rule.target(*fitted.size) == (504, 392)
    assert processor(images=[fitted], return_tensors="pt")["image_grid_thw"].tolist() == [[1, 28, 36]]
