"""The result record: one per image, a full trace of how its caption came to be.

One type travels from the pipeline to every sink, exporter, evaluator and the report. Everything
except ``timings`` is a pure function of the inputs and settings, so two runs give byte-identical
records once ``timings`` is set aside (see ``CaptionResult.stable_json``).

Records outlive the version that wrote them, so the schema is versioned (``schema_version``, see
``SCHEMA_VERSION``) and reading is lenient in the two ways a schema changes: a field this version
does not know (one a later version added, or one an earlier version had and this one dropped) is
tolerated and kept (``extra="allow"``: it is in ``model_extra`` and is written back out as read), and
a field the record lacks takes its default. A field may be added or dropped only with a default,
and every such change bumps ``SCHEMA_VERSION``.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

#: ``rejected``: the judge post-filter (``judge.py``) scored the caption below its thresholds; the
#: record keeps everything (resume skips it, exports skip it, a new threshold can re-decide it).
Status = Literal["ok", "failed", "filtered", "rejected"]

#: The record schema this version writes. 1: records before the field existed (they have none, and
#: read as 1); 2: ``schema_version`` added. Bump on every added, dropped or re-meant field.
SCHEMA_VERSION = 2
#: The version of a stored record without a ``schema_version`` field.
UNVERSIONED = 1


class _Record(BaseModel):
    # records are read from files other versions wrote: unknown fields are kept, not refused
    model_config = ConfigDict(extra="allow")


class TokenDetail(_Record):
    """One scored token (stored only when the run asks for token-level traces)."""

    text: str
    start: int
    end: int
    delta: float
    content: bool


class ScoredSentence(_Record):
    """A sentence of a rated text; ``start``/``end`` are character offsets into that text."""

    text: str
    start: int
    end: int
    score: float | None  # None: the sentence has no content word to score
    kept: bool
    tokens: list[TokenDetail] | None = None


class FilterHit(_Record):
    """One finding of the degenerate-output filter (``screen.py``): where, which check (``code``, see
    ``text.degenerate.CODES``), the numbers behind it, and what was done (mark, drop, retry).
    An answer's hits are in its ``Question``; ``retry`` marks a hit of the retried text."""

    stage: str
    code: str
    detail: str
    value: float | None = None
    threshold: float | None = None
    action: Literal["mark", "drop", "retry"] = "mark"
    retry: bool = False


class Question(_Record):
    """One question and its rated answer: about an object (``object``), its position (``position``),
    or, for a domain with question families, the whole image (``family``: ``object`` is the family's
    name, e.g. ``reading_order``, and ``instruction`` the domain's ``family_<name>.txt``)."""

    object: str
    kind: Literal["object", "position", "family"]
    instruction: str
    answer: str | None = None
    answer_sentences: list[ScoredSentence] = Field(default_factory=list)
    kept: bool = False
    truncated: bool = False  # the answer stopped at max_tokens_answer (finish_reason "length")
    # the with-image rating's values: "teacher_forced" (a scoring pass) or "generation" (reused)
    scored_from: str | None = None
    filter_hits: list[FilterHit] = Field(default_factory=list)  # the degenerate-output filter on the answer


class Summaries(_Record):
    objects: str | None = None
    positions: str | None = None


class SentenceDiff(_Record):
    """What a correction changed, sentence by sentence (compared after whitespace and case folding).

    ``added``/``kept`` are sentences of the corrected caption new to / already in the caption it
    corrected, ``removed`` those of that caption it no longer has, ``rejected`` the sentences the
    captioner wrote that failed rating and so never reached the corrected caption."""

    added: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)
    kept: list[str] = Field(default_factory=list)
    rejected: list[str] = Field(default_factory=list)


class CorrectionRound(_Record):
    """One self-correction turn: what the captioner wrote, how each sentence rated, what stayed."""

    input: str  # the caption this round re-checked
    output: str  # the captioner's reply, as written
    sentences: list[ScoredSentence] = Field(default_factory=list)  # of ``output``, rated like the first caption
    caption: str  # the rated sentences that passed, in order; ``input`` if none did (see ``accepted``)
    accepted: bool  # False: the reply was empty or no sentence passed rating, and the caption stayed as it was
    truncated: bool = False  # the reply stopped at max_tokens_correction
    diff: SentenceDiff = Field(default_factory=SentenceDiff)


