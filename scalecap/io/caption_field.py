"""Which caption of a record goes into a text-only output (a sidecar ``.txt``, a WebDataset ``.txt``,
an exported training conversation): the final caption, or the self-corrected one.

``corrected`` takes the record's corrected caption where it has one (``--self-correct``) and its
final caption where it has none (the final caption was empty, so there was nothing to re-check);
callers count the records that gave their corrected caption, so the mix is always said.
"""

from __future__ import annotations

from ..records import CaptionResult

CAPTION_FIELDS = ("final", "corrected")


def check_caption_field(caption_field: str) -> str:
    if caption_field not in CAPTION_FIELDS:
        raise ValueError(f"caption field {caption_field!r}: expected one of {', '.join(CAPTION_FIELDS)}")
    return caption_field


def chosen_caption(record: CaptionResult, caption_field: str) -> tuple[str | None, bool]:
    """The caption to write and whether it is the corrected one."""
    if caption_field == "corrected" and record.corrected_caption:
        return record.corrected_caption, True
    return record.final_caption, False


__all__ = ["CAPTION_FIELDS", "check_caption_field", "chosen_caption"]
