"""``stages.both``: what ``asyncio.gather`` of two awaitables does, with one task fewer."""

import asyncio
import gc

import pytest

from scalecap.stages import both


async def value(v, delay=0.0):
    await asyncio.sleep(delay)
    return v


async def fail(message, delay=0.0):
    await asyncio.sleep(delay)
    raise RuntimeError(message)


def test_results_in_order_and_both_run_concurrently():
    async def run():
        log, event = [], asyncio.Event()

        async def first():
            log.append("start a")
            await event.wait()  # only the second sets it: run one after the other, this never returns
            return "a"

        async def second():
            log.append("start b")
            event.set()
            return "b"

        return await asyncio.wait_for(both(first(), second()), 5), log

    got, log = asyncio.run(run())
    assert got == ("a", "b")
    assert log == ["start a", "start b"]  # started in gather's order


@pytest.mark.parametrize("failing", ["first", "second"])
def test_an_exception_is_raised_and_the_other_goes_on(failing):
    finished = []

    async def other():
        await asyncio.sleep(0.05)
        finished.append(True)
        return 1

    async def run():
        pair = (fail("boom"), other()) if failing == "first" else (other(), fail("boom"))
        with pytest.raises(RuntimeError, match="boom"):
            await both(*pair)
        await asyncio.sleep(0.1)

    asyncio.run(run())
    assert finished == [True]


def test_the_others_later_exception_is_not_reported_lost():
    lost = []

    async def run():
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: lost.append(ctx["message"]))
        with pytest.raises(RuntimeError, match="first"):
            await both(fail("first"), fail("second", 0.05))
        await asyncio.sleep(0.1)
        gc.collect()

    asyncio.run(run())
    assert lost == []


def test_cancelling_the_caller_cancels_both():
    cancelled = []

    async def wait(name):
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(name)
            raise

    async def run():
        task = asyncio.ensure_future(both(wait("a"), wait("b")))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0)

    asyncio.run(run())
    assert sorted(cancelled) == ["a", "b"]


def test_cancelling_the_caller_after_the_first_finished_cancels_the_second():
    cancelled = []

    async def wait():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append("b")
            raise

    async def run():
        task = asyncio.ensure_future(both(value("a"), wait()))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    assert cancelled == ["b"]