class Correction(_Record):
    """The self-correction stage: its rounds, the corrected caption, the diff against the final caption."""

    rounds: list[CorrectionRound] = Field(default_factory=list)
    caption: str | None = None
    diff: SentenceDiff = Field(default_factory=SentenceDiff)


class Wave(_Record):
    """One wave of an adaptive budget: the objects asked, and what their kept answers added."""

    objects: list[str]
    words: list[str]  # distinct content words of the wave's kept answer sentences, in first-seen order
    new_words: list[str]  # those not known before the wave (golden sentences, earlier kept answers)
    novelty: float  # len(new_words) / len(words); 0 when no answer of the wave was kept


class AdaptiveBudget(_Record):
    """Why an adaptive budget stopped where it did, with the numbers behind it."""

    wave_size: int
    threshold: float
    max_objects: int | None  # MAX of ``auto:MAX``; None = all
    planned: int  # objects a fixed budget N = MAX would have asked about
    asked: int
    saved: int  # planned - asked (each object is two questions: the object and its position)
    stop: Literal["novelty", "max", "exhausted"]
    waves: list[Wave] = Field(default_factory=list)


class QuoteMark(_Record):
    """A quote in the final caption checked against the OCR text (``text.quotes``)."""

    sentence: str
    quote: str
    similarity: float
    supported: bool
    dropped: bool = False


class OcrEvidence(_Record):
    """What OCR read in the image (given to the writer as evidence) and the quote check of the final caption."""

    engine: str
    text: str
    quotes: list[QuoteMark] = Field(default_factory=list)


class DomainInfo(_Record):
    """The image's domain (``domains.py``): declared in the data or by the run, or routed by a model.
    ``id`` None: the router's reply named no domain (unconstrained router only; ``raw`` holds it), or
    the data declared a label that is no known domain (``raw`` holds it; the run's preset is used)."""

    id: str | None
    source: Literal["declared", "routed"]
    confidence: int | None = None  # routed: 1 (unsure) to 3 (certain)
    raw: str | None = None  # an unconstrained router's reply


class JudgeScore(_Record):
    """One of the judge's dimensions (CapFlow's five): a score from 1 (poor) to 3 (good) and why."""

    dimension: str
    score: int = Field(ge=1, le=3)
    reason: str


class JudgeVerdict(_Record):
    """The judge post-filter (``judge.py``) on the final caption: five scores with reasons, the
    thresholds they met or missed, and whether the caption is kept (status ``ok``) or ``rejected``."""

    scores: list[JudgeScore]
    thresholds: dict[str, int]  # dimension -> the lowest score kept
    below: list[str] = Field(default_factory=list)  # dimensions under their threshold
    kept: bool
    raw: str | None = None  # an unconstrained judge's reply (kept to audit the parse)


class StageUsage(_Record):
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    truncated: int = 0  # generation calls that stopped at their token limit (finish_reason "length")
    reused: int = 0  # with-image ratings that reused their generation's log-probs (no model call)

    def add(self, prompt_tokens: int, completion_tokens: int = 0, truncated: bool = False) -> None:
        self.calls += 1
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.truncated += int(truncated)


class Fingerprint(_Record):
    """What produced a record: models, prompts, thresholds, tagger, version.

    ``id`` is a short hash of everything else; a run refuses to append records with another id to
    an existing output unless told to.
    """

    id: str
    scalecap_version: str
    models: dict[str, dict[str, Any]]
    prompt_preset: str
    prompt_hash: str
    score_mode: str
    tau: float
    budget: int | None
    tagger: str
    settings: dict[str, Any]


