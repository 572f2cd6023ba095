"""Token prices: what a run cost, per stage and per role (used by ``caption`` and ``report``).

Prices are in USD per one million tokens, prompt and completion separately. A price can be set for
a pipeline stage (``caption``, ``answer_rating`` ...), for a model role (``captioner``, ``scorer``,
``writer``: every stage that role runs), or for everything (``*``). The most specific one wins:
stage, then role, then ``*``. Command-line form::

    --price caption=0.20:0.80      # a stage, prompt:completion
    --price writer=0.60:2.40       # a role
    --price scorer=0.20            # one number: the same price for prompt and completion
    --price-prompt 0.2 --price-completion 0.8   # the default for every stage not priced above
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

#: Which model role runs each pipeline stage (METHOD.md section 3).
STAGE_ROLES: dict[str, str] = {
    "routing": "captioner",  # the router is the captioner unless bound otherwise
    "caption": "captioner",
    "answers": "captioner",
    "caption_rating": "scorer",
    "answer_rating": "scorer",
    "instructions": "writer",
    "object_summary": "writer",
    "position_summary": "writer",
    "final": "writer",
    "correction": "captioner",
    "correction_rating": "scorer",
    "judge": "captioner",  # the judge is the captioner unless bound otherwise (then price the stage: judge=P:C)
}
ROLES = ("captioner", "scorer", "writer")
DEFAULT_KEYS = ("*", "default", "all")


def role_of(stage: str) -> str:
    """The role that serves a stage (unknown rating stages are the scorer's, the rest the writer's)."""
    if stage in STAGE_ROLES:
        return STAGE_ROLES[stage]
    return "scorer" if "rating" in stage else "writer"


class PriceError(ValueError):
    """A price specification that cannot be read."""


@dataclass(frozen=True)
class Price:
    """USD per one million prompt tokens and per one million completion tokens."""

    prompt: float = 0.0
    completion: float = 0.0

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.prompt + completion_tokens * self.completion) / 1_000_000


def _number(text: str, spec: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise PriceError(f"price {spec!r}: {text!r} is not a number (USD per 1M tokens)") from None
    if not math.isfinite(value) or value < 0:
        raise PriceError(f"price {spec!r}: {text!r} must be a finite number >= 0")
    return value


@dataclass
class Prices:
    """A price table: ``by_name`` holds stages and roles, ``default`` applies to the rest."""

    by_name: dict[str, Price] = field(default_factory=dict)
    default: Price | None = None

    @property
    def given(self) -> bool:
        return bool(self.by_name) or self.default is not None

    @classmethod
    def parse(cls, specs: Iterable[str] = (), prompt: float | None = None,
              completion: float | None = None) -> Prices:
        """Read ``NAME=PROMPT[:COMPLETION]`` specs plus the optional default prompt/completion prices."""
        table = cls()
        if prompt is not None or completion is not None:
            table.default = Price(_number(str(prompt or 0), "--price-prompt"),
                                  _number(str(completion or 0), "--price-completion"))
        for spec in specs:
            name, sep, value = spec.partition("=")
            name = name.strip()
            if not sep or not name or not value.strip():
                raise PriceError(f"price {spec!r}: expected NAME=PROMPT[:COMPLETION], e.g. caption=0.2:0.8")
            if name not in STAGE_ROLES and name not in ROLES and name not in DEFAULT_KEYS:
                raise PriceError(f"price {spec!r}: {name!r} is neither a role ({', '.join(ROLES)}), a stage "
                                 f"({', '.join(STAGE_ROLES)}) nor '*'")
            p, sep2, c = value.partition(":")
            price = Price(_number(p.strip(), spec), _number(c.strip(), spec) if sep2 else _number(p.strip(), spec))
            if name in DEFAULT_KEYS:
                table.default = price
            else:
                table.by_name[name] = price
        return table

    @classmethod
    def coerce(cls, value: Prices | Mapping[str, object] | None) -> Prices:
        """Accept a ``Prices``, ``None``, or a mapping name -> Price | (prompt, completion) | number."""
        if value is None:
            return cls()
        if isinstance(value, Prices):
            return value
        table = cls()
        for name, v in value.items():
            if isinstance(v, Price):
                price = v
            elif isinstance(v, (int, float)):
                price = Price(_number(str(v), name), _number(str(v), name))
            else:
                p, c = v  # type: ignore[misc]
                price = Price(_number(str(p), name), _number(str(c), name))
            if name in DEFAULT_KEYS:
                table.default = price
            else:
                table.by_name[name] = price
        return table

    def describe(self) -> dict[str, list[float]]:
        """The table as plain data (for summary files): name -> [prompt, completion]."""
        out = {k: [v.prompt, v.completion] for k, v in sorted(self.by_name.items())}
        if self.default is not None:
            out["*"] = [self.default.prompt, self.default.completion]
        return out

    def for_stage(self, stage: str) -> Price | None:
        if stage in self.by_name:
            return self.by_name[stage]
        role = STAGE_ROLES.get(stage)
        if role is not None and role in self.by_name:
            return self.by_name[role]
        return self.default

    def unused(self, stages: Iterable[str]) -> list[str]:
        """Names priced but matching no stage seen in the run (probably a typo)."""
        stages = set(stages)
        roles = {STAGE_ROLES.get(s) for s in stages}
        return sorted(n for n in self.by_name if n not in stages and n not in roles)
