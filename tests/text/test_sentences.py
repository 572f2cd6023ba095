import json
import random
import sys
from pathlib import Path

import pytest

from scalecap.text import Sentence, split_sentences

CAPTIONS = Path(__file__).resolve().parent.parent / "data" / "mmvet_scalecap_captions.jsonl"


def texts(text: str) -> list[str]:
    return [s.text for s in split_sentences(text)]


def check_partition(text: str) -> None:
    """Every non-space character lies in exactly one sentence; sentences are ordered, stripped."""
    sentences = split_sentences(text)
    covered = [0] * len(text)
    previous_end = 0
    for s in sentences:
        assert isinstance(s, Sentence)
        assert s.text == text[s.start : s.end]
        assert previous_end <= s.start < s.end <= len(text)
        assert not text[s.start].isspace() and not text[s.end - 1].isspace()
        for i in range(s.start, s.end):
            covered[i] += 1
        previous_end = s.end
    for i, char in enumerate(text):
        assert covered[i] == 1 if not char.isspace() else covered[i] <= 1, (text, i)


def load_captions() -> list[str]:
    rows = [json.loads(line) for line in CAPTIONS.read_text(encoding="utf-8").splitlines() if line]
    return [row[key] for row in rows for key in ("ori_caption", "final_caption")]


def test_period_newline() -> None:
    assert texts("A dog runs.\nA cat sleeps.") == ["A dog runs.", "A cat sleeps."]


@pytest.mark.parametrize("quote", ['"', "”", "'", "’"])
def test_closing_quote_belongs_to_sentence(quote: str) -> None:
    opening = {"”": "“", "’": "‘"}.get(quote, quote)
    text = f"The sign says {opening}Stop.{quote} The car halts."
    assert texts(text) == [f"The sign says {opening}Stop.{quote}", "The car halts."]


def test_bracket_then_period() -> None:
    assert texts("A hat (red). A coat (blue).") == ["A hat (red).", "A coat (blue)."]


def test_exclamation_and_question_before_newline() -> None:
    assert texts("Wow!\nIs it a cat?\nYes") == ["Wow!", "Is it a cat?", "Yes"]


def test_exclamation_inside_sentence_quote() -> None:
    assert texts('The sign reads "Stop!" and a car waits. Next.') == [
        'The sign reads "Stop!" and a car waits.',
        "Next.",
    ]


def test_markdown_bullets_are_sentences() -> None:
    text = "Items:\n- First item\n- Second item\n* Third item\n• Fourth item"
    expected = ["Items:", "- First item", "- Second item", "* Third item", "• Fourth item"]
    assert texts(text) == expected


def test_indented_bullets() -> None:
    text = "1. **Title:**\n   - The title reads Hello\n   - Below it there is a line"
    assert texts(text) == ["1. **Title:**", "- The title reads Hello", "- Below it there is a line"]


def test_headers_are_sentences() -> None:
    text = "# Title\nBody text here\n## Sub Header\n**Header:**\nMore text\n**Bold Title**\nEnd"
    assert texts(text) == [
        "# Title",
        "Body text here",
        "## Sub Header",
        "**Header:**",
        "More text",
        "**Bold Title**",
        "End",
    ]


def test_numbered_list_marker_is_not_a_sentence_end() -> None:
    text = (
        "Steps:\n1. **Preheat**: Preheat your oven to 350°F (175°C).\n"
        "2. Mix the flour.\n10. Serve."
    )
    assert texts(text) == [
        "Steps:",
        "1. **Preheat**: Preheat your oven to 350°F (175°C).",
        "2. Mix the flour.",
        "10. Serve.",
    ]


def test_numbered_list_item_with_several_sentences() -> None:
    assert texts("1. The cat sits. It is gray.\n2. A dog.") == [
        "1. The cat sits.",
        "It is gray.",
        "2. A dog.",
    ]


def test_number_at_sentence_end_still_ends_it() -> None:
    assert texts("The count is 5. The sum is 12.") == ["The count is 5.", "The sum is 12."]


def test_inline_numbered_list() -> None:
    assert texts("Steps: 1. Preheat. 2. Mix.") == ["Steps: 1. Preheat.", "2. Mix."]


def test_decimals_prices_percentages() -> None:
    text = "It costs $3.49 today. The rate is 0.5% now. Pi is 3.14. A 3.5 m pole."
    assert texts(text) == [
        "It costs $3.49 today.",
        "The rate is 0.5% now.",
        "Pi is 3.14.",
        "A 3.5 m pole.",
    ]


@pytest.mark.parametrize(
    "sentence",
    [
        "Fruits, e.g. apples, are sold here.",
        "One fruit, i.e. an apple, is shown.",
        "The U.S. flag waves.",
        "Dr. Smith waves.",
        "Mr. Jones and Mrs. Jones wave.",
        "We saw cats, dogs, etc. and more.",
        "Cats vs. dogs are shown.",
        "The jersey shows No. 5 in white.",
        "See Fig. 3 for the plot.",
        "The St. Louis arch is tall.",
    ],
)
def test_abbreviations(sentence: str) -> None:
    assert texts(f"{sentence} The next one.") == [sentence, "The next one."]


def test_abbreviation_at_sentence_end() -> None:
    assert texts("It has pears, etc. The end.") == ["It has pears, etc.", "The end."]
    assert texts("It is made in the U.S. It is red.") == ["It is made in the U.S.", "It is red."]


def test_ellipses() -> None:
    assert texts("Wait... what is that? It was… The end.") == [
        "Wait... what is that?",
        "It was…",
        "The end.",
    ]
    assert texts("And so on...\nNext line.") == ["And so on...", "Next line."]


