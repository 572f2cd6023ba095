"""CAPTURE: detail-caption evaluation by scene-graph elements (Dong et al. 2024, arXiv 2405.19092).

Each text (the candidate caption, each reference) becomes three lists of *elements*: objects
(entity heads), attributes (the attribute words of all entities, flattened) and relations
(subject, relation, object) triples, parsed sentence by sentence into FACTUAL-style tuples
``( subject , relation , object ) , ( subject , is , attribute )``, lemmatised, deduplicated, and
filtered (objects: not a stop word and made of nouns of the text; attributes and relations: of
such entities). Candidate elements are matched to reference elements in three greedy stages:

1. exact: each candidate, in order, takes the first unmatched equal reference element;
2. synonym: each still-unmatched candidate takes the first unmatched reference element that is a
   synonym (one string contains the other, or their synonym sets intersect; relations: all three
   parts pairwise);
3. soft (only with an embedder): over the elements left on both sides, with S the cosine
   similarity matrix, the candidates gain sum_i max_j S_ij and the references sum_j max_i S_ij
   (partial credit; with ``soft_threshold`` similarities below it count 0 — not official).

With m exact+synonym matches: P = (m + soft_cand) / (|cand| + eps), R = (m + soft_ref) / (|ref| + eps),
F1 = 2PR / (P + R + eps), eps = 1e-6, per kind.
score = (0.5·F1_obj + 0.5·F1_attr + 0.2·F1_rel) / 1.2 against one reference; a caption's score
(and each P/R/F1) is the mean over its references; the corpus score is the mean over captions.

Parts supplied by the user: the parser (a local seq2seq checkpoint — the official one is the
FACTUAL ``flan-t5-base-VG-factual-sg`` — or an LLM backend prompted for the same tuples), the
embedder (official: ``all-mpnet-base-v2``), WordNet (synonyms and lemmatiser) and the stop-word
list. Whatever is missing is replaced by a fallback, and the result then says it is NOT the
official metric and what each missing part would need (``CaptureConfig.label``/``deviations``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from .common import EvalInputError, mean

METRIC = "capture"
VERSION = "1"
EPS = 1e-6
ALPHA, BETA, GAMMA = 0.5, 0.5, 0.2

#: Ours, used when no --stop-words file is given: abstract "objects" a caption parser extracts that
#: are not things in the image. The official list (CAPTURE's stop_words.py) is longer.
DEFAULT_STOP_WORDS = frozenset("""
image picture photo photograph scene view background foreground setting atmosphere element object
item detail area space side left right top bottom center middle front back edge corner part portion
surface position location direction distance frame composition style color colour hue tone shade
texture pattern design shape form appearance presence attention focus mood ambiance vibe feel sense
moment time day night life nature beauty charm essence energy motion movement action activity scene
""".split())


# ----------------------------------------------------------------------------- parsing

@dataclass
class Elements:
    objects: list[str] = field(default_factory=list)
    attributes: list[str] = field(default_factory=list)
    relations: list[tuple[str, str, str]] = field(default_factory=list)
    #: (object, attribute) for each attribute, the object it describes (refined CAPTURE matches per object)
    attribute_pairs: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"objects": self.objects, "attributes": self.attributes, "relations": [list(r) for r in self.relations],
                "attribute_pairs": [list(p) for p in self.attribute_pairs]}


_TUPLE = re.compile(r"\(([^()]*)\)")
_NUMBER_WORDS = frozenset("one two three four five six seven eight nine ten eleven twelve several many few".split())


def parse_tuples(text: str) -> tuple[list[str], list[tuple[str, str]], list[tuple[str, str, str]]]:
    """(entities, (entity, attribute) pairs, relations) from FACTUAL-style tuple text, in order.

    ``( a , is , b )`` is an attribute b of a (a count such as ``2``/``two`` is not an attribute);
    ``( a , r , b )`` a relation; ``( a )`` an entity alone; anything else is ignored.
    """
    entities: list[str] = []
    attrs: list[tuple[str, str]] = []
    rels: list[tuple[str, str, str]] = []

    def ent(e: str) -> None:
        if e and e not in entities:
            entities.append(e)

    for m in _TUPLE.finditer(text or ""):
        parts = [re.sub(r"\s+", " ", p).strip().lower() for p in m.group(1).split(",")]
        parts = [p.removeprefix("v:").strip() for p in parts]
        if len(parts) == 1 and parts[0]:
            ent(parts[0])
        elif len(parts) == 3 and all(parts):
            s, r, o = parts
            ent(s)
            if r == "is":
                if not (o.isdigit() or o in _NUMBER_WORDS):
                    attrs.append((s, o))
            else:
                ent(o)
                rels.append((s, r, o))
    return entities, attrs, rels


class Lemmatizer(Protocol):
    name: str

    def noun(self, phrase: str) -> str: ...

    def adj(self, word: str) -> str: ...


class RuleLemmatizer:
    """Ours: singularise the last word of a noun phrase; adjectives unchanged."""

    name = "rules (scalecap.eval.singular)"

    def noun(self, phrase: str) -> str:
        from .singular import singularize

        words = phrase.split()
        return " ".join(words[:-1] + [singularize(words[-1])]) if words else phrase

    def adj(self, word: str) -> str:
        return word


class WordNetLemmatizer:
    """WordNet's morphy, like NLTK's WordNetLemmatizer (a phrase unknown as a whole: its last word)."""

    name = "wordnet morphy"

    def __init__(self, wordnet: Any) -> None:
        self.wn = wordnet

    def noun(self, phrase: str) -> str:
        if self.wn.morphy(phrase, "n"):
            return self.wn.lemmatize(phrase, "n")
        words = phrase.split()
        return " ".join(words[:-1] + [self.wn.lemmatize(words[-1], "n")]) if words else phrase

    def adj(self, word: str) -> str:
        return self.wn.lemmatize(word, "a")


def build_elements(graph_texts: Sequence[str], lemmatizer: Lemmatizer, nouns: set[str] | None,
                   stop_words: frozenset[str]) -> Elements:
    """Merge the parses of a text's sentences into its element lists (first-seen order, no repeats).

    ``nouns``: the lemmatised nouns of the text (None: no noun filter). Objects must be no stop word
    and be a noun of the text (or all their words must be); attributes and relations are kept
    when their entities pass the same noun test; attributes containing " of" are dropped.
    """
    def is_noun(x: str) -> bool:
        return nouns is None or x in nouns or all(p in nouns for p in x.split())

    objects: list[str] = []
    attr_pairs: list[tuple[str, str]] = []
    relations: list[tuple[str, str, str]] = []
    for text in graph_texts:
        ents, attrs, rels = parse_tuples(text)
        for e in ents:
            o = lemmatizer.noun(e)
            if o not in objects:
                objects.append(o)
        for e, a in attrs:
            pair = (lemmatizer.noun(e), lemmatizer.adj(a))
            if " of" in pair[1] or pair in attr_pairs:
                continue
            attr_pairs.append(pair)
        for s, r, o in rels:
            t = (lemmatizer.noun(s), r, lemmatizer.noun(o))
            if t not in relations:
                relations.append(t)
    return Elements(
        objects=[o for o in objects if o not in stop_words and is_noun(o)],
        attributes=[a for e, a in attr_pairs if is_noun(e)],
        relations=[t for t in relations if is_noun(t[0]) and is_noun(t[2])],
        attribute_pairs=[(e, a) for e, a in attr_pairs if is_noun(e)],
    )


# ----------------------------------------------------------------------------- matching

class Synonyms(Protocol):
    def synonyms(self, word: str) -> frozenset[str]: ...


class TableSynonyms:
    """Fallback synonym source: groups of words that mean the same (default: the CHAIR COCO table)."""

    def __init__(self, groups: Sequence[Sequence[str]]) -> None:
        self._of: dict[str, set[str]] = {}
        for g in groups:
            names = {w.strip().lower().replace(" ", "_") for w in g if w.strip()}
            for w in names:
                self._of.setdefault(w, set()).update(names)

    @classmethod
    def coco(cls) -> "TableSynonyms":
        from .chair import default_synonyms_path

        lines = default_synonyms_path().read_text(encoding="utf-8").splitlines()
        return cls([line.split(",") for line in lines if line.strip()])

    def synonyms(self, word: str) -> frozenset[str]:
        return frozenset(self._of.get(word.lower(), ()))

    def describe(self) -> dict[str, str]:
        return {"kind": "table", "source": "CHAIR COCO synonyms"}


def is_synonym(a: str, b: str, source: Synonyms | None) -> bool:
    """As in CAPTURE: one string contains the other, or their synonym sets intersect."""
    if a in b or b in a:
        return True
    if source is None:
        return False
    sa = source.synonyms(a.replace(" ", "_"))
    return bool(sa) and bool(sa & source.synonyms(b.replace(" ", "_")))


class Embedder(Protocol):
    def encode(self, texts: list[str]) -> Any: ...  # (n, d) array of L2-normalised rows


@dataclass
class Match:
    exact: list[tuple[int, int]] = field(default_factory=list)  # (cand index, ref index)
    synonym: list[tuple[int, int]] = field(default_factory=list)
    soft_cand: float = 0.0
    soft_ref: float = 0.0
    n_cand: int = 0
    n_ref: int = 0

    @property
    def hard(self) -> int:
        return len(self.exact) + len(self.synonym)

    @property
    def cand_match(self) -> float:
        return self.hard + self.soft_cand

    @property
    def ref_match(self) -> float:
        return self.hard + self.soft_ref

    def prf(self) -> tuple[float, float, float]:
        p = self.cand_match / (self.n_cand + EPS)
        r = self.ref_match / (self.n_ref + EPS)
        return p, r, 2 * p * r / (p + r + EPS)


def greedy_match(cands: Sequence[Any], refs: Sequence[Any], same_synonym: Callable[[Any, Any], bool] | None,
                 embedder: Embedder | None = None, as_text: Callable[[Any], str] = str,
                 soft_threshold: float | None = None) -> Match:
    """The three stages (exact, synonym, soft) in CAPTURE's order; see the module docstring."""
    m = Match(n_cand=len(cands), n_ref=len(refs))
    used_c: set[int] = set()
    used_r: set[int] = set()
    for i, c in enumerate(cands):
        for j, r in enumerate(refs):
            if j not in used_r and c == r:
                used_c.add(i)
                used_r.add(j)
                m.exact.append((i, j))
                break
    if same_synonym is not None:
        for i, c in enumerate(cands):
            if i in used_c:
                continue
            for j, r in enumerate(refs):
                if j not in used_r and same_synonym(c, r):
                    used_c.add(i)
                    used_r.add(j)
                    m.synonym.append((i, j))
                    break
    rest_c = [as_text(c) for i, c in enumerate(cands) if i not in used_c]
    rest_r = [as_text(r) for j, r in enumerate(refs) if j not in used_r]
    if embedder is not None and rest_c and rest_r:
        import numpy as np

        a = np.asarray(embedder.encode(rest_c), dtype=np.float64)
        b = np.asarray(embedder.encode(rest_r), dtype=np.float64)
        sim = a @ b.T
        if soft_threshold is not None:
            sim = np.where(sim >= soft_threshold, sim, 0.0)
        m.soft_cand = float(sim.max(axis=1).sum())
        m.soft_ref = float(sim.max(axis=0).sum())
    return m


