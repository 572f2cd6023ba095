"""The ScaleCap pipeline (METHOD.md section 3), one image at a time, asynchronous.

    caption -> rate -> ask -> answer -> rate -> summarise -> integrate

A captioner (vision model) writes a first caption; contrastive rating keeps the sentences the image
supports (the *golden sentences*); a writer (text LLM) turns them into short questions about each
object and its position; the captioner answers, the answers are rated the same way; the writer
summarises objects and positions and merges everything into the final caption. The budget N caps
the number of object questions.

This module knows the backend *protocol* only, never a concrete backend, and nothing of files,
shards or clusters: ``Engine`` keeps many images in flight, ``scalecap.io`` reads and writes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from ._sync import run_sync
from .backends import Backend, ChatPrompt, GenerationParams, ImageRef, model_config_from, open_backend
from .backends.base import CapabilityError
from .config import ModelConfig, Settings, fingerprint_fields, stable_hash
from .images import ImageError, ImageItem, image_ref
from .prompts import PromptSet, load_preset
from .rating import RatedText, rate_text
from .records import CaptionResult, Fingerprint, Question, StageUsage, Summaries
from .text.content import load_tagger
from .text.instructions import OBJECT_TEMPLATE, POSITION_TEMPLATE, instruction_regex, object_key, parse_instructions

ImageLike = str | Path | bytes | Image.Image | ImageItem
STAGES = ("caption", "caption_rating", "instructions", "answers", "answer_rating",
          "object_summary", "position_summary", "final")


@dataclass
class _Trace:
    """Per-image accounting, filled in as the stages run."""

    usage: dict[str, StageUsage]
    timings: dict[str, float]

    @classmethod
    def new(cls) -> "_Trace":
        return cls(usage={s: StageUsage() for s in STAGES}, timings={})


class ScaleCap:
    """Caption images with ScaleCap.

    ``model`` binds one model to all three roles; ``captioner``, ``scorer`` and ``writer`` override
    it per role. Each may be a hub id or local path (loaded in-process with transformers), a
    ``ModelConfig`` (any backend), or an already opened ``Backend``. Settings come as a ``Settings``
    or as keyword arguments (``budget=20, score_mode="prob", tau=0.1`` ...).
    """

    def __init__(self, model: Any = None, *, captioner: Any = None, scorer: Any = None, writer: Any = None,
                 settings: Settings | None = None, **overrides: Any) -> None:
        base = settings or Settings()
        self.settings = Settings.model_validate({**base.model_dump(), **overrides}) if overrides else base
        self.backends = _bind_roles(model, captioner=captioner, scorer=scorer, writer=writer)
        self.captioner, self.scorer, self.writer = (self.backends[r] for r in ("captioner", "scorer", "writer"))
        self.prompts: PromptSet = load_preset(self.settings.preset)
        self.tagger = load_tagger(self.settings.tagger)
        # POS tagging runs beside the scoring passes, on one thread of its own (taggers are not
        # guaranteed thread-safe, and the event loop must not stall on them).
        self._tagging = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="scalecap-tagger")
        self._check_roles()
        self.constrained = bool(self.settings.constrain_instructions and self.writer.capabilities.can_constrain)
        self.fingerprint = self._make_fingerprint()

    # ------------------------------------------------------------------ public API
    def caption(self, image: ImageLike, id: str | None = None) -> CaptionResult:
        """Caption one image (blocking). Failures come back as a record with status 'failed'."""
        return run_sync(self.acaption(image, id=id))

    async def acaption(self, image: ImageLike, id: str | None = None) -> CaptionResult:
        return await self.caption_item(_as_item(image, id))

    def caption_many(self, images: Iterable[ImageLike], concurrency: int = 8) -> Iterator[CaptionResult]:
        """Caption many images, many in flight at once; yields results as they finish."""
        from .engine import Engine

        items = (_as_item(im, None) for im in images)
        yield from Engine(self, concurrency=concurrency).run_sync(items)

    async def caption_item(self, item: ImageItem) -> CaptionResult:
        """The whole pipeline for one item; never raises for a bad image or a failed model call."""
        trace = _Trace.new()
        result = CaptionResult(id=item.id, source=item.source, status="ok", meta=dict(item.meta),
                               fingerprint=self.fingerprint)
        t0 = time.perf_counter()
        try:
            data = await asyncio.to_thread(item.read_bytes)
            image, notes = await asyncio.to_thread(image_ref, data, self.settings.max_pixels)
            result.notes.extend(notes)
            await self._run(image, result, trace)
        except ImageError as exc:
            result.status, result.error, result.error_kind = "failed", str(exc), exc.kind
        except OSError as exc:
            result.status, result.error, result.error_kind = "failed", f"cannot read {item.source}: {exc}", "unreadable"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a per-image failure, recorded with the partial trace
            result.status, result.error = "failed", f"{type(exc).__name__}: {exc}"
            result.error_kind = "capability" if isinstance(exc, CapabilityError) else "model"
        result.usage = {k: v for k, v in trace.usage.items() if v.calls}
        result.timings = {**trace.timings, "total": round(time.perf_counter() - t0, 4)}
        return result

    async def aclose(self) -> None:
        self._tagging.shutdown(wait=False)
        for backend in {id(b): b for b in self.backends.values()}.values():
            await backend.aclose()

    # ------------------------------------------------------------------ the method
    async def _run(self, image: ImageRef, result: CaptionResult, trace: _Trace) -> None:
        p, s = self.prompts, self.settings

        # 1. First caption.
        with _timed(trace, "caption"):
            first = await self._generate(self.captioner, trace, "caption", p.caption, image, s.max_tokens_caption)
        result.first_caption = first

        # 2. Contrastive sentence rating: the golden sentences.
        with _timed(trace, "caption_rating"):
            rated = await self._rate(trace, "caption_rating", p.caption, first, image)
        result.sentences, result.caption_fallback = rated.sentences, rated.fallback
        if rated.fallback:
            result.notes.append("no sentence of the first caption passed rating: the whole caption was used")
        golden = rated.golden

        # 3. Heuristic questions: objects per golden sentence, de-duplicated, cut to the budget N.
        with _timed(trace, "instructions"):
            objects = await self._plan_objects(trace, golden)

        # 4. Answers about the same image, each rated like the caption.
        with _timed(trace, "answers"):
            questions = await asyncio.gather(*(
                self._answer(trace, image, obj, kind) for obj, _ in objects for kind in ("object", "position")))
        result.questions = list(questions)

        # 5. Object and position summaries, concurrently.
        with _timed(trace, "summaries"):
            c_o, c_p = await asyncio.gather(
                self._summarise(trace, "object_summary", p.object_summary, self._detail_lines(golden, objects, questions)),
                self._summarise(trace, "position_summary", p.position_summary, self._position_lines(questions)))
        result.summaries = Summaries(objects=c_o, positions=c_p)

        # 6. Final caption from the golden sentences (basic context) and both summaries.
        with _timed(trace, "final"):
            result.final_caption = await self._integrate(trace, golden, c_o, c_p)
        if not result.final_caption:
            result.notes.append("the writer returned an empty final caption")

    # ------------------------------------------------------------------ stages
    async def _generate(self, backend: Backend, trace: _Trace, stage: str, user: str, image: ImageRef | None,
                        max_tokens: int, **params: Any) -> str:
        out = await backend.generate(ChatPrompt(user=user, system=self.prompts.system, image=image),
                                     GenerationParams(max_tokens=max_tokens, seed=self.settings.seed, **params))
        trace.usage[stage].add(out.prompt_tokens, out.completion_tokens)
        # Surrounding whitespace carries nothing, and a leading newline would merge with the chat
        # template's own when a server re-tokenises the text for scoring.
        return out.text.strip()

    async def _write(self, trace: _Trace, stage: str, user: str, max_tokens: int, **params: Any) -> str:
        return await self._generate(self.writer, trace, stage, user, None, max_tokens,
                                    repetition_penalty=self.settings.writer_repetition_penalty, **params)

    async def _rate(self, trace: _Trace, stage: str, question: str, text: str, image: ImageRef) -> RatedText:
        prompt = ChatPrompt(user=question, system=self.prompts.system, image=image)
        loop = asyncio.get_running_loop()
        with_image, without_image, content = await asyncio.gather(
            self.scorer.score(prompt, text), self.scorer.score(prompt.without_image(), text),
            loop.run_in_executor(self._tagging, self.tagger.content_spans, text))
        trace.usage[stage].add(with_image.prompt_tokens)
        trace.usage[stage].add(without_image.prompt_tokens)
        return rate_text(text, with_image, without_image, content, self.settings.score_mode,
                         self.settings.effective_tau, self.settings.store_tokens)

    async def _plan_objects(self, trace: _Trace, golden: list[str]) -> list[tuple[str, int]]:
        """Objects to ask about with the golden sentence each was first seen in, in METHOD order."""
        if self.settings.budget == 0:
            return []
        params: dict[str, Any] = {"stop": ("\nSentence:",)}
        if self.constrained:
            params = {"regex": instruction_regex()}
        outputs = await asyncio.gather(*(
            self._write(trace, "instructions", self.prompts.instructions.replace("{}", sentence, 1),
                        self.settings.max_tokens_instructions, **params) for sentence in golden))
        seen: dict[str, tuple[str, int]] = {}
        for index, text in enumerate(outputs):
            for name in parse_instructions(text):
                seen.setdefault(object_key(name), (name, index))
        planned = list(seen.values())
        return planned if self.settings.budget is None else planned[: self.settings.budget]

    async def _answer(self, trace: _Trace, image: ImageRef, obj: str, kind: str) -> Question:
        instruction = (OBJECT_TEMPLATE if kind == "object" else POSITION_TEMPLATE).format(obj)
        answer = await self._generate(self.captioner, trace, "answers", instruction, image, self.settings.max_tokens_answer)
        rated = await self._rate(trace, "answer_rating", instruction, answer, image)
        # Rejected sentences are dropped; an answer with nothing left is dropped with its object.
        return Question(object=obj, kind=kind, instruction=instruction, answer=answer,
                        answer_sentences=rated.sentences, kept=any(s.kept for s in rated.sentences))

    @staticmethod
    def _kept_answer(q: Question) -> str:
        return " ".join(s.text for s in q.answer_sentences if s.kept)

    def _detail_lines(self, golden: list[str], objects: list[tuple[str, int]], questions: list[Question]) -> list[str]:
        """Golden sentences, each followed by the details of the objects first seen in it."""
        sentence_of = {name: index for name, index in objects}
        details: dict[int, list[str]] = {}
        for q in questions:
            if q.kind == "object" and q.kept:
                details.setdefault(sentence_of[q.object], []).append(f"Details about {q.object}: {self._kept_answer(q)}")
        lines = []
        for index, sentence in enumerate(golden):
            lines.append(sentence)
            lines.extend(details.get(index, []))
        return lines

    def _position_lines(self, questions: list[Question]) -> list[str]:
        return [f"Position about {q.object}: {self._kept_answer(q)}" for q in questions if q.kind == "position" and q.kept]

    async def _summarise(self, trace: _Trace, stage: str, template: str, lines: list[str]) -> str:
        """One summary; if the input would overflow the writer's window, summarise it in chunks first."""
        budget = await self._input_budget(template)
        for _ in range(4):
            if budget is None or await self._count("\n".join(lines)) <= budget:
                break
            chunks = await asyncio.to_thread(_chunk_lines, lines, budget, self.writer.count_tokens)
            lines = list(await asyncio.gather(*(self._write(trace, stage, template.replace("{}", "\n".join(c), 1),
                                                            self.settings.max_tokens_summary) for c in chunks)))
        return await self._write(trace, stage, template.replace("{}", "\n".join(lines), 1), self.settings.max_tokens_summary)

    async def _integrate(self, trace: _Trace, golden: list[str], c_o: str, c_p: str) -> str:
        context = "\n".join(golden)
        budget = await self._input_budget(self.prompts.final)
        if budget is not None and await self._count(context + c_o + c_p) > budget:
            # Guard the window: condense the two summaries to fit beside the basic context.
            room = max(budget - await self._count(context), 64) // 2
            c_o = await self._condense(trace, self.prompts.object_summary, c_o, room)
            c_p = await self._condense(trace, self.prompts.position_summary, c_p, room)
        head, mid, tail, rest = self.prompts.final.split("{}")
        return await self._write(trace, "final", head + context + mid + c_o + tail + c_p + rest,
                                 self.settings.max_tokens_summary)

    async def _condense(self, trace: _Trace, template: str, text: str, room: int) -> str:
        if await self._count(text) <= room:
            return text
        chunks = await asyncio.to_thread(_chunk_lines, text.splitlines() or [text], max(room, 64),
                                         self.writer.count_tokens)
        parts = await asyncio.gather(*(self._write(trace, "final", template.replace("{}", "\n".join(c), 1),
                                                   min(room, self.settings.max_tokens_summary)) for c in chunks))
        return "\n".join(parts)

    async def _count(self, text: str) -> int:
        # count_tokens may ask a server (HTTP backends): keep it off the event loop
        return await asyncio.to_thread(self.writer.count_tokens, text)

    async def _input_budget(self, template: str) -> int | None:
        window = self.writer.capabilities.context_window
        if window is None:
            return None
        overhead = await self._count(template) + 64
        return max(window - self.settings.max_tokens_summary - overhead, 256)

    # ------------------------------------------------------------------ set-up
    def _check_roles(self) -> None:
        """Fail before any image is processed if a role's model cannot do its job."""
        if not self.captioner.capabilities.vision:
            raise CapabilityError(f"the captioner ({_name(self.captioner)}) cannot take images: bind a vision model")
        if not self.scorer.capabilities.can_score:
            raise CapabilityError(
                f"the scorer ({_name(self.scorer)}) cannot return prompt log-probs (closed APIs and Ollama cannot): "
                "bind the scorer role to an open model, in-process (transformers/vLLM) or on a vLLM/SGLang server")
        if not self.scorer.capabilities.vision:
            raise CapabilityError(f"the scorer ({_name(self.scorer)}) cannot take images: bind a vision model")
        if self.settings.score_mode == "logit" and not self.scorer.capabilities.has_logits:
            raise CapabilityError(f"score mode 'logit' needs raw logits, which {_name(self.scorer)} does not return; "
                                  "use --score-mode prob or logprob")

    def _make_fingerprint(self) -> Fingerprint:
        models = {role: b.describe() for role, b in self.backends.items()}
        fields = fingerprint_fields(models, self.settings, self.prompts.sha256[:16], self.tagger.name)
        fields["settings"]["constrained_instructions"] = self.constrained
        return Fingerprint(id=stable_hash(fields), **fields)


