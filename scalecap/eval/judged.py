"""What the image-judged metrics (``arena``, ``dcscore``) share: finding each caption's image, one
model call with its tokens counted, the price of an item, and the items journal that makes an
interrupted evaluation resumable.

The journal is the items file itself, appended one JSON line per finished item as it finishes, so
that an interrupted run loses at most the items in flight. Each line carries ``run``, a hash of
everything that decides its numbers (models, prompts, settings, the other caption set); ``--resume``
keeps the finished lines of the same ``run`` and redoes the rest (items that failed are retried),
and refuses a file written with other settings. At the end the file is rewritten in work order, one
line per item, so a resumed evaluation leaves the same file as one that never stopped.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Mapping, Sequence

from ..backends.base import ChatPrompt, GenerationParams, ImageRef
from ..pricing import Price, PriceError, _number
from .common import EvalInputError, KeyIndex, gather_limited, read_jsonl, sha256_text

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")

#: Item statuses that are final: a resumed run keeps them. ``error`` items are retried.
FINAL = ("scored", "missing_caption", "missing_image")


# --------------------------------------------------------------------------- images

class ImageFinder:
    """The image file of a caption id: a file under ``folder`` whose name matches the id (by the
    same rule as caption ids, ``KeyIndex``), else the ``source`` a scalecap results file recorded
    for the id (relative sources are read relative to the results file's folder)."""

    def __init__(self, folder: Path | None = None, sources: Mapping[str, str] | None = None,
                 base: Path | None = None) -> None:
        self.folder = folder
        self.sources = dict(sources or {})
        self.base = base
        self._files: dict[str, Path] = {}
        if folder is not None:
            if not folder.is_dir():
                raise EvalInputError(f"images: {folder} is not a folder")
            for p in sorted(folder.rglob("*")):
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
                    self._files.setdefault(str(p.relative_to(folder)), p)
            if not self._files:
                raise EvalInputError(f"images: {folder} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
        self._index = KeyIndex(self._files)
        if folder is None and not self.sources:
            raise EvalInputError("images: give --images FOLDER (the captions file records no image sources)")

    def find(self, key: str) -> Path | None:
        hit = self._index.find(key)
        if hit is not None:
            return self._files[hit]
        src = self.sources.get(key)
        if src is None or "://" in src:
            return None
        p = Path(src).expanduser()
        if not p.is_absolute() and self.base is not None and not p.exists():
            p = self.base / p
        return p if p.is_file() else None


def result_sources(path: Path) -> dict[str, str]:
    """id -> source of a scalecap results JSONL (empty for any other captions format)."""
    if path.suffix.lower() not in (".jsonl", ".ndjson"):
        return {}
    out: dict[str, str] = {}
    for row in read_jsonl(path, "captions"):
        if "status" in row and "source" in row and "id" in row and isinstance(row["source"], str):
            out.setdefault(str(row["id"]), row["source"])
    return out


async def load_image(path: Path) -> ImageRef:
    """Decode an image file off the event loop (``ImageError``/``OSError`` propagate to the item)."""
    from ..images import image_ref

    data = await asyncio.to_thread(path.read_bytes)
    ref, _notes = await asyncio.to_thread(image_ref, data)
    return ref


# --------------------------------------------------------------------------- calls and cost

async def generate(backend: Any, prompt: ChatPrompt, params: GenerationParams, tokens: dict[str, int],
                   role: str) -> str:
    """One generation; its prompt and completion tokens are added to ``tokens`` under ``role``."""
    g = await backend.generate(prompt, params)
    tokens[f"{role}_prompt"] = tokens.get(f"{role}_prompt", 0) + g.prompt_tokens
    tokens[f"{role}_completion"] = tokens.get(f"{role}_completion", 0) + g.completion_tokens
    if g.finish_reason == "length":
        tokens[f"{role}_truncated"] = tokens.get(f"{role}_truncated", 0) + 1
    return g.text


def constrained(backend: Any, regex: str, want: bool) -> str | None:
    """The regex to send, or None: constrained decoding is used wherever the backend offers it
    (``want``), and the reply is parsed by rule either way, so an unconstrained one is still read."""
    return regex if want and backend.capabilities.can_constrain else None


@dataclass
class RolePrices:
    """USD per 1M prompt/completion tokens per evaluation role (``judge=0.2:0.8``, ``*=...``)."""

    by_role: dict[str, Price] = field(default_factory=dict)

    @classmethod
    def parse(cls, specs: Iterable[str], roles: Sequence[str]) -> "RolePrices":
        out = cls()
        for spec in specs:
            name, sep, value = spec.partition("=")
            name = name.strip()
            if not sep or not value.strip():
                raise EvalInputError(f"--price {spec!r}: expected ROLE=PROMPT[:COMPLETION] (USD per 1M tokens)")
            if name not in roles and name != "*":
                raise EvalInputError(f"--price {spec!r}: {name!r} is not a role of this metric ({', '.join(roles)}, *)")
            p, sep2, c = value.partition(":")
            try:
                out.by_role[name] = Price(_number(p.strip(), spec), _number((c if sep2 else p).strip(), spec))
            except PriceError as exc:
                raise EvalInputError(str(exc)) from None
        return out

    @property
    def given(self) -> bool:
        return bool(self.by_role)

    def cost(self, tokens: Mapping[str, int]) -> float | None:
        """The cost of one item's tokens; None when a role that used tokens has no price."""
        if not self.given:
            return None
        total = 0.0
        for role in {k.rsplit("_", 1)[0] for k in tokens if k.endswith(("_prompt", "_completion"))}:
            price = self.by_role.get(role, self.by_role.get("*"))
            if price is None:
                return None
            total += price.cost(tokens.get(f"{role}_prompt", 0), tokens.get(f"{role}_completion", 0))
        return total

    def describe(self) -> dict[str, list[float]]:
        return {k: [v.prompt, v.completion] for k, v in sorted(self.by_role.items())}


def sum_tokens(rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        for k, v in (r.get("tokens") or {}).items():
            out[k] = out.get(k, 0) + int(v)
    return dict(sorted(out.items()))


def cost_summary(rows: Sequence[Mapping[str, Any]], prices: RolePrices) -> dict[str, Any]:
    costs = [r.get("cost_usd") for r in rows if r.get("tokens")]
    known = [c for c in costs if c is not None]
    total = sum(known) if prices.given and len(known) == len(costs) else None
    return {"tokens": sum_tokens(rows), "prices": prices.describe(), "cost_usd": total,
            "cost_per_item_usd": total / len(costs) if total is not None and costs else None}


# --------------------------------------------------------------------------- the journal

def run_hash(parts: Mapping[str, Any]) -> str:
    """A short hash of what decides an evaluation's numbers (the journal's ``run`` field)."""
    return sha256_text(json.dumps(parts, sort_keys=True, default=str))[:16]


def check_items_file(path: Path, resume: bool, overwrite: bool) -> None:
    """Refuse, before any model loads, to clobber a journal (or to resume one that is not there)."""
    if path.exists() and not resume and not overwrite:
        raise EvalInputError(f"items file {path} exists: --resume to continue that evaluation, "
                             "--overwrite to start again, or --items to write elsewhere")
    if resume and not path.exists():
        raise EvalInputError(f"--resume: items file {path} does not exist")


class ItemsJournal:
    """The items file as an append-only journal; see the module docstring."""

    def __init__(self, path: Path, run: str, *, resume: bool = False, overwrite: bool = False) -> None:
        self.path = path
        self.run = run
        self.done: dict[str, dict[str, Any]] = {}
        self.resumed = 0
        check_items_file(path, resume, overwrite)
        if resume:
            self._read()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(path, "a" if resume else "w", encoding="utf-8")

    def _read(self) -> None:
        lines = self.path.read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                if n == len(lines):  # the line being written when the run stopped
                    continue
                raise EvalInputError(f"--resume: {self.path} line {n} is not valid JSON") from None
            if row.get("run") != self.run:
                raise EvalInputError(f"--resume: {self.path} was written by an evaluation with other models, prompts "
                                     f"or settings (run {row.get('run')}, this one {self.run}); use --overwrite")
            if row.get("status") in FINAL:
                self.done[row["id"]] = row
            else:
                self.done.pop(row["id"], None)
        self.resumed = len(self.done)
        # A torn last line must not glue itself to the next appended row.
        if lines and not self.path.read_text(encoding="utf-8").endswith("\n"):
            with open(self.path, "a", encoding="utf-8") as f:
                f.write("\n")

    def record(self, row: dict[str, Any]) -> None:
        self._f.write(json.dumps({**row, "run": self.run}, ensure_ascii=False) + "\n")
        self._f.flush()

    def finish(self, rows: Sequence[dict[str, Any]]) -> None:
        """Rewrite the file as exactly ``rows`` (work order), atomically."""
        self._f.close()
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps({**row, "run": self.run}, ensure_ascii=False) + "\n")
        os.replace(tmp, self.path)

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


async def gather_all(*aws: Awaitable[Any]) -> list[Any]:
    """Like ``asyncio.gather``, but every call finishes (so its tokens are counted) before the first
    failure is raised."""
    out = await asyncio.gather(*aws, return_exceptions=True)
    for x in out:
        if isinstance(x, BaseException):
            raise x
    return list(out)


async def run_journaled(jobs: Sequence[Any], job_id: Callable[[Any], str],
                        fn: Callable[[Any], Awaitable[dict[str, Any]]], concurrency: int,
                        journal: ItemsJournal | None,
                        on_done: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """``fn`` over the jobs not already finished in ``journal``, ``concurrency`` in flight, each row
    journaled as it finishes; all rows (kept and new) in job order."""
    done = journal.done if journal is not None else {}
    todo = [j for j in jobs if job_id(j) not in done]

    def finished(row: dict[str, Any]) -> None:
        if journal is not None:
            journal.record(row)
        if on_done is not None:
            on_done(row)

    new = {r["id"]: r for r in await gather_limited(todo, fn, concurrency, finished)}
    rows = []
    for j in jobs:
        row = new.get(job_id(j)) or done[job_id(j)]
        rows.append({k: v for k, v in row.items() if k != "run"})
    return rows