class CaptionResult(_Record):
    schema_version: int = SCHEMA_VERSION  # of the format this record was written in (read: as stored)
    id: str
    source: str
    status: Status
    error: str | None = None
    error_kind: str | None = None
    first_caption: str | None = None
    sentences: list[ScoredSentence] = Field(default_factory=list)
    caption_fallback: bool = False  # no sentence survived rating: the whole first caption was used
    questions: list[Question] = Field(default_factory=list)
    summaries: Summaries = Field(default_factory=Summaries)
    final_caption: str | None = None
    correction: Correction | None = None  # --self-correct: the re-checked caption and how it came to be
    adaptive_budget: AdaptiveBudget | None = None  # --budget auto: the waves and why they stopped
    domain: DomainInfo | None = None  # declared or routed domain (--domain, a domain column, --route auto)
    filter_hits: list[FilterHit] = Field(default_factory=list)  # the degenerate-output filter's findings
    ocr: OcrEvidence | None = None  # --ocr: the text read in the image and the quotes checked against it
    judge: JudgeVerdict | None = None  # --judge: the post-filter's scores; status "rejected" when not kept
    usage: dict[str, StageUsage] = Field(default_factory=dict)
    skipped: dict[str, str] = Field(default_factory=dict)  # stage -> why it made no model call
    notes: list[str] = Field(default_factory=list)
    meta: dict[str, Any] = Field(default_factory=dict)
    fingerprint: Fingerprint | None = None
    timings: dict[str, float] = Field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def corrected_caption(self) -> str | None:
        """The self-corrected caption (None when the run did not self-correct)."""
        return self.correction.caption if self.correction is not None else None

    @property
    def golden_sentences(self) -> list[str]:
        """The kept sentences; in the fallback case every sentence (the whole caption), as the pipeline used them."""
        if self.caption_fallback:
            return [s.text for s in self.sentences]
        return [s.text for s in self.sentences if s.kept]

    def to_json(self) -> str:
        """One JSONL line (no newline); keys in declaration order, so output is stable."""
        return self.model_dump_json()

    def stable_json(self) -> str:
        """The record without timings: byte-identical between two runs of the same inputs."""
        return json.dumps(self.model_dump(mode="json", exclude={"timings"}), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, line: str | bytes) -> "CaptionResult":
        """A stored record (one JSONL line), of this schema version or an older one."""
        return cls.from_dict(json.loads(line))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CaptionResult":
        """A stored record as a dict; one without ``schema_version`` was written before the field
        existed, so it reads as version 1 (not as this version, the default of a new record)."""
        if isinstance(data, dict) and "schema_version" not in data:
            data = {"schema_version": UNVERSIONED, **data}
        return cls.model_validate(data)


# ---------------------------------------------------------------------------------------- the record boundary
#: Lone surrogates: what a non-UTF-8 file name decodes to (``surrogateescape``), or a ``\\udXXX`` JSON
#: escape that names no character. Valid ``str`` in Python, not encodable as UTF-8.
_SURROGATE = re.compile("[\ud800-\udfff]")

#: The note a record carries when some of its text had to be escaped (see ``serialisable``).
ESCAPED_NOTE = ("some text of this record was not valid Unicode (a non-UTF-8 name or a lone \\udXXX escape); "
                "it is written with \\xNN (an undecodable byte) or \\uXXXX escapes")


def has_surrogates(text: str) -> bool:
    return _SURROGATE.search(text) is not None


def _escape_char(m: re.Match) -> str:
    c = ord(m.group())
    return f"\\x{c - 0xdc00:02x}" if 0xdc80 <= c <= 0xdcff else f"\\u{c:04x}"


def escape_surrogates(text: str) -> str:
    """``text`` with each lone surrogate written as ``\\xNN`` (the undecodable byte of a file name)
    or ``\\uXXXX``: always encodable, and the same string every time (ids stay stable)."""
    return _SURROGATE.sub(_escape_char, text) if _SURROGATE.search(text) else text


def _escape_tree(value: Any) -> Any:
    if isinstance(value, str):
        return escape_surrogates(value)
    if isinstance(value, dict):
        return {_escape_tree(k): _escape_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_escape_tree(v) for v in value]
    return value


def serialisable(record: CaptionResult) -> CaptionResult:
    """``record`` if it serialises, else a copy with its lone surrogates escaped and a note saying so.

    Called on every record before it is written: a record that cannot be written after the models
    ran would end the run (and every resume, at the same item) instead of being one line.
    """
    try:
        record.to_json()
        return record
    except ValueError:  # pydantic's PydanticSerializationError: 'surrogates not allowed'
        clean = CaptionResult.model_validate(_escape_tree(record.model_dump()))
        clean.notes.append(ESCAPED_NOTE)
        return clean


def error_line(exc: BaseException, limit: int = 500) -> str:
    """An exception as one line of at most ``limit`` characters (the ``error`` of a failed record)."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[:limit - 1] + "…"
