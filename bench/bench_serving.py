"""Serving benchmark: ScaleCap through a real vLLM OpenAI server, our engine vs the reference strategy.

Both strategies make exactly the same calls (same prompts, same budget N, same images, same server,
same backend code); only the scheduling differs:

- reference: what the authors' code does -- one image at a time, each call waiting for the previous
  one (caption, then each rating pass, each question, each answer, then the object summary, *then*
  the position summary). Implemented by running the pipeline at engine concurrency 1 behind a
  backend wrapper that holds a lock around every call, so no two calls ever overlap.
- ours: ``Engine`` with many images in flight; within an image the pipeline's own concurrency
  (answers in parallel, both rating passes at once, the two summaries at once).

Between the two timed runs the server's prefix, multimodal and encoder caches are reset (the bench
starts its server with ``VLLM_SERVER_DEV_MODE=1`` for those endpoints), so neither run inherits the
other's cache. The reference run is also instrumented: ``/metrics`` is read around every call (the
time this takes is subtracted from its wall time) to get the prefix-cache hit rate per request kind,
in particular for the question (answer) requests that share an image prefix.

Usage (starts its own server on a free port with the tiny Qwen2-VL and stops it by PID):
    .venv/bin/python bench/bench_serving.py [--images 8] [--budget 4] [--concurrency 8]
or against a running server:  --api-base http://127.0.0.1:8000/v1 --model NAME
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx

from scalecap import ScaleCap
from scalecap.backends.base import Capabilities, ChatPrompt, Generation, GenerationParams, TokenScores
from scalecap.backends.openai_compat import OpenAIBackend
from scalecap.config import ModelConfig
from scalecap.engine import Engine
from scalecap.images import ImageItem

SETTINGS = dict(max_tokens_caption=48, max_tokens_instructions=40, max_tokens_answer=32, max_tokens_summary=48, tau=-1.0)
PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "hubble_deep_field.jpg", "retina.jpg",
          "motorcycle_left.png", "ihc.png", "page.png", "text.png", "brick.png", "grass.png", "gravel.png",
          "color.png", "motorcycle_right.png", "coins.png"]
WARMUP = "camera.png"
COUNTERS = ("vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total",
            "vllm:mm_cache_hits_total", "vllm:mm_cache_queries_total")


# ---------------------------------------------------------------------- server
def start_server(model_dir: Path, workdir: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1",
           "DO_NOT_TRACK": "1", "VLLM_CACHE_ROOT": str(workdir / "cache"), "VLLM_SERVER_DEV_MODE": "1"}
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
           "--served-model-name", "tiny-qwen2vl", "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
           "--enforce-eager", "--max-model-len", "2048", "--limit-mm-per-prompt", '{"image":4,"video":0}']
    with open(workdir / "server.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    root = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited; see {workdir / 'server.log'}")
        try:
            if httpx.get(root + "/health", timeout=2).status_code == 200:
                return proc, root
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop_server(proc)
    raise RuntimeError("server did not become healthy in 300 s")


def stop_server(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


def counters(root: str) -> dict[str, float]:
    """Sum each counter over its label sets from the Prometheus text at /metrics."""
    out = dict.fromkeys(COUNTERS, 0.0)
    for line in httpx.get(root + "/metrics", timeout=10).text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in out:
            out[name] += float(line.rsplit(" ", 1)[1])
    return out


def reset_caches(root: str) -> bool:
    ok = True
    for path in ("/reset_prefix_cache", "/reset_mm_cache", "/reset_encoder_cache"):
        try:
            ok &= httpx.post(root + path, timeout=30).status_code < 300
        except httpx.HTTPError:
            ok = False
    return ok


def rate(hits: float, queries: float) -> float | None:
    return round(hits / queries, 4) if queries else None


# ---------------------------------------------------------------------- the reference strategy
class Sequential:
    """A backend wrapper that lets one call run at a time (the reference strategy) and, if asked,
    reads the server's cache counters around each call, by request kind."""

    def __init__(self, inner: OpenAIBackend, root: str | None = None) -> None:
        self.inner, self.root = inner, root
        self.lock = asyncio.Lock()
        self.by_kind: dict[str, dict[str, float]] = {}
        self.instrument_seconds = 0.0

    @property
    def capabilities(self) -> Capabilities:
        return self.inner.capabilities

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def generate(self, prompt: ChatPrompt, params: GenerationParams) -> Generation:
        if prompt.image is None:
            kind = "writer"
        else:
            kind = "question" if prompt.user.startswith("Describe more details") else "caption"
        return await self._run(kind, self.inner.generate(prompt, params))

    async def score(self, prompt: ChatPrompt, text: str) -> TokenScores:
        return await self._run("score_image" if prompt.image is not None else "score_text", self.inner.score(prompt, text))

    async def _run(self, kind: str, call: Any) -> Any:
        async with self.lock:
            before = await self._snapshot()
            result = await call
            after = await self._snapshot()
            if before is not None and after is not None:
                acc = self.by_kind.setdefault(kind, {"calls": 0.0, **dict.fromkeys(COUNTERS, 0.0)})
                acc["calls"] += 1
                for k in COUNTERS:
                    acc[k] += after[k] - before[k]
            return result

    async def _snapshot(self) -> dict[str, float] | None:
        if self.root is None:
            return None
        t0 = time.perf_counter()
        snap = await asyncio.to_thread(counters, self.root)
        self.instrument_seconds += time.perf_counter() - t0
        return snap


