"""CAPTURE: tuple parsing, element building, the three matching stages and the score, worked by hand;
the WordNet reader on a tiny database in WordNet's own format; and runs with tiny real models."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from scalecap.eval.capture import (DEFAULT_STOP_WORDS, CaptureConfig, Elements, RuleLemmatizer, Seq2SeqParser,
                                   TableSynonyms, WordNetLemmatizer, build_elements, greedy_match, is_synonym,
                                   load_stop_words, parse_tuples, score_pair, score_sample)
from scalecap.eval.cli import app
from scalecap.eval.common import EvalInputError
from scalecap.eval.wordnet import WordNet

DATA = Path(__file__).resolve().parent.parent / "data" / "eval"
runner = CliRunner()
COCO = TableSynonyms.coco()


# ----------------------------------------------------------------------------- parsing

def test_parse_tuples():
    ents, attrs, rels = parse_tuples(
        "( man , is , young ) , ( man , ride , bike ) , ( bike , is , Red ) , ( car , is , 2 ) , ( tree ) , ( broken , tuple")
    assert ents == ["man", "bike", "car", "tree"]
    assert attrs == [("man", "young"), ("bike", "red")]  # "2" is a count, not an attribute
    assert rels == [("man", "ride", "bike")]
    assert parse_tuples("") == ([], [], [])
    assert parse_tuples("gibberish without tuples") == ([], [], [])


def test_build_elements_lemmatises_dedupes_and_filters():
    graphs = ["( dogs , is , brown ) , ( dogs , on , grass ) , ( background , is , blurry )",
              "( dog , is , brown ) , ( ball , is , red ) , ( table , is , made of wood )"]
    # nouns of the text (lemmatised); "table" is not among them, "background" is a stop word
    el = build_elements(graphs, RuleLemmatizer(), {"dog", "grass", "ball", "background"}, DEFAULT_STOP_WORDS)
    assert el.objects == ["dog", "grass", "ball"]
    # (dog, brown) once; "made of wood" has " of"; blurry stays: as in CAPTURE, attributes are kept when their
    # entity is a noun of the text, and only objects are stop-word filtered
    assert el.attributes == ["brown", "blurry", "red"]
    assert el.relations == [("dog", "on", "grass")]
    el2 = build_elements(graphs, RuleLemmatizer(), None, DEFAULT_STOP_WORDS)  # no noun filter
    assert "table" in el2.objects and "background" not in el2.objects


def test_stop_words_file_formats(tmp_path):
    (tmp_path / "a.txt").write_text("# comment\nscene\nimage\n")
    (tmp_path / "b.py").write_text("stop_words_list = [\n    'scene',\n    \"city life\",\n]\n")
    assert load_stop_words(tmp_path / "a.txt") == {"scene", "image"}
    assert load_stop_words(tmp_path / "b.py") == {"scene", "city life"}
    assert load_stop_words(None) is DEFAULT_STOP_WORDS


# ----------------------------------------------------------------------------- matching, by hand

def syn(a, b):
    return is_synonym(a, b, COCO)


def test_exact_stage_runs_before_synonym_stage():
    # "automobile" comes first and is a synonym of "car", but the exact stage gives "car" to "car".
    m = greedy_match(["automobile", "car"], ["car"], syn)
    assert m.exact == [(1, 0)] and m.synonym == []
    p, r, f = m.prf()
    assert p == pytest.approx(1 / 2, rel=1e-5) and r == pytest.approx(1.0, rel=1e-5)
    assert f == pytest.approx(2 * 0.5 * 1 / 1.5, rel=1e-5)  # 0.667


def test_synonym_stage_is_first_come_first_served():
    # sofa, couch and settee are one COCO synonym group: the first unmatched candidate takes the reference.
    m = greedy_match(["sofa", "couch"], ["settee"], syn)
    assert m.synonym == [(0, 0)] and m.hard == 1
    # each candidate takes the FIRST unmatched reference that fits, even if a later one fits better
    m2 = greedy_match(["puppy", "dog"], ["canine", "puppy"], syn)
    assert m2.exact == [(0, 1)] and m2.synonym == [(1, 0)]


def test_ties_and_repeats():
    # two equal candidates and one equal reference: only one match (each reference is used once)
    m = greedy_match(["dog", "dog"], ["dog"], syn)
    assert m.exact == [(0, 0)] and m.prf()[0] == pytest.approx(0.5, rel=1e-5)
    # substring counts as a synonym, as in CAPTURE ("tree" in "trees", "car" in "red car")
    assert syn("tree", "trees") and syn("red car", "car") and not syn("lie on", "sit on")


def test_empty_sides():
    m = greedy_match([], ["dog"], syn)
    assert m.prf() == (0.0, pytest.approx(0.0), 0.0)
    p, r, f = greedy_match([], [], syn).prf()
    assert (p, r, f) == (0.0, 0.0, 0.0)  # nothing to find and nothing found: 0, as the reference implementation


class FixedVectors:
    """Known unit vectors for the soft-stage arithmetic (an Embedder by protocol, no model)."""

    def __init__(self, table):
        self.table = table

    def encode(self, texts):
        return np.array([self.table[t] for t in texts], dtype=float)


def test_soft_stage_arithmetic():
    emb = FixedVectors({"a": [1.0, 0.0], "b": [0.0, 1.0], "c": [0.6, 0.8]})
    m = greedy_match(["x", "a", "b"], ["x", "c"], None, emb)
    # exact: x. Left: cands a, b; refs c. S = [[0.6], [0.8]]: cands gain 0.6 + 0.8 = 1.4, refs gain max = 0.8
    assert m.hard == 1 and m.soft_cand == pytest.approx(1.4) and m.soft_ref == pytest.approx(0.8)
    p, r, f = m.prf()
    assert p == pytest.approx((1 + 1.4) / 3, rel=1e-5)  # 0.8
    assert r == pytest.approx((1 + 0.8) / 2, rel=1e-5)  # 0.9
    assert f == pytest.approx(2 * 0.8 * 0.9 / 1.7, rel=1e-5)  # 0.847
    # with a threshold of 0.7 the 0.6 similarity counts 0 (not official)
    t = greedy_match(["x", "a", "b"], ["x", "c"], None, emb, soft_threshold=0.7)
    assert t.soft_cand == pytest.approx(0.8) and t.soft_ref == pytest.approx(0.8)


CAND = ["( dog , is , brown ) , ( dog , lie on , grass )", "( ball , is , red ) , ( ball , near , dog )"]
REF = ["( dog , is , brown ) , ( lawn , is , green ) , ( dog , sit on , lawn ) , ( ball , is , red ) , "
       "( dog , next to , ball )"]


def test_score_pair_by_hand():
    lem = RuleLemmatizer()
    cand = build_elements(CAND, lem, None, DEFAULT_STOP_WORDS)
    ref = build_elements(REF, lem, None, DEFAULT_STOP_WORDS)
    assert cand.objects == ["dog", "grass", "ball"] and ref.objects == ["dog", "lawn", "ball"]
    s = score_pair(cand, ref, COCO)
    # objects: dog, ball exact; grass/lawn no match -> P = R = F1 = 2/3
    assert s["object"]["f1"] == pytest.approx(2 / 3, rel=1e-5)
    # attributes: cand [brown, red], ref [brown, green, red] -> P = 1, R = 2/3, F1 = 0.8
    assert s["attribute"]["precision"] == pytest.approx(1.0, rel=1e-5)
    assert s["attribute"]["f1"] == pytest.approx(0.8, rel=1e-5)
    # relations: (dog, lie on, grass) vs (dog, sit on, lawn): "lie on" is no synonym of "sit on" -> none
    assert s["relation"]["f1"] == 0.0
    # score = (0.5 * 2/3 + 0.5 * 0.8 + 0.2 * 0) / 1.2 = 0.6111
    assert s["score"] == pytest.approx((0.5 * 2 / 3 + 0.5 * 0.8) / 1.2, rel=1e-5)


def test_score_sample_is_the_mean_over_references():
    a = Elements(objects=["dog"], attributes=["brown"], relations=[])
    same = Elements(objects=["dog"], attributes=["brown"], relations=[])
    other = Elements(objects=["cat"], attributes=["white"], relations=[])
    s = score_sample(a, [same, other], COCO)
    # vs same: F1 obj = F1 attr ~ 1, rel 0 -> (0.5 + 0.5) / 1.2; vs other: 0. Mean: 0.4167
    assert s["score"] == pytest.approx((1.0 / 1.2) / 2, rel=1e-4)
    assert s["object_f1"] == pytest.approx(0.5, rel=1e-4)
    with pytest.raises(EvalInputError):
        score_sample(a, [], COCO)


# ----------------------------------------------------------------------------- WordNet format

def write_wordnet(folder: Path, synsets: dict[str, list[list[str]]], exc: dict[str, dict[str, str]]) -> None:
    """A WordNet database in its own format (index/data files with byte offsets) from synset lists."""
    folder.mkdir(parents=True, exist_ok=True)
    names = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
    for pos, name in names.items():
        header = "  1 Test database in WordNet's file format.\n"
        data, offsets = header.encode(), []
        for words in synsets.get(pos, []):
            offset = len(data)
            offsets.append(offset)
            line = f"{offset:08d} 03 {pos} {len(words):02x} " + " ".join(f"{w} 0" for w in words) + " 000 | test\n"
            data += line.encode()
        (folder / f"data.{name}").write_bytes(data)
        lemmas: dict[str, list[int]] = {}
        for off, words in zip(offsets, synsets.get(pos, [])):
            for w in words:
                lemmas.setdefault(w.lower().split("(")[0], []).append(off)  # markers such as (a) only in data
        lines = [header] + [f"{lemma} {pos} {len(offs)} 0 {len(offs)} 0 " + " ".join(f"{o:08d}" for o in offs) + "  \n"
                            for lemma, offs in sorted(lemmas.items())]
        (folder / f"index.{name}").write_text("".join(lines))
        if pos in exc:
            (folder / f"{name}.exc").write_text("".join(f"{k} {v}\n" for k, v in exc[pos].items()))


@pytest.fixture()
def wordnet(tmp_path):
    write_wordnet(tmp_path / "dict", {
        "n": [["dog", "domestic_dog"], ["grass"], ["lawn", "sward"], ["sward", "greensward", "turf", "grass"], ["goose"],
              ["clock_tower"]],
        "a": [["big(a)", "large"]],
        "v": [["sit", "sit_down"]],
    }, {"n": {"geese": "goose"}, "a": {"bigger": "big"}})
    return WordNet(tmp_path)  # finds the dict/ folder inside


def test_wordnet_reader(wordnet):
    assert wordnet.lemmatize("dogs", "n") == "dog"
    assert wordnet.lemmatize("geese", "n") == "goose"  # exception list
    assert wordnet.lemmatize("bigger", "a") == "big"
    assert wordnet.lemmatize("unknownish", "n") == "unknownish"
    assert wordnet.synonyms("dogs") == {"dog", "domestic_dog"}
    assert wordnet.synonyms("big") == {"big", "large"}  # the (a) marker is stripped
    # grass and lawn share the synset with "sward": synonyms for CAPTURE
    assert is_synonym("grass", "lawn", wordnet) and not is_synonym("dog", "lawn", wordnet)
    lem = WordNetLemmatizer(wordnet)
    assert lem.noun("clock towers") == "clock tower" and lem.noun("red dogs") == "red dog"


def test_wordnet_folder_errors(tmp_path):
    with pytest.raises(EvalInputError, match="not a WordNet dict folder"):
        WordNet(tmp_path)


def test_config_labels_what_is_not_official(wordnet):
    class P:
        kind = "seq2seq"

        def describe(self):
            return {"kind": "seq2seq"}

    full = CaptureConfig(parser=P(), synonyms=wordnet, lemmatizer=WordNetLemmatizer(wordnet),
                         embedder=FixedVectors({}), stop_words_given=True, tagger=None)
    major, _ = full.deviations()
    assert major == ["no noun filter: no spaCy English pipeline installed (pip install 'scalecap[nlp]' and a model)"]
    fallback = CaptureConfig(parser=P(), synonyms=COCO, lemmatizer=RuleLemmatizer())
    official, label = fallback.label()
    assert not official and "NOT the official" in label
    text = " ".join(fallback.deviations()[0])
    assert "--wordnet" in text and "--embedder" in text and "--stop-words" in text


# ----------------------------------------------------------------------------- tiny real models

@pytest.mark.slow
def test_capture_cli_with_llm_parser_and_embedder(tiny_models, tmp_path):
    qwen2 = str(tiny_models["qwen2"])
    out = tmp_path / "capture.json"
    res = runner.invoke(app, ["capture", str(DATA / "capture_captions.json"), "-r", str(DATA / "capture_refs.json"),
                              "--parser-llm", qwen2, "--parser-max-tokens", "6", "--embedder", qwen2, "--details",
                              "-o", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["official"] is False and "NOT the official" in doc["label"]
    assert any("LLM prompt" in d for d in doc["deviations"])
    assert not any("soft matching" in d for d in doc["deviations"])  # the embedder was given
    s = doc["summary"]
    assert s["captions"] == 2 and s["unknown_ids"]["ids"] == ["img9"] and s["partial"]
    assert s["score"] is not None and 0.0 <= s["score"] <= 1.0
    assert doc["provenance"]["models"]["parts"]["embedder"]["kind"] == "transformers-mean-pool"
    rows = [json.loads(x) for x in out.with_name("capture.items.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and len(rows[0]["pairs"]) == 2  # img1 has two references
    assert "NOT the official CAPTURE metric" in res.output


def test_capture_needs_a_parser():
    res = runner.invoke(app, ["capture", str(DATA / "capture_captions.json"), "-r", str(DATA / "capture_refs.json")])
    assert res.exit_code == 2 and "needs a scene-graph parser" in res.output


@pytest.mark.slow
def test_seq2seq_parser_runs_a_real_t5(tiny_models, tmp_path):
    """A tiny random T5 with the tiny Qwen tokenizer: the seq2seq path runs for real (its text is gibberish)."""
    import torch
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    tok = AutoTokenizer.from_pretrained(tiny_models["qwen2"])
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    torch.manual_seed(0)
    cfg = T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=2,
                   decoder_start_token_id=pad, pad_token_id=pad, eos_token_id=tok.eos_token_id)
    T5ForConditionalGeneration(cfg).save_pretrained(tmp_path / "t5")
    tok.save_pretrained(tmp_path / "t5")
    parser = Seq2SeqParser(tmp_path / "t5", beams=2, max_output_tokens=8)
    outs = asyncio.run(parser.parse(["A dog on the grass.", "A red ball."]))
    assert len(outs) == 2 and all(isinstance(o, str) for o in outs)
    assert parser.describe()["kind"] == "seq2seq"
    with pytest.raises(EvalInputError, match="does not exist"):
        Seq2SeqParser(tmp_path / "nope")
