"""The with-image rating reuses the generation's own log-probs on the real vLLM server (issue 11).

The tests run on a copy of tiny Qwen2-VL that writes digits (always canonical token sequences).
Reuse must be exact: where it is used, token ids, offsets and log-probs equal the teacher-forced
pass's (within 1e-4); where the generation's values are not the model's raw ones (a regex
constraint, a repetition penalty) it is never used.
"""

from __future__ import annotations

import pytest

from scalecap.backends.base import ChatPrompt, GenerationParams
from scalecap.backends.openai_compat import OpenAIBackend
from scalecap.config import ModelConfig
from scalecap.images import image_ref

SERVED_NAME = "tiny-qwen2vl"
SYSTEM = "You are a helpful assistant."

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(600)]  # server start-up included


def server_config(server, **kw) -> ModelConfig:
    return ModelConfig(backend="openai", model=SERVED_NAME, api_base=server.api_base, **kw)


@pytest.fixture(scope="module")
def astronaut(sample_images):
    return image_ref(sample_images["astronaut"].read_bytes())[0]


async def test_reused_values_equal_the_teacher_forced_pass(digit_vllm_server, astronaut):
    reuse = OpenAIBackend(server_config(digit_vllm_server))
    forced = OpenAIBackend(server_config(digit_vllm_server, reuse_logprobs=False))
    reused = compared = 0
    for i in range(8):
        prompt = ChatPrompt(f"Describe object number {i}.", SYSTEM, astronaut)
        text = (await reuse.generate(prompt, GenerationParams(max_tokens=4 + 4 * i))).text.strip()
        if not text:
            continue
        a, b = await reuse.score(prompt, text), await forced.score(prompt, text)
        assert b.source == "teacher_forced"
        assert a.token_ids == b.token_ids and a.offsets == b.offsets
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs)) <= 1e-4
        compared += 1
        reused += a.source == "generation"
    assert compared == reused == 8, (compared, reused)  # digits: always the generated ids
    await reuse.aclose()
    await forced.aclose()


@pytest.mark.parametrize("params", [GenerationParams(max_tokens=2, regex=r"[a-z]{1,8}"),
                                    GenerationParams(max_tokens=2, repetition_penalty=1.05)],
                         ids=["regex", "penalty"])
async def test_altered_generation_values_are_never_reused(digit_vllm_server, astronaut, params):
    backend = OpenAIBackend(server_config(digit_vllm_server))
    for i in range(6):
        prompt = ChatPrompt(f"Name object {i}.", SYSTEM, astronaut)
        text = (await backend.generate(prompt, params)).text.strip()
        if text:
            assert (await backend.score(prompt, text)).source == "teacher_forced"
    assert len(backend._generated) == 0  # nothing was even kept
    await backend.aclose()


async def test_non_canonical_text_falls_back(vllm_server, astronaut):
    """The random model's text rarely re-tokenises to its own ids: then the scoring pass runs."""
    backend = OpenAIBackend(server_config(vllm_server))
    prompt = ChatPrompt("Describe the image.", SYSTEM, astronaut)
    text = (await backend.generate(prompt, GenerationParams(max_tokens=8))).text.strip()
    ids = backend._local.encode(text)
    kept = backend._generated._entries[next(iter(backend._generated._entries))]
    assert kept.ids[:len(ids)] != ids  # this model and prompt: a non-canonical sequence
    assert (await backend.score(prompt, text)).source == "teacher_forced"
    await backend.aclose()
