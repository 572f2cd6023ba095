"""``build_report``: a run JSONL in, a report that opens from disk with no network out.

Two layouts, picked by the number of records:

- **single file** (up to ``single_file_limit`` records): one HTML page; the data sits in one
  ``<script type="application/json">`` block, thumbnails are ``data:`` URIs.
- **folder** (above it): the page (overview and per-image index inline) plus ``<stem>_files/`` beside
  it: ``scores.js`` (sentence scores for the tau control), ``search.js`` (lower-cased search text),
  ``chunks/cNNNNN.js`` (full records, ``chunk_size`` per file, loaded when a page of cards needs
  them) and ``thumbs/tN.jpg``. The data files are scripts that call a global function, loaded with
  relative ``<script src>``: ``fetch()`` of ``file:`` URLs is blocked in Chromium, scripts are not.

All data goes through ``json_for_html``: JSON with ``<``, ``>``, ``&``, U+2028 and U+2029 escaped, so
no caption can close the script element it sits in. The page builds its DOM with ``textContent``
only, and a Content-Security-Policy allows only the page's own inline script (by hash) and files.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import numpy as np

from .data import Collector, UnreadableLine, count_lines, iter_run
from ..pricing import Prices
from .thumbs import local_path, make_thumbnail, source_link

FORMAT_VERSION = 1
DEFAULT_SINGLE_FILE_LIMIT = 2000
DEFAULT_CHUNK_SIZE = 50
MARKER = ".scalecap-report"
MAX_UNREADABLE_LISTED = 500
_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_ESCAPE_TABLE = str.maketrans(_ESCAPES)


class ReportError(RuntimeError):
    """The report cannot be written (input missing, output folder not ours ...)."""


# ---------------------------------------------------------------------------------------- summary
@dataclass
class StageTotals:
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost: float | None = None  # USD; None when no price applies to this stage

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Histogram:
    edges: list[float]
    counts: list[int]
    below: int = 0  # values under edges[0], counted in the first bin
    above: int = 0  # values over edges[-1], counted in the last bin

    @property
    def n(self) -> int:
        return int(sum(self.counts))


@dataclass
class ReportSummary:
    """What the report shows in its overview, as numbers (also what ``build_report`` returns)."""

    out: Path
    layout: Literal["single", "folder"]
    files_dir: Path | None
    records: int
    ok: int
    failed: int
    filtered: int
    unreadable: int
    unreadable_lines: list[UnreadableLine]
    failures_by_kind: dict[str, int]
    filtered_by_reason: dict[str, int]
    stages: dict[str, StageTotals]
    total_cost: float | None
    prices_given: bool
    unpriced_stages: list[str]
    unused_prices: list[str]
    sentences: int
    sentences_kept: int
    answer_sentences: int
    answer_sentences_kept: int
    questions: int
    questions_kept: int
    fallbacks: int
    records_with_tokens: int
    score_modes: dict[str, int]
    taus: dict[str, list[float]]
    thumbnails: int
    placeholders: int
    histograms: dict[str, Histogram]
    score_histograms: dict[str, Histogram]
    bytes_written: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total_tokens(self) -> int:
        return sum(s.tokens for s in self.stages.values())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out"] = str(self.out)
        d["files_dir"] = str(self.files_dir) if self.files_dir else None
        d["total_tokens"] = self.total_tokens
        return d


# ---------------------------------------------------------------------------------------- helpers
def json_for_html(obj: Any) -> str:
    """JSON safe inside ``<script>`` (HTML) and as JavaScript source: no ``<``, ``>``, ``&``, U+2028/9."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.translate(_ESCAPE_TABLE)


