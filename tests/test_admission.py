"""Images admitted by request demand (admission.py): with model servers the number of images in
flight follows the servers' room, not a fixed 8; ``--concurrency N`` still fixes it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from iohelpers import png_bytes
from scalecap import ScaleCap
from scalecap.admission import DEFAULT_IMAGES, MAX_IMAGES, admission_for
from scalecap.run import CaptionJob, run_job
from scalecap.testing.scripted import ScriptedBackend


@dataclasses.dataclass
class ServedScripted(ScriptedBackend):
    """A scripted model that reports demand like the HTTP backend, and records what it saw at once."""

    target: int = 32
    demand: int = 0
    peak_demand: int = 0
    peak_images: int = 0
    _images: dict = dataclasses.field(default_factory=dict)

    async def _counted(self, prompt, call):
        key = prompt.image.key if prompt.image is not None else None
        self.demand += 1
        if key:
            self._images[key] = self._images.get(key, 0) + 1
        self.peak_demand = max(self.peak_demand, self.demand)
        self.peak_images = max(self.peak_images, len(self._images))
        try:
            return await call
        finally:
            self.demand -= 1
            if key:
                self._images[key] -= 1
                if not self._images[key]:
                    del self._images[key]

    async def generate(self, prompt, params):
        return await self._counted(prompt, super().generate(prompt, params))

    async def score(self, prompt, text):
        return await self._counted(prompt, super().score(prompt, text))


@pytest.fixture
def photos(tmp_path) -> Path:
    d = tmp_path / "photos"
    d.mkdir()
    for i in range(40):
        (d / f"p{i:02d}.png").write_bytes(png_bytes(8 + i, 8, (i * 5, 90, 200 - i * 4)))
    return d


def _model(target: int, delay: float = 0.02) -> ServedScripted:
    return ServedScripted(rules=[(r"Sentence", "Describe more details about the cup.\n")],
                          default="A cup stands on a table.", delay=delay, target=target)


def _run(model, photos, out, concurrency=None):
    # the lexicon tagger: spaCy worker processes starting up would hold images in a phase with no requests
    sc = ScaleCap(captioner=model, scorer=model, writer=model, budget=2, tau=-1.0, tagger="lexicon")
    summary = run_job(sc, CaptionJob(inputs=[str(photos)], output=out, concurrency=concurrency))
    assert summary.ok == 40 and summary.exit_code == 0
    return sc


def test_servers_with_room_get_more_images_than_the_fixed_default(photos, tmp_path):
    # calls of 60 ms: an image lasts ~0.6 s, admission adds one every 20 ms, so ~30 could be in flight
    # (20 ms calls left the margin over 8 thin enough for a loaded machine to fail it once)
    model = _model(target=64, delay=0.06)
    sc = _run(model, photos, tmp_path / "a.jsonl")
    assert admission_for(sc, None).max_images == MAX_IMAGES
    assert model.peak_images > DEFAULT_IMAGES, model.peak_images  # the room was used


def test_a_full_server_holds_new_images_back(photos, tmp_path):
    model = _model(target=3)
    _run(model, photos, tmp_path / "b.jsonl")
    # A new image starts only while fewer than 3 requests want to go; each image in flight has
    # one request or more waiting, so only a few images are ever in flight together.
    assert model.peak_images <= 4, model.peak_images


def test_a_fixed_concurrency_is_kept_and_in_process_models_get_the_default(photos, tmp_path):
    model = _model(target=64)
    _run(model, photos, tmp_path / "c.jsonl", concurrency=2)
    assert model.peak_images <= 2
    plain = ScriptedBackend(default="A cup.")
    sc = ScaleCap(captioner=plain, scorer=plain, writer=plain, budget=1)
    assert admission_for(sc, None).max_images == DEFAULT_IMAGES and admission_for(sc, None).admit is None
    with pytest.raises(ValueError):
        admission_for(sc, 0)
