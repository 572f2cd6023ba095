"""Blocking APIs work where an event loop is already running (Jupyter, async apps)."""

import asyncio

import pytest

from scalecap import ScaleCap
from scalecap._sync import run_sync


async def _double(x):
    await asyncio.sleep(0)
    return 2 * x


def test_run_sync_outside_and_inside_a_running_loop():
    assert run_sync(_double(2)) == 4

    async def inside():
        return run_sync(_double(5))  # a blocking call from inside a loop, as a notebook cell does

    assert asyncio.run(inside()) == 10


@pytest.mark.slow
def test_caption_inside_a_running_loop(tiny_models, sample_images, tiny_settings):
    sc = ScaleCap(model=str(tiny_models["qwen2vl"]), budget=0, **tiny_settings)

    async def notebook_cell():
        return sc.caption(sample_images["coffee"])

    assert asyncio.run(notebook_cell()).status == "ok"
