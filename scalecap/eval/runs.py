"""One metric over one caption set, as a complete result document (numbers + provenance).

The CLI and ``compare`` both go through these, so a result written by ``scalecap eval chair`` and
a column of ``scalecap eval compare --metric chair`` are computed the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from . import captionqa as cqa
from . import capture as cap
from . import chair as ch
from . import provenance
from . import vqa
from .benchmarks import Benchmark
from .captions import CaptionSet
from .models import describe


def _data(captions: CaptionSet, **more: Any) -> dict[str, Any]:
    d = {"captions": captions.path}
    d.update(more)
    return d


async def run_vqa(captions: CaptionSet, bench: Benchmark, engine: vqa.PrismVQA, *, argv: list[str] | None = None,
                  on_done: Callable[[Any], None] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    items = await engine.run(bench, captions, on_done)
    summary = vqa.summarize(items, captions)
    models = {"answerer": describe(engine.answerer)}
    if engine.extractor is not engine.answerer:
        models["extractor"] = describe(engine.extractor)
    if engine.judge is not None:
        models["judge"] = describe(engine.judge)
    doc = {
        "metric": vqa.METRIC, "metric_version": vqa.VERSION, "name": captions.name,
        "official": False,
        "label": "caption-only VQA, Prism protocol (answer prompt and extraction prompt as published; "
                 "open answers graded by scalecap's MM-Vet-style judge prompt)",
        "summary": summary,
        "provenance": provenance.build(
            vqa.METRIC, vqa.VERSION, models=models, prompts=engine.prompts,
            data=_data(captions, benchmark=bench.path), seed=0,
            settings={**engine.settings.__dict__, "caption_field": captions.field, "benchmark_format": bench.format,
                      "items": len(bench.items)}, argv=argv),
    }
    return doc, [r.to_dict() for r in items]


async def run_captionqa(captions: CaptionSet, bench: Benchmark, engine: cqa.CaptionQA, *, argv: list[str] | None = None,
                        on_done: Callable[[Any], None] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    items = await engine.run(bench, captions, on_done)
    models = {"answerer": describe(engine.answerer)}
    if engine.extractor is not engine.answerer:
        models["extractor"] = describe(engine.extractor)
    doc = {
        "metric": cqa.METRIC, "metric_version": cqa.VERSION, "name": captions.name,
        "official": False,
        "label": "CaptionQA scoring rule (1 / 0 / 1/n + 0.05) with scalecap's answering prompt",
        "summary": cqa.summarize(items, captions),
        "provenance": provenance.build(
            cqa.METRIC, cqa.VERSION, models=models, prompts=engine.prompts,
            data=_data(captions, benchmark=bench.path), seed=engine.settings.seed,
            settings={**engine.settings.__dict__, "caption_field": captions.field, "items": len(bench.items)}, argv=argv),
    }
    return doc, [r.to_dict() for r in items]


def run_chair(captions: CaptionSet, gt: ch.GroundTruth, vocab: ch.ChairVocabulary, *,
              argv: list[str] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    summary, images = ch.evaluate(captions, gt, vocab)
    doc = {
        "metric": ch.METRIC, "metric_version": ch.VERSION, "name": captions.name,
        "official": False,
        "label": "CHAIR (Rohrbach et al. 2018) with scalecap's offline tokeniser and singulariser",
        "summary": summary,
        "top_hallucinations": ch.top_hallucinations(images),
        "provenance": provenance.build(
            ch.METRIC, ch.VERSION, data=_data(captions, annotations=gt.sources, synonyms=vocab.path),
            settings={"caption_field": captions.field}, argv=argv),
    }
    return doc, [r.to_dict() for r in images]


async def run_capture(captions: CaptionSet, references: dict[str, list[str]], evaluator: cap.CaptureEvaluator,
                      references_path: str | Path | None, *, limit: int | None = None, argv: list[str] | None = None,
                      prompts: dict[str, str] | None = None, refined: Any = None,
                      extra_objects_path: str | Path | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    summary, samples = await cap.evaluate(captions, references, evaluator, limit, refined=refined)
    official, label = evaluator.config.label()
    major, minor = evaluator.config.deviations()
    doc = {
        "metric": cap.METRIC, "metric_version": cap.VERSION, "name": captions.name,
        "official": official, "label": label, "deviations": major, "notes": minor,
        "summary": summary,
        "provenance": provenance.build(
            cap.METRIC, cap.VERSION, models={"parts": evaluator.config.describe(),
                                             **({"refined": refined.describe()} if refined is not None else {})},
            prompts=prompts or {},
            data=_data(captions, references=references_path,
                       **({"extra_objects": extra_objects_path} if extra_objects_path else {})),
            settings={"caption_field": captions.field, "limit": limit, "refined": refined is not None},
            argv=argv),
    }
    if refined is not None:
        doc["refined_label"] = ("refined CAPTURE (our reading of SC-Captioner's description, not their code), "
                                "on the same parts as CAPTURE above")
    return doc, samples
