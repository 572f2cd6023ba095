"""Refined CAPTURE on a hand-worked case: every expected number derived by hand in the comments."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from scalecap.eval.capture import Elements, TableSynonyms, score_pair
from scalecap.eval.capture_refined import is_yes, refined_attributes, refined_pair

SYN = TableSynonyms([["table", "desk"]])
CAND = Elements(objects=["cat", "table", "lamp", "dragon"],
                attributes=["orange", "sleeping", "wooden", "bright", "purple"],
                relations=[("cat", "on", "table"), ("dragon", "above", "cat")],
                attribute_pairs=[("cat", "orange"), ("cat", "sleeping"), ("table", "wooden"), ("lamp", "bright"),
                                 ("dragon", "purple")])
REF = Elements(objects=["cat", "desk"], attributes=["orange", "wooden", "brown"], relations=[("cat", "on", "desk")],
               attribute_pairs=[("cat", "orange"), ("desk", "wooden"), ("desk", "brown")])
EXTRA = ["lamp"]  # in the image, in no reference
CAND_TEXT, REF_TEXT = "CANDIDATE CAPTION", "REFERENCE TEXT"


async def judge(questions):
    """A judge that knows the truth: the cat is on the table/desk; there is no dragon."""
    truth = {(REF_TEXT, "cat on table"): "Yes.", (REF_TEXT, "dragon above cat"): "No, there is no dragon.",
             (CAND_TEXT, "cat on desk"): "yes"}
    return [truth[q] for q in questions]


def test_refined_capture_by_hand():
    out = asyncio.run(refined_pair(CAND, REF, CAND_TEXT, REF_TEXT, EXTRA, SYN, judge))
    # Objects. Precision against ref + extra = [cat, desk, lamp]: cat exact, lamp exact, table~desk
    # synonym -> 3 of 4 (the dragon is wrong) = 0.75. Recall against ref only: cat, desk -> 2/2 = 1.
    # F1 = 2 * 0.75 * 1 / 1.75 = 6/7.
    o = out["object"]
    assert (o["precision"], o["recall"], o["f1"]) == pytest.approx((0.75, 1.0, 6 / 7), abs=1e-5)
    # Attributes, per object pair (cat-cat 1.0, table-desk 1.0). Candidate side: cat {orange, sleeping},
    # table {wooden}, dragon {purple} = 4 (lamp's "bright" is unverifiable: lamp matches only an extra
    # object). Matched: cat orange, table wooden = 2 -> P = 2/4 = 0.5. Reference side: 3 attributes,
    # 2 matched -> R = 2/3. F1 = 2 * 0.5 * (2/3) / (0.5 + 2/3) = 4/7.
    a = out["attribute"]
    assert (a["n_cand"], a["n_ref"]) == (4, 3)
    assert (a["precision"], a["recall"], a["f1"]) == pytest.approx((0.5, 2 / 3, 4 / 7), abs=1e-5)
    # Relations: candidate "cat on table" yes, "dragon above cat" no -> P = 1/2; reference "cat on desk"
    # found in the candidate -> R = 1/1. F1 = 2 * 0.5 * 1 / 1.5 = 2/3.
    r = out["relation"]
    assert (r["precision"], r["recall"], r["f1"]) == pytest.approx((0.5, 1.0, 2 / 3), abs=1e-5)
    # Score = (0.5 * 6/7 + 0.5 * 4/7 + 0.2 * 2/3) / 1.2 = (5/7 + 2/15) / 1.2 = (89/105) / 1.2 = 0.706349...
    assert out["score"] == pytest.approx((0.5 * 6 / 7 + 0.5 * 4 / 7 + 0.2 * 2 / 3) / 1.2, abs=1e-5)
    assert out["score"] == pytest.approx(0.706349, abs=1e-5)
    # Against plain CAPTURE on the same elements: the lamp is an error there (object P = 2/4) and
    # attributes are one bag (orange, wooden of 5 -> P = 2/5).
    plain = score_pair(CAND, REF, SYN)
    assert plain["object"]["precision"] == pytest.approx(0.5, abs=1e-5)
    assert plain["attribute"]["precision"] == pytest.approx(0.4, abs=1e-5)


class TwoDimEmbedder:
    """Fixed unit vectors: kitten and cat at cosine 0.8."""

    vectors = {"kitten": [0.8, 0.6], "cat": [1.0, 0.0]}

    def encode(self, texts):
        return np.array([self.vectors[t] for t in texts])


def test_attributes_are_weighted_by_object_similarity():
    # kitten-cat pair only through the soft stage, weight cos = 0.8*1 + 0.6*0 = 0.8; the one attribute
    # each (orange) matches exactly -> credit 0.8 on both sides -> P = R = 0.8/1.
    cand = Elements(objects=["kitten"], attribute_pairs=[("kitten", "orange")])
    ref = Elements(objects=["cat"], attribute_pairs=[("cat", "orange")])
    a = refined_attributes(cand, ref, [], None, TwoDimEmbedder())
    assert a["pairs"] == [["kitten", "cat", 0.8]]
    assert (a["precision"], a["recall"]) == pytest.approx((0.8, 0.8), abs=1e-5)
    # without an embedder the pair is not made: nothing matched
    assert refined_attributes(cand, ref, [], None)["precision"] == pytest.approx(0.0)


@pytest.mark.parametrize("reply, yes", [("Yes.", True), ("**yes**", True), ("yes, it is", True), ("No", False),
                                        ("", False), ("Yesterday", False), ("It is yes", False)])
def test_yes_is_the_first_word(reply, yes):
    assert is_yes(reply) is yes
