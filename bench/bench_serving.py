"""Serving benchmark: cost per image on one real vLLM server, scalecap against a minimal client.

One run, one server (tiny Qwen2-VL, all three roles on it), the same images, in this order, with
the server's prefix, multimodal and encoder caches reset before each timed run:

1. **record**: scalecap with log-prob reuse off records every model call it makes per image
   (prompt, image, parameters, text to score). These are the calls the reference makes.
2. **reference, serial**: an independent minimal client (stdlib ``http.client``, one keep-alive
   connection per thread, ``json.dumps`` per request) replays each image's calls one after the
   other, one image at a time: the authors' call pattern, doing exactly scalecap's calls.
3. **naive concurrency**: the same client and calls with 24 images in flight (each image's calls
   still in sequence): the ceiling a simple concurrent script reaches.
4. **scalecap defaults** (images admitted by request demand, reuse on), the same with log-prob reuse
   off (the random tiny model rarely writes text whose tokens can be reused, while asking for the
   generation's log-probs costs the server a log-softmax over the vocabulary per token), then
   **--concurrency 8**
   and 5. **scalecap --concurrency 24**,
   each with its backend probed before the clock starts (start-up is not a per-image cost).

An untimed serial pass then reads ``/metrics`` around each replayed request for the prefix-cache
hit rate per request kind.

Printed: images/min of each run, the ratios to the serial and naive runs, client CPU seconds
(this process and its tagging worker processes; the server is another process), the requests each run made,
the share of with-image ratings that reused their generation's log-probs, whether scalecap's
captions equal the recording run's, and the event loop's stalls over 50 ms during the scalecap runs,
each split into time the loop thread ran (our code blocking the loop) and time it waited for a CPU
(``LoopWatch``).

Settings follow issue 11: N=5, max tokens caption 64 / answers 32 / summaries 64, photos resized to
640 px on the long side.

Usage (starts its own server on a free port and stops it by process group):
    .venv/bin/python bench/bench_serving.py [--images 24] [--budget 5] [--naive 24]
or against a running server:  --api-base http://127.0.0.1:8000/v1 --model NAME
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextvars
import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx
from PIL import Image

from scalecap import ScaleCap
from scalecap.backends.base import ChatPrompt, Generation, GenerationParams, TokenScores
from scalecap.backends.openai_compat import OpenAIBackend
from scalecap.config import ModelConfig
from scalecap.admission import admission_for
from scalecap.engine import Engine
from scalecap.images import ImageItem, image_ref

SETTINGS = dict(max_tokens_caption=64, max_tokens_instructions=40, max_tokens_answer=32, max_tokens_summary=64)
PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "hubble_deep_field.jpg", "retina.jpg",
          "motorcycle_left.png", "ihc.png", "page.png", "text.png", "brick.png", "grass.png", "gravel.png",
          "color.png", "motorcycle_right.png", "coins.png", "camera.png", "cell.png", "horse.png",
          "logo.png", "microaneurysms.png", "moon.png", "immunohistochemistry.png", "chessboard_RGB.png"]
COUNTERS = ("vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total")
CURRENT_IMAGE: contextvars.ContextVar[str] = contextvars.ContextVar("image")


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


def requests_served(root: str) -> float:
    """vLLM's count of finished requests (all kinds)."""
    total = 0.0
    for line in httpx.get(root + "/metrics", timeout=10).text.splitlines():
        if line.startswith("vllm:request_success_total"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def reset_caches(root: str) -> bool:
    ok = True
    for path in ("/reset_prefix_cache", "/reset_mm_cache", "/reset_encoder_cache"):
        try:
            ok &= httpx.post(root + path, timeout=30).status_code < 300
        except httpx.HTTPError:
            ok = False
    return ok


def rate(hits: float, queries: float) -> float | None:
    return round(hits / queries, 3) if queries else None


# ---------------------------------------------------------------------- recording scalecap's calls
@dataclass(frozen=True)
class Call:
    kind: str  # caption | question | writer | score_image | score_text
    system: str | None
    user: str
    image: str | None  # the image's PNG data URL, or None
    max_tokens: int = 1
    regex: str | None = None
    answer: str | None = None  # the text a scoring call scores


@dataclass
class Recorder:
    """A backend wrapper that notes each call under the image it is about (a context variable)."""

    inner: OpenAIBackend
    urls: dict[str, str]
    calls: dict[str, list[Call]] = field(default_factory=dict)

    @property
    def capabilities(self):
        return self.inner.capabilities

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def _note(self, call: Call) -> None:
        self.calls.setdefault(CURRENT_IMAGE.get(), []).append(call)

    def _url(self, prompt: ChatPrompt) -> str | None:
        return None if prompt.image is None else self.urls[prompt.image.key]

    async def generate(self, prompt: ChatPrompt, params: GenerationParams) -> Generation:
        kind = "writer" if prompt.image is None else (
            "question" if prompt.user.startswith("Describe more details") else "caption")
        self._note(Call(kind, prompt.system, prompt.user, self._url(prompt), params.max_tokens, params.regex))
        return await self.inner.generate(prompt, params)

    async def score(self, prompt: ChatPrompt, text: str) -> TokenScores:
        kind = "score_image" if prompt.image is not None else "score_text"
        self._note(Call(kind, prompt.system, prompt.user, self._url(prompt), answer=text))
        return await self.inner.score(prompt, text)


class Tagged:
    """Runs each item with CURRENT_IMAGE set, so writer calls (no image) are attributed too."""

    def __init__(self, sc: ScaleCap) -> None:
        self.sc = sc

    async def caption_item(self, item: ImageItem):
        CURRENT_IMAGE.set(item.id)
        return await self.sc.caption_item(item)


# ---------------------------------------------------------------------- the minimal client
class MinimalClient:
    """What a simple script does: stdlib HTTP, one keep-alive connection per thread, a JSON body
    built per request, no retries, no tokenizer, no rating logic."""

    def __init__(self, api_base: str, model: str, root: str | None = None) -> None:
        parts = urlsplit(api_base)
        self.host, self.port, self.path = parts.hostname, parts.port, parts.path
        self.model, self.root = model, root
        self.local = threading.local()
        self.by_kind: dict[str, list[float]] = {}
        self.instrument_seconds = 0.0

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection(self.host, self.port, timeout=600)
        conn.request("POST", self.path + "/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status >= 300:
            raise RuntimeError(f"HTTP {resp.status}: {data[:200]!r}")
        return json.loads(data)

    def body(self, call: Call) -> dict[str, Any]:
        messages: list[dict[str, Any]] = [] if call.system is None else [{"role": "system", "content": call.system}]
        if call.image is None:
            messages.append({"role": "user", "content": call.user})
        else:
            messages.append({"role": "user", "content": [{"type": "image_url", "image_url": {"url": call.image}},
                                                         {"type": "text", "text": call.user}]})
        if call.answer is not None:
            messages.append({"role": "assistant", "content": call.answer})
            return {"model": self.model, "messages": messages, "add_generation_prompt": False,
                    "continue_final_message": True, "max_tokens": 1, "temperature": 0, "prompt_logprobs": 0}
        body = {"model": self.model, "messages": messages, "max_tokens": call.max_tokens, "temperature": 0.0,
                "top_p": 1.0, "seed": 0, "repetition_penalty": 1.0}
        if call.regex:
            body["structured_outputs"] = {"regex": call.regex}
        return body

    def run_image(self, calls: list[Call], instrument: bool = False) -> None:
        for call in calls:
            before = self._snapshot() if instrument else None
            self._post(self.body(call))
            if before is not None:
                after = self._snapshot()
                acc = self.by_kind.setdefault(call.kind, [0.0, 0.0, 0.0])
                acc[0] += 1
                acc[1] += after[COUNTERS[0]] - before[COUNTERS[0]]
                acc[2] += after[COUNTERS[1]] - before[COUNTERS[1]]

    def _snapshot(self) -> dict[str, float]:
        t0 = time.perf_counter()
        snap = counters(self.root)
        self.instrument_seconds += time.perf_counter() - t0
        return snap


# ---------------------------------------------------------------------- runs
def photos(count: int, workdir: Path) -> list[Path]:
    """``count`` scikit-image photos resized to 640 px on the long side, as PNG files."""
    from skimage import data as skdata

    folder = Path(skdata.__file__).parent
    names = [n for n in PHOTOS if (folder / n).is_file()]
    out = []
    for i in range(count):
        name = names[i % len(names)]
        im = Image.open(folder / name).convert("RGB")
        scale = 640 / max(im.size)
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.Resampling.BICUBIC)
        if i >= len(names):  # a repeat: change one pixel so that every image is distinct
            im.putpixel((0, 0), (i % 256, 0, 0))
        path = workdir / f"{i:03d}-{Path(name).stem}.png"
        im.save(path)
        out.append(path)
    return out


class LoopWatch:
    """Event-loop stalls, and what the loop's thread was doing during each one.

    A task on the loop beats every 5 ms; a watchdog thread notices when the beat is more than 50 ms
    old (a stall: no callback ran for that long) and, for each stall, reads the loop thread's own
    CPU clock and its run-queue wait (``/proc/self/task/<tid>/schedstat``), and samples its stack.
    So a stall is split into time the loop thread ran (our code blocking the loop: what asyncio's
    slow-callback report flags), time it waited for a CPU (runnable, but the cores were busy: the
    model server shares this machine's 2 cores), and the rest (blocked: the GIL or a system call).
    """

    def __init__(self) -> None:
        self.beat = time.perf_counter()
        self.stalls: list[dict[str, Any]] = []
        self._tid = threading.get_native_id()
        self._clock = time.pthread_getcpuclockid(threading.get_ident())
        self._ident = threading.get_ident()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _runq(self) -> float:
        try:
            with open(f"/proc/self/task/{self._tid}/schedstat") as f:
                return int(f.read().split()[1]) / 1e9
        except (OSError, IndexError, ValueError):
            return 0.0

    async def heart(self) -> None:
        while True:
            self.beat = time.perf_counter()
            await asyncio.sleep(0.005)

    def _place(self) -> str:
        import traceback

        frame = sys._current_frames().get(self._ident)
        ours = [f for f in traceback.extract_stack(frame) if "/scalecap/" in f.filename or "site-packages" in f.filename]
        return " <- ".join(f"{Path(f.filename).name}:{f.name}" for f in reversed(ours[-4:])) or "(the loop itself)"

    def _watch(self) -> None:
        stall = None
        while not self._stop.wait(0.01):
            late = time.perf_counter() - self.beat
            if late > 0.05 and stall is None:
                stall = {"beat": self.beat, "cpu": time.clock_gettime(self._clock), "runq": self._runq(),
                         "places": [self._place()]}
            elif late > 0.05:
                stall["places"].append(self._place())
            elif stall is not None:
                self.stalls.append({"ms": 1000 * (self.beat - stall["beat"]),
                                    "on_cpu_ms": 1000 * (time.clock_gettime(self._clock) - stall["cpu"]),
                                    "waiting_for_cpu_ms": 1000 * (self._runq() - stall["runq"]),
                                    "places": stall["places"]})
                stall = None

    def start(self) -> asyncio.Task:
        self.beat = time.perf_counter()
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="loop-watchdog", daemon=True)
        self._thread.start()
        return asyncio.create_task(self.heart())

    def stop(self, task: asyncio.Task) -> None:
        task.cancel()
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def summary(self) -> dict[str, Any]:
        from collections import Counter

        busy = [s for s in self.stalls if s["on_cpu_ms"] > 50]
        places = Counter(p for s in busy for p in s["places"])
        return {
            "stalls_over_50ms": len(self.stalls),
            "worst_stall_ms": round(max((s["ms"] for s in self.stalls), default=0.0), 1),
            "stall_ms_waiting_for_a_cpu": round(sum(s["waiting_for_cpu_ms"] for s in self.stalls), 1),
            "stall_ms_loop_thread_on_cpu": round(sum(s["on_cpu_ms"] for s in self.stalls), 1),
            "worst_on_cpu_ms_in_one_stall": round(max((s["on_cpu_ms"] for s in self.stalls), default=0.0), 1),
            "stalls_with_over_50ms_on_cpu (our code blocking the loop)": len(busy),
            "where the loop thread was in those": dict(places.most_common(5)),
        }


