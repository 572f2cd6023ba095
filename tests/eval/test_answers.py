"""Reading options, yes/no and judge grades out of free model text (pure rules)."""

from __future__ import annotations

import pytest

from scalecap.eval.answers import extract_option, extract_yes_no, parse_grade

OPTIONS = {"A": "red car", "B": "car", "C": "blue bus", "D": "dog"}


@pytest.mark.parametrize("text, expected", [
    ("B", "B"), ("(C)", "C"), ("d.", "D"), ("**B**", "B"),
    ("The answer is D.", "D"), ("Answer: C", "C"), ("The correct option is (A) red car", "A"),
    ("answer: B because A is wrong", "B"),  # an explicit cue wins over other letters
    ("B. car", "B"),  # leading letter
    ("I am sure: C", "C"),  # "I" followed by a lowercase word is the pronoun
    ("A dog runs across the road.", "D"),  # "A" + lowercase word is the article; then option text "dog"
    ("I think it is a red car", "A"),  # "car" (B) only occurs inside "red car" (A): A
    ("I think it is the car", "B"),
])
def test_extract_option_finds_the_one_option(text, expected):
    assert extract_option(text, OPTIONS).value == expected


@pytest.mark.parametrize("text", ["A and B", "", "   ", "no idea", "C or D"])
def test_extract_option_refuses_ambiguous_or_empty(text):
    got = extract_option(text, OPTIONS)
    assert got.value is None and got.how


def test_letters_outside_the_options_are_ignored():
    assert extract_option("E", {"A": "x", "B": "y"}).value is None
    assert extract_option("The answer is E, or maybe B", {"A": "x", "B": "y"}).value == "B"


@pytest.mark.parametrize("text, expected", [
    ("Yes, it is.", "yes"), ("no.", "no"), ("I would say yes", "yes"), ("**No**", "no"),
    ("yes and no", "yes"),  # first word decides
    ("maybe", None), ("It could be yes or no", None), ("", None),
])
def test_extract_yes_no(text, expected):
    assert extract_yes_no(text).value == expected


@pytest.mark.parametrize("text, score", [
    ("0.5", 0.5), ("1.0", 1.0), ("0", 0.0), (".7", 0.7), ("| 0.4", 0.4), ("Correctness: 0.9", 0.9),
    ("0.8.", 0.8), ("it is 0.3 good", 0.3),  # the only number
    ("1 or 0.5", 1.0),  # a number at the start wins
])
def test_parse_grade_reads_scores(text, score):
    g = parse_grade(text)
    assert g.score == pytest.approx(score) and g.reason == "ok"


@pytest.mark.parametrize("text, why", [
    ("", "empty"), ("\n\n", "empty"), ("tz tz tz", "no number"), ("3.0", "outside"), ("42", "outside"),
    ("between 0.2 and 0.4", "several numbers"),
])
def test_parse_grade_refuses_with_a_reason(text, why):
    g = parse_grade(text)
    assert g.score is None and why in g.reason
