"""OpenAIBackend against a real vLLM server: generation, probing, scoring parity with transformers,
prefix-friendly requests, and the whole pipeline (all roles on the server, and mixed roles)."""

from __future__ import annotations

import json
import re

from pathlib import Path

import pytest
from parity import TEXT, assert_same_scores

from scalecap import ScaleCap
from scalecap.backends.base import ChatPrompt, GenerationParams
from scalecap.backends.openai_compat import OpenAIBackend, align_pieces
from scalecap.config import ModelConfig
from scalecap.images import image_ref

SERVED_NAME = "tiny-qwen2vl"  # the name the session server (conftest.py) serves the model under

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(600)]  # server start-up included

SYSTEM = "You are a helpful assistant."


def server_config(server, **kw) -> ModelConfig:
    return ModelConfig(backend="openai", model=SERVED_NAME, api_base=server.api_base, **kw)


@pytest.fixture(scope="module")
def astronaut(sample_images):
    return image_ref(sample_images["astronaut"].read_bytes())[0]


@pytest.fixture(scope="module")
def hf_vlm(tiny_models):
    from scalecap.backends.hf import HFBackend

    return HFBackend(ModelConfig(model=str(tiny_models["qwen2vl"]), dtype="float32"))


async def test_probe_reads_server_capabilities(vllm_server, tiny_models):
    backend = OpenAIBackend(server_config(vllm_server))
    caps = await backend.probe()
    assert caps.vision and caps.can_score and caps.can_constrain and not caps.has_logits
    assert caps.context_window == 2048 and backend.server == "vllm"
    assert backend.describe() == {"backend": "openai", "model": SERVED_NAME, "api_base": vllm_server.api_base}
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_models["qwen2vl"])
    assert backend.count_tokens(TEXT) == len(tok(TEXT, add_special_tokens=False)["input_ids"])
    await backend.aclose()


async def test_generation_with_and_without_image(vllm_server, astronaut):
    backend = OpenAIBackend(server_config(vllm_server))
    with_image = await backend.generate(ChatPrompt("Describe the image.", SYSTEM, astronaut), GenerationParams(max_tokens=12))
    text_only = await backend.generate(ChatPrompt("Describe a cat.", SYSTEM), GenerationParams(max_tokens=12))
    for g in (with_image, text_only):
        assert g.text and g.completion_tokens == 12 and g.finish_reason == "length"
    # the image's tokens are in the prompt count
    assert with_image.prompt_tokens > text_only.prompt_tokens + 64
    regex = r"Describe more details about the [a-z]{1,12}\.\n"
    constrained = await backend.generate(ChatPrompt("List objects.", SYSTEM), GenerationParams(max_tokens=30, regex=regex))
    assert re.fullmatch(regex, constrained.text), constrained.text
    await backend.aclose()


@pytest.mark.parametrize("with_image", [True, False])
async def test_score_parity_with_transformers(vllm_server, hf_vlm, astronaut, with_image):
    backend = OpenAIBackend(server_config(vllm_server))
    prompt = ChatPrompt("Describe the image.", SYSTEM, astronaut if with_image else None)
    assert_same_scores(await backend.score(prompt, TEXT), await hf_vlm.score(prompt, TEXT))
    await backend.aclose()


async def test_scores_agree_with_and_without_image_on_tokens(vllm_server, astronaut, tiny_models):
    backend = OpenAIBackend(server_config(vllm_server))
    a = await backend.score(ChatPrompt("Describe the image.", SYSTEM, astronaut), TEXT)
    b = await backend.score(ChatPrompt("Describe the image.", SYSTEM), TEXT)
    assert a.token_ids == b.token_ids and a.offsets == b.offsets and a.logprobs != b.logprobs
    # gibberish with replacement characters (what tiny models generate) maps without server round trips
    from transformers import AutoTokenizer

    odd = "\ufffd lon *,_key\ufffd\ufffd setting"
    # the model's own tokenizer is found in the folder the server reports, so one request scores a text
    assert backend.local_tokenizer == str(Path(tiny_models["qwen2vl"]).resolve())
    before = backend.requests
    s = await backend.score(ChatPrompt("Describe the image.", SYSTEM), odd)
    assert backend.requests - before == 1
    remote = OpenAIBackend(server_config(vllm_server, local_tokenizer=False))  # the server's /tokenize instead
    await remote.probe()
    before = remote.requests
    assert remote.local_tokenizer is None and await remote.score(ChatPrompt("Describe the image.", SYSTEM), odd) == s
    assert remote.requests - before == 2  # /tokenize and the scoring request
    await remote.aclose()
    ref = AutoTokenizer.from_pretrained(tiny_models["qwen2vl"])(odd, add_special_tokens=False, return_offsets_mapping=True)
    assert s.token_ids == tuple(ref["input_ids"]) and s.offsets[-1] == (len(odd) - 8, len(odd))
    assert all(a0 <= b0 for (a0, _), (b0, _) in zip(s.offsets, s.offsets[1:])) and s.offsets[0][0] == 0
    for tail in ("Ends with a newline.\n", "Ends with a space. "):  # trailing whitespace survives the template
        s = await backend.score(ChatPrompt("Describe the image.", SYSTEM), tail)
        assert s.offsets[-1][1] == len(tail)
    await backend.aclose()
    with pytest.raises(Exception, match="tokenised the text differently"):
        await OpenAIBackend(server_config(vllm_server)).score(ChatPrompt("Hi"), "\nstarts with a newline")