def client_cpu() -> float:
    """CPU seconds of this process and of its tagging workers (multiprocessing children), never
    of the vLLM server this script may have started."""
    return sum(cpu_split())


def cpu_split() -> tuple[float, float]:
    """(this process, its tagging worker processes) CPU seconds."""
    import psutil

    workers = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            if "multiprocessing" in " ".join(child.cmdline()):
                t = child.cpu_times()
                workers += t.user + t.system
        except psutil.Error:
            pass
    return time.process_time(), workers


async def run_scalecap(sc: Any, items: list[ImageItem], concurrency: int | None, lag: LoopWatch | None = None):
    """``concurrency`` images in flight; None: scalecap's default (admission by request demand)."""
    watcher = lag.start() if lag else None
    t0, (m0, w0) = time.perf_counter(), cpu_split()
    admission = admission_for(sc, concurrency)
    results = [r async for r in Engine(sc, admission.max_images, admission.admit).run(items)]
    m1, w1 = cpu_split()
    seconds, cpu = time.perf_counter() - t0, (m1 - m0) + (w1 - w0)
    split = (round(m1 - m0, 2), round(w1 - w0, 2))
    if watcher:
        lag.stop(watcher)
    return seconds, cpu, results, split


def replay(client: MinimalClient, calls: dict[str, list[Call]], in_flight: int, instrument: bool = False):
    t0, c0 = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(in_flight) as pool:
        list(pool.map(lambda key: client.run_image(calls[key], instrument), sorted(calls)))
    return time.perf_counter() - t0 - client.instrument_seconds, time.process_time() - c0


