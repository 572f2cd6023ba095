"""DCScore (DeCapBench): a caption as primitive information units, each judged against the image.

Per caption:

1. a text LLM (role ``decomposer``) breaks the caption into primitive units, one ``- unit`` line
   each (decoding held to that list format where the backend can constrain it);
2. a VLM (role ``judge``) sees the image and answers yes / no for each unit: is it true of the image;
3. with reference captions, they are decomposed the same way and the LLM (role ``matcher``, by
   default the decomposer) answers for each reference unit whether the caption's units state it.

``precision`` = supported units / units (1 - the hallucination rate); ``recall`` = covered reference
units / reference units (comprehensiveness); ``F1`` = 2PR / (P + R). Overall numbers pool the
units of all captions (micro); the mean of the per-caption values (macro) is given beside them.
A caption with no units has no precision; without references there is no recall nor F1.

A reply that cannot be parsed (no unit from a non-empty caption, a judge reply that is neither yes
nor no) fails its caption, recorded with the reply (status ``error``, retried on ``--resume``); it
never counts as supported or not. The prompts (``prompts/dcscore_*.txt``) are ours, written for the
three steps the DeCapBench paper describes; numbers are comparable with each other, not digit for
digit with the paper's GPT-4o-judged ones. A reference text is decomposed once per run (its tokens
are counted on the first caption that needed it).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..backends.base import BackendError, ChatPrompt, GenerationParams
from ..images import ImageError
from . import prompts as eval_prompts
from .captions import CaptionSet
from .common import EvalInputError, KeyIndex, fill, mean
from .judged import ImageFinder, RolePrices, constrained, gather_all, generate, load_image

METRIC = "dcscore"
VERSION = "1"
ROLES = ("decomposer", "judge", "matcher")
YES_NO_REGEX = "(yes|no)"

_BULLET = re.compile(r"^\s*(?:[-*•·]|\d{1,3}[.)])\s+")
_YES_NO = re.compile(r"^[\W_]*(yes|no)\b", re.I)


def units_regex(max_units: int, unit_max_chars: int) -> str:
    """The decomposition as a decoding constraint: 1..max_units lines "- unit" (a unit starts with a
    visible character and is at most ``unit_max_chars`` long)."""
    return f"(- [^\\s][^\\n]{{0,{unit_max_chars - 1}}}\\n){{1,{max_units}}}"


def parse_units(text: str) -> list[str]:
    """The units of a decomposition reply: its list lines (``-``, ``*``, ``1.`` bullets), or, in a
    reply with no bullet at all, its non-empty lines but for headings (ending in ":").
    Exact repeats are dropped (a unit counts once)."""
    lines = [ln for ln in (text or "").splitlines() if ln.strip()]
    bulleted = [ln for ln in lines if _BULLET.match(ln)]
    chosen = bulleted if bulleted else lines
    out: list[str] = []
    for ln in chosen:
        u = " ".join(_BULLET.sub("", ln).split())
        if u and not (not bulleted and u.endswith(":")) and u not in out:
            out.append(u)
    return out


def parse_yes_no(text: str) -> bool | None:
    m = _YES_NO.match(text or "")
    return None if m is None else m.group(1).lower() == "yes"


def f1(p: float | None, r: float | None) -> float | None:
    if p is None or r is None:
        return None
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


@dataclass
class DCScoreSettings:
    decompose_max_tokens: int = 1024
    judge_max_tokens: int = 4
    max_units: int = 64
    unit_max_chars: int = 200
    constrain: bool = True
    concurrency: int = 4
    seed: int = 0


@dataclass(frozen=True)
class Job:
    id: str
    caption: str | None
    image: Path | None
    references: tuple[str, ...] = ()
    missing: str | None = None
    why: str | None = None


@dataclass
class DCScoreResult:
    id: str
    status: str  # scored | error | missing_caption | missing_image
    image: str | None = None
    decomposition: str | None = None
    units: list[dict[str, Any]] = field(default_factory=list)  # text, supported, response
    reference_units: list[dict[str, Any]] = field(default_factory=list)  # text, covered, response
    n_units: int = 0
    n_supported: int = 0
    n_reference_units: int = 0
    n_covered: int = 0
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    reason: str | None = None
    tokens: dict[str, int] = field(default_factory=dict)
    cost_usd: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ParseFailure(Exception):
    """A model reply the metric cannot read (the item fails with this message)."""


def load_prompts(overrides: dict[str, str] | None = None) -> dict[str, str]:
    o = overrides or {}
    return {n: eval_prompts.load(n, o.get(n))
            for n in ("system", "dcscore_decompose", "dcscore_judge", "dcscore_match")}


def jobs(captions: CaptionSet, images: ImageFinder, references: dict[str, list[str]] | None = None,
         limit: int | None = None) -> list[Job]:
    """One job per caption id (usable or not, in file order), with its image and references."""
    ref_index = KeyIndex(references) if references is not None else None
    out = []
    for key in list(captions.captions) + [k for k in captions.unusable if k not in captions.captions]:
        if key not in captions.captions:
            out.append(Job(key, None, None, missing="missing_caption", why=captions.unusable[key]))
            continue
        img = images.find(key)
        if img is None:
            out.append(Job(key, captions.captions[key], None, missing="missing_image", why="no image file for this id"))
            continue
        refs: tuple[str, ...] = ()
        if ref_index is not None:
            rk = ref_index.find(key)
            refs = tuple(references[rk]) if rk is not None else ()
        out.append(Job(key, captions.captions[key], img, refs))
    return out[:limit] if limit else out


class DCScore:
    def __init__(self, decomposer: Any, judge: Any, *, matcher: Any = None, settings: DCScoreSettings | None = None,
                 prompts: dict[str, str] | None = None, prices: RolePrices | None = None) -> None:
        if not judge.capabilities.vision:
            raise EvalInputError("dcscore: the judge must see the image (a vision-language model)")
        self.decomposer = decomposer
        self.judge = judge
        self.matcher = matcher if matcher is not None else decomposer
        self.settings = settings or DCScoreSettings()
        self.prompts = prompts or load_prompts()
        self.prices = prices or RolePrices()
        self._ref_units: dict[str, asyncio.Task] = {}

    def _params(self, backend: Any, max_tokens: int, regex: str) -> GenerationParams:
        s = self.settings
        return GenerationParams(max_tokens=max_tokens, temperature=0.0, seed=s.seed,
                                regex=constrained(backend, regex, s.constrain))

    def _chat(self, user: str, image: Any = None) -> ChatPrompt:
        return ChatPrompt(user=user, system=self.prompts["system"] or None, image=image)

    async def decompose(self, text: str, tokens: dict[str, int]) -> tuple[list[str], str]:
        s = self.settings
        reply = await generate(self.decomposer, self._chat(fill(self.prompts["dcscore_decompose"], text)),
                               self._params(self.decomposer, s.decompose_max_tokens,
                                            units_regex(s.max_units, s.unit_max_chars)), tokens, "decomposer")
        units = parse_units(reply)
        if not units:
            raise ParseFailure(f"no unit in the decomposition: {reply[:200]!r}")
        return units, reply

    async def _yes_no(self, backend: Any, user: str, image: Any, tokens: dict[str, int], role: str) -> tuple[bool, str]:
        reply = await generate(backend, self._chat(user, image),
                               self._params(backend, self.settings.judge_max_tokens, YES_NO_REGEX), tokens, role)
        v = parse_yes_no(reply)
        if v is None:
            raise ParseFailure(f"{role} reply is neither yes nor no: {reply[:200]!r}")
        return v, reply

    async def _reference_units(self, refs: tuple[str, ...], tokens: dict[str, int]) -> list[str]:
        for ref in refs:
            if ref not in self._ref_units:
                self._ref_units[ref] = asyncio.ensure_future(self.decompose(ref, tokens))
        out: list[str] = []
        for ref in refs:
            units, _ = await asyncio.shield(self._ref_units[ref])
            out += [u for u in units if u not in out]
        return out

    async def run_item(self, job: Job) -> dict[str, Any]:
        r = DCScoreResult(id=job.id, status=job.missing or "error", image=str(job.image) if job.image else None)
        if job.missing:
            r.reason = job.why
            return r.to_dict()
        try:
            image = await load_image(job.image)
            units: list[str] = []
            if job.caption.strip():
                units, r.decomposition = await self.decompose(job.caption, r.tokens)
            verdicts = await gather_all(*(self._yes_no(self.judge, fill(self.prompts["dcscore_judge"], u), image,
                                                           r.tokens, "judge") for u in units))
            r.units = [{"text": u, "supported": v, "response": t} for u, (v, t) in zip(units, verdicts)]
            if job.references:
                ref_units = await self._reference_units(job.references, r.tokens)
                listing = "\n".join(f"- {u}" for u in units) or "(none)"
                covered = await gather_all(*(self._yes_no(self.matcher, fill(self.prompts["dcscore_match"], listing, u),
                                                              None, r.tokens, "matcher") for u in ref_units))
                r.reference_units = [{"text": u, "covered": v, "response": t} for u, (v, t) in zip(ref_units, covered)]
        except ParseFailure as exc:
            r.reason = f"unparseable: {exc}"
        except (BackendError, TimeoutError, ImageError, OSError) as exc:
            r.reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        else:
            r.status = "scored"
            r.n_units, r.n_supported = len(r.units), sum(1 for u in r.units if u["supported"])
            r.n_reference_units, r.n_covered = len(r.reference_units), sum(1 for u in r.reference_units if u["covered"])
            r.precision = r.n_supported / r.n_units if r.n_units else None
            r.recall = r.n_covered / r.n_reference_units if r.n_reference_units else None
            r.f1 = f1(r.precision, r.recall)
        r.cost_usd = self.prices.cost(r.tokens)
        return r.to_dict()


def summarize(rows: list[dict[str, Any]], with_references: bool) -> dict[str, Any]:
    scored = [r for r in rows if r["status"] == "scored"]
    units = sum(r["n_units"] for r in scored)
    sup = sum(r["n_supported"] for r in scored)
    refu = sum(r["n_reference_units"] for r in scored)
    cov = sum(r["n_covered"] for r in scored)
    p = sup / units if units else None
    rec = cov / refu if refu else None
    return {
        "captions": len(rows), "scored": len(scored),
        "units": units, "supported": sup, "reference_units": refu, "covered": cov,
        "precision": p, "recall": rec, "f1": f1(p, rec),
        "hallucination_rate": 1 - p if p is not None else None,
        "macro": {k: mean([r[k] for r in scored if r[k] is not None]) for k in ("precision", "recall", "f1")},
        "units_per_caption": units / len(scored) if scored else None,
        "with_references": with_references,
        "no_references": sum(1 for r in scored if with_references and not r["n_reference_units"]),
        "errors": sum(1 for r in rows if r["status"] == "error"),
        "missing_caption": sum(1 for r in rows if r["status"] == "missing_caption"),
        "missing_image": sum(1 for r in rows if r["status"] == "missing_image"),
        "failed": [{"id": r["id"], "status": r["status"], "reason": r["reason"]}
                   for r in rows if r["status"] != "scored"][:100],
        "partial": len(scored) < len(rows),
    }