def test_align_pieces_maps_partial_characters_like_transformers():
    assert align_pieces("a 🚀!", ["a", " ", "", "", "🚀", "!"]) == ((0, 1), (1, 2), (2, 3), (2, 3), (2, 3), (3, 4))
    # replacement characters in the text itself (generated invalid bytes): their silent tokens span them
    assert align_pieces("a\ufffd b\ufffd", ["a", "", "", "", " b", "", ""]) == (
        (0, 1), (1, 2), (1, 2), (1, 2), (2, 4), (4, 5), (4, 5))
    with pytest.raises(ValueError):
        align_pieces("abc", ["a", "x"])


async def test_image_is_encoded_once_and_sent_byte_identical_first(vllm_server, fault_proxy, astronaut):
    backend = OpenAIBackend(ModelConfig(backend="openai", model=SERVED_NAME, api_base=fault_proxy.api_base))
    await backend.probe()
    fault_proxy.bodies.clear()
    for q in ("Describe more details about the man.", "Describe more details about the position of the man."):
        await backend.generate(ChatPrompt(q, SYSTEM, astronaut), GenerationParams(max_tokens=4))
    await backend.score(ChatPrompt("Describe the image.", SYSTEM, astronaut), TEXT)
    assert backend._images.misses == 1
    chats = [json.loads(b) for b in fault_proxy.bodies if b"messages" in b]
    assert len(chats) == 3
    prefixes = set()
    for body in chats:
        system, user = body["messages"][:2]
        assert system == {"role": "system", "content": SYSTEM}
        image_part, text_part = user["content"]
        assert image_part["type"] == "image_url" and text_part["type"] == "text"
        prefixes.add(json.dumps([system, image_part]))
    assert len(prefixes) == 1  # byte-identical system + image prefix in every request about the image
    await backend.aclose()


def test_pipeline_all_roles_on_the_server(vllm_server, sample_images, tiny_settings):
    cfg = server_config(vllm_server)
    sc = ScaleCap(captioner=cfg, scorer=cfg, writer=cfg, budget=2, tau=-1.0, **tiny_settings)
    assert sc.captioner is sc.scorer is sc.writer and sc.constrained
    r = sc.caption(sample_images["astronaut"])
    assert r.status == "ok", r.error
    assert r.first_caption and r.sentences and r.questions and r.final_caption
    assert 1 <= len([q for q in r.questions if q.kind == "object"]) <= 2
    assert r.usage["caption"].prompt_tokens > 0 and r.usage["caption"].completion_tokens > 0
    assert r.usage["answer_rating"].calls + r.usage["answer_rating"].reused == 2 * len(r.questions)
    assert r.usage["answer_rating"].reused == sum(q.scored_from == "generation" for q in r.questions)
    assert r.fingerprint.models["scorer"] == {"backend": "openai", "model": SERVED_NAME, "api_base": vllm_server.api_base}


def test_pipeline_mixed_roles(vllm_server, tiny_models, sample_images, tiny_settings):
    cfg = server_config(vllm_server)
    sc = ScaleCap(captioner=cfg, scorer=cfg, writer=str(tiny_models["qwen2"]), budget=2, tau=-1.0, **tiny_settings)
    r = sc.caption(sample_images["chelsea"])
    assert r.status == "ok", r.error
    assert r.questions  # the final caption may be empty: the random writer may write only whitespace
    assert r.usage["final"].calls == 1 and r.usage["final"].completion_tokens > 0
    assert r.fingerprint.models["writer"]["backend"] == "hf"


