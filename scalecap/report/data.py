"""Reading a run and turning its records into what the report page needs.

A run is a JSONL file of ``CaptionResult`` lines. Reading is tolerant: a line that is not JSON, not
UTF-8 or not a valid record becomes an ``UnreadableLine`` (counted and listed in the report) and
the rest is still rendered. Records are processed one at a time (``Collector.add``) so that a
50,000-record run never sits in memory as objects: only compact per-image columns, the sentence
scores (for the page's tau control) and the statistics are kept.
"""

from __future__ import annotations

import math
import re
from array import array
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..eval.common import UNKNOWN_DOMAIN
from ..records import CaptionResult, FilterHit, ScoredSentence

STATUS_CODES = {"ok": 0, "failed": 1, "filtered": 2, "rejected": 3}
# Bits of the per-image ``corr`` column (the page's correction filter).
CORR_RAN, CORR_CHANGED, CORR_REJECTED = 1, 2, 4
# Values of the per-image ``ocr`` column: no OCR, OCR with every quote found, a quote not in the OCR.
OCR_NONE, OCR_READ, OCR_UNSUPPORTED = 0, 1, 2
_WS = re.compile(r"\s+")


@dataclass(frozen=True)
class UnreadableLine:
    line: int  # 1-based line number in the JSONL file
    error: str
    excerpt: str


def count_lines(path: Path) -> int:
    """Non-blank lines: an upper bound on the number of records (cheap, used to pick the mode)."""
    n = 0
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                n += 1
    return n