def score_pair(cand: Elements, ref: Elements, synonyms: Synonyms | None, embedder: Embedder | None = None,
               soft_threshold: float | None = None, weights: tuple[float, float, float] = (ALPHA, BETA, GAMMA)) -> dict[str, Any]:
    """P/R/F1 per kind and the CAPTURE score of one candidate against one reference."""
    syn = lambda a, b: is_synonym(a, b, synonyms)  # noqa: E731
    rel_syn = lambda a, b: all(is_synonym(x, y, synonyms) for x, y in zip(a, b))  # noqa: E731
    matches = {
        "object": greedy_match(cand.objects, ref.objects, syn, embedder, soft_threshold=soft_threshold),
        "attribute": greedy_match(cand.attributes, ref.attributes, syn, embedder, soft_threshold=soft_threshold),
        "relation": greedy_match(cand.relations, ref.relations, rel_syn, embedder, as_text=" ".join,
                                 soft_threshold=soft_threshold),
    }
    out: dict[str, Any] = {}
    for kind, m in matches.items():
        p, r, f = m.prf()
        out[kind] = {"precision": p, "recall": r, "f1": f, "exact": len(m.exact), "synonym": len(m.synonym),
                     "soft_cand": m.soft_cand, "soft_ref": m.soft_ref, "n_cand": m.n_cand, "n_ref": m.n_ref}
    a, b, g = weights
    out["score"] = (a * out["object"]["f1"] + b * out["attribute"]["f1"] + g * out["relation"]["f1"]) / (a + b + g)
    return out


