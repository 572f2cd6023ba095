"""The judge post-filter (after CapFlow, MetaCaptioner arXiv 2510.12126): keep only captions a judge
model rates well enough, with the image, on five dimensions.

CapFlow filtered 5M captions down to 4.1M by keeping those a judge scored top (3 of 3) on accuracy,
completeness, reasoning rigour, intent and professionalism. Here the judge is a role (the captioner
unless ``judge=`` binds another vision model), its prompt is the preset's ``judge.txt`` (``{}`` takes
the caption; edit it in a copy of the preset), and its reply is one line per dimension::

    accuracy: 3 | every object named is in the image

constrained to exactly that shape (a regex, as for the router) where the backend can constrain;
elsewhere the reply is parsed and a reply that does not parse fails the item (``judge_unparsed``),
it is never guessed. A caption is kept when each dimension reaches its threshold (``judge_min``,
default 3, or a per-dimension ``judge_thresholds`` entry); otherwise the record's status is
``rejected``: it stays in the output with its verdict, a resume does not redo it, exports skip it,
and ``rethreshold`` re-decides it from the stored scores without calling any model.
"""

from __future__ import annotations

import re

from .backends.base import Backend, ChatPrompt, GenerationParams, ImageRef
from .config import Settings
from .prompts import PromptSet
from .records import CaptionResult, JudgeScore, JudgeVerdict
from .stages import StageFailure, Trace

#: CapFlow's five dimensions, in the order the judge answers them.
DIMENSIONS = ("accuracy", "completeness", "reasoning_rigour", "intent", "professionalism")
#: A reason is one short line: no control character (so no newline), no bar (the separator), at most
#: this many characters.
REASON_CHARS = 80
_LINE = r"{}: ([1-3]) \| ([^|\x00-\x1f]{{1,{}}})"


def regex(reason_chars: int = REASON_CHARS) -> str:
    """The five-line reply, each reason at most ``reason_chars`` characters."""
    return r"\n".join(_LINE.format(d, reason_chars) for d in DIMENSIONS)


REGEX = regex()
_PARSE = [re.compile(rf"{d}\s*:\s*([1-3])\s*\|[ \t]*([^|\x00-\x1f]+)", re.IGNORECASE) for d in DIMENSIONS]


def thresholds_of(judge_min: int, per_dimension: dict[str, int]) -> dict[str, int]:
    """The lowest score kept for each dimension."""
    return {d: int(per_dimension.get(d, judge_min)) for d in DIMENSIONS}


def parse(text: str) -> list[JudgeScore] | None:
    """The five scores of a reply, or None when any dimension is missing."""
    scores = []
    for dimension, pattern in zip(DIMENSIONS, _PARSE):
        m = pattern.search(text)
        if m is None:
            return None
        scores.append(JudgeScore(dimension=dimension, score=int(m.group(1)), reason=m.group(2).strip()))
    return scores


def verdict(scores: list[JudgeScore], thresholds: dict[str, int], raw: str | None = None) -> JudgeVerdict:
    below = [s.dimension for s in scores if s.score < thresholds[s.dimension]]
    return JudgeVerdict(scores=scores, thresholds=thresholds, below=below, kept=not below, raw=raw)


def rethreshold(record: CaptionResult, judge_min: int = 3,
                per_dimension: dict[str, int] | None = None) -> CaptionResult:
    """``record`` re-decided under new thresholds from its stored scores (no model call): an ``ok``
    or ``rejected`` record with a verdict may change status; any other record is returned as is."""
    if record.judge is None or record.status not in ("ok", "rejected"):
        return record
    decided = verdict(record.judge.scores, thresholds_of(judge_min, per_dimension or {}), record.judge.raw)
    return record.model_copy(update={"judge": decided, "status": "ok" if decided.kept else "rejected"})


class Judge:
    """One call per caption to the judge model, with the image; the verdict it gives."""

    def __init__(self, backend: Backend, prompt: str | None, system: str | None, judge_min: int,
                 per_dimension: dict[str, int], max_tokens: int, seed: int, reason_chars: int = REASON_CHARS) -> None:
        if prompt is None:
            raise ValueError("the judge needs the preset's judge.txt (the paper preset has one)")
        if prompt.count("{}") != 1:
            raise ValueError("judge.txt must contain {} exactly 1 time (the caption's place)")
        if not backend.capabilities.vision:
            raise ValueError("--judge needs a vision model as the judge: it scores the caption against the image")
        self.backend, self.prompt, self.system = backend, prompt, system
        self.thresholds = thresholds_of(judge_min, per_dimension)
        self.constrained = backend.capabilities.can_constrain
        self.params = GenerationParams(max_tokens=max_tokens, regex=regex(reason_chars) if self.constrained else None, seed=seed)

    @classmethod
    def for_run(cls, settings: Settings, backend: Backend | None, prompts: PromptSet) -> "Judge | None":
        """The run's judge (None unless ``judge_filter``), with the preset's judge.txt and system prompt."""
        if not settings.judge_filter:
            return None
        assert backend is not None  # bound by the pipeline whenever judge_filter is on
        return cls(backend, prompts.judge, prompts.system, settings.judge_min, settings.judge_thresholds,
                   settings.max_tokens_judge, settings.seed)

    async def __call__(self, trace: Trace, image: ImageRef, caption: str | None) -> JudgeVerdict | None:
        if not caption:
            trace.skip("judge", "the final caption is empty: nothing to judge")
            return None
        out = await self.backend.generate(
            ChatPrompt(user=self.prompt.replace("{}", caption, 1), system=self.system, image=image), self.params)
        trace.record("judge", out)
        scores = parse(out.text)
        if scores is None:
            cut = " (it stopped at max_tokens_judge)" if out.finish_reason == "length" else ""
            raise StageFailure("judge_unparsed", f"the judge's reply gives no score 1-3 for every dimension{cut}: "
                                                 f"{out.text.strip()[:200]!r}")
        return verdict(scores, self.thresholds, None if self.constrained else out.text.strip()[:2000])


__all__ = ["DIMENSIONS", "REGEX", "Judge", "parse", "rethreshold", "thresholds_of", "verdict"]
