"""The evaluation prompts, one text file each, ``{}`` marking slots.

* ``prism_answer`` and ``extract_answer``: published with the paper (METHOD.md section 4), verbatim.
* ``system``: the paper's system prompt for every chat call.
* ``judge_open``: ours, in the style of MM-Vet's grader (same task, scale and ``<AND>``/``<OR>``
  convention; our own wording and few-shot examples). Scores from it are comparable with each
  other, not digit-for-digit with MM-Vet's official GPT-4 grader.
* ``captionqa_answer``: ours (the CaptionQA answering prompt is not part of METHOD.md).
* ``scene_graph``: ours, for an LLM writing FACTUAL-style tuples when no seq2seq parser is given.
* ``arena_judge``: ours, in the spirit of CapArena-Auto's judge (accuracy first, then detail; a
  reason line, then a verdict 1 / 2 / tie), shown with the image.
* ``dcscore_decompose``, ``dcscore_judge``, ``dcscore_match``: ours, for DCScore's three steps
  (caption to primitive units; a unit against the image; a reference unit against the caption's units).
* ``relation_judge``: ours, refined CAPTURE's yes/no relation question (SC-Captioner publishes none).

A file may be overridden by a user path (``--prompt NAME=FILE`` on the CLI); the hash of the text
actually sent is recorded in every result.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..common import EvalInputError

SLOTS = {"system": 0, "prism_answer": 2, "extract_answer": 2, "judge_open": 3, "captionqa_answer": 3,
         "scene_graph": 1, "arena_judge": 2, "dcscore_decompose": 1, "dcscore_judge": 1, "dcscore_match": 2,
         "relation_judge": 2}


def load(name: str, override: str | Path | None = None) -> str:
    """Prompt ``name`` (bundled, or the text of ``override``), checked for its number of slots."""
    if name not in SLOTS:
        raise EvalInputError(f"unknown prompt {name!r} (known: {', '.join(sorted(SLOTS))})")
    if override is not None:
        p = Path(override)
        if not p.is_file():
            raise EvalInputError(f"prompt {name}: {p} does not exist")
        text = p.read_text(encoding="utf-8")
    else:
        text = resources.files(__package__).joinpath(f"{name}.txt").read_text(encoding="utf-8")
    if text.endswith("\n"):
        text = text[:-1]
    if text.count("{}") != SLOTS[name]:
        raise EvalInputError(f"prompt {name} must contain {{}} exactly {SLOTS[name]} time(s), found {text.count('{}')}")
    return text
