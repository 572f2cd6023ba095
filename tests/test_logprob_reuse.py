"""Generation log-probs reused for the with-image rating, in-process with transformers (issue 11).

The digit-writing copy of tiny Qwen2-VL (scalecap.testing.tiny_models.build_digit_model) always
writes canonical token sequences, so reuse applies to every image prompt; the plain random model
shows the fallback. Reused values must equal the teacher-forced pass within 1e-4.
"""

import asyncio

import pytest

from scalecap import ScaleCap
from scalecap.backends import ChatPrompt, GenerationParams, open_backend
from scalecap.config import ModelConfig
from scalecap.images import image_ref
from scalecap.testing.tiny_models import build_digit_model

pytestmark = pytest.mark.slow

SYSTEM = "You are a helpful assistant."


@pytest.fixture(scope="module")
def digit_model(tiny_models, tmp_path_factory):
    return build_digit_model(tiny_models["qwen2vl"], tmp_path_factory.mktemp("digits") / "digit-qwen2vl")


@pytest.fixture(scope="module")
def astronaut(sample_images):
    return image_ref(sample_images["astronaut"].read_bytes())[0]


def test_reused_scores_equal_teacher_forced(digit_model, astronaut):
    reuse = open_backend(ModelConfig(model=str(digit_model), reuse_logprobs=True))
    forced = open_backend(ModelConfig(model=str(digit_model)))  # default: off in-process

    async def run():
        pairs = []
        for i in range(4):
            prompt = ChatPrompt(f"Describe object {i}.", SYSTEM, astronaut)
            for backend in (reuse, forced):
                text = (await backend.generate(prompt, GenerationParams(max_tokens=6 + 4 * i))).text.strip()
            pairs.append((text, await reuse.score(prompt, text), await forced.score(prompt, text)))
        return pairs

    for text, a, b in asyncio.run(run()):
        assert text.isdigit()
        assert (a.source, b.source) == ("generation", "teacher_forced")
        assert a.token_ids == b.token_ids and a.offsets == b.offsets and a.prompt_tokens == 0
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs)) <= 1e-4
        assert max(abs(x - y) for x, y in zip(a.logits, b.logits)) <= 1e-4


def test_non_canonical_text_falls_back(tiny_models, astronaut):
    backend = open_backend(ModelConfig(model=str(tiny_models["qwen2vl"]), reuse_logprobs=True))
    prompt = ChatPrompt("Describe the image.", SYSTEM, astronaut)

    async def run():
        text = (await backend.generate(prompt, GenerationParams(max_tokens=16))).text.strip()
        kept = next(iter(backend._generated._entries.values()))
        return text, kept, await backend.score(prompt, text)

    text, kept, scores = asyncio.run(run())
    assert kept.ids[:len(scores.token_ids)] != scores.token_ids  # this model writes byte fragments
    assert scores.source == "teacher_forced" and scores.prompt_tokens > 0


def test_records_before_and_after(digit_model, tiny_models, sample_images, tiny_settings):
    """Same captions, scores within 1e-4, and the reuse recorded per rating and in usage."""
    records = {}
    for reuse in (False, True):
        cfg = ModelConfig(model=str(digit_model), reuse_logprobs=reuse)
        sc = ScaleCap(captioner=cfg, writer=str(tiny_models["qwen2"]), budget=2, tau=-1.0, store_tokens=True, **tiny_settings)
        records[reuse] = sc.caption(sample_images["astronaut"])
    before, after = records[False], records[True]
    assert before.status == after.status == "ok"
    assert before.first_caption == after.first_caption and before.final_caption == after.final_caption
    assert [q.answer for q in before.questions] == [q.answer for q in after.questions]
    deltas = {k: [t.delta for s in r.sentences + [s for q in r.questions for s in q.answer_sentences]
                  for t in s.tokens] for k, r in records.items()}
    assert len(deltas[True]) == len(deltas[False]) > 0
    assert max(abs(a - b) for a, b in zip(deltas[True], deltas[False])) <= 1e-4
    assert before.usage["caption_rating"].reused == 0 and after.usage["caption_rating"].reused == 1
    assert after.usage["caption_rating"].calls == before.usage["caption_rating"].calls - 1
    assert {q.scored_from for q in after.questions} == {"generation"}
    assert {q.scored_from for q in before.questions} == {"teacher_forced"}
    assert after.usage["answer_rating"].reused == len(after.questions) > 0


def test_a_generation_is_reused_only_in_its_own_conversation(astronaut):
    """The earlier turns are part of the key: a reply written after them is not the same text
    rated after the last user turn alone (the self-correction turn has a caption in its context)."""
    from scalecap.backends.reuse import GeneratedTokens, GenerationLogprobs

    kept = GenerationLogprobs()
    tokens = GeneratedTokens((1, 2), (-0.5, -0.25))
    turn = ChatPrompt("Check the caption.", SYSTEM, astronaut, history=(("Describe the image.", "A cat."),))
    kept.put(turn, "A dog.", tokens)
    assert kept.take(ChatPrompt("Check the caption.", SYSTEM, astronaut), "A dog.") is None
    assert kept.take(ChatPrompt("Check the caption.", SYSTEM, astronaut, history=(("Describe the image.", "A bird."),)),
                     "A dog.") is None
    assert kept.take(turn, "A dog.") == tokens and len(kept) == 0