# ---------------------------------------------------------------------- runs
def items(folder: Path, names: list[str]) -> list[ImageItem]:
    return [ImageItem.from_path(folder / n, id=n) for n in names]


async def run(sc: ScaleCap, batch: list[ImageItem], concurrency: int) -> tuple[float, list[Any]]:
    t0 = time.perf_counter()
    results = [r async for r in Engine(sc, concurrency=concurrency).run(batch)]
    return time.perf_counter() - t0, results


async def main_async(args: argparse.Namespace, api_base: str, root: str) -> dict[str, Any]:
    from skimage import data as skdata

    folder = Path(skdata.__file__).parent
    names = (PHOTOS * (args.images // len(PHOTOS) + 1))[: args.images]
    config = ModelConfig(backend="openai", model=args.model, api_base=api_base, max_concurrency=64)
    settings = dict(SETTINGS, budget=args.budget)

    ours_backend = OpenAIBackend(config)
    await ours_backend.probe()
    sc_ours = ScaleCap(captioner=ours_backend, scorer=ours_backend, writer=ours_backend, **settings)
    await run(sc_ours, items(folder, [WARMUP]), 1)  # first image request warms the server up

    reset_ok = reset_caches(root)
    ref = Sequential(OpenAIBackend(config), root)
    await ref.inner.probe()
    sc_ref = ScaleCap(captioner=ref, scorer=ref, writer=ref, **settings)
    t_ref_wall, res_ref = await run(sc_ref, items(folder, names), 1)
    t_ref = t_ref_wall - ref.instrument_seconds

    reset_caches(root)
    before = counters(root)
    t_ours, res_ours = await run(sc_ours, items(folder, names), args.concurrency)
    after = counters(root)
    await ours_backend.aclose()
    await ref.aclose()

    ok_ref = sum(r.status == "ok" for r in res_ref)
    ok_ours = sum(r.status == "ok" for r in res_ours)
    same = sum(a.final_caption == b.final_caption for a, b in
               zip(sorted(res_ref, key=lambda r: r.id), sorted(res_ours, key=lambda r: r.id)))
    questions = sum(len(r.questions) for r in res_ours)
    d = {k: after[k] - before[k] for k in COUNTERS}
    by_kind = {kind: {"calls": int(v["calls"]),
                      "prefix_hit_rate": rate(v["vllm:prefix_cache_hits_total"], v["vllm:prefix_cache_queries_total"]),
                      "mm_hit_rate": rate(v["vllm:mm_cache_hits_total"], v["vllm:mm_cache_queries_total"])}
               for kind, v in sorted(ref.by_kind.items())}
    return {
        "images": args.images, "budget_N": args.budget, "concurrency": args.concurrency,
        "questions_per_image": round(questions / max(1, len(res_ours)), 2),
        "ok": {"reference": ok_ref, "ours": ok_ours}, "identical_final_captions": same,
        "seconds": {"reference": round(t_ref, 2), "ours": round(t_ours, 2)},
        "images_per_minute": {"reference": round(60 * args.images / t_ref, 2), "ours": round(60 * args.images / t_ours, 2)},
        "speedup": round(t_ref / t_ours, 2),
        "caches_reset_between_runs": reset_ok,
        "reference_by_request_kind": by_kind,
        "ours_whole_run": {"prefix_hit_rate": rate(d["vllm:prefix_cache_hits_total"], d["vllm:prefix_cache_queries_total"]),
                           "mm_hit_rate": rate(d["vllm:mm_cache_hits_total"], d["vllm:mm_cache_queries_total"])},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--budget", type=int, default=4, help="N, object questions per image (each with its position twin)")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--api-base", default=None, help="use a running server instead of starting one")
    p.add_argument("--model", default="tiny-qwen2vl")
    args = p.parse_args()
    proc = None
    try:
        if args.api_base:
            api_base = args.api_base.rstrip("/")
            root = api_base.removesuffix("/v1")
        else:
            from scalecap.testing.tiny_models import build_tiny_models

            repo = Path(__file__).resolve().parent.parent
            models = build_tiny_models(Path(os.environ.get("SCALECAP_TEST_MODELS", repo / ".cache" / "test-models")),
                                       ("qwen2vl",))
            workdir = Path(tempfile.mkdtemp(prefix="bench_serving_"))
            t0 = time.perf_counter()
            proc, root = start_server(Path(models["qwen2vl"]).resolve(), workdir)
            print(f"server up in {time.perf_counter() - t0:.0f} s (log: {workdir / 'server.log'})", flush=True)
            api_base = root + "/v1"
        report = asyncio.run(main_async(args, api_base, root))
    finally:
        if proc is not None:
            stop_server(proc)
    print(json.dumps(report, indent=2))
    print(f"\nimages/minute: ours {report['images_per_minute']['ours']} vs reference "
          f"{report['images_per_minute']['reference']} -> {report['speedup']}x at N={args.budget}; "
          f"prefix-cache hit rate of question requests: "
          f"{report['reference_by_request_kind'].get('question', {}).get('prefix_hit_rate')}")


if __name__ == "__main__":
    main()
