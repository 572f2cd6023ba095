"""One metric over one caption set, as a complete result document (numbers + provenance).

The CLI and ``compare`` both go through these, so a result written by ``scalecap eval chair`` and
a column of ``scalecap eval compare --metric chair`` are computed the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from . import arena as ar
from . import captionqa as cqa
from . import capture as cap
from . import chair as ch
from . import dcscore as dcs
from . import judged
from . import provenance
from . import vqa
from .benchmarks import Benchmark
from .captions import CaptionSet
from .common import by_domain as _by_domain
from .models import describe


def _domains(doc: dict[str, Any], items: list[Any], key_of: Callable[[Any], str | None], captions: CaptionSet,
             summarize: Callable[[list[Any]], dict[str, Any]], force: bool) -> None:
    """``doc["by_domain"]``: the metric's summary per domain of the captions (``common.by_domain``)."""
    groups = _by_domain(items, key_of, captions.domain_of, summarize, force)
    if groups is not None:
        doc["by_domain"] = groups


def _data(captions: CaptionSet, **more: Any) -> dict[str, Any]:
    d = {"captions": captions.path}
    d.update(more)
    return d


async def run_vqa(captions: CaptionSet, bench: Benchmark, engine: vqa.PrismVQA, *, argv: list[str] | None = None,
                  on_done: Callable[[Any], None] | None = None, by_domain: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
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
    _domains(doc, items, lambda r: r.caption_key, captions, vqa.summarize, by_domain)
    return doc, [r.to_dict() for r in items]


async def run_captionqa(captions: CaptionSet, bench: Benchmark, engine: cqa.CaptionQA, *, argv: list[str] | None = None,
                        on_done: Callable[[Any], None] | None = None, by_domain: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
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
    _domains(doc, items, lambda r: r.caption_key, captions, cqa.summarize, by_domain)
    return doc, [r.to_dict() for r in items]


def run_chair(captions: CaptionSet, gt: ch.GroundTruth, vocab: ch.ChairVocabulary, *,
              argv: list[str] | None = None, by_domain: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
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
    _domains(doc, images, lambda r: r.id, captions, ch.aggregate, by_domain)
    return doc, [r.to_dict() for r in images]


async def run_capture(captions: CaptionSet, references: dict[str, list[str]], evaluator: cap.CaptureEvaluator,
                      references_path: str | Path | None, *, limit: int | None = None, argv: list[str] | None = None,
                      prompts: dict[str, str] | None = None, refined: Any = None,
                      extra_objects_path: str | Path | None = None, by_domain: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
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

    def summarize(subset: list[dict[str, Any]]) -> dict[str, Any]:
        out = cap.aggregate(subset)
        if refined is not None:
            from .capture_refined import aggregate_refined

            out["refined"] = aggregate_refined([x["refined"] for x in subset])
        return out

    _domains(doc, samples, lambda x: x["id"], captions, summarize, by_domain)
    return doc, samples


def _judged_doc(metric: str, version: str, name: str, label: str, summary: dict[str, Any], models: dict[str, Any],
                prompts: dict[str, str], data: dict[str, Any], settings: dict[str, Any], rows: list[dict[str, Any]],
                prices: Any, journal: Any, argv: list[str] | None) -> dict[str, Any]:
    summary = {**summary, "cost": judged.cost_summary(rows, prices),
               "resumed": journal.resumed if journal is not None else 0}
    return {
        "metric": metric, "metric_version": version, "name": name, "official": False, "label": label,
        "summary": summary,
        "provenance": provenance.build(metric, version, models=models, prompts=prompts, data=data,
                                       seed=settings.get("seed"), settings=settings, argv=argv),
    }


def judged_run_hash(metric: str, models: dict[str, Any], prompts: dict[str, str], settings: dict[str, Any],
                    data: dict[str, Any]) -> str:
    """What decides the items' numbers (not concurrency, not prices): a resume keeps only rows of the same."""
    keep = {k: v for k, v in settings.items() if k not in ("concurrency",)}
    files = {k: (provenance.data_file(v) or {}).get("sha256") for k, v in data.items() if v is not None}
    return judged.run_hash({"metric": metric, "models": models, "prompts": prompts, "settings": keep, "data": files})


async def run_arena(a: CaptionSet, b: CaptionSet, images: judged.ImageFinder, engine: ar.Arena, *,
                    items_path: Path | None = None, resume: bool = False, overwrite: bool = False,
                    limit: int | None = None, argv: list[str] | None = None,
                    on_done: Callable[[Any], None] | None = None, by_domain: bool = False,
                    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A's captions against B's, pair by pair; the items file (when given) is the resumable journal."""
    models = {"judge": describe(engine.judge)}
    settings = {**engine.settings.__dict__, "caption_field": a.field, "against_field": b.field, "limit": limit,
                "images": str(images.folder) if images.folder else "sources"}
    data = {"captions": a.path, "against": b.path}
    todo = ar.pairs(a, b, images, limit)
    rows, journal = await _run_journal(ar.METRIC, models, engine, settings, data, todo, items_path, resume,
                                       overwrite, on_done)
    summary = {"a": a.name, "b": b.name, **ar.summarize(rows)}
    doc = _judged_doc(ar.METRIC, ar.VERSION, a.name,
                      "pairwise battles judged by a VLM with the image, both orders, CapArena-Auto scoring "
                      "(scalecap's judge prompt)", summary, models, engine.prompts, data, settings, rows,
                      engine.prices, journal, argv)
    doc["against"] = b.name
    _domains(doc, rows, lambda r: r["id"], a, lambda rs: {"a": a.name, "b": b.name, **ar.summarize(rs),
                                                          "cost": judged.cost_summary(rs, engine.prices)}, by_domain)
    return doc, rows


async def _run_journal(metric: str, models: dict[str, Any], engine: Any, settings: dict[str, Any],
                       data: dict[str, Any], todo: list[Any], items_path: Path | None, resume: bool, overwrite: bool,
                       on_done: Callable[[Any], None] | None) -> tuple[list[dict[str, Any]], Any]:
    """Run an image-judged metric's items through its items journal (when given): resume, then a
    file rewritten in work order."""
    journal = (judged.ItemsJournal(items_path, judged_run_hash(metric, models, engine.prompts, settings, data),
                                   resume=resume, overwrite=overwrite) if items_path is not None else None)
    try:
        rows = await judged.run_journaled(todo, lambda job: job.id, engine.run_item, engine.settings.concurrency,
                                          journal, on_done)
    finally:
        if journal is not None:
            journal.close()
    if journal is not None:
        journal.finish(rows)
    return rows, journal


async def run_dcscore(captions: CaptionSet, images: judged.ImageFinder, engine: dcs.DCScore, *,
                      references: dict[str, list[str]] | None = None, references_path: str | Path | None = None,
                      items_path: Path | None = None, resume: bool = False, overwrite: bool = False,
                      limit: int | None = None, argv: list[str] | None = None,
                      on_done: Callable[[Any], None] | None = None, by_domain: bool = False,
                      ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """DCScore of one caption set; the items file (when given) is the resumable journal."""
    models = {"decomposer": describe(engine.decomposer), "judge": describe(engine.judge)}
    if engine.matcher is not engine.decomposer:
        models["matcher"] = describe(engine.matcher)
    settings = {**engine.settings.__dict__, "caption_field": captions.field, "limit": limit,
                "images": str(images.folder) if images.folder else "sources"}
    data = {"captions": captions.path, "references": references_path}
    todo = dcs.jobs(captions, images, references, limit)
    rows, journal = await _run_journal(dcs.METRIC, models, engine, settings, data, todo, items_path, resume,
                                       overwrite, on_done)
    summary = dcs.summarize(rows, references is not None)
    doc = _judged_doc(dcs.METRIC, dcs.VERSION, captions.name,
                      "DCScore: caption decomposed into primitive units by an LLM, each judged against the image by a "
                      "VLM; reference units matched for recall (scalecap's prompts)", summary, models, engine.prompts,
                      data, settings, rows, engine.prices, journal, argv)
    _domains(doc, rows, lambda r: r["id"], captions,
             lambda rs: {**dcs.summarize(rs, references is not None), "cost": judged.cost_summary(rs, engine.prices)},
             by_domain)
    return doc, rows
