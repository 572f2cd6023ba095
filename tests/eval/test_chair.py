"""CHAIR: vocabulary rules, singularisation, and the metric on a small COCO set worked out by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scalecap.eval.captions import from_mapping, load_captions
from scalecap.eval.chair import ChairVocabulary, evaluate, load_ground_truth, score_caption
from scalecap.eval.cli import app
from scalecap.eval.singular import singularize

DATA = Path(__file__).resolve().parent.parent / "data" / "eval"
runner = CliRunner()


@pytest.fixture(scope="module")
def vocab():
    return ChairVocabulary()


@pytest.mark.parametrize("plural, singular", [
    ("people", "person"), ("women", "woman"), ("men", "man"), ("mice", "mouse"), ("knives", "knife"),
    ("buses", "bus"), ("minibuses", "minibus"), ("glasses", "glass"), ("glass", "glass"), ("bus", "bus"),
    ("scissors", "scissors"), ("sheep", "sheep"), ("horses", "horse"), ("vases", "vase"), ("houses", "house"),
    ("benches", "bench"), ("sandwiches", "sandwich"), ("puppies", "puppy"), ("ties", "tie"), ("collies", "collie"),
    ("taxis", "taxi"), ("skis", "ski"), ("tennis", "tennis"), ("policemen", "policeman"), ("ramen", "ramen"),
    ("shoes", "shoe"), ("tomatoes", "tomato"), ("calves", "calf"), ("stoves", "stove"), ("children", "child"),
    ("toothbrushes", "toothbrush"), ("boxes", "box"), ("teeth", "tooth"), ("dogs", "dog"),
])
def test_singularize(plural, singular):
    assert singularize(plural) == singular


def test_vocabulary_loads_80_categories(vocab):
    assert len(vocab.categories) == 80
    assert vocab.inverse["iphone"] == "cell phone"  # lower-cased (the file says iPhone)
    assert vocab.inverse["motor bike"] == "motorcycle"  # leading space in the file stripped


@pytest.mark.parametrize("text, expected", [
    # two-word terms are one object, and not their last word
    ("A teddy bear on the bed.", [("teddy bear", "teddy bear"), ("bed", "bed")]),
    ("Two hot dogs and a dog.", [("hot dog", "hot dog"), ("dog", "dog")]),
    ("hot-dog", [("hot dog", "hot dog")]),
    ("traffic lights, stop signs, a fire hydrant and a parking meter",
     [("traffic light", "traffic light"), ("stop sign", "stop sign"), ("fire hydrant", "fire hydrant"),
      ("parking meter", "parking meter")]),
    ("wine glasses, a cell phone, a tennis racket, a baseball bat, sports balls",
     [("wine glass", "wine glass"), ("cell phone", "cell phone"), ("tennis racket", "tennis racket"),
      ("baseball bat", "baseball bat"), ("sports ball", "sports ball")]),
    ("motor bikes", [("motor bike", "motorcycle")]),
    # baby/adult + animal is the animal, not a person; passenger jet is the plane
    ("a baby elephant next to an adult giraffe", [("elephant", "elephant"), ("giraffe", "giraffe")]),
    ("a baby in a crib", [("baby", "person")]),
    ("a passenger jet", [("jet", "airplane")]),
    # toilet seat is the toilet, never a chair; "seat" with a toilet elsewhere in the caption is dropped
    ("a toilet seat", [("toilet", "toilet")]),
    ("The seat of the toilet is up.", [("toilet", "toilet")]),
    ("a seat", [("seat", "chair")]),
    ("a bow tie", [("tie", "tie")]),
    # plural forms and synonyms
    ("People, women and mice; knives on dining tables.",
     [("people", "person"), ("woman", "person"), ("mouse", "mouse"), ("knife", "knife"), ("dining table", "dining table")]),
    ("a pair of glasses", []),
    ("", []),
])
def test_mentions(vocab, text, expected):
    assert vocab.mentions(text) == expected


def test_category_of_annotation_names(vocab):
    assert vocab.category_of("dining tables") == "dining table"
    assert vocab.category_of("Cars") == "car"
    assert vocab.category_of("unicorn") is None


def test_chair_on_hand_worked_coco_set(vocab):
    gt = load_ground_truth([DATA / "coco_instances_mini.json", DATA / "coco_captions_mini.json"], vocab)
    # ground truth = instances + objects of the reference captions
    assert gt.objects["1"] == {"person", "dog"}
    assert gt.objects["3"] == {"cat", "couch", "remote"}  # no instances; all from its reference caption
    assert gt.objects["4"] == {"dining table", "cup", "laptop"}  # laptop only in the reference caption
    caps = load_captions(DATA / "chair_captions.json", numeric_ids=True)
    summary, images = evaluate(caps, gt, vocab)
    by_id = {r.image_id: r for r in images}
    # img 1 "Two women walk a puppy past a fire hydrant.": woman->person ok, puppy->dog ok, fire hydrant hallucinated
    assert by_id["1"].hallucinated == [("fire hydrant", "fire hydrant")] and len(by_id["1"].mentions) == 3
    # img 2 "A red car stops at the traffic lights near a bus.": car, traffic light ok; bus hallucinated
    assert by_id["2"].hallucinated == [("bus", "bus")] and len(by_id["2"].mentions) == 3
    # img 3 "A kitten sleeps on the sofa.": cat (kitten), couch (sofa): 2 mentions, none hallucinated
    assert by_id["3"].mentions == [("kitten", "cat"), ("sofa", "couch")] and not by_id["3"].hallucinated
    # img 4: cup, laptop (only in a reference caption: NOT hallucinated), dining table ok; teddy bear hallucinated
    assert by_id["4"].hallucinated == [("teddy bear", "teddy bear")] and len(by_id["4"].mentions) == 4
    # img 6: the empty caption is a caption: no mention, no hallucination, 0 words
    assert by_id["6"].mentions == [] and by_id["6"].words == 0
    # CHAIR_i = 3 hallucinated / 12 mentions; CHAIR_s = 3 of 5 captions
    assert summary["captions"] == 5
    assert (summary["mentions"], summary["hallucinated_mentions"]) == (12, 3)
    assert summary["chair_i"] == pytest.approx(0.25)
    assert summary["chair_s"] == pytest.approx(0.6)
    # recall: recalled 2 + 2 + 2 + 3 + 0 of ground truth 2 + 2 + 3 + 3 + 1
    assert summary["recall"] == pytest.approx(9 / 11)
    # words: 9 + 11 + 6 + 12 + 0 = 38 over 5 captions
    assert summary["mean_length_words"] == pytest.approx(7.6)
    assert summary["empty_captions"] == 1
    # "COCO_val2014_000000000005.jpg" names no annotated image: unknown, listed, not scored
    assert summary["unknown_ids"] == {"count": 1, "ids": ["COCO_val2014_000000000005.jpg"]}
    assert summary["partial"]


def test_id_rule_coco_numbers_and_duplicates(vocab):
    gt = load_ground_truth([DATA / "coco_instances_mini.json"], vocab)
    caps = from_mapping({"COCO_val2014_000000000002.jpg": "a car", "2": "a bus", "000000000001.png": "a dog"},
                        numeric_ids=True)
    summary, images = evaluate(caps, gt, vocab)
    assert [(r.id, r.image_id) for r in images] == [("COCO_val2014_000000000002.jpg", "2"), ("000000000001.png", "1")]
    assert summary["duplicate_captions"]["ids"] == ["2"]  # a second caption for image 2 is not scored


def test_simple_ground_truth_lists(vocab):
    gt = load_ground_truth([DATA / "chair_gt_simple.json"], vocab)
    assert gt.objects["1"] == {"person", "dog"} and gt.objects["2"] == {"car", "traffic light"}
    assert gt.unmapped == {"unicorn": 1}
    r = score_caption("3", "3", "A cat and a dog.", gt.objects["3"], vocab)
    assert r.hallucinated == [("dog", "dog")] and r.recalled == ["cat"]


def test_chair_cli_with_details(tmp_path):
    out = tmp_path / "chair.json"
    res = runner.invoke(app, ["chair", str(DATA / "chair_captions.json"), "-a", str(DATA / "coco_instances_mini.json"),
                              "-a", str(DATA / "coco_captions_mini.json"), "--details", "-o", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["summary"]["chair_s"] == pytest.approx(0.6) and doc["metric"] == "chair"
    assert doc["provenance"]["data"]["synonyms"]["sha256"]
    assert len(doc["provenance"]["data"]["annotations"]) == 2
    details = [json.loads(x) for x in out.with_name("chair.items.jsonl").read_text().splitlines()]
    assert len(details) == 5 and details[0]["hallucinated"] == [["fire hydrant", "fire hydrant"]]
    assert "partial" in res.output  # one unknown id


def test_chair_cli_without_details_writes_no_items(tmp_path):
    out = tmp_path / "c.json"
    res = runner.invoke(app, ["chair", str(DATA / "chair_captions_b.json"), "-a", str(DATA / "coco_instances_mini.json"),
                              "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert not out.with_name("c.items.jsonl").exists()
    s = json.loads(out.read_text())["summary"]
    # B: every mention is in the instances except "cat"/"couch" of image 3 (no instances, no captions given)
    assert s["hallucinated_mentions"] == 2 and s["chair_s"] == pytest.approx(1 / 5)


def test_ground_truth_jsonl_rows(vocab, tmp_path):
    p = tmp_path / "gt.jsonl"
    p.write_text('{"image_id": 5, "objects": ["giraffes", "trees"]}\n{"id": "7", "objects": []}\n')
    gt = load_ground_truth([p], vocab)
    assert gt.objects == {"5": {"giraffe"}, "7": set()} and gt.unmapped == {"trees": 1}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"image_id": 5}\n')
    with pytest.raises(Exception, match="needs image_id"):
        load_ground_truth([bad], vocab)
