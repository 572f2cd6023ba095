"""Images to a real vLLM server (issue 11): parts carry the image's uuid, and each image is resized
once on the client exactly as the server's Qwen2-VL processor would (same tokens and scores, fewer
bytes)."""

from __future__ import annotations

import json

import pytest
from parity import TEXT

from scalecap.backends.base import ChatPrompt, GenerationParams
from scalecap.backends.openai_compat import OpenAIBackend
from scalecap.config import ModelConfig
from scalecap.images import image_ref

SERVED_NAME = "tiny-qwen2vl"
SYSTEM = "You are a helpful assistant."

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def photos(sample_images):
    from PIL import Image

    big = Image.open(sample_images["coffee"]).convert("RGB").resize((1800, 1200), Image.Resampling.BICUBIC)
    import io

    buf = io.BytesIO()
    big.save(buf, format="PNG")
    return [image_ref(sample_images["astronaut"].read_bytes())[0], image_ref(buf.getvalue())[0]]


def backend_at(api_base: str, **kw) -> OpenAIBackend:
    return OpenAIBackend(ModelConfig(backend="openai", model=SERVED_NAME, api_base=api_base, **kw))


class NoUUID(OpenAIBackend):
    """The same backend with the uuid left out of image parts, as before issue 11."""

    async def _messages(self, prompt, answer=None):
        messages, url = await super()._messages(prompt, answer)
        for m in messages:
            for part in m["content"] if isinstance(m["content"], list) else ():
                part.pop("uuid", None)
        return messages, url


async def run(backend: OpenAIBackend, photos) -> list:
    out = []
    for i, image in enumerate(photos):
        prompt = ChatPrompt(f"Describe detail {i}.", SYSTEM, image)
        g = await backend.generate(prompt, GenerationParams(max_tokens=8))
        s = await backend.score(ChatPrompt("Describe the image.", SYSTEM, image), TEXT)
        out.append((g.text, g.prompt_tokens, s.token_ids, s.logprobs, s.prompt_tokens))
    return out


async def test_image_parts_carry_the_uuid_and_results_are_unchanged(vllm_server, fault_proxy, photos):
    with_uuid = backend_at(fault_proxy.api_base, reuse_logprobs=False)
    await with_uuid.probe()
    fault_proxy.bodies.clear()
    a = await run(with_uuid, photos)
    parts = [json.loads(b)["messages"][1]["content"][0] for b in fault_proxy.bodies if b"messages" in b]
    assert len(parts) == 4
    budget = with_uuid._budget()[0]
    assert [p["uuid"] for p in parts] == [f"{im.key}:{budget}" for im in photos for _ in range(2)]
    without = NoUUID(ModelConfig(backend="openai", model=SERVED_NAME, api_base=vllm_server.api_base, reuse_logprobs=False))
    b = await run(without, photos)
    for x, y in zip(a, b):
        assert x[:3] == y[:3] and x[4] == y[4]  # text, prompt tokens, token ids
        assert max(abs(p - q) for p, q in zip(x[3], y[3])) <= 1e-4
    await with_uuid.aclose()
    await without.aclose()


async def test_processor_resize_keeps_tokens_and_scores_and_sends_fewer_bytes(vllm_server, photos):
    resized = backend_at(vllm_server.api_base, reuse_logprobs=False)
    full = backend_at(vllm_server.api_base, reuse_logprobs=False, processor_resize=False)
    a, b = await run(resized, photos), await run(full, photos)
    assert resized._resize is not None and full._resize is None
    for x, y in zip(a, b):
        assert x[:3] == y[:3] and x[4] == y[4]  # same text, prompt_tokens (image tokens) and token ids
        assert max(abs(p - q) for p, q in zip(x[3], y[3])) <= 1e-4
    assert resized._images.misses == full._images.misses == 2
    assert resized._images.bytes_encoded < full._images.bytes_encoded * 0.9
    await resized.aclose()
    await full.aclose()


class AsPNG(OpenAIBackend):
    """The same backend sending PNG, as before BMP became vLLM's encoding."""

    @property
    def image_format(self) -> str:
        return "png"


async def test_bmp_images_give_the_scores_of_png_on_the_server(vllm_server, fault_proxy, photos):
    """The same pixels either way (both lossless 8-bit RGB): identical text, tokens and scores."""
    bmp = backend_at(fault_proxy.api_base, reuse_logprobs=False)
    await bmp.probe()
    assert bmp.server == "vllm" and bmp.image_format == "bmp"
    fault_proxy.bodies.clear()
    a = await run(bmp, photos)
    urls = [json.loads(b)["messages"][1]["content"][0]["image_url"]["url"] for b in fault_proxy.bodies if b"messages" in b]
    assert len(urls) == 4 and all(u.startswith("data:image/bmp;base64,") for u in urls)
    png = AsPNG(ModelConfig(backend="openai", model=SERVED_NAME, api_base=vllm_server.api_base, reuse_logprobs=False))
    b = await run(png, photos)
    assert png._images.misses == 2 and all(k[2] == "png" for k in png._images._urls)
    for x, y in zip(a, b):
        assert x[:3] == y[:3] and x[4] == y[4]
        assert max(abs(p - q) for p, q in zip(x[3], y[3])) <= 1e-4
    await bmp.aclose()
    await png.aclose()
