"""Data for the report tests: a hand-written run, and many small records.

The run (``crafted_run``) is written line by line from the dicts below: real-looking captions of a
living room, a street, a kitchen; one caption full of hostile markup; failed and filtered images;
token-level traces on some sentences; three malformed lines. ``EXPECTED`` holds the numbers the
report must show for it, counted by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw

from scalecap.records import CaptionResult

TAU = 0.1
FINGERPRINT = {
    "id": "3f9a1c0d5e7b2a41",
    "scalecap_version": "0.1.0",
    "models": {
        "captioner": {"backend": "openai", "model": "Qwen/Qwen2.5-VL-7B-Instruct"},
        "scorer": {"backend": "openai", "model": "Qwen/Qwen2.5-VL-7B-Instruct"},
        "writer": {"backend": "openai", "model": "Qwen/Qwen2.5-7B-Instruct"},
    },
    "prompt_preset": "paper",
    "prompt_hash": "a1b2c3d4e5f60718",
    "score_mode": "prob",
    "tau": TAU,
    "budget": None,
    "tagger": "heuristic",
    "settings": {"score_mode": "prob", "tau": None, "budget": None},
}

HOSTILE = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "[click me](javascript:alert(1))",
    "</script><script>alert(2)</script>",
]


def sent(full: str, text: str, score, kept: bool, tokens=None, after: int = 0) -> dict:
    """A scored sentence of ``full``; offsets found by searching (from ``after``)."""
    start = full.index(text, after)
    d = {"text": text, "start": start, "end": start + len(text), "score": score, "kept": kept}
    if tokens is not None:
        d["tokens"] = tokens
    return d


def toks(sentence: dict, deltas: dict[str, float], content: set[str]) -> list[dict]:
    """Word-level tokens of a sentence (a leading space belongs to the token, as in BPE)."""
    out, pos = [], sentence["start"]
    text = sentence["text"]
    i = 0
    while i < len(text):
        j = i + 1 if text[i] == " " else i
        while j < len(text) and text[j] not in " ,.":
            j += 1
        if j == i:
            j = i + 1
        word = text[i:j]
        key = word.strip()
        out.append({"text": word, "start": pos + i, "end": pos + j, "delta": deltas.get(key, 0.003),
                    "content": key in content})
        i = j
    return out


def usage(**stages):
    return {k: {"calls": v[0], "prompt_tokens": v[1], "completion_tokens": v[2]} for k, v in stages.items()}


def _living_room(src: str) -> dict:
    first = ("The image shows a cozy living room with a large gray sofa against the wall. "
             "A flat-screen television is mounted above a wooden cabinet. "
             "There is a cat sleeping on the windowsill. "
             "Overall, it is nice. "
             "A tall green plant stands in the left corner.\n\n"
             "The room appears to be a family home in Paris.")
    s = [
        sent(first, "The image shows a cozy living room with a large gray sofa against the wall.", 0.4213, True),
        sent(first, "A flat-screen television is mounted above a wooden cabinet.", 0.3107, True),
        sent(first, "There is a cat sleeping on the windowsill.", 0.0412, False),
        sent(first, "Overall, it is nice.", None, False),
        sent(first, "A tall green plant stands in the left corner.", 0.1834, True),
        sent(first, "The room appears to be a family home in Paris.", 0.0731, False),
    ]
    s[1]["tokens"] = toks(s[1], {"television": 0.3107, "cabinet": 0.2011, "wooden": 0.0945, "mounted": 0.05},
                          {"flat-screen", "television", "mounted", "wooden", "cabinet"})
    s[2]["tokens"] = toks(s[2], {"cat": 0.0412, "sleeping": 0.0212, "windowsill": -0.0311},
                          {"cat", "sleeping", "windowsill"})
    ans_tv = "The television is black and thin. It shows a nature documentary. The brand is Samsung."
    ans_tv_pos = "The television hangs in the center of the wall, above the cabinet."
    ans_sofa = "The sofa is gray fabric with three cushions. It has a knitted blanket."
    ans_sofa_pos = "The sofa is in the foreground, facing the television."
    ans_plant = "It is a monstera in a white ceramic pot."
    ans_plant_pos = "The plant is in the far left corner next to the window."
    questions = [
        {"object": "sofa", "kind": "object", "instruction": "Describe more details about the sofa.",
         "answer": ans_sofa, "answer_sentences": [
             sent(ans_sofa, "The sofa is gray fabric with three cushions.", 0.2551, True),
             sent(ans_sofa, "It has a knitted blanket.", 0.0204, False)], "kept": True},
        {"object": "sofa", "kind": "position", "instruction": "Describe more details about the position of the sofa.",
         "answer": ans_sofa_pos, "answer_sentences": [
             sent(ans_sofa_pos, "The sofa is in the foreground, facing the television.", 0.1422, True)], "kept": True},
        {"object": "television", "kind": "object", "instruction": "Describe more details about the television.",
         "answer": ans_tv, "answer_sentences": [
             sent(ans_tv, "The television is black and thin.", 0.2988, True),
             sent(ans_tv, "It shows a nature documentary.", 0.1203, True),
             sent(ans_tv, "The brand is Samsung.", 0.0156, False)], "kept": True},
        {"object": "television", "kind": "position",
         "instruction": "Describe more details about the position of the television.",
         "answer": ans_tv_pos, "answer_sentences": [
             sent(ans_tv_pos, "The television hangs in the center of the wall, above the cabinet.", 0.2210, True)],
         "kept": True},
        {"object": "plant", "kind": "object", "instruction": "Describe more details about the plant.",
         "answer": ans_plant, "answer_sentences": [
             sent(ans_plant, "It is a monstera in a white ceramic pot.", 0.0893, False)], "kept": False},
        {"object": "plant", "kind": "position", "instruction": "Describe more details about the position of the plant.",
         "answer": ans_plant_pos, "answer_sentences": [
             sent(ans_plant_pos, "The plant is in the far left corner next to the window.", 0.0611, False)],
         "kept": False},
    ]
    return {
        "id": "coco_000139", "source": src, "status": "ok", "first_caption": first, "sentences": s,
        "questions": questions,
        "summaries": {"objects": "A gray three-cushion fabric sofa with a knitted blanket; a thin black "
                                 "television showing a nature documentary; a tall plant.",
                      "positions": "The sofa is in the foreground facing the television, which hangs "
                                   "centered on the wall above the cabinet."},
        "final_caption": ("A cozy living room: a large gray three-cushion sofa with a knitted blanket sits in the "
                          "foreground, facing a thin black flat-screen television mounted at the center of the wall "
                          "above a wooden cabinet. A tall green plant stands in the left corner."),
        "usage": usage(caption=[1, 1320, 88], caption_rating=[2, 2700, 0], instructions=[3, 1650, 96],
                       answers=[6, 8100, 240], answer_rating=[12, 16400, 0], object_summary=[1, 520, 60],
                       position_summary=[1, 300, 40], final=[1, 700, 110]),
        "notes": [], "meta": {"width": 640, "height": 427, "domain": "coco"},
        "fingerprint": FINGERPRINT,
        "timings": {"caption": 1.204, "caption_rating": 0.311, "instructions": 0.9, "answers": 2.75,
                    "answer_rating": 0.62, "object_summary": 0.8, "position_summary": 0.6, "final": 1.1,
                    "total": 8.3},
    }


def _hostile(src: str) -> dict:
    first = (f"A sign reads {HOSTILE[0]} in red letters. "
             f"Below it, a sticker says {HOSTILE[1]} and a QR code. "
             f"The poster links to {HOSTILE[2]}. "
             f"Someone wrote {HOSTILE[3]} on the wall\u2028with chalk & paint {{{{SCRIPT}}}}.")
    s = [
        sent(first, f"A sign reads {HOSTILE[0]} in red letters.", 0.5120, True),
        sent(first, f"Below it, a sticker says {HOSTILE[1]} and a QR code.", 0.0833, False),
        sent(first, f"The poster links to {HOSTILE[2]}.", 0.2222, True),
        sent(first, f"Someone wrote {HOSTILE[3]} on the wall\u2028with chalk & paint {{{{SCRIPT}}}}.", 0.1501, True),
    ]
    ans = f"The sign is hand-painted. It says {HOSTILE[1]}."
    return {
        "id": "web_<b>hostile</b>", "source": src, "status": "ok", "first_caption": first, "sentences": s,
        "questions": [{"object": "sign <i>x</i>", "kind": "object",
                       "instruction": "Describe more details about the sign <i>x</i>.", "answer": ans,
                       "answer_sentences": [sent(ans, "The sign is hand-painted.", 0.3011, True),
                                            sent(ans, f"It says {HOSTILE[1]}.", 0.0101, False)], "kept": True}],
        "summaries": {"objects": f"Sign: {HOSTILE[0]}", "positions": f"{HOSTILE[3]} top left"},
        "final_caption": f"Final: {HOSTILE[0]} {HOSTILE[1]} {HOSTILE[2]} {HOSTILE[3]}",
        "usage": usage(caption=[1, 1000, 50], caption_rating=[2, 2000, 0], final=[1, 500, 40]),
        "notes": [f"note {HOSTILE[1]}"], "meta": {"html": HOSTILE[0], "domain": "web"},
        "fingerprint": FINGERPRINT, "timings": {"total": 3.0},
    }


def _street_fallback(src: str) -> dict:
    first = "A blurry photo of a street at night. Some lights are visible."
    s = [sent(first, "A blurry photo of a street at night.", 0.0921, False),
         sent(first, "Some lights are visible.", 0.0502, False)]
    return {
        "id": "street_42", "source": src, "status": "ok", "first_caption": first, "sentences": s,
        "caption_fallback": True, "questions": [],
        "summaries": {"objects": None, "positions": None},
        "final_caption": "A blurry night-time street with a few visible lights.",
        "usage": usage(caption=[1, 1100, 20], caption_rating=[2, 2220, 0], final=[1, 300, 15]),
        "notes": ["no sentence of the first caption passed rating: the whole caption was used"],
        "meta": {}, "fingerprint": FINGERPRINT, "timings": {"total": 1.5},
    }


def _kitchen_remote() -> dict:
    first = "A modern kitchen with white cabinets. A bowl of lemons sits on the counter."
    s = [sent(first, "A modern kitchen with white cabinets.", 0.1911, True),
         sent(first, "A bowl of lemons sits on the counter.", 0.0999, False)]
    return {
        "id": "kitchen_remote", "source": "https://images.example.org/kitchen.jpg", "status": "ok",
        "first_caption": first, "sentences": s, "questions": [],
        "final_caption": "A bright modern kitchen with white cabinets.",
        "usage": usage(caption=[1, 1200, 30], caption_rating=[2, 2400, 0], final=[1, 280, 12]),
        "meta": {}, "fingerprint": FINGERPRINT, "timings": {"total": 1.1},
    }


def _failed_unreadable() -> dict:
    return {"id": "broken_7", "source": "images/broken_7.jpg", "status": "failed",
            "error": "cannot read images/broken_7.jpg: image file is truncated (38 bytes not processed)",
            "error_kind": "unreadable", "fingerprint": FINGERPRINT, "timings": {"total": 0.01}}


def _failed_model() -> dict:
    return {"id": "oom_3", "source": "images/oom_3.jpg", "status": "failed",
            "error": "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB", "error_kind": "model",
            "first_caption": "A crowded market", "usage": usage(caption=[1, 900, 5]),
            "fingerprint": FINGERPRINT, "timings": {"caption": 0.4, "total": 0.5}}


def _filtered(id_: str, reason: str, src: str) -> dict:
    return {"id": id_, "source": src, "status": "filtered", "meta": {"filter_reason": reason, "width": 24,
                                                                     "height": 24},
            "fingerprint": FINGERPRINT}


#: What the report must show for the crafted run (counted by hand from the dicts above).
EXPECTED = {
    "records": 8, "ok": 4, "failed": 2, "filtered": 2, "unreadable": 3,
    "failures_by_kind": {"unreadable": 1, "model": 1},
    "filtered_by_reason": {"too_small": 1, "duplicate": 1},
    # caption sentences: living room 6 (3 kept), hostile 4 (3 kept), street 2 (0), kitchen 2 (1)
    "sentences": 14, "sentences_kept": 7,
    # answer sentences: living room 2+1+3+1+1+1 = 9 (1+1+2+1 = 5 kept), hostile 2 (1 kept)
    "answer_sentences": 11, "answer_sentences_kept": 6,
    "questions": 7, "questions_kept": 5,
    "fallbacks": 1,
    "stages": {  # calls, prompt, completion
        "caption": (5, 1320 + 1000 + 1100 + 1200 + 900, 88 + 50 + 20 + 30 + 5),
        "caption_rating": (8, 2700 + 2000 + 2220 + 2400, 0),
        "instructions": (3, 1650, 96),
        "answers": (6, 8100, 240),
        "answer_rating": (12, 16400, 0),
        "object_summary": (1, 520, 60),
        "position_summary": (1, 300, 40),
        "final": (4, 700 + 500 + 300 + 280, 110 + 40 + 15 + 12),
    },
}
MALFORMED = [
    "{\"id\": \"half-written\", \"source\": \"x.jpg\", \"status\": \"ok\", \"sentences\": [",
    json.dumps({"id": "bad_status", "source": "y.jpg", "status": "exploded"}),
]
NOT_UTF8 = b"\xff\xfe{\"id\": \"latin1 \xe9\"}\n"


def make_image(path: Path, color: tuple[int, int, int], size=(320, 240), label: str = "") -> Path:
    img = Image.new("RGB", size, color)
    d = ImageDraw.Draw(img)
    w, h = size
    d.rectangle([w // 8, h // 2, w * 7 // 8, h * 7 // 8], fill=(120, 120, 130))
    d.ellipse([w // 2, h // 8, w * 3 // 4, h * 3 // 8], fill=(250, 220, 90))
    if label:
        d.text((8, 8), label, fill=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def write_run(folder: Path) -> Path:
    """The crafted run (with its images under ``folder/images``); returns the JSONL path."""
    images = folder / "images"
    make_image(images / "living_room.jpg", (200, 170, 140), label="living room")
    make_image(images / "sign.png", (230, 230, 240), size=(200, 300), label="sign")
    make_image(images / "street.jpg", (20, 20, 40), label="street")
    records = [
        _living_room(str(images / "living_room.jpg")),  # absolute path
        _hostile("images/sign.png"),  # relative to the run file
        _street_fallback("images/street.jpg"),
        _kitchen_remote(),
        _failed_unreadable(),
        _failed_model(),
        _filtered("icon_16", "too_small", "images/icon_16.png"),
        _filtered("dup_0139", "duplicate", "images/living_room.jpg"),
    ]
    for r in records:
        CaptionResult.model_validate(r)  # the crafted records are valid records
    run = folder / "run.jsonl"
    with open(run, "wb") as f:
        for i, r in enumerate(records):
            f.write(CaptionResult.model_validate(r).to_json().encode() + b"\n")
            if i == 2:
                f.write(MALFORMED[0].encode() + b"\n")
                f.write(b"\n")  # blank lines are not records and not errors
            if i == 5:
                f.write(NOT_UTF8)
        f.write(MALFORMED[1].encode() + b"\n")
    return run


def many_records(n: int, folder: Path) -> Path:
    """``n`` small varied records (for paging, search and the folder layout)."""
    img = make_image(folder / "images" / "shared.jpg", (90, 140, 200), label="shared")
    run = folder / "many.jsonl"
    with open(run, "w", encoding="utf-8") as f:
        for i in range(n):
            animal = ["zebra", "giraffe", "elephant", "lion"][i % 4]
            first = f"A {animal} stands in tall grass. The sky is clear and blue. A jeep is parked far away."
            scores = [0.05 + (i % 7) * 0.04, 0.02 + (i % 5) * 0.03, 0.08 + (i % 3) * 0.02]
            s = [sent(first, f"A {animal} stands in tall grass.", scores[0], scores[0] > TAU),
                 sent(first, "The sky is clear and blue.", scores[1], scores[1] > TAU),
                 sent(first, "A jeep is parked far away.", scores[2], scores[2] > TAU)]
            status = "failed" if i % 17 == 5 else "ok"
            rec = {"id": f"safari_{i:04d}", "source": str(img) if i % 3 else f"missing/{i}.jpg", "status": status,
                   "first_caption": first, "sentences": s,
                   "final_caption": f"A {animal} in tall grass under a clear blue sky." if status == "ok" else None,
                   "usage": usage(caption=[1, 1000 + i, 40], caption_rating=[2, 2000, 0]),
                   "fingerprint": FINGERPRINT, "timings": {"total": 1.0}}
            if status == "failed":
                rec.update(error="TimeoutError: server did not answer in 120 s", error_kind="model")
            f.write(CaptionResult.model_validate(rec).to_json() + "\n")
    return run


def filterable_run(folder: Path) -> Path:
    """Six records for the correction, domain, OCR and filter-hit filters (counts in comments).

    correction: changed = c_changed, c_both; rejected = c_rejected, c_both; ran, unchanged = c_rejected,
    c_same; not self-corrected = doc_page, plain. Domains: natural x3, infographic_document x1,
    (unknown) x1 (routed, no id), (none) x1. OCR: read = doc_page, c_same; unsupported = doc_page.
    Hits: refusal = c_changed; repetition = c_changed, doc_page; any = those two.
    """
    from scalecap.records import (Correction, CorrectionRound, DomainInfo, FilterHit, OcrEvidence, QuoteMark,
                                  SentenceDiff)

    def rnd(accepted: bool, caption: str) -> CorrectionRound:
        return CorrectionRound(input="A cat. A dragon.", output=caption, caption=caption, accepted=accepted)

    nat = DomainInfo(id="natural", source="declared")
    base = {"status": "ok", "first_caption": "A cat. A dragon.", "final_caption": "A cat. A dragon."}
    recs = [
        CaptionResult(id="c_changed", source="a.jpg", **base, domain=nat,
                      correction=Correction(rounds=[rnd(True, "A cat.")], caption="A cat.",
                                            diff=SentenceDiff(removed=["A dragon."], kept=["A cat."])),
                      filter_hits=[FilterHit(stage="final", code="refusal", detail="starts as a refusal"),
                                   FilterHit(stage="final", code="repetition", detail="loop")]),
        CaptionResult(id="c_rejected", source="b.jpg", **base, domain=nat,
                      correction=Correction(rounds=[rnd(False, "A cat. A dragon.")], caption="A cat. A dragon.",
                                            diff=SentenceDiff(kept=["A cat.", "A dragon."], rejected=["A crown."]))),
        CaptionResult(id="c_both", source="c.jpg", **base, domain=nat,
                      correction=Correction(rounds=[rnd(True, "A cat. A mug."), rnd(False, "A cat. A mug.")],
                                            caption="A cat. A mug.",
                                            diff=SentenceDiff(added=["A mug."], removed=["A dragon."], kept=["A cat."]))),
        CaptionResult(id="c_same", source="d.jpg", **base, domain=DomainInfo(id=None, source="routed", raw="?"),
                      ocr=OcrEvidence(engine="tesseract:eng", text="no quotes here"),
                      correction=Correction(rounds=[rnd(True, "A cat. A dragon.")], caption="A cat. A dragon.",
                                            diff=SentenceDiff(kept=["A cat.", "A dragon."]))),
        CaptionResult(id="doc_page", source="page.png", **base,
                      domain=DomainInfo(id="infographic_document", source="routed", confidence=3),
                      ocr=OcrEvidence(engine="tesseract:eng", text="markers of the coins", quotes=[
                          QuoteMark(sentence='It reads "Springer".', quote="Springer", similarity=0.3, supported=False)]),
                      filter_hits=[FilterHit(stage="final", code="repetition", detail="loop")]),
        CaptionResult(id="plain", source="e.jpg", **base),
    ]
    run = folder / "filterable.jsonl"
    run.write_text("".join(r.to_json() + "\n" for r in recs), encoding="utf-8")
    return run
