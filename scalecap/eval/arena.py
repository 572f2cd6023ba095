"""Pairwise caption battles judged by a VLM with the image, CapArena-Auto style.

For every image captioned in both sets, A (the captions under test) and B (another set, or fixed
baseline captions), the judge sees the image and the two captions twice: A as "Caption 1" and B as
"Caption 2", then swapped. Each reply names a winner (1, 2 or tie) after a one-line reason. The
pair's outcome, from A's side:

* both orders pick A -> **win**; both pick B -> **loss**; both say tie -> **tie**;
* the orders disagree (A then B, or a win against a tie) -> **tie**: a preference that flips with
  the position is position bias, not a preference.

A set's **score** is CapArena-Auto's: +1 per win, -1 per loss, 0 per tie, as a mean over judged
pairs x 100 (so in [-100, 100]; B's score is minus A's). ``win_rate`` counts a tie as half a win.
A reply from which no verdict can be read is a recorded failure of its pair (status ``error``,
counted in neither wins nor losses, retried on ``--resume``), never a silent tie.

The judge prompt (``prompts/arena_judge.txt``) is ours; where the backend can constrain decoding,
replies are held to ``Reason: <one line>\\nVerdict: 1|2|tie`` (the reason at most
``reason_max_chars`` long), so even a random model's reply is well formed; replies are parsed by
rule either way.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..backends.base import BackendError, ChatPrompt, GenerationParams
from ..images import ImageError
from . import prompts as eval_prompts
from .captions import CaptionSet
from .common import EvalInputError, fill
from .judged import ImageFinder, RolePrices, constrained, gather_all, generate, load_image

METRIC = "arena"
VERSION = "1"
ROLES = ("judge",)

_VERDICT = re.compile(r"verdict\s*[:：]\s*[*\"'`(\[]*\s*(?:caption\s*)?(1|2|tie)\b", re.I)
_REASON = re.compile(r"reason\s*[:：]\s*(.*?)\s*(?=verdict\s*[:：]|$)", re.I | re.S)


def verdict_regex(reason_max_chars: int) -> str:
    """The reply format as a decoding constraint (the regex subset xgrammar, outlines and vLLM share)."""
    return f"Reason: [^\\n]{{1,{reason_max_chars}}}\\nVerdict: (1|2|tie)"


def parse_verdict(text: str) -> tuple[str | None, str | None]:
    """(verdict "1" | "2" | "tie", reason) from a judge reply; (None, None) when no verdict is written.
    The last "Verdict:" counts (a judge may think aloud before it)."""
    found = _VERDICT.findall(text or "")
    if not found:
        return None, None
    m = _REASON.search(text)
    reason = " ".join(m.group(1).split()) if m else None
    return found[-1].lower(), reason or None


def winner(verdict: str, a_first: bool) -> str:
    """"a", "b" or "tie" for a verdict given the order shown (A as Caption 1 when ``a_first``)."""
    if verdict == "tie":
        return "tie"
    return ("a" if verdict == "1" else "b") if a_first else ("b" if verdict == "1" else "a")


def combine(first: str, second: str) -> str:
    """The pair's outcome from the two orders' winners: agreement stands, disagreement is a tie."""
    return first if first == second else "tie"


@dataclass
class ArenaSettings:
    max_tokens: int = 256
    reason_max_chars: int = 400
    constrain: bool = True
    concurrency: int = 8
    seed: int = 0


@dataclass(frozen=True)
class Pair:
    id: str
    key_b: str | None
    caption_a: str | None
    caption_b: str | None
    image: Path | None
    missing: str | None = None  # status when the pair cannot be judged
    why: str | None = None


@dataclass
class ArenaResult:
    id: str
    status: str  # scored | error | missing_caption | missing_image
    key_b: str | None = None
    image: str | None = None
    outcome: str | None = None  # a | b | tie
    rounds: list[dict[str, Any]] = field(default_factory=list)
    reason: str | None = None
    tokens: dict[str, int] = field(default_factory=dict)
    cost_usd: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_prompts(overrides: dict[str, str] | None = None) -> dict[str, str]:
    o = overrides or {}
    return {n: eval_prompts.load(n, o.get(n)) for n in ("system", "arena_judge")}


def pairs(a: CaptionSet, b: CaptionSet, images: ImageFinder, limit: int | None = None) -> list[Pair]:
    """One pair per id of A (usable or not, in A's order), matched to B's ids and to an image."""
    out = []
    for key in list(a.captions) + [k for k in a.unusable if k not in a.captions]:
        if key in a.unusable and key not in a.captions:
            out.append(Pair(key, None, None, None, None, "missing_caption", f"A: {a.unusable[key]}"))
            continue
        kb, cb, why = b.lookup(key)
        if cb is None:
            out.append(Pair(key, kb, a.captions[key], None, None, "missing_caption", f"B: {why}"))
            continue
        img = images.find(key)
        if img is None:
            out.append(Pair(key, kb, a.captions[key], cb, None, "missing_image", "no image file for this id"))
            continue
        out.append(Pair(key, kb, a.captions[key], cb, img))
    return out[:limit] if limit else out


class Arena:
    def __init__(self, judge: Any, *, settings: ArenaSettings | None = None, prompts: dict[str, str] | None = None,
                 prices: RolePrices | None = None) -> None:
        self.judge = judge
        self.settings = settings or ArenaSettings()
        self.prompts = prompts or load_prompts()
        self.prices = prices or RolePrices()
        if not judge.capabilities.vision:
            raise EvalInputError("arena: the judge must see the image (a vision-language model)")

    async def _round(self, pair: Pair, image: Any, a_first: bool, r: ArenaResult) -> dict[str, Any]:
        c1, c2 = (pair.caption_a, pair.caption_b) if a_first else (pair.caption_b, pair.caption_a)
        s = self.settings
        params = GenerationParams(max_tokens=s.max_tokens, temperature=0.0, seed=s.seed,
                                  regex=constrained(self.judge, verdict_regex(s.reason_max_chars), s.constrain))
        prompt = ChatPrompt(user=fill(self.prompts["arena_judge"], c1 or "", c2 or ""),
                            system=self.prompts["system"] or None, image=image)
        text = await generate(self.judge, prompt, params, r.tokens, "judge")
        verdict, reason = parse_verdict(text)
        return {"order": "ab" if a_first else "ba", "caption_1": "a" if a_first else "b", "verdict": verdict,
                "winner": winner(verdict, a_first) if verdict else None, "reason": reason, "response": text}

    async def run_item(self, pair: Pair) -> dict[str, Any]:
        r = ArenaResult(id=pair.id, status=pair.missing or "error", key_b=pair.key_b,
                        image=str(pair.image) if pair.image else None)
        if pair.missing:
            r.reason = pair.why
            return r.to_dict()
        try:
            image = await load_image(pair.image)
            r.rounds = await gather_all(self._round(pair, image, True, r), self._round(pair, image, False, r))
        except (BackendError, TimeoutError, ImageError, OSError) as exc:
            r.reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        else:
            bad = [x["order"] for x in r.rounds if x["verdict"] is None]
            if bad:
                r.reason = f"no verdict in the judge's reply (order {', '.join(bad)})"
            else:
                r.status, r.outcome = "scored", combine(r.rounds[0]["winner"], r.rounds[1]["winner"])
        r.cost_usd = self.prices.cost(r.tokens)
        return r.to_dict()


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Win/tie/loss from A's side, both sets' scores, and how position-biased the judge was."""
    scored = [r for r in rows if r["status"] == "scored"]
    w = sum(1 for r in scored if r["outcome"] == "a")
    t = sum(1 for r in scored if r["outcome"] == "tie")
    los = sum(1 for r in scored if r["outcome"] == "b")
    n = len(scored)
    rounds = [x for r in scored for x in r["rounds"]]
    first = sum(1 for x in rounds if x["verdict"] == "1")
    flipped = sum(1 for r in scored if r["rounds"][0]["winner"] != r["rounds"][1]["winner"])
    score_a = 100 * (w - los) / n if n else None
    return {
        "pairs": len(rows), "judged": n, "wins": w, "ties": t, "losses": los,
        "score_a": score_a, "score_b": -score_a if score_a is not None else None,
        "win_rate_a": (w + t / 2) / n if n else None, "win_rate_b": (los + t / 2) / n if n else None,
        "first_position_rate": first / len(rounds) if rounds else None,
        "order_disagreements": flipped,
        "errors": sum(1 for r in rows if r["status"] == "error"),
        "missing_caption": sum(1 for r in rows if r["status"] == "missing_caption"),
        "missing_image": sum(1 for r in rows if r["status"] == "missing_image"),
        "failed": [{"id": r["id"], "status": r["status"], "reason": r["reason"]}
                   for r in rows if r["status"] != "scored"][:100],
        "partial": n < len(rows),
    }
