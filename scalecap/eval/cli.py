"""``scalecap eval``: the command line of the evaluation metrics (a thin layer over the modules).

Every command writes a JSON result (numbers + provenance) and, where there are items, a JSONL of
per-item records next to it, and prints a table. Bad inputs end with exit code 2 and one line
saying what is wrong; nothing here prints a traceback for a user error.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from .._sync import run_sync
from ..console import cli_console

from .common import EvalInputError, pct, write_json, write_jsonl

app = typer.Typer(help="Measure caption quality: caption-only VQA (Prism), CHAIR, CAPTURE, CaptionQA, arena battles, DCScore, and comparisons.",
                  no_args_is_help=True, add_completion=False)
console = cli_console()
err_console = cli_console(stderr=True)


def _friendly(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EvalInputError as exc:
            err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
            err_console.print(f"[red]error:[/red] {exc.strerror or exc}: {exc.filename}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
    return wrapper


# ----------------------------------------------------------------------------- shared options

CaptionsArg = typer.Argument(..., help="Captions: scalecap results JSONL, {id: caption} JSON, or JSONL rows with an id and a caption.")
FieldOpt = typer.Option("final_caption", "--field", help="Caption field: final_caption, first_caption or corrected_caption (scalecap results), or a key of the rows.")
OutOpt = typer.Option(None, "--output", "-o", help="Result JSON (default: <metric>-<captions name>.json).")
ItemsOpt = typer.Option(None, "--items", help="Per-item JSONL (default: next to the result, .items.jsonl).")
ApiBaseOpt = typer.Option(None, "--api-base", help="OpenAI-compatible server for the --*-model options (e.g. http://127.0.0.1:8000/v1).")
ApiKeyOpt = typer.Option(None, "--api-key-env", help="Environment variable holding the server's API key.")
PromptOpt = typer.Option(None, "--prompt", help="Override a prompt: NAME=FILE (names: system, prism_answer, extract_answer, judge_open, captionqa_answer, scene_graph).")
ByDomainOpt = typer.Option(False, "--by-domain", help="Break the numbers down by the records' domain even when the captions span one domain (with more than one, they always are).")


def _print_domains(doc: dict[str, Any]) -> None:
    """The metric's table once more, a row per domain under the overall one (when the result has them)."""
    from . import compare as cmp

    if doc.get("by_domain"):
        cols, rows = cmp.table(cmp.with_domains([doc], single=True))
        console.print(cmp.to_rich((["domain", *cols[1:]], rows), title=f"{doc['metric']} by domain — {doc['name']}"))


