"""``scalecap demo``: the whole pipeline on real photos, offline, with tiny random models.

No model hub is needed: the tiny models are built from code once and cached, and the photos come
from wheels that ship them (scikit-image, scikit-learn, matplotlib). Random weights write
gibberish; the demo says so, and says how to point the tool at real models.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from rich.console import Console

from .run import CaptionJob, run_job

#: Small generation limits: random weights rarely emit an end-of-text token. tau is 0 because random
#: weights give probability differences of about 1e-4, which the default (0.1) would drop entirely.
DEMO_SETTINGS = dict(max_tokens_caption=64, max_tokens_instructions=40, max_tokens_answer=32,
                     max_tokens_summary=64, budget=3, tau=0.0)


#: The demo photos whose domain the manifest declares.
DOCUMENTS = {"page.png": "infographic_document"}


def sample_photos() -> list[Path]:
    """Real photos that ship inside well-known wheels (whichever of them are installed)."""
    found: list[Path] = []
    try:
        import skimage.data

        folder = Path(skimage.data.__file__).parent
        found += [folder / n for n in ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "page.png")]
    except ImportError:
        pass
    try:
        import sklearn.datasets

        folder = Path(sklearn.datasets.__file__).parent / "images"
        found += [folder / n for n in ("china.jpg", "flower.jpg")]
    except ImportError:
        pass
    try:
        import matplotlib

        found.append(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    except ImportError:
        pass
    return [p for p in found if p.is_file()]


def _ocr_available(console: Console) -> bool:
    from .tools.ocr import OcrError, open_ocr

    try:
        open_ocr("tesseract")
    except OcrError as exc:
        console.print(f"[yellow]no OCR evidence for the document photo: {exc}[/]")
        return False
    return True


def run_demo(out: Path, concurrency: int, console: Console) -> int:
    from .pipeline import ScaleCap
    from .testing.tiny_models import build_tiny_models, default_cache_dir

    photos = sample_photos()
    if not photos:
        console.print("[red]no sample photos found: pip install scikit-image (it ships the demo photos)[/]")
        return 2
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    for p in photos:
        if not (images / p.name).exists():
            shutil.copyfile(p, images / p.name)
    console.print(f"building (or reusing) tiny random models in {default_cache_dir()} ...")
    models = build_tiny_models(default_cache_dir(), ("qwen2vl",))
    # A manifest declares the printed page a document (a ``domain`` column): it gets the document
    # domain's first-caption prompt and, where an OCR engine is installed, OCR evidence.
    manifest = out / "manifest.jsonl"
    manifest.write_text("".join(json.dumps({"id": p.name, "image": str((images / p.name).resolve()),
                                            **({"domain": DOCUMENTS[p.name]} if p.name in DOCUMENTS else {})}) + "\n"
                                for p in photos), encoding="utf-8")
    ocr = "auto" if _ocr_available(console) else "off"
    # one model plays all three roles, METHOD.md's simple default (one Qwen2-VL on one GPU)
    sc = ScaleCap(model=str(models["qwen2vl"]), ocr=ocr, **DEMO_SETTINGS)
    output = out / "captions.jsonl"
    summary = run_job(sc, CaptionJob(inputs=[str(manifest)], output=output, concurrency=concurrency, resume=False))
    console.print(f"\ncaptioned {summary.ok} of {summary.total} photos in {summary.seconds:.1f}s "
                  f"({(summary.ok + summary.failed) / max(summary.seconds, 1e-9) * 60:.0f} images/min) -> {output}")
    from .records import CaptionResult

    for line in output.read_text(encoding="utf-8").splitlines()[:2]:
        r = CaptionResult.from_json(line)
        kept = sum(s.kept for s in r.sentences)
        console.print(f"  {r.id}: {len(r.sentences)} sentences ({kept} kept), {len(r.questions)} questions, "
                      f"final caption {len(r.final_caption or '')} chars")
    from .report.build import build_report

    report = build_report(output, out / "report.html")
    console.print(f"  audit report: {report.out}  (open it in a browser)")
    console.print(
        "\n[bold yellow]These models have random weights, so every caption is gibberish by design.[/] "
        "The demo shows the mechanics: real model code, real log-probs, rating, questions, summaries\n"
        f"(at tau={DEMO_SETTINGS['tau']}: random weights barely prefer anything; the default tau is 0.1).\n"
        "To caption with real models:\n"
        "  scalecap caption photos/ -o captions.jsonl --model Qwen/Qwen2.5-VL-7B-Instruct\n"
        "  scalecap caption photos/ -o captions.jsonl --model Qwen/Qwen2-VL-7B-Instruct --api-base http://127.0.0.1:8000/v1\n"
        "See README.md for config files binding each role to its own model.")
    return summary.exit_code
