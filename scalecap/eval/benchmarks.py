"""Benchmark files for caption-only question answering (the Prism protocol and CaptionQA).

Three formats, told apart by content:

* **VLMEvalKit TSV** — columns ``index, question, answer`` and optionally ``image`` (base64,
  ignored), ``image_path``, ``hint``, ``A``..``Z`` (options; empty cells are no option),
  ``category``. The caption of a row is looked up by ``index``, then by ``image_path``.
* **JSONL** (or a JSON list) — objects with ``id``, ``question``, ``answer`` and optionally
  ``image`` (the key of its caption; default: the id), ``options`` (a list, or an object
  ``{"A": text, ...}``), ``category`` (a string or a list of tags), ``hint``.
* **MM-Vet** — one JSON object ``{"v1_0": {"imagename", "question", "answer", "capability"}, ...}``:
  open-ended, the capability tags are the categories, the image file name is the caption key.

An item with options is multiple choice; an item without options whose answer is yes or no is a
yes/no question (scored by rule); every other item is open-ended (scored by a judge model).
"""

from __future__ import annotations

import csv
import re
import string
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .common import EvalInputError, read_json_or_jsonl, require_file

LETTERS = string.ascii_uppercase


@dataclass
class BenchItem:
    id: str
    question: str
    answer: str
    options: dict[str, str] = field(default_factory=dict)  # letter -> text, in letter order
    categories: list[str] = field(default_factory=list)
    image: str | None = None  # the key its caption is found under (besides the id)
    hint: str | None = None
    index_first: bool = False

    @property
    def caption_keys(self) -> tuple[str, ...]:
        """Where its caption is looked for, in order: the image first when the image is the key
        (MM-Vet, JSONL with ``image``), the index first in a TSV (VLMEvalKit captions by index)."""
        if self.image is None:
            return (self.id,)
        return (self.id, self.image) if self.index_first else (self.image, self.id)

    @property
    def kind(self) -> str:
        if self.options:
            return "mcq"
        if normalize_yes_no(self.answer) is not None:
            return "yesno"
        return "open"

    def answer_letter(self) -> str | None:
        """The key as a letter: the answer itself if it is a letter of the options, else the option
        whose text equals the answer (case- and space-insensitive)."""
        a = self.answer.strip()
        m = re.fullmatch(r"\(?([A-Za-z])[.)]?", a)
        if m and m.group(1).upper() in self.options:
            return m.group(1).upper()
        norm = _norm_text(a)
        hits = [k for k, v in self.options.items() if _norm_text(v) == norm]
        return hits[0] if len(hits) == 1 else None


def _norm_text(s: str) -> str:
    return re.sub(r"\s+", " ", s.strip().lower().rstrip(".")).strip()


def normalize_yes_no(text: str) -> str | None:
    t = _norm_text(text).strip(" .!\"'")
    return t if t in ("yes", "no") else None


@dataclass
class Benchmark:
    path: Path
    format: str
    items: list[BenchItem]

    def limit(self, n: int | None) -> "Benchmark":
        return self if n is None else Benchmark(self.path, self.format, self.items[:n])


def _cell(v: Any) -> str | None:
    if v is None:
        return None
    s = str(v)
    if s.strip() == "" or s.strip().lower() == "nan":
        return None
    return s


def _categories(v: Any) -> list[str]:
    if v is None:
        return []
    if isinstance(v, (list, tuple)):
        return [str(x) for x in v if _cell(x) is not None]
    s = _cell(v)
    return [s] if s is not None else []


def load_benchmark(path: str | Path) -> Benchmark:
    p = require_file(path, "benchmark")
    if p.suffix.lower() in (".tsv", ".csv"):
        return _load_tsv(p)
    kind, data = read_json_or_jsonl(p, "benchmark")
    if kind == "json" and isinstance(data, dict):
        return _load_mmvet(p, data)
    if kind == "json" and not isinstance(data, list):
        raise EvalInputError(f"benchmark: {p} must be a TSV, JSONL, a JSON list of items or an MM-Vet JSON object")
    rows = data
    if not rows:
        raise EvalInputError(f"benchmark: {p} holds no items")
    items = []
    seen: set[str] = set()
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise EvalInputError(f"benchmark: {p} item {n} is not an object")
        missing = [k for k in ("question", "answer") if _cell(row.get(k)) is None]
        rid = _cell(row.get("id", row.get("index", row.get("question_id"))))
        if rid is None:
            missing.insert(0, "id")
        if missing:
            raise EvalInputError(f"benchmark: {p} item {n} lacks {', '.join(missing)}")
        if rid in seen:
            raise EvalInputError(f"benchmark: {p} item {n}: id {rid!r} appears twice")
        seen.add(rid)
        items.append(BenchItem(
            id=rid, question=str(row["question"]), answer=str(row["answer"]),
            options=_options(row.get("options"), p, n), categories=_categories(row.get("category", row.get("categories"))),
            image=_cell(row.get("image", row.get("image_id", row.get("image_file")))), hint=_cell(row.get("hint"))))
    return Benchmark(p, "jsonl", items)


