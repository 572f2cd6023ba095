"""Bad data through the CLI with the tiny real models: every problem is a clear per-item error or a
clear source error, the rest of the run completes, the exit code says something failed, and
nothing is written outside the output folder. Pre-filters through the CLI: filtered images never
reach a model."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from iohelpers import model_args, read_jsonl
from PIL import Image
from typer.testing import CliRunner

from scalecap.cli import app
from scalecap.filters import JpegComplexity

pytestmark = pytest.mark.slow
runner = CliRunner()


def _small_jpeg(src: Path, size=(160, 120)) -> bytes:
    buf = io.BytesIO()
    Image.open(src).convert("RGB").resize(size).save(buf, "JPEG")
    return buf.getvalue()


def _add(t: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    t.addfile(info, io.BytesIO(data))


@pytest.fixture()
def messy_inputs(tmp_path, sample_images, http_server, closed_port):
    photo = _small_jpeg(sample_images["chelsea"])
    other = _small_jpeg(sample_images["coffee"])
    data = tmp_path / "données d'entrée"
    (data / "dossier photos").mkdir(parents=True)
    (data / "dossier photos" / "chat ü.jpg").write_bytes(photo)
    (data / "dossier photos" / "tasse de café.jpg").write_bytes(other)
    # a shard truncated inside its second sample, and a shard with hostile member names
    whole = data / "whole.tar"
    with tarfile.open(whole, "w") as t:
        _add(t, "s1.jpg", photo)
        _add(t, "s1.txt", b"alt")
        _add(t, "s2.jpg", other)
    with tarfile.open(whole) as t:
        cut = t.getmember("s2.jpg").offset_data + 200
    (data / "broken-000.tar").write_bytes(whole.read_bytes()[:cut])
    whole.unlink()
    with tarfile.open(data / "hostile-000.tar", "w") as t:
        _add(t, "../x.jpg", photo)
        _add(t, "/tmp/scalecap-escape-test/x.jpg", photo)
        _add(t, "fine.jpg", other)
    manifest = data / "manifest.jsonl"
    rows = [{"id": "m-good", "image": "dossier photos/chat ü.jpg", "domain": "photo"},
            {"id": "m-missing", "image": "dossier photos/absent.jpg"},
            {"id": "m-dup", "image": "dossier photos/tasse de café.jpg"},
            {"id": "m-dup", "image": "dossier photos/chat ü.jpg"}]
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    urls = data / "urls.txt"
    urls.write_text("\n".join([f"{http_server}/ok.jpg", f"{http_server}/missing.jpg", f"{http_server}/page.html",
                               f"{http_server}/big.jpg", f"http://127.0.0.1:{closed_port}/refused.jpg",
                               f"{http_server}/slow.png"]) + "\n")
    return data, [str(data / "dossier photos"), str(data / "broken-000.tar"), str(data / "hostile-000.tar"),
                  str(manifest), str(urls)]


def test_bad_data_is_reported_per_item_and_the_run_completes(messy_inputs, tmp_path, tiny_models, http_server):
    data, inputs = messy_inputs
    before = {p for p in tmp_path.rglob("*")}
    out = tmp_path / "out" / "run.jsonl"
    res = runner.invoke(app, ["caption", *inputs, "-o", str(out), "--no-progress", "--max-download-mb", "1",
                              "--download-timeout", "1", "--allow-private-urls", *model_args(tiny_models)])
    assert res.exit_code == 1, res.output
    recs = {r["id"]: r for r in read_jsonl(out)}
    ok = {i for i, r in recs.items() if r["status"] == "ok"}
    assert ok == {"chat ü.jpg", "tasse de café.jpg", "s1", "fine", "m-good", "m-dup", f"{http_server}/ok.jpg"}
    kinds = {i: r["error_kind"] for i, r in recs.items() if r["status"] == "failed"}
    assert kinds == {"../x": "unsafe_member", "/tmp/scalecap-escape-test/x": "unsafe_member", "m-missing": "missing",
                     f"{http_server}/missing.jpg": "http_404", f"{http_server}/page.html": "bad_content_type",
                     f"{http_server}/big.jpg": "too_large", f"{http_server}/slow.png": "timeout",
                     next(i for i in recs if "refused" in i): "connection"}
    assert all(recs[i]["error"] for i in kinds)
    assert recs["m-good"]["meta"] == {"domain": "photo"} and recs["m-good"]["first_caption"] is not None
    assert recs["m-dup"]["source"].endswith("tasse de café.jpg")  # the first occurrence wins
    summary = json.loads((tmp_path / "out" / "run.summary.json").read_text())
    assert summary["run"]["duplicates"] == 1 and summary["run"]["duplicate_examples"] == ["m-dup"]
    assert len(summary["run"]["source_errors"]) == 1 and "broken-000.tar" in summary["run"]["source_errors"][0]
    assert summary["run"]["failures_by_kind"]["unsafe_member"] == 2
    assert "duplicate ids" in res.output and "source error" in res.output
    # nothing written anywhere but the output folder
    after = {p for p in tmp_path.rglob("*")}
    assert {p for p in after - before if tmp_path / "out" not in p.parents and p != tmp_path / "out"} == set()
    assert not Path("/tmp/scalecap-escape-test").exists() and not (data.parent / "x.jpg").exists()

    # The rerun retries the failed ones (they fail again the same way) and adds no duplicate.
    res = runner.invoke(app, ["caption", *inputs, "-o", str(out), "--no-progress", "--max-download-mb", "1",
                              "--download-timeout", "1", "--allow-private-urls", *model_args(tiny_models)])
    assert res.exit_code == 1, res.output
    again = read_jsonl(out)
    assert sorted(r["id"] for r in again) == sorted(recs)


def test_prefilters_through_the_cli_never_reach_a_model(tmp_path, sample_images, tiny_models):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("astronaut", "chelsea", "coffee"):
        (folder / sample_images[name].name).write_bytes(sample_images[name].read_bytes())
    scorer = JpegComplexity()
    c_astro = scorer(Image.open(sample_images["astronaut"]).convert("RGB"))
    c_coffee = scorer(Image.open(sample_images["coffee"]).convert("RGB"))
    low = round((c_astro + c_coffee) / 2, 4)  # keeps the busier of the two
    busy, plain = ("astronaut.png", "coffee.png") if c_astro > c_coffee else ("coffee.png", "astronaut.png")
    out = tmp_path / "f.jsonl"
    res = runner.invoke(app, ["caption", str(folder), "-o", str(out), "--no-progress", "--min-short-edge", "350",
                              "--complexity", f"{low}:1", *model_args(tiny_models)])
    assert res.exit_code == 0, res.output
    recs = {r["id"]: r for r in read_jsonl(out)}
    assert recs["chelsea.png"]["status"] == "filtered"
    assert recs["chelsea.png"]["meta"]["filter_reason"] == "short_edge" and recs["chelsea.png"]["meta"]["filter_value"] == 300
    assert recs[plain]["status"] == "filtered" and recs[plain]["meta"]["filter_reason"] == "complexity"
    assert "not the paper" in recs[plain]["meta"]["complexity_scorer"]
    for i in ("chelsea.png", plain):
        assert recs[i]["usage"] == {} and recs[i]["first_caption"] is None  # never sent to a model
    assert recs[busy]["status"] == "ok" and recs[busy]["usage"]["caption"]["calls"] == 1
    assert recs[busy]["meta"]["prefilter"]["complexity"] >= low

    # bare --min-short-edge means the paper's 600 px
    out2 = tmp_path / "g.jsonl"
    res = runner.invoke(app, ["caption", "--min-short-edge", str(folder), "-o", str(out2), "--no-progress",
                              *model_args(tiny_models)])
    assert res.exit_code == 0, res.output
    assert {r["meta"]["filter_threshold"] for r in read_jsonl(out2)} == {600}
    assert "3 filtered" in res.output


def test_cli_sinks_shards_and_prices_with_real_models(tmp_path, sample_images, tiny_models):
    """An HF dataset into WebDataset shards, --shard halves that add up, sidecars, and the cost."""
    datasets = pytest.importorskip("datasets")
    names = ["astronaut", "chelsea", "coffee", "rocket"]
    ds = datasets.Dataset.from_dict({
        "id": names, "domain": ["photo"] * 4,
        "image": [{"bytes": _small_jpeg(sample_images[n]), "path": None} for n in names]}).cast_column("image", datasets.Image())
    ds.save_to_disk(str(tmp_path / "hf"))
    halves = []
    for i in (0, 1):
        out = tmp_path / f"wds{i}"
        res = runner.invoke(app, ["caption", str(tmp_path / "hf"), "-o", str(out), "--format", "wds", "--shard", f"{i}/2",
                                  "--no-progress", "--price", "captioner=1:2", "--price", "writer=3:4",
                                  *model_args(tiny_models)])
        assert res.exit_code == 0, res.output
        summary = json.loads((out / "summary.json").read_text())
        assert summary["shard"] == f"{i}/2" and summary["run"]["usage"]["total_cost_usd"] > 0
        assert summary["run"]["usage"]["by_role"]["scorer"]["cost_usd"] is None
        for shard in out.glob("shard-*.tar"):
            with tarfile.open(shard) as t:
                members = t.getnames()
                halves += [n.split(".")[0] for n in members if n.endswith(".json")]
                assert all(f"{k}.jpg" in members and f"{k}.txt" in members for k in halves if f"{k}.json" in members)
    assert sorted(halves) == sorted(names)  # disjoint halves that cover the dataset

    folder = tmp_path / "photos"
    folder.mkdir()
    for n in names[:2]:
        (folder / f"{n}.jpg").write_bytes(_small_jpeg(sample_images[n]))
    (folder / "astronaut.txt").write_text("kept\n")
    res = runner.invoke(app, ["caption", str(folder), "-o", str(tmp_path / "side.jsonl"), "--format", "sidecar",
                              "--no-progress", *model_args(tiny_models)])
    assert res.exit_code == 0, res.output
    assert (folder / "astronaut.txt").read_text() == "kept\n" and (folder / "chelsea.txt").is_file()
    res = runner.invoke(app, ["caption", str(tmp_path / "hf"), "-o", str(tmp_path / "s2.jsonl"), "--format", "sidecar",
                              *model_args(tiny_models)])
    assert res.exit_code == 2 and "beside local image files" in res.output


def test_cli_refuses_to_mix_fingerprints_unless_told(tmp_path, sample_images, tiny_models):
    folder = tmp_path / "photos"
    folder.mkdir()
    for n in ("chelsea", "coffee"):
        (folder / f"{n}.jpg").write_bytes(_small_jpeg(sample_images[n]))
    out = tmp_path / "run.jsonl"
    args = ["caption", str(folder), "-o", str(out), "--no-progress", *model_args(tiny_models)]
    res = runner.invoke(app, [*args, "--limit", "1"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, [*args, "--tau", "0.5"])  # another threshold: another fingerprint
    assert res.exit_code == 2 and "another configuration" in res.output and "--allow-mixed-fingerprints" in res.output
    assert len(read_jsonl(out)) == 1
    res = runner.invoke(app, [*args, "--tau", "0.5", "--allow-mixed-fingerprints"])
    assert res.exit_code == 0, res.output
    recs = read_jsonl(out)
    assert len(recs) == 2 and len({r["fingerprint"]["id"] for r in recs}) == 2
