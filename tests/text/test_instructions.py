import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from scalecap.text import (
    OBJECT_TEMPLATE,
    POSITION_TEMPLATE,
    instruction_regex,
    object_key,
    parse_instructions,
    plan_objects,
)
from scalecap.text.instructions import MAX_NAME_CHARS

REPO = Path(__file__).resolve().parents[2]
PAPER_PROMPT = REPO / "scalecap" / "prompts" / "paper" / "instructions.txt"

PAPER_EXPECTED = [
    ["man", "suit", "tie", "bed", "bedroom"],
    ["train"],
    ["table", "camera", "jam", "spoon"],
    ["text"],
    ["oven", "preheat temperature"],
]


def test_templates() -> None:
    assert OBJECT_TEMPLATE.format("man") == "Describe more details about the man."
    assert POSITION_TEMPLATE.format("man") == "Describe more details about the position of the man."


def test_paper_few_shot_examples() -> None:
    prompt = PAPER_PROMPT.read_text(encoding="utf-8")
    blocks = [block.split("Instructions:\n", 1)[1] for block in prompt.split("Sentence:\n")[1:]]
    examples = [block for block in blocks if block.strip()]
    assert [parse_instructions(block) for block in examples] == PAPER_EXPECTED


def test_paper_examples_as_one_continuation_stop_at_next_sentence() -> None:
    prompt = PAPER_PROMPT.read_text(encoding="utf-8")
    first_answer = prompt.split("Instructions:\n", 1)[1]  # runs on through all later examples
    assert parse_instructions(first_answer) == PAPER_EXPECTED[0]


def test_sentence_continuation_is_cut() -> None:
    output = (
        "Describe more details about the dog.\n\n"
        "Sentence:\nThe cat sleeps on a mat.\nInstructions:\nDescribe more details about the cat.\n"
    )
    assert parse_instructions(output) == ["dog"]
    assert parse_instructions("**Sentence:** x\nDescribe more details about the cat.") == []


def test_empty_and_non_instruction_output() -> None:
    assert parse_instructions("") == []
    assert parse_instructions("   \n\n") == []
    assert parse_instructions("There are no objects in this sentence.\nNone.") == []


def test_numbering_bullets_bold_quotes_and_label() -> None:
    output = "\n".join(
        [
            "Instructions:",
            "1. Describe more details about the man.",
            "2) Describe more details about the suit.",
            "- Describe more details about the tie.",
            "* **Describe more details about the bed.**",
            "• \"Describe more details about the lamp.\"",
            "(6) describe more details about the **window**.",
            "**Instructions:** Describe more details about the rug.",
            "Here are the instructions for the sentence:",
        ]
    )
    assert parse_instructions(output) == ["man", "suit", "tie", "bed", "lamp", "window", "rug"]


def test_case_insensitive_phrase_and_articles() -> None:
    output = (
        "DESCRIBE MORE DETAILS ABOUT THE Man.\n"
        "Describe more details about a red car.\n"
        "describe more detail about an apple"
    )
    assert parse_instructions(output) == ["Man", "red car", "apple"]


def test_names_with_periods_are_kept_whole() -> None:
    output = (
        "Describe more details about the U.S. flag.\n"
        "Describe more details about the St. Louis arch.\n"
        "Describe more details about the 3.5 mm jack.\n"
        "Describe more details about the U.S."
    )
    assert parse_instructions(output) == ["U.S. flag", "St. Louis arch", "3.5 mm jack", "U.S."]


def test_quotes_inside_names_are_kept() -> None:
    output = (
        'Describe more details about the "Stop" sign.\n'
        '"Describe more details about the "Exit" door."'
    )
    assert parse_instructions(output) == ['"Stop" sign', '"Exit" door']


def test_position_echo_maps_to_the_object() -> None:
    output = (
        "Describe more details about the position of the man.\n"
        "Describe more details about the man.\n"
        "Describe more details about the position of a cup.\n"
    )
    assert parse_instructions(output) == ["man", "cup"]


def test_several_instructions_on_one_line() -> None:
    output = "Describe more details about the man. Describe more details about the hat."
    assert parse_instructions(output) == ["man", "hat"]


def test_degenerate_repetition_yields_the_object_once() -> None:
    output = "Describe more details about the man.\n" * 200 + "Describe more details about the m"
    assert parse_instructions(output) == ["man"]


def test_run_on_names_are_dropped() -> None:
    long_name = " ".join(["very"] * 30) + " dog"
    output = f"Describe more details about the {long_name}.\nDescribe more details about the cat."
    assert len(long_name) > MAX_NAME_CHARS
    assert parse_instructions(output) == ["cat"]