_KEYS = [(k, x) for k in ("object", "attribute", "relation") for x in ("precision", "recall", "f1")]


def score_sample(cand: Elements, refs: Sequence[Elements], synonyms: Synonyms | None, embedder: Embedder | None = None,
                 soft_threshold: float | None = None) -> dict[str, Any]:
    """Mean over references of ``score_pair`` (score and every P/R/F1)."""
    if not refs:
        raise EvalInputError("capture: a caption needs at least one reference")
    pairs = [score_pair(cand, r, synonyms, embedder, soft_threshold) for r in refs]
    out: dict[str, Any] = {"score": mean([p["score"] for p in pairs])}
    for k, x in _KEYS:
        out[f"{k}_{x}"] = mean([p[k][x] for p in pairs])
    out["pairs"] = pairs
    return out


def aggregate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"captions": len(samples), "score": mean([s["score"] for s in samples])}
    for k, x in _KEYS:
        out[f"{k}_{x}"] = mean([s[f"{k}_{x}"] for s in samples])
    return out


# ----------------------------------------------------------------------------- model parts

FACTUAL_PREFIX = "Generate Scene Graph: "


class Seq2SeqParser:
    """A local seq2seq scene-graph parser (e.g. FACTUAL's flan-t5-base-VG-factual-sg), via transformers."""

    kind = "seq2seq"

    def __init__(self, path: str | Path, device: str = "cpu", beams: int = 5, max_input_tokens: int = 256,
                 max_output_tokens: int = 128, batch_size: int = 8) -> None:
        p = Path(path)
        if not p.exists():
            raise EvalInputError(f"parser: {p} does not exist (give the local folder of a seq2seq checkpoint)")
        try:
            import torch
            from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
        except ImportError:
            raise EvalInputError("parser: the seq2seq parser needs torch and transformers: pip install 'scalecap[hf]'") from None
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(p))
            self.model = AutoModelForSeq2SeqLM.from_pretrained(str(p)).to(device).eval()
        except (OSError, ValueError) as exc:
            raise EvalInputError(f"parser: cannot load a seq2seq model from {p}: {str(exc).splitlines()[0]}") from None
        self._torch = torch
        self.path, self.device = str(p), device
        self.beams, self.max_in, self.max_out, self.batch = beams, max_input_tokens, max_output_tokens, batch_size

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "beams": self.beams, "max_output_tokens": self.max_out}

    def _parse_sync(self, sentences: list[str]) -> list[str]:
        out: list[str] = []
        for i in range(0, len(sentences), self.batch):
            chunk = [FACTUAL_PREFIX + s for s in sentences[i:i + self.batch]]
            enc = self.tokenizer(chunk, return_tensors="pt", padding=True, truncation=True, max_length=self.max_in)
            with self._torch.inference_mode():
                ids = self.model.generate(**enc.to(self.device), num_beams=self.beams, max_new_tokens=self.max_out)
            out.extend(self.tokenizer.batch_decode(ids, skip_special_tokens=True))
        return out

    async def parse(self, sentences: list[str]) -> list[str]:
        return await asyncio.to_thread(self._parse_sync, sentences) if sentences else []


