"""The served model's own tokenizer, in-process, when it is at hand.

Scoring on a server needs the token ids of a text alone (to find the text's tail in the prompt's
log-probs) and the context guard counts tokens. Asking the server costs a round trip per text
(``/tokenize``), and the synchronous counter held a lock around one shared client. The tokenizer is
usually on the same machine: the model folder the user named, a hub id already in the local cache,
or the folder a vLLM server reports as its model's ``root``. It is loaded offline (never a download)
and only trusted after it agrees with the server on a set of probe texts; otherwise the server's
``/tokenize`` stays the path, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Texts that exercise what differs between tokenizers: spaces, punctuation, digits, accents, CJK,
#: an emoji, newlines and the replacement character tiny models produce.
PROBE_TEXTS = ("A red double-decker bus, No. 5, parked at 3 p.m. on St. James's Street.",
               "Café déjà vu: 東京タワー 🚌\n\n- item one\n- item two",
               "\ufffd lon *,_key\ufffd\ufffd setting  trailing ")


class LocalTokenizer:
    """``encode`` (no special tokens) and ``decode`` with a transformers tokenizer; thread-safe for
    these calls (the Rust tokenizer's encode takes no lock and mutates nothing)."""

    def __init__(self, tokenizer: Any, source: str) -> None:
        self._tok = tokenizer
        self.source = source

    def encode(self, text: str) -> tuple[int, ...]:
        return tuple(self._tok.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)


def load_local_tokenizer(candidates: Iterable[str | None], trust_remote_code: bool = False) -> LocalTokenizer | None:
    """The first candidate (a folder, or a hub id in the local cache) that loads offline, else None."""
    try:
        from transformers import AutoTokenizer
    except ImportError:
        return None
    for source in dict.fromkeys(c for c in candidates if c):
        path = Path(source).expanduser()
        if path.is_absolute() or path.exists():
            if not (path / "tokenizer_config.json").is_file():
                continue
        try:
            tok = AutoTokenizer.from_pretrained(str(path) if path.exists() else source, local_files_only=True,
                                                trust_remote_code=trust_remote_code)
        except Exception as exc:  # noqa: BLE001 - not available offline: the server path stays
            log.debug("no local tokenizer from %s: %s", source, type(exc).__name__)
            continue
        return LocalTokenizer(tok, source)
    return None


async def agrees_with_server(local: LocalTokenizer, server_encode: Callable[[str], Awaitable[Sequence[int] | None]]) -> bool:
    """True when the local tokenizer gives the server's ids on every probe text."""
    for text in PROBE_TEXTS:
        remote = await server_encode(text)
        if remote is None or tuple(int(i) for i in remote) != local.encode(text):
            log.warning("the local tokenizer from %s disagrees with the server: using the server's /tokenize",
                        local.source)
            return False
    return True


__all__ = ["LocalTokenizer", "PROBE_TEXTS", "agrees_with_server", "load_local_tokenizer"]
