"""Several caption sets (or result files) side by side: one row per set, the metric's main numbers,
and the number of items each row was computed on. Rendered as a rich table, Markdown or CSV.

Two comparisons the issue-15 stages call for come in one command: the caption fields of one results
file as rows (first vs final vs self-corrected caption, ``--fields``), and what each set's questions
bought (``--per-question``: the questions the records asked per image, and the metric's headline
number divided by them), for fixed N against the adaptive budget.

A result with a per-domain breakdown (``by_domain``, see ``common.by_domain``) adds one row per
domain under its own row (``with_domains``); the columns that count run-level bookkeeping rather
than items (unknown ids, unusable captions) are left empty on those rows.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from .common import EvalInputError, read_json, read_json_or_jsonl, require_file

Table = tuple[list[str], list[list[Any]]]


def load_result(path: str | Path) -> dict[str, Any]:
    p = require_file(path, "result")
    doc = read_json(p, "result")
    if not isinstance(doc, dict) or "metric" not in doc or "summary" not in doc:
        raise EvalInputError(f"result: {p} is not a scalecap eval result file (no 'metric'/'summary')")
    doc.setdefault("name", p.stem)
    return doc


def is_result_file(path: str | Path) -> bool:
    p = Path(path)
    if p.suffix.lower() != ".json" or not p.is_file():
        return False
    try:
        load_result(p)
        return True
    except EvalInputError:
        return False


def _p(x: Any) -> Any:
    return None if x is None else round(100 * x, 2)


def _r(x: Any, d: int = 2) -> Any:
    return None if x is None else round(x, d)


#: The headline column of each metric's table: the number ``--per-question`` divides by questions asked.
MAIN_COLUMN = {"chair": "CHAIR_s %", "capture": "CAPTURE %", "arena": "score", "dcscore": "F1 %",
               "vqa-prism": "accuracy %", "captionqa": "score %"}


def questions_asked(path: str | Path, ids: Any) -> dict[str, Any]:
    """How many questions the scalecap records of ``path`` asked per image, over the images ``ids``
    (those whose caption the metric can score: usable records only, so failed ones never count).

    A record's count is ``len(questions)`` whatever the budget: object and position questions alike,
    so fixed N and the adaptive budget are counted in one unit (``adaptive_budget.asked`` counts
    objects, each asked with its position twin). ``adaptive`` is how many of them ran adaptive."""
    from pydantic import ValidationError

    from ..records import CaptionResult

    p = require_file(path, "captions")
    _, rows = read_json_or_jsonl(p, "captions")
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) and "status" in r and "source" in r
                                                         for r in rows):
        raise EvalInputError(f"--per-question: {p} is not a scalecap results file (only records say how many "
                             "questions each image got)")
    wanted = {str(i) for i in ids}
    counts: dict[str, int] = {}
    adaptive = 0
    for n, row in enumerate(rows, 1):
        try:
            rec = CaptionResult.from_dict(row)
        except ValidationError:
            raise EvalInputError(f"--per-question: {p} row {n} is not a valid scalecap record") from None
        if rec.status != "ok" or rec.id not in wanted or rec.id in counts:
            continue
        counts[rec.id] = len(rec.questions)
        adaptive += rec.adaptive_budget is not None
    total = sum(counts.values())
    return {"images": len(counts), "questions": total, "adaptive": adaptive,
            "per_image": total / len(counts) if counts else None}


def with_domains(docs: list[dict[str, Any]], single: bool = False) -> list[dict[str, Any]]:
    """Each document followed by one pseudo-document per domain of its ``by_domain`` (same metric,
    the domain's summary, named ``NAME · DOMAIN``; with ``single``, the rows are ``all`` and the
    bare domain names). ``questions_asked_by_domain`` becomes each domain row's ``questions_asked``."""
    out = []
    for d in docs:
        groups = d.get("by_domain") or {}
        out.append({**d, "name": "all"} if single and groups else d)
        asked = d.get("questions_asked_by_domain") or {}
        for dom, summary in groups.items():
            row = {k: v for k, v in d.items() if k not in ("by_domain", "questions_asked", "questions_asked_by_domain")}
            row.update(name=dom if single else f"{d['name']} · {dom}", summary=summary)
            if dom in asked:
                row["questions_asked"] = asked[dom]
            out.append(row)
    return out


def _count(s: dict[str, Any], key: str) -> Any:
    """A run-level count (``unknown_ids``, ``unusable_captions``); None on a domain's row, which has none."""
    v = s.get(key)
    return v["count"] if isinstance(v, dict) else None