def _prompt_overrides(specs: Optional[list[str]]) -> dict[str, str]:
    out = {}
    for s in specs or []:
        if "=" not in s:
            raise EvalInputError(f"--prompt {s!r}: expected NAME=FILE")
        k, v = s.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _paths(out: Optional[Path], items: Optional[Path], metric: str, name: str) -> tuple[Path, Path]:
    stem = Path(name).name
    for suffix in (".jsonl", ".json"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    o = out or Path(f"{metric}-{stem}.json")
    i = items or o.with_name(o.name[:-5] + ".items.jsonl" if o.name.endswith(".json") else o.name + ".items.jsonl")
    return o, i


def _argv() -> list[str]:
    return list(sys.argv)


def _progress(total: int, what: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    prog = Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err_console, transient=True, disable=not err_console.is_terminal)
    task = prog.add_task(what, total=total)
    return prog, (lambda _r: prog.advance(task))


def _write(doc: dict[str, Any], rows: list[dict[str, Any]] | None, out: Path, items: Path | None) -> None:
    write_json(out, doc)
    if rows is not None and items is not None:
        write_jsonl(items, rows)
        doc_note = f"{out} (+ {items})"
    else:
        doc_note = str(out)
    err_console.print(f"wrote {doc_note}", highlight=False)


# ----------------------------------------------------------------------------- vqa / captionqa

def _models(pool, *, answerer, answerer_config, answerer_model, extractor, extractor_config, extractor_model,
            api_base, api_key_env, judge=None, judge_config=None, judge_model=None):
    from .models import resolve_model

    a_cfg = resolve_model("answerer", answerer, answerer_config, answerer_model, api_base, api_key_env)
    if a_cfg is None:
        raise EvalInputError("an answerer model is needed: --answerer MODEL (transformers), --answerer-model NAME "
                             "with --api-base URL, or --answerer-config FILE.toml")
    e_cfg = resolve_model("extractor", extractor, extractor_config, extractor_model, api_base, api_key_env)
    j_cfg = resolve_model("judge", judge, judge_config, judge_model, api_base, api_key_env)
    a = pool.get("answerer", a_cfg)
    e = pool.get("extractor", e_cfg) if e_cfg is not None else None
    j = pool.get("judge", j_cfg) if j_cfg is not None else None
    return a, e, j


@app.command("vqa")
@_friendly
def vqa_cmd(
    captions: Path = CaptionsArg,
    benchmark: Path = typer.Option(..., "--benchmark", "-b", help="Questions: VLMEvalKit TSV, JSONL, or MM-Vet JSON."),
    field: str = FieldOpt,
    answerer: Optional[str] = typer.Option(None, "--answerer", help="Answerer: hub id or local path (transformers)."),
    answerer_config: Optional[Path] = typer.Option(None, "--answerer-config", help="Answerer ModelConfig TOML."),
    answerer_model: Optional[str] = typer.Option(None, "--answerer-model", help="Answerer served at --api-base."),
    extractor: Optional[str] = typer.Option(None, "--extractor", help="Option extractor (default: the answerer)."),
    extractor_config: Optional[Path] = typer.Option(None, "--extractor-config"),
    extractor_model: Optional[str] = typer.Option(None, "--extractor-model"),
    judge: Optional[str] = typer.Option(None, "--judge", help="Judge for open-ended answers (MM-Vet): hub id or path."),
    judge_config: Optional[Path] = typer.Option(None, "--judge-config"),
    judge_model: Optional[str] = typer.Option(None, "--judge-model"),
    api_base: Optional[str] = ApiBaseOpt,
    api_key_env: Optional[str] = ApiKeyOpt,
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Only the first N questions."),
    concurrency: int = typer.Option(8, "--concurrency", min=1, help="Questions in flight."),
    max_tokens: int = typer.Option(512, "--max-tokens", min=1, help="Answer length limit."),
    extract_max_tokens: int = typer.Option(32, "--extract-max-tokens", min=1),
    judge_max_tokens: int = typer.Option(16, "--judge-max-tokens", min=1),
    judge_attempts: int = typer.Option(5, "--judge-attempts", min=1, help="Tries per item before it is ungraded."),
    prompt: Optional[list[str]] = PromptOpt,
    by_domain: bool = ByDomainOpt,
    output: Optional[Path] = OutOpt,
    items: Optional[Path] = ItemsOpt,
) -> None:
    """Caption-only VQA, Prism protocol: a text LLM answers each question from the caption alone."""
    from .benchmarks import load_benchmark
    from .captions import load_captions
    from .models import BackendPool
    from .runs import run_vqa
    from .vqa import PrismVQA, VQASettings, load_prompts

    bench = load_benchmark(benchmark).limit(limit)
    caps = load_captions(captions, field)
    prompts = load_prompts(_prompt_overrides(prompt))
    settings = VQASettings(answer_max_tokens=max_tokens, extract_max_tokens=extract_max_tokens,
                           judge_max_tokens=judge_max_tokens, judge_attempts=judge_attempts, concurrency=concurrency)
    if any(it.kind == "open" for it in bench.items) and not (judge or judge_config or judge_model):
        n = sum(1 for it in bench.items if it.kind == "open")
        raise EvalInputError(f"{n} open-ended question(s) need a judge model: --judge MODEL, --judge-model NAME "
                             "with --api-base, or --judge-config FILE.toml")
    out, items_path = _paths(output, items, "vqa", caps.name)
    needs_judge = any(it.kind == "open" for it in bench.items)

    async def main():
        pool = BackendPool()
        try:
            a, e, j = _models(pool, answerer=answerer, answerer_config=answerer_config, answerer_model=answerer_model,
                              extractor=extractor, extractor_config=extractor_config, extractor_model=extractor_model,
                              judge=judge if needs_judge else None, judge_config=judge_config if needs_judge else None,
                              judge_model=judge_model if needs_judge else None, api_base=api_base, api_key_env=api_key_env)
            engine = PrismVQA(a, extractor=e, judge=j, settings=settings, prompts=prompts)
            prog, tick = _progress(len(bench.items), "vqa")
            with prog:
                return await run_vqa(caps, bench, engine, argv=_argv(), on_done=tick, by_domain=by_domain)
        finally:
            await pool.close()

    doc, rows = run_sync(main())
    _write(doc, rows, out, items_path)
    _print_qa(doc)


@app.command("captionqa")
@_friendly
def captionqa_cmd(
    captions: Path = CaptionsArg,
    benchmark: Path = typer.Option(..., "--benchmark", "-b", help="Multiple-choice questions: JSONL (id, image, question, options, answer, category) or TSV."),
    field: str = FieldOpt,
    answerer: Optional[str] = typer.Option(None, "--answerer", help="Answerer: hub id or local path (transformers)."),
    answerer_config: Optional[Path] = typer.Option(None, "--answerer-config"),
    answerer_model: Optional[str] = typer.Option(None, "--answerer-model"),
    extractor: Optional[str] = typer.Option(None, "--extractor"),
    extractor_config: Optional[Path] = typer.Option(None, "--extractor-config"),
    extractor_model: Optional[str] = typer.Option(None, "--extractor-model"),
    api_base: Optional[str] = ApiBaseOpt,
    api_key_env: Optional[str] = ApiKeyOpt,
    seed: int = typer.Option(0, "--seed", help="Seed of the option shuffle (recorded)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1),
    concurrency: int = typer.Option(8, "--concurrency", min=1),
    max_tokens: int = typer.Option(64, "--max-tokens", min=1, help="Answer length limit."),
    extract_max_tokens: int = typer.Option(32, "--extract-max-tokens", min=1),
    prompt: Optional[list[str]] = PromptOpt,
    by_domain: bool = ByDomainOpt,
    output: Optional[Path] = OutOpt,
    items: Optional[Path] = ItemsOpt,
) -> None:
    """CaptionQA: multiple-choice QA from the caption; correct 1, wrong 0, "cannot answer" 1/n + 0.05."""
    from .benchmarks import load_benchmark
    from .captionqa import CaptionQA, CaptionQASettings, load_prompts
    from .captions import load_captions
    from .runs import run_captionqa

    bench = load_benchmark(benchmark).limit(limit)
    caps = load_captions(captions, field)
    prompts = load_prompts(_prompt_overrides(prompt))
    settings = CaptionQASettings(seed=seed, answer_max_tokens=max_tokens, extract_max_tokens=extract_max_tokens,
                                 concurrency=concurrency)
    out, items_path = _paths(output, items, "captionqa", caps.name)

    async def main():
        from .models import BackendPool

        pool = BackendPool()
        try:
            a, e, _ = _models(pool, answerer=answerer, answerer_config=answerer_config, answerer_model=answerer_model,
                              extractor=extractor, extractor_config=extractor_config, extractor_model=extractor_model,
                              api_base=api_base, api_key_env=api_key_env)
            engine = CaptionQA(a, extractor=e, settings=settings, prompts=prompts)
            prog, tick = _progress(len(bench.items), "captionqa")
            with prog:
                return await run_captionqa(caps, bench, engine, argv=_argv(), on_done=tick, by_domain=by_domain)
        finally:
            await pool.close()

    doc, rows = run_sync(main())
    _write(doc, rows, out, items_path)
    _print_qa(doc)


def _print_qa(doc: dict[str, Any]) -> None:
    from rich.table import Table

    s = doc["summary"]
    key = "accuracy" if doc["metric"] == "vqa-prism" else "score"
    t = Table(title=f"{doc['metric']} — {doc['name']}")
    for c in ("category", "items", "evaluated", f"{key} %"):
        t.add_column(c, justify="left" if c == "category" else "right")
    if key == "accuracy":
        t.add_column("graded-only %", justify="right")
        t.add_column("ungraded", justify="right")

    def row(name: str, b: dict[str, Any]) -> list[str]:
        r = [name, str(b["items"]), str(b["evaluated"]), pct(b[key])]
        if key == "accuracy":
            r += [pct(b["accuracy_graded"]), str(b["ungraded"])]
        return r

    for c, b in s["per_category"].items():
        t.add_row(*row(c, b))
    t.add_row(*row("[bold]overall[/bold]", s["overall"]))
    console.print(t)
    _print_domains(doc)
    o = s["overall"]
    if o["missing_caption"]:
        ids = s["missing"]["ids"]
        console.print(f"[yellow]partial:[/yellow] {o['missing_caption']} question(s) had no caption: "
                      f"{', '.join(ids[:10])}{' …' if len(ids) > 10 else ''}", highlight=False)
    if o.get("ungraded"):
        reasons: dict[str, int] = {}
        for u in s["ungraded"]:
            r = u["reason"].split(": ", 1)[-1][:40]
            reasons[r] = reasons.get(r, 0) + 1
        top = "; ".join(f"{k} ×{v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])[:3])
        console.print(f"[yellow]ungraded:[/yellow] {o['ungraded']} answer(s) got no readable score from the judge "
                      f"(counted 0 in {key}): {top}", highlight=False)
    if o.get("errors"):
        console.print(f"[red]errors:[/red] {o['errors']} item(s) failed (see the items file)", highlight=False)
    if o.get("unextracted"):
        console.print(f"unextracted: {o['unextracted']} answer(s) named no option (scored 0)", highlight=False)


# ----------------------------------------------------------------------------- chair

@app.command("chair")
@_friendly
def chair_cmd(
    captions: Path = CaptionsArg,
    annotations: list[Path] = typer.Option(..., "--annotations", "-a", help="COCO instances JSON and/or COCO captions JSON, or {image_id: [objects]} JSON/JSONL; repeat to merge."),
    synonyms: Optional[Path] = typer.Option(None, "--synonyms", help="Synonym table (default: the bundled CHAIR COCO table)."),
    field: str = FieldOpt,
    details: bool = typer.Option(False, "--details", help="Also write per-image details (mentions, hallucinations, ground truth)."),
    by_domain: bool = ByDomainOpt,
    output: Optional[Path] = OutOpt,
    items: Optional[Path] = ItemsOpt,
) -> None:
    """CHAIR_s, CHAIR_i, object recall and caption length on COCO images."""
    from .captions import load_captions
    from .chair import ChairVocabulary, load_ground_truth
    from .runs import run_chair

    vocab = ChairVocabulary(synonyms)
    gt = load_ground_truth(list(annotations), vocab)
    caps = load_captions(captions, field, numeric_ids=True)
    doc, rows = run_chair(caps, gt, vocab, argv=_argv(), by_domain=by_domain)
    out, items_path = _paths(output, items, "chair", caps.name)
    _write(doc, rows if details else None, out, items_path if details else None)
    s = doc["summary"]
    from rich.table import Table

    t = Table(title=f"CHAIR — {doc['name']}")
    for c in ("captions", "CHAIR_s %", "CHAIR_i %", "recall %", "words/caption", "mentions", "hallucinated"):
        t.add_column(c, justify="right")
    t.add_row(str(s["captions"]), pct(s["chair_s"]), pct(s["chair_i"]), pct(s["recall"]),
              "-" if s["mean_length_words"] is None else f"{s['mean_length_words']:.1f}",
              str(s["mentions"]), str(s["hallucinated_mentions"]))
    console.print(t)
    _print_domains(doc)
    if doc["top_hallucinations"]:
        console.print("most hallucinated: " + ", ".join(f"{c} ×{n}" for c, n in doc["top_hallucinations"]), highlight=False)
    if s["unknown_ids"]["count"]:
        console.print(f"[yellow]partial:[/yellow] {s['unknown_ids']['count']} caption id(s) match no annotated image: "
                      f"{', '.join(s['unknown_ids']['ids'][:10])}", highlight=False)
    if s["unusable_captions"]["count"]:
        console.print(f"[yellow]partial:[/yellow] {s['unusable_captions']['count']} caption(s) unusable (failed or empty)", highlight=False)
    if s["unmapped_annotation_names"]:
        console.print(f"note: annotation names outside the vocabulary were ignored: {', '.join(list(s['unmapped_annotation_names'])[:10])}",
                      highlight=False)


# ----------------------------------------------------------------------------- capture

def _capture_evaluator(pool, *, parser, parser_llm, parser_config, parser_model, api_base, api_key_env, embedder,
                       wordnet, stop_words, soft_threshold, device, prompt_overrides, parser_max_tokens=256):
    from . import capture as cap
    from . import prompts as eval_prompts
    from .models import resolve_model

    prompts: dict[str, str] = {}
    if parser and (parser_llm or parser_config or parser_model):
        raise EvalInputError("capture: give either --parser (seq2seq checkpoint) or an LLM parser, not both")
    if parser:
        p = cap.Seq2SeqParser(parser, device=device, max_output_tokens=min(parser_max_tokens, 128))
    else:
        cfg = resolve_model("parser", parser_llm, parser_config, parser_model, api_base, api_key_env)
        if cfg is None:
            raise EvalInputError(
                "capture needs a scene-graph parser: --parser PATH (a local seq2seq checkpoint; the official one is "
                "FACTUAL's lizhuang144/flan-t5-base-VG-factual-sg), or an LLM writing the same tuples (NOT official): "
                "--parser-llm MODEL, --parser-model NAME with --api-base, or --parser-config FILE.toml")
        prompts = {"scene_graph": eval_prompts.load("scene_graph", prompt_overrides.get("scene_graph")),
                   "system": eval_prompts.load("system", prompt_overrides.get("system"))}
        p = cap.LLMParser(pool.get("parser", cfg), prompts["scene_graph"], prompts["system"] or None,
                          max_tokens=parser_max_tokens)
    if wordnet:
        from .wordnet import WordNet

        wn = WordNet(wordnet)
        synonyms, lemmatizer = wn, cap.WordNetLemmatizer(wn)
    else:
        synonyms, lemmatizer = cap.TableSynonyms.coco(), cap.RuleLemmatizer()
    emb = cap.load_embedder(embedder, device) if embedder else None
    config = cap.CaptureConfig(parser=p, synonyms=synonyms, lemmatizer=lemmatizer, embedder=emb,
                               stop_words=cap.load_stop_words(stop_words), stop_words_given=stop_words is not None,
                               soft_threshold=soft_threshold, tagger=cap.NounTagger())
    return cap.CaptureEvaluator(config), prompts


def _refined(pool, evaluator, prompts, *, extra_objects, judge, judge_config, judge_model, api_base, api_key_env,
             prompt_overrides):
    """The refined variant's judge (a role-bound LLM) and extra objects; the prompts it sends join ``prompts``."""
    from . import prompts as eval_prompts
    from .capture_refined import Refined, load_extra_objects, make_judge
    from .models import describe, resolve_model

    cfg = resolve_model("judge", judge, judge_config, judge_model, api_base, api_key_env)
    if cfg is None:
        raise EvalInputError("capture --refined asks each relation as a yes/no question to an LLM judge: give --judge "
                             "MODEL, --judge-model NAME with --api-base, or --judge-config FILE.toml")
    backend = pool.get("judge", cfg)
    prompts["relation_judge"] = eval_prompts.load("relation_judge", prompt_overrides.get("relation_judge"))
    prompts.setdefault("system", eval_prompts.load("system", prompt_overrides.get("system")))
    extra = load_extra_objects(extra_objects, evaluator.config.lemmatizer.noun) if extra_objects else {}
    return Refined(make_judge(backend, prompts["relation_judge"], prompts["system"] or None), extra,
                   {"judge": describe(backend, cfg)})


@app.command("capture")
@_friendly
def capture_cmd(
    captions: Path = CaptionsArg,
    references: Path = typer.Option(..., "--references", "-r", help="References: {id: [ref, ...]} JSON or JSONL rows (id, references)."),
    field: str = FieldOpt,
    parser: Optional[Path] = typer.Option(None, "--parser", help="Local seq2seq scene-graph parser checkpoint (official: FACTUAL flan-t5-base-VG-factual-sg)."),
    parser_llm: Optional[str] = typer.Option(None, "--parser-llm", help="LLM (hub id/path, transformers) prompted to write scene-graph tuples: NOT official."),
    parser_config: Optional[Path] = typer.Option(None, "--parser-config", help="LLM parser ModelConfig TOML."),
    parser_model: Optional[str] = typer.Option(None, "--parser-model", help="LLM parser served at --api-base."),
    api_base: Optional[str] = ApiBaseOpt,
    api_key_env: Optional[str] = ApiKeyOpt,
    embedder: Optional[Path] = typer.Option(None, "--embedder", help="Local sentence-embedding model for the soft stage (official: all-mpnet-base-v2)."),
    wordnet: Optional[Path] = typer.Option(None, "--wordnet", help="WordNet dict folder (index.noun, data.noun, ...) for synonyms and lemmas."),
    stop_words: Optional[Path] = typer.Option(None, "--stop-words", help="Object stop words: one per line, or CAPTURE's stop_words.py."),
    soft_threshold: Optional[float] = typer.Option(None, "--soft-threshold", help="Count soft similarities below this as 0 (NOT official)."),
    device: str = typer.Option("cpu", "--device", help="Device of the parser and embedder."),
    parser_max_tokens: int = typer.Option(256, "--parser-max-tokens", min=1, help="Length limit of one sentence's parse (seq2seq: at most 128, as FACTUAL)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1),
    details: bool = typer.Option(False, "--details", help="Also write per-caption details (elements, graphs, matches)."),
    refined: bool = typer.Option(False, "--refined", help="Also score refined CAPTURE (SC-Captioner): extra objects "
                                 "for precision, attributes per object, relations asked to a --judge LLM."),
    extra_objects: Optional[Path] = typer.Option(None, "--extra-objects", help="--refined: {id: [object, ...]} JSON of "
                                                 "objects in the image that no reference mentions."),
    judge: Optional[str] = typer.Option(None, "--judge", help="--refined: the relation judge LLM (hub id/path, transformers)."),
    judge_config: Optional[Path] = typer.Option(None, "--judge-config", help="--refined: judge ModelConfig TOML."),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", help="--refined: judge served at --api-base."),
    prompt: Optional[list[str]] = PromptOpt,
    by_domain: bool = ByDomainOpt,
    output: Optional[Path] = OutOpt,
    items: Optional[Path] = ItemsOpt,
) -> None:
    """CAPTURE: scene-graph objects, attributes and relations of caption vs references, matched in three stages."""
    from .capture import load_references
    from .captions import load_captions
    from .runs import run_capture

    refs = load_references(references)
    caps = load_captions(captions, field)
    out, items_path = _paths(output, items, "capture", caps.name)

    async def main():
        from .models import BackendPool

        pool = BackendPool()
        try:
            ev, prompts = _capture_evaluator(
                pool, parser=parser, parser_llm=parser_llm, parser_config=parser_config, parser_model=parser_model,
                api_base=api_base, api_key_env=api_key_env, embedder=embedder, wordnet=wordnet, stop_words=stop_words,
                soft_threshold=soft_threshold, device=device, prompt_overrides=_prompt_overrides(prompt),
                parser_max_tokens=parser_max_tokens)
            ref = None
            if refined:
                ref = _refined(pool, ev, prompts, extra_objects=extra_objects, judge=judge, judge_config=judge_config,
                               judge_model=judge_model, api_base=api_base, api_key_env=api_key_env,
                               prompt_overrides=_prompt_overrides(prompt))
            elif extra_objects or judge or judge_config or judge_model:
                raise EvalInputError("capture: --extra-objects and --judge* belong to --refined")
            return await run_capture(caps, refs, ev, references, limit=limit, argv=_argv(), prompts=prompts,
                                     refined=ref, extra_objects_path=extra_objects, by_domain=by_domain)
        finally:
            await pool.close()

    doc, rows = run_sync(main())
    _write(doc, rows if details else None, out, items_path if details else None)
    s = doc["summary"]
    from rich.table import Table

    t = Table(title=f"{doc['label']} — {doc['name']}")
    for c in ("captions", "CAPTURE %", "P/R/F1 obj %", "P/R/F1 attr %", "P/R/F1 rel %"):
        t.add_column(c, justify="right")
    trip = lambda k: "/".join(pct(s[f"{k}_{x}"]) for x in ("precision", "recall", "f1"))  # noqa: E731
    t.add_row(str(s["captions"]), pct(s["score"]), trip("object"), trip("attribute"), trip("relation"))
    console.print(t)
    if "refined" in s:
        rs = s["refined"]
        rt = Table(title=f"refined CAPTURE (SC-Captioner, our reading) — {doc['name']}")
        for c in ("captions", "refined %", "P/R/F1 obj %", "P/R/F1 attr %", "P/R/F1 rel (judge) %"):
            rt.add_column(c, justify="right")
        rtrip = lambda k: "/".join(pct(rs[f"{k}_{x}"]) for x in ("precision", "recall", "f1"))  # noqa: E731
        rt.add_row(str(rs["captions"]), pct(rs["score"]), rtrip("object"), rtrip("attribute"), rtrip("relation"))
        console.print(rt)
    _print_domains(doc)
    if not doc["official"]:
        console.print("[yellow]NOT the official CAPTURE metric:[/yellow]", highlight=False)
        for d in doc["deviations"]:
            console.print(f"  - {d}", highlight=False)
    if s["unknown_ids"]["count"]:
        console.print(f"[yellow]partial:[/yellow] {s['unknown_ids']['count']} caption id(s) have no references", highlight=False)


# ----------------------------------------------------------------------------- arena / dcscore

ImagesOpt = typer.Option(None, "--images", help="Folder of the images, matched to caption ids by file name (default: the sources a scalecap results file records).")
PriceOpt = typer.Option(None, "--price", metavar="ROLE=PROMPT:COMPLETION", help="USD per 1M prompt and completion tokens of a role (or '*'); gives the cost per item. Repeatable.")
ResumeOpt = typer.Option(False, "--resume", help="Continue an interrupted evaluation from its items file (finished items are kept, failed ones retried).")
OverwriteOpt = typer.Option(False, "--overwrite", help="Start again even if the items file exists.")
ConstrainOpt = typer.Option(True, "--constrain/--no-constrain", help="Constrain replies to the expected format where the backend can.")


def _images(folder: Optional[Path], captions) -> Any:
    from .judged import ImageFinder, result_sources

    sources = result_sources(captions.path) if folder is None and captions.path is not None else {}
    return ImageFinder(folder, sources, base=captions.path.parent if captions.path is not None else None)


def _role(pool, role: str, path, config, served, api_base, api_key_env, *, required: bool):
    from .models import resolve_model

    cfg = resolve_model(role, path, config, served, api_base, api_key_env)
    if cfg is None and required:
        raise EvalInputError(f"a {role} model is needed: --{role} MODEL (transformers), --{role}-model NAME "
                             f"with --api-base URL, or --{role}-config FILE.toml")
    return pool.get(role, cfg) if cfg is not None else None


def _print_failures(s: dict[str, Any]) -> None:
    if s["errors"]:
        first = next((f["reason"] for f in s["failed"] if f["status"] == "error"), "")
        console.print(f"[red]errors:[/red] {s['errors']} item(s) failed and are not counted (first: {first[:120]}); "
                      "see the items file, --resume retries them", highlight=False)
    missing = s["missing_caption"] + s["missing_image"]
    if missing:
        console.print(f"[yellow]partial:[/yellow] {s['missing_caption']} item(s) without a caption, "
                      f"{s['missing_image']} without an image", highlight=False)
    c = s["cost"]
    if c["cost_usd"] is not None:
        console.print(f"cost: ${c['cost_usd']:.4f} (${c['cost_per_item_usd']:.6f} per item)", highlight=False)


def _exit_code(s: dict[str, Any]) -> None:
    if s["errors"]:
        raise typer.Exit(1)


@app.command("arena")
@_friendly
def arena_cmd(
    captions: Path = CaptionsArg,
    against: Path = typer.Option(..., "--against", help="The other caption set, or fixed baseline captions (same formats)."),
    images: Optional[Path] = ImagesOpt,
    field: str = FieldOpt,
    against_field: Optional[str] = typer.Option(None, "--against-field", help="Caption field of --against (default: --field)."),
    judge: Optional[str] = typer.Option(None, "--judge", help="Judge VLM: hub id or local path (transformers)."),
    judge_config: Optional[Path] = typer.Option(None, "--judge-config", help="Judge ModelConfig TOML."),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", help="Judge served at --api-base."),
    api_base: Optional[str] = ApiBaseOpt,
    api_key_env: Optional[str] = ApiKeyOpt,
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Only the first N pairs."),
    concurrency: int = typer.Option(8, "--concurrency", min=1, help="Pairs in flight."),
    max_tokens: int = typer.Option(256, "--max-tokens", min=1, help="Length limit of one verdict."),
    reason_chars: int = typer.Option(400, "--reason-chars", min=1, help="Length limit of the reason line (constrained decoding)."),
    constrain: bool = ConstrainOpt,
    price: Optional[list[str]] = PriceOpt,
    prompt: Optional[list[str]] = typer.Option(None, "--prompt", help="Override a prompt: NAME=FILE (system, arena_judge)."),
    by_domain: bool = ByDomainOpt,
    resume: bool = ResumeOpt,
    overwrite: bool = OverwriteOpt,
    output: Optional[Path] = OutOpt,
    items: Optional[Path] = ItemsOpt,
) -> None:
    """Pairwise battles of two caption sets judged by a VLM with the image, both orders (CapArena-Auto)."""
    from .arena import ROLES, Arena, ArenaSettings, load_prompts
    from .captions import load_captions
    from .judged import RolePrices, check_items_file
    from .models import BackendPool
    from .runs import run_arena

    a = load_captions(captions, field)
    b = load_captions(against, against_field or field)
    finder = _images(images, a)
    prompts = load_prompts(_prompt_overrides(prompt))
    prices = RolePrices.parse(price or [], ROLES)
    settings = ArenaSettings(max_tokens=max_tokens, reason_max_chars=reason_chars, constrain=constrain,
                             concurrency=concurrency)
    out, items_path = _paths(output, items, "arena", f"{a.name}-vs-{b.name}")
    check_items_file(items_path, resume, overwrite)

    async def main():
        pool = BackendPool()
        try:
            j = _role(pool, "judge", judge, judge_config, judge_model, api_base, api_key_env, required=True)
            engine = Arena(j, settings=settings, prompts=prompts, prices=prices)
            n = len(a.captions) + len(a.unusable)
            prog, tick = _progress(min(n, limit) if limit else n, "arena")
            with prog:
                return await run_arena(a, b, finder, engine, items_path=items_path, resume=resume, overwrite=overwrite,
                                       limit=limit, argv=_argv(), on_done=tick, by_domain=by_domain)
        finally:
            await pool.close()

    doc, _rows = run_sync(main())
    _write(doc, None, out, None)
    err_console.print(f"items: {items_path}", highlight=False)
    from rich.table import Table

    s = doc["summary"]
    t = Table(title=f"arena — {s['a']} (A) vs {s['b']} (B)")
    for c in ("pairs", "judged", "A wins", "ties", "B wins", "score A", "score B", "win rate A %", "order flips"):
        t.add_column(c, justify="right")
    sc = lambda x: "-" if x is None else f"{x:+.1f}"  # noqa: E731
    t.add_row(str(s["pairs"]), str(s["judged"]), str(s["wins"]), str(s["ties"]), str(s["losses"]), sc(s["score_a"]),
              sc(s["score_b"]), pct(s["win_rate_a"]), str(s["order_disagreements"]))
    console.print(t)
    _print_domains(doc)
    _print_failures(s)
    _exit_code(s)


@app.command("dcscore")
@_friendly
def dcscore_cmd(
    captions: Path = CaptionsArg,
    images: Optional[Path] = ImagesOpt,
    references: Optional[Path] = typer.Option(None, "--references", "-r", help="Reference captions for recall: {id: [ref, ...]} JSON or JSONL rows (id, references)."),
    field: str = FieldOpt,
    decomposer: Optional[str] = typer.Option(None, "--decomposer", help="LLM splitting captions into units: hub id or path."),
    decomposer_config: Optional[Path] = typer.Option(None, "--decomposer-config"),
    decomposer_model: Optional[str] = typer.Option(None, "--decomposer-model"),
    judge: Optional[str] = typer.Option(None, "--judge", help="VLM judging each unit against the image: hub id or path."),
    judge_config: Optional[Path] = typer.Option(None, "--judge-config"),
    judge_model: Optional[str] = typer.Option(None, "--judge-model"),
    matcher: Optional[str] = typer.Option(None, "--matcher", help="LLM matching reference units (default: the decomposer)."),
    matcher_config: Optional[Path] = typer.Option(None, "--matcher-config"),
    matcher_model: Optional[str] = typer.Option(None, "--matcher-model"),
    api_base: Optional[str] = ApiBaseOpt,
    api_key_env: Optional[str] = ApiKeyOpt,
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Only the first N captions."),
    concurrency: int = typer.Option(4, "--concurrency", min=1, help="Captions in flight (each runs its units at once)."),
    decompose_max_tokens: int = typer.Option(1024, "--decompose-max-tokens", min=1),
    judge_max_tokens: int = typer.Option(4, "--judge-max-tokens", min=1),
    max_units: int = typer.Option(64, "--max-units", min=1, help="Most units one caption is split into (constrained decoding)."),
    unit_chars: int = typer.Option(200, "--unit-chars", min=2, help="Length limit of one unit (constrained decoding)."),
    constrain: bool = ConstrainOpt,
    price: Optional[list[str]] = PriceOpt,
    prompt: Optional[list[str]] = typer.Option(None, "--prompt", help="Override a prompt: NAME=FILE (system, dcscore_decompose, dcscore_judge, dcscore_match)."),
    by_domain: bool = ByDomainOpt,
    resume: bool = ResumeOpt,
    overwrite: bool = OverwriteOpt,
    output: Optional[Path] = OutOpt,
    items: Optional[Path] = ItemsOpt,
) -> None:
    """DCScore: captions as primitive units judged against the image; precision, recall (with references), F1."""
    from .captions import load_captions
    from .capture import load_references
    from .dcscore import ROLES, DCScore, DCScoreSettings, load_prompts
    from .judged import RolePrices, check_items_file
    from .models import BackendPool
    from .runs import run_dcscore

    caps = load_captions(captions, field)
    refs = load_references(references) if references is not None else None
    finder = _images(images, caps)
    prompts = load_prompts(_prompt_overrides(prompt))
    prices = RolePrices.parse(price or [], ROLES)
    settings = DCScoreSettings(decompose_max_tokens=decompose_max_tokens, judge_max_tokens=judge_max_tokens,
                               max_units=max_units, unit_max_chars=unit_chars, constrain=constrain,
                               concurrency=concurrency)
    out, items_path = _paths(output, items, "dcscore", caps.name)
    check_items_file(items_path, resume, overwrite)

    async def main():
        pool = BackendPool()
        try:
            d = _role(pool, "decomposer", decomposer, decomposer_config, decomposer_model, api_base, api_key_env,
                      required=True)
            j = _role(pool, "judge", judge, judge_config, judge_model, api_base, api_key_env, required=True)
            m = _role(pool, "matcher", matcher, matcher_config, matcher_model, api_base, api_key_env, required=False)
            engine = DCScore(d, j, matcher=m, settings=settings, prompts=prompts, prices=prices)
            n = len(caps.captions) + len(caps.unusable)
            prog, tick = _progress(min(n, limit) if limit else n, "dcscore")
            with prog:
                return await run_dcscore(caps, finder, engine, references=refs, references_path=references,
                                         items_path=items_path, resume=resume, overwrite=overwrite, limit=limit,
                                         argv=_argv(), on_done=tick, by_domain=by_domain)
        finally:
            await pool.close()

    doc, _rows = run_sync(main())
    _write(doc, None, out, None)
    err_console.print(f"items: {items_path}", highlight=False)
    from rich.table import Table

    s = doc["summary"]
    t = Table(title=f"dcscore — {doc['name']}")
    for c in ("captions", "scored", "units", "units/caption", "precision %", "recall %", "F1 %"):
        t.add_column(c, justify="right")
    t.add_row(str(s["captions"]), str(s["scored"]), str(s["units"]),
              "-" if s["units_per_caption"] is None else f"{s['units_per_caption']:.1f}",
              pct(s["precision"]), pct(s["recall"]), pct(s["f1"]))
    console.print(t)
    _print_domains(doc)
    if not s["with_references"]:
        console.print("no --references: recall and F1 need reference captions", highlight=False)
    _print_failures(s)
    _exit_code(s)


# ----------------------------------------------------------------------------- compare

@app.command("compare")
@_friendly
def compare_cmd(
    inputs: list[Path] = typer.Argument(..., help="Caption files (with --metric) or result JSON files of one metric."),
    metric: Optional[str] = typer.Option(None, "--metric", "-m", help="chair | vqa | captionqa | capture | arena | dcscore; omit to compare result files."),
    names: Optional[str] = typer.Option(None, "--names", help="Comma-separated row names (default: file names)."),
    fmt: str = typer.Option("md", "--format", help="md or csv, for --output."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the table here (Markdown or CSV)."),
    save_results: Optional[Path] = typer.Option(None, "--save-results", help="Folder to keep each set's full result JSON."),
    field: str = FieldOpt,
    fields: Optional[str] = typer.Option(None, "--fields", help="Comma-separated caption fields, each a row per input (e.g. first_caption,final_caption,corrected_caption); replaces --field."),
    per_question: bool = typer.Option(False, "--per-question", help="Add the questions asked per image (from the scalecap records) and the headline number per question: fixed N vs --budget auto."),
    by_domain: bool = typer.Option(False, "--by-domain", help="With --metric: a row per domain under each set's row even when its captions span one domain (with more than one, and for result files that carry a breakdown, always)."),
    annotations: Optional[list[Path]] = typer.Option(None, "--annotations", "-a", help="chair: annotation files."),
    synonyms: Optional[Path] = typer.Option(None, "--synonyms", help="chair: synonym table."),
    benchmark: Optional[Path] = typer.Option(None, "--benchmark", "-b", help="vqa/captionqa: questions."),
    references: Optional[Path] = typer.Option(None, "--references", "-r", help="capture, dcscore: references."),
    against: Optional[Path] = typer.Option(None, "--against", help="arena: the baseline captions every set battles."),
    images: Optional[Path] = typer.Option(None, "--images", help="arena, dcscore: folder of the images."),
    decomposer: Optional[str] = typer.Option(None, "--decomposer"),
    decomposer_config: Optional[Path] = typer.Option(None, "--decomposer-config"),
    decomposer_model: Optional[str] = typer.Option(None, "--decomposer-model"),
    matcher: Optional[str] = typer.Option(None, "--matcher"),
    matcher_config: Optional[Path] = typer.Option(None, "--matcher-config"),
    matcher_model: Optional[str] = typer.Option(None, "--matcher-model"),
    price: Optional[list[str]] = typer.Option(None, "--price", help="arena, dcscore: ROLE=PROMPT:COMPLETION USD per 1M tokens."),
    reason_chars: int = typer.Option(400, "--reason-chars", min=1, help="arena: length limit of the reason line."),
    answerer: Optional[str] = typer.Option(None, "--answerer"),
    answerer_config: Optional[Path] = typer.Option(None, "--answerer-config"),
    answerer_model: Optional[str] = typer.Option(None, "--answerer-model"),
    extractor: Optional[str] = typer.Option(None, "--extractor"),
    extractor_config: Optional[Path] = typer.Option(None, "--extractor-config"),
    extractor_model: Optional[str] = typer.Option(None, "--extractor-model"),
    judge: Optional[str] = typer.Option(None, "--judge"),
    judge_config: Optional[Path] = typer.Option(None, "--judge-config"),
    judge_model: Optional[str] = typer.Option(None, "--judge-model"),
    parser: Optional[Path] = typer.Option(None, "--parser"),
    parser_llm: Optional[str] = typer.Option(None, "--parser-llm"),
    parser_config: Optional[Path] = typer.Option(None, "--parser-config"),
    parser_model: Optional[str] = typer.Option(None, "--parser-model"),
    embedder: Optional[Path] = typer.Option(None, "--embedder"),
    wordnet: Optional[Path] = typer.Option(None, "--wordnet"),
    stop_words: Optional[Path] = typer.Option(None, "--stop-words"),
    api_base: Optional[str] = ApiBaseOpt,
    api_key_env: Optional[str] = ApiKeyOpt,
    seed: int = typer.Option(0, "--seed", help="captionqa: shuffle seed."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1),
    concurrency: int = typer.Option(8, "--concurrency", min=1),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", min=1, help="vqa/captionqa: answer length limit."),
    judge_max_tokens: int = typer.Option(16, "--judge-max-tokens", min=1),
    judge_attempts: int = typer.Option(5, "--judge-attempts", min=1),
) -> None:
    """The same metric on several caption sets (or saved results) side by side, with each row's item count."""
    from . import compare as cmp
    from .captions import load_captions

    if fmt not in ("md", "csv"):
        raise EvalInputError(f"--format must be md or csv, not {fmt!r}")
    field_list = [f.strip() for f in fields.split(",") if f.strip()] if fields is not None else [field]
    if not field_list or len(set(field_list)) != len(field_list):
        raise EvalInputError(f"--fields {fields!r}: expected distinct comma-separated field names")
    if fields is not None and metric is None:
        raise EvalInputError("--fields needs --metric (a result file holds the numbers of one field already)")
    plan = [(p, f) for p in inputs for f in field_list]
    row_names = [n.strip() for n in names.split(",")] if names else None
    if row_names is not None and len(row_names) != len(plan):
        raise EvalInputError(f"--names gives {len(row_names)} name(s) for {len(plan)} row(s)")
    docs: list[dict[str, Any]] = []
    if metric is None:
        docs = [cmp.load_result(p) for p in inputs]
    else:
        m = {"vqa": "vqa", "vqa-prism": "vqa", "chair": "chair", "captionqa": "captionqa", "capture": "capture",
             "arena": "arena", "dcscore": "dcscore"}.get(metric)
        if m is None:
            raise EvalInputError(f"--metric must be chair, vqa, captionqa, capture, arena or dcscore, not {metric!r}")
        sets = [load_captions(p, f, numeric_ids=(m == "chair")) for p, f in plan]
        # read before any model runs: a file without records must not cost a whole evaluation first
        asked = [cmp.questions_asked(cs.path, cs.captions) for cs in sets] if per_question else None
        docs = run_sync(_compare_run(m, sets, locals()))
        for i, (d, cs) in enumerate(zip(docs, sets)):
            if len(field_list) > 1:
                d["name"] = cs.field if len(inputs) == 1 else f"{cs.name}.{cs.field}"
            if asked is not None:
                d["questions_asked"] = asked[i]
                if d.get("by_domain"):
                    d["questions_asked_by_domain"] = {
                        dom: cmp.questions_asked(cs.path, [k for k in cs.captions if cs.domain_of(k) == dom])
                        for dom in d["by_domain"]}
    if row_names:
        for d, n in zip(docs, row_names):
            d["name"] = n
    if save_results:
        for d in docs:
            write_json(save_results / f"{d['metric']}-{d['name']}.json", d)
    t = cmp.table(cmp.with_domains(docs), per_question=per_question)
    console.print(cmp.to_rich(t, title=f"{docs[0]['metric']}: {len(docs)} caption set(s)"))
    if docs[0]["metric"] == "capture" and not all(d.get("official") for d in docs):
        console.print("[yellow]rows marked official=NO are not the official CAPTURE metric (see each result's deviations)[/yellow]")
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(cmp.to_markdown(t) if fmt == "md" else cmp.to_csv(t), encoding="utf-8")
        err_console.print(f"wrote {output}", highlight=False)


async def _compare_run(metric: str, sets: list, o: dict[str, Any]) -> list[dict[str, Any]]:
    from . import runs
    from .models import BackendPool

    pool = BackendPool()
    docs = []
    try:
        if metric == "chair":
            from .chair import ChairVocabulary, load_ground_truth

            if not o["annotations"]:
                raise EvalInputError("compare --metric chair needs --annotations")
            vocab = ChairVocabulary(o["synonyms"])
            gt = load_ground_truth(list(o["annotations"]), vocab)
            return [runs.run_chair(cs, gt, vocab, argv=_argv(), by_domain=o["by_domain"])[0] for cs in sets]
        if metric in ("vqa", "captionqa"):
            from .benchmarks import load_benchmark

            if not o["benchmark"]:
                raise EvalInputError(f"compare --metric {metric} needs --benchmark")
            bench = load_benchmark(o["benchmark"]).limit(o["limit"])
            kw = dict(answerer=o["answerer"], answerer_config=o["answerer_config"], answerer_model=o["answerer_model"],
                      extractor=o["extractor"], extractor_config=o["extractor_config"], extractor_model=o["extractor_model"],
                      api_base=o["api_base"], api_key_env=o["api_key_env"])
            if metric == "vqa":
                from .vqa import PrismVQA, VQASettings

                if any(it.kind == "open" for it in bench.items) and not (o["judge"] or o["judge_config"] or o["judge_model"]):
                    raise EvalInputError("open-ended questions need a judge model: --judge MODEL (or --judge-model/--judge-config)")
                a, e, j = _models(pool, judge=o["judge"], judge_config=o["judge_config"], judge_model=o["judge_model"], **kw)
                engine = PrismVQA(a, extractor=e, judge=j, settings=VQASettings(
                    answer_max_tokens=o["max_tokens"] or 512, judge_max_tokens=o["judge_max_tokens"],
                    judge_attempts=o["judge_attempts"], concurrency=o["concurrency"]))
                for cs in sets:
                    docs.append((await runs.run_vqa(cs, bench, engine, argv=_argv(), by_domain=o["by_domain"]))[0])
            else:
                from .captionqa import CaptionQA, CaptionQASettings

                a, e, _ = _models(pool, **kw)
                engine = CaptionQA(a, extractor=e, settings=CaptionQASettings(
                    seed=o["seed"], answer_max_tokens=o["max_tokens"] or 64, concurrency=o["concurrency"]))
                for cs in sets:
                    docs.append((await runs.run_captionqa(cs, bench, engine, argv=_argv(), by_domain=o["by_domain"]))[0])
            return docs
        if metric == "capture":
            from .capture import load_references

            if not o["references"]:
                raise EvalInputError("compare --metric capture needs --references")
            refs = load_references(o["references"])
            ev, prompts = _capture_evaluator(
                pool, parser=o["parser"], parser_llm=o["parser_llm"], parser_config=o["parser_config"],
                parser_model=o["parser_model"], api_base=o["api_base"], api_key_env=o["api_key_env"],
                embedder=o["embedder"], wordnet=o["wordnet"], stop_words=o["stop_words"], soft_threshold=None,
                device="cpu", prompt_overrides={})
            for cs in sets:
                docs.append((await runs.run_capture(cs, refs, ev, o["references"], limit=o["limit"], argv=_argv(),
                                                    prompts=prompts, by_domain=o["by_domain"]))[0])
            return docs
        if metric in ("arena", "dcscore"):
            return await _compare_judged(metric, sets, o, pool)
    finally:
        await pool.close()
    raise EvalInputError(f"unknown metric {metric}")


async def _compare_judged(metric: str, sets: list, o: dict[str, Any], pool) -> list[dict[str, Any]]:
    """arena (each set against --against) or dcscore (each set alone), no items files."""
    from . import runs
    from .judged import RolePrices

    j = _role(pool, "judge", o["judge"], o["judge_config"], o["judge_model"], o["api_base"], o["api_key_env"],
              required=True)
    docs = []
    if metric == "arena":
        from .arena import ROLES, Arena, ArenaSettings
        from .captions import load_captions

        if not o["against"]:
            raise EvalInputError("compare --metric arena needs --against BASELINE (the captions every set battles)")
        b = load_captions(o["against"], o["field"])
        engine = Arena(j, settings=ArenaSettings(max_tokens=o["max_tokens"] or 256, reason_max_chars=o["reason_chars"],
                                                 concurrency=o["concurrency"]),
                       prices=RolePrices.parse(o["price"] or [], ROLES))
        for cs in sets:
            docs.append((await runs.run_arena(cs, b, _images(o["images"], cs), engine, limit=o["limit"],
                                              argv=_argv(), by_domain=o["by_domain"]))[0])
        return docs
    from .capture import load_references
    from .dcscore import ROLES, DCScore, DCScoreSettings

    d = _role(pool, "decomposer", o["decomposer"], o["decomposer_config"], o["decomposer_model"], o["api_base"],
              o["api_key_env"], required=True)
    m = _role(pool, "matcher", o["matcher"], o["matcher_config"], o["matcher_model"], o["api_base"],
              o["api_key_env"], required=False)
    refs = load_references(o["references"]) if o["references"] else None
    settings = DCScoreSettings(concurrency=o["concurrency"])
    if o["max_tokens"]:
        settings.decompose_max_tokens = o["max_tokens"]
    engine = DCScore(d, j, matcher=m, settings=settings, prices=RolePrices.parse(o["price"] or [], ROLES))
    for cs in sets:
        docs.append((await runs.run_dcscore(cs, _images(o["images"], cs), engine, references=refs,
                                            references_path=o["references"], limit=o["limit"], argv=_argv(),
                                            by_domain=o["by_domain"]))[0])
    return docs


def main() -> None:  # pragma: no cover - `python -m scalecap.eval.cli`
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
