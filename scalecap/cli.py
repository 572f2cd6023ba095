"""The ``scalecap`` command: argument parsing and printing over the Python API, nothing else."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape
from typer.core import TyperCommand

from .console import cli_console

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Detailed, hallucination-resistant image captions at dataset scale (ScaleCap).")
console = cli_console(stderr=True)


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def _describe(exc: Exception) -> str:
    """One line per problem: pydantic's validation errors are long; a user needs field and reason."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors())
    return str(exc)


def build_roles(model: Optional[str], captioner: Optional[str], scorer: Optional[str], writer: Optional[str],
                api_base: Optional[str], api_key_env: Optional[str], config: Optional[Path],
                trust_remote_code: bool = False) -> tuple[dict, dict]:
    """Role -> ModelConfig from the command line (or a config file), and the file's settings."""
    from pydantic import ValidationError

    from .config import ModelConfig, RunConfig

    settings: dict[str, Any] = {}
    roles: dict[str, Any] = {}
    if config is not None:
        try:
            run_config = RunConfig.load(config)
        except (OSError, ValueError, ValidationError) as exc:
            _fail(f"config file {config}: {_describe(exc)}")
        roles = {r: getattr(run_config, r) for r in ("captioner", "scorer", "writer")}
        settings = run_config.settings.model_dump(exclude_unset=True)
    overrides = {"captioner": captioner, "scorer": scorer, "writer": writer}
    for role in ("captioner", "scorer", "writer"):
        name = overrides[role] or (model if role not in roles else None)
        if role == "scorer" and not overrides["scorer"] and captioner:
            name = captioner  # the scorer is the captioner unless set (METHOD section 2)
        if name is None:
            continue
        if api_base:
            roles[role] = ModelConfig(backend="openai", model=name, api_base=api_base, api_key_env=api_key_env)
        else:
            roles[role] = ModelConfig(model=name, trust_remote_code=trust_remote_code)
    missing = [r for r in ("captioner", "scorer", "writer") if r not in roles]
    if missing:
        _fail(f"no model for {', '.join(missing)}: give --model (all roles), --{missing[0]}, or --config FILE")
    return roles, settings