def test_closed_api_cannot_score_and_fails_before_any_image(vllm_server, fake_closed_api, sample_images, tiny_settings):
    from scalecap.backends.base import CapabilityError

    fake = fake_closed_api()
    closed = ModelConfig(backend="openai", model="gpt-fake", api_base=fake.api_base)
    backend = OpenAIBackend(closed)
    caps = backend.capabilities  # the lazy, blocking probe
    assert not caps.can_score and caps.vision and not caps.can_constrain and caps.context_window is None
    fake.bodies.clear()
    with pytest.raises(CapabilityError, match="prompt log-probs"):
        ScaleCap(captioner=server_config(vllm_server), scorer=closed, writer=server_config(vllm_server), **tiny_settings)
    assert not any("image_url" in json.dumps(b) for b in fake.bodies)
    # as the writer it works: vLLM-only fields (repetition_penalty, structured_outputs) are not sent to it
    sc = ScaleCap(captioner=server_config(vllm_server), scorer=server_config(vllm_server), writer=closed,
                  budget=1, tau=-1.0, **tiny_settings)
    assert not sc.constrained
    r = sc.caption(sample_images["rocket"])
    assert r.status == "ok", r.error
    assert [q.object for q in r.questions] == ["cat", "cat"] and r.final_caption.startswith("Describe more")


def test_self_correction_and_auto_budget_all_roles_on_the_server(vllm_server, fault_proxy, sample_images,
                                                                 tiny_settings):
    """The self-correction stage and the adaptive budget end to end on vLLM (through a recording
    proxy): the correction turn goes out as one conversation (image in the first user turn, the final
    caption as the assistant's reply, the correction prompt last), its reply is rated under P_cap
    like a first caption, and the record's corrected caption and diff follow from the rated sentences."""
    from scalecap.correction import kept_text, sentence_diff
    from scalecap.prompts import load_preset
    from scalecap.text.sentences import split_sentences

    prompts = load_preset("paper")
    cfg = ModelConfig(backend="openai", model=SERVED_NAME, api_base=fault_proxy.api_base)
    sc = ScaleCap(captioner=cfg, scorer=cfg, writer=cfg, budget="auto:4", wave_size=2, self_correct=True,
                  max_tokens_correction=32, tau=-1.0, **tiny_settings)
    r = sc.caption(sample_images["astronaut"])
    assert r.status == "ok", r.error
    b = r.adaptive_budget
    assert b is not None and b.max_objects == 4 and b.asked <= 4 and b.saved == b.planned - b.asked
    assert [o for w in b.waves for o in w.objects] == [q.object for q in r.questions if q.kind == "object"]
    assert r.final_caption, "the tiny VLM wrote no final caption: nothing to re-check"

    (rnd,) = r.correction.rounds
    assert rnd.input == r.final_caption and rnd.output and rnd.sentences
    assert [s.text for s in rnd.sentences] == [s.text for s in split_sentences(rnd.output)]
    for s in rnd.sentences:  # each sentence rated: its span in the reply, real scores, kept iff over tau
        assert rnd.output[s.start:s.end] == s.text
        assert s.kept == (s.score is not None and s.score > -1.0)
    assert rnd.accepted == any(s.kept for s in rnd.sentences)
    assert r.corrected_caption == rnd.caption == (kept_text(rnd.output, rnd.sentences) if rnd.accepted
                                                  else r.final_caption)
    before = [s.text for s in split_sentences(r.final_caption)]
    after = [s.text for s in split_sentences(r.corrected_caption)]
    expected = sentence_diff(before, after, [s.text for s in rnd.sentences if not s.kept])
    assert r.correction.diff == rnd.diff == expected
    assert set(expected.added) | set(expected.kept) == set(after)
    assert r.usage["correction"].calls == 1 and r.usage["correction"].completion_tokens > 0
    assert r.usage["correction_rating"].calls + r.usage["correction_rating"].reused == 2

    # what went over the wire: the correction request is one conversation with the image in front
    bodies = [json.loads(b) for b in fault_proxy.bodies if b and b'"messages"' in b]
    (turn,) = [b for b in bodies if b["messages"][-1]["role"] == "user"
               and b["messages"][-1]["content"] == prompts.correct]
    roles = [m["role"] for m in turn["messages"]]
    assert roles == ["system", "user", "assistant", "user"]
    first = turn["messages"][1]["content"]
    assert [p["type"] for p in first] == ["image_url", "text"] and first[1]["text"] == prompts.caption
    assert first[0]["image_url"]["url"].startswith("data:image/bmp;base64,")  # vLLM decodes BMP (images_http.py)
    assert turn["messages"][2]["content"] == r.final_caption
    assert sum("image_url" in json.dumps(m) for m in turn["messages"]) == 1
    # the rating of the corrected sentences conditions on P_cap alone, never on the correction turn
    rated = [b for b in bodies if b.get("add_generation_prompt") is False
             and b["messages"][-1]["content"] == rnd.output]
    assert rated and all(prompts.correct not in json.dumps(b["messages"]) for b in rated)