def scalecap(api_base: str, model: str, reuse: bool, budget: int) -> ScaleCap:
    cfg = ModelConfig(backend="openai", model=model, api_base=api_base, reuse_logprobs=reuse)
    return ScaleCap(captioner=cfg, scorer=cfg, writer=cfg, budget=budget, **SETTINGS)


def reuse_share(results: list[Any]) -> float:
    reused = sum(u.reused for r in results for k, u in r.usage.items() if k in ("caption_rating", "answer_rating"))
    ratings = sum(1 + len(r.questions) for r in results)
    return round(reused / ratings, 3) if ratings else 0.0


async def main_async(args: argparse.Namespace, api_base: str, root: str, workdir: Path) -> dict[str, Any]:
    paths = photos(args.images, workdir)
    items = [ImageItem.from_path(p) for p in paths]
    report: dict[str, Any] = {"images": args.images, "budget_N": args.budget, "settings": SETTINGS}

    # 0. warm-up: one image, so that no timed run pays the server's first-request costs
    warm = scalecap(api_base, args.model, True, args.budget)
    await run_scalecap(warm, [ImageItem.from_path(paths[0], id="warm-up")], 1)
    await warm.aclose()

    # 1. record scalecap's calls (reuse off: every rating pass is a call)
    inner = OpenAIBackend(ModelConfig(backend="openai", model=args.model, api_base=api_base, reuse_logprobs=False))
    await inner.probe()
    urls = {}
    for item in items:
        ref = image_ref(item.loader())[0]
        # the very image bytes scalecap sends (resized as the processor would, see pixel_budget.py)
        urls[ref.key] = await asyncio.to_thread(inner._images.get, ref, *inner._budget(), inner.image_format)
    rec = Recorder(inner, urls)
    sc_rec = ScaleCap(captioner=rec, scorer=rec, writer=rec, budget=args.budget, **SETTINGS)
    await sc_rec._tagging.warm()
    reset_caches(root)
    r0 = requests_served(root)
    t_rec, cpu_rec, res_rec, _ = await run_scalecap(Tagged(sc_rec), items, 8)
    runs = {"scalecap, reuse off, 8 in flight (recording)": (t_rec, cpu_rec, requests_served(root) - r0)}
    print(f"recording run: {t_rec:.1f} s, client CPU {cpu_rec:.2f} s", flush=True)
    await sc_rec.aclose()
    calls = rec.calls
    report["calls_per_image"] = round(sum(len(c) for c in calls.values()) / len(calls), 1)

    # 2-3. the minimal client: serial, naive concurrency, then an instrumented pass for cache statistics
    client = MinimalClient(api_base, args.model, root)
    for name, in_flight, instrument in (("reference pattern, serial", 1, False),
                                        (f"reference pattern, {args.naive} images in flight", args.naive, False),
                                        ("cache statistics (serial, instrumented, not timed)", 1, True)):
        reset_caches(root)
        client.instrument_seconds = 0.0
        r0 = requests_served(root)
        t, cpu = await asyncio.to_thread(replay, client, calls, in_flight, instrument)
        if not instrument:
            runs[name] = (t, cpu, requests_served(root) - r0)
            print(f"{name}: {t:.1f} s, client CPU {cpu:.2f} s", flush=True)
    report["prefix_hit_rate_by_kind (serial reference)"] = {
        kind: {"requests": int(v[0]), "prefix_hit_rate": rate(v[1], v[2])} for kind, v in sorted(client.by_kind.items())}

    # 4-5. scalecap defaults, then 24 in flight
    lag = LoopWatch()
    finals = {r.id: r.final_caption for r in res_rec}
    extra = [int(c) for c in args.also.split(",") if c.strip()] if args.also else []
    for name, concurrency, reuse in [("scalecap defaults (admission by demand)", None, True),
                                     ("scalecap defaults, log-prob reuse off", None, False),
                                     ("scalecap --concurrency 8", 8, True),
                                     (f"scalecap --concurrency {args.naive}", args.naive, True)] + [
            (f"scalecap --concurrency {c}", c, True) for c in extra]:
        sc = scalecap(api_base, args.model, reuse, args.budget)
        await sc.captioner.probe()  # start-up (probe, local tokenizer, tagging workers) is not per-image cost
        await sc._tagging.warm()
        reset_caches(root)
        r0 = requests_served(root)
        t, cpu, res, split = await run_scalecap(sc, items, concurrency, lag)
        runs[name] = (t, cpu, requests_served(root) - r0)
        print(f"{name}: {t:.1f} s, client CPU {cpu:.2f} s", flush=True)
        report.setdefault("reuse_share", {})[name] = reuse_share(res)
        report.setdefault("client_cpu_s (process, tagging workers)", {})[name] = split
        report.setdefault("final_captions_equal_recording", {})[name] = sum(finals[r.id] == r.final_caption for r in res)
        await sc.aclose()

    serial = runs["reference pattern, serial"][0]
    naive = runs[f"reference pattern, {args.naive} images in flight"][0]
    report["runs"] = {name: {"images_per_min": round(60 * args.images / t, 1), "x_serial": round(serial / t, 2),
                             "x_naive": round(naive / t, 2), "client_cpu_s": round(cpu, 2), "requests": int(n)}
                      for name, (t, cpu, n) in runs.items()}
    report["event_loop (scalecap runs)"] = lag.summary()
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=24)
    p.add_argument("--budget", type=int, default=5, help="N, object questions per image (each with its position twin)")
    p.add_argument("--naive", type=int, default=24, help="images in flight for the naive client and the last run")
    p.add_argument("--also", default="", help="more scalecap concurrencies to time, e.g. 48,96")
    p.add_argument("--api-base", default=None, help="use a running server instead of starting one")
    p.add_argument("--model", default="tiny-qwen2vl")
    args = p.parse_args()
    proc = None
    workdir = Path(tempfile.mkdtemp(prefix="bench_serving_"))
    try:
        if args.api_base:
            api_base = args.api_base.rstrip("/")
            root = api_base.removesuffix("/v1")
        else:
            from scalecap.testing.tiny_models import build_tiny_models

            repo = Path(__file__).resolve().parent.parent
            models = build_tiny_models(Path(os.environ.get("SCALECAP_TEST_MODELS", repo / ".cache" / "test-models")),
                                       ("qwen2vl",))
            t0 = time.perf_counter()
            proc, root = start_server(Path(models["qwen2vl"]).resolve(), workdir)
            print(f"server up in {time.perf_counter() - t0:.0f} s (log: {workdir / 'server.log'})", flush=True)
            api_base = root + "/v1"
        report = asyncio.run(main_async(args, api_base, root, workdir))
    finally:
        if proc is not None:
            stop_server(proc)
    print(json.dumps(report, indent=2))
    print()
    for name, r in report["runs"].items():
        print(f"{name:48s} {r['images_per_min']:7.1f} images/min  {r['x_serial']:5.2f}x serial  "
              f"{r['x_naive']:5.2f}x naive  client CPU {r['client_cpu_s']:5.2f} s  {r['requests']} requests")


if __name__ == "__main__":
    main()
