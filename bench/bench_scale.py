"""How scalecap's I/O machinery scales: N images through source -> engine -> journal -> sink with an
instant fake captioner (no model: this measures our reading, bookkeeping and writing, not captioning).

    python bench/bench_scale.py                       # 100,000 images, JSONL
    python bench/bench_scale.py --n 100000 --format parquet --tracemalloc

It writes a JSONL manifest of N rows (unique ids, pointing at 16 small PNG files), runs
``run_job`` on it and prints the throughput and the memory during the run (RSS of the
process and, with --tracemalloc, Python heap currently allocated) at 10%, 90% and 100%, then resumes the finished run
once (everything skipped) to time the resume scan.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image  # noqa: E402

from scalecap.records import CaptionResult, StageUsage  # noqa: E402
from scalecap.run import CaptionJob, run_job  # noqa: E402


class InstantCaptioner:
    """Returns a realistic-size record at once (a ~600-char caption and per-stage usage)."""

    fingerprint = None

    async def caption_item(self, item) -> CaptionResult:
        data = item.read_bytes()
        return CaptionResult(id=item.id, source=item.source, status="ok", meta=dict(item.meta),
                             first_caption="A first caption. " * 10, final_caption=f"A picture ({len(data)} bytes). " * 20,
                             usage={"caption": StageUsage(calls=1, prompt_tokens=300, completion_tokens=120),
                                    "final": StageUsage(calls=1, prompt_tokens=900, completion_tokens=300)})


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--format", default="jsonl", choices=["jsonl", "parquet", "wds"])
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--tracemalloc", action="store_true", help="also measure the Python heap (slower)")
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = ap.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="scalecap-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    images = work / "images"
    images.mkdir(exist_ok=True)
    for i in range(16):
        buf = io.BytesIO()
        Image.new("RGB", (64 + i, 48), (i * 15, 100, 200)).save(buf, "PNG")
        (images / f"{i}.png").write_bytes(buf.getvalue())
    manifest = work / "manifest.jsonl"
    with manifest.open("w") as f:
        for i in range(args.n):
            f.write(json.dumps({"id": f"img-{i:07d}", "image": f"images/{i % 16}.png", "domain": "photo"}) + "\n")
    out = work / ("out.jsonl" if args.format == "jsonl" else "out")
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()

    # 90%: the source is still being read (the id set is alive); at 100% it is done and freed.
    marks = {max(1, args.n // 10): "10%", max(1, args.n * 9 // 10): "90%", args.n: "100%"}
    figures: dict[str, dict[str, float]] = {}
    done = 0
    t0 = time.perf_counter()

    def on_result(_: CaptionResult) -> None:
        nonlocal done
        done += 1
        if done in marks:
            gc.collect()
            f = {"images": done, "seconds": time.perf_counter() - t0, "rss_mb": rss_mb()}
            if args.tracemalloc:
                f["py_heap_mb"] = tracemalloc.get_traced_memory()[0] / 2**20
            figures[marks[done]] = f

    if args.tracemalloc:
        tracemalloc.start()
    rss_before = rss_mb()
    job = CaptionJob(inputs=[str(manifest)], output=out, format=args.format, concurrency=args.concurrency)
    summary = run_job(InstantCaptioner(), job, on_result=on_result)
    wall = time.perf_counter() - t0
    t1 = time.perf_counter()
    again = run_job(InstantCaptioner(), job)
    resume_s = time.perf_counter() - t1
    if args.tracemalloc:
        tracemalloc.stop()

    print(f"scalecap I/O scale benchmark: {args.n:,} images, --format {args.format}, concurrency {args.concurrency}, "
          f"tracemalloc {'on' if args.tracemalloc else 'off'}")
    print(f"  run: {summary.ok:,} ok in {wall:.1f}s = {summary.ok / wall:,.0f} images/s (includes journal fsyncs, "
          f"sink writes, summary)")
    print(f"  RSS before the run: {rss_before:.0f} MB")
    for label, f in figures.items():
        line = f"  at {label:>4} ({f['images']:,} images, {f['seconds']:.1f}s): RSS {f['rss_mb']:.0f} MB"
        if "py_heap_mb" in f:
            line += f", Python heap {f['py_heap_mb']:.1f} MB"
        print(line)
    a, b = figures.get("10%"), figures.get("90%")
    if a and b and b["images"] > a["images"]:
        growth = (b["rss_mb"] - a["rss_mb"]) * 2**20 / (b["images"] - a["images"])
        print(f"  RSS growth 10% -> 90%: {b['rss_mb'] - a['rss_mb']:+.1f} MB ({growth:.0f} bytes/image)")
        if "py_heap_mb" in a:
            heap = (b["py_heap_mb"] - a["py_heap_mb"]) * 2**20 / (b["images"] - a["images"])
            print(f"  Python heap growth 10% -> 90%: {b['py_heap_mb'] - a['py_heap_mb']:+.1f} MB ({heap:.0f} bytes/image: "
                  "the set of ids seen, kept for duplicate detection)")
    size = sum(p.stat().st_size for p in ([out] if out.is_file() else out.iterdir()))
    print(f"  output: {size / 2**20:.0f} MB; resume of the finished run (all {again.skipped:,} skipped): {resume_s:.1f}s")
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