class LLMParser:
    """An LLM backend prompted to write FACTUAL-style tuples (``prompts/scene_graph.txt``). Not official."""

    kind = "llm"

    def __init__(self, backend: Any, prompt: str, system: str | None, max_tokens: int = 256, concurrency: int = 8) -> None:
        self.backend, self.prompt, self.system = backend, prompt, system
        self.max_tokens, self.concurrency = max_tokens, concurrency

    def describe(self) -> dict[str, Any]:
        d = dict(self.backend.describe())
        d["kind"] = "llm:" + str(d.get("backend", "?"))
        return d

    async def parse(self, sentences: list[str]) -> list[str]:
        from ..backends.base import ChatPrompt, GenerationParams
        from .common import fill, gather_limited

        async def one(s: str) -> str:
            g = await self.backend.generate(ChatPrompt(user=fill(self.prompt, s), system=self.system),
                                            GenerationParams(max_tokens=self.max_tokens, temperature=0.0, stop=("\nSentence:",)))
            return g.text.split("\n\n")[0]

        return await gather_limited(sentences, one, self.concurrency)


class MeanPoolEmbedder:
    """Sentence embeddings from a local transformers encoder: mean (or CLS) pooling, L2-normalised.

    This is what a sentence-transformers folder such as all-mpnet-base-v2 computes (Transformer,
    mean Pooling, Normalize); its ``1_Pooling/config.json`` is read when present. Used when the
    ``sentence-transformers`` package is not installed.
    """

    def __init__(self, path: str | Path, device: str = "cpu", batch_size: int = 32) -> None:
        p = Path(path)
        if not p.exists():
            raise EvalInputError(f"embedder: {p} does not exist (give the local folder of a sentence-embedding model)")
        try:
            import torch
            from transformers import AutoModel, AutoTokenizer
        except ImportError:
            raise EvalInputError("embedder: needs torch and transformers: pip install 'scalecap[hf]'") from None
        self.pooling = "mean"
        pool_cfg = p / "1_Pooling" / "config.json"
        if pool_cfg.is_file():
            cfg = json.loads(pool_cfg.read_text())
            if cfg.get("pooling_mode_cls_token"):
                self.pooling = "cls"
            elif not cfg.get("pooling_mode_mean_tokens", True):
                raise EvalInputError(f"embedder: {pool_cfg} asks for a pooling mode other than mean or CLS")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(p))
            self.model = AutoModel.from_pretrained(str(p)).to(device).eval()
        except (OSError, ValueError) as exc:
            raise EvalInputError(f"embedder: cannot load a model from {p}: {str(exc).splitlines()[0]}") from None
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self._torch, self.path, self.device, self.batch = torch, str(p), device, batch_size
        self._cache: dict[str, Any] = {}

    def describe(self) -> dict[str, Any]:
        return {"kind": "transformers-mean-pool", "path": self.path, "pooling": self.pooling}

    def encode(self, texts: list[str]):
        import numpy as np

        todo = [t for t in dict.fromkeys(texts) if t not in self._cache]
        torch = self._torch
        for i in range(0, len(todo), self.batch):
            chunk = todo[i:i + self.batch]
            enc = self.tokenizer(chunk, return_tensors="pt", padding=True, truncation=True, max_length=256).to(self.device)
            with torch.inference_mode():
                hidden = self.model(**enc).last_hidden_state.float()
            if self.pooling == "cls":
                vec = hidden[:, 0]
            else:
                mask = enc["attention_mask"].unsqueeze(-1).float()
                vec = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            vec = torch.nn.functional.normalize(vec, dim=-1).cpu().numpy()
            for t, v in zip(chunk, vec):
                self._cache[t] = v
        return np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, 1))


