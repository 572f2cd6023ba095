"""TaggingPool: spaCy batched across texts on worker processes gives the spans one-text calls give."""

import asyncio
import json
from pathlib import Path

import pytest

from scalecap.text.content import load_tagger
from scalecap.text.tagging import TaggingPool

CAPTIONS = Path(__file__).resolve().parents[1] / "data" / "mmvet_scalecap_captions.jsonl"


def _texts(n: int) -> list[str]:
    rows = [json.loads(line) for line in CAPTIONS.read_text(encoding="utf-8").splitlines()]
    return [r["ori_caption"] for r in rows[:n]]


async def _all(pool: TaggingPool, texts: list[str]):
    return await asyncio.gather(*(pool.spans(t) for t in texts))


@pytest.mark.parametrize("workers", [0, 2])
def test_batched_spans_equal_one_text_calls(workers):
    tagger = load_tagger("spacy")
    texts = _texts(40)
    pool = TaggingPool(tagger, workers=workers, max_batch=16)
    try:
        got = asyncio.run(_all(pool, texts))
    finally:
        pool.close()
    assert got == [tagger.content_spans(t) for t in texts]
    # 40 texts at once, at most 16 a batch: they were batched, not sent one by one
    assert pool.texts_run == 40 and 3 <= pool.batches_run <= 40 - 16


def test_lone_text_is_not_held_back():
    pool = TaggingPool(load_tagger("spacy"), workers=0)
    try:
        first = asyncio.run(_all(pool, ["A red car is parked."]))
        second = asyncio.run(_all(pool, ["A dog sleeps."]))  # a new loop, as the sync API makes
    finally:
        pool.close()
    assert first == [[(2, 5), (6, 9), (13, 19)]] and pool.batches_run == 2
    assert second and second[0]


def test_lexicon_runs_inline():
    pool = TaggingPool(load_tagger("lexicon"))
    assert pool.inline and asyncio.run(_all(pool, ["The big dog"])) == [[(4, 7), (8, 11)]]
    assert pool._executor is None


def test_a_failing_batch_fails_its_texts_only():
    class Broken:
        spec = None

        def content_spans_many(self, texts):
            if any("boom" in t for t in texts):
                raise RuntimeError("tagger broke")
            return [[(0, 1)] for _ in texts]

    pool = TaggingPool(Broken(), workers=0, max_batch=1)

    async def run():
        return await asyncio.gather(pool.spans("fine"), pool.spans("boom"), pool.spans("fine too"),
                                    return_exceptions=True)

    good, bad, also_good = asyncio.run(run())
    pool.close()
    assert good == also_good == [(0, 1)] and isinstance(bad, RuntimeError)


def test_a_dead_worker_fails_its_batch_and_the_pool_recovers():
    import os
    import signal

    pool = TaggingPool(load_tagger("lexicon"), workers=1)
    pool.inline = False  # the lexicon on a worker process: cheap to start, same mechanism as spaCy

    async def run():
        first = await pool.spans("A red car.")
        for pid in list(pool._executor._processes):
            os.kill(pid, signal.SIGKILL)
        lost = await asyncio.gather(pool.spans("A blue bus."), return_exceptions=True)
        return first, lost[0], await pool.spans("A green tree.")

    try:
        first, lost, after = asyncio.run(run())
    finally:
        pool.close()
    assert first == [(2, 5), (6, 9)] and isinstance(lost, Exception) and after == [(2, 7), (8, 12)]


def test_request_gives_inline_spans_at_once_and_a_future_from_the_pool():
    inline = TaggingPool(load_tagger("lexicon"))
    pooled = TaggingPool(load_tagger("spacy"), workers=0)

    async def run():
        now = inline.request("The big dog")
        later = pooled.request("A red car is parked.")
        return now, isinstance(later, asyncio.Future), await later

    try:
        now, is_future, later = asyncio.run(run())
    finally:
        pooled.close()
    assert now == [(4, 7), (8, 11)]
    assert is_future and later == [(2, 5), (6, 9), (13, 19)]
