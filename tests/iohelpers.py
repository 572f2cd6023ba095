"""Helpers shared by the I/O, run and Ray tests: an instant fake captioner (for the I/O machinery
only), small images, CLI arguments for the tiny models."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

from PIL import Image

from scalecap.records import CaptionResult, Fingerprint, StageUsage


def make_fingerprint(fid: str = "fake-fp-1") -> Fingerprint:
    return Fingerprint(id=fid, scalecap_version="test", models={}, prompt_preset="paper", prompt_hash="x",
                       score_mode="prob", tau=0.1, budget=None, tagger="none", settings={})


class FakeCaptioner:
    """Instant stand-in for ScaleCap where only the I/O machinery is under test: reads the bytes,
    decodes the header, and 'captions' with the image size. ``fail_ids`` fail like a model error."""

    def __init__(self, fid: str = "fake-fp-1", fail_ids: set[str] | None = None) -> None:
        self.fingerprint = make_fingerprint(fid)
        self.calls: list[str] = []
        self.fail_ids = set(fail_ids or ())

    async def caption_item(self, item) -> CaptionResult:
        self.calls.append(item.id)
        r = CaptionResult(id=item.id, source=item.source, status="ok", meta=dict(item.meta),
                          fingerprint=self.fingerprint)
        try:
            data = item.read_bytes()
            size = Image.open(io.BytesIO(data)).size
        except Exception as exc:  # noqa: BLE001
            r.status, r.error, r.error_kind = "failed", str(exc), "not_an_image"
            return r
        if item.id in self.fail_ids:
            r.status, r.error, r.error_kind = "failed", "model exploded", "model"
            return r
        r.final_caption = f"A picture of {size[0]}x{size[1]} pixels ({item.id})."
        r.usage = {"caption": StageUsage(calls=1, prompt_tokens=100, completion_tokens=20),
                   "caption_rating": StageUsage(calls=2, prompt_tokens=240),
                   "final": StageUsage(calls=1, prompt_tokens=50, completion_tokens=30)}
        return r


def png_bytes(w: int = 32, h: int = 24, color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, "PNG")
    return buf.getvalue()


def jpeg_bytes(w: int = 32, h: int = 24, color=(30, 200, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, "JPEG")
    return buf.getvalue()


def _webp() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(buf, "WEBP")
    return buf.getvalue()


def _gif() -> bytes:
    buf = io.BytesIO()
    Image.new("P", (16, 16)).save(buf, "GIF")
    return buf.getvalue()


def copy_photos(tmp_path_factory, sample_images, names: list[str], folder: str) -> Path:
    """A fresh folder (its name may hold spaces and non-ASCII) with copies of the wheel's sample photos."""
    src = next(iter(sample_images.values())).parent
    d = tmp_path_factory.mktemp("photos") / folder
    d.mkdir()
    for n in names:
        shutil.copyfile(src / n, d / n)
    return d


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]



def model_args(tiny_models, *extra) -> list[str]:
    """CLI arguments binding the tiny models, with small limits (fast on a CPU)."""
    vlm = str(tiny_models["qwen2vl"])
    sets = ["max_tokens_caption=24", "max_tokens_instructions=24", "max_tokens_answer=16", "max_tokens_summary=24"]
    return ["--captioner", vlm, "--scorer", vlm, "--writer", str(tiny_models["qwen2"]), "--budget", "1",
            *[a for s in sets for a in ("--set", s)], *extra]


class FakeFactory:
    """A picklable factory of FakeCaptioner (for Ray actors)."""

    def __init__(self, fid: str = "fake-fp-1", fail_ids=()) -> None:
        self.fid, self.fail_ids = fid, set(fail_ids)

    def __call__(self) -> FakeCaptioner:
        return FakeCaptioner(self.fid, self.fail_ids)


class FileServer:
    """A fake model server whose state lives in a file, so that Ray actors and the test share it:
    ``up``, ``auth`` (refuses the key) or ``down N`` (refuses connections; the N-th probe finds it
    back up). ``check`` is the probe a pausing run calls."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def state(self) -> list[str]:
        return Path(self.path).read_text().split()

    async def check(self) -> None:
        from scalecap.backends.base import BackendError

        state = self.state()
        if state[0] == "down":
            left = int(state[1]) - 1
            Path(self.path).write_text("up" if left <= 0 else f"down {left}")
            if left > 0:
                raise BackendError("GET /v1/models to fake failed: connection refused", "backend_unreachable")
        elif state[0] == "auth":
            raise BackendError("GET /v1/models to fake failed: HTTP 401", "backend_auth")


class FileServerCaptioner(FakeCaptioner):
    """A FakeCaptioner on a ``FileServer``: captions while it is up, else fails as a client of a dead
    server (``backend_unreachable``) or with a refused key (``backend_auth``) would."""

    def __init__(self, fid: str, path: Path) -> None:
        super().__init__(fid)
        self.server = FileServer(path)
        self.backends = {"captioner": self.server}

    async def caption_item(self, item) -> CaptionResult:
        state = self.server.state()[0]
        if state == "up":
            return await super().caption_item(item)
        self.calls.append(item.id)
        return CaptionResult(id=item.id, source=item.source, status="failed", fingerprint=self.fingerprint,
                             error_kind="backend_unreachable" if state == "down" else "backend_auth",
                             error="POST /v1/chat/completions to fake failed after 7 attempt(s)")


class FileServerFactory:
    """A picklable factory of FileServerCaptioner (for Ray actors)."""

    def __init__(self, fid: str, path: Path) -> None:
        self.fid, self.path = fid, str(path)

    def __call__(self) -> FileServerCaptioner:
        return FileServerCaptioner(self.fid, Path(self.path))
