"""The ``scalecap`` command: argument parsing and printing over the Python API, nothing else."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Detailed, hallucination-resistant image captions at dataset scale (ScaleCap).")
console = Console(stderr=True)


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def build_roles(model: Optional[str], captioner: Optional[str], scorer: Optional[str], writer: Optional[str],
                api_base: Optional[str], api_key_env: Optional[str], config: Optional[Path]) -> tuple[dict, dict]:
    """Role -> ModelConfig from the command line (or a config file), and the file's settings."""
    from .config import ModelConfig, RunConfig

    settings: dict[str, Any] = {}
    roles: dict[str, Any] = {}
    if config is not None:
        run_config = RunConfig.load(config)
        roles = {r: getattr(run_config, r) for r in ("captioner", "scorer", "writer")}
        settings = run_config.settings.model_dump(exclude_unset=True)
    overrides = {"captioner": captioner, "scorer": scorer, "writer": writer}
    for role in ("captioner", "scorer", "writer"):
        name = overrides[role] or (model if role not in roles else None)
        if name is None:
            continue
        if api_base:
            roles[role] = ModelConfig(backend="openai", model=name, api_base=api_base, api_key_env=api_key_env)
        else:
            roles[role] = ModelConfig(model=name)
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


@app.command()
def caption(
    inputs: list[str] = typer.Argument(..., help="Image files and folders (folders are read recursively)."),
    output: Path = typer.Option(..., "-o", "--output", help="JSONL file; ids already in it are skipped (resume)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="One model (hub id or local path) for all roles."),
    captioner: Optional[str] = typer.Option(None, help="Vision model that writes the caption and answers."),
    scorer: Optional[str] = typer.Option(None, help="Vision model that scores sentences (needs prompt log-probs)."),
    writer: Optional[str] = typer.Option(None, help="Text model that writes questions, summaries, final caption."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML/YAML file binding roles to models."),
    api_base: Optional[str] = typer.Option(None, help="OpenAI-compatible server for the named models (vLLM, SGLang...)."),
    api_key_env: Optional[str] = typer.Option(None, help="Environment variable holding the API key."),
    budget: Optional[str] = typer.Option(None, help="Max object questions N per image ('all' = no cap)."),
    tau: Optional[float] = typer.Option(None, help="Sentence threshold (default per score mode)."),
    score_mode: Optional[str] = typer.Option(None, help="prob (paper), logprob or logit."),
    preset: Optional[str] = typer.Option(None, help="Prompt preset name or folder."),
    tagger: Optional[str] = typer.Option(None, help="POS tagger: auto, lexicon, or a spaCy model name."),
    concurrency: int = typer.Option(8, help="Images in flight at once."),
    store_tokens: bool = typer.Option(False, help="Keep token-level scores in the trace."),
    set_: list[str] = typer.Option([], "--set", help="Any other setting, KEY=VALUE (e.g. max_tokens_caption=256)."),
    overwrite: bool = typer.Option(False, help="Start the output afresh instead of resuming."),
) -> None:
    """Caption images with ScaleCap and write one JSON record per image."""
    from .config import Settings
    from .pipeline import ScaleCap
    from .run import CaptionJob

    roles, file_settings = build_roles(model, captioner, scorer, writer, api_base, api_key_env, config)
    given = {"budget": budget, "tau": tau, "score_mode": score_mode, "preset": preset, "tagger": tagger,
             "store_tokens": store_tokens or None}
    settings_dict = {**file_settings, **parse_sets(set_), **{k: v for k, v in given.items() if v is not None}}
    try:
        settings = Settings(**settings_dict)
        sc = ScaleCap(**roles, settings=settings)
    except (ValueError, OSError, RuntimeError) as exc:
        _fail(str(exc))
    job = CaptionJob(inputs=inputs, output=output, concurrency=concurrency, resume=not overwrite)
    summary = _run_with_progress(sc, job)
    _print_summary(summary, output)
    raise typer.Exit(summary.exit_code)


def _run_with_progress(sc, job):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .run import run_job

    with Progress(TextColumn("[bold]captioning"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        task = progress.add_task("caption", total=None, info="")
        counts = {"ok": 0, "failed": 0}

        def on_result(result) -> None:
            counts["ok" if result.status == "ok" else "failed"] += 1
            progress.update(task, advance=1, info=f"ok {counts['ok']}  failed {counts['failed']}")

        return run_job(sc, job, on_result=on_result)


def _print_summary(summary, output: Path) -> None:
    done = summary.ok + summary.failed + summary.filtered
    rate = done / summary.seconds * 60 if summary.seconds else 0.0
    console.print(f"[bold]{done}[/] captioned ([green]{summary.ok} ok[/], [red]{summary.failed} failed[/], "
                  f"{summary.filtered} filtered), {summary.skipped} already done, in {summary.seconds:.1f}s "
                  f"({rate:.1f} images/min) -> {output}")
    for kind, n in sorted(summary.failures.items()):
        console.print(f"  failed ({kind}): {n}")


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


def _mount_optional() -> None:
    """Sub-commands of other rooms of the package; each is imported only when present."""
    try:
        from .eval.cli import app as eval_app
    except ImportError:
        eval_app = None
    if eval_app is not None:
        app.add_typer(eval_app, name="eval", help="Measure caption quality (VQA, CHAIR, CAPTURE, CaptionQA).")
    try:
        from .report.cli import report_command
    except ImportError:
        report_command = None
    if report_command is not None:
        app.command("report")(report_command)


_mount_optional()


def main() -> None:  # pragma: no cover - entry point
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
