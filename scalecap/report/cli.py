"""``scalecap report``: the command-line face of ``build_report``.

Registered by the main CLI as ``app.command("report")(report_command)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .build import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_SINGLE_FILE_LIMIT,
    ReportError,
    build_report,
)
from ..pricing import PriceError, Prices


def _fmt_usd(x: float | None) -> str:
    return "-" if x is None else f"${x:,.4f}" if x < 1 else f"${x:,.2f}"


def report_command(
    run: Annotated[Path, typer.Argument(help="The run's JSONL file (one CaptionResult per line).",
                                        show_default=False)],
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="The HTML file to write (default: RUN with .html). Large runs also get "
                            "a folder OUT-STEM_files/ beside it.")] = None,
    images_root: Annotated[Path | None, typer.Option(
        "--images-root", help="Folder that relative image sources are relative to (for thumbnails). "
                              "Default: as written, then beside RUN.")] = None,
    price: Annotated[list[str] | None, typer.Option(
        "--price", metavar="NAME=PROMPT:COMPLETION",
        help="USD per 1M prompt and completion tokens. NAME: a stage (caption, answer_rating ...), a role "
             "(captioner, scorer, writer) or '*'; the most specific wins. Repeatable. One number prices "
             "both.")] = None,
    price_prompt: Annotated[float | None, typer.Option(
        "--price-prompt", help="Default USD per 1M prompt tokens for stages without --price.", min=0)] = None,
    price_completion: Annotated[float | None, typer.Option(
        "--price-completion", help="Default USD per 1M completion tokens for stages without --price.", min=0)] = None,
    single_file_limit: Annotated[int, typer.Option(
        "--single-file-limit", help="Up to this many records the report is one self-contained HTML file; "
                                    "above it, the page plus a data folder.", min=0)] = DEFAULT_SINGLE_FILE_LIMIT,
    chunk_size: Annotated[int, typer.Option(
        "--chunk-size", help="Records per data file in the folder layout.", min=1)] = DEFAULT_CHUNK_SIZE,
    thumbnails: Annotated[bool, typer.Option(
        "--thumbnails/--no-thumbnails", help="Embed thumbnails of local source images.")] = True,
    thumb_size: Annotated[int, typer.Option("--thumb-size", help="Thumbnail size in pixels (longer side).",
                                            min=16, max=1024)] = 160,
    workers: Annotated[int, typer.Option("--workers", help="Threads making thumbnails.", min=1)] = 2,
    title: Annotated[str | None, typer.Option("--title", help="Page title.")] = None,
    evaluation: Annotated[list[Path] | None, typer.Option(
        "--eval", help="A result JSON of `scalecap eval` (any metric) to show in an Evaluation section, as in "
                       "`scalecap eval compare`. Repeatable.")] = None,
) -> None:
    """Write an HTML report of a run that opens from disk with no network: overview, tau explorer, every image."""
    from ..console import cli_console
    from rich.table import Table

    console = cli_console(stderr=True)
    try:
        prices = Prices.parse(price or [], price_prompt, price_completion)
    except PriceError as exc:
        raise typer.BadParameter(str(exc), param_hint="--price") from None
    try:
        summary = build_report(run, out, images_root=images_root, prices=prices, single_file_limit=single_file_limit,
                               chunk_size=chunk_size, thumbnails=thumbnails, thumb_size=thumb_size,
                               workers=workers, title=title, evaluations=evaluation or ())
    except (ReportError, OSError) as exc:
        console.print(f"[red]report failed:[/red] {exc}")
        raise typer.Exit(1) from None

    t = Table(title=f"{run.name}: {summary.records:,} images", show_header=True, header_style="bold")
    for col in ("ok", "failed", "filtered", "unreadable lines", "sentences kept", "tokens", "cost"):
        t.add_column(col, justify="right")
    t.add_row(f"{summary.ok:,}", f"{summary.failed:,}", f"{summary.filtered:,}", f"{summary.unreadable:,}",
              f"{summary.sentences_kept:,}/{summary.sentences:,}", f"{summary.total_tokens:,}",
              _fmt_usd(summary.total_cost) + (" (partial)" if summary.unpriced_stages else ""))
    console.print(t)
    if summary.unused_prices:
        console.print(f"[yellow]prices for unknown stages/roles ignored:[/yellow] {', '.join(summary.unused_prices)}")
    where = f"{summary.out}" + (f" (+ {summary.files_dir}/)" if summary.files_dir else "")
    console.print(f"wrote {where}: {summary.layout} layout, {summary.bytes_written / 1e6:.1f} MB, "
                  f"{summary.thumbnails:,} thumbnails, {summary.seconds:.1f} s")
    typer.echo(str(summary.out))
