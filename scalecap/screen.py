"""The degenerate-output filter: ``text/degenerate.py``'s checks applied to generated texts, with an
action per check.

The checks only look; this module decides. Each generated text the filter covers (the first
caption, every answer, the final caption) is checked; every hit becomes a ``FilterHit`` in the
record with the action taken:

- ``mark``: the hit is recorded, the text is kept as it is (the default for every check: the
  paper's outputs do not change unless a user asks);
- ``drop``: the sentences that carry the trait are removed (a refusal or drifting sentence, the
  repeats of a looping sentence, a dangling last sentence); a text left empty is kept whole, marked;
- ``retry``: the text is generated once more with a higher repetition penalty
  (``degenerate_retry_penalty``); the retry's own hits are recorded too, and the retry is kept only
  if it has fewer hits than the first try (a retry costs one more call, counted in the stage's usage).

Model-free and cheap (regexes and counters over one text), so it is on by default.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from .backends.base import Generation
from .config import Settings
from .records import FilterHit
from .text.degenerate import DegenerateConfig, Hit, check_text, strip_stock_opening
from .text.sentences import split_sentences

Regenerate = Callable[[float], Awaitable[Generation]]


class Screen:
    """Checks one stage's generated text and applies the configured action per reason code."""

    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.degenerate_filter
        self.actions = settings.degenerate_actions
        self.retry_penalty = settings.degenerate_retry_penalty
        self.stock_opening = settings.strip_stock_opening
        self.config = DegenerateConfig(min_chars=settings.degenerate_min_chars,
                                       max_chars=settings.degenerate_max_chars,
                                       min_distinct_ratio=settings.degenerate_min_distinct_ratio,
                                       max_foreign_share=settings.degenerate_max_foreign_share)

    def check(self, out: Generation) -> list[Hit]:
        return check_text(out.text, self.config, truncated=out.finish_reason == "length",
                          stock_opening=self.stock_opening)

    async def __call__(self, hits: list[FilterHit], stage: str, out: Generation,
                       regenerate: Regenerate | None) -> Generation:
        """The text to keep for ``stage``; ``hits`` (the record's list) receives every finding."""
        if not self.enabled:
            return out
        found = self.check(out)
        if not found:
            return out
        if regenerate is not None and any(self.actions.get(h.code) == "retry" for h in found):
            hits.extend(_hit(stage, h, "retry") for h in found)
            again = await regenerate(self.retry_penalty)
            again_found = self.check(again)
            hits.extend(_hit(stage, h, "mark", retry=True) for h in again_found)
            if len(again_found) < len(found):
                return again
            return out
        text = out.text
        for h in found:
            action = self.actions.get(h.code, "mark")
            if action == "drop" or (h.code == "stock_opening" and action != "mark"):
                changed = _drop(text, h.code, self.config) if h.code != "stock_opening" else strip_stock_opening(text)
                if changed.strip() and changed != text:
                    text = changed
                    hits.append(_hit(stage, h, "drop"))
                    continue
            hits.append(_hit(stage, h, "mark"))
        return Generation(text, out.prompt_tokens, out.completion_tokens, out.finish_reason) if text != out.text else out


def _hit(stage: str, h: Hit, action: str, retry: bool = False) -> FilterHit:
    return FilterHit(stage=stage, code=h.code, detail=h.detail, value=h.value, threshold=h.threshold,
                     action=action, retry=retry)


def _drop(text: str, code: str, config: DegenerateConfig) -> str:
    """``text`` without the sentences that carry ``code``: for a loop, every repeat of a sentence
    after its first; for a truncation, the dangling last sentence; otherwise each sentence that,
    checked alone, has the trait."""
    spans = split_sentences(text)
    if not spans:
        return text
    if code == "repetition":
        seen: set[str] = set()
        drop = set()
        for i, s in enumerate(spans):
            key = " ".join(s.text.lower().split())
            if key in seen:
                drop.add(i)
            seen.add(key)
    elif code == "truncated":
        drop = {len(spans) - 1}
    elif code in ("refusal", "script_drift"):
        drop = {i for i, s in enumerate(spans) if code in {h.code for h in check_text(s.text, config)}}
    else:  # empty / too_short / too_long concern the whole text: nothing to drop sentence by sentence
        return text
    # Cut each dropped sentence with the whitespace after it, so the rest keeps its own layout.
    ends = [s.start for s in spans[1:]] + [len(text)]
    pieces = [text[:spans[0].start]] + [text[s.start:end] for i, (s, end) in enumerate(zip(spans, ends)) if i not in drop]
    return "".join(pieces).strip()
