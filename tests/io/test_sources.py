"""Sources: every kind, their ids and order, and how bad data becomes per-item errors."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
from iohelpers import jpeg_bytes, png_bytes

from scalecap.images import ImageError
from scalecap.io.sources import (
    FileLoader,
    SourceOptions,
    SourceSpecError,
    detect_kind,
    local_path,
    open_source,
)


def ids(source):
    return [item.id for item in source]


def test_folder_is_recursive_sorted_and_ids_are_relative_paths(small_folder):
    src = open_source([str(small_folder)])
    assert ids(src) == ["a.png", "b photo.jpg", "sub dir/c.png", "sub dir/d.webp", "sub dir/e.gif", "çafé ☕.png"]
    assert src.count() == 6
    assert ids(open_source([str(small_folder)])) == ids(src)  # deterministic


def test_single_file_glob_and_missing_file(small_folder):
    items = list(open_source([str(small_folder / "a.png"), str(small_folder / "sub dir" / "*.png"),
                              str(small_folder / "gone.png")]))
    assert [i.id for i in items] == ["a.png", "c.png", "gone.png"]
    with pytest.raises(ImageError) as exc:
        items[-1].read_bytes()
    assert exc.value.kind == "missing"
    recursive = open_source([str(small_folder) + "/**/*.png"])
    assert ids(recursive) == ["a.png", "sub dir/c.png", "çafé ☕.png"]


def test_a_dangling_symlink_in_a_folder_is_listed_and_fails_as_broken_link(small_folder):
    (small_folder / "sub dir" / "gone.png").symlink_to(small_folder / "deleted.png")
    (small_folder / "sub dir" / "gone.txt").symlink_to(small_folder / "deleted.txt")  # not an image name
    (small_folder / "loop.jpg").symlink_to("loop.jpg")
    items = {i.id: i for i in open_source([str(small_folder)])}
    assert sorted(items) == ["a.png", "b photo.jpg", "loop.jpg", "sub dir/c.png", "sub dir/d.webp", "sub dir/e.gif",
                             "sub dir/gone.png", "çafé ☕.png"]
    for name in ("sub dir/gone.png", "loop.jpg"):
        with pytest.raises(ImageError) as exc:
            items[name].read_bytes()
        assert exc.value.kind == "broken_link" and "->" in str(exc.value), name
    assert "deleted.png" in str(pytest.raises(ImageError, items["sub dir/gone.png"].read_bytes).value)
    assert items["a.png"].read_bytes()[:4] == b"\x89PNG"
    assert ids(open_source([str(small_folder / "sub dir" / "*.png")])) == ["c.png", "gone.png"]  # globs too


def test_jsonl_and_csv_manifests_resolve_relative_paths_and_keep_metadata(small_folder, tmp_path):
    man = tmp_path / "m" / "manifest.jsonl"
    man.parent.mkdir()
    rows = [{"id": "x1", "image": str(small_folder / "a.png"), "domain": "photo", "score": 3},
            {"image": "../my images ü/b photo.jpg", "domain": "chart"},
            {"id": "x3", "image": "missing.png"},
            "not an object",
            {"id": "x4"}]
    man.write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken json\n", encoding="utf-8")
    # the rows point out of the manifest's folder: read only because the test allows it (see below)
    trusting = SourceOptions(allow_paths_outside_root=True)
    src = open_source([str(man)], options=trusting)
    items = list(src)
    assert [i.id for i in items] == ["x1", "../my images ü/b photo.jpg", "x3", "x4"]
    assert items[0].meta == {"domain": "photo", "score": 3}
    assert items[1].read_bytes() == (small_folder / "b photo.jpg").read_bytes()
    with pytest.raises(ImageError) as exc:
        items[2].read_bytes()
    assert exc.value.kind == "missing"
    with pytest.raises(ImageError) as exc:
        items[3].read_bytes()
    assert exc.value.kind == "no_image"
    assert [e.where for e in src.errors] == [f"{man} line 4", f"{man} line 6"]

    c = tmp_path / "m" / "manifest.csv"
    with c.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "image", "domain"])
        w.writerow(["k1", "../my images ü/çafé ☕.png", "document"])
    items = list(open_source([str(c)], options=trusting))
    assert items[0].id == "k1" and items[0].meta == {"domain": "document"}
    assert items[0].read_bytes() == (small_folder / "çafé ☕.png").read_bytes()


def test_manifest_paths_stay_under_their_root(small_folder, tmp_path):
    """Absolute, ``../`` and symlinked-out paths of a manifest are failed items, never read,
    unless allowed; ``image_root`` moves the root (and the base of relative paths)."""
    secret = tmp_path / "secret.png"
    secret.write_bytes(png_bytes(3, 3))
    (small_folder / "link.png").symlink_to(secret)
    man = small_folder / "m.jsonl"
    rows = [{"id": "rel", "image": "a.png"}, {"id": "abs-in", "image": str(small_folder / "b photo.jpg")},
            {"id": "abs-out", "image": str(secret)}, {"id": "dotdot", "image": "../secret.png"},
            {"id": "link", "image": "link.png"}, {"id": "gone", "image": "nope.png"}]
    man.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    lst = small_folder / "list.txt"
    lst.write_text(f"a.png\n{secret}\n../secret.png\n", encoding="utf-8")

    def kinds(spec, options=None):
        out = {}
        for item in open_source([str(spec)], options=options):
            try:
                item.read_bytes()
                out[item.id] = "ok"
            except ImageError as exc:
                out[item.id] = exc.kind
        return out

    refused = {"abs-out": "path_outside_root", "dotdot": "path_outside_root", "link": "path_outside_root"}
    assert kinds(man) == {"rel": "ok", "abs-in": "ok", "gone": "missing", **refused}
    assert kinds(lst) == {"a.png": "ok", str(secret): "path_outside_root", "../secret.png": "path_outside_root"}
    item = next(i for i in open_source([str(man)]) if i.id == "dotdot")
    assert local_path(item) is None  # no sidecar is ever written beside a refused path
    with pytest.raises(ImageError, match="--allow-paths-outside-root"):
        item.read_bytes()
    # allowed: everything that exists is read, as written
    assert set(kinds(man, SourceOptions(allow_paths_outside_root=True)).values()) == {"ok", "missing"}
    # a wider root: relative paths are relative to it, and what lies under it is read
    wide = SourceOptions(image_root=tmp_path)
    assert kinds(man, wide) == {"rel": "missing", "abs-in": "ok", "abs-out": "ok", "dotdot": "path_outside_root",
                                "link": "missing", "gone": "missing"}
    # a symlink swapped in after the listing is refused when it is read
    items = {i.id: i for i in open_source([str(man)])}
    (small_folder / "a.png").unlink()
    (small_folder / "a.png").symlink_to(secret)
    with pytest.raises(ImageError) as exc:
        items["rel"].read_bytes()
    assert exc.value.kind == "path_outside_root"


def test_parquet_manifest_and_embedded_images(tmp_path, small_folder):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    manifest = tmp_path / "paths.parquet"
    pq.write_table(pa.table({"id": ["p1"], "image": ["my images ü/a.png"], "domain": ["photo"]}), manifest)
    items = list(open_source([str(manifest)]))
    assert items[0].read_bytes() == (small_folder / "a.png").read_bytes() and items[0].meta == {"domain": "photo"}

    a, b = png_bytes(5, 6), jpeg_bytes(7, 8)
    structs = tmp_path / "hf_style.parquet"
    pq.write_table(pa.table({"image": [{"bytes": a, "path": "one.png"}, {"bytes": b, "path": None}],
                             "label": [1, 2]}), structs)
    items = list(open_source([str(structs)]))
    assert [i.id for i in items] == ["one.png", hashlib.sha256(b).hexdigest()]
    assert items[0].data == a and items[1].meta == {"label": 2}
    raw = tmp_path / "raw.parquet"
    pq.write_table(pa.table({"id": ["r1"], "image": [a]}), raw)
    assert list(open_source([str(raw)]))[0].data == a
    with pytest.raises(SourceSpecError, match="no 'picture' column"):
        open_source([str(raw)], options=SourceOptions(image_column="picture"))


def test_hugging_face_dataset_saved_to_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    a, b = png_bytes(5, 6), png_bytes(9, 9, (0, 0, 255))
    ds = datasets.Dataset.from_dict({"id": ["h1", "h2"], "image": [{"bytes": a, "path": None}, {"bytes": b, "path": None}],
                                     "domain": ["photo", "diagram"]}).cast_column("image", datasets.Image())
    datasets.DatasetDict({"train": ds, "test": ds.select([1])}).save_to_disk(str(tmp_path / "hfds"))
    assert detect_kind(str(tmp_path / "hfds")) == "hf"
    items = list(open_source([str(tmp_path / "hfds")]))
    assert [(i.id, i.data, i.meta) for i in items] == [("h1", a, {"domain": "photo"}), ("h2", b, {"domain": "diagram"})]
    assert [i.id for i in open_source([str(tmp_path / "hfds") + "#test"])] == ["h2"]
    with pytest.raises(SourceSpecError, match="splits: train, test"):
        open_source([str(tmp_path / "hfds") + "#nope"])


def _tar(path: Path, members: list[tuple[str, bytes]], kinds: dict[str, bytes] | None = None) -> Path:
    with tarfile.open(path, "w") as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        for name, kind in (kinds or {}).items():
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = "/etc/passwd"
            t.addfile(info)
    return path


def test_webdataset_shards_keys_brace_patterns_and_bad_members(tmp_path):
    img = jpeg_bytes()
    _tar(tmp_path / "shard-000.tar", [("000/k1.jpg", img), ("000/k1.txt", b"alt text"), ("000/k1.json", b"{}"),
                                      ("k2.png", png_bytes()), ("k2.jpg", img), ("k3.txt", b"no image here")])
    _tar(tmp_path / "shard-001.tar", [("../evil.jpg", img), ("/etc/abs.jpg", img), ("ok.jpg", img)],
         {"link.jpg": tarfile.SYMTYPE})
    src = open_source([str(tmp_path / "shard-{000..001}.tar")])
    items = list(src)
    assert [i.id for i in items] == ["000/k1", "k2", "k3", "../evil", "/etc/abs", "ok", "link"]
    assert items[0].data == img and items[1].data == img  # jpg preferred
    kinds = {}
    for i in items:
        try:
            i.read_bytes()
        except ImageError as exc:
            kinds[i.id] = exc.kind
    assert kinds == {"k3": "no_image", "../evil": "unsafe_member", "/etc/abs": "unsafe_member", "link": "unsafe_member"}
    assert items[0].source == "shard-000.tar#000/k1"
    assert src.errors == []


def test_corrupt_and_truncated_shards_keep_what_was_read(tmp_path):
    good = _tar(tmp_path / "good.tar", [(f"g{i}.jpg", jpeg_bytes()) for i in range(3)])
    data = good.read_bytes()
    with tarfile.open(good) as t:
        cut = t.getmember("g2.jpg").offset_data + 100
    (tmp_path / "trunc.tar").write_bytes(data[:cut])  # cut inside the last member
    (tmp_path / "garbage.tar").write_bytes(b"this is not a tar file at all" * 40)
    src = open_source([str(tmp_path / "trunc.tar"), str(tmp_path / "garbage.tar"), str(good)])
    got = ids(src)
    assert got[-3:] == ["g0", "g1", "g2"]
    assert got[:-3] == ["g0", "g1"]  # the truncated copy: the whole samples before the damage
    assert {Path(e.where).name for e in src.errors} == {"trunc.tar", "garbage.tar"}


def test_url_lists_and_kind_detection(tmp_path, small_folder):
    lst = tmp_path / "urls.txt"
    lst.write_text("# a comment\nhttp://127.0.0.1:9/a.jpg\n\n" + str(small_folder / "a.png") + "\n", encoding="utf-8")
    items = list(open_source([str(lst)]))
    assert [i.id for i in items] == ["http://127.0.0.1:9/a.jpg", str(small_folder / "a.png")]
    assert isinstance(items[1].loader, FileLoader)
    assert detect_kind("https://x/y.png") == "urls"
    assert detect_kind("a/b-{000..010}.tar") == "wds" and detect_kind("x.tgz") == "wds"
    assert detect_kind("m.csv") == "manifest" and detect_kind("m.parquet") == "parquet"
    assert detect_kind(str(small_folder)) == "files"
    with pytest.raises(SourceSpecError, match="unknown input format"):
        open_source(["x"], "zip")
    with pytest.raises(SourceSpecError, match="manifest not found"):
        open_source([str(tmp_path / "nope.jsonl")])
