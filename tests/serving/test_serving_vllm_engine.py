"""The in-process vLLM backend (``vllm.LLM`` on CPU): scoring parity with transformers, batching,
constrained generation and one pipeline run."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re

import pytest
from parity import TEXT, assert_same_scores

from scalecap import ScaleCap
from scalecap.backends.base import ChatPrompt, GenerationParams
from scalecap.config import ModelConfig
from scalecap.images import image_ref

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(600)]

SYSTEM = "You are a helpful assistant."
ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def engine(tiny_models, tmp_path_factory):
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not installed")
    from scalecap.backends.vllm_engine import VLLMBackend

    saved = {k: os.environ.get(k) for k in (*ENV, "VLLM_CACHE_ROOT")}
    os.environ.update(ENV, VLLM_CACHE_ROOT=str(tmp_path_factory.mktemp("vllm_inproc")))
    backend = VLLMBackend(ModelConfig(backend="vllm", model=str(tiny_models["qwen2vl"]), dtype="float32", vllm_kwargs={
        "enforce_eager": True, "max_model_len": 2048, "limit_mm_per_prompt": {"image": 4, "video": 0}}))
    yield backend
    asyncio.run(backend.aclose())
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def astronaut(sample_images):
    return image_ref(sample_images["astronaut"].read_bytes())[0]


def test_capabilities(engine):
    caps = engine.capabilities
    assert caps.vision and caps.can_score and caps.can_constrain and not caps.has_logits
    assert caps.context_window == 2048
    assert engine.describe() == {"backend": "vllm", "model": engine.config.model, "dtype": "float32"}


@pytest.mark.parametrize("with_image", [True, False])
async def test_score_parity_with_transformers(engine, tiny_models, astronaut, with_image):
    from scalecap.backends.hf import HFBackend

    hf = HFBackend(ModelConfig(model=str(tiny_models["qwen2vl"]), dtype="float32"))
    prompt = ChatPrompt("Describe the image.", SYSTEM, astronaut if with_image else None)
    assert_same_scores(await engine.score(prompt, TEXT), await hf.score(prompt, TEXT))
    await hf.aclose()


async def test_concurrent_requests_share_engine_calls(engine, astronaut):
    prompts = [ChatPrompt(f"Describe more details about the object {i}.", SYSTEM, astronaut) for i in range(4)]
    before = (engine.batcher.batches_run, engine.batcher.items_run)
    alone = await engine.score(prompts[0], TEXT)
    together = await asyncio.gather(*(engine.score(p, TEXT) for p in prompts),
                                    *(engine.generate(p, GenerationParams(max_tokens=6)) for p in prompts))
    batches, items = engine.batcher.batches_run - before[0], engine.batcher.items_run - before[1]
    assert items == 9 and batches <= 4  # 1 alone + 8 concurrent requests in at most 3 calls
    assert max(abs(a - b) for a, b in zip(alone.logprobs, together[0].logprobs)) < 1e-4
    regex = r"Describe more details about the [a-z]{1,12}\.\n"
    g = await engine.generate(ChatPrompt("List objects.", SYSTEM), GenerationParams(max_tokens=30, regex=regex))
    assert re.fullmatch(regex, g.text), g.text


def test_pipeline_in_process(engine, sample_images, tiny_settings):
    sc = ScaleCap(captioner=engine, scorer=engine, writer=engine, budget=2, tau=-1.0, **tiny_settings)
    r = sc.caption(sample_images["coffee"])
    assert r.status == "ok", r.error
    assert r.first_caption and r.questions and r.final_caption
    assert r.fingerprint.models["captioner"]["backend"] == "vllm"
