"""Progress and accounting: what a run has done, what it cost, and a live view of it.

Token usage is recorded per pipeline stage in every record (``CaptionResult.usage``). Stages map to
the role (and so the model) that served them, which is how prices are given:

====================================================  =========
stages                                                role
====================================================  =========
caption, answers                                      captioner
caption_rating, answer_rating                         scorer
instructions, object_summary, position_summary, final  writer
====================================================  =========

Prices (``scalecap.pricing``) are USD per million tokens, prompt:completion, per role or per stage
(a stage price wins over its role's): ``--price writer=0.5:1.5 --price scorer=0.1:0``. A stage
without a price has no cost (``null``), never a guessed one.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .pricing import Prices, role_of

log = logging.getLogger(__name__)

@dataclass
class Usage:
    """Token totals per stage: calls, prompt tokens, completion tokens."""

    stages: dict[str, list[int]] = field(default_factory=dict)

    def add_record(self, usage: dict[str, Any], sign: int = 1) -> None:
        """Add one record's ``usage`` (StageUsage values or plain dicts); ``sign=-1`` takes it away."""
        for stage, u in usage.items():
            t = self.stages.setdefault(stage, [0, 0, 0])
            get = u.get if isinstance(u, dict) else (lambda k, u=u: getattr(u, k))
            t[0] += sign * int(get("calls") or 0)
            t[1] += sign * int(get("prompt_tokens") or 0)
            t[2] += sign * int(get("completion_tokens") or 0)

    @property
    def total_tokens(self) -> int:
        return sum(p + c for _, p, c in self.stages.values())

    def report(self, prices: Prices | None = None) -> dict[str, Any]:
        """Per stage and per role: calls, tokens and (where priced) cost in USD."""
        prices = prices or Prices()
        by_stage: dict[str, Any] = {}
        by_role: dict[str, dict[str, Any]] = {}
        total_cost = 0.0
        priced_any = False
        for stage in sorted(self.stages):
            calls, prompt, completion = self.stages[stage]
            role = role_of(stage)
            price = prices.for_stage(stage)
            cost = None
            if price is not None:
                cost = round((prompt * price.prompt + completion * price.completion) / 1e6, 6)
                total_cost += cost
                priced_any = True
            by_stage[stage] = {"role": role, "calls": calls, "prompt_tokens": prompt,
                               "completion_tokens": completion, "cost_usd": cost}
            r = by_role.setdefault(role, {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": None})
            r["calls"] += calls
            r["prompt_tokens"] += prompt
            r["completion_tokens"] += completion
            if cost is not None:
                r["cost_usd"] = round((r["cost_usd"] or 0.0) + cost, 6)
        return {"by_stage": by_stage, "by_role": by_role, "total_tokens": self.total_tokens,
                "total_cost_usd": round(total_cost, 6) if priced_any else None,
                "prices_usd_per_1m_tokens": prices.describe()}


class JobProgress:
    """Callbacks a run makes as it goes (this base does nothing; ``RichProgress`` draws a bar)."""

    def start(self, total: int | None) -> None: ...

    def skipped(self, n: int = 1) -> None: ...

    def result(self, record: Any) -> None: ...

    def finish(self) -> None: ...

    def notice(self, line: str) -> None:
        """One line the person running the job must see (a pause for a server outage, its end)."""
        log.warning("%s", line)


class RichProgress(JobProgress):
    """A live bar: done/total, images/s over this run's work, ETA (when the total is known),
    ok/failed/filtered counts and tokens. Skipped (already done) images fill the bar but do not
    count towards the rate."""

    def __init__(self, console) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(TextColumn("[bold]captioning"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console,
                                 transient=False, refresh_per_second=4)
        self.counts: Counter = Counter()
        self.tokens = 0
        self.total: int | None = None
        self.done_before = 0
        self.t0 = time.perf_counter()
        self.task = None
        self._last = 0.0

    def start(self, total: int | None) -> None:
        self.total = total
        self.t0 = time.perf_counter()
        self.progress.start()
        self.task = self.progress.add_task("caption", total=total, info="")

    def skipped(self, n: int = 1) -> None:
        self.done_before += n
        self.progress.update(self.task, advance=n)
        self._refresh()

    def result(self, record: Any) -> None:
        self.counts[record.status] += 1
        for u in record.usage.values():
            self.tokens += u.prompt_tokens + u.completion_tokens
        self.progress.update(self.task, advance=1)
        self._refresh()

    def _refresh(self, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self._last < 0.2:
            return
        self._last = now
        processed = sum(self.counts.values())
        rate = processed / max(now - self.t0, 1e-9)
        info = f"{rate:.2f} img/s"
        if self.total is not None and rate > 0:
            left = max(self.total - self.done_before - processed, 0)
            info += f"  ETA {_hms(left / rate)}"
        info += f"  ok {self.counts['ok']}  failed {self.counts['failed']}  filtered {self.counts['filtered']}"
        if self.counts["rejected"]:  # the judge post-filter's rejections
            info += f"  rejected {self.counts['rejected']}"
        info += f"  skipped {self.done_before}  tokens {self.tokens:,}"
        self.progress.update(self.task, info=info)

    def notice(self, line: str) -> None:
        from rich.markup import escape

        self.progress.console.print(f"[bold yellow]{escape(line)}[/]")

    def finish(self) -> None:
        if self.task is not None:
            self._refresh(force=True)
        self.progress.stop()


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
