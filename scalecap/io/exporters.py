"""Exporters: a finished run as training data for other tools.

Only records with status ``ok`` are exported (a failed or filtered image has no caption); the
number skipped is returned so that the CLI can say it. Records are streamed, so a run of a million
images never sits in memory.

- ``llava``: the LLaVA / ShareGPT conversation list, one JSON file::

      [{"id": ..., "image": ..., "conversations": [
          {"from": "human", "value": "<image>\\n{prompt}"}, {"from": "gpt", "value": caption}]}, ...]

- ``llamafactory``: a LLaMA-Factory dataset folder: ``scalecap.json`` in its ``sharegpt`` format
  with OpenAI-style ``messages`` and an ``images`` list, and a ``dataset_info.json`` that declares
  it (``formatting: sharegpt``, ``columns: {messages, images}``, ``tags: {role_tag: role,
  content_tag: content, user_tag: user, assistant_tag: assistant}``), so that
  ``dataset: scalecap`` with ``dataset_dir: DIR`` works in a LLaMA-Factory training config.

``caption_field``: ``final`` (default) or ``corrected`` (``scalecap.io.caption_field``);
``ExportReport.corrected`` counts the records exported with their corrected caption.

``image`` is the record's ``source`` (the path the image was read from), made relative to
``image_root`` when given (LLaVA's ``image_folder``). Images that came from inside a tar shard or a
Parquet/HF dataset have no file of their own: export those with ``--format wds`` instead, or
extract them first.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..records import CaptionResult
from .caption_field import check_caption_field, chosen_caption
from .journal import read_records

DEFAULT_PROMPT = "Describe this image in detail."
EXPORT_FORMATS = ("llava", "llamafactory")


@dataclass
class ExportReport:
    exported: int = 0
    skipped: int = 0
    skipped_by_status: dict[str, int] | None = None
    output: Path | None = None
    corrected: int = 0  # exported with their self-corrected caption (caption_field="corrected")


def _image_ref(record: CaptionResult, image_root: Path | None) -> str:
    if image_root is not None and Path(record.source).is_file():
        try:
            return Path(os.path.relpath(Path(record.source).resolve(), image_root.resolve())).as_posix()
        except ValueError:
            pass
    return record.source


def _stream_json_list(path: Path, rows: Iterable[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("[")
        for i, row in enumerate(rows):
            f.write(",\n" if i else "\n")
            f.write(json.dumps(row, ensure_ascii=False))
        f.write("\n]\n")
    os.replace(tmp, path)


def _ok_records(run: Path, report: ExportReport, caption_field: str = "final") -> Iterable[tuple[CaptionResult, str]]:
    check_caption_field(caption_field)
    skipped: dict[str, int] = {}
    for r in read_records(run):
        caption, corrected = chosen_caption(r, caption_field)
        if r.status == "ok" and caption:
            report.exported += 1
            report.corrected += corrected
            yield r, caption
        else:
            key = r.status if r.status != "ok" else "ok_without_caption"
            skipped[key] = skipped.get(key, 0) + 1
            report.skipped += 1
    report.skipped_by_status = skipped


def export_llava(run: Path, out: Path, prompt: str = DEFAULT_PROMPT, image_root: Path | None = None,
                 caption_field: str = "final") -> ExportReport:
    report = ExportReport(output=out)
    rows = ({"id": r.id, "image": _image_ref(r, image_root),
             "conversations": [{"from": "human", "value": f"<image>\n{prompt}"},
                               {"from": "gpt", "value": caption}]}
            for r, caption in _ok_records(run, report, caption_field))
    _stream_json_list(out, rows)
    return report


def export_llamafactory(run: Path, out_dir: Path, prompt: str = DEFAULT_PROMPT, image_root: Path | None = None,
                        name: str = "scalecap", caption_field: str = "final") -> ExportReport:
    check_caption_field(caption_field)  # before the folder is made
    out_dir.mkdir(parents=True, exist_ok=True)
    data_file = out_dir / f"{name}.json"
    report = ExportReport(output=out_dir)
    rows = ({"messages": [{"role": "user", "content": f"<image>{prompt}"},
                          {"role": "assistant", "content": caption}],
             "images": [_image_ref(r, image_root)]}
            for r, caption in _ok_records(run, report, caption_field))
    _stream_json_list(data_file, rows)
    info = {name: {"file_name": data_file.name, "formatting": "sharegpt",
                   "columns": {"messages": "messages", "images": "images"},
                   "tags": {"role_tag": "role", "content_tag": "content",
                            "user_tag": "user", "assistant_tag": "assistant"}}}
    (out_dir / "dataset_info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return report
