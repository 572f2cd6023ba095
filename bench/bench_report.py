"""Benchmark ``scalecap report`` on a large synthetic run (default 50,000 records).

    .venv/bin/python bench/bench_report.py                 # 50,000 records, everything
    .venv/bin/python bench/bench_report.py -n 5000 --keep /tmp/bench-report

Steps, each printed with its figures:

1. generate a synthetic run: ~8 first-caption sentences and ~10 questions (5 objects, each with its
   position twin, 1-4 rated answer sentences) per image, summaries, a final caption, usage and
   timings for every stage; 3 % failed, 2 % filtered; token-level traces on ``--tokens-fraction`` of
   the images; sources cycle over ``--images`` distinct local JPEGs (640x480), with some missing
   files and some http URLs (placeholders);
2. build the report in a fresh subprocess: wall time and peak RSS (getrusage); with --tracemalloc
   also a second build under tracemalloc for the peak of Python allocations (slower, timed apart);
3. open it in headless Chromium (Debian's /usr/bin/chromium through playwright): time to the first
   page of cards, to the sentence scores and the search index, a search, a page flip, a sorted
   page (records from many chunks), a tau change, and the JS heap.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHROMIUM = os.environ.get("SCALECAP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

OBJECTS = ["sofa", "television", "lamp", "bookshelf", "rug", "window", "plant", "coffee table", "painting",
           "dog", "cat", "bicycle", "car", "tree", "bench", "street sign", "umbrella", "cup", "laptop", "chair",
           "clock", "vase", "mirror", "curtain", "cushion", "bottle", "bus", "traffic light", "kite", "boat"]
ADJ = ["large", "small", "wooden", "red", "blue", "gray", "bright", "dark", "old", "modern", "round", "tall",
       "striped", "metal", "green", "white", "black", "soft", "shiny", "worn"]
PLACES = ["on the left", "on the right", "in the center", "in the background", "in the foreground",
          "near the window", "against the wall", "on the floor", "above the table", "behind the chair"]
VERBS = ["stands", "sits", "rests", "hangs", "leans", "lies", "is placed", "appears"]
EXTRA = ["with a subtle texture", "partly in shadow", "catching the afternoon light", "slightly out of focus",
         "next to a few scattered objects", "framed by the surrounding furniture", "with visible wear",
         "in sharp detail"]
STAGE_TOKENS = {"caption": (1400, 180), "caption_rating": (3000, 0), "instructions": (1800, 120),
                "answers": (14000, 900), "answer_rating": (30000, 0), "object_summary": (1500, 180),
                "position_summary": (900, 120), "final": (1600, 300)}
FP = {"id": "bench0000fingerp", "scalecap_version": "0.1.0",
      "models": {"captioner": {"backend": "openai", "model": "Qwen/Qwen2.5-VL-7B-Instruct"},
                 "scorer": {"backend": "openai", "model": "Qwen/Qwen2.5-VL-7B-Instruct"},
                 "writer": {"backend": "openai", "model": "Qwen/Qwen2.5-7B-Instruct"}},
      "prompt_preset": "paper", "prompt_hash": "0123456789abcdef", "score_mode": "prob", "tau": 0.1,
      "budget": None, "tagger": "heuristic", "settings": {"score_mode": "prob"}}


def sentence(rng: random.Random, obj: str) -> str:
    s = f"A {rng.choice(ADJ)} {rng.choice(ADJ)} {obj} {rng.choice(VERBS)} {rng.choice(PLACES)}, {rng.choice(EXTRA)}."
    if rng.random() < 0.5:
        s = s[:-1] + f", and its {rng.choice(ADJ)} surface looks {rng.choice(ADJ)} {rng.choice(EXTRA)}."
    return s


def rated(rng: random.Random, parts: list[str], tokens: bool) -> tuple[str, list[dict]]:
    text = " ".join(parts)
    out, pos = [], 0
    for p in parts:
        start = text.index(p, pos)
        score = rng.betavariate(2, 8) if rng.random() < 0.97 else None
        d = {"text": p, "start": start, "end": start + len(p),
             "score": None if score is None else round(score, 6), "kept": score is not None and score > 0.1}
        if tokens:
            toks, i = [], 0
            for w in p.split(" "):
                d_ = rng.uniform(-0.05, score or 0.0)
                toks.append({"text": (" " if i else "") + w, "start": start + i - (1 if i else 0),
                             "end": start + i + len(w), "delta": round(d_, 6), "content": w[:1].isalpha() and len(w) > 3})
                i += len(w) + 1
            d["tokens"] = toks
        out.append(d)
        pos = start + len(p)
    return text, out


def record(i: int, rng: random.Random, images: list[Path], tokens: bool) -> dict:
    rid = f"img_{i:06d}"
    r = rng.random()
    if r < 0.80:
        src = str(images[i % len(images)])
    elif r < 0.95:
        src = f"/data/missing/shard_{i // 1000:03d}/{rid}.jpg"
    else:
        src = f"https://images.example.org/{rid}.jpg"
    base = {"id": rid, "source": src, "fingerprint": FP}
    u = rng.random()
    if u < 0.03:
        kind = rng.choice(["model", "unreadable", "too_large", "capability"])
        return {**base, "status": "failed", "error_kind": kind,
                "error": f"{kind}: simulated failure #{i} (RuntimeError: server returned 500)",
                "usage": {"caption": {"calls": 1, "prompt_tokens": 1400, "completion_tokens": 0}},
                "timings": {"total": round(rng.uniform(0.1, 3), 3)}}
    if u < 0.05:
        return {**base, "status": "filtered",
                "meta": {"filter_reason": rng.choice(["too_small", "duplicate", "nsfw"]), "width": 32, "height": 32}}
    objs = rng.sample(OBJECTS, 5)
    n_sent = rng.randint(6, 10)
    first, sents = rated(rng, [sentence(rng, objs[k % 5]) for k in range(n_sent)], tokens)
    questions = []
    for o in objs:
        for kind in ("object", "position"):
            instr = (f"Describe more details about the {o}." if kind == "object"
                     else f"Describe more details about the position of the {o}.")
            ans, asents = rated(rng, [sentence(rng, o) for _ in range(rng.randint(1, 4))], tokens)
            questions.append({"object": o, "kind": kind, "instruction": instr, "answer": ans,
                              "answer_sentences": asents, "kept": any(s["kept"] for s in asents)})
    kept_text = " ".join(s["text"] for s in sents if s["kept"]) or first
    usage = {k: {"calls": 1 if k not in ("answers", "answer_rating", "caption_rating") else (10 if k == "answers" else 20 if k == "answer_rating" else 2),
                 "prompt_tokens": int(p * rng.uniform(0.7, 1.3)), "completion_tokens": int(c * rng.uniform(0.7, 1.3))}
             for k, (p, c) in STAGE_TOKENS.items()}
    return {**base, "status": "ok", "first_caption": first, "sentences": sents,
            "caption_fallback": not any(s["kept"] for s in sents), "questions": questions,
            "summaries": {"objects": " ".join(sentence(rng, o) for o in objs),
                          "positions": " ".join(f"The {o} is {rng.choice(PLACES)}." for o in objs)},
            "final_caption": kept_text + " " + " ".join(sentence(rng, o) for o in objs),
            "usage": usage, "notes": [], "meta": {"width": 640, "height": 480},
            "timings": {k: round(rng.uniform(0.05, 3.0), 3) for k in STAGE_TOKENS} | {"total": round(rng.uniform(5, 20), 3)}}


def make_images(folder: Path, n: int) -> list[Path]:
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(1)
    out = []
    for k in range(n):
        img = Image.new("RGB", (640, 480), tuple(rng.randrange(256) for _ in range(3)))
        d = ImageDraw.Draw(img)
        for _ in range(12):
            x, y = rng.randrange(600), rng.randrange(440)
            d.rectangle([x, y, x + rng.randrange(20, 200), y + rng.randrange(20, 160)],
                        fill=tuple(rng.randrange(256) for _ in range(3)))
        p = folder / f"photo_{k:04d}.jpg"
        img.save(p, quality=88)
        out.append(p)
    return out


def generate(run: Path, n: int, images: list[Path], tokens_fraction: float, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(run, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(record(i, rng, images, rng.random() < tokens_fraction), ensure_ascii=False) + "\n" for i in range(n))


# ----------------------------------------------------------------------------------- build (child)
def child_build(run: str, out: str, chunk_size: int, use_tracemalloc: bool) -> None:
    if use_tracemalloc:
        import tracemalloc

        tracemalloc.start()
    from scalecap.report import build_report

    t0 = time.perf_counter()
    s = build_report(run, out, chunk_size=chunk_size)
    wall = time.perf_counter() - t0
    res = {"seconds": wall, "layout": s.layout, "records": s.records, "bytes": s.bytes_written,
           "thumbnails": s.thumbnails, "page_bytes": Path(out).stat().st_size,
           "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if use_tracemalloc:
        res["tracemalloc_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
    print(json.dumps(res))


def run_child(run: Path, out: Path, chunk_size: int, use_tracemalloc: bool) -> dict:
    cmd = [sys.executable, __file__, "--child-build", str(run), str(out), "--chunk-size", str(chunk_size)]
    if use_tracemalloc:
        cmd.append("--child-tracemalloc")
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------- browser
def browser_figures(out: Path) -> dict:
    from playwright.sync_api import sync_playwright

    def poll(page, expr, arg=None, timeout=120.0):
        t_end = time.monotonic() + timeout
        while not page.evaluate(expr, arg):
            if time.monotonic() > t_end:
                raise TimeoutError(expr)
            page.wait_for_timeout(10)

    figs: dict = {}
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = b.new_page(viewport={"width": 1280, "height": 900})
        bad = []
        page.on("request", lambda r: bad.append(r.url) if not r.url.startswith(("file:", "data:")) else None)
        page.on("pageerror", lambda e: bad.append(f"pageerror {e}"))
        page.on("console", lambda m: bad.append(f"console {m.text}") if m.type == "error" else None)
        t0 = time.perf_counter()
        page.goto(out.resolve().as_uri(), wait_until="commit")
        poll(page, "() => document.body && document.body.dataset.cards === '1'")
        figs["first_cards_wall_ms"] = (time.perf_counter() - t0) * 1000
        figs["first_cards_ms"] = page.evaluate("window.scalecapReport.marks.firstCards")
        poll(page, "() => window.scalecapReport.ready.scores && window.scalecapReport.ready.search")
        figs["scores_ready_ms"] = page.evaluate("window.scalecapReport.marks.scores")
        figs["search_ready_ms"] = page.evaluate("window.scalecapReport.marks.search")

        def timed(action_js, arg=None, **want):
            """Run an action, wait until the cards shown are those of the wanted state, time it."""
            n0 = page.evaluate("window.scalecapReport.renders")
            start = page.evaluate("performance.now()")
            page.evaluate(action_js, arg)
            poll(page, "([n, want]) => { const r = window.scalecapReport.rendered; return window.scalecapReport.renders > n"
                       " && Object.keys(want).every(k => r[k] === want[k]); }", [n0, want])
            end = page.evaluate("window.scalecapReport.marks.lastRender")
            return end - start, page.evaluate("({...window.scalecapReport.timing})")

        search_js = ("q => { const s = document.getElementById('search'); s.value = q; "
                     "s.dispatchEvent(new Event('input')); }")
        ms, t = timed(search_js, "surface sofa", q="surface sofa", page=0)
        figs["search_ms_incl_180ms_debounce"] = ms
        figs["search_filter_ms"] = t["match"]
        figs["search_matches"] = page.evaluate("document.getElementById('result-count').textContent")
        ms, t = timed("() => document.querySelector('.resultbar .pager .next').click()", page=1)
        figs["page_flip_ms"] = ms
        timed(search_js, "", q="", page=0)
        ms, t = timed("() => { const s = document.getElementById('f-sort'); s.value = 'tokens-desc'; "
                      "s.dispatchEvent(new Event('change')); }", sort="tokens-desc", page=0)
        figs["sorted_page_ms"] = ms
        figs["sorted_page_chunks"] = page.evaluate(
            "new Set(Array.from(document.querySelectorAll('#cards article.card'))"
            ".map(c => Math.floor(+c.dataset.seq / window.scalecapReport.chunkSize))).size")
        ms, t = timed("() => document.querySelector('.resultbar .pager .next').click()", sort="tokens-desc", page=1)
        figs["sorted_page_flip_ms"] = ms
        start = page.evaluate("performance.now()")
        page.evaluate("() => { const s = document.getElementById('tau-slider'); s.value = '0.2'; "
                      "s.dispatchEvent(new Event('input')); }")
        poll(page, "() => window.scalecapReport.tau && window.scalecapReport.tau.value === 0.2")
        figs["tau_change_ms_incl_40ms_debounce"] = page.evaluate("performance.now()") - start
        figs["tau_apply_ms"] = page.evaluate("window.scalecapReport.timing.tau")
        figs["tau_flips"] = page.evaluate("window.scalecapReport.tau.capKD + window.scalecapReport.tau.capDK")
        figs["js_heap_mb"] = page.evaluate("performance.memory ? performance.memory.usedJSHeapSize / 1048576 : null")
        figs["problems"] = bad
        b.close()
    return figs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--records", type=int, default=50_000)
    ap.add_argument("--images", type=int, default=200, help="distinct local images the sources cycle over")
    ap.add_argument("--tokens-fraction", type=float, default=0.02, help="share of images with token traces")
    ap.add_argument("--chunk-size", type=int, default=None)
    ap.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    ap.add_argument("--no-browser", action="store_true")
    ap.add_argument("--reuse", action="store_true", help="with --keep: reuse a run generated there before")
    ap.add_argument("--tracemalloc", action="store_true",
                    help="also build once under tracemalloc for the peak of Python allocations (several times slower)")
    ap.add_argument("--child-build", nargs=2, metavar=("RUN", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--child-tracemalloc", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    from scalecap.report import DEFAULT_CHUNK_SIZE

    chunk_size = a.chunk_size or DEFAULT_CHUNK_SIZE
    if a.child_build:
        child_build(a.child_build[0], a.child_build[1], chunk_size, a.child_tracemalloc)
        return

    work = a.keep or Path(tempfile.mkdtemp(prefix="bench-report-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        run = work / "run.jsonl"
        stamp = work / "run.params"
        params = json.dumps([a.records, a.images, a.tokens_fraction])
        if a.reuse and run.is_file() and stamp.is_file() and stamp.read_text() == params:
            images = sorted((work / "images").glob("*.jpg"))
            print(f"reusing {run} ({run.stat().st_size / 1e6:.0f} MB)")
        else:
            images = make_images(work / "images", a.images)
            generate(run, a.records, images, a.tokens_fraction)
            stamp.write_text(params)
            print(f"generated {a.records:,} records ({run.stat().st_size / 1e6:.0f} MB JSONL, "
                  f"{a.images} distinct images) in {time.perf_counter() - t0:.1f} s")

        from scalecap.report.thumbs import make_thumbnail
        t0 = time.perf_counter()
        for im in images:
            make_thumbnail(im)
        per_thumb = (time.perf_counter() - t0) / len(images)
        print(f"thumbnail of a 640x480 JPEG: {per_thumb * 1000:.1f} ms (one thread)")

        out = work / "report.html"
        r = run_child(run, out, chunk_size, False)
        print(f"build: {r['seconds']:.1f} s, peak RSS {r['maxrss_mb']:.0f} MB, {r['layout']} layout, "
              f"page {r['page_bytes'] / 1e6:.1f} MB, total {r['bytes'] / 1e6:.0f} MB, {r['thumbnails']} thumbnails, "
              f"chunk size {chunk_size}")
        if a.tracemalloc:
            r2 = run_child(run, work / "report-tm.html", chunk_size, True)
            print(f"build under tracemalloc: peak Python allocations {r2['tracemalloc_peak_mb']:.0f} MB "
                  f"({r2['seconds']:.1f} s with tracing)")
            (work / "report-tm.html").unlink()
            shutil.rmtree(work / "report-tm_files", ignore_errors=True)
        if not a.no_browser:
            if not Path(CHROMIUM).exists():
                print(f"no Chromium at {CHROMIUM}: browser figures skipped")
            else:
                f = browser_figures(out)
                print("browser (headless Chromium, file://):")
                for k, v in f.items():
                    print(f"  {k}: {v:.0f}" if isinstance(v, float) else f"  {k}: {v}")
    finally:
        if a.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
