"""OpenAI-compatible HTTP backend: vLLM and SGLang servers (all roles), Ollama and closed APIs (writer).

Why httpx and not the ``openai`` SDK: scoring needs vLLM's non-standard request fields and response
fields (``prompt_logprobs``), the probe and the token counter need non-OpenAI endpoints
(``/tokenize``, ``/detokenize`` at the server root), and retries must follow *our* policy (which
statuses, how long, jitter, never logging a key). The SDK would hide the first and fight the last;
httpx is already a core dependency, so the HTTP backend needs no extra package.

Requests are prefix-friendly: the system prompt first, then the image (resized and PNG-encoded once
per image, byte-identical in every request about it, see ``images_http``), then the question, so a
server's prefix and encoder caches hit for the 2K questions and the 2 + 2K scoring passes of an image.

Scoring teacher-forces the text as the final assistant message (``continue_final_message``) and reads
vLLM's ``prompt_logprobs``; the text's tokens are the tail of the prompt. The tail length comes from
``/tokenize`` of the text alone, and the ids must agree with the tail (else ``BackendError``: the
server tokenised the text differently inside the chat prompt, e.g. a text starting with a newline).
Character offsets come from the server's decoded tokens (vLLM decodes each prompt token in context,
so a token holding half of a UTF-8 character decodes to "" and its character goes to the token that
completes it); where a piece does not continue the text, ``/detokenize`` of a few growing prefixes
repairs the spans there.

Capabilities are probed once, before any image: ``await backend.probe()`` in async code, or lazily
(and blocking, on a helper thread) on the first read of ``capabilities``, which is what
``ScaleCap._check_roles`` does. The probe reads ``/v1/models`` (server kind from ``owned_by``, the
context window from ``max_model_len``), sends one tiny scoring request (a server that ignores or
rejects ``prompt_logprobs``, such as a closed API or Ollama, cannot score), and on vLLM/SGLang one
1-token request with a tiny image (a text-only model rejects it).

Secrets: the API key is read from the environment variable ``api_key_env`` names, held only in the
request headers, and redacted from every message this module raises or logs.

Retry pacing comes from ``ModelConfig.backoff_base``/``backoff_max``; ``ModelConfig.vision``
(true/false) skips the vision probe.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from ..config import ModelConfig
from .base import (BackendError, Capabilities, CapabilityError, ChatPrompt, Generation, GenerationParams, TokenScores,
                   chat_messages)
from .http_client import RETRY_STATUS, HTTPStatusError, JSONClient, RetryPolicy
from .images_http import DataURLCache, encode_png
from .local_tokenizer import LocalTokenizer, agrees_with_server, load_local_tokenizer
from .pixel_budget import ProcessorResize, read_processor_resize
from .reuse import FROM_GENERATION, GeneratedTokens, GenerationLogprobs, match_ids, reusable

log = logging.getLogger(__name__)

#: Stands for an image's data URL in a request's JSON text until the URL is spliced in (see _body).
_IMAGE_SLOT = "\u0000scalecap-image\u0000"
#: Servers known to accept vLLM's sampling extensions (repetition_penalty, regex constraints).
OPEN_SERVERS = ("vllm", "sglang")
#: The token estimate where no tokenizer endpoint exists (English averages ~4 chars/token; 3 errs
#: on the side of counting too many, which only makes the context guard chunk earlier).
CHARS_PER_TOKEN = 3
#: Seconds a health check (``check``) waits for the server's model listing.
CHECK_TIMEOUT = 10.0


class _Secret:
    """A string that never shows itself in a repr, a log record or a traceback's locals dump."""

    __slots__ = ("value",)

    def __init__(self, value: str | None) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<secret>" if self.value else "<none>"


