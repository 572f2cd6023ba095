"""The context-length guard: writer inputs past the window are summarised in chunks that fit."""

import asyncio
import dataclasses

import pytest

from scalecap import ScaleCap
from scalecap.stages import Trace as _Trace

pytestmark = pytest.mark.slow


def test_long_summary_input_is_chunked_to_fit_the_window(tiny_models, tiny_settings):
    vlm = str(tiny_models["qwen2vl"])
    sc = ScaleCap(captioner=vlm, scorer=vlm, writer=str(tiny_models["qwen2"]), **tiny_settings)
    window = 900
    sc.writer._capabilities = dataclasses.replace(sc.writer.capabilities, context_window=window)
    lines = [f"Details about object {i}: " + "a long description of colour, texture and shape " * 6 for i in range(40)]
    lines.append("one single line that alone is longer than the whole window " * 60)
    assert sc.writer.count_tokens("\n".join(lines)) > 4 * window
    trace = _Trace.new()
    summary = asyncio.run(sc._summarise(trace, "object_summary", sc.prompts.object_summary, lines))
    usage = trace.usage["object_summary"]
    assert usage.calls > 2 and summary is not None
    # every writer prompt fitted beside its completion
    assert usage.prompt_tokens / usage.calls + sc.settings.max_tokens_summary <= window
