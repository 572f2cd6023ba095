"""Reading caption files: our result JSONL, a JSON ``{id: caption}`` mapping, or rows with an id and a caption.

Accepted formats (told apart by content, not by name):

* **scalecap results** — JSONL of ``CaptionResult`` records (rows with ``id``, ``source``, ``status``).
  ``field`` picks ``final_caption`` (default), ``first_caption`` or ``corrected_caption``; a record whose status is not
  ``ok`` or whose field is missing (null) is *unusable* (kept with its reason, never silently
  dropped). An empty string is a caption like any other (it is scored, and counted as empty).
* **mapping** — one JSON object ``{id: caption}`` (a value may also be an object holding the field).
* **rows** — JSONL (or a JSON list) of objects with an id and a caption. The id is the first
  present of ``id, image_id, question_id, index, image, image_file, file_name, filename``. The
  caption is the first present of: for ``final_caption``: ``final_caption, caption, text``; for
  ``first_caption``: ``first_caption, ori_caption`` (never a plain ``caption``, which may be a
  final one); for any other field name: exactly that key. The ScaleCap authors' files
  (``image_file``, ``ori_caption``, ``final_caption``) are rows.

Domains (for every metric's per-domain breakdown): a scalecap record's ``domain`` (its id; a domain
without id is ``(unknown)``), or a row's ``domain`` column (a string, or an object with an ``id``);
ids without either are ``(none)``.

The same id may appear on several lines (one line per question of a benchmark whose questions share
an image): identical captions are merged; differing ones keep the first and are reported as conflicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field as dc_field
from pathlib import Path
from typing import Any

from .common import NO_DOMAIN, EvalInputError, KeyIndex, domain_label, read_json_or_jsonl, require_file, sha256_file

ID_KEYS = ("id", "image_id", "question_id", "index", "image", "image_file", "file_name", "filename")
FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "final_caption": ("final_caption", "caption", "text"),
    "first_caption": ("first_caption", "ori_caption"),
}
#: The captions of a scalecap record (``corrected_caption``: null unless the run self-corrected).
RESULT_FIELDS = ("final_caption", "first_caption", "corrected_caption")


@dataclass
class CaptionSet:
    path: Path | None
    field: str
    format: str
    captions: dict[str, str] = dc_field(default_factory=dict)
    unusable: dict[str, str] = dc_field(default_factory=dict)  # id -> why it cannot be used
    conflicts: list[str] = dc_field(default_factory=list)  # ids seen with different captions
    domains: dict[str, str] = dc_field(default_factory=dict)  # id -> domain label, for ids that have one
    numeric_ids: bool = False
    sha256: str | None = None
    _index: KeyIndex | None = None

    @property
    def name(self) -> str:
        """The file name without a .json/.jsonl extension (names a row in comparisons)."""
        if self.path is None:
            return "captions"
        n = self.path.name
        for suffix in (".jsonl", ".ndjson", ".json"):
            if n.lower().endswith(suffix):
                return n[: -len(suffix)]
        return n

    def index(self) -> KeyIndex:
        if self._index is None:
            self._index = KeyIndex(list(self.captions) + [k for k in self.unusable if k not in self.captions],
                                   numeric=self.numeric_ids)
        return self._index

    def lookup(self, *queries: Any) -> tuple[str | None, str | None, str | None]:
        """(key, caption, None) when found and usable; (key, None, reason) when unusable;
        (None, None, "no caption for this id") when absent."""
        key = self.index().find(*queries)
        if key is None:
            return None, None, "no caption for this id"
        if key in self.captions:
            return key, self.captions[key], None
        return key, None, self.unusable[key]

    def domain_of(self, key: str | None) -> str:
        """The domain label of a caption key (``NO_DOMAIN`` for None: an item without a caption)."""
        return self.domains.get(key, NO_DOMAIN) if key is not None else NO_DOMAIN

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path) if self.path else None, "sha256": self.sha256, "format": self.format,
                "field": self.field, "captions": len(self.captions), "unusable": len(self.unusable),
                "empty": sum(1 for t in self.captions.values() if not t.strip()),
                "conflicts": len(self.conflicts)}


def _add(cs: CaptionSet, key: str, text: Any, where: str) -> None:
    if text is None:  # no caption at all (an empty string is a caption, and is scored as one)
        if key not in cs.captions:
            cs.unusable.setdefault(key, f"no {cs.field}")
        return
    if not isinstance(text, str):
        raise EvalInputError(f"captions: {where}: the caption is a {type(text).__name__}, expected a string")
    if key in cs.captions:
        if cs.captions[key] != text and key not in cs.conflicts:
            cs.conflicts.append(key)
        return
    cs.unusable.pop(key, None)
    cs.captions[key] = text


def _row_id(row: dict[str, Any]) -> str | None:
    for k in ID_KEYS:
        v = row.get(k)
        if v is not None and v != "" and not isinstance(v, (dict, list)):
            return str(v)
    return None


def _row_caption(row: dict[str, Any], field: str) -> tuple[bool, Any]:
    for k in FIELD_ALIASES.get(field, (field,)):
        if k in row:
            return True, row[k]
    return False, None


def _is_result_row(row: dict[str, Any]) -> bool:
    return "status" in row and "source" in row and "id" in row


def from_mapping(mapping: dict[str, str], field: str = "final_caption", numeric_ids: bool = False) -> CaptionSet:
    """A caption set from an in-memory ``{id: caption}`` mapping (for library use and tests)."""
    cs = CaptionSet(path=None, field=field, format="mapping", numeric_ids=numeric_ids)
    for k, v in mapping.items():
        _add(cs, str(k), v, f"id {k}")
    return cs


def load_captions(path: str | Path, field: str = "final_caption", numeric_ids: bool = False) -> CaptionSet:
    p = require_file(path, "captions")
    kind, data = read_json_or_jsonl(p, "captions")
    cs = CaptionSet(path=p, field=field, format="", numeric_ids=numeric_ids, sha256=sha256_file(p))
    if kind == "json" and isinstance(data, dict):
        cs.format = "mapping"
        for k, v in data.items():
            if isinstance(v, dict):
                found, v = _row_caption(v, field)
                if not found:
                    raise EvalInputError(f"captions: {p}: entry {k!r} has no {field!r} (nor an alias of it)")
            _add(cs, str(k), v, f"{p} entry {k!r}")
        return _checked(cs)
    if kind == "json":
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise EvalInputError(f"captions: {p} must be a JSON object {{id: caption}}, a JSON list of objects, or JSONL")
        rows = data
    else:
        rows = data
    if not rows:
        raise EvalInputError(f"captions: {p} holds no captions")
    if _is_result_row(rows[0]):
        cs.format = "scalecap-results"
        _read_results(cs, rows, p)
    else:
        cs.format = "rows"
        for n, row in enumerate(rows, 1):
            key = _row_id(row)
            if key is None:
                raise EvalInputError(f"captions: {p} row {n} has no id (one of {', '.join(ID_KEYS)})")
            found, text = _row_caption(row, field)
            if not found:
                names = ", ".join(FIELD_ALIASES.get(field, (field,)))
                raise EvalInputError(f"captions: {p} row {n} has no caption field for --field {field} (looked for {names})")
            _add(cs, key, text, f"{p} row {n}")
            if "domain" in row and key not in cs.domains:
                d = row["domain"]
                if d is not None and not isinstance(d, (str, dict)):
                    raise EvalInputError(f"captions: {p} row {n}: domain is a {type(d).__name__}, expected a "
                                         "string or an object with an id")
                cs.domains[key] = domain_label(d)
    return _checked(cs)


def _read_results(cs: CaptionSet, rows: list[dict[str, Any]], p: Path) -> None:
    from pydantic import ValidationError

    from ..records import CaptionResult

    if cs.field not in RESULT_FIELDS:
        raise EvalInputError(f"captions: {p} holds scalecap results: --field must be one of {', '.join(RESULT_FIELDS)}")
    for n, row in enumerate(rows, 1):
        try:
            rec = CaptionResult.from_dict(row)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(x) for x in first.get("loc", ()))
            raise EvalInputError(f"captions: {p} row {n} is not a valid scalecap record ({loc}: {first.get('msg')})") from None
        if rec.status != "ok":
            why = f"record status {rec.status}" + (f": {rec.error}" if rec.error else "")
            if rec.id not in cs.captions:
                cs.unusable[rec.id] = why
            cs.domains.setdefault(rec.id, domain_label(rec.domain))
            continue
        _add(cs, rec.id, getattr(rec, cs.field), f"{p} row {n}")
        cs.domains.setdefault(rec.id, domain_label(rec.domain))


def _checked(cs: CaptionSet) -> CaptionSet:
    if not cs.captions and not cs.unusable:
        raise EvalInputError(f"captions: {cs.path} holds no captions")
    return cs
