"""CaptionQA scoring: how useful a caption is in place of the image, by multiple-choice QA.

For each question the answerer sees the caption and the options, shuffled with a fixed seed. A
question that is not a yes/no question gets one more option, "Cannot answer from the caption",
placed last. Score per question (n = number of the question's original options):

* the key option: 1
* "Cannot answer from the caption": 1/n + 0.05 (a little better than a blind guess)
* any other option, or no option readable from the reply: 0

The overall score is the mean over questions evaluated (those with a caption), also per category.
The shuffle of a question depends only on the seed and the question id (``random.Random(f"{seed}:{id}")``),
so results do not depend on the order or subset of questions; each item records its permutation.
The answering prompt is ours (``prompts/captionqa_answer.txt``); options are read by rule, with the
METHOD.md extraction prompt as fallback, as in ``vqa``.
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from ..backends.base import BackendError, ChatPrompt, GenerationParams
from . import prompts as eval_prompts
from .answers import extract_option
from .benchmarks import LETTERS, BenchItem, Benchmark
from .captions import CaptionSet
from .common import EvalInputError, fill, gather_limited

METRIC = "captionqa"
VERSION = "1"
CANNOT = "Cannot answer from the caption"
CANNOT_BONUS = 0.05


@dataclass(frozen=True)
class Shuffled:
    options: dict[str, str]  # letter -> text as shown (with the extra option last, when added)
    order: list[str]  # original letters in shown order
    key: str  # shown letter of the right answer
    cannot: str | None  # shown letter of the "cannot answer" option, if added
    n_original: int
    yes_no: bool


def is_yes_no(options: dict[str, str]) -> bool:
    norm = sorted(re.sub(r"[\s.!]+", "", v.lower()) for v in options.values())
    return norm == ["no", "yes"]


def shuffle_options(item: BenchItem, seed: int) -> Shuffled:
    if not item.options:
        raise EvalInputError(f"captionqa: item {item.id} has no options (CaptionQA is multiple choice)")
    key = item.answer_letter()
    if key is None:
        raise EvalInputError(f"captionqa: item {item.id}: answer {item.answer!r} is not one of its options")
    original = list(item.options)
    order = original[:]
    random.Random(f"{seed}:{item.id}").shuffle(order)
    yn = is_yes_no(item.options)
    total = len(order) + (0 if yn else 1)
    if total > len(LETTERS):
        raise EvalInputError(f"captionqa: item {item.id} has too many options")
    shown = {LETTERS[i]: item.options[o] for i, o in enumerate(order)}
    cannot = None
    if not yn:
        cannot = LETTERS[len(order)]
        shown[cannot] = CANNOT
    return Shuffled(shown, order, LETTERS[order.index(key)], cannot, len(original), yn)


def score_choice(letter: str | None, s: Shuffled) -> tuple[float, str]:
    """(score, outcome) of a chosen shown letter; outcome: correct | cannot | wrong | unextracted."""
    if letter is None:
        return 0.0, "unextracted"
    if letter == s.key:
        return 1.0, "correct"
    if s.cannot is not None and letter == s.cannot:
        return 1.0 / s.n_original + CANNOT_BONUS, "cannot"
    return 0.0, "wrong"


@dataclass
class QAResult:
    id: str
    categories: list[str]
    status: str  # scored | error | missing_caption
    outcome: str | None = None
    score: float | None = None
    n_options: int = 0
    yes_no: bool = False
    order: list[str] = field(default_factory=list)
    key: str | None = None
    prediction: str | None = None
    how: str | None = None
    response: str | None = None
    extractor_output: str | None = None
    caption_key: str | None = None
    reason: str | None = None
    tokens: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CaptionQASettings:
    seed: int = 0
    answer_max_tokens: int = 64
    extract_max_tokens: int = 32
    concurrency: int = 8


def load_prompts(overrides: dict[str, str] | None = None) -> dict[str, str]:
    o = overrides or {}
    return {n: eval_prompts.load(n, o.get(n)) for n in ("system", "captionqa_answer", "extract_answer")}


class CaptionQA:
    def __init__(self, answerer: Any, *, extractor: Any = None, settings: CaptionQASettings | None = None,
                 prompts: dict[str, str] | None = None) -> None:
        self.answerer = answerer
        self.extractor = extractor if extractor is not None else answerer
        self.settings = settings or CaptionQASettings()
        self.prompts = prompts or load_prompts()

    async def _gen(self, backend: Any, user: str, max_tokens: int, r: QAResult, role: str) -> str:
        g = await backend.generate(ChatPrompt(user=user, system=self.prompts["system"] or None),
                                   GenerationParams(max_tokens=max_tokens, temperature=0.0, seed=self.settings.seed))
        r.tokens[f"{role}_prompt"] = r.tokens.get(f"{role}_prompt", 0) + g.prompt_tokens
        r.tokens[f"{role}_completion"] = r.tokens.get(f"{role}_completion", 0) + g.completion_tokens
        return g.text

    async def run_item(self, item: BenchItem, caption: str | None, caption_key: str | None = None,
                       missing_reason: str | None = None) -> QAResult:
        s = shuffle_options(item, self.settings.seed)
        r = QAResult(id=item.id, categories=list(item.categories), status="missing_caption", n_options=s.n_original,
                     yes_no=s.yes_no, order=s.order, key=s.key, caption_key=caption_key)
        if caption is None:
            r.reason = missing_reason or "no caption for this id"
            return r
        question = item.question.strip() if not item.hint else f"Hint: {item.hint.strip()}\n{item.question.strip()}"
        lines = "\n".join(f"{k}. {v}" for k, v in s.options.items())
        try:
            r.response = await self._gen(self.answerer, fill(self.prompts["captionqa_answer"], caption, question, lines),
                                         self.settings.answer_max_tokens, r, "answerer")
            got = extract_option(r.response, s.options)
            r.how = got.how
            if got.value is None and self.extractor is not None:
                r.extractor_output = await self._gen(
                    self.extractor, fill(self.prompts["extract_answer"], f"{question}\nOptions:\n{lines}", r.response),
                    self.settings.extract_max_tokens, r, "extractor")
                second = extract_option(r.extractor_output, s.options)
                r.how = f"extractor: {second.how}"
                if second.value is not None:
                    got = second
        except (BackendError, TimeoutError) as exc:
            r.status, r.reason = "error", f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
            return r
        r.prediction = got.value
        r.score, r.outcome = score_choice(got.value, s)
        r.status = "scored"
        return r

    async def run(self, bench: Benchmark, captions: CaptionSet,
                  on_done: Callable[[QAResult], None] | None = None) -> list[QAResult]:
        for item in bench.items:  # fail early on a bad item, before any model call
            shuffle_options(item, self.settings.seed)
        jobs = [(item, *captions.lookup(*item.caption_keys)) for item in bench.items]

        async def one(job):
            item, key, caption, why = job
            return await self.run_item(item, caption, key, why)

        return await gather_limited(jobs, one, self.settings.concurrency, on_done)


def _bucket(results: list[QAResult]) -> dict[str, Any]:
    evaluated = [r for r in results if r.status != "missing_caption"]
    total = sum(r.score or 0.0 for r in evaluated)
    outcomes: dict[str, int] = {}
    for r in evaluated:
        k = r.outcome or r.status
        outcomes[k] = outcomes.get(k, 0) + 1
    return {"items": len(results), "evaluated": len(evaluated), "missing_caption": len(results) - len(evaluated),
            "errors": sum(1 for r in evaluated if r.status == "error"), "score_sum": total,
            "score": total / len(evaluated) if evaluated else None, "outcomes": dict(sorted(outcomes.items()))}


def summarize(results: list[QAResult], captions: CaptionSet | None = None) -> dict[str, Any]:
    cats: dict[str, list[QAResult]] = {}
    for r in results:
        for c in r.categories or ["(none)"]:
            cats.setdefault(c, []).append(r)
    overall = _bucket(results)
    out = {"overall": overall, "per_category": {c: _bucket(rs) for c, rs in sorted(cats.items())},
           "missing": {"count": overall["missing_caption"], "ids": [r.id for r in results if r.status == "missing_caption"]},
           "errors": [{"id": r.id, "reason": r.reason} for r in results if r.status == "error"],
           "partial": bool(overall["missing_caption"])}
    if captions is not None:
        used = {r.caption_key for r in results if r.caption_key}
        unused = [k for k in captions.captions if k not in used]
        out["captions"] = {**captions.describe(), "unused": len(unused), "unused_ids": unused[:50]}
    return out