def table(docs: list[dict[str, Any]], per_question: bool = False) -> Table:
    """Columns and rows for result documents of one metric (numbers in %, except lengths); with
    ``per_question``, the questions asked per image and the headline number per question after them
    (each document must carry ``questions_asked``, as ``compare --per-question`` writes it)."""
    cols, rows = _metric_table(docs)
    if not per_question:
        return cols, rows
    main = MAIN_COLUMN[docs[0]["metric"]]
    at = cols.index(main)
    missing = [d["name"] for d in docs if not isinstance(d.get("questions_asked"), dict)]
    if missing:
        raise EvalInputError(f"compare --per-question: no questions_asked in the result(s) of {', '.join(missing)} "
                             "(compute them with --metric from the scalecap results files)")
    cols = cols + ["questions/image", f"{main} per question"]
    for d, row in zip(docs, rows):
        q = d["questions_asked"]["per_image"]
        value = row[at]
        row += [_r(q), None if value is None or not q else round(value / q, 3)]
    return cols, rows


def _metric_table(docs: list[dict[str, Any]]) -> Table:
    if not docs:
        raise EvalInputError("compare: nothing to compare")
    metrics = {d["metric"] for d in docs}
    if len(metrics) != 1:
        raise EvalInputError(f"compare: the results are of different metrics ({', '.join(sorted(metrics))})")
    metric = metrics.pop()
    if metric == "chair":
        cols = ["captions", "n", "CHAIR_s %", "CHAIR_i %", "recall %", "words/caption", "unknown ids", "unusable"]
        rows = [[d["name"], s["captions"], _p(s["chair_s"]), _p(s["chair_i"]), _p(s["recall"]),
                 _r(s["mean_length_words"], 1), _count(s, "unknown_ids"), _count(s, "unusable_captions")]
                for d in docs for s in [d["summary"]]]
        return cols, rows
    if metric == "capture":
        cols = ["captions", "n", "CAPTURE %", "F1 obj %", "F1 attr %", "F1 rel %", "unknown ids", "official"]
        rows = [[d["name"], s["captions"], _p(s["score"]), _p(s["object_f1"]), _p(s["attribute_f1"]),
                 _p(s["relation_f1"]), _count(s, "unknown_ids"), "yes" if d.get("official") else "NO"]
                for d in docs for s in [d["summary"]]]
        return cols, rows
    if metric == "arena":
        cols = ["captions", "n", "score", "win rate %", "wins", "ties", "losses", "order flips", "errors", "against"]
        rows = [[d["name"], s["judged"], _r(s["score_a"], 1), _p(s["win_rate_a"]), s["wins"], s["ties"], s["losses"],
                 s["order_disagreements"], s["errors"], s.get("b", d.get("against"))]
                for d in docs for s in [d["summary"]]]
        return cols, rows
    if metric == "dcscore":
        cols = ["captions", "n", "precision %", "recall %", "F1 %", "units/caption", "errors", "missing", "cost $"]
        rows = [[d["name"], s["scored"], _p(s["precision"]), _p(s["recall"]), _p(s["f1"]), _r(s["units_per_caption"], 1),
                 s["errors"], s["missing_caption"] + s["missing_image"], _r((s.get("cost") or {}).get("cost_usd"), 4)]
                for d in docs for s in [d["summary"]]]
        return cols, rows
    if metric in ("vqa-prism", "captionqa"):
        cats = sorted({c for d in docs for c in d["summary"]["per_category"]})
        key = "accuracy" if metric == "vqa-prism" else "score"
        head = ["captions", "n", f"{key} %"]
        extra = ["graded-only %", "ungraded", "errors", "missing"] if metric == "vqa-prism" else ["errors", "missing"]
        cols = head + [f"{c} %" for c in cats] + extra
        rows = []
        for d in docs:
            s = d["summary"]
            o = s["overall"]
            row = [d["name"], o["evaluated"], _p(o[key])]
            row += [_p(s["per_category"][c][key]) if c in s["per_category"] else None for c in cats]
            if metric == "vqa-prism":
                row += [_p(o["accuracy_graded"]), o["ungraded"], o["errors"], o["missing_caption"]]
            else:
                row += [o["errors"], o["missing_caption"]]
            rows.append(row)
        return cols, rows
    raise EvalInputError(f"compare: unknown metric {metric!r}")


def _fmt(v: Any) -> str:
    return "-" if v is None else str(v)


def to_markdown(t: Table) -> str:
    cols, rows = t
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(cols))) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(v).replace("|", "\\|") for v in r) + " |")
    return "\n".join(lines) + "\n"


def to_csv(t: Table) -> str:
    cols, rows = t
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        w.writerow(["" if v is None else v for v in r])
    return buf.getvalue()


def to_rich(t: Table, title: str | None = None):
    from rich.table import Table as RichTable

    cols, rows = t
    rt = RichTable(title=title)
    for i, c in enumerate(cols):
        rt.add_column(c, justify="left" if i == 0 else "right")
    for r in rows:
        rt.add_row(*[_fmt(v) for v in r])
    return rt