def _validation_message(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    if not errors:
        return str(exc)
    first = errors[0]
    loc = ".".join(str(x) for x in first.get("loc", ())) or "(record)"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    if first.get("type") == "json_invalid":
        return f"not valid JSON: {first.get('msg', '')}{more}"
    return f"{loc}: {first.get('msg', '')}{more}"


def iter_run(path: Path) -> Iterator[tuple[int, CaptionResult | UnreadableLine]]:
    """(line number, record or unreadable line) for every non-blank line of a run JSONL."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield lineno, UnreadableLine(lineno, f"not UTF-8: {exc.reason} at byte {exc.start}",
                                             raw[:160].decode("utf-8", "replace"))
                continue
            excerpt = text.strip()[:160]
            try:
                yield lineno, CaptionResult.from_json(text)
            except ValidationError as exc:
                yield lineno, UnreadableLine(lineno, _validation_message(exc), excerpt)
            except ValueError as exc:  # pragma: no cover - pydantic wraps JSON errors already
                yield lineno, UnreadableLine(lineno, f"not valid JSON: {exc}", excerpt)


def finite(x: Any) -> float | None:
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def round_sig(x: float | None, digits: int = 4) -> float | None:
    v = finite(x)
    if v is None:
        return None
    return float(f"{v:.{digits}g}")


def quantize_score(score: float | None, tau: float | None) -> float | None:
    """Round a score for the page (4 significant digits) without moving it across the run's tau.

    The page re-applies tau from these numbers; at the run's own tau it must reproduce the stored
    decisions exactly, so a rounding that would change ``score > tau`` takes more digits.
    """
    v = finite(score)
    if v is None:
        return None
    q = float(f"{v:.4g}")
    if tau is None or (q > tau) == (v > tau):
        return q
    for digits in (6, 9, 12):
        q = float(f"{v:.{digits}g}")
        if (q > tau) == (v > tau):
            return q
    return v


def sanitize(obj: Any, depth: int = 0) -> Any:
    """Plain JSON values only (no NaN/inf, no exotic types), for user-supplied ``meta``."""
    if depth > 20:
        return str(obj)
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): sanitize(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [sanitize(v, depth + 1) for v in obj]
    return str(obj)


def _offsets_valid(text: str | None, sentences: list[ScoredSentence]) -> bool:
    if text is None:
        return not sentences
    prev = 0
    for s in sentences:
        if not (prev <= s.start <= s.end <= len(text)) or text[s.start:s.end] != s.text:
            return False
        prev = s.end
    return True


def compact_sentences(text: str | None, sentences: list[ScoredSentence], tau: float | None) -> tuple[list[dict], bool]:
    """Sentences as the page reads them: a/b offsets, s score, k kept, tok tokens [text, delta, content].

    When the offsets do not reproduce the sentence texts, the text itself travels (``t``) and the page
    lists the sentences instead of marking them inside the caption (second value False).
    """
    valid = _offsets_valid(text, sentences)
    out = []
    for s in sentences:
        d: dict[str, Any] = {"a": s.start, "b": s.end, "s": quantize_score(s.score, tau), "k": 1 if s.kept else 0}
        if not valid:
            d["t"] = s.text
        if s.tokens:
            d["tok"] = [[t.text, round_sig(t.delta), 1 if t.content else 0] for t in s.tokens]
        out.append(d)
    return out, valid


@dataclass
class Collector:
    """Accumulates columns, scores and statistics over the records of a run, one at a time."""

    n: int = 0
    ids: list[str] = field(default_factory=list)
    status: array = field(default_factory=lambda: array("b"))
    reason: array = field(default_factory=lambda: array("l"))
    ratio: list[float | None] = field(default_factory=list)
    words: array = field(default_factory=lambda: array("q"))
    tokens: array = field(default_factory=lambda: array("q"))
    fp: array = field(default_factory=lambda: array("l"))
    nsent: array = field(default_factory=lambda: array("l"))
    nkept: array = field(default_factory=lambda: array("l"))
    reasons: list[str] = field(default_factory=list)
    _reason_ix: dict[str, int] = field(default_factory=dict)
    # filter columns: correction bits, domain (index into ``domains``, -1 none), OCR state, and the
    # degenerate-output filter's codes (indices into ``hit_codes``, each once, per image)
    corr: array = field(default_factory=lambda: array("b"))
    dom: array = field(default_factory=lambda: array("l"))
    domains: list[str] = field(default_factory=list)
    _dom_ix: dict[str, int] = field(default_factory=dict)
    ocr: array = field(default_factory=lambda: array("b"))
    hits: list[list[int]] = field(default_factory=list)
    hit_codes: list[str] = field(default_factory=list)
    _hit_ix: dict[str, int] = field(default_factory=dict)
    # sentence scores, flat, for the tau control (NaN = no score)
    cap_off: array = field(default_factory=lambda: array("q", [0]))
    cap_s: array = field(default_factory=lambda: array("d"))
    cap_k: bytearray = field(default_factory=bytearray)
    ans_off: array = field(default_factory=lambda: array("q", [0]))
    ans_s: array = field(default_factory=lambda: array("d"))
    ans_k: bytearray = field(default_factory=bytearray)
    ans_q: array = field(default_factory=lambda: array("l"))
    # statistics
    counts: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)
    filtered: Counter = field(default_factory=Counter)
    stages: dict[str, list[int]] = field(default_factory=dict)
    timings: dict[str, list[float]] = field(default_factory=dict)
    fingerprints: list[dict[str, Any]] = field(default_factory=list)
    _fp_ix: dict[str, int] = field(default_factory=dict)
    scores_by_mode: dict[str, array] = field(default_factory=dict)
    sentences: int = 0
    sentences_kept: int = 0
    sentences_unscored: int = 0
    answer_sentences: int = 0
    answer_sentences_kept: int = 0
    questions: int = 0
    questions_kept: int = 0
    fallbacks: int = 0
    token_records: int = 0
    unreadable: list[UnreadableLine] = field(default_factory=list)

    def _reason(self, name: str) -> int:
        ix = self._reason_ix.get(name)
        if ix is None:
            ix = self._reason_ix[name] = len(self.reasons)
            self.reasons.append(name)
        return ix

    @staticmethod
    def _label(name: str, names: list[str], ix: dict[str, int]) -> int:
        k = ix.get(name)
        if k is None:
            k = ix[name] = len(names)
            names.append(name)
        return k

    def _filter_columns(self, rec: CaptionResult, hits: list[FilterHit]) -> None:
        """The per-image values the page filters on without loading the record (folder layout)."""
        bits = 0
        if rec.correction is not None:
            c = rec.correction
            bits = CORR_RAN
            if c.diff.added or c.diff.removed:
                bits |= CORR_CHANGED
            if any(not r.accepted for r in c.rounds):
                bits |= CORR_REJECTED
        self.corr.append(bits)
        if rec.domain is None:
            self.dom.append(-1)
        else:
            # the labels ``scalecap eval`` groups by (``eval.common.domain_label``)
            self.dom.append(self._label(rec.domain.id or UNKNOWN_DOMAIN, self.domains, self._dom_ix))
        if rec.ocr is None:
            self.ocr.append(OCR_NONE)
        else:
            self.ocr.append(OCR_UNSUPPORTED if any(not q.supported for q in rec.ocr.quotes) else OCR_READ)
        self.hits.append(sorted({self._label(h.code, self.hit_codes, self._hit_ix) for h in hits}))

    def _fingerprint(self, rec: CaptionResult) -> tuple[int, str | None, float | None]:
        fpr = rec.fingerprint
        if fpr is None:
            return -1, None, None
        ix = self._fp_ix.get(fpr.id)
        if ix is None:
            ix = self._fp_ix[fpr.id] = len(self.fingerprints)
            models = {role: str(m.get("model", m.get("name", "?"))) if isinstance(m, dict) else str(m)
                      for role, m in fpr.models.items()}
            self.fingerprints.append({
                "id": fpr.id, "score_mode": fpr.score_mode, "tau": finite(fpr.tau), "budget": fpr.budget,
                "tagger": fpr.tagger, "models": models, "prompt_preset": fpr.prompt_preset,
                "version": fpr.scalecap_version, "count": 0,
            })
        self.fingerprints[ix]["count"] += 1
        return ix, fpr.score_mode, finite(fpr.tau)

    def add(self, rec: CaptionResult) -> dict[str, Any]:
        """Take one record into the columns and statistics; return its compact form for the page."""
        seq = self.n
        self.n += 1
        self.counts[rec.status] += 1
        fp_ix, mode, tau = self._fingerprint(rec)

        reason = -1
        if rec.status == "failed":
            kind = rec.error_kind or "unknown"
            self.failures[kind] += 1
            reason = self._reason(kind)
        elif rec.status == "filtered":
            why = rec.meta.get("filter_reason")
            why = str(why) if why not in (None, "") else "unspecified"
            self.filtered[why] += 1
            reason = self._reason(why)

        # --- sentences of the first caption
        sents, seg_ok = compact_sentences(rec.first_caption, rec.sentences, tau)
        kept = sum(1 for s in rec.sentences if s.kept)
        self.sentences += len(rec.sentences)
        self.sentences_kept += kept
        has_tokens = any(s.tokens for s in rec.sentences)
        by_mode = self.scores_by_mode.setdefault(mode or "unknown", array("d"))
        for s, c in zip(rec.sentences, sents):
            q = c["s"]
            self.cap_s.append(math.nan if q is None else q)
            self.cap_k.append(c["k"])
            if q is None:
                self.sentences_unscored += 1
            else:
                by_mode.append(q)
        self.cap_off.append(len(self.cap_s))
        if rec.caption_fallback:
            self.fallbacks += 1

        # --- questions and their rated answers
        questions = []
        for qi, qn in enumerate(rec.questions):
            asents, aseg_ok = compact_sentences(qn.answer, qn.answer_sentences, tau)
            has_tokens = has_tokens or any(s.tokens for s in qn.answer_sentences)
            for c in asents:
                q = c["s"]
                self.ans_s.append(math.nan if q is None else q)
                self.ans_k.append(c["k"])
                self.ans_q.append(qi)
            self.answer_sentences += len(asents)
            self.answer_sentences_kept += sum(c["k"] for c in asents)
            self.questions += 1
            self.questions_kept += 1 if qn.kept else 0
            qd: dict[str, Any] = {"o": qn.object, "kd": qn.kind, "i": qn.instruction, "a": qn.answer,
                                  "as": asents, "k": 1 if qn.kept else 0}
            if not aseg_ok:
                qd["seg"] = 0
            questions.append(qd)
        self.ans_off.append(len(self.ans_s))
        if has_tokens:
            self.token_records += 1

        # --- usage and timings
        total_tokens = 0
        usage = {}
        for stage, u in rec.usage.items():
            acc = self.stages.setdefault(stage, [0, 0, 0])
            acc[0] += u.calls
            acc[1] += u.prompt_tokens
            acc[2] += u.completion_tokens
            total_tokens += u.prompt_tokens + u.completion_tokens
            usage[stage] = [u.calls, u.prompt_tokens, u.completion_tokens]
        timings = {}
        for stage, sec in rec.timings.items():
            v = finite(sec)
            if v is None:
                continue
            timings[stage] = round(v, 4)
            acc2 = self.timings.setdefault(stage, [0.0, 0])
            acc2[0] += v
            acc2[1] += 1

        n_words = len(rec.final_caption.split()) if rec.final_caption else 0
        self.ids.append(rec.id)
        self.status.append(STATUS_CODES[rec.status])
        self.reason.append(reason)
        self.ratio.append(round(kept / len(rec.sentences), 4) if rec.sentences else None)
        self.words.append(n_words)
        self.tokens.append(total_tokens)
        self.fp.append(fp_ix)
        self.nsent.append(len(rec.sentences))
        self.nkept.append(kept)

        d: dict[str, Any] = {"seq": seq, "id": rec.id, "src": rec.source, "st": rec.status}
        if rec.error is not None or rec.error_kind is not None:
            d["err"] = rec.error
            d["ek"] = rec.error_kind
        if rec.status == "filtered":
            d["why"] = self.reasons[reason]
        d["first"] = rec.first_caption
        d["sent"] = sents
        if not seg_ok:
            d["seg"] = 0
        if rec.caption_fallback:
            d["fb"] = 1
        d["q"] = questions
        d["so"] = rec.summaries.objects
        d["sp"] = rec.summaries.positions
        d["final"] = rec.final_caption
        if rec.correction is not None:
            c = rec.correction
            d["corr"] = {"c": c.caption, "add": list(c.diff.added), "rm": list(c.diff.removed),
                         "rej": list(c.diff.rejected), "n": len(c.rounds),
                         "na": sum(1 for r in c.rounds if not r.accepted)}
        if rec.adaptive_budget is not None:
            b = rec.adaptive_budget
            d["ab"] = {"stop": b.stop, "asked": b.asked, "planned": b.planned, "nov": [w.novelty for w in b.waves]}
        if rec.domain is not None:
            d["dom"] = {"id": rec.domain.id, "src": rec.domain.source, "conf": rec.domain.confidence}
        if rec.judge is not None:
            d["judge"] = {"kept": rec.judge.kept, "below": list(rec.judge.below),
                          "s": [{"d": j.dimension, "v": j.score, "r": j.reason,
                                 "min": rec.judge.thresholds.get(j.dimension)} for j in rec.judge.scores]}
        if rec.ocr is not None:
            d["ocr"] = {"eng": rec.ocr.engine, "text": rec.ocr.text,
                        "q": [{"q": q.quote, "ok": q.supported, "sim": q.similarity, "drop": q.dropped}
                              for q in rec.ocr.quotes]}
        hits = [h for h in rec.filter_hits] + [h for q in rec.questions for h in q.filter_hits]
        self._filter_columns(rec, hits)
        if hits:
            d["fh"] = [{"st": h.stage, "c": h.code, "a": h.action, "d": h.detail} for h in hits]
        d["use"] = usage
        d["tim"] = timings
        d["notes"] = list(rec.notes)
        d["meta"] = sanitize(rec.meta)
        d["fp"] = fp_ix
        return d

    def search_text(self, rec: CaptionResult) -> str:
        """What the page's text search looks in: ids, source, the captions, objects, errors, tags.

        Lower-cased, and each whitespace-separated word kept once (first-seen order): the page
        matches every query word as a substring of one word, so repeats add size and nothing else.
        """
        parts = [rec.id, rec.source, rec.first_caption or "", rec.final_caption or "", rec.corrected_caption or "",
                 rec.error or "", rec.error_kind or "", str(rec.meta.get("filter_reason") or "")]
        # Tags to filter on: what a self-correction changed, why an adaptive budget stopped.
        if rec.correction is not None:
            diff = rec.correction.diff
            parts += ["corrected"] + [f"corrected:{k}" for k in ("added", "removed", "rejected") if getattr(diff, k)]
        if rec.adaptive_budget is not None:
            parts.append(f"budget:{rec.adaptive_budget.stop}")
        # Domains, OCR quote checks and degenerate-output hits (docs/domains.md).
        if rec.domain is not None and rec.domain.id:
            parts += [f"domain:{rec.domain.id}", f"domain:{rec.domain.source}"]
        if rec.ocr is not None:
            parts.append("ocr")
            parts += ["ocr:unsupported"] if any(not q.supported for q in rec.ocr.quotes) else []
        for h in [*rec.filter_hits, *(h for q in rec.questions for h in q.filter_hits)]:
            parts += ["filter", f"filter:{h.code}"]
        parts.extend(q.object for q in rec.questions if q.kind == "object")
        words = _WS.split(" ".join(parts).lower())
        return " ".join(dict.fromkeys(w for w in words if w))
