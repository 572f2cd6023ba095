"""In-process Hugging Face transformers backend: any chat VLM with a processor, any causal LLM.

Generation and scoring requests from all images and stages in flight are batched together
(``MicroBatcher``). Scoring teacher-forces the text after the chat prompt and gathers, on the
device, only the values it needs (the target tokens' log-probs and raw logits): no
full-vocabulary row ever becomes a Python object. Batches are left-padded so every row's text sits
at the end, and only those last positions go through the LM head (``logits_to_keep``), chunked to
a memory budget.

The scorer sees the image exactly as the captioner did: the same processor turns the same decoded
image into pixels for every request about it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any, Hashable, Sequence

from .base import Capabilities, ChatPrompt, Generation, GenerationParams, TokenScores
from .batching import MicroBatcher
from .hf_images import ProcessedImages
from .images_http import fit_pixels
from .inprocess import InProcessBackend
from .reuse import FROM_GENERATION, GeneratedTokens, GenerationLogprobs, match_ids, reusable
from ..config import ModelConfig

log = logging.getLogger(__name__)

#: Max number of logit values (rows x positions x vocabulary) materialised at once while scoring.
LOGIT_BUDGET = 1 << 27


@dataclass(frozen=True)
class _GenJob:
    prompt: ChatPrompt
    params: GenerationParams


@dataclass(frozen=True)
class _ScoreJob:
    prompt: ChatPrompt
    text: str


def _import_torch():
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the hf backend needs torch and transformers: pip install 'scalecap[hf]'") from exc
    return torch


class HFBackend(InProcessBackend):
    """A transformers model behind the Backend protocol."""

    def __init__(self, config: ModelConfig) -> None:
        torch = _import_torch()
        from transformers import AutoConfig

        self.config = config
        self._torch = torch
        load_kw: dict[str, Any] = {"trust_remote_code": config.trust_remote_code}
        if config.revision:
            load_kw["revision"] = config.revision
        hf_config = _load_config(AutoConfig, config.model, load_kw)
        self._is_vlm = hasattr(hf_config, "vision_config")
        self.device = self._pick_device(config.device)
        dtype = self._pick_dtype(config.dtype)
        if self._is_vlm:
            from transformers import AutoModelForImageTextToText, AutoProcessor

            self.processor = AutoProcessor.from_pretrained(config.model, **load_kw)
            if not hasattr(self.processor, "image_processor"):
                raise RuntimeError(
                    f"{config.model}: transformers loaded only a tokenizer for this vision model. With "
                    "transformers >= 5 the Qwen-VL/SmolVLM processors need an importable torchvision; "
                    "install torchvision matching your torch (on CPU-only machines see "
                    "scripts/patch_torchvision_cpu.sh)")
            self.tokenizer = self.processor.tokenizer
            # the processor's output per image, once (hf_images.py); exact, or it turns itself off
            self._images = ProcessedImages(self.processor, self._pixels) if config.cache_processed_images else None
            self.model = AutoModelForImageTextToText.from_pretrained(config.model, dtype=dtype, **load_kw)
        else:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            self.processor = None
            self._images = None
            self.tokenizer = AutoTokenizer.from_pretrained(config.model, **load_kw)
            self.model = AutoModelForCausalLM.from_pretrained(config.model, dtype=dtype, **load_kw)
        self.model.to(self.device).eval()
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        text_cfg = getattr(hf_config, "text_config", hf_config)
        self._mrope = "qwen" in hf_config.model_type and self._is_vlm
        self._vocab_size = int(self.model.get_output_embeddings().weight.shape[0])
        self._dtype_name = str(self.model.dtype).replace("torch.", "")
        self._capabilities = Capabilities(
            vision=self._is_vlm, can_score=True, has_logits=True, can_constrain=_has_xgrammar(),
            context_window=getattr(text_cfg, "max_position_embeddings", None))
        self._grammars: dict[str, Any] = {}
        self._generated = GenerationLogprobs()  # generation values awaiting their with-image rating
        self._grammar_lock = threading.Lock()
        self._batcher = MicroBatcher(self._run_batch, max_batch=config.max_batch_size, name="hf")

    # ------------------------------------------------------------------ protocol
    async def generate(self, prompt: ChatPrompt, params: GenerationParams) -> Generation:
        self._check_image(prompt)
        self._check_regex(params.regex, "it needs xgrammar: pip install xgrammar")
        # Requests that differ only in max_tokens share a batch (a first caption beside answers);
        # each row is cut at its own limit. Greedy rows do not depend on their batch-mates' limits.
        key = ("gen", prompt.image is not None, dataclasses.replace(params, max_tokens=0))
        return await self._batcher.submit(key, _GenJob(prompt, params))

    async def score(self, prompt: ChatPrompt, text: str) -> TokenScores:
        self._check_image(prompt)
        if not text:
            return TokenScores((), (), (), (), 0)
        reused = self._reused(prompt, text)
        if reused is not None:
            return reused
        return await self._batcher.submit(("score", prompt.image is not None), _ScoreJob(prompt, text))

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    # ------------------------------------------------------------------ batches
    def _run_batch(self, key: Hashable, jobs: Sequence[Any]) -> list[Any]:
        with self._torch.inference_mode():
            if key[0] == "gen":
                return self._generate_batch(list(jobs))
            # Scoring rows alone (no padding) keeps every score bitwise independent of which other
            # requests happened to be in flight, so records are byte-identical across runs at any
            # concurrency. score_batch_size > 1 trades that for throughput (differences ~1e-6).
            size = self.config.score_batch_size
            return [s for i in range(0, len(jobs), size) for s in self._score_batch(list(jobs[i:i + size]))]

    def _encode(self, prompts: list[str], refs: list[Any] | None):
        if self.processor is None:
            return self.tokenizer(prompts, padding=True, return_tensors="pt", add_special_tokens=False)
        kw: dict[str, Any] = {"text": prompts, "padding": True, "return_tensors": "pt"}
        if not refs:
            return self.processor(**kw)
        if self._images is None:
            kw["images"] = self._nest_images([self._pixels(r.pil) for r in refs])
            return self.processor(**kw)
        kw["images"] = self._nest_images([r.pil for r in refs])  # resized by the cache, on a miss only
        with self._images.keyed([r.key for r in refs]):
            return self.processor(**kw)

    def _nest_images(self, images: list[Any]) -> list[Any]:
        # Idefics3/SmolVLM processors take one list of images per sample; the others a flat list.
        name = type(self.processor).__name__
        return [[im] for im in images] if ("Idefics" in name or "SmolVLM" in name) else images

    def _generate_batch(self, jobs: list[_GenJob]) -> list[Generation]:
        torch = self._torch
        params = jobs[0].params
        self.tokenizer.padding_side = "left"
        prompts = [self._chat_text(j.prompt) for j in jobs]
        images = [j.prompt.image for j in jobs if j.prompt.image is not None]
        enc = self._encode(prompts, images).to(self.device)
        # Every decoding setting explicit, never the checkpoint's generation_config (Qwen2/2.5-VL ship
        # a repetition penalty of 1.05, top_k/top_p, sampling on): the same values on every backend.
        from transformers import GenerationConfig

        ckpt = self.model.generation_config
        sample = params.temperature > 0
        config = GenerationConfig(max_new_tokens=max(j.params.max_tokens for j in jobs), do_sample=sample,
                                  repetition_penalty=params.repetition_penalty, eos_token_id=ckpt.eos_token_id,
                                  pad_token_id=ckpt.pad_token_id if ckpt.pad_token_id is not None
                                  else self.tokenizer.pad_token_id, bos_token_id=ckpt.bos_token_id)
        if sample:
            torch.manual_seed(params.seed)
            config.temperature, config.top_p, config.top_k = params.temperature, params.top_p, 0
        kw: dict[str, Any] = {"generation_config": config}
        keep = [self._keeps_logprobs(j) for j in jobs]
        if any(keep):  # the raw logits of every step, before any processor (penalty, constraint)
            config.output_logits, config.return_dict_in_generate = True, True
        if params.regex:
            kw["logits_processor"] = [self._regex_processor(params.regex)]
        if params.stop:
            kw["stop_strings"] = list(params.stop)
            kw["tokenizer"] = self.tokenizer
        out = self.model.generate(**enc, **kw)
        steps = out.logits if any(keep) else None
        out = out.sequences if any(keep) else out
        new = out[:, enc["input_ids"].shape[1]:]
        eos = self._eos_ids()
        results = []
        for i, job in enumerate(jobs):
            row = new[i].tolist()[: job.params.max_tokens]
            n, finished = len(row), False
            for k, t in enumerate(row):
                if t in eos:
                    n, finished = k + 1, True
                    break
            text = self.tokenizer.decode(row[:n], skip_special_tokens=True)
            if params.stop and not finished:
                cut = min((text.find(s) for s in params.stop if s in text), default=-1)
                if cut >= 0:
                    text, finished = text[:cut], True
            if keep[i] and steps is not None and text.strip():
                self._keep_logprobs(job.prompt, text.strip(), row[:n], [step[i] for step in steps[:n]])
            results.append(Generation(text=text, prompt_tokens=int(enc["attention_mask"][i].sum()),
                                      completion_tokens=n, finish_reason="stop" if finished else "length"))
        return results

    # ------------------------------------------------------------------ log-prob reuse (see reuse.py)
    def _keeps_logprobs(self, job: _GenJob) -> bool:
        p = job.params
        return (self.config.reuse_logprobs is True and job.prompt.image is not None and not job.prompt.history
                and reusable(p.temperature, p.repetition_penalty, p.regex, p.stop))

    def _keep_logprobs(self, prompt: ChatPrompt, text: str, ids: list[int], steps: list[Any]) -> None:
        torch = self._torch
        logits = torch.stack(steps).float()  # (n, V): step k's raw logits, which chose ids[k]
        index = torch.tensor(ids, device=logits.device).unsqueeze(-1)
        raw = logits.gather(-1, index).squeeze(-1)
        logprob = (raw - torch.logsumexp(logits, dim=-1)).cpu().tolist()
        self._generated.put(prompt, text, GeneratedTokens(tuple(ids), tuple(logprob), tuple(raw.cpu().tolist())))

    def _reused(self, prompt: ChatPrompt, text: str) -> TokenScores | None:
        kept = self._generated.take(prompt, text) if prompt.image is not None else None
        if kept is None:
            return None
        target = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = tuple(target["input_ids"])
        n = len(ids)
        if not match_ids(kept.ids, ids, not self.tokenizer.decode(kept.ids[n:], skip_special_tokens=True).strip()):
            return None
        return TokenScores(token_ids=ids, offsets=tuple(tuple(o) for o in target["offset_mapping"]),
                           logprobs=kept.logprobs[:n], logits=kept.logits[:n] if kept.logits else None,
                           prompt_tokens=0, source=FROM_GENERATION)

    def _score_batch(self, jobs: list[_ScoreJob]) -> list[TokenScores]:
        torch = self._torch
        self.tokenizer.padding_side = "left"
        prompts = [self._chat_text(j.prompt) for j in jobs]
        images = [j.prompt.image for j in jobs if j.prompt.image is not None]
        enc = self._encode(prompts, images)
        targets = [self.tokenizer(j.text, add_special_tokens=False, return_offsets_mapping=True) for j in jobs]
        rows = enc["input_ids"].shape[0]
        # Append each text's ids after its (left-padded) prompt, then re-pad on the left so that all
        # texts end at the last position: the LM head then only runs on the last max_n+1 positions.
        lengths = [int(enc["attention_mask"][i].sum()) for i in range(rows)]
        full = [enc["input_ids"][i, -lengths[i]:].tolist() + list(targets[i]["input_ids"]) for i in range(rows)]
        width = max(len(f) for f in full)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((rows, width), pad, dtype=torch.long)
        mask = torch.zeros((rows, width), dtype=torch.long)
        for i, f in enumerate(full):
            ids[i, width - len(f):] = torch.tensor(f)
            mask[i, width - len(f):] = 1
        inputs: dict[str, Any] = {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask")}
        for k in ("token_type_ids", "mm_token_type_ids"):
            if k in inputs:
                old = inputs[k]
                new_t = torch.zeros((rows, width), dtype=old.dtype)
                for i in range(rows):
                    new_t[i, width - len(full[i]): width - len(full[i]) + lengths[i]] = old[i, -lengths[i]:]
                inputs[k] = new_t
        inputs["input_ids"], inputs["attention_mask"] = ids, mask
        if not self._mrope:  # Qwen-VL computes its own (3-D) positions from the mask
            inputs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
        n_max = max(len(t["input_ids"]) for t in targets)
        keep = n_max + 1
        if rows * keep * self._vocab_size > LOGIT_BUDGET and rows > 1:
            # Too many logits at once: split the batch (each row alone always fits its own text).
            half = rows // 2
            return self._score_batch(jobs[:half]) + self._score_batch(jobs[half:])
        inputs = {k: (v.to(self.device) if hasattr(v, "to") else v) for k, v in inputs.items()}
        logits = self.model(**inputs, logits_to_keep=keep, use_cache=False).logits  # (rows, keep, V)
        tgt = torch.full((rows, keep - 1), pad, dtype=torch.long, device=self.device)
        for i, t in enumerate(targets):
            n = len(t["input_ids"])
            if n:
                tgt[i, keep - 1 - n:] = torch.tensor(t["input_ids"], device=self.device)
        pred = logits[:, :-1, :].float()  # position t predicts token t+1
        raw = pred.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
        logprob = raw - torch.logsumexp(pred, dim=-1)
        raw, logprob = raw.cpu(), logprob.cpu()
        out = []
        for i, t in enumerate(targets):
            n = len(t["input_ids"])
            sl = slice(keep - 1 - n, keep - 1)
            out.append(TokenScores(
                token_ids=tuple(t["input_ids"]), offsets=tuple(tuple(o) for o in t["offset_mapping"]),
                logprobs=tuple(logprob[i, sl].tolist()), logits=tuple(raw[i, sl].tolist()),
                prompt_tokens=lengths[i] + n))
        return out

    # ------------------------------------------------------------------ helpers
    def _chat_text(self, prompt: ChatPrompt) -> str:
        messages: list[dict[str, Any]] = []
        if self.processor is None:
            if prompt.system is not None:
                messages.append({"role": "system", "content": prompt.system})
            for user, reply in prompt.turns():
                messages.append({"role": "user", "content": user})
                if reply is not None:
                    messages.append({"role": "assistant", "content": reply})
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        if prompt.system is not None:
            messages.append({"role": "system", "content": [{"type": "text", "text": prompt.system}]})
        for i, (user, reply) in enumerate(prompt.turns()):
            # the image belongs to the first user turn (the prefix every request about it shares)
            content: list[dict[str, Any]] = [{"type": "image"}] if i == 0 and prompt.image is not None else []
            content.append({"type": "text", "text": user})
            messages.append({"role": "user", "content": content})
            if reply is not None:
                messages.append({"role": "assistant", "content": [{"type": "text", "text": reply}]})
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def _pixels(self, pil):
        """The image at ``ModelConfig.max_pixels`` (as every backend sends it), else as decoded."""
        return fit_pixels(pil, self.config.max_pixels) if self.config.max_pixels else pil

    def _eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    def _regex_processor(self, regex: str):
        import xgrammar as xgr

        with self._grammar_lock:
            if "_compiler" not in self._grammars:
                info = xgr.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=self._vocab_size)
                self._grammars["_compiler"] = xgr.GrammarCompiler(info)
            if regex not in self._grammars:
                self._grammars[regex] = self._grammars["_compiler"].compile_regex(regex)
            compiled = self._grammars[regex]
        return xgr.contrib.hf.LogitsProcessor(compiled)

    @staticmethod
    def _pick_device(device: str) -> str:
        import torch

        if device != "auto":
            return device
        return "cuda" if torch.cuda.is_available() else "cpu"

    def _pick_dtype(self, dtype: str):
        torch = self._torch
        if dtype == "auto":
            return torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        try:
            return getattr(torch, dtype)
        except AttributeError:
            raise ValueError(f"unknown dtype {dtype!r} (use auto, float32, bfloat16 or float16)") from None


def _load_config(auto_config, model: str, load_kw: dict[str, Any]):
    """The model's config, with errors that say what to do (transformers' own are cryptic here)."""
    looks_local = model.startswith(("/", "./", "../", "~")) or os.sep in model.strip("/").split("/", 1)[-1]
    path = os.path.expanduser(model)
    if looks_local and not os.path.isdir(path):
        raise ValueError(f"model {model!r}: no such folder (give a local model folder or a hub id such as "
                         "Qwen/Qwen2.5-VL-7B-Instruct)")
    try:
        return auto_config.from_pretrained(path if os.path.isdir(path) else model, **load_kw)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot load model {model!r}: {exc}") from None


def _has_xgrammar() -> bool:
    try:
        import xgrammar  # noqa: F401
    except ImportError:
        return False
    return True
