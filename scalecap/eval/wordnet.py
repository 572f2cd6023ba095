"""A minimal reader of WordNet's database files (the ``dict/`` folder of WordNet 3.x, as shipped
by Princeton or inside NLTK's ``wordnet`` corpus), without NLTK.

Only what CAPTURE needs: the synonyms of a word (the lemma names of every synset of every part of
speech it belongs to, after morphological reduction, like NLTK's ``wordnet.synsets(word)``) and a
lemmatiser (``morphy``: exception lists, then suffix rules, keeping only forms in the index; the
shortest wins, like NLTK's ``WordNetLemmatizer``).

Files read: ``index.{noun,verb,adj,adv}``, ``data.{noun,verb,adj,adv}`` and, when present,
``{noun,verb,adj,adv}.exc``. Data lines are found by their byte offset, as WordNet intends.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from .common import EvalInputError

POS_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
# NLTK's / WordNet's morphological substitutions (morphy(7WN)).
_RULES = {
    "n": [("s", ""), ("ses", "s"), ("ves", "f"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"),
          ("men", "man"), ("ies", "y")],
    "v": [("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"), ("ing", "")],
    "a": [("er", ""), ("est", ""), ("er", "e"), ("est", "e")],
    "r": [],
}
_MARKER = re.compile(r"\([a-z]+\)$")


class WordNet:
    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if (self.folder / "dict").is_dir() and not (self.folder / "index.noun").is_file():
            self.folder = self.folder / "dict"
        missing = [f"{k}.{n}" for n in POS_FILES.values() for k in ("index", "data") if not (self.folder / f"{k}.{n}").is_file()]
        if missing:
            raise EvalInputError(f"wordnet: {folder} is not a WordNet dict folder (missing {', '.join(missing[:4])})")
        self._index: dict[str, dict[str, list[int]]] = {}
        self._exc: dict[str, dict[str, list[str]]] = {}
        for pos, name in POS_FILES.items():
            self._index[pos] = self._read_index(self.folder / f"index.{name}")
            exc = self.folder / f"{name}.exc"
            table: dict[str, list[str]] = {}
            if exc.is_file():
                for line in exc.read_text(encoding="utf-8", errors="replace").splitlines():
                    parts = line.split()
                    if len(parts) >= 2:
                        table.setdefault(parts[0], []).extend(parts[1:])
            self._exc[pos] = table

    @staticmethod
    def _read_index(path: Path) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(" ") or not line.strip():
                    continue  # licence header
                t = line.split()
                try:
                    n_synsets, n_pointers = int(t[2]), int(t[3])
                    offsets = [int(x) for x in t[4 + n_pointers + 2: 4 + n_pointers + 2 + n_synsets]]
                except (IndexError, ValueError):
                    raise EvalInputError(f"wordnet: {path} has a malformed line: {line[:60]!r}") from None
                out[t[0]] = offsets
        return out

    def describe(self) -> dict[str, str]:
        return {"kind": "wordnet", "path": str(self.folder)}

    def morphy(self, word: str, pos: str) -> list[str]:
        """Base forms of ``word`` as ``pos`` (n, v, a, r) that WordNet knows, in NLTK's order."""
        w = word.lower().replace(" ", "_")
        index = self._index[pos]
        forms = [w] + self._exc[pos].get(w, [])
        for old, new in _RULES[pos]:
            if w.endswith(old):
                forms.append(w[: len(w) - len(old)] + new)
        seen, out = set(), []
        for f in forms:
            if f in index and f not in seen:
                seen.add(f)
                out.append(f)
        return out

    def lemmatize(self, word: str, pos: str = "n") -> str:
        forms = self.morphy(word, pos)
        return min(forms, key=len).replace("_", " ") if forms else word

    @functools.lru_cache(maxsize=65536)
    def synonyms(self, word: str) -> frozenset[str]:
        """Lemma names (lower-case, ``_`` for spaces) of all synsets of ``word`` in any part of speech."""
        names: set[str] = set()
        for pos, name in POS_FILES.items():
            for lemma in self.morphy(word, pos):
                for offset in self._index[pos][lemma]:
                    names.update(self._lemmas(name, offset))
        return frozenset(names)

    @functools.lru_cache(maxsize=65536)
    def _lemmas(self, file: str, offset: int) -> tuple[str, ...]:
        with open(self.folder / f"data.{file}", "rb") as f:
            f.seek(offset)
            line = f.readline().decode("utf-8", errors="replace")
        t = line.split()
        try:
            if int(t[0]) != offset:
                raise ValueError
            n = int(t[3], 16)
            return tuple(_MARKER.sub("", t[4 + 2 * i]).lower() for i in range(n))
        except (IndexError, ValueError):
            raise EvalInputError(f"wordnet: data.{file} has no synset at byte offset {offset}") from None