def _options(v: Any, p: Path, n: int) -> dict[str, str]:
    if v is None:
        return {}
    if isinstance(v, dict):
        out = {}
        for k, text in v.items():
            key = str(k).strip().upper()
            if len(key) != 1 or key not in LETTERS:
                raise EvalInputError(f"benchmark: {p} item {n}: option key {k!r} is not a letter")
            if _cell(text) is not None:
                out[key] = str(text)
        return dict(sorted(out.items()))
    if isinstance(v, list):
        if len(v) > len(LETTERS):
            raise EvalInputError(f"benchmark: {p} item {n}: more than 26 options")
        return {LETTERS[i]: str(t) for i, t in enumerate(v) if _cell(t) is not None}
    raise EvalInputError(f"benchmark: {p} item {n}: options must be a list or an object")


def _load_mmvet(p: Path, data: dict[str, Any]) -> Benchmark:
    items = []
    for k, v in data.items():
        if not isinstance(v, dict) or "question" not in v or "answer" not in v:
            raise EvalInputError(f"benchmark: {p}: entry {k!r} is not an MM-Vet item (needs question and answer)")
        items.append(BenchItem(id=str(k), question=str(v["question"]), answer=str(v["answer"]),
                               categories=_categories(v.get("capability")), image=_cell(v.get("imagename"))))
    if not items:
        raise EvalInputError(f"benchmark: {p} holds no items")
    return Benchmark(p, "mmvet", items)


def _load_tsv(p: Path) -> Benchmark:
    limit = csv.field_size_limit(sys.maxsize)  # TSV benchmarks carry base64 images in a field
    try:
        return _read_tsv(p)
    finally:
        csv.field_size_limit(limit)  # process-wide: leave it as it was


def _read_tsv(p: Path) -> Benchmark:
    delimiter = "\t" if p.suffix.lower() == ".tsv" else ","
    try:
        with open(p, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f, delimiter=delimiter)
            if reader.fieldnames is None:
                raise EvalInputError(f"benchmark: {p} is empty")
            cols = [c.strip() for c in reader.fieldnames]
            need = [c for c in ("index", "question", "answer") if c not in cols]
            if need:
                raise EvalInputError(f"benchmark: {p} lacks column(s) {', '.join(need)} (has {', '.join(cols[:12])})")
            option_cols = [c for c in LETTERS if c in cols]
            items = []
            seen: set[str] = set()
            for n, raw in enumerate(reader, 2):
                row = {(k or "").strip(): v for k, v in raw.items()}
                rid = _cell(row.get("index"))
                if rid is None or _cell(row.get("question")) is None:
                    raise EvalInputError(f"benchmark: {p} line {n} lacks index or question")
                if rid in seen:
                    raise EvalInputError(f"benchmark: {p} line {n}: index {rid!r} appears twice")
                seen.add(rid)
                options = {c: row[c] for c in option_cols if _cell(row.get(c)) is not None}
                items.append(BenchItem(
                    id=rid, question=row["question"], answer=row.get("answer") or "", options=options,
                    categories=_categories(row.get("category")), image=_cell(row.get("image_path")),
                    hint=_cell(row.get("hint")), index_first=True))
    except UnicodeDecodeError:
        raise EvalInputError(f"benchmark: {p} is not UTF-8 text") from None
    except csv.Error as exc:
        raise EvalInputError(f"benchmark: {p} is not a valid TSV ({exc})") from None
    if not items:
        raise EvalInputError(f"benchmark: {p} holds no items")
    return Benchmark(p, "tsv", items)


def question_with_options(item: BenchItem, options: dict[str, str] | None = None) -> str:
    """The question as the answerer sees it: hint, question, then the options one per line."""
    opts = item.options if options is None else options
    text = item.question.strip()
    if item.hint:
        text = f"Hint: {item.hint.strip()}\n{text}"
    if opts:
        text += "\nOptions:\n" + "\n".join(f"{k}. {v}" for k, v in opts.items())
    return text