def test_blank_line_is_always_a_boundary() -> None:
    assert texts("Para one, no period\n\nPara two") == ["Para one, no period", "Para two"]
    assert texts("He said e.g.\n\n  \nthe end") == ["He said e.g.", "the end"]


def test_trailing_fragment_is_a_sentence() -> None:
    assert texts("A sentence. A trailing fragment") == ["A sentence.", "A trailing fragment"]


def test_soft_wrapped_line_continues() -> None:
    text = "The man wears a\nblue hat and a coat. Next."
    assert texts(text) == ["The man wears a\nblue hat and a coat.", "Next."]


def test_display_math_is_one_sentence() -> None:
    text = "The equation is:\n\\[\nx = 3. y = 4!\n\\]\nwhere x is a number."
    sentences = texts(text)
    assert sentences[0] == "The equation is:"
    assert sentences[1].startswith("\\[") and "y = 4!" in sentences[1]


def test_inline_math_factorial_is_not_a_sentence_end() -> None:
    text = r"It shows \(5! = 120\) clearly. Next."
    assert texts(text) == [r"It shows \(5! = 120\) clearly.", "Next."]


@pytest.mark.parametrize("text", ["", " ", "\n\n", " \t\n \r\n"])
def test_empty_or_whitespace(text: str) -> None:
    assert split_sentences(text) == []


def test_offsets_match_text() -> None:
    text = "  First one.  \n\n  Second one!  "
    sentences = split_sentences(text)
    assert [(s.start, s.end) for s in sentences] == [(2, 12), (18, 29)]
    check_partition(text)


def test_every_real_caption_is_partitioned() -> None:
    captions = load_captions()
    assert len(captions) == 436
    for caption in captions:
        check_partition(caption)


def test_random_strings_keep_the_invariant() -> None:
    rng = random.Random(20250619)
    alphabet = list("aZ3 .!?…\n\n\t\"”')(*-#•:;,$%\\[]")
    alphabet += ["e.g.", "U.S.", "1. ", "**", "\\[", "\\]", "\\(", "\\)", "```", "\u2028", "\r\n"]
    for _ in range(400):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        check_partition(text)


def test_random_slices_of_real_captions_keep_the_invariant() -> None:
    rng = random.Random(7)
    captions = load_captions()
    for _ in range(200):
        pieces = []
        for caption in rng.sample(captions, 3):
            start = rng.randrange(len(caption))
            pieces.append(caption[start : start + rng.randint(1, 300)])
        check_partition(rng.choice(["", "\n", " ", "\n\n"]).join(pieces))


def splitter_steps(text: str, also: tuple[str, ...] = ()) -> int:
    """Python lines the splitter executes on ``text``: a deterministic measure of its work.

    (Work inside the regular expressions is C and not counted; their wall time is in
    bench/bench_sentences.py.)"""
    import scalecap.text.sentences as module

    steps = 0

    def local(frame, event, arg):
        nonlocal steps
        if event == "line":
            steps += 1
        return local

    def glob(frame, event, arg):
        return local if frame.f_code.co_filename in (module.__file__, *also) else None

    previous = sys.gettrace()
    sys.settrace(glob)
    try:
        split_sentences(text)
    finally:
        sys.settrace(previous)
    return steps


#: Repeated units that stress every loop of the splitter: many cuts, runs of punctuation, protected
#: LaTeX spans, abbreviations (the backward word scan), one very long word, list markers.
UNITS = [". ", "a... b... ", "\\(a. B\\) ", "Dr. ", "No. 5. ", "1. A\n", "word ", "x" * 40 + ". ", "**a.** B.\n\n"]


@pytest.mark.parametrize("unit", UNITS)
def test_pathological_inputs_stay_linear(unit: str) -> None:
    small, large = splitter_steps(unit * 500), splitter_steps(unit * 2000)
    assert small > 0
    assert large / small < 4.4, (small, large)  # linear: about 4; quadratic: about 16


@pytest.mark.parametrize("text", [". " * 50_000, "a... b... " * 10_000, "\\(a. B\\) " * 10_000])
def test_pathological_inputs_are_partitioned(text: str) -> None:
    check_partition(text)


def test_the_step_counter_sees_quadratic_work(monkeypatch) -> None:
    """The measure can fail: a backward scan to the start of the text for every cut is caught."""
    import scalecap.text.sentences as module

    real = module._previous_char

    def scan_everything(text, floor, at):
        for _ in range(at - floor):
            pass
        return real(text, floor, at)

    monkeypatch.setattr(module, "_previous_char", scan_everything)
    monkeypatch.setattr(module, "_ends_sentence", lambda text, start, at, punct, following:
                        scan_everything(text, 0, at) is not None)
    small, large = splitter_steps(". " * 500, also=(__file__,)), splitter_steps(". " * 2000, also=(__file__,))
    assert large / small > 8, (small, large)


import pytest as _pytest  # noqa: E402


@_pytest.mark.parametrize(("text", "expected"), [
    ("### 1. Overview\nThe image shows a cat.", ["### 1. Overview", "The image shows a cat."]),
    ("## 2. Colours", ["## 2. Colours"]),
    ("**1. Scene Overview:** The image shows a cat. It sleeps.",
     ["**1. Scene Overview:** The image shows a cat.", "It sleeps."]),
    ("- **2. Objects:** A dog.", ["- **2. Objects:** A dog."]),
    ("__3. Lighting:__ Soft light.", ["__3. Lighting:__ Soft light."]),
])
def test_markdown_numbered_headings_stay_whole(text, expected):
    from scalecap.text.sentences import split_sentences

    sentences = split_sentences(text)
    assert [s.text for s in sentences] == expected
    assert all(text[s.start:s.end] == s.text for s in sentences)
