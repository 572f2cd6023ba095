"""The torture dataset: every kind of bad input we know of, mixed with good images, in every input
form at once (a folder, a JSONL manifest, a CSV, a URL list served on 127.0.0.1, WebDataset
shards), through the real pipeline (scripted models, the real decoding and fetching).

What must hold: the run finishes; every bad item is exactly one failed record with its kind, or
one source error naming its line; every good item is ok; a second run changes nothing.
"""

from __future__ import annotations

import io
import os
import struct
import tarfile
import zlib
from pathlib import Path

from iohelpers import jpeg_bytes, png_bytes

from scalecap import ScaleCap
from scalecap.io.fetch import FetchConfig
from scalecap.records import CaptionResult
from scalecap.run import CaptionJob, run_job
from scalecap.testing.scripted import ScriptedBackend

DEEP = b'{"id": "deep", "image": "g1.png", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"


def _bomb_png(w: int = 40_000, h: int = 40_000) -> bytes:
    """A valid PNG header claiming 1.6 gigapixels (the data is a few bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def build(root: Path, base_url: str) -> tuple[list[str], dict[str, str], int, int]:
    """The inputs, the expected failed ids with their kinds, the number of good items and of source errors."""
    bad: dict[str, str] = {}
    good = 0

    # -- a folder
    folder = root / "folder"
    folder.mkdir(parents=True)
    for i in range(3):
        (folder / f"good{i}.png").write_bytes(png_bytes(10 + i, 10))
    good += 3
    (folder / "empty.jpg").write_bytes(b"")
    bad["empty.jpg"] = "empty_file"
    (folder / "text.jpg").write_bytes(b"this is not an image at all\n")
    bad["text.jpg"] = "not_an_image"
    (folder / "cut.jpg").write_bytes(jpeg_bytes(64, 64)[:200])
    bad["cut.jpg"] = "corrupt"
    (folder / "bomb.png").write_bytes(_bomb_png())
    bad["bomb.png"] = "too_large"
    with open(os.path.join(os.fsencode(folder), b"caf\xe9.png"), "wb") as f:
        f.write(png_bytes(12, 12))
    bad["caf\\xe9.png"] = "bad_name"
    (folder / "dangling.png").symlink_to(folder / "deleted.png")  # a link to a file that is gone
    bad["dangling.png"] = "broken_link"
    (folder / "loop.jpg").symlink_to("loop.jpg")  # a link to itself
    bad["loop.jpg"] = "broken_link"

    # -- a JSONL manifest (paths relative to its folder, which is the root for them)
    man = root / "manifest"
    man.mkdir()
    (man / "g1.png").write_bytes(png_bytes(20, 10))
    (man / "g2.png").write_bytes(png_bytes(21, 10))
    good += 2  # the items m_good1 and m_good2
    (root / "outside.png").write_bytes(png_bytes(22, 10))
    lines = [b'{"id": "m_good1", "image": "g1.png"}',
             b'{"id": "m_bad_\xff", "image": "g1.png"}',            # source error: not UTF-8
             DEEP,                                                   # source error: nested too deeply
             b'{"id": "m_broken", "image": ',                       # source error: not JSON
             b'{"id": "m_up", "image": "../outside.png"}',
             b'{"id": "m_abs", "image": "' + str(root / "outside.png").encode() + b'"}',
             b'{"id": "m_missing", "image": "nowhere.png"}',
             b'{"id": "m_sur\\udc80", "image": "g2.png"}',
             b'{"id": "m_good1", "image": "g2.png"}',                # duplicate id: counted, first kept
             b'{"id": "m_good2", "image": "g2.png"}']
    (man / "m.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    bad.update({"m_up": "path_outside_root", "m_abs": "path_outside_root", "m_missing": "missing",
                "m_sur\\x80": "bad_name"})
    source_errors = 3

    # -- a CSV
    csv_dir = root / "csv"
    csv_dir.mkdir()
    (csv_dir / "c1.png").write_bytes(png_bytes(30, 10))
    (csv_dir / "c.csv").write_bytes(b"id,image,note\n"
                                    b"c_good,c1.png,fine\n"
                                    b"c_bad,c1.png,caf\xe9\n"                     # source error
                                    b'c_huge,c1.png,"' + b"x" * 140_000 + b'"\n'  # source error
                                    b"c_dir,.,a folder\n"
                                    b"c_missing,zz.png,gone\n")
    good += 1
    bad.update({"c_dir": "not_a_file", "c_missing": "missing"})
    source_errors += 2

    # -- a URL list, served on 127.0.0.1
    urls = {f"{base_url}/ok.png": None, f"{base_url}/ok.jpg": None,
            "http://h:8o80/a.jpg": "bad_url", "http://10.0.0.256/a.jpg": "bad_url", "http://a\x01b/x.jpg": "bad_url",
            f"{base_url}/missing.png": "http_404", f"{base_url}/page.html": "bad_content_type",
            f"{base_url}/liar.png": "not_an_image", f"{base_url}/error500": "http_500",
            f"{base_url}/redirect-loop": "too_many_redirects", "ftp://example.org/a.png": "bad_url"}
    listing = root / "urls.txt"
    listing.write_bytes("\n".join(urls).encode("utf-8") + b"\nhttp://h/\xc3(.png\n")  # + a bad byte: source error
    good += 2
    bad.update({u: k for u, k in urls.items() if k})
    source_errors += 1

    # -- WebDataset shards: one fine, one with an unsafe member, one damaged after its first sample
    wds = root / "wds"
    wds.mkdir()
    (wds / "s-0.tar").write_bytes(_tar([("w_good0.png", png_bytes(8, 8)), ("w_good0.json", b'{"k": 1}'),
                                        ("w_text.png", b"plain text")]))
    (wds / "s-1.tar").write_bytes(_tar([("w_good1.png", png_bytes(9, 8)), ("../w_escape.png", png_bytes(9, 9))]))
    raw = bytearray(_tar([("w_good2.png", png_bytes(10, 8)), ("w_lost.png", png_bytes(11, 8))]))
    member = 512 + ((len(png_bytes(10, 8)) + 511) // 512) * 512
    raw[member + 100:member + 108] = b"garbage!"  # the second member's header
    (wds / "s-2.tar").write_bytes(bytes(raw))
    good += 3
    bad.update({"w_text": "not_an_image", "../w_escape": "unsafe_member"})
    source_errors += 1  # the damaged header of s-2
    inputs = [str(folder), str(man / "m.jsonl"), str(csv_dir / "c.csv"), str(listing), str(wds / "s-{0..2}.tar")]
    return inputs, bad, good, source_errors


def _captioner() -> ScaleCap:
    model = ScriptedBackend(rules=[(r"Sentence", "Describe more details about the cup.\n")],
                            default="A cup stands on a table.")
    return ScaleCap(captioner=model, scorer=model, writer=model, budget=1, tau=-1.0, tagger="lexicon")


def _records(path: Path) -> dict[str, CaptionResult]:
    recs = [CaptionResult.from_json(line) for line in path.read_text(encoding="utf-8").splitlines()]
    ids = [r.id for r in recs]
    assert len(ids) == len(set(ids)), "a duplicate record"
    return {r.id: r for r in recs}


def test_the_torture_dataset_finishes_with_one_record_per_bad_item(http_server, tmp_path):
    inputs, bad, good, n_source_errors = build(tmp_path / "in", http_server)
    out = tmp_path / "run.jsonl"
    job = dict(inputs=inputs, output=out, fetch=FetchConfig(allow_private_urls=True, retries=0))
    s = run_job(_captioner(), CaptionJob(**job))
    recs = _records(out)
    failed = {rid: r.error_kind for rid, r in recs.items() if r.status == "failed"}
    ok = sorted(rid for rid, r in recs.items() if r.status == "ok")
    assert failed == bad, sorted(set(failed.items()) ^ set(bad.items()))
    assert len(ok) == good, ok
    assert len(bad) + n_source_errors >= 25  # the kinds of bad input in the mix
    assert len(s.source_errors) == n_source_errors, s.source_errors
    assert s.duplicates == 1 and s.exit_code == 1
    assert (s.ok, s.failed) == (good, len(bad))

    before = out.read_bytes()
    s = run_job(_captioner(), CaptionJob(**job, retry_failed=False))
    assert (s.processed, s.skipped, s.exit_code) == (0, good + len(bad), 1)
    assert out.read_bytes() == before  # nothing changed