def test_empty_and_placeholder_names_are_dropped() -> None:
    output = (
        "Describe more details about the .\n"
        "Describe more details about the [Object].\n"
        "Describe more details about the ...\n"
        "Describe more details about the tree."
    )
    assert parse_instructions(output) == ["tree"]


def test_object_key() -> None:
    assert object_key("The  Man.") == "man"
    assert object_key("a Red car") == "red car"
    assert object_key("An apple!") == "apple"
    assert object_key("U.S. flag") == "u.s. flag"
    assert object_key("U.S.") == object_key("u.s")
    assert object_key("the") == "the"
    assert object_key("theater") == "theater"


def test_plan_objects_dedupes_in_first_seen_order() -> None:
    per_sentence = [["man", "suit"], ["The man", "tie", "Suit."], ["a bed", "Bed"]]
    assert plan_objects(per_sentence, None) == ["man", "suit", "tie", "a bed"]


@pytest.mark.parametrize(
    ("budget", "expected"),
    [(0, []), (1, ["man"]), (3, ["man", "suit", "tie"]), (99, ["man", "suit", "tie", "bed"])],
)
def test_plan_objects_budget(budget: int, expected: list[str]) -> None:
    assert plan_objects([["man", "suit"], ["man", "tie"], ["bed"]], budget) == expected


def test_plan_objects_rejects_negative_budget() -> None:
    with pytest.raises(ValueError):
        plan_objects([["man"]], -1)


PLAN_INPUT = [["the Zebra", "apple", "A kite"], ["zebra", "Mango", "an apple"], ["kite", "yak", "Apple", "mango"]]
PLAN_EXPECTED = ["the Zebra", "apple", "A kite", "Mango", "yak"]


def test_plan_objects_keeps_first_spelling_in_first_seen_order() -> None:
    assert plan_objects(PLAN_INPUT, None) == PLAN_EXPECTED


def test_plan_objects_is_the_same_under_any_hash_seed() -> None:
    # The reference code deduplicated through a set, whose order changes with PYTHONHASHSEED: only
    # separate processes with different seeds can show that this order does not.
    code = ("import json; from scalecap.text.instructions import plan_objects; "
            f"print(json.dumps(plan_objects({PLAN_INPUT!r}, None)))")
    outputs = set()
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        outputs.add(out.stdout)
    assert [json.loads(o) for o in outputs] == [PLAN_EXPECTED]


def test_instruction_regex_matches_well_formed_output() -> None:
    pattern = re.compile(instruction_regex())
    good = (
        "Describe more details about the man.\n"
        "Describe more details about the red car's wheel.\n"
    )
    assert pattern.fullmatch(good)
    assert pattern.fullmatch("Describe more details about the café-bar 2.\n")
    assert not pattern.fullmatch("Describe more details about the man.")  # no newline
    assert not pattern.fullmatch("Describe more details about the .\n")
    assert not pattern.fullmatch("Describe more details about the a b c d e f g.\n")  # 7 words
    assert not pattern.fullmatch("Describe more details about the man.\n" * 9)
    single = re.compile(instruction_regex(max_lines=2, max_words=1))
    assert single.fullmatch("Describe more details about the man.\n" * 2)


def test_instruction_regex_uses_only_simple_constructs() -> None:
    regex = instruction_regex()
    assert "(?" not in regex  # no lookarounds, non-capturing or named groups
    assert not re.search(r"\\[1-9]", regex)  # no backreferences


def random_match(rng: random.Random, max_lines: int, max_words: int, max_chars: int) -> str:
    first = "abcXYZ019éÀ"
    rest = first + "'-"
    lines = []
    for _ in range(rng.randint(1, max_lines)):
        words = [
            rng.choice(first) + "".join(rng.choices(rest, k=rng.randint(0, max_chars - 1)))
            for _ in range(rng.randint(1, max_words))
        ]
        lines.append(OBJECT_TEMPLATE.format(" ".join(words)) + "\n")
    return "".join(lines)


@pytest.mark.parametrize(("max_lines", "max_words"), [(8, 6), (3, 1), (5, 3), (1, 10)])
def test_anything_the_regex_admits_parses_to_objects(max_lines: int, max_words: int) -> None:
    rng = random.Random(max_lines * 100 + max_words)
    pattern = re.compile(instruction_regex(max_lines, max_words))
    max_chars = int(re.search(r"\{0,(\d+)\}", pattern.pattern).group(1)) + 1
    for _ in range(300):
        output = random_match(rng, max_lines, max_words, max_chars)
        assert pattern.fullmatch(output), output
        assert len(parse_instructions(output)) >= 1, output
    longest = OBJECT_TEMPLATE.format(" ".join(["w" * max_chars] * max_words)) + "\n"
    assert pattern.fullmatch(longest)
    assert parse_instructions(longest) == [" ".join(["w" * max_chars] * max_words)]
