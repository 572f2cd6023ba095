"""OpenAIBackend against a stdlib fake of a vLLM server (``FakeVLLM`` in conftest): no vLLM needed,
so these run in every ``make test`` and ``make test-fast``. What goes over the wire (decoding
settings, scoring fields, the image) and what comes back (parsed log-probs, offsets, usage)."""

from __future__ import annotations

import json
import math

import pytest

from scalecap import ScaleCap
from scalecap.backends.base import BackendError, ChatPrompt, GenerationParams
from scalecap.backends.openai_compat import OpenAIBackend
from scalecap.config import ModelConfig
from scalecap.images import ImageItem, image_ref

pytestmark = pytest.mark.timeout(120)

#: ASCII, a newline, and characters beyond the BMP and beyond ASCII.
TEXT = "A red car.\nThe wörld is 🚀 big!"


def cfg(fake, **kw) -> ModelConfig:
    return ModelConfig(backend="openai", model=fake.MODEL, api_base=fake.api_base, local_tokenizer=False,
                       backoff_base=0.01, backoff_max=0.02, **kw)


@pytest.fixture(scope="module")
def astronaut(sample_images):
    return image_ref(sample_images["astronaut"].read_bytes())[0]


def chat_bodies(fake, scoring: bool) -> list[dict]:
    return [b for b in fake.bodies if ("prompt_logprobs" in b) == scoring]


async def test_probe_reads_the_fake_server(fake_vllm):
    backend = OpenAIBackend(cfg(fake_vllm))
    caps = await backend.probe()
    assert (caps.vision, caps.can_score, caps.can_constrain, caps.has_logits) == (True, True, True, False)
    assert caps.context_window == 4096 and backend.server == "vllm"
    assert backend.count_tokens(TEXT) == len(TEXT)  # the server's /tokenize: one token per character
    await backend.aclose()


async def test_generation_requests_carry_every_decoding_setting(fake_vllm, astronaut):
    backend = OpenAIBackend(cfg(fake_vllm))
    await backend.probe()
    fake_vllm.bodies.clear()
    fake_vllm.reply = lambda body: "A cat on a mat."
    params = GenerationParams(max_tokens=17, temperature=0.35, top_p=0.85, repetition_penalty=1.15, seed=7,
                              stop=("\n\n",))
    g = await backend.generate(ChatPrompt("Describe the image.", "You are helpful.", astronaut), params)
    assert (g.text, g.completion_tokens, g.finish_reason) == ("A cat on a mat.", 15, "stop")
    (body,) = fake_vllm.bodies
    assert {k: body[k] for k in ("model", "max_tokens", "temperature", "top_p", "repetition_penalty", "seed", "stop")} \
        == {"model": "fake-vlm", "max_tokens": 17, "temperature": 0.35, "top_p": 0.85, "repetition_penalty": 1.15,
            "seed": 7, "stop": ["\n\n"]}
    system, user = body["messages"]
    assert system == {"role": "system", "content": "You are helpful."}
    image, question = user["content"]  # the image before the question (prefix-friendly)
    assert image["image_url"]["url"].startswith("data:image/bmp;base64,") and question["text"] == "Describe the image."
    prompt, _ = fake_vllm.template(body["messages"])
    assert g.prompt_tokens == len(prompt)
    # a regex goes as vLLM's structured_outputs
    await backend.generate(ChatPrompt("List."), GenerationParams(max_tokens=9, regex=r"Describe [a-z]+\."))
    assert fake_vllm.bodies[-1]["structured_outputs"] == {"regex": r"Describe [a-z]+\."}
    await backend.aclose()


