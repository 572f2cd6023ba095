"""The context guard's pure parts: chunks cut at sentence ends, completions inside the window."""

import asyncio

import pytest

from scalecap.context import ContextGuard, ContextOverflow, chunk_lines


def count(text: str) -> int:
    return len(text.split())


def test_long_lines_are_cut_at_sentence_ends():
    line = " ".join(f"Sentence number {i} has six words." for i in range(20))
    chunks = chunk_lines([line], 20, count)
    pieces = [p for c in chunks for p in c]
    assert all(count(p) <= 20 for p in pieces)
    assert all(p.endswith("words.") for p in pieces)
    assert " ".join(pieces) == line


def test_completion_room_keeps_prompt_and_completion_inside_the_window():
    guard = ContextGuard(count, lambda: 300, 4096)
    prompt = "word " * 150
    room = asyncio.run(guard.completion_room(prompt))
    assert 0 < room and count(prompt) + room + 64 <= 300
    with pytest.raises(ContextOverflow):
        asyncio.run(guard.completion_room("word " * 290))


def test_fit_condenses_until_the_text_fits():
    guard = ContextGuard(count, lambda: 400, 100)

    async def write(prompt: str, n: int) -> str:
        return " ".join(prompt.split()[: n // 2])

    lines = [" ".join(f"Line {i} sentence {j}." for j in range(10)) for i in range(30)]
    fitted = asyncio.run(guard.fit(lines, 150, "Summarise:\n{}", write))
    assert count("\n".join(fitted)) <= 150