def _bind_roles(model: Any, **roles: Any) -> dict[str, Backend]:
    """Open one backend per distinct model config; a model playing several roles is loaded once."""
    opened: dict[str, Backend] = {}
    bound: dict[str, Backend] = {}
    for role, spec in roles.items():
        spec = spec if spec is not None else model
        if spec is None:
            raise ValueError(f"no model for the {role} role: pass model=... or {role}=...")
        if isinstance(spec, (str, dict, ModelConfig)):
            config = model_config_from(spec)
            key = config.model_dump_json()
            if key not in opened:
                opened[key] = open_backend(config)
            bound[role] = opened[key]
        elif isinstance(spec, Backend):
            bound[role] = spec
        else:
            raise TypeError(f"{role}: expected a model id/path, a ModelConfig or a Backend, got {type(spec).__name__}")
    return bound


def _as_item(image: ImageLike, id: str | None) -> ImageItem:
    if isinstance(image, ImageItem):
        return image
    if isinstance(image, (str, Path)):
        return ImageItem.from_path(image, id=id)
    if isinstance(image, bytes):
        return ImageItem(id=id or "image", source="<bytes>", data=image)
    if isinstance(image, Image.Image):
        import io

        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return ImageItem(id=id or "image", source="<PIL.Image>", data=buf.getvalue())
    raise TypeError(f"cannot caption a {type(image).__name__}: pass a path, bytes, a PIL image or an ImageItem")


def _chunk_lines(lines: list[str], budget: int, count) -> list[list[str]]:
    """Group lines into chunks of at most ``budget`` tokens; a line longer than that is cut in pieces."""
    chunks: list[list[str]] = [[]]
    used = 0
    for line in _split_long(lines, budget, count):
        n = count(line) + 1
        if chunks[-1] and used + n > budget:
            chunks.append([])
            used = 0
        chunks[-1].append(line)
        used += n
    return chunks


def _split_long(lines: list[str], budget: int, count) -> Iterator[str]:
    for line in lines:
        n = count(line)
        if n <= budget:
            yield line
            continue
        step = max(1, int(len(line) * budget / n * 0.9))  # characters per piece, by the line's token density
        for i in range(0, len(line), step):
            yield line[i:i + step]


def _name(backend: Backend) -> str:
    return str(backend.describe().get("model", type(backend).__name__))


class _timed:
    def __init__(self, trace: _Trace, stage: str) -> None:
        self.trace, self.stage = trace, stage

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.trace.timings[self.stage] = round(time.perf_counter() - self.t0, 4)


__all__ = ["ScaleCap", "STAGES"]
