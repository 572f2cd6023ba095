"""The context-length guard: writer inputs past the window are summarised in chunks that fit."""

import asyncio
import dataclasses

import pytest

from scalecap import ScaleCap
from scalecap.stages import Trace as _Trace
from scalecap.testing.scripted import RecordingBackend

pytestmark = pytest.mark.slow


def test_long_summary_input_is_chunked_to_fit_the_window(tiny_models, tiny_settings):
    vlm = str(tiny_models["qwen2vl"])
    sc = ScaleCap(captioner=vlm, scorer=vlm, writer=str(tiny_models["qwen2"]), **tiny_settings)
    window = 900
    sc.writer._capabilities = dataclasses.replace(sc.writer.capabilities, context_window=window)
    sc.writer = writer = RecordingBackend(sc.writer)
    lines = [f"Details about object {i}: " + "a long description of colour, texture and shape " * 6 for i in range(40)]
    lines.append("one single line that alone is longer than the whole window " * 60)
    assert sc.writer.count_tokens("\n".join(lines)) > 4 * window
    trace = _Trace.new()
    summary = asyncio.run(sc._summarise(trace, "object_summary", sc.prompts.object_summary, lines))
    calls = writer.generations()
    assert len(calls) > 2 and trace.usage["object_summary"].calls == len(calls)
    # every writer prompt (as the model counted it, chat template included) fitted beside its completion
    for call in calls:
        assert call.reply.prompt_tokens + call.params.max_tokens <= window, call.reply.prompt_tokens
    # the summary is the reply to the last call, made after every chunk was summarised
    assert summary == calls[-1].reply.text.strip()
    assert not any(line in calls[-1].prompt.user for line in lines)