async def test_a_closed_api_gets_png_images_and_vllm_gets_the_same_pixels_as_bmp(fake_closed_api, fake_vllm, astronaut):
    """BMP only where the server decodes it with PIL (images_http.py); the pixels are equal either way."""
    import base64
    import io

    from PIL import Image

    closed = fake_closed_api()
    api = OpenAIBackend(ModelConfig(backend="openai", model="gpt-fake", api_base=closed.api_base))
    await api.probe()
    await api.generate(ChatPrompt("Describe the image.", None, astronaut), GenerationParams(max_tokens=5))
    png_url = closed.bodies[-1]["messages"][0]["content"][0]["image_url"]["url"]
    assert api.server == "unknown" and png_url.startswith("data:image/png;base64,")
    vllm = OpenAIBackend(cfg(fake_vllm))
    await vllm.probe()
    fake_vllm.reply = lambda body: "A cat."
    await vllm.generate(ChatPrompt("Describe the image.", None, astronaut), GenerationParams(max_tokens=5))
    bmp_url = fake_vllm.bodies[-1]["messages"][0]["content"][0]["image_url"]["url"]
    assert bmp_url.startswith("data:image/bmp;base64,")
    pixels = [Image.open(io.BytesIO(base64.b64decode(u.split(",", 1)[1]))) for u in (png_url, bmp_url)]
    assert [im.format for im in pixels] == ["PNG", "BMP"] and pixels[0].mode == pixels[1].mode == "RGB"
    assert pixels[0].tobytes() == pixels[1].tobytes()
    await api.aclose()
    await vllm.aclose()


@pytest.mark.parametrize("with_image", [True, False])
async def test_scores_are_the_servers_prompt_logprobs_of_the_text(fake_vllm, astronaut, with_image):
    backend = OpenAIBackend(cfg(fake_vllm))
    await backend.probe()
    fake_vllm.bodies.clear()
    prompt = ChatPrompt("Describe the image.", "You are helpful.", astronaut if with_image else None)
    s = await backend.score(prompt, TEXT)
    assert s.token_ids == tuple(ord(c) for c in TEXT)
    assert s.offsets == tuple((i, i + 1) for i in range(len(TEXT)))
    assert s.logprobs == tuple(fake_vllm.logprob(c, with_image) for c in TEXT)
    assert s.logits is None
    (body,) = fake_vllm.bodies
    assert {k: body[k] for k in ("max_tokens", "temperature", "prompt_logprobs", "add_generation_prompt",
                                 "continue_final_message")} == \
        {"max_tokens": 1, "temperature": 0, "prompt_logprobs": 0, "add_generation_prompt": False,
         "continue_final_message": True}
    assert body["messages"][-1] == {"role": "assistant", "content": TEXT}  # the text teacher-forced as the reply
    assert s.prompt_tokens == len(fake_vllm.template(body["messages"])[0])
    await backend.aclose()


async def test_500s_are_retried_then_reported(fake_vllm):
    backend = OpenAIBackend(cfg(fake_vllm, max_retries=3))
    await backend.probe()
    fake_vllm.fail_next = 2
    g = await backend.generate(ChatPrompt("Hello?"), GenerationParams(max_tokens=4))
    assert g.text == "A red car." and backend.retries == 2 and fake_vllm.fail_next == 0
    fake_vllm.fail_next = 10
    with pytest.raises(BackendError, match=r"failed after 2 attempt\(s\): HTTP 500: injected failure"):
        await OpenAIBackend(cfg(fake_vllm, max_retries=1)).generate(ChatPrompt("Hi"), GenerationParams(max_tokens=2))
    await backend.aclose()


