"""The ScaleCap pipeline (METHOD.md section 3), one image at a time, asynchronous.

    caption -> rate -> ask -> answer -> rate -> summarise -> integrate

A captioner (vision model) writes a first caption; contrastive rating keeps the sentences the image
supports (the *golden sentences*); a writer (text LLM) turns them into short questions about each
object and its position; the captioner answers, the answers are rated the same way; the writer
summarises objects and positions and merges everything into the final caption. The budget N caps
the number of object questions. A domain may add question families (``domains.py``): one question
each about the whole image, answered and rated the same way; their kept sentences join the object
summary's input. They do not count against N (N stays the paper's cap on objects); N = 0 asks none.

Beyond the paper, two optional rooms (each its own module, chosen by settings): an adaptive budget
that asks in waves and stops when answers add nothing new (``budget.py``), and a self-correction
turn whose corrections are rated like everything else (``correction.py``). Around the steps: the
image's domain picks its prompts (``domains.py``), OCR gives the writer the image's text and checks
the caption's quotes (``evidence.py``), every generated text is screened for degenerate output
(``screen.py``), and an opt-in judge rejects captions it scores below its thresholds (``judge.py``).

This module knows the backend *protocol* only, never a concrete backend, and nothing of files,
shards or clusters: ``Engine`` keeps many images in flight, ``scalecap.io`` reads and writes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any

from ._sync import run_sync
from .backends import Backend, ChatPrompt, Generation, GenerationParams, ImageRef
from .backends.base import CapabilityError
from .budget import budget_for, content_words
from .config import Settings, fingerprint_fields, stable_hash
from .context import ContextGuard, ContextOverflow
from .correction import self_correct
from .images import ImageError, ImageItem, ImageLike, as_item, image_ref
from .prompts import PromptSet, load_preset
from .rating import RatedText, rate_text
from .roles import backend_name, bind_roles, check_roles, writer_window
from .records import CaptionResult, Correction, FilterHit, Fingerprint, Question, Summaries
from .screen import Screen
from .evidence import OcrTool
from .judge import Judge
from .domains import Presets, Router, load_domains
from .stages import STAGES, StageFailure, Trace, retrieve_exception, both, timed
from .text.content import load_tagger
from .text.tagging import TaggingPool
from .text.instructions import (OBJECT_TEMPLATE, POSITION_TEMPLATE, first_sentence_of, instruction_regex,
                                object_key, parse_instructions, plan_objects)

log = logging.getLogger(__name__)
_Trace = Trace  # the name older callers import


class ScaleCap:
    """Caption images with ScaleCap.

    ``model`` binds one model to all three roles; ``captioner``, ``scorer`` and ``writer`` override
    it per role. The scorer defaults to the captioner (METHOD section 2: rate with the model and
    resolution that wrote the text); a different scorer is allowed, warned about once and recorded
    in the fingerprint. Each may be a hub id or local path (loaded in-process with transformers), a
    ``ModelConfig`` (any backend), or an already opened ``Backend``. Settings come as a ``Settings``
    or as keyword arguments (``budget=20, score_mode="prob", tau=0.1`` ...).
    """

    def __init__(self, model: Any = None, *, captioner: Any = None, scorer: Any = None, writer: Any = None,
                 router: Any = None, judge: Any = None, settings: Settings | None = None, tagger_workers: int | None = None, **overrides: Any) -> None:
        base = settings or Settings()
        self.settings = Settings.model_validate({**base.model_dump(), **overrides}) if overrides else base
        routed = self.settings.route == "auto" or router is not None
        judged = self.settings.judge_filter
        if judge is not None and not judged:
            raise ValueError("judge= binds the judge model; turn the post-filter on with judge_filter=True (--judge)")
        self.backends = bind_roles(model, captioner=captioner, scorer=scorer, writer=writer,
                                    **({"router": router} if routed else {}), **({"judge": judge} if judged else {}))
        self.captioner, self.scorer, self.writer = (self.backends[r] for r in ("captioner", "scorer", "writer"))
        self.prompts: PromptSet = load_preset(self.settings.preset)
        if self.settings.self_correct and self.prompts.correct is None:
            raise ValueError(f"prompt preset {self.prompts.name!r} lacks correct.txt, which self-correction needs")
        self.tagger = load_tagger(self.settings.tagger)
        # POS tagging runs beside the scoring passes, batched across images on worker processes
        # (``tagger_workers``; it does not change results, so it is not a setting).
        self._tagging = TaggingPool(self.tagger, tagger_workers)
        check_roles(self.captioner, self.scorer, self.settings)
        if self.scorer is not self.captioner:
            log.warning("the scorer (%s) is not the captioner (%s): captions are rated by another model than the one "
                        "that wrote them (METHOD section 7); recorded in the fingerprint", backend_name(self.scorer),
                        backend_name(self.captioner))
        self.constrained = bool(self.settings.constrain_instructions and self.writer.capabilities.can_constrain)
        self.guard = ContextGuard(self.writer.count_tokens, lambda: writer_window(self.writer, self.settings),
                                  self.settings.max_tokens_summary, self.prompts.system)
        self.budget = budget_for(self.settings, self._content_words)
        self.domains = load_domains(self.settings.domains_dir)
        self.presets = Presets(self.prompts, self.domains)
        self.router = Router(self.settings, self.domains, self.backends.get("router", self.captioner),
                             self.prompts.system)
        self.screen = Screen(self.settings)
        self.ocr = OcrTool(self.settings, self.prompts.evidence)
        self.judge = Judge.for_run(self.settings, self.backends.get("judge"), self.prompts)
        self.fingerprint = self._make_fingerprint()

    # ------------------------------------------------------------------ public API
    def caption(self, image: ImageLike, id: str | None = None) -> CaptionResult:
        """Caption one image (blocking). Failures come back as a record with status 'failed'."""
        return run_sync(self.acaption(image, id=id))

    async def acaption(self, image: ImageLike, id: str | None = None) -> CaptionResult:
        return await self.caption_item(as_item(image, id))

    def caption_many(self, images: Iterable[ImageLike], concurrency: int = 8) -> Iterator[CaptionResult]:
        """Caption many images, many in flight at once; yields results as they finish."""
        from .engine import Engine

        items = (as_item(im, None) for im in images)
        yield from Engine(self, concurrency=concurrency).run_sync(items)

    async def caption_item(self, item: ImageItem) -> CaptionResult:
        """The whole pipeline for one item; never raises for a bad image or a failed model call."""
        trace = Trace.new()
        result = CaptionResult(id=item.id, source=item.source, status="ok", meta=dict(item.meta),
                               fingerprint=self.fingerprint)
        t0 = time.perf_counter()
        try:
            data = await asyncio.to_thread(item.read_bytes)
            image, notes = await asyncio.to_thread(image_ref, data, self.settings.max_pixels)
            result.notes.extend(notes)
            await self._run(image, result, trace, item.meta)
        except ImageError as exc:
            result.status, result.error, result.error_kind = "failed", str(exc), exc.kind
        except OSError as exc:
            result.status, result.error, result.error_kind = "failed", f"cannot read {item.source}: {exc}", "unreadable"
        except asyncio.CancelledError:
            raise
        except StageFailure as exc:
            result.status, result.error, result.error_kind = "failed", str(exc), exc.kind
        except Exception as exc:  # noqa: BLE001 - a per-image failure, recorded with the partial trace
            result.status, result.error = "failed", f"{type(exc).__name__}: {exc}"
            result.error_kind = ("capability" if isinstance(exc, CapabilityError)
                                 else "context" if isinstance(exc, ContextOverflow)
                                 else getattr(exc, "kind", None) or "model")  # backend_unreachable, ...
        result.usage = {k: v for k, v in trace.usage.items() if v.calls or v.reused}
        result.skipped = dict(trace.skipped)
        result.timings = {**trace.timings, "total": round(time.perf_counter() - t0, 4)}
        return result

    async def aclose(self) -> None:
        self._tagging.close()
        for backend in {id(b): b for b in self.backends.values()}.values():
            await backend.aclose()

    # ------------------------------------------------------------------ the method
    async def _run(self, image: ImageRef, result: CaptionResult, trace: Trace, meta: dict[str, Any]) -> None:
        # 0. The image's domain: declared in the data or by the run, else routed (one multiple-choice
        #    call); it picks the prompts (the domain's preset folder over the run's preset).
        result.domain = await self.router.resolve(trace, image, meta)
        domain = result.domain.id if result.domain else None
        if result.domain and result.domain.source == "declared" and domain is None:
            result.notes.append(f"declared domain {result.domain.raw!r} is not a known domain: ignored")
        p, s = self.presets.for_domain(domain), self.settings

        # 1. First caption.
        #    Every generated text is screened for degenerate output (loops, refusals, drift...).
        #    OCR, for domains whose text matters, reads the image meanwhile (the writer's evidence).
        with timed(trace, "caption"):
            caption = lambda penalty=None: self._caption(trace, "caption", p.caption, image,  # noqa: E731
                                                         s.max_tokens_caption, penalty)
            first_out, ocr = await asyncio.gather(caption(), self.ocr.read(trace, image, domain))
            first = (await self.screen(result.filter_hits, "caption", first_out, caption)).text
        result.first_caption = first
        if not first:
            raise StageFailure("empty_caption", "the captioner returned an empty first caption: nothing to rate")

        # 2. Contrastive sentence rating: the golden sentences (the whole caption if none survives).
        with timed(trace, "caption_rating"):
            rated = await self._rate(trace, "caption_rating", p.caption, first, image)
        result.sentences, result.caption_fallback = rated.sentences, rated.fallback
        if rated.fallback:
            result.notes.append("no sentence of the first caption passed rating: the whole caption was used")
        golden = rated.golden

        # 3. Heuristic questions: objects per golden sentence, de-duplicated, cut to the budget N.
        with timed(trace, "instructions"):
            per_sentence = await self._instructions(trace, golden, p)
        objects = plan_objects(per_sentence, s.budget)

        # 4. Answers about the same image, each rated like the caption: all at once, or (adaptive
        #    budget) in waves until one adds too little that is new; beside them the domain's
        #    question families, if it has any.
        with timed(trace, "answers"):
            (questions, result.adaptive_budget), families = await asyncio.gather(
                self.budget.ask(objects, lambda wave: self._ask(trace, image, wave), golden),
                self._ask_families(trace, image, p))
        result.questions = questions = questions + families

        # 5. Object and position summaries, concurrently (each skipped when it has nothing to summarise).
        with timed(trace, "summaries"):
            c_o, c_p = await asyncio.gather(
                self._summarise(trace, "object_summary", p.object_summary, _detail_lines(golden, per_sentence, questions)),
                self._summarise(trace, "position_summary", p.position_summary, _position_lines(questions)))
        result.summaries = Summaries(objects=c_o, positions=c_p)

        # 6. Final caption from the golden sentences (basic context) and both summaries.
        with timed(trace, "final"):
            result.final_caption = await self._integrate(trace, result, p, golden, c_o or "", c_p or "",
                                                         self.ocr.brief(ocr))
        #    Quotes of text in the image are checked against what the OCR read.
        if ocr is not None:
            result.final_caption, result.ocr = self.ocr.check(result.final_caption, ocr)
        if not result.final_caption:
            result.notes.append("the writer returned an empty final caption")

        # 7. Self-correction, when asked (beyond the paper): the captioner re-checks the final caption,
        #    and only corrected sentences the image supports stay (rated as in step 2).
        if s.self_correct:
            with timed(trace, "correction"):
                result.correction = await self._self_correct(trace, image, result.final_caption, p)

        # 8. Judge post-filter, when asked (after CapFlow): five scores 1-3 with the image; a caption
        #    under a threshold stays in the output as "rejected" (exports skip it).
        if self.judge is not None:
            with timed(trace, "judge"):
                result.judge = await self.judge(trace, image, result.final_caption)
            if result.judge is not None and not result.judge.kept:
                result.status = "rejected"

    # ------------------------------------------------------------------ stages
    async def _generate(self, backend: Backend, trace: Trace, stage: str, user: str, image: ImageRef | None,
                        params: GenerationParams, history: tuple[tuple[str, str], ...] = ()) -> Generation:
        prompt = ChatPrompt(user=user, system=self.prompts.system, image=image, history=history)
        out = await backend.generate(prompt, params)
        trace.record(stage, out)
        # Surrounding whitespace carries nothing, and a leading newline would merge with the chat
        # template's own when a server re-tokenises the text for scoring.
        return Generation(out.text.strip(), out.prompt_tokens, out.completion_tokens, out.finish_reason)

    async def _caption(self, trace: Trace, stage: str, user: str, image: ImageRef, max_tokens: int,
                       repetition_penalty: float | None = None) -> Generation:
        s = self.settings
        return await self._generate(self.captioner, trace, stage, user, image, GenerationParams(
            max_tokens=max_tokens, temperature=s.temperature, top_p=s.top_p,
            repetition_penalty=repetition_penalty or s.repetition_penalty, seed=s.seed))

    async def _write(self, trace: Trace, stage: str, user: str, max_tokens: int, **params: Any) -> str:
        return (await self._write_call(trace, stage, user, max_tokens, **params)).text

    async def _write_call(self, trace: Trace, stage: str, user: str, max_tokens: int, **params: Any) -> Generation:
        s = self.settings
        params = {"repetition_penalty": s.writer_repetition_penalty, **params}
        return await self._generate(self.writer, trace, stage, user, None, GenerationParams(
            max_tokens=max_tokens, temperature=s.writer_temperature, top_p=s.writer_top_p, seed=s.seed, **params))

    async def _rate(self, trace: Trace, stage: str, question: str, text: str, image: ImageRef) -> RatedText:
        prompt = ChatPrompt(user=question, system=self.prompts.system, image=image)
        # The tagging is queued (or, inline, done) first; the two passes run concurrently.
        tagged = self._tagging.request(text)
        try:
            with_image, without_image = await both(self.scorer.score(prompt, text),
                                                   self.scorer.score(prompt.without_image(), text))
        except BaseException:
            if isinstance(tagged, asyncio.Future):
                tagged.add_done_callback(retrieve_exception)  # a failed tagging behind a failed pass: not "lost"
            raise
        content = tagged if isinstance(tagged, list) else await tagged
        if with_image.source == "teacher_forced":
            trace.usage[stage].add(with_image.prompt_tokens)
        else:  # the generation's own log-probs: no model call
            trace.usage[stage].reused += 1
        trace.usage[stage].add(without_image.prompt_tokens)
        return rate_text(text, with_image, without_image, content, self.settings.score_mode,
                         self.settings.effective_tau, self.settings.store_tokens)

    async def _instructions(self, trace: Trace, golden: list[str], p: PromptSet) -> list[list[str]]:
        """The object names of each golden sentence, as the writer gave them (not yet de-duplicated).

        The sentences are asked concurrently, so none knows what the others used of the budget: one
        sentence is allowed up to N lines, the most it could contribute."""
        if self.settings.budget == 0:
            trace.skip("instructions", "budget N = 0: no questions")
            return []
        params: dict[str, Any] = {"stop": ("\nSentence:",)}
        if self.constrained:
            params = {"regex": instruction_regex(self.settings.budget)}
        outputs = await asyncio.gather(*(
            self._write_call(trace, "instructions", p.instructions.replace("{}", sentence, 1),
                             self.settings.max_tokens_instructions, **params) for sentence in golden))
        # A line cut by the token limit would give a cut name ("advertisemen"): it is dropped.
        return [parse_instructions(o.text, truncated=o.finish_reason == "length") for o in outputs]

    async def _ask(self, trace: Trace, image: ImageRef, objects: list[str]) -> list[Question]:
        return list(await asyncio.gather(*(
            self._answer(trace, image, obj, kind, (OBJECT_TEMPLATE if kind == "object" else POSITION_TEMPLATE).format(obj))
            for obj in objects for kind in ("object", "position"))))

    async def _ask_families(self, trace: Trace, image: ImageRef, p: PromptSet) -> list[Question]:
        """The domain's question families: one question each about the whole image (none with N = 0)."""
        if self.settings.budget == 0:
            return []
        return list(await asyncio.gather(*(self._answer(trace, image, name, "family", question)
                                           for name, question in p.families)))

    async def _answer(self, trace: Trace, image: ImageRef, obj: str, kind: str, instruction: str) -> Question:
        answer = lambda penalty=None: self._caption(trace, "answers", instruction, image,  # noqa: E731
                                                    self.settings.max_tokens_answer, penalty)
        hits: list[FilterHit] = []
        out = await self.screen(hits, "answers", await answer(), answer)
        rated = await self._rate(trace, "answer_rating", instruction, out.text, image)
        # Rejected sentences are dropped; an answer with nothing left is dropped with its object.
        return Question(object=obj, kind=kind, instruction=instruction, answer=out.text,
                        answer_sentences=rated.sentences, kept=any(s.kept for s in rated.sentences),
                        truncated=out.finish_reason == "length", scored_from=rated.scored_from, filter_hits=hits)

    async def _summarise(self, trace: Trace, stage: str, template: str, lines: list[str]) -> str | None:
        """One summary, with its input condensed first if it would overflow the writer's window.

        No call at all when there is nothing to summarise (N = 0, or every answer was dropped): the
        writer would invent a summary of an empty block and that invention would reach the caption."""
        if not lines:
            trace.skip(stage, "nothing to summarise: no question asked or no answer survived rating")
            return None
        room = await self.guard.input_room(template)
        lines = await self.guard.fit(lines, room, template, lambda prompt, n: self._write(trace, stage, prompt, n))
        prompt = template.replace("{}", "\n".join(lines), 1)
        return await self._write(trace, stage, prompt, await self.guard.completion_room(prompt))

    async def _integrate(self, trace: Trace, result: CaptionResult, p: PromptSet, golden: list[str], c_o: str,
                         c_p: str, evidence: str = "") -> str:
        head, mid, tail, rest = p.final.split("{}")
        context = "\n".join(golden)
        room = await self.guard.input_room(p.final)
        if room is not None and await self.guard.count("\n".join((context, c_o, c_p))) > room:
            # Guard the window: condense the two summaries to fit beside the basic context.
            share = (room - await self.guard.count(context)) // 2
            if share < 64:
                raise ContextOverflow(f"the golden sentences alone nearly fill the writer's {room}-token input room")
            c_o, c_p = await asyncio.gather(self._condense(trace, p.object_summary, c_o, share),
                                            self._condense(trace, p.position_summary, c_p, share))
        prompt = evidence + head + context + mid + c_o + tail + c_p + rest
        room = await self.guard.completion_room(prompt)
        write = lambda penalty=None: self._write_call(  # noqa: E731
            trace, "final", prompt, room, **({"repetition_penalty": penalty} if penalty else {}))
        return (await self.screen(result.filter_hits, "final", await write(), write)).text

    async def _condense(self, trace: Trace, template: str, text: str, room: int) -> str:
        write = lambda prompt, n: self._write(trace, "final", prompt, n)  # noqa: E731
        return "\n".join(await self.guard.fit(text.splitlines(), room, template, write))

    async def _self_correct(self, trace: Trace, image: ImageRef, caption: str | None,
                            p: PromptSet) -> Correction | None:
        """The correction turn in the captioner's conversation (image, P_cap, the caption as its reply),
        its reply rated under P_cap like a first caption (see ``correction.py`` for why)."""
        if not caption:
            trace.skip("correction", "the final caption is empty: nothing to re-check")
            return None
        s = self.settings
        assert p.correct is not None  # checked in __init__
        params = GenerationParams(max_tokens=s.max_tokens_correction, temperature=s.correction_temperature,
                                  top_p=s.correction_top_p, repetition_penalty=s.repetition_penalty, seed=s.seed)
        reply = lambda text: self._generate(self.captioner, trace, "correction", p.correct, image, params,  # noqa: E731
                                            history=((p.caption, text),))
        rate = lambda text: self._rate(trace, "correction_rating", p.caption, text, image)  # noqa: E731
        return await self_correct(caption, s.correction_rounds, reply, rate)

    async def _content_words(self, texts: list[str]) -> list[list[str]]:
        """Content words of each text (the adaptive budget's novelty), from the tagging pool."""
        spans = await asyncio.gather(*(self._tagging.spans(t) for t in texts))
        return [content_words(text, sp) for text, sp in zip(texts, spans)]

    # ------------------------------------------------------------------ set-up
    def _make_fingerprint(self) -> Fingerprint:
        models = {role: b.describe() for role, b in self.backends.items()}
        fields = fingerprint_fields(models, self.settings, self.prompts.sha256[:16], self.tagger.name)
        fields["settings"]["constrained_instructions"] = self.constrained
        fields["settings"]["scorer_is_captioner"] = self.scorer is self.captioner
        fields["settings"]["domain_prompt_hashes"] = self.presets.hashes()
        if self.settings.ocr != "off":  # the evidence prompt is sent only then, so hashed only then
            fields["settings"]["evidence_prompt_hash"] = stable_hash(self.prompts.evidence)
        if self.judge is not None:
            fields["settings"]["judge_prompt_hash"] = stable_hash(self.prompts.judge)
        return Fingerprint(id=stable_hash(fields), **fields)