class OpenAIBackend:
    """A model behind an OpenAI-compatible ``/v1/chat/completions`` endpoint."""

    def __init__(self, config: ModelConfig) -> None:
        if not config.api_base:
            raise ValueError("the openai backend needs api_base")
        self.config = config
        self.model = config.served_model or config.model
        self.api_base, self._v1, self._root = _split_base(config.api_base)
        self._key = _Secret(_read_key(config.api_key_env))
        self.backoff_base = config.backoff_base
        self.backoff_max = config.backoff_max
        self._vision_override: bool | None = config.vision
        self._caps: Capabilities | None = None
        self.server = "unknown"  # "vllm" | "sglang" | "unknown", from the probe
        self._images = DataURLCache()
        self._token_ids: OrderedDict[str, tuple[int, ...]] = OrderedDict()
        self._has_tokenize: bool | None = None
        self._local: LocalTokenizer | None = None  # the model's own tokenizer, once it agreed with the server
        self._generated = GenerationLogprobs()  # generation log-probs awaiting their with-image rating
        # the processor's own resize, done once here when max_pixels is unset (pixel_budget.py)
        self._resize: ProcessorResize | None = None
        self._http = JSONClient(self._headers(), config.max_concurrency,
                                RetryPolicy(config.max_retries, config.backoff_base, config.backoff_max, config.timeout),
                                self._redact, self.api_base)
        self._probe_lock: asyncio.Lock | None = None
        self._probe_loop: asyncio.AbstractEventLoop | None = None
        self._sync_lock = threading.Lock()  # the lazy probe
        self._sync = threading.local()  # one sync client per thread for count_tokens: no global lock
        self._sync_clients: list[httpx.Client] = []  # all of them, to close

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self.model!r}, api_base={self.api_base!r}, server={self.server!r})"

    @property
    def requests(self) -> int:
        return self._http.requests

    @property
    def retries(self) -> int:
        return self._http.retries

    @property
    def outstanding(self) -> int:
        """Requests sent and not yet answered."""
        return self._http.outstanding

    @property
    def demand(self) -> int:
        """Requests sent or waiting for one of the ``max_concurrency`` connections."""
        return self._http.demand

    @property
    def target(self) -> int:
        """The demand the engine keeps this server at (``admission.py``): twice its connections, so
        that a queue as deep as the connections waits behind them and none runs dry while an
        image moves between phases (measured: demand kept at the connections alone was no faster
        than 8 images)."""
        return 2 * self._http.max_connections

    @property
    def local_tokenizer(self) -> str | None:
        """Where the in-process tokenizer came from, or None if token ids come from the server."""
        return self._local.source if self._local is not None else None

    # ------------------------------------------------------------------ protocol
    @property
    def capabilities(self) -> Capabilities:
        """Probed capabilities; the first read probes the server (blocking) if ``probe`` was not awaited."""
        if self._caps is None:
            with self._sync_lock:
                if self._caps is None:
                    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="scalecap-probe") as pool:
                        self._caps = pool.submit(asyncio.run, self._probe_detached()).result()
        return self._caps

    def describe(self) -> dict[str, Any]:
        return {"backend": "openai", "model": self.model, "api_base": self.api_base}

    async def probe(self) -> Capabilities:
        """Find out once what the server can do (see the module docstring). Raises BackendError if the
        server is unreachable, refuses the key, or does not serve the model."""
        if self._caps is None:
            loop = asyncio.get_running_loop()
            if self._probe_loop is not loop or self._probe_lock is None:
                self._probe_lock, self._probe_loop = asyncio.Lock(), loop
            async with self._probe_lock:
                if self._caps is None:
                    self._caps = await self._probe()
        return self._caps

    async def check(self) -> None:
        """Does the server answer now? One ``GET /v1/models``, no retries, a short timeout: the probe a
        run pauses with through an outage (``scalecap.outage``). Raises BackendError with its kind:
        ``backend_unreachable``, ``backend_auth``, or ``backend_not_found`` when the server lists
        models and ours is no longer among them. A server without a listing (404) answers."""
        try:
            listing = await self._http.call("GET", self._v1 + "/models", retry=False,
                                            timeout=min(CHECK_TIMEOUT, self.config.timeout))
        except HTTPStatusError as exc:
            if exc.status == 404:
                return
            raise
        models = {m.get("id") for m in (listing.get("data") or []) if isinstance(m, dict)} \
            if isinstance(listing, dict) else set()
        if models and self.model not in models:
            raise BackendError(f"model {self.model!r} is no longer served at {self.api_base}", "backend_not_found")

    async def generate(self, prompt: ChatPrompt, params: GenerationParams) -> Generation:
        caps = await self.probe()
        messages, url = await self._messages(prompt)
        body: dict[str, Any] = {"model": self.model, "messages": messages,
                                "max_tokens": params.max_tokens, "temperature": params.temperature,
                                "top_p": params.top_p, "seed": params.seed}
        if params.stop:
            body["stop"] = list(params.stop)
        if self.server in OPEN_SERVERS:
            # Sent even at 1.0: an open server would otherwise apply the checkpoint's own default.
            body["repetition_penalty"] = params.repetition_penalty  # closed APIs have no equivalent
        if params.regex:
            if not caps.can_constrain:
                raise CapabilityError(f"{self.model} at {self.api_base} cannot constrain output to a regex")
            if self.server == "sglang":
                body["regex"] = params.regex
            else:
                body["structured_outputs"] = {"regex": params.regex}
        keep = self._keeps_logprobs(prompt, params)
        if keep:
            body["logprobs"], body["return_tokens_as_token_ids"] = True, True
        data = await self._call("POST", self._v1 + "/chat/completions", body, image_url=url)
        try:
            choice = data["choices"][0]
            usage = data.get("usage") or {}
            if keep:
                self._keep_logprobs(prompt, choice)
            return Generation(text=choice["message"].get("content") or "",
                              prompt_tokens=int(usage.get("prompt_tokens") or 0),
                              completion_tokens=int(usage.get("completion_tokens") or 0),
                              finish_reason="length" if choice.get("finish_reason") == "length" else "stop")
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise BackendError(f"unexpected chat completion from {self.api_base}: {type(exc).__name__}") from None

    async def score(self, prompt: ChatPrompt, text: str) -> TokenScores:
        caps = await self.probe()
        if not caps.can_score:
            raise CapabilityError(f"{self.model} at {self.api_base} does not return prompt log-probs")
        if not text:
            return TokenScores((), (), (), None, 0)
        ids_alone = await self._tokenize(text)
        reused = await self._reused(prompt, text, ids_alone)
        if reused is not None:
            return reused
        messages, url = await self._messages(prompt, text)
        data = await self._call("POST", self._v1 + "/chat/completions", self._score_body(messages), image_url=url)
        raw = data.get("prompt_logprobs") if isinstance(data, dict) else None
        if not isinstance(raw, list) or not raw:
            raise BackendError(f"{self.api_base} returned no prompt_logprobs for a scoring request")
        # Only the text's tail is read: parsing every position of an image prompt cost ~6 ms a request.
        n = len(ids_alone) if ids_alone is not None else _tail_length(raw, text)
        if n <= 0 or n >= len(raw):
            raise BackendError(f"cannot find the scored text's {n} tokens in a prompt of {len(raw)}")
        tail = _prompt_entries(raw[-n:])
        if any(e is None for e in tail):
            raise BackendError("the server left prompt_logprobs of the scored text empty")
        token_ids = tuple(e[0] for e in tail)  # type: ignore[index]
        if ids_alone is not None and token_ids != ids_alone:
            raise BackendError("the server tokenised the text differently inside the chat prompt than alone "
                               "(e.g. a text starting with whitespace merges with the template): cannot score it")
        offsets = await self._offsets(token_ids, [e[2] for e in tail], text)  # type: ignore[index]
        usage = data.get("usage") or {}
        return TokenScores(token_ids=token_ids, offsets=offsets, logprobs=tuple(e[1] for e in tail),  # type: ignore[index]
                           logits=None, prompt_tokens=int(usage.get("prompt_tokens") or len(raw)))

    # ------------------------------------------------------------------ log-prob reuse (see reuse.py)
    def _keeps_logprobs(self, prompt: ChatPrompt, params: GenerationParams) -> bool:
        """Ask for the generation's log-probs when a with-image rating of its text may reuse them:
        vLLM (whose greedy ``logprobs`` equal its teacher-forced ``prompt_logprobs``), the local
        tokenizer at hand (ids and offsets without a request), and decoding that leaves them raw. Not
        for a turn with earlier turns (self-correction): its reply is rated under the caption prompt,
        so its values would never be used."""
        return (self.config.reuse_logprobs is not False and self.server == "vllm" and self._local is not None
                and prompt.image is not None and not prompt.history
                and reusable(params.temperature, params.repetition_penalty, params.regex, params.stop))

    def _keep_logprobs(self, prompt: ChatPrompt, choice: dict[str, Any]) -> None:
        content = (choice.get("logprobs") or {}).get("content")
        text = (choice["message"].get("content") or "").strip()
        if not isinstance(content, list) or not content or not text:
            return
        try:
            ids = tuple(int(str(e["token"]).removeprefix("token_id:")) for e in content)
            values = tuple(float(e["logprob"]) for e in content)
        except (KeyError, TypeError, ValueError):
            return  # a server that does not honour return_tokens_as_token_ids: rate teacher-forced
        self._generated.put(prompt, text, GeneratedTokens(ids, values))

    async def _reused(self, prompt: ChatPrompt, text: str, ids: tuple[int, ...] | None) -> TokenScores | None:
        """The with-image scores of ``text`` from its own generation, when its ids are exactly those."""
        if prompt.image is None or ids is None or self._local is None:
            return None
        kept = self._generated.take(prompt, text)
        if kept is None:
            return None
        n = len(ids)
        if not match_ids(kept.ids, ids, not self._local.decode(kept.ids[n:]).strip()):
            return None
        pieces = [self._local.decode([i]) for i in ids]
        offsets = await self._offsets(ids, pieces, text)
        return TokenScores(token_ids=ids, offsets=offsets, logprobs=kept.logprobs[:n], logits=None,
                           prompt_tokens=0, source=FROM_GENERATION)

    def count_tokens(self, text: str) -> int:
        """Exact with the local tokenizer or the server's ``/tokenize`` (cached); else ``ceil(len(text) / 3)``,
        an over-estimate. Safe from many threads at once: no lock is held around a request."""
        if self._local is not None:
            return len(self._local.encode(text))
        cached = self._token_ids.get(text)
        if cached is not None:
            return len(cached)
        if self._has_tokenize is not False:
            try:
                client = getattr(self._sync, "client", None)
                if client is None:  # one per thread: building one costs ~0.1 s (TLS context)
                    client = self._sync.client = httpx.Client(headers=self._headers(),
                                                              timeout=min(self.config.timeout, 10.0))
                    with self._sync_lock:
                        self._sync_clients.append(client)
                resp = client.post(self._root + "/tokenize", json=self._tokenize_body(text))
                if resp.status_code in (404, 405, 501):
                    self._has_tokenize = False
                elif resp.status_code < 300:
                    return len(self._remember(text, resp.json()["tokens"]))
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                log.debug("token count falls back to an estimate: %s", self._redact(f"{type(exc).__name__}: {exc}"))
        return -(-len(text) // CHARS_PER_TOKEN)

    async def aclose(self) -> None:
        with self._sync_lock:
            clients, self._sync_clients = self._sync_clients, []
        for client in clients:
            client.close()
        self._sync = threading.local()
        await self._http.aclose()

    async def _drop_client(self) -> None:
        await self._http.aclose()

    # ------------------------------------------------------------------ requests
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key.value}"} if self._key.value else {}

    async def _call(self, method: str, url: str, body: Any = None, retry: bool = True,
                    image_url: str | None = None) -> Any:
        """One JSON request (see ``http_client``). An image's data URL is spliced into the JSON text
        rather than escaped by ``json.dumps`` on every request: base64 needs no escaping."""
        raw = None
        if image_url is not None:
            text = json.dumps(body)
            raw = text.replace(json.dumps(_IMAGE_SLOT), '"' + image_url + '"', 1).encode()
        return await self._http.call(method, url, None if raw is not None else body, raw_body=raw, retry=retry)

    def _redact(self, message: str) -> str:
        key = self._key.value
        if not key:
            return message
        # also the escaped form a library may quote it in (repr, JSON)
        for form in {key, repr(key)[1:-1], json.dumps(key)[1:-1]}:
            message = message.replace(form, "***")
        return message

    async def _messages(self, prompt: ChatPrompt, answer: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
        """The chat messages with a slot where the image goes, and the image's data URL (encoded once
        per image; the first request encodes, off the loop).

        To a vLLM server the part carries ``uuid`` = image key + pixel budget: vLLM then keys its
        multimodal caches by it and skips hashing the decoded pixels of an image it has seen (the
        budget is in it because the same image at another budget is other pixels)."""
        if prompt.image is None:
            return chat_messages(prompt, None, answer), None
        budget, fit = self._budget()
        fmt = self.image_format
        url = (self._images.peek(prompt.image, budget, fmt)
               or await asyncio.to_thread(self._images.get, prompt.image, budget, fit, fmt))
        part: dict[str, Any] = {"type": "image_url", "image_url": {"url": _IMAGE_SLOT}}
        if self.server == "vllm":
            part["uuid"] = f"{prompt.image.key}:{budget}"
        return chat_messages(prompt, part, answer), url

    @property
    def image_format(self) -> str:
        """How images are encoded in their data URLs: BMP where the server is known to decode it with
        PIL (cheaper to encode and to decode, see images_http.py), else PNG."""
        return "bmp" if self.server in OPEN_SERVERS else "png"

    def _budget(self) -> tuple[Any, Any]:
        """The pixel budget's cache tag and resize: ``max_pixels`` when set, else the processor's rule."""
        if self.config.max_pixels is None and self._resize is not None:
            return self._resize.tag, self._resize.apply
        return self.config.max_pixels, None

    def _score_body(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        return {"model": self.model, "messages": messages, "add_generation_prompt": False,
                "continue_final_message": True, "max_tokens": 1, "temperature": 0, "prompt_logprobs": 0}

    def _tokenize_body(self, text: str) -> dict[str, Any]:
        return {"model": self.model, "prompt": text, "add_special_tokens": False}

    def _remember(self, text: str, ids: Sequence[int]) -> tuple[int, ...]:
        out = tuple(int(i) for i in ids)
        self._token_ids[text] = out
        while len(self._token_ids) > 4096:
            self._token_ids.popitem(last=False)
        return out

    async def _tokenize(self, text: str) -> tuple[int, ...] | None:
        """Ids of ``text`` alone (no special tokens), or None where the server has no ``/tokenize``."""
        if self._local is not None:
            return self._local.encode(text)
        cached = self._token_ids.get(text)
        if cached is not None or self._has_tokenize is False:
            return cached
        try:
            data = await self._call("POST", self._root + "/tokenize", self._tokenize_body(text))
        except BackendError as exc:
            if isinstance(exc, HTTPStatusError) and exc.status in (404, 405, 501):
                self._has_tokenize = False
                return None
            raise
        self._has_tokenize = True
        return self._remember(text, data["tokens"])

    async def _offsets(self, ids: tuple[int, ...], pieces: Sequence[str], text: str) -> tuple[tuple[int, int], ...]:
        """Character spans from the decoded pieces (see ``align_pieces``). Where a piece does not
        continue the text (a decoder that could not repair a split character), the server decodes
        growing prefixes (``/detokenize``) until they do: a few calls, only at such places."""
        spans: list[tuple[int, int]] = []
        cursor = pending = i = 0
        while i < len(ids):
            piece = pieces[i]
            if not piece:
                pending, i = pending + 1, i + 1
                continue
            placed = _place(text, cursor, piece, pending)
            if placed is not None:
                cursor, pending, i = _extend(spans, cursor, placed, len(piece), pending), 0, i + 1
                continue
            for j in range(i, min(len(ids), i + 8)):
                decoded = await self._decode(ids[: j + 1])
                torn = decoded.endswith("\ufffd") and text[len(decoded) - 1: len(decoded)] != "\ufffd"
                if len(decoded) > cursor and text.startswith(decoded) and not torn:
                    break
            else:
                raise BackendError("cannot map the scored text's tokens to characters (decoding does not reproduce it)")
            spans.extend([(cursor, len(decoded))] * (pending + j - i + 1))
            cursor, pending, i = len(decoded), 0, j + 1
        if pending and text[cursor:] and set(text[cursor:]) == {"\ufffd"}:
            spans.extend([(cursor, len(text))] * pending)
            cursor, pending = len(text), 0
        if pending or cursor != len(text):
            raise BackendError("cannot map the scored text's tokens to characters (the pieces do not spell it)")
        return tuple(spans)

    async def _decode(self, ids: Sequence[int]) -> str:
        if self._local is not None:
            return self._local.decode(ids)
        data = await self._call("POST", self._root + "/detokenize", {"model": self.model, "tokens": list(ids)})
        return str(data.get("prompt", ""))

    async def _server_encode(self, text: str) -> tuple[int, ...] | None:
        try:
            data = await self._call("POST", self._root + "/tokenize", self._tokenize_body(text), retry=False)
        except BackendError:
            return None
        return tuple(int(i) for i in data["tokens"])

    async def _adopt_local_tokenizer(self, root: str | None) -> None:
        """Use the model's own tokenizer in-process if one loads offline and agrees with the server."""
        if self.config.local_tokenizer is False or self.server not in OPEN_SERVERS:
            return
        candidates = [self.config.tokenizer, self.config.model, root]
        local = await asyncio.to_thread(load_local_tokenizer, candidates, self.config.trust_remote_code)
        if local is not None and await agrees_with_server(local, self._server_encode):
            self._local = local
            log.info("token ids for %s come from the local tokenizer in %s", self.model, local.source)

    # ------------------------------------------------------------------ probing
    async def _probe_detached(self) -> Capabilities:
        try:
            return await self._probe()
        finally:
            await self._drop_client()

    async def _probe(self) -> Capabilities:
        window: int | None = None
        try:
            listing = await self._call("GET", self._v1 + "/models")
        except HTTPStatusError as exc:
            if exc.status != 404:
                raise
            listing = {"data": []}  # some servers have no model listing: nothing to learn from it
        models = {m.get("id"): m for m in listing.get("data") or [] if isinstance(m, dict)}
        if models and self.model not in models:
            served = ", ".join(sorted(str(k) for k in models)[:20])
            raise BackendError(f"model {self.model!r} is not served at {self.api_base} (it serves: {served})")
        entry = models.get(self.model, {})
        owner = str(entry.get("owned_by", "")).lower()
        self.server = next((s for s in OPEN_SERVERS if s in owner), "unknown")
        if isinstance(entry.get("max_model_len"), int):
            window = entry["max_model_len"]
        root = entry.get("root") if isinstance(entry.get("root"), str) else None
        await self._adopt_local_tokenizer(root)
        if self.config.max_pixels is None and self.config.processor_resize and self.server in OPEN_SERVERS:
            self._resize = next(filter(None, (read_processor_resize(c) for c in
                                              (self.config.tokenizer, self.config.model, root))), None)
        can_score = await self._probe_scoring()
        vision = self._vision_override
        if vision is None:
            vision = await self._probe_vision() if self.server in OPEN_SERVERS else True
        caps = Capabilities(vision=bool(vision), can_score=can_score, has_logits=False,
                            can_constrain=self.server in OPEN_SERVERS, context_window=window)
        log.info("%s", self._redact(f"{self!r}: {caps}"))
        return caps

    async def _probe_scoring(self) -> bool:
        messages = [{"role": "user", "content": "Say hello."}, {"role": "assistant", "content": "Hello there."}]
        try:
            data = await self._call("POST", self._v1 + "/chat/completions", self._score_body(messages))
        except BackendError as exc:
            if isinstance(exc, HTTPStatusError) and exc.status in (401, 403):
                raise
            log.info("%s", self._redact(f"{self.api_base} rejects scoring requests ({exc}): can_score=False"))
            return False
        raw = data.get("prompt_logprobs") if isinstance(data, dict) else None
        return isinstance(raw, list) and bool(raw) and bool(raw[-1])

    async def _probe_vision(self) -> bool:
        import base64

        from PIL import Image

        url = "data:image/png;base64," + base64.b64encode(encode_png(Image.new("RGB", (32, 32), "gray"))).decode()
        body = {"model": self.model, "max_tokens": 1, "temperature": 0, "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "?"}]}]}
        try:
            await self._call("POST", self._v1 + "/chat/completions", body)
        except HTTPStatusError as exc:
            if not 400 <= exc.status < 500:
                raise
            return False
        return True


# ---------------------------------------------------------------------- helpers
def align_pieces(text: str, pieces: Sequence[str]) -> tuple[tuple[int, int], ...]:
    """Character span of each token from its decoded piece, as transformers' offset mappings give them.

    A piece that is "" (a token holding part of a multi-byte character) shares the span of the next
    token, which completes the character. Raises ValueError if the pieces do not spell ``text``.
    """
    spans: list[tuple[int, int]] = []
    cursor = pending = 0
    for piece in pieces:
        if not piece:
            pending += 1
            continue
        placed = _place(text, cursor, piece, pending)
        if placed is None:
            raise ValueError(f"token piece {piece!r} does not continue the text at {cursor}")
        cursor = _extend(spans, cursor, placed, len(piece), pending)
        pending = 0
    if pending and text[cursor:] and set(text[cursor:]) == {"\ufffd"}:
        spans.extend([(cursor, len(text))] * pending)
        cursor, pending = len(text), 0
    if pending or cursor != len(text):
        raise ValueError("the token pieces do not spell the whole text")
    return tuple(spans)


def _place(text: str, cursor: int, piece: str, pending: int) -> int | None:
    """Where ``piece`` starts: at the cursor, or, after ``pending`` pieces that decoded to nothing,
    after the run of U+FFFD those tokens stand for (bytes that are no valid UTF-8: the text itself
    holds replacement characters there, as generated gibberish does)."""
    if text.startswith(piece, cursor):
        return cursor
    if pending:
        q = cursor
        while q < len(text) and text[q] == "\ufffd":
            q += 1
        if q > cursor and text.startswith(piece, q):
            return q
    return None


def _extend(spans: list[tuple[int, int]], cursor: int, start: int, length: int, pending: int) -> int:
    """Append the spans of ``pending`` silent tokens and the token at ``start``; return the new cursor."""
    end = start + length
    spans.extend([(cursor, start if start > cursor else end)] * pending)
    spans.append((start, end))
    return end


def _prompt_entries(raw: list[Any]) -> list[tuple[int, float, str] | None]:
    """Positions of ``prompt_logprobs`` as (token id, logprob, decoded piece) (None where empty)."""
    out: list[tuple[int, float, str] | None] = []
    for entry in raw:
        if not entry:
            out.append(None)
            continue
        # With prompt_logprobs=0 the dict holds the prompt token itself (first, if top-k are added).
        token, value = next(iter(entry.items()))
        out.append((int(token), float(value["logprob"]), str(value.get("decoded_token") or "")))
    return out


def _tail_length(raw: list[Any], text: str) -> int:
    """Without ``/tokenize``: the shortest tail whose decoded pieces spell ``text`` (0 if none does)."""
    acc = ""
    for n in range(1, len(raw)):
        e = _prompt_entries([raw[-n]])[0]
        if e is None:
            return 0
        acc = e[2] + acc
        if acc == text:
            return n
        if len(acc) > len(text):
            return 0
    return 0


def _split_base(api_base: str) -> tuple[str, str, str]:
    """(public base without credentials, the /v1 URL, the server root for /tokenize and friends)."""
    parts = urlsplit(api_base.rstrip("/"))
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    clean = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    full = api_base.rstrip("/")
    if parts.path.endswith("/v1"):
        return clean, full, full[: -len("/v1")]
    return clean, full + "/v1", full


def _read_key(env: str | None) -> str | None:
    if not env:
        return None
    value = (os.environ.get(env) or "").strip()  # a trailing newline or CR from a key file is never meant
    if not value:
        raise BackendError(f"api_key_env is {env!r}, but that environment variable is not set (or empty)")
    if any(not c.isprintable() or c.isspace() for c in value):
        # refused here, without the value: an HTTP library's error for a bad header quotes it escaped
        raise BackendError(f"the API key in {env!r} holds whitespace or control characters inside it")
    return value


__all__ = ["CHARS_PER_TOKEN", "OpenAIBackend", "align_pieces"]
