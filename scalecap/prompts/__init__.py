"""Prompt presets: each preset is a folder of text files, one prompt per file, ``{}`` marking slots.

Keeping prompts as data lets users add a preset without touching code, and lets the fingerprint
hash exactly the text that was sent.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

_NAMES = ("system", "caption", "instructions", "object_summary", "position_summary", "final")
#: Prompts a preset may lack; a stage that needs one refuses to start without it.
_OPTIONAL = ("correct",)
#: Optional prompts used only by an opt-in tool, hashed into the fingerprint only when it is used
#: (so that adding one to a preset does not change the fingerprint of runs that never send it).
_TOOLS = ("evidence", "judge")


@dataclass(frozen=True)
class PromptSet:
    name: str
    system: str
    caption: str
    instructions: str
    object_summary: str
    position_summary: str
    final: str
    #: The self-correction turn (``--self-correct``), sent after the caption as a new user turn.
    correct: str | None = None
    #: OCR evidence (``--ocr``), put before the final-caption prompt; ``{}`` takes the OCR text.
    evidence: str | None = None
    #: The judge post-filter (``--judge``), sent with the image; ``{}`` takes the final caption.
    judge: str | None = None
    #: Question families beyond object/position (a domain's, ``domains.py``): (name, question) pairs,
    #: each question asked once about the whole image and its answer rated like an object answer.
    families: tuple[tuple[str, str], ...] = ()

    @property
    def sha256(self) -> str:
        h = hashlib.sha256()
        for n in _NAMES + _OPTIONAL:
            if getattr(self, n) is not None:
                h.update(n.encode() + b"\0" + getattr(self, n).encode() + b"\0")
        for name, question in self.families:  # none in the paper's preset: its hash is unchanged
            h.update(b"family\0" + name.encode() + b"\0" + question.encode() + b"\0")
        return h.hexdigest()


def load_preset(name_or_path: str = "paper") -> PromptSet:
    """A bundled preset by name (``paper``) or a folder with the six prompt files (and optionally ``correct.txt``)."""
    path = Path(name_or_path)
    if path.is_dir():
        folder, name = path, path.name
    else:
        folder = Path(str(resources.files(__package__).joinpath(name_or_path)))
        name = name_or_path
        if not folder.is_dir():
            raise ValueError(f"unknown prompt preset {name_or_path!r}: not a bundled preset nor a folder")
    texts = {}
    for n in _NAMES:
        f = folder / f"{n}.txt"
        if not f.is_file():
            raise ValueError(f"prompt preset {name!r} lacks {f.name}")
        texts[n] = f.read_text(encoding="utf-8")
    for n in _OPTIONAL + _TOOLS:
        if (folder / f"{n}.txt").is_file():
            texts[n] = (folder / f"{n}.txt").read_text(encoding="utf-8")
    if "{}" in texts.get("correct", ""):
        raise ValueError(f"prompt {name}/correct.txt takes no {{}} slot: the caption goes before it, as the "
                         "assistant's turn")
    for n in _TOOLS:
        if n in texts and texts[n].count("{}") != 1:
            raise ValueError(f"prompt {name}/{n}.txt must contain {{}} exactly 1 time(s)")
    for n, slots in (("instructions", 1), ("object_summary", 1), ("position_summary", 1), ("final", 3)):
        if texts[n].count("{}") != slots:
            raise ValueError(f"prompt {name}/{n}.txt must contain {{}} exactly {slots} time(s)")
    return PromptSet(name=name, **texts)
