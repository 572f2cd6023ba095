"""The Ray distributor on a local 2-CPU Ray: the same records as a single-machine run, resume, and
the fingerprint refusal. Real tiny models in the actors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import iohelpers
from iohelpers import model_args

from scalecap.cli import app  # noqa: E402
from scalecap.io import FingerprintMismatch, read_records  # noqa: E402
from scalecap.io.sources import open_source  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(420)]
ray = pytest.importorskip("ray")
NAMES = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg"]


@pytest.fixture(scope="module")
def ray_local(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ray")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 2**20, _temp_dir=str(tmp),
             log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(iohelpers)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def photos(tmp_path_factory, sample_images) -> Path:
    return iohelpers.copy_photos(tmp_path_factory, sample_images, NAMES, "ray photos")


def test_ray_cli_and_api_equal_a_single_machine_run_and_resume(ray_local, photos, tiny_models, tmp_path):
    runner = CliRunner()
    local = tmp_path / "local.jsonl"
    res = runner.invoke(app, ["caption", str(photos), "-o", str(local), "--no-progress", *model_args(tiny_models)])
    assert res.exit_code == 0, res.output
    expected = {r.id: r.stable_json() for r in read_records(local)}
    assert sorted(expected) == sorted(NAMES)

    out = tmp_path / "ray_out"
    res = runner.invoke(app, ["caption", str(photos), "-o", str(out), "--ray", "--num-actors", "2", "--limit", "2",
                              "--ray-batch-size", "1", "--no-progress", *model_args(tiny_models)])
    assert res.exit_code == 0, res.output
    assert len(list(out.glob("part-*.jsonl"))) == 2  # one shard per batch
    assert sorted(r.id for r in read_records(out)) == NAMES[:2]

    # The Python API on a ray.data dataset of all four: the two done ids are skipped before distributing.
    from scalecap.distributed import ScaleCapFactory, caption_ray_dataset
    from scalecap.distributed.ray_runner import item_to_row

    vlm, llm = str(tiny_models["qwen2vl"]), str(tiny_models["qwen2"])
    settings = dict(budget=1, max_tokens_caption=24, max_tokens_instructions=24, max_tokens_answer=16,
                    max_tokens_summary=24)
    from scalecap.config import Settings

    factory = ScaleCapFactory({"captioner": vlm, "scorer": vlm, "writer": llm}, Settings(**settings))
    ds = ray.data.from_items([item_to_row(i) for i in open_source([str(photos)])])
    seen = []
    summary = caption_ray_dataset(ds, factory, out, num_actors=2, batch_size=2, on_result=lambda r: seen.append(r.id))
    assert sorted(seen) == NAMES[2:] and summary.ok == 2 and summary.exit_code == 0

    got = list(read_records(out))
    assert len(got) == len(NAMES) and {r.id for r in got} == set(NAMES)
    for r in got:
        assert r.stable_json() == expected[r.id], f"{r.id}: Ray and single-machine records differ"
    summary_file = json.loads((out / "summary.json").read_text())
    assert summary_file["run"]["ok"] == 2 and summary_file["run"]["usage"]["total_tokens"] > 0

    # Run again: nothing left to do, nothing sent to the cluster.
    res = runner.invoke(app, ["caption", str(photos), "-o", str(out), "--ray", "--no-progress", *model_args(tiny_models)])
    assert res.exit_code == 0 and "4 already done" in res.output


def test_ray_refuses_another_fingerprint_and_retries_failures(ray_local, tmp_path):
    out = tmp_path / "o"
    rows = [{"id": f"r{i}", "image": iohelpers.png_bytes(10 + i, 10)} for i in range(4)]
    s = _fake_run(rows, out, "fp-A", fail_ids={"r1"})
    assert (s.ok, s.failed) == (3, 1)
    with pytest.raises(FingerprintMismatch, match="fp-A"):
        _fake_run(rows, out, "fp-B")
    s = _fake_run(rows, out, "fp-A")  # the failed record is retried and replaced
    assert (s.ok, s.failed) == (1, 0)
    recs = list(read_records(out))
    assert sorted(r.id for r in recs) == ["r0", "r1", "r2", "r3"] and all(r.ok for r in recs)
    lines = [line for p in out.glob("part-*.jsonl") for line in p.read_text().splitlines()]
    assert len(lines) == 4


def _fake_run(rows, out, fid, fail_ids=()):
    from scalecap.distributed import caption_ray_dataset

    return caption_ray_dataset(ray.data.from_items(rows), iohelpers.FakeFactory(fid, fail_ids), out, num_actors=1,
                               num_cpus_per_actor=0.5, batch_size=2)


class _CountingSource:
    """An in-memory source that records, at each result, how many items the driver had pulled."""

    kind = "counting"
    may_have_local_files = False

    def __init__(self, n: int) -> None:
        from scalecap.images import ImageItem

        self.errors: list = []
        self.pulled = 0
        self.items = [ImageItem(id=f"s{i:03d}", source=f"<mem {i}>", data=iohelpers.png_bytes(8 + i % 5, 8))
                      for i in range(n)]

    def __iter__(self):
        for item in self.items:
            self.pulled += 1
            yield item

    def count(self):
        return len(self.items)


def test_the_driver_streams_batches_instead_of_holding_the_dataset(ray_local, tmp_path):
    """``--ray`` from a source: the driver reads a batch only when an actor is about to need it.

    With 1 actor, batches of 2 and one batch queued per actor, at most 2 batches (4 items) are out
    when the first result comes back, and each later result lets one more batch in; the old driver
    read all 40 items (image bytes included) before sending anything.
    """
    from scalecap.distributed.ray_runner import QUEUED_PER_ACTOR, run_ray_job
    from scalecap.run import CaptionJob

    source = _CountingSource(40)
    pulled_at_result: list[int] = []
    job = CaptionJob(inputs=[], output=tmp_path / "o", source=source)
    summary = run_ray_job(iohelpers.FakeFactory("fp-S"), job, num_actors=1, num_cpus_per_actor=0.5, batch_size=2,
                          on_result=lambda r: pulled_at_result.append(source.pulled))
    assert summary.ok == 40 and summary.exit_code == 0
    in_flight = 2 * (1 + QUEUED_PER_ACTOR)  # items: batch size x batches out at once
    # At the first result: the batches out, plus at most one item read ahead of a batch boundary.
    assert pulled_at_result[0] <= in_flight + 1, pulled_at_result
    # Throughout: never more than the batches out plus one batch ahead of the results handed back.
    assert all(p <= i + in_flight + 2 for i, p in enumerate(pulled_at_result)), pulled_at_result
    assert sorted(r.id for r in read_records(tmp_path / "o")) == [f"s{i:03d}" for i in range(40)]
    data = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert data["sink"]["streamed"] is True and data["run"]["ok"] == 40


def test_ray_actors_pause_through_an_outage_and_stop_on_a_refused_key(ray_local, tmp_path):
    from scalecap.distributed import caption_ray_dataset
    from scalecap.outage import OutagePolicy

    rows = [{"id": f"r{i}", "image": iohelpers.png_bytes(10 + i, 10)} for i in range(6)]
    state = tmp_path / "server-state"
    state.write_text("down 3")  # down from the start; the third probe finds it back
    fast = OutagePolicy(wait=60.0, first_probe=0.01, max_probe_interval=0.02)

    def run(out):
        return caption_ray_dataset(ray.data.from_items(rows), iohelpers.FileServerFactory("fp-S", state), out,
                                   num_actors=1, num_cpus_per_actor=0.5, batch_size=3, stop_after=2, outage=fast)

    s = run(tmp_path / "outage")
    assert (s.ok, s.failed, s.stopped, s.exit_code) == (6, 0, None, 0), (s.pauses, s.failures)
    assert [p["outcome"] for p in s.pauses] == ["resumed"] and s.pauses[0]["rerun"] >= 2
    assert sorted(r.id for r in read_records(tmp_path / "outage")) == [f"r{i}" for i in range(6)]

    state.write_text("auth")
    s = run(tmp_path / "key")
    assert s.stopped and "2 images in a row failed with backend_auth" in s.stopped
    assert (s.ok, s.exit_code, s.pauses) == (0, 3, [])
    assert s.failed == 2 and len(list(read_records(tmp_path / "key"))) == 2  # the other 4: no record