class SentenceTransformerEmbedder:
    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        from sentence_transformers import SentenceTransformer

        p = Path(path)
        if not p.exists():
            raise EvalInputError(f"embedder: {p} does not exist (give the local folder of a sentence-transformers model)")
        self.model = SentenceTransformer(str(p), device=device)
        self.path = str(p)

    def describe(self) -> dict[str, Any]:
        return {"kind": "sentence-transformers", "path": self.path}

    def encode(self, texts: list[str]):
        return self.model.encode(texts, normalize_embeddings=True, batch_size=32, show_progress_bar=False)


def load_embedder(path: str | Path, device: str = "cpu") -> Any:
    if importlib.util.find_spec("sentence_transformers") is not None:
        return SentenceTransformerEmbedder(path, device)
    return MeanPoolEmbedder(path, device)


class NounTagger:
    """Nouns of a text (Penn tags NN*), with a spaCy English pipeline; ``None`` if none is installed."""

    def __init__(self) -> None:
        from ..text.content import AUTO_MODELS

        self.nlp = None
        self.name = "none"
        if importlib.util.find_spec("spacy") is None:
            return
        for name in AUTO_MODELS:
            if importlib.util.find_spec(name) is not None:
                import spacy

                self.nlp = spacy.load(name, exclude=["parser", "ner", "lemmatizer", "senter"])
                self.name = f"spacy:{name}"
                return

    def nouns(self, text: str, lemmatizer: Lemmatizer) -> set[str] | None:
        if self.nlp is None:
            return None
        return {lemmatizer.noun(t.text.lower()) for t in self.nlp(text) if t.tag_.startswith("NN")}


