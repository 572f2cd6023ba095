"""Edge cases of the sentence splitter found in real VLM captions (issue 13), and a sanity check of
the splitter on the 436 real Qwen2.5-VL captions in tests/data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from scalecap.text.sentences import split_sentences

CAPTIONS = Path(__file__).resolve().parents[1] / "data" / "mmvet_scalecap_captions.jsonl"


def texts(text: str) -> list[str]:
    return [s.text for s in split_sentences(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Dotted initialisms before a proper noun go on; before a sentence opener they end it.
        ("The U.S. Army tank is green.", ["The U.S. Army tank is green."]),
        ("A U.S. Navy jet flies. It is grey.", ["A U.S. Navy jet flies.", "It is grey."]),
        ("The U.K. Parliament is shown.", ["The U.K. Parliament is shown."]),
        ("Trains of the D.C. Metro wait.", ["Trains of the D.C. Metro wait."]),
        ("It was made in the U.S. The label says so.",
         ["It was made in the U.S.", "The label says so."]),
        ("The flag of the U.S. Its stars are white.",
         ["The flag of the U.S.", "Its stars are white."]),
        ("A sign reads U.S.A. Below it, a car waits.",
         ["A sign reads U.S.A.", "Below it, a car waits."]),
        ("Sold by J.R. Simplot Company.", ["Sold by J.R. Simplot Company."]),
        ("It is in Washington, D.C. There are tourists.",
         ["It is in Washington, D.C.", "There are tourists."]),
        ('A box marked "U.S. Mail" sits here.', ['A box marked "U.S. Mail" sits here.']),
        # Personal initials after a name word.
        ("John F. Kennedy smiles. He waves.", ["John F. Kennedy smiles.", "He waves."]),
        ("A portrait of George W. Bush hangs.", ["A portrait of George W. Bush hangs."]),
        # A single letter that is not an initial still ends a sentence.
        ("The answer is option A. The rest are wrong.",
         ["The answer is option A.", "The rest are wrong."]),
        ("See Plan B. The map shows it.", ["See Plan B.", "The map shows it."]),
        # Markdown numbered headings and bold list items stay whole.
        ("### 1. Overview\nA cat sits.", ["### 1. Overview", "A cat sits."]),
        ("#### 2. Details of the scene\nIt rains.", ["#### 2. Details of the scene", "It rains."]),
        ("**1. Scene Overview:** A red car is parked.",
         ["**1. Scene Overview:** A red car is parked."]),
        ("1. **Background:** The wall is white.", ["1. **Background:** The wall is white."]),
        ("- **2. Lighting:** Soft light. Shadows are long.",
         ["- **2. Lighting:** Soft light.", "Shadows are long."]),
        ("### Conclusion\nThe image is calm.", ["### Conclusion", "The image is calm."]),
        ("**Analysis**: The chart rises. It peaks in 2000.",
         ["**Analysis**: The chart rises.", "It peaks in 2000."]),
        # Numbers, money, dates and abbreviations mid-sentence.
        ("It costs $1,800.00 in total. A tax is added.",
         ["It costs $1,800.00 in total.", "A tax is added."]),
        ("The GDP is 1,127.88 billion U.S. dollars.", ["The GDP is 1,127.88 billion U.S. dollars."]),
        ("The event is on Dec. 25 at noon.", ["The event is on Dec. 25 at noon."]),
        ("Page No. 12 is open. It is torn.", ["Page No. 12 is open.", "It is torn."]),
        ("Dr. Smith and Prof. Lee talk.", ["Dr. Smith and Prof. Lee talk."]),
        ("Fruits (e.g. apples) are sold. Prices vary.",
         ["Fruits (e.g. apples) are sold.", "Prices vary."]),
        # Lists and quotes.
        ("- $2,000\n- $2,500", ["- $2,000", "- $2,500"]),
        ('The sign says "Stop." A car waits.', ['The sign says "Stop."', "A car waits."]),
        ("It reads: 1. Mix. 2. Bake.", ["It reads: 1. Mix.", "2. Bake."]),
        ("Is it a cat? Yes! It purrs.", ["Is it a cat?", "Yes!", "It purrs."]),
        ("A range of 1980-2028. The axis is labelled.",
         ["A range of 1980-2028.", "The axis is labelled."]),
        ("The value is approx. 3 m. It is tall.", ["The value is approx. 3 m.", "It is tall."]),
    ],
)
def test_edge_cases(text: str, expected: list[str]) -> None:
    assert texts(text) == expected


def _real_sentences() -> list[str]:
    rows = [json.loads(line) for line in CAPTIONS.read_text(encoding="utf-8").splitlines()]
    return [s.text for r in rows for k in ("ori_caption", "final_caption")
            for s in split_sentences(r[k])]


def test_real_captions_have_no_marker_fragments() -> None:
    """No sentence of the real captions is a bare list number or a broken heading (``1.``, ``**1.``)."""
    sentences = _real_sentences()
    assert len(sentences) > 9000
    fragments = [s for s in sentences if re.fullmatch(r"[#*_\-\s]*\(?\d{1,3}[.)]\**", s)]
    assert fragments == []
    # A sentence starts lowercase only where the caption itself does ("where:" after a formula).
    assert [s for s in sentences if s[0].islower()] == ["where:"]


def test_real_captions_keep_initialisms_before_proper_nouns() -> None:
    """The two real captions with "U.S. Navy" and "J.R. Simplot" keep those sentences whole."""
    sentences = _real_sentences()
    assert any("the U.S. Navy's fleet" in s for s in sentences)
    assert any("J.R. Simplot Company" in s for s in sentences)


@pytest.mark.parametrize("unit", ["\\(a. ", "\\[a. "])
def test_unclosed_openers_are_searched_once(unit: str) -> None:
    """An unclosed ``\\(`` made the old lazy regex rescan to the end from every opener (quadratic:
    10.2 s at 80k characters). Now each kind of opener is searched for its closer once after it
    fails: count the closer searches (``str.find`` calls), which the regex could not show."""
    import sys

    from scalecap.text.sentences import _protected_spans

    text = unit * 5_000
    finds = 0

    def count(frame, event, arg):
        nonlocal finds
        if event == "c_call" and getattr(arg, "__name__", "") == "find":
            finds += 1

    sys.setprofile(count)
    try:
        spans = _protected_spans(text, 0, len(text))
    finally:
        sys.setprofile(None)
    assert spans == [] and finds == 1


def test_closed_spans_stay_whole_next_to_unclosed_ones() -> None:
    text = "Solve \\( x. y \\) now. Then \\( a. B. The end."
    assert texts(text) == ["Solve \\( x. y \\) now.", "Then \\( a.", "B. The end."]  # "B." reads as a list marker
