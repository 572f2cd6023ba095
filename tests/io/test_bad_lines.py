"""Manifest lines that used to abort the whole read: each is now a source error for its line only,
and the good lines around it (in the same read chunk) are kept."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
from iohelpers import FakeCaptioner, png_bytes

from scalecap.io.sources import ManifestSource, ParquetSource, SourceOptions, UrlListSource
from scalecap.run import CaptionJob, run_job

DEEP = b'{"id": "deep", "image": "a.png", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"


def test_jsonl_bad_byte_and_deep_nesting_cost_one_line_each(tmp_path):
    m = tmp_path / "m.jsonl"
    m.write_bytes(b"\xef\xbb\xbf" + b'{"id": "a", "image": "a.png"}\n'
                  + b'{"id": "b\xff", "image": "b.png"}\n'
                  + b'{"id": "c", "image": "c.png"}\n'
                  + DEEP + b"\n"
                  + b'{"id": "d", "image": "d.png"}\n')
    src = ManifestSource(str(m), SourceOptions())
    assert [i.id for i in src] == ["a", "c", "d"]
    errors = [str(e) for e in src.errors]
    assert len(errors) == 2
    assert errors[0].startswith(f"{m} line 2: not valid UTF-8 (byte 0xff")
    assert errors[1] == f"{m} line 4: JSON nested too deeply to read"


def test_csv_bad_byte_and_a_huge_field_cost_one_row_each(tmp_path):
    m = tmp_path / "m.csv"
    m.write_bytes(b"id,image,note\n"
                  b"a,a.png,fine\n"
                  b"b,b.png,caf\xe9\n"
                  b'c,c.png,"' + b"x" * 140_000 + b'"\n'
                  b'd,d.png,"two\nlines"\n'
                  b"e,e.png,ok\n")
    src = ManifestSource(str(m), SourceOptions())
    items = list(src)
    assert [i.id for i in items] == ["a", "d", "e"]
    assert items[1].meta == {"note": "two\nlines"}
    errors = [str(e) for e in src.errors]
    assert errors[0] == f"{m} line 3: not valid UTF-8 (an undecodable byte): row skipped"
    assert errors[1].startswith(f"{m} line 4: unreadable CSV row: field larger than field limit")
    assert len(errors) == 2


def test_url_list_bad_byte_is_one_source_error_and_count_does_not_repeat_it(tmp_path):
    m = tmp_path / "urls.txt"
    m.write_bytes(b"http://h/a.png\nhttp://h/\xc3(.png\n# comment\nhttp://h/c.png\n")
    src = UrlListSource(str(m), SourceOptions())
    assert src.count() == 2 and not src.errors
    assert [i.id for i in src] == ["http://h/a.png", "http://h/c.png"]
    assert [str(e) for e in src.errors] == [f"{m} line 2: not valid UTF-8 (byte 0xc3 at column 10): line skipped"]


def test_a_corrupt_parquet_row_group_is_a_source_error_and_the_others_are_read(tmp_path):
    p = tmp_path / "m.parquet"
    table = pa.table({"id": [f"r{i}" for i in range(9)], "image": [f"http://h/{i}.png" for i in range(9)]})
    pq.write_table(table, p, row_group_size=3, compression="none")
    group = pq.ParquetFile(p).metadata.row_group(1)
    raw = bytearray(p.read_bytes())
    for c in range(group.num_columns):  # smash the page headers of the middle row group
        col = group.column(c)
        start = col.dictionary_page_offset or col.data_page_offset
        raw[start:start + 8] = b"\xff" * 8
    p.write_bytes(bytes(raw))
    src = ParquetSource(str(p), SourceOptions())
    assert [i.id for i in src] == ["r0", "r1", "r2", "r6", "r7", "r8"]
    assert len(src.errors) == 1 and str(src.errors[0]).startswith(f"{p} rows 3-5: corrupt Parquet data")


def test_a_run_over_a_manifest_with_bad_lines_finishes_and_says_so(tmp_path):
    for name in ("a.png", "c.png"):
        (tmp_path / name).write_bytes(png_bytes(10, 10))
    m = tmp_path / "m.jsonl"
    m.write_bytes(b'{"id": "a", "image": "a.png"}\n{"id": "\xff"}\n' + DEEP + b'\n{"id": "c", "image": "c.png"}\n')
    out = tmp_path / "run.jsonl"
    s = run_job(FakeCaptioner(), CaptionJob(inputs=[str(m)], output=out))
    assert (s.ok, s.failed, len(s.source_errors), s.exit_code) == (2, 0, 2, 1)
    s = run_job(FakeCaptioner(), CaptionJob(inputs=[str(m)], output=out))
    assert (s.skipped, s.processed, len(s.source_errors)) == (2, 0, 2)


def _shard(keys: list[str]) -> bytes:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for k in keys:
            data = png_bytes(8, 8)
            info = tarfile.TarInfo(f"{k}.png")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_a_tar_shard_damaged_on_a_header_or_cut_short_is_a_source_error(tmp_path):
    import gzip

    from scalecap.io.sources import TarSource

    raw = _shard(["k0", "k1", "k2", "k3"])
    member = 512 + ((len(png_bytes(8, 8)) + 511) // 512) * 512  # header + padded data
    (tmp_path / "good-0.tar").write_bytes(raw)
    (tmp_path / "good-1.tar.gz").write_bytes(gzip.compress(raw))
    damaged = bytearray(raw)
    damaged[member + 100:member + 108] = b"garbage!"  # the header of k1
    (tmp_path / "bad-0.tar").write_bytes(bytes(damaged))
    (tmp_path / "bad-1.tar").write_bytes(raw[:2 * member])  # cut after k1, at a member boundary

    good = TarSource(str(tmp_path / "good-{0}.tar"))
    assert [i.id for i in good] == ["k0", "k1", "k2", "k3"] and not good.errors
    gz = TarSource(str(tmp_path / "good-1.tar.gz"))
    assert len(list(gz)) == 4 and not gz.errors
    bad = TarSource(str(tmp_path / "bad-{0,1}.tar"))
    assert [i.id for i in bad] == ["k0", "k0", "k1"]
    errors = [str(e) for e in bad.errors]
    assert errors[0] == f"{tmp_path / 'bad-0.tar'}: damaged tar header at byte {member}: the members after it " \
                        "were not read (the samples before it were)"
    assert errors[1].startswith(f"{tmp_path / 'bad-1.tar'}: truncated tar: no end-of-archive marker")
    assert len(errors) == 2