def load_stop_words(path: str | Path | None) -> frozenset[str]:
    if path is None:
        return DEFAULT_STOP_WORDS
    p = Path(path)
    if not p.is_file():
        raise EvalInputError(f"stop words: {p} does not exist")
    text = p.read_text(encoding="utf-8")
    words = re.findall(r"'([^']+)'|\"([^\"]+)\"", text) if re.search(r"\[\s*['\"]", text) else None
    if words:
        return frozenset(a or b for a, b in words)  # a Python list such as CAPTURE's stop_words.py
    return frozenset(w.strip() for w in text.splitlines() if w.strip() and not w.startswith("#"))


# ----------------------------------------------------------------------------- the metric

@dataclass
class CaptureConfig:
    parser: Any  # Seq2SeqParser | LLMParser
    synonyms: Synonyms | None
    lemmatizer: Lemmatizer
    embedder: Embedder | None = None
    stop_words: frozenset[str] = DEFAULT_STOP_WORDS
    stop_words_given: bool = False
    soft_threshold: float | None = None
    tagger: NounTagger | None = None

    def deviations(self) -> tuple[list[str], list[str]]:
        """(what makes this NOT the official metric, with what it would need; minor implementation notes)."""
        major: list[str] = []
        if getattr(self.parser, "kind", "") != "seq2seq":
            major.append("scene graphs come from an LLM prompt, not the FACTUAL seq2seq parser "
                         "(give a local copy of lizhuang144/flan-t5-base-VG-factual-sg with --parser)")
        if not hasattr(self.synonyms, "morphy"):
            major.append("synonym stage uses the COCO synonym table, not WordNet "
                         "(give WordNet's dict folder with --wordnet, e.g. from NLTK's wordnet corpus)")
        if self.embedder is None:
            major.append("no soft matching stage (give a local copy of sentence-transformers/all-mpnet-base-v2 with --embedder)")
        if self.soft_threshold is not None:
            major.append(f"soft similarities below {self.soft_threshold} count 0 (official: no threshold)")
        if not self.stop_words_given:
            major.append("object stop words are scalecap's short list (give CAPTURE's stop_words.py with --stop-words)")
        if self.tagger is None or self.tagger.nlp is None:
            major.append("no noun filter: no spaCy English pipeline installed (pip install 'scalecap[nlp]' and a model)")
        minor = ["sentences split by scalecap.text.sentences (official: NLTK punkt)",
                 "nouns tagged by spaCy (official: NLTK's perceptron tagger)",
                 "elements in first-seen order (official: Python set order, which varies between runs)"]
        if not hasattr(self.synonyms, "morphy"):
            minor.append("lemmas from scalecap's singulariser (official: WordNet morphy)")
        return major, minor

    def label(self) -> tuple[bool, str]:
        major, _ = self.deviations()
        if major:
            return False, "CAPTURE-fallback: NOT the official CAPTURE metric"
        return True, "CAPTURE (official configuration)"

    def describe(self) -> dict[str, Any]:
        return {
            "parser": self.parser.describe(),
            "synonyms": self.synonyms.describe() if self.synonyms is not None and hasattr(self.synonyms, "describe") else None,
            "lemmatizer": self.lemmatizer.name,
            "embedder": self.embedder.describe() if self.embedder is not None and hasattr(self.embedder, "describe") else None,
            "stop_words": "given" if self.stop_words_given else "scalecap default",
            "soft_threshold": self.soft_threshold,
            "noun_tagger": self.tagger.name if self.tagger else "none",
            "weights": {"alpha": ALPHA, "beta": BETA, "gamma": GAMMA},
        }


class CaptureEvaluator:
    def __init__(self, config: CaptureConfig) -> None:
        self.config = config
        self._cache: dict[str, tuple[Elements, list[str]]] = {}

    async def elements(self, texts: list[str]) -> list[Elements]:
        """Parse texts (each once, cached) into element lists."""
        from ..text.sentences import split_sentences

        todo = [t for t in dict.fromkeys(texts) if t not in self._cache]
        sentences: list[str] = []
        spans: list[tuple[int, int]] = []
        for t in todo:
            ss = [s.text for s in split_sentences(t)]
            spans.append((len(sentences), len(sentences) + len(ss)))
            sentences.extend(ss)
        graphs = await self.config.parser.parse(sentences) if sentences else []
        for t, (a, b) in zip(todo, spans):
            nouns = self.config.tagger.nouns(t, self.config.lemmatizer) if self.config.tagger else None
            el = build_elements(graphs[a:b], self.config.lemmatizer, nouns, self.config.stop_words)
            self._cache[t] = (el, graphs[a:b])
        return [self._cache[t][0] for t in texts]

    def graphs(self, text: str) -> list[str]:
        return self._cache[text][1]

    async def score(self, candidate: str, references: list[str]) -> dict[str, Any]:
        els = await self.elements([candidate] + references)
        c = self.config
        return score_sample(els[0], els[1:], c.synonyms, c.embedder, c.soft_threshold)