def histogram(values: np.ndarray, bins: int = 30, lo: float | None = None, hi: float | None = None,
              include: tuple[float, ...] = (), robust: bool = True, integer: bool = False) -> Histogram:
    """Counts over ``bins`` equal bins; the range drops the outer 0.5 % (folded into the edge bins)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return Histogram(edges=[], counts=[])
    if lo is None or hi is None:
        if robust and values.size >= 200:
            plo, phi = np.percentile(values, [0.5, 99.5])
        else:
            plo, phi = values.min(), values.max()
        lo = float(plo) if lo is None else lo
        hi = float(phi) if hi is None else hi
    for x in include:
        if x is not None and np.isfinite(x):
            lo, hi = min(lo, float(x)), max(hi, float(x))
    if integer:
        lo, hi = float(np.floor(lo)), float(np.ceil(hi))
        if hi - lo + 1 <= bins:
            bins = int(hi - lo + 1)
            lo, hi = lo - 0.5, hi + 0.5
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    below = int((values < lo).sum())
    above = int((values > hi).sum())
    counts, edges = np.histogram(np.clip(values, lo, hi), bins=bins, range=(lo, hi))
    return Histogram(edges=[float(f"{e:.6g}") for e in edges], counts=[int(c) for c in counts],
                     below=below, above=above)


def _asset(name: str) -> str:
    return resources.files("scalecap.report").joinpath("assets", name).read_text(encoding="utf-8")


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"


def _owned(folder: Path) -> bool:
    return (folder / MARKER).is_file()


def _prepare_files_dir(files_dir: Path, layout: str) -> None:
    """Clear a stale data folder left by an earlier report (only if it carries our marker)."""
    if files_dir.exists():
        if not files_dir.is_dir() or not _owned(files_dir):
            if layout == "folder":
                raise ReportError(f"{files_dir} exists and was not written by scalecap report; "
                                  "move it away or choose another output name")
            return
        shutil.rmtree(files_dir)
    if layout == "folder":
        (files_dir / "chunks").mkdir(parents=True)
        (files_dir / "thumbs").mkdir()
        (files_dir / MARKER).write_text("written by scalecap report; removed and rewritten on the next run\n")


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


class _Thumbs:
    """Thumbnails, made once per distinct local file, in a small thread pool."""

    def __init__(self, layout: str, files_dir: Path, size: int, workers: int, enabled: bool) -> None:
        self.layout, self.files_dir, self.size, self.enabled = layout, files_dir, size, enabled
        self.index: dict[Path, int | None] = {}
        self.uris: list[str] = []  # single-file layout: data URIs
        self.count = 0
        self.pool = ThreadPoolExecutor(max_workers=max(1, workers)) if enabled else None

    def assign(self, paths: list[Path | None]) -> list[int | None]:
        if not self.enabled or self.pool is None:
            return [None] * len(paths)
        new = list(dict.fromkeys(p for p in paths if p is not None and p not in self.index))
        for p, data in zip(new, self.pool.map(lambda q: make_thumbnail(q, self.size), new)):
            if data is None:
                self.index[p] = None
                continue
            k = self.count
            self.count += 1
            if self.layout == "single":
                self.uris.append("data:image/jpeg;base64," + base64.b64encode(data).decode("ascii"))
            else:
                (self.files_dir / "thumbs" / f"t{k}.jpg").write_bytes(data)
            self.index[p] = k
        return [self.index.get(p) if p is not None else None for p in paths]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


def js_json_literal(obj: Any) -> str:
    """``JSON.parse("...")``: V8 parses a JSON string much faster than the same data as JS literals."""
    return "JSON.parse(" + json_for_html(json_for_html(obj)) + ")"


def _write_js(path: Path, call: str, *args: Any) -> None:
    body = ",".join(a if isinstance(a, str) else js_json_literal(a) for a in args)
    path.write_text(f"window.{call}({body});\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------- build
def build_report(
    run_jsonl: Path | str,
    out: Path | str | None = None,
    images_root: Path | str | None = None,
    prices: Prices | Mapping[str, Any] | None = None,
    *,
    single_file_limit: int = DEFAULT_SINGLE_FILE_LIMIT,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    thumbnails: bool = True,
    thumb_size: int = 160,
    workers: int = 2,
    page_size: int = 25,
    title: str | None = None,
    evaluations: Sequence[Path | str] = (),
) -> ReportSummary:
    """Write the HTML report for a run and return its overview numbers.

    ``out`` defaults to the run's path with ``.html``. Relative ``source`` paths are looked up under
    ``images_root`` when given, else as they are and beside the run file. ``prices`` is a
    ``Prices`` or a mapping ``stage|role|"*" -> (usd_per_1M_prompt, usd_per_1M_completion)``.
    ``evaluations`` are result files of ``scalecap eval`` (any metric), shown as one table per
    metric, the same columns as ``scalecap eval compare``.
    """
    t_start = time.perf_counter()
    run = Path(run_jsonl)
    if not run.is_file():
        raise ReportError(f"no such run file: {run}")
    out_path = Path(out) if out is not None else run.with_suffix(".html")
    if out_path.suffix.lower() not in (".html", ".htm"):
        out_path = out_path.with_name(out_path.name + ".html")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    root = Path(images_root).expanduser() if images_root is not None else None
    table = Prices.coerce(prices)
    chunk_size = max(1, int(chunk_size))

    eval_tables = _evaluation_tables(evaluations)
    n_lines = count_lines(run)
    layout: Literal["single", "folder"] = "single" if n_lines <= single_file_limit else "folder"
    files_dir = out_path.with_name(out_path.stem + "_files")
    files_prefix = quote(files_dir.name) + "/"
    _prepare_files_dir(files_dir, layout)

    col = Collector()
    thumbs = _Thumbs(layout, files_dir, thumb_size, workers, thumbnails)
    base_dirs = (run.parent.resolve(),)
    single_records: list[dict] = []
    single_search: list[str] = []
    search_file = open(files_dir / "search.js", "w", encoding="utf-8") if layout == "folder" else None
    placeholders = 0
    pending: list[tuple[dict, Path | None]] = []
    chunk_no = 0
    first_search = True

    def flush() -> None:
        nonlocal pending, chunk_no, placeholders, first_search
        if not pending:
            return
        ks = thumbs.assign([p for _, p in pending])
        for (d, _), k in zip(pending, ks):
            if k is None:
                placeholders += 1
            else:
                d["th"] = k
        recs = [d for d, _ in pending]
        if layout == "single":
            single_records.extend(recs)
        else:
            _write_js(files_dir / "chunks" / f"c{chunk_no:05d}.js", "scalecapReportChunk", str(chunk_no), recs)
            chunk_no += 1
        pending = []

    try:
        if search_file is not None:
            search_file.write('window.scalecapReportSearch(JSON.parse("[')
        for _lineno, item in iter_run(run):
            if isinstance(item, UnreadableLine):
                col.unreadable.append(item)
                continue
            d = col.add(item)
            path = local_path(item.source, root, base_dirs) if thumbnails else None
            link = source_link(item.source, local_path(item.source, root, base_dirs) if not thumbnails else path)
            if link:
                d["href"] = link
            text = col.search_text(item)
            if search_file is not None:
                search_file.write(("" if first_search else ",") + json_for_html(json_for_html(text))[1:-1])
                first_search = False
            else:
                single_search.append(text)
            pending.append((d, path))
            if len(pending) >= chunk_size:
                flush()
        flush()
        if search_file is not None:
            search_file.write(']"));\n')
    finally:
        if search_file is not None:
            search_file.close()
        thumbs.close()

    # ----------------------------------------------------------------- overview numbers
    stages: dict[str, StageTotals] = {}
    total_cost: float | None = 0.0 if table.given else None
    unpriced: list[str] = []
    for stage in _stage_order(col.stages):
        calls, p, c = col.stages[stage]
        price = table.for_stage(stage)
        cost = price.cost(p, c) if price is not None else None
        stages[stage] = StageTotals(calls, p, c, cost)
        if table.given:
            if cost is None:
                if p or c:
                    unpriced.append(stage)
            else:
                total_cost = (total_cost or 0.0) + cost

    modes: dict[str, int] = {}
    taus: dict[str, list[float]] = {}
    for f in col.fingerprints:
        modes[f["score_mode"]] = modes.get(f["score_mode"], 0) + f["count"]
        if f["tau"] is not None and f["tau"] not in taus.setdefault(f["score_mode"], []):
            taus[f["score_mode"]].append(f["tau"])
    score_hists = {m: histogram(np.frombuffer(a, dtype=np.float64) if len(a) else np.zeros(0), bins=40,
                                include=tuple(taus.get(m, ())))
                   for m, a in col.scores_by_mode.items() if len(a)}
    status = np.frombuffer(col.status, dtype=np.int8) if col.n else np.zeros(0, np.int8)
    ok_mask = status == 0
    ratios = np.array([np.nan if r is None else r for r in col.ratio], dtype=np.float64)
    words = np.frombuffer(col.words, dtype=np.int64) if col.n else np.zeros(0)
    toks = np.frombuffer(col.tokens, dtype=np.int64) if col.n else np.zeros(0)
    hists = {
        "kept_ratio": histogram(ratios[ok_mask] if col.n else ratios, bins=20, lo=0.0, hi=1.0),
        "caption_words": histogram(words[ok_mask & (words > 0)] if col.n else words, bins=30, integer=True),
        "tokens_per_image": histogram(toks[toks > 0] if col.n else toks, bins=30, integer=True),
    }

    overview = {
        "records": col.n,
        "ok": col.counts["ok"], "failed": col.counts["failed"], "filtered": col.counts["filtered"],
        "rejected": col.counts["rejected"],
        "unreadable": len(col.unreadable),
        "unreadable_lines": [asdict(u) for u in col.unreadable[:MAX_UNREADABLE_LISTED]],
        "failures": col.failures.most_common(), "filtered_reasons": col.filtered.most_common(),
        "stages": [{"stage": s, "calls": t.calls, "prompt": t.prompt_tokens, "completion": t.completion_tokens,
                    "cost": t.cost} for s, t in stages.items()],
        "prices_given": table.given, "total_cost": total_cost, "unpriced": unpriced,
        "prices": {"default": asdict(table.default) if table.default else None,
                   "by_name": {k: asdict(v) for k, v in table.by_name.items()}},
        "sentences": col.sentences, "sentences_kept": col.sentences_kept,
        "sentences_unscored": col.sentences_unscored,
        "answer_sentences": col.answer_sentences, "answer_sentences_kept": col.answer_sentences_kept,
        "questions": col.questions, "questions_kept": col.questions_kept,
        "fallbacks": col.fallbacks, "token_records": col.token_records,
        "fingerprints": col.fingerprints,
        "timings": [{"stage": s, "total": round(v[0], 3), "mean": round(v[0] / v[1], 4) if v[1] else None,
                     "n": v[1]} for s, v in ((s, col.timings[s]) for s in _stage_order(col.timings))],
        "hist": {k: asdict(v) for k, v in hists.items()},
        "score_hist": {k: asdict(v) for k, v in score_hists.items()},
    }
    index = {
        "ids": col.ids, "status": col.status.tolist(), "reason": col.reason.tolist(),
        "ratio": col.ratio, "words": col.words.tolist(), "tokens": col.tokens.tolist(),
        "fp": col.fp.tolist(), "nsent": col.nsent.tolist(), "nkept": col.nkept.tolist(),
        "corr": col.corr.tolist(), "dom": col.dom.tolist(), "ocr": col.ocr.tolist(), "fh": col.hits,
    }
    scores = {
        "cap": {"off": col.cap_off.tolist(), "s": [None if math.isnan(x) else x for x in col.cap_s.tolist()],
                "k": _bits(col.cap_k)},
        "ans": {"off": col.ans_off.tolist(), "s": [None if math.isnan(x) else x for x in col.ans_s.tolist()],
                "k": _bits(col.ans_k), "q": col.ans_q.tolist()},
    }
    page: dict[str, Any] = {
        "version": FORMAT_VERSION,
        "title": title or f"scalecap report: {run.name}",
        "run": run.name,
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "layout": layout, "chunk_size": chunk_size, "page_size": page_size,
        "files": files_prefix if layout == "folder" else None,
        "reasons": col.reasons, "domains": col.domains, "hit_codes": col.hit_codes,
        "overview": overview, "index": index,
        "evaluations": eval_tables,
    }
    if layout == "single":
        page["scores"] = scores
        page["search"] = single_search
        page["records"] = single_records
        page["thumbs"] = thumbs.uris
    else:
        _write_js(files_dir / "scores.js", "scalecapReportScores", scores)

    _write_page(out_path, page)
    written = out_path.stat().st_size + (_folder_size(files_dir) if layout == "folder" else 0)
    return ReportSummary(
        out=out_path, layout=layout, files_dir=files_dir if layout == "folder" else None,
        records=col.n, ok=col.counts["ok"], failed=col.counts["failed"], filtered=col.counts["filtered"],
        unreadable=len(col.unreadable), unreadable_lines=col.unreadable,
        failures_by_kind=dict(col.failures.most_common()), filtered_by_reason=dict(col.filtered.most_common()),
        stages=stages, total_cost=total_cost, prices_given=table.given, unpriced_stages=unpriced,
        unused_prices=table.unused(col.stages),
        sentences=col.sentences, sentences_kept=col.sentences_kept,
        answer_sentences=col.answer_sentences, answer_sentences_kept=col.answer_sentences_kept,
        questions=col.questions, questions_kept=col.questions_kept, fallbacks=col.fallbacks,
        records_with_tokens=col.token_records, score_modes=modes, taus=taus,
        thumbnails=thumbs.count, placeholders=placeholders,
        histograms=hists, score_histograms=score_hists,
        bytes_written=written, seconds=time.perf_counter() - t_start,
    )


_KNOWN_STAGES = ("routing", "caption", "caption_rating", "instructions", "answers", "answer_rating",
                 "object_summary", "position_summary", "final", "correction", "correction_rating", "total")


def _evaluation_tables(paths: Sequence[Path | str]) -> list[dict[str, Any]]:
    """One compare-style table per metric of the given ``scalecap eval`` result files."""
    from ..eval.common import EvalInputError
    from ..eval.compare import load_result, table as compare_table, with_domains

    by_metric: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
    for p in paths:
        try:
            doc = load_result(p)
        except EvalInputError as exc:
            raise ReportError(str(exc)) from None
        by_metric.setdefault(doc["metric"], []).append((Path(p), doc))
    out = []
    for metric, items in by_metric.items():
        cols, rows = compare_table(with_domains([d for _, d in items]))  # a row per domain under each result
        out.append({"metric": metric, "label": items[0][1].get("label", ""), "cols": cols, "rows": rows,
                    "files": [p.name for p, _ in items]})
    return out


def _bits(flags: bytearray) -> str:
    return bytes(flags).translate(bytes.maketrans(b"\x00\x01", b"01")).decode("ascii")


def _stage_order(stages: Mapping[str, Any]) -> list[str]:
    known = [s for s in _KNOWN_STAGES if s in stages]
    return known + sorted(s for s in stages if s not in _KNOWN_STAGES)


def _write_page(out_path: Path, page: dict[str, Any]) -> None:
    template = _asset("template.html")
    css = _asset("report.css")
    js = _asset("report.js")
    csp = ("default-src 'none'; "
           f"script-src {_csp_hash(js)} 'self' file:; "
           f"style-src {_csp_hash(css)}; "
           "img-src data: 'self' file:; "
           "base-uri 'none'; form-action 'none'")
    parts = {
        "TITLE": html.escape(page["title"]),
        "CSP": html.escape(csp, quote=True),
        "STYLE": css,
        "SCRIPT": js,
    }
    # written piece by piece (the data can be tens of MB); placeholders are replaced in one pass,
    # so text inside the data can never be taken for a placeholder
    fd, tmp = tempfile.mkstemp(dir=out_path.parent, prefix=".report-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            rest = template
            while True:
                i = rest.find("{{")
                if i < 0:
                    f.write(rest)
                    break
                j = rest.index("}}", i)
                f.write(rest[:i])
                key = rest[i + 2:j]
                if key == "DATA":
                    f.write(json_for_html(page))
                else:
                    f.write(parts[key])
                rest = rest[j + 2:]
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, out_path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
