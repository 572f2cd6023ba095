"""The in-process vLLM backend (``vllm.LLM`` on CPU): scoring parity with transformers, continuous
batching (one engine request per call, concurrent calls in the engine together), constrained
generation, log-prob reuse on the digit-writing model, and one pipeline run."""

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


async def test_concurrent_requests_share_the_running_engine(engine, astronaut):
    prompts = [ChatPrompt(f"Describe more details about the object {i}.", SYSTEM, astronaut) for i in range(4)]
    before = engine.stepper.requests
    engine.stepper.peak_in_flight = 0
    alone = await engine.score(prompts[0], TEXT)
    alone_gen = await engine.generate(prompts[1], GenerationParams(max_tokens=6))
    assert engine.stepper.peak_in_flight == 1
    together = await asyncio.gather(*(engine.score(p, TEXT) for p in prompts),
                                    *(engine.generate(p, GenerationParams(max_tokens=6))
                                      for p in prompts))
    assert engine.stepper.requests - before == 10  # one engine request per call
    assert engine.stepper.peak_in_flight >= 2  # concurrent calls ran in the engine together
    assert max(abs(a - b) for a, b in zip(alone.logprobs, together[0].logprobs)) < 1e-4
    assert together[5].text == alone_gen.text and together[5].completion_tokens == alone_gen.completion_tokens
    regex = r"Describe more details about the [a-z]{1,12}\.\n"
    g = await engine.generate(ChatPrompt("List objects.", SYSTEM), GenerationParams(max_tokens=30, regex=regex))
    assert re.fullmatch(regex, g.text), g.text


def test_pipeline_in_process(engine, sample_images, tiny_settings):
    sc = ScaleCap(captioner=engine, scorer=engine, writer=engine, budget=2, tau=-1.0, **tiny_settings)
    r = sc.caption(sample_images["coffee"])
    assert r.status == "ok", r.error
    assert r.first_caption and r.questions and r.final_caption
    assert r.fingerprint.models["captioner"]["backend"] == "vllm"


@pytest.fixture(scope="module")
def digit_engine(engine, tiny_models, tmp_path_factory):
    """A second engine on the digit-writing copy of tiny Qwen2-VL, whose greedy text always
    re-tokenises to the generated ids (scalecap.testing.tiny_models.build_digit_model)."""
    from scalecap.backends.vllm_engine import VLLMBackend
    from scalecap.testing.tiny_models import build_digit_model

    folder = build_digit_model(tiny_models["qwen2vl"], tmp_path_factory.mktemp("vllm_digits") / "digit-qwen2vl")
    backend = VLLMBackend(ModelConfig(backend="vllm", model=str(folder), dtype="float32", vllm_kwargs={
        "enforce_eager": True, "max_model_len": 2048, "limit_mm_per_prompt": {"image": 4, "video": 0}}))
    yield backend
    asyncio.run(backend.aclose())


async def test_reused_generation_logprobs_equal_the_prefill_pass(digit_engine, astronaut):
    reused = 0
    for i in range(6):
        prompt = ChatPrompt(f"Describe object number {i}.", SYSTEM, astronaut)
        text = (await digit_engine.generate(prompt, GenerationParams(max_tokens=4 + 4 * i))).text.strip()
        assert text.isdigit(), text
        a = await digit_engine.score(prompt, text)  # takes the kept generation values
        b = await digit_engine.score(prompt, text)  # nothing kept any more: the prefill pass
        assert (a.source, b.source) == ("generation", "teacher_forced")
        assert a.token_ids == b.token_ids and a.offsets == b.offsets
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs)) <= 1e-4
        reused += 1
    assert reused == 6


@pytest.mark.parametrize("params", [GenerationParams(max_tokens=3, regex=r"[0-9]{1,3}"),
                                    GenerationParams(max_tokens=3, repetition_penalty=1.05),
                                    GenerationParams(max_tokens=3, temperature=0.8)],
                         ids=["regex", "penalty", "sampled"])
async def test_altered_generation_values_are_never_reused(digit_engine, astronaut, params):
    prompt = ChatPrompt("Name the object.", SYSTEM, astronaut)
    text = (await digit_engine.generate(prompt, params)).text.strip()
    assert len(digit_engine._generated) == 0  # nothing was even kept
    if text:
        assert (await digit_engine.score(prompt, text)).source == "teacher_forced"