async def test_the_pipeline_sends_each_roles_decoding_settings(fake_vllm, sample_images):
    """All three roles on the fake: captioner requests carry the captioner's settings, writer requests
    the writer's, scoring requests are greedy; the record's sentence scores are p - p' of the fake."""
    def reply(body):
        if "structured_outputs" in body:
            return "Describe more details about the car.\n"
        if isinstance(body["messages"][-1]["content"], list):  # about the image: caption or answer
            return "A red car is parked. It shines."
        return "A shiny red car is parked."

    fake_vllm.reply = reply
    c = cfg(fake_vllm)
    sc = ScaleCap(captioner=c, scorer=c, writer=c, budget=1, tau=0.05, tagger="lexicon", temperature=0.2, top_p=0.9,
                  repetition_penalty=1.1, writer_temperature=0.6, writer_top_p=0.7, writer_repetition_penalty=1.3)
    r = await sc.caption_item(ImageItem.from_path(sample_images["chelsea"], id="chelsea"))
    assert r.status == "ok", r.error
    assert r.final_caption == "A shiny red car is parked."
    generations = [b for b in chat_bodies(fake_vllm, scoring=False) if b["max_tokens"] > 1]  # not the probes
    with_image = [b for b in generations if isinstance(b["messages"][-1]["content"], list)]
    text_only = [b for b in generations if not isinstance(b["messages"][-1]["content"], list)]
    assert len(with_image) == 3  # the caption and the two answers (object and position)
    assert len(text_only) >= 4  # instructions, two summaries, the final caption
    for b in with_image:
        assert (b["temperature"], b["top_p"], b["repetition_penalty"]) == (0.2, 0.9, 1.1)
    for b in text_only:
        assert (b["temperature"], b["top_p"], b["repetition_penalty"]) == (0.6, 0.7, 1.3)
    for b in chat_bodies(fake_vllm, scoring=True):
        assert (b["temperature"], b["max_tokens"]) == (0, 1)
    first = "A red car is parked. It shines."
    assert r.first_caption == first and len(r.sentences) == 2
    assert [(q.object, q.kind) for q in r.questions] == [("car", "object"), ("car", "position")]

    def diff(ch: str) -> float:
        return math.exp(fake_vllm.logprob(ch, True)) - math.exp(fake_vllm.logprob(ch, False))

    for s in r.sentences:
        assert s.text == first[s.start:s.end]
        # the score is the difference of one of the sentence's own characters (a content token's)
        assert s.score is not None and any(abs(s.score - diff(ch)) < 1e-12 for ch in s.text)
        assert s.kept == (s.score > 0.05)
    await sc.aclose()


def test_an_outage_mid_run_is_paused_through_and_no_image_fails(fake_vllm, tmp_path):
    """The whole path on the wire: dropped connections -> ``backend_unreachable`` after the retries ->
    the breaker trips -> the run pauses, probes ``/v1/models`` until the server is back -> resumes."""
    from iohelpers import png_bytes

    from scalecap.outage import OutagePolicy
    from scalecap.progress import JobProgress
    from scalecap.run import CaptionJob, run_job

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(6):
        (folder / f"i{i}.png").write_bytes(png_bytes(16 + i, 16))
    fake_vllm.reply = lambda body: ("Describe more details about the car.\n" if "structured_outputs" in body
                                    else "A red car is parked.")
    fake_vllm.outage.up_after_probes = 3
    c = cfg(fake_vllm, max_retries=1)
    sc = ScaleCap(captioner=c, scorer=c, writer=c, budget=1, tau=0.05, tagger="lexicon")
    lines: list[str] = []
    progress = JobProgress()
    progress.notice = lines.append

    def outage_after_two(result):
        if result.status == "ok" and sum(1 for _ in open(out)) == 2:
            fake_vllm.outage.down = True

    out = tmp_path / "run.jsonl"
    s = run_job(sc, CaptionJob(inputs=[str(folder)], output=out, concurrency=2, stop_after=2,
                               outage=OutagePolicy(wait=60.0, first_probe=0.05, max_probe_interval=0.1)),
                on_result=outage_after_two, progress=progress)
    assert fake_vllm.outage.dropped > 0 and fake_vllm.outage.probes_while_down == 3 and not fake_vllm.outage.down
    assert (s.ok, s.failed, s.stopped, s.exit_code) == (6, 0, None, 0), s.failures
    # (aiohttp may send a GET again on a dropped keep-alive connection: a probe is 1 or 2 GETs)
    assert [p["outcome"] for p in s.pauses] == ["resumed"] and s.pauses[0]["probes"] >= 2
    assert len(lines) == 2 and lines[0].startswith("paused: 2 images in a row failed with backend_unreachable")
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in records) == [f"i{i}.png" for i in range(6)] and all(r["status"] == "ok" for r in records)