def parse_sets(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            _fail(f"--set expects KEY=VALUE, got {pair!r}")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


class _CaptionCommand(TyperCommand):
    """``--min-short-edge`` takes an optional value (600, the paper's, when none follows)."""

    def parse_args(self, ctx, args):  # type: ignore[override]
        args = list(args)
        for i in range(len(args) - 1, -1, -1):
            if args[i] == "--min-short-edge" and (i + 1 == len(args) or not args[i + 1].isdigit()):
                args.insert(i + 1, "600")
        return super().parse_args(ctx, args)


@app.command(cls=_CaptionCommand)
def caption(
    inputs: list[str] = typer.Argument(..., help="What to caption: image files, folders (recursive), globs, manifests "
                                       "(.jsonl/.csv/.parquet with id,image columns), WebDataset tar shards "
                                       "(shard-{000..009}.tar), Parquet with image bytes, a saved Hugging Face "
                                       "dataset (DIR or DIR#split), http(s) URLs or a .txt list of them."),
    output: Path = typer.Option(..., "-o", "--output", help="jsonl/sidecar: a .jsonl file (the journal); "
                                "parquet/wds and --ray: a folder. Ids already done there are skipped (resume)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="One model (hub id or local path) for all roles."),
    captioner: Optional[str] = typer.Option(None, help="Vision model that writes the caption and answers."),
    scorer: Optional[str] = typer.Option(None, help="Vision model that scores sentences (needs prompt log-probs)."),
    writer: Optional[str] = typer.Option(None, help="Text model that writes questions, summaries, final caption."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML/YAML file binding roles to models."),
    api_base: Optional[str] = typer.Option(None, help="OpenAI-compatible server for the named models (vLLM, SGLang...)."),
    api_key_env: Optional[str] = typer.Option(None, help="Environment variable holding the API key."),
    trust_remote_code: bool = typer.Option(False, help="Run model code shipped with a checkpoint (off unless asked)."),
    budget: Optional[str] = typer.Option(None, help="Max object questions N per image ('all' = no cap), or "
                                         "'auto[:MAX]': ask in waves, stop when answers add nothing new."),
    self_correct: bool = typer.Option(False, "--self-correct", help="Let the captioner re-check the final caption; "
                                      "keep only corrected sentences the image supports."),
    degenerate_filter: bool = typer.Option(True, "--degenerate-filter/--no-degenerate-filter",
                                           help="Check captions and answers for loops, refusals, script drift and "
                                                "truncation (model-free; actions via --set degenerate_actions=...)."),
    ocr: Optional[str] = typer.Option(None, "--ocr", help="off (default), auto (documents, infographics, UI, code: "
                                      "a declared or routed domain) or on: OCR text as the writer's evidence, quotes "
                                      "in the caption checked against it."),
    route: Optional[str] = typer.Option(None, "--route", help="off (default) or auto: one multiple-choice call to "
                                        "the captioner picks each image's domain (and its prompts)."),
    judge: bool = typer.Option(False, "--judge", help="Judge post-filter: the captioner scores each final caption "
                               "with the image on five dimensions (1-3); a caption under a threshold (default: all 3, "
                               "--set judge_min=2 / judge_thresholds=accuracy=3) is kept as 'rejected', not exported."),
    domain: Optional[str] = typer.Option(None, "--domain", help="Declare every image's domain (a 'domain' column in "
                                         "the data wins); see prompts/domains/."),
    tau: Optional[float] = typer.Option(None, help="Sentence threshold (default per score mode)."),
    score_mode: Optional[str] = typer.Option(None, help="prob (paper), logprob or logit."),
    preset: Optional[str] = typer.Option(None, help="Prompt preset name or folder."),
    tagger: Optional[str] = typer.Option(None, help="POS tagger: auto, lexicon, or a spaCy model name."),
    tagger_workers: Optional[int] = typer.Option(None, help="Processes that run a spaCy tagger, batched across "
                                                 "images (default: one per core, at most 4; 0 = one thread here)."),
    concurrency: Optional[int] = typer.Option(
        None, min=1, help="Images in flight at once (per actor with --ray). Default: with model servers, as many as "
                   "keep each server's max_concurrency requests busy (up to 64); in-process models: 8."),
    store_tokens: bool = typer.Option(False, help="Keep token-level scores in the trace."),
    set_: list[str] = typer.Option([], "--set", help="Any other setting, KEY=VALUE (e.g. max_tokens_caption=256)."),
    overwrite: bool = typer.Option(False, help="Start the output afresh instead of resuming."),
    output_format: str = typer.Option("jsonl", "--format", "-f", help="jsonl, parquet, wds or sidecar."),
    input_format: str = typer.Option("auto", help="auto, files, manifest, parquet, hf, wds or urls."),
    id_column: str = typer.Option("id", help="Manifest/dataset column holding the id."),
    image_column: str = typer.Option("image", help="Manifest/dataset column holding the image (path, URL or bytes)."),
    image_root: Optional[Path] = typer.Option(None, "--image-root", help="Manifests and URL lists: resolve local "
                                              "image paths relative to DIR (default: the manifest's folder); a path "
                                              "that resolves outside that folder is refused (path_outside_root)."),
    allow_paths_outside_root: bool = typer.Option(False, "--allow-paths-outside-root",
                                                  help="Manifests and URL lists: read local paths anywhere (absolute, "
                                                       "../, symlinks out), for manifests you trust."),
    shard_size: int = typer.Option(1000, help="Records per Parquet/WebDataset shard."),
    sidecar_policy: str = typer.Option("skip", help="--format sidecar, when IMAGE.txt exists: skip, overwrite or append."),
    caption_field: str = typer.Option("final", "--caption-field", help="--format sidecar/wds: the .txt caption, final or corrected (needs --self-correct; the final caption where a record has no correction)."),
    limit: Optional[int] = typer.Option(None, help="Only the first N items of the input (after --shard)."),
    shard: Optional[str] = typer.Option(None, help="I/N: only ids whose stable hash is I modulo N (multi-machine runs)."),
    retry_failed: bool = typer.Option(True, "--retry-failed/--no-retry-failed",
                                      help="Caption again images whose earlier record failed (the new record replaces it)."),
    allow_mixed_fingerprints: bool = typer.Option(False, help="Append to an output made with another configuration."),
    min_short_edge: Optional[int] = typer.Option(None, "--min-short-edge", metavar="[PX]",
                                                 help="Filter out images whose short edge is below N px "
                                                      "(600, as in the paper, when given without a value)."),
    complexity: Optional[str] = typer.Option(None, help="Keep images whose complexity is in LOW:HIGH (paper: 0.4:0.8)."),
    complexity_scorer: Optional[str] = typer.Option(None, help="'jpeg' (model-free default, not the paper's ICNet) "
                                                    "or MODULE:NAME of your scorer."),
    price: list[str] = typer.Option([], "--price", help="ROLE=IN:OUT or STAGE=IN:OUT, USD per 1M prompt:completion "
                                    "tokens (e.g. writer=0.5:1.5). Repeatable."),
    max_download_mb: float = typer.Option(32.0, help="URL sources: refuse bodies larger than this."),
    download_timeout: float = typer.Option(30.0, help="URL sources: connect/read timeout in seconds."),
    allow_private_urls: bool = typer.Option(False, help="URL sources: fetch from loopback, private and link-local "
                                            "addresses too (refused by default, also after redirects)."),
    stop_after: int = typer.Option(20, help="After N images in a row fail because the model server is unreachable, "
                                   "pause (see --outage-wait); because it refuses the API key or does not serve "
                                   "the model, stop (exit code 3, finished records kept). 0: never."),
    outage_wait: float = typer.Option(600.0, help="Seconds a pause for an unreachable server may last (probing it, "
                                      "then resuming and re-running the images the outage failed) before the run "
                                      "stops with exit code 3. 0: stop at once."),
    ray: bool = typer.Option(False, "--ray", help="Run on a Ray cluster: one pipeline per actor."),
    ray_address: str = typer.Option("local", help="--ray: 'local' (start one here), 'auto' or a cluster address."),
    num_actors: int = typer.Option(2, help="--ray: actors, each with its own models."),
    actor_cpus: float = typer.Option(1.0, help="--ray: CPUs reserved per actor."),
    ray_batch_size: int = typer.Option(8, help="--ray: images per actor call (and per output shard)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a live progress bar."),
) -> None:
    """Caption images with ScaleCap and write one record per image (resumable, exactly once)."""
    from .config import Settings
    from .filters import build_filters
    from .io import (FetchConfig, FingerprintMismatch, JournalError, SinkError, SourceOptions, SourceSpecError,
                     open_sink, open_source)
    from .io.lock import LOCK_NAME, OutputLock, OutputLocked
    from .outage import OutagePolicy
    from .pricing import Prices
    from .run import CaptionJob, parse_shard

    roles, file_settings = build_roles(model, captioner, scorer, writer, api_base, api_key_env, config,
                                       trust_remote_code)
    given = {"budget": budget, "tau": tau, "score_mode": score_mode, "preset": preset, "tagger": tagger,
             "store_tokens": store_tokens or None, "self_correct": self_correct or None,
             "degenerate_filter": None if degenerate_filter else False, "ocr": ocr, "route": route,
             "domain": domain, "judge_filter": judge or None}
    settings_dict = {**file_settings, **parse_sets(set_), **{k: v for k, v in given.items() if v is not None}}
    try:
        settings = Settings(**settings_dict)
        if caption_field == "corrected" and not settings.self_correct:
            raise ValueError("--caption-field corrected needs --self-correct (no record would have a corrected caption)")
        if caption_field != "final" and ray:
            raise ValueError("--caption-field picks the .txt caption of sidecar and wds outputs, not of --ray output")
        fetch = FetchConfig(max_bytes=int(max_download_mb * 2**20), connect_timeout=download_timeout,
                            read_timeout=download_timeout, allow_private_urls=allow_private_urls)
        if image_root is not None and not image_root.is_dir():
            raise ValueError(f"--image-root {image_root}: not a folder")
        source = open_source(inputs, input_format, SourceOptions(id_column, image_column, fetch, image_root,
                                                                 allow_paths_outside_root))
        if not ray:  # refuse a bad output before loading any model
            sink = open_sink(output_format, output, shard_size=shard_size, sidecar_policy=sidecar_policy,
                             caption_field=caption_field)
        # refuse an output another run is writing before loading any model (the run locks it for real)
        OutputLock(output / LOCK_NAME if ray else sink.lock_path, output).probe()
        job = CaptionJob(inputs=inputs, output=output, concurrency=concurrency, resume=not overwrite,
                         format=output_format, input_format=input_format, id_column=id_column,
                         image_column=image_column, image_root=image_root,
                         allow_paths_outside_root=allow_paths_outside_root,
                         shard_size=shard_size, sidecar_policy=sidecar_policy,
                         caption_field=caption_field,
                         retry_failed=retry_failed, allow_mixed_fingerprints=allow_mixed_fingerprints, limit=limit,
                         shard=parse_shard(shard) if shard else None,
                         filters=build_filters(min_short_edge, complexity, complexity_scorer, settings.max_pixels),
                         prices=Prices.parse(price), fetch=fetch, source=source, stop_after=stop_after,
                         outage=OutagePolicy(wait=outage_wait))
        output.parent.mkdir(parents=True, exist_ok=True)  # refuse an unwritable output before loading models
    except OutputLocked as exc:
        _fail(str(exc))
    except (ValueError, OSError, SourceSpecError, SinkError, ImportError) as exc:
        _fail(_describe(exc))
    try:
        if ray:
            summary = _run_on_ray(roles, settings, job, ray_address, num_actors, actor_cpus, ray_batch_size, progress)
        else:
            try:
                from .pipeline import ScaleCap

                sc = ScaleCap(**roles, settings=settings, tagger_workers=tagger_workers)
            except (ValueError, OSError, RuntimeError) as exc:
                _fail(_describe(exc))
            summary = _run_with_progress(sc, job, progress)
    except OutputLocked as exc:
        _fail(str(exc))
    except (FingerprintMismatch, JournalError, SinkError, SourceSpecError, OSError) as exc:
        _fail(f"{exc} (finished records are kept; run the same command again to resume)")
    _print_summary(summary, output)
    if summary.total == 0 and summary.skipped == 0 and not summary.source_errors:
        _fail(f"no images found in {', '.join(inputs)}")
    raise typer.Exit(summary.exit_code)


def _run_on_ray(roles, settings, job, address: str, num_actors: int, actor_cpus: float, batch_size: int,
                show_progress: bool = True):
    try:
        import ray
    except ImportError:
        _fail("--ray needs Ray: pip install 'scalecap[ray]'")
    from .distributed.ray_runner import ScaleCapFactory, init_ray, run_ray_job
    from .progress import JobProgress, RichProgress

    started = init_ray(address)
    try:
        progress = RichProgress(console) if show_progress else JobProgress()
        return run_ray_job(ScaleCapFactory(roles, settings), job, num_actors=num_actors,
                           num_cpus_per_actor=actor_cpus, batch_size=batch_size, progress=progress)
    finally:
        if started:
            ray.shutdown()


def _run_with_progress(sc, job, show_progress: bool = True):
    from .progress import JobProgress, RichProgress
    from .run import run_job

    return run_job(sc, job, progress=RichProgress(console) if show_progress else JobProgress())


def _print_summary(summary, output: Path) -> None:
    rate = summary.processed / summary.seconds if summary.seconds else 0.0
    console.print(f"[bold]{summary.processed}[/] processed ([green]{summary.ok} ok[/], [red]{summary.failed} failed[/], "
                  f"{summary.filtered} filtered"
                  + (f", {summary.rejected} rejected by the judge" if summary.rejected else "")
                  + f"), {summary.skipped} already done, in {summary.seconds:.1f}s "
                  f"({rate:.2f} images/s) -> {output}")
    if summary.stopped:
        console.print(f"  [bold red]{escape(summary.stopped)}[/]")
    if summary.retried:
        console.print(f"  retried {summary.retried} images that had failed before")
    for kind, n in sorted(summary.failures.items()):
        console.print(f"  failed ({kind}): {n}")
    if summary.duplicates:
        console.print(f"  [red]{summary.duplicates} duplicate ids[/] skipped (first occurrence kept), e.g. "
                      f"{', '.join(summary.duplicate_examples[:3])}")
    for err in summary.source_errors[:10]:
        console.print(f"  [red]source error[/]: {err}")
    if len(summary.source_errors) > 10:
        console.print(f"  ... and {len(summary.source_errors) - 10} more source errors (see the summary file)")
    report = summary.usage.report()
    if report["total_tokens"]:
        console.print(f"  tokens: {report['total_tokens']:,} " + ", ".join(
            f"{role} {v['prompt_tokens'] + v['completion_tokens']:,}" for role, v in sorted(report["by_role"].items())))
    if summary.summary_path is not None:
        try:
            import json

            cost = json.loads(summary.summary_path.read_text())["run"]["usage"]["total_cost_usd"]
        except (OSError, ValueError, KeyError):
            cost = None
        if cost is not None:
            console.print(f"  cost: ${cost:.4f} (prices as given)")
        console.print(f"  summary: {summary.summary_path}")


@app.command("tiny-models")
def tiny_models(
    out: Path = typer.Argument(..., help="Folder to build the models into (tiny-KIND subfolders)."),
    kinds: str = typer.Option("qwen2vl,qwen2,llava", help="Comma-separated: qwen2vl, qwen25vl, qwen2, llava, idefics3."),
    force: bool = typer.Option(False, help="Rebuild even if present."),
) -> None:
    """Build tiny random-initialised models (real architectures, gibberish text) for tests and demos."""
    from .testing.tiny_models import build_tiny_models

    try:
        built = build_tiny_models(out, tuple(k.strip() for k in kinds.split(",") if k.strip()), force=force)
    except ValueError as exc:
        _fail(str(exc))
    for kind, path in built.items():
        console.print(f"{kind}: {path}")


@app.command()
def demo(
    out: Path = typer.Option(Path("scalecap-demo"), help="Folder for the demo images and captions."),
    concurrency: int = typer.Option(4, help="Images in flight."),
) -> None:
    """Caption a few real photos with tiny random models: shows the whole pipeline, offline, on a CPU."""
    from .demo import run_demo

    raise typer.Exit(run_demo(out, concurrency, console))


def _mount_subcommands() -> None:
    """Sub-commands that live in other rooms of the package (their heavy imports stay lazy)."""
    from .eval.cli import app as eval_app
    from .report.cli import report_command

    app.add_typer(eval_app, name="eval", help="Measure caption quality (VQA, CHAIR, CAPTURE, CaptionQA).")
    app.command("report")(report_command)


_mount_subcommands()


def main() -> None:  # pragma: no cover - entry point
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


@app.command("export")
def export(
    kind: str = typer.Argument(..., help="llava (LLaVA/ShareGPT conversations JSON) or llamafactory (dataset folder)."),
    run: Path = typer.Argument(..., help="A finished run: its .jsonl, a Parquet/WebDataset output folder, or a Ray folder."),
    out: Path = typer.Option(..., "-o", "--output", help="llava: a .json file; llamafactory: a folder."),
    prompt: str = typer.Option("Describe this image in detail.", help="The human turn after <image>."),
    image_root: Optional[Path] = typer.Option(None, help="Write image paths relative to this folder."),
    caption_field: str = typer.Option("final", "--caption-field", help="final, or corrected: the self-corrected caption where the record has one (--self-correct), else the final caption."),
) -> None:
    """Turn a finished run into training data (records with status ok only)."""
    from .io.exporters import export_llamafactory, export_llava

    if not run.exists():
        _fail(f"{run} does not exist")
    try:
        if kind == "llava":
            report = export_llava(run, out, prompt=prompt, image_root=image_root, caption_field=caption_field)
        elif kind == "llamafactory":
            report = export_llamafactory(run, out, prompt=prompt, image_root=image_root, caption_field=caption_field)
        else:
            _fail(f"unknown export kind {kind!r}: llava or llamafactory")
    except (OSError, ValueError) as exc:
        _fail(str(exc))
    skipped = ", ".join(f"{k} {v}" for k, v in sorted((report.skipped_by_status or {}).items()))
    console.print(f"exported {report.exported} records -> {out}; skipped {report.skipped} not ok"
                  + (f" ({skipped})" if skipped else ""))
    if caption_field == "corrected":
        console.print(f"{report.corrected} with the corrected caption, {report.exported - report.corrected} "
                      "without a correction (their final caption)")