def _detail_lines(golden: list[str], per_sentence: list[list[str]], questions: list[Question]) -> list[str]:
    """Golden sentences, each followed by the details of the objects first seen in it, then the kept
    answers of the domain's question families; none at all when no such answer survived (the golden
    sentences reach the final caption as its context)."""
    sentence_of = first_sentence_of(per_sentence)
    details: dict[int, list[str]] = {}
    for q in questions:
        if q.kind == "object" and q.kept:
            details.setdefault(sentence_of[object_key(q.object)], []).append(f"Details about {q.object}: {_kept(q)}")
    families = [f"Details about the {q.object.replace('_', ' ')}: {_kept(q)}"
                for q in questions if q.kind == "family" and q.kept]
    if not details and not families:
        return []
    lines = []
    for index, sentence in enumerate(golden):
        lines.append(sentence)
        lines.extend(details.get(index, []))
    return lines + families


def _position_lines(questions: list[Question]) -> list[str]:
    """METHOD over the paper: the paper also feeds the golden sentences to the position summary;
    METHOD step 5 gives it the "Position about X" lines only."""
    return [f"Position about {q.object}: {_kept(q)}" for q in questions if q.kind == "position" and q.kept]


def _kept(q: Question) -> str:
    return " ".join(s.text for s in q.answer_sentences if s.kept)


__all__ = ["ScaleCap", "STAGES"]
