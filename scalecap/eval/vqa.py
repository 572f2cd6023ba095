"""Caption-only VQA, the Prism protocol (METHOD.md section 5).

A text LLM (the *answerer*) sees only the caption and the question, through the published Prism
prompt. Then, by kind of question:

* multiple choice: the chosen option is read from the reply by rule (``answers.extract_option``);
  when no rule finds exactly one option, the published extraction prompt goes to the *extractor*
  (the answerer unless another model is given) and the rule is applied to its reply. Score 1 when
  the option is the key, else 0 (also when no option could be read: counted as ``unextracted``);
* yes/no (no options, answer yes or no): the same, with ``answers.extract_yes_no``;
* open-ended (MM-Vet): a *judge* grades the reply against the ground truth with an MM-Vet-style
  few-shot prompt and writes a score in [0, 1]. A reply with no readable score is retried, up to
  ``judge_attempts`` times in all (the first at temperature 0, then 0.25, 0.5, ... with a new
  seed); an item never graded is *ungraded*, with the reason of its last attempt.

Accuracy = sum of scores / items evaluated (items with a caption). Ungraded items and items whose
model call failed count 0 there, as in MM-Vet's grader; ``accuracy_graded`` leaves them out.
Items without a caption are not evaluated: the result says how many and which (``partial``).
Per category: the same over the items tagged with it (an MM-Vet item counts in each of its
capability tags).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from ..backends.base import BackendError, ChatPrompt, GenerationParams
from . import prompts as eval_prompts
from .answers import extract_option, extract_yes_no, parse_grade
from .benchmarks import BenchItem, Benchmark, question_with_options
from .captions import CaptionSet
from .common import EvalInputError, fill, gather_limited

METRIC = "vqa-prism"
VERSION = "1"


@dataclass
class VQASettings:
    answer_max_tokens: int = 512
    extract_max_tokens: int = 32
    judge_max_tokens: int = 16
    judge_attempts: int = 5
    concurrency: int = 8

    def __post_init__(self) -> None:
        if self.judge_attempts < 1:
            raise EvalInputError("judge attempts must be at least 1")
        for name in ("answer_max_tokens", "extract_max_tokens", "judge_max_tokens", "concurrency"):
            if getattr(self, name) < 1:
                raise EvalInputError(f"{name.replace('_', '-')} must be at least 1")


@dataclass
class ItemResult:
    id: str
    kind: str  # mcq | yesno | open
    categories: list[str]
    status: str  # scored | ungraded | error | missing_caption
    score: float | None = None
    question: str = ""
    answer: str = ""
    caption_key: str | None = None
    response: str | None = None
    prediction: str | None = None  # letter / yes / no; for open items None
    how: str | None = None  # rule that read the prediction, "extractor: <rule>", or "judge"
    reason: str | None = None
    extractor_output: str | None = None
    judge_outputs: list[str] = field(default_factory=list)
    tokens: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_prompts(overrides: dict[str, str] | None = None) -> dict[str, str]:
    o = overrides or {}
    return {n: eval_prompts.load(n, o.get(n)) for n in ("system", "prism_answer", "extract_answer", "judge_open")}


def grade_outputs(outputs: list[str], attempts: int) -> tuple[str, float | None, str]:
    """The judge's verdict after the replies so far: ("scored", score, "ok") at the first readable
    score within ``attempts``; ("ungraded", None, why) once ``attempts`` replies had none;
    ("pending", None, why) while tries remain."""
    reason = "no reply"
    for out in outputs[:attempts]:
        g = parse_grade(out)
        if g.score is not None:
            return "scored", g.score, "ok"
        reason = g.reason
    if len(outputs) >= attempts:
        return "ungraded", None, f"no score after {attempts} attempt(s): {reason}"
    return "pending", None, reason


def _one_line(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip()


class PrismVQA:
    """Runs the protocol over a benchmark with any backends speaking the Backend protocol."""

    def __init__(self, answerer: Any, *, extractor: Any = None, judge: Any = None,
                 settings: VQASettings | None = None, prompts: dict[str, str] | None = None) -> None:
        self.answerer = answerer
        self.extractor = extractor if extractor is not None else answerer
        self.judge = judge
        self.settings = settings or VQASettings()
        self.prompts = prompts or load_prompts()

    async def _gen(self, backend: Any, user: str, max_tokens: int, item: ItemResult, role: str,
                   temperature: float = 0.0, seed: int = 0) -> str:
        g = await backend.generate(ChatPrompt(user=user, system=self.prompts["system"] or None),
                                   GenerationParams(max_tokens=max_tokens, temperature=temperature, seed=seed))
        item.tokens[f"{role}_prompt"] = item.tokens.get(f"{role}_prompt", 0) + g.prompt_tokens
        item.tokens[f"{role}_completion"] = item.tokens.get(f"{role}_completion", 0) + g.completion_tokens
        return g.text

    async def run_item(self, item: BenchItem, caption: str | None, caption_key: str | None = None,
                       missing_reason: str | None = None) -> ItemResult:
        r = ItemResult(id=item.id, kind=item.kind, categories=list(item.categories), status="missing_caption",
                       question=item.question, answer=item.answer, caption_key=caption_key)
        if caption is None:
            r.reason = missing_reason or "no caption for this id"
            return r
        s = self.settings
        question = question_with_options(item)
        try:
            r.response = await self._gen(self.answerer, fill(self.prompts["prism_answer"], caption, question),
                                         s.answer_max_tokens, r, "answerer")
            if r.kind == "open":
                await self._grade(item, r)
            else:
                await self._choose(item, question, r)
        except (BackendError, TimeoutError) as exc:
            r.status, r.score = "error", None
            r.reason = f"{type(exc).__name__}: {_one_line(str(exc))[:300]}"
        return r

    async def _choose(self, item: BenchItem, question: str, r: ItemResult) -> None:
        if r.kind == "mcq":
            key = item.answer_letter()
            if key is None:
                r.status, r.reason = "error", f"answer key {item.answer!r} is not one of the options"
                return
            read = lambda text: extract_option(text, item.options)  # noqa: E731
        else:
            key = "yes" if item.answer.strip().lower().startswith("y") else "no"
            read = extract_yes_no
        got = read(r.response or "")
        how = got.how
        if got.value is None and self.extractor is not None:
            r.extractor_output = await self._gen(self.extractor, fill(self.prompts["extract_answer"], question, r.response or ""),
                                                 self.settings.extract_max_tokens, r, "extractor")
            second = read(r.extractor_output)
            how = f"extractor: {second.how}"
            if second.value is not None:
                got = second
        r.prediction, r.how, r.status = got.value, how, "scored"
        r.score = 1.0 if got.value == key else 0.0
        if got.value is None:
            r.reason = f"no {'option' if r.kind == 'mcq' else 'yes/no'} could be read ({how})"

    async def _grade(self, item: BenchItem, r: ItemResult) -> None:
        if self.judge is None:
            raise EvalInputError("open-ended items need a judge model")
        user = fill(self.prompts["judge_open"], _one_line(item.question), _one_line(item.answer), _one_line(r.response or ""))
        k = self.settings.judge_attempts
        r.how = "judge"
        for attempt in range(k):
            out = await self._gen(self.judge, user, self.settings.judge_max_tokens, r, "judge",
                                  temperature=min(1.0, 0.25 * attempt), seed=attempt)
            r.judge_outputs.append(out)
            status, score, reason = grade_outputs(r.judge_outputs, k)
            if status != "pending":
                break
        r.status, r.score = status, score
        r.reason = None if status == "scored" else reason

    async def run(self, bench: Benchmark, captions: CaptionSet,
                  on_done: Callable[[ItemResult], None] | None = None) -> list[ItemResult]:
        jobs = []
        for item in bench.items:
            key, caption, why = captions.lookup(*item.caption_keys)
            jobs.append((item, caption, key, why))
        open_with_caption = sum(1 for it, cap, _, _ in jobs if cap is not None and it.kind == "open")
        if open_with_caption and self.judge is None:
            raise EvalInputError(f"{open_with_caption} open-ended item(s) need a judge model: pass --judge "
                                 "(or --judge-model/--judge-config)")

        async def one(job):
            item, caption, key, why = job
            return await self.run_item(item, caption, key, why)

        return await gather_limited(jobs, one, self.settings.concurrency, on_done)


# ----------------------------------------------------------------------------- aggregation

def _bucket(results: list[ItemResult]) -> dict[str, Any]:
    evaluated = [r for r in results if r.status != "missing_caption"]
    scored = [r for r in evaluated if r.status == "scored"]
    total = sum(r.score or 0.0 for r in scored)
    return {
        "items": len(results),
        "evaluated": len(evaluated),
        "scored": len(scored),
        "ungraded": sum(1 for r in evaluated if r.status == "ungraded"),
        "errors": sum(1 for r in evaluated if r.status == "error"),
        "missing_caption": len(results) - len(evaluated),
        "unextracted": sum(1 for r in scored if r.kind != "open" and r.prediction is None),
        "score_sum": total,
        "accuracy": total / len(evaluated) if evaluated else None,
        "accuracy_graded": total / len(scored) if scored else None,
    }


def summarize(results: list[ItemResult], captions: CaptionSet | None = None) -> dict[str, Any]:
    """Overall, per-category and per-kind numbers, and the lists of items that were not scored."""
    overall = _bucket(results)
    cats: dict[str, list[ItemResult]] = {}
    for r in results:
        for c in r.categories or ["(none)"]:
            cats.setdefault(c, []).append(r)
    kinds: dict[str, list[ItemResult]] = {}
    for r in results:
        kinds.setdefault(r.kind, []).append(r)
    out: dict[str, Any] = {
        "overall": overall,
        "per_category": {c: _bucket(rs) for c, rs in sorted(cats.items())},
        "per_kind": {k: _bucket(rs) for k, rs in sorted(kinds.items())},
        "missing": {"count": overall["missing_caption"],
                    "ids": [r.id for r in results if r.status == "missing_caption"],
                    "reasons": _reasons([r for r in results if r.status == "missing_caption"])},
        "ungraded": [{"id": r.id, "reason": r.reason} for r in results if r.status == "ungraded"],
        "errors": [{"id": r.id, "reason": r.reason} for r in results if r.status == "error"],
    }
    out["partial"] = bool(overall["missing_caption"])
    out["complete"] = not (overall["missing_caption"] or overall["ungraded"] or overall["errors"])
    if captions is not None:
        used = {r.caption_key for r in results if r.caption_key}
        unused = [k for k in captions.captions if k not in used]
        out["captions"] = {**captions.describe(), "unused": len(unused), "unused_ids": unused[:50]}
    return out


def _reasons(results: list[ItemResult]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in results:
        out[r.reason or "?"] = out.get(r.reason or "?", 0) + 1
    return out
