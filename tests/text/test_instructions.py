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


NAMES = ["advertisement", "U.S. flag", "thought-provoking text", "No. 5 bus", "St. Mary's church",
         "café-bar 2", "1990s car", "a" * MAX_NAME_CHARS]


def test_instruction_regex_expresses_every_name_the_parser_accepts() -> None:
    pattern = re.compile(instruction_regex())
    for name in NAMES:
        line = OBJECT_TEMPLATE.format(name) + "\n"
        assert pattern.fullmatch(line), name
        assert parse_instructions(line) == [name]
        assert parse_instructions(line.strip()) == [name]  # the pipeline strips the output
    many = "".join(OBJECT_TEMPLATE.format(n) + "\n" for n in NAMES)
    assert pattern.fullmatch(many) and parse_instructions(many) == NAMES
    # "U.S." is written with the template's period and read back with its own
    assert pattern.fullmatch("Describe more details about the U.S.\n")
    assert parse_instructions("Describe more details about the U.S.\n") == ["U.S."]


def test_instruction_regex_allows_a_sentence_without_objects() -> None:
    assert re.fullmatch(instruction_regex(), "")
    assert re.fullmatch(instruction_regex(3), "")
    assert parse_instructions("") == []


def test_instruction_regex_caps_lines_at_the_budget_only() -> None:
    lines = "".join(OBJECT_TEMPLATE.format(f"object {i}") + "\n" for i in range(30))
    assert re.fullmatch(instruction_regex(), lines)  # no cap of 8 lines
    assert len(parse_instructions(lines)) == 30
    assert re.fullmatch(instruction_regex(30), lines)
    assert not re.fullmatch(instruction_regex(29), lines)
    assert re.fullmatch(instruction_regex(0), "") and not re.fullmatch(instruction_regex(0), lines[:40])


def test_instruction_regex_refuses_what_the_parser_would_reject_or_cut() -> None:
    pattern = re.compile(instruction_regex())
    assert not pattern.fullmatch("Describe more details about the man.")  # no newline
    assert not pattern.fullmatch("Describe more details about the .\n")
    assert not pattern.fullmatch(OBJECT_TEMPLATE.format("a" * (MAX_NAME_CHARS + 1)) + "\n")
    assert not pattern.fullmatch("Describe more details about the [object].\n")  # a placeholder
    assert not pattern.fullmatch("Describe more details about the man .\n")  # ends in a space
    with pytest.raises(ValueError):
        instruction_regex(-1)


def test_instruction_regex_uses_only_simple_constructs() -> None:
    regex = instruction_regex(5)
    assert "(?" not in regex  # no lookarounds, non-capturing or named groups
    assert not re.search(r"\\[1-9]", regex)  # no backreferences


def random_name(rng: random.Random) -> str:
    edge = "abcXYZ019éÀ"
    inner = edge + " .'-"
    if rng.random() < 0.3:
        return rng.choice(edge)
    middle = "".join(rng.choices(inner, k=rng.randint(0, MAX_NAME_CHARS - 2)))
    return rng.choice(edge) + middle + rng.choice(edge)


def test_anything_the_regex_admits_parses_to_whole_names() -> None:
    rng = random.Random(13)
    pattern = re.compile(instruction_regex(4))
    for _ in range(500):
        names = [random_name(rng) for _ in range(rng.randint(0, 4))]
        output = "".join(OBJECT_TEMPLATE.format(n) + "\n" for n in names)
        assert pattern.fullmatch(output), output
        parsed = parse_instructions(output)
        keys = {object_key(n) for n in names}
        assert len(parsed) == len({object_key(p) for p in parsed}) <= len(names)
        assert bool(parsed) == bool(names), output
        for name in parsed:  # nothing cut from the end of a name: at most an article or "." differs
            assert any(n.endswith(name.rstrip(".")) for n in names), (name, names)
        assert len(parsed) >= min(1, len(keys))