def load_references(path: str | Path) -> dict[str, list[str]]:
    """``{id: [ref, ...]}`` or ``{id: "ref"}`` JSON, or JSONL rows with an id and ``references``/``captions``/``caption``."""
    from .captions import ID_KEYS, _row_id
    from .common import read_json_or_jsonl, require_file

    p = require_file(path, "references")
    kind, data = read_json_or_jsonl(p, "references")
    out: dict[str, list[str]] = {}

    def put(key: str, v: Any, where: str) -> None:
        refs = [v] if isinstance(v, str) else v
        if not isinstance(refs, list) or not all(isinstance(x, str) for x in refs):
            raise EvalInputError(f"references: {where}: expected a string or a list of strings")
        refs = [r for r in refs if r.strip()]
        if refs:
            out.setdefault(key, []).extend(refs)

    if kind == "json" and isinstance(data, dict):
        for k, v in data.items():
            put(str(k), v, f"{p} entry {k!r}")
    elif isinstance(data, list):
        for n, row in enumerate(data, 1):
            if not isinstance(row, dict):
                raise EvalInputError(f"references: {p} row {n} is not an object")
            key = _row_id(row)
            if key is None:
                raise EvalInputError(f"references: {p} row {n} has no id (one of {', '.join(ID_KEYS)})")
            v = next((row[k] for k in ("references", "refs", "captions", "caption", "text") if k in row), None)
            if v is None:
                raise EvalInputError(f"references: {p} row {n} has no references/captions/caption field")
            put(key, v, f"{p} row {n}")
    else:
        raise EvalInputError(f"references: {p} must be a JSON object {{id: [refs]}} or JSONL rows")
    if not out:
        raise EvalInputError(f"references: {p} holds no references")
    return out


async def evaluate(captions: Any, references: dict[str, list[str]], evaluator: CaptureEvaluator,
                   limit: int | None = None, refined: Any = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Score every usable caption that has references (ids matched by ``common.KeyIndex``); with
    ``refined`` (a ``capture_refined.Refined``), the refined variant beside it."""
    from .common import KeyIndex

    index = KeyIndex(references.keys())
    jobs: list[tuple[str, str, str]] = []
    unknown: list[str] = []
    for key, text in captions.captions.items():
        ref_key = index.find(key)
        if ref_key is None:
            unknown.append(key)
        else:
            jobs.append((key, ref_key, text))
    if limit is not None:
        jobs = jobs[:limit]
    # Parse everything in one go (batched), then score.
    await evaluator.elements([t for _, _, t in jobs] + [r for _, k, _ in jobs for r in references[k]])
    samples = []
    for key, ref_key, text in jobs:
        s = await evaluator.score(text, references[ref_key])
        cand_el = (await evaluator.elements([text]))[0]
        samples.append({"id": key, "reference_id": ref_key, **{k: v for k, v in s.items() if k != "pairs"},
                        "candidate_elements": cand_el.to_dict(), "candidate_graphs": evaluator.graphs(text),
                        "pairs": s["pairs"]})
        if refined is not None:
            c = evaluator.config
            samples[-1]["refined"] = await refined.score(
                cand_el, await evaluator.elements(references[ref_key]), text, references[ref_key], ref_key,
                c.synonyms, c.embedder, c.soft_threshold)
    used = {k for _, k, _ in jobs}
    summary = aggregate(samples)
    if refined is not None:
        from .capture_refined import aggregate_refined

        summary["refined"] = aggregate_refined([s["refined"] for s in samples])
    summary.update({
        "unknown_ids": {"count": len(unknown), "ids": unknown[:100]},
        "unusable_captions": {"count": len(captions.unusable), "ids": dict(list(captions.unusable.items())[:100])},
        "references_without_caption": len([k for k in references if k not in used]) if limit is None else None,
        "partial": bool(unknown or captions.unusable),
    })
    return summary, samples
