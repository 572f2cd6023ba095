"""Small pieces shared by every metric: the input error type, prompt filling, id matching, hashing,
and the per-domain breakdown every metric's result gets.

Nothing here imports torch or a model library, so the CLI stays quick to start.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Awaitable, Callable, Iterable, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class EvalInputError(ValueError):
    """An input the user gave cannot be used. The message is one line and says which and why."""


# --------------------------------------------------------------------------- prompts

def fill(template: str, *values: str) -> str:
    """Put ``values`` into the ``{}`` slots of ``template``, left to right.

    Not ``str.format``: captions hold LaTeX braces, and a value that itself contains ``{}`` must
    not be filled by the next value (which ``str.replace`` chains would do).
    """
    parts = template.split("{}")
    if len(parts) - 1 != len(values):
        raise ValueError(f"template has {len(parts) - 1} slot(s), got {len(values)} value(s)")
    out = [parts[0]]
    for value, part in zip(values, parts[1:]):
        out.append(value)
        out.append(part)
    return "".join(out)


# --------------------------------------------------------------------------- files

def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def require_file(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise EvalInputError(f"{what}: {p} does not exist")
    if not p.is_file():
        raise EvalInputError(f"{what}: {p} is not a file")
    return p


def read_json(path: Path, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise EvalInputError(f"{what}: {path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except UnicodeDecodeError:
        raise EvalInputError(f"{what}: {path} is not UTF-8 text") from None


def read_jsonl(path: Path, what: str) -> list[dict[str, Any]]:
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise EvalInputError(f"{what}: {path} line {n} is not valid JSON ({exc.msg})") from None
                if not isinstance(obj, dict):
                    raise EvalInputError(f"{what}: {path} line {n} is a JSON {type(obj).__name__}, expected an object")
                rows.append(obj)
    except UnicodeDecodeError:
        raise EvalInputError(f"{what}: {path} is not UTF-8 text") from None
    return rows


def read_json_or_jsonl(path: Path, what: str) -> tuple[str, Any]:
    """("json", value) or ("jsonl", rows): a ``.jsonl`` suffix, or a file that is not one JSON value."""
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return "jsonl", read_jsonl(path, what)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise EvalInputError(f"{what}: {path} is not UTF-8 text") from None
    if not text.strip():
        raise EvalInputError(f"{what}: {path} is empty")
    try:
        return "json", json.loads(text)
    except json.JSONDecodeError as exc:
        first = text.lstrip()[:1]
        if first == "{" and exc.msg.startswith("Extra data"):
            return "jsonl", read_jsonl(path, what)
        raise EvalInputError(f"{what}: {path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- ids

_TRAILING_NUMBER = re.compile(r"(\d+)$")


def _basename(key: str) -> str:
    return PureWindowsPath(PurePosixPath(key).name).name


def _stem(key: str) -> str:
    name = _basename(key)
    dot = name.rfind(".")
    return name[:dot] if dot > 0 else name


def _number(key: str) -> str | None:
    m = _TRAILING_NUMBER.search(_stem(key))
    return str(int(m.group(1))) if m else None


class KeyIndex:
    """Finds the key of one file that names the same item as a key of another file.

    The rule, in order, stopping at the first level that gives exactly one key: the same string;
    the same file name (``a/b/x.jpg`` = ``x.jpg``); the same file name without extension
    (``v1_0.png`` = ``v1_0``); and, only when ``numeric`` is set (COCO), the same number at the
    end of the name (``COCO_val2014_000000000042.jpg`` = ``42`` = ``000000000042``). A level at
    which two keys tie is skipped, so ambiguous names never match silently.
    """

    def __init__(self, keys: Iterable[Any], numeric: bool = False) -> None:
        self.numeric = numeric
        self.keys: list[str] = []
        self._levels: list[dict[str, str | None]] = [{}, {}, {}, {}]
        for raw in keys:
            key = str(raw)
            self.keys.append(key)
            for level, variant in enumerate(self._variants(key)):
                if variant is None:
                    continue
                table = self._levels[level]
                if variant in table and table[variant] != key:
                    table[variant] = None  # ambiguous
                else:
                    table[variant] = key

    def _variants(self, key: str) -> tuple[str | None, ...]:
        return (key, _basename(key), _stem(key), _number(key) if self.numeric else None)

    def find(self, *queries: Any) -> str | None:
        """The key matching the first query that matches at all (queries in order of preference)."""
        for q in (str(q) for q in queries if q is not None and str(q) != ""):
            for level, variant in enumerate(self._variants(q)):
                if variant is None:
                    continue
                hit = self._levels[level].get(variant)
                if hit is not None:
                    return hit
        return None

    def __contains__(self, key: object) -> bool:
        return self.find(key) is not None


# --------------------------------------------------------------------------- numbers

def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def finite_or_none(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}"


# --------------------------------------------------------------------------- domains

#: Group of the items whose caption's record has no domain (or that have no caption at all), and of
#: records whose domain names no id (an unconstrained router's unreadable reply, an unknown declared
#: label). Neither is a valid domain id (``[a-z][a-z0-9_]*``), so neither can collide with one.
NO_DOMAIN, UNKNOWN_DOMAIN = "(none)", "(unknown)"


def domain_label(domain: Any) -> str:
    """The group of a record's ``domain``: its id, ``UNKNOWN_DOMAIN`` without one, ``NO_DOMAIN`` if absent.

    ``domain`` is a ``DomainInfo``, its dict form, a plain id string (a caption row's ``domain``
    column), or None."""
    if domain is None:
        return NO_DOMAIN
    did = domain.get("id") if isinstance(domain, dict) else domain if isinstance(domain, str) else getattr(domain, "id")
    if did is None or (isinstance(did, str) and not did.strip()):
        return UNKNOWN_DOMAIN
    return str(did).strip()


def by_domain(items: Sequence[T], key_of: Callable[[T], str | None], domain_of: Callable[[str | None], str],
              summarize: Callable[[list[T]], dict[str, Any]], force: bool = False) -> dict[str, dict[str, Any]] | None:
    """The metric's own summary over the items of each domain, by domain label (sorted).

    ``key_of`` gives an item's caption key, ``domain_of`` the domain of a key (None: no caption),
    ``summarize`` is the same aggregation the metric's overall numbers come from, so a domain's row
    and the overall row are computed alike. None when the items span one domain only, unless
    ``force`` (``--by-domain``)."""
    groups: dict[str, list[T]] = {}
    for it in items:
        groups.setdefault(domain_of(key_of(it)), []).append(it)
    if len(groups) < 2 and not force:
        return None
    return {label: summarize(groups[label]) for label in sorted(groups)}


# --------------------------------------------------------------------------- concurrency

async def gather_limited(items: Sequence[T], fn: Callable[[T], Awaitable[R]], concurrency: int,
                         on_done: Callable[[R], None] | None = None) -> list[R]:
    """``fn`` over ``items`` with at most ``concurrency`` in flight; results in input order."""
    sem = asyncio.Semaphore(max(1, concurrency))

    async def one(item: T) -> R:
        async with sem:
            result = await fn(item)
        if on_done is not None:
            on_done(result)
        return result

    return list(await asyncio.gather(*(one(it) for it in items)))
