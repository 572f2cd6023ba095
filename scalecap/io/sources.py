"""Sources: where images come from (the *reader* of the reader / worker / writer split).

A source turns a spec string (what a user types after ``scalecap caption``) into a deterministic,
lazy stream of ``ImageItem``s. Lazy means that nothing is read until the engine pulls an item: a
folder is listed, a manifest is read row by row, a tar shard is streamed, a URL is fetched on the
worker thread that captions it. Deterministic means that the same spec gives the same items in the
same order, which is what makes ``--limit``, ``--shard i/n`` and resume mean the same thing on
every run.

Kinds (picked from the spec by extension or scheme, or forced with ``input_format``):

============  =======================================================  =============================
kind          spec                                                     id
============  =======================================================  =============================
files         an image file, a folder (recursive, sorted), a glob       file name / path relative to
                                                                       the folder or the glob's base
manifest      ``.jsonl``/``.ndjson``/``.csv``/``.parquet`` with an      the ``id`` column, else the
              ``image`` column (path relative to the manifest, or URL)  ``image`` value as written
parquet       Parquet with an image column of bytes or {bytes, path}    ``id`` column, else the image
              (how Hugging Face stores images)                          path, else sha256 of bytes
hf            a ``datasets`` dataset saved with ``save_to_disk``        as parquet
              (``DIR`` or ``DIR#split``)
wds           WebDataset tar shards (``.tar``, ``.tar.gz``, ``.tgz``,   the sample's ``__key__``
              brace patterns ``shard-{000..009}.tar``)
urls          an ``http(s)://`` URL, or a ``.txt`` list of URLs/paths   the URL / line as written
============  =======================================================  =============================

Manifest and dataset columns other than the id and the image (``domain``, ``caption``, ...) become
``ImageItem.meta`` and so the record's ``meta``.

Errors are per item where there is an item: a missing file, an unsafe tar member name (``../x``,
``/etc/x``), a sample with no image are yielded as items whose loader raises ``ImageError`` (the
run writes a failed record and goes on). Errors with no item to blame (a corrupt tar shard, an
unreadable manifest line) are collected in ``Source.errors`` and reported in the run summary; the
items before and after them are still read.
"""

from __future__ import annotations

import csv
import glob as globlib
import hashlib
import json
import os
import re
import tarfile
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..images import ImageError, ImageItem
from ..records import error_line, has_surrogates
from .fetch import FetchConfig, UrlLoader

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
MANIFEST_SUFFIXES = {".jsonl", ".ndjson", ".csv"}
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
INPUT_FORMATS = ("auto", "files", "manifest", "parquet", "hf", "wds", "urls")
#: Longest CSV field accepted (the csv module's default limit, enforced here whatever the global is).
CSV_FIELD_LIMIT = 131_072
#: Image members of a WebDataset sample, in order of preference.
WDS_IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")


class SourceSpecError(ValueError):
    """A spec the user gave cannot be read at all (a refusal before the run starts)."""


@dataclass
class SourceError:
    """A problem with no single item to blame (a corrupt shard, a bad manifest line)."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class SourceOptions:
    id_column: str = "id"
    image_column: str = "image"
    fetch: FetchConfig = field(default_factory=FetchConfig)
    #: Where a manifest's local paths are resolved and must stay (None: the manifest's own folder).
    image_root: Path | None = None
    #: Read manifest paths that resolve outside the root too (absolute paths, ``../``, symlinks out).
    allow_paths_outside_root: bool = False


# ---------------------------------------------------------------------------------------- loaders
@dataclass(frozen=True)
class FileLoader:
    """Reads a local file when the item's turn comes. ``path`` lets filters read only the header
    and sidecar sinks write beside the image."""

    path: str
    #: The folder the file must resolve under when it is read (a manifest's root; None: anywhere).
    root: str | None = None

    def __call__(self) -> bytes:
        p = Path(self.path)
        if self.root is not None:
            # checked again at read time: a symlink swapped in after the listing cannot lead out
            problem = _outside_root(p, self.root)
            if problem:
                raise ImageError(PATH_OUTSIDE_ROOT, problem)
        if not p.exists():
            if p.is_symlink():
                raise ImageError(BROKEN_LINK, f"a symbolic link to a missing file (or a link loop): {self.path}"
                                              f" -> {_link_target(p)}")
            raise ImageError("missing", f"file not found: {self.path}")
        if not p.is_file():
            raise ImageError("not_a_file", f"not a regular file: {self.path}")
        return p.read_bytes()


@dataclass(frozen=True)
class FailLoader:
    """An item known to be bad before it is read: the failure becomes its record."""

    kind: str
    message: str

    def __call__(self) -> bytes:
        raise ImageError(self.kind, self.message)


#: The error_kind of a symbolic link whose target does not exist (or that loops).
BROKEN_LINK = "broken_link"


def _link_target(p: Path) -> str:
    try:
        return os.readlink(p)
    except OSError as exc:
        return f"(unreadable: {exc.strerror})"


def _listed(p: Path) -> bool:
    """Whether a folder or glob listing yields ``p``: a regular file (links followed), or a dangling
    symbolic link, which would otherwise vanish from the run without a record; it is listed so that
    its read fails as ``broken_link``."""
    return p.is_file() or (p.is_symlink() and not p.exists())


#: The error_kind of a manifest path that resolves outside its root.
PATH_OUTSIDE_ROOT = "path_outside_root"


def _outside_root(path: Path, root: str) -> str | None:
    """Why ``path`` may not be read from a manifest rooted at ``root`` (None: it may).

    Both sides are resolved with symlinks followed, so ``../``, absolute paths and links that
    lead out are all caught by one rule: the real file must sit under the real root."""
    real, real_root = os.path.realpath(path), os.path.realpath(root)
    if real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep):
        return None
    return (f"{str(path)!r} resolves to {real!r}, outside the image root {real_root!r}: refused "
            "(give --image-root DIR holding it, or --allow-paths-outside-root to read any path)")


def local_item(id_: str, ref: str, base: Path, options: SourceOptions, meta: dict[str, Any] | None = None) -> ImageItem:
    """The item of a local path written in a manifest or URL list.

    A relative ``ref`` is relative to ``options.image_root`` when given, else to ``base`` (the
    manifest's folder); the file must resolve under that root unless
    ``options.allow_paths_outside_root``. A path that does not is a failed item
    (``path_outside_root``), read never: a manifest from elsewhere cannot make the run read
    ``/etc/passwd`` or ``../../secret.png`` and copy it into the outputs."""
    root = Path(options.image_root) if options.image_root is not None else base
    p = Path(ref)
    if not p.is_absolute():
        p = root / p
    meta = meta or {}
    if options.allow_paths_outside_root:
        return ImageItem(id=id_, source=str(p), loader=FileLoader(str(p)), meta=meta)
    problem = _outside_root(p, str(root))
    if problem:
        return ImageItem(id=id_, source=str(p), loader=FailLoader(PATH_OUTSIDE_ROOT, problem), meta=meta)
    return ImageItem(id=id_, source=str(p), loader=FileLoader(str(p), str(root)), meta=meta)


def local_path(item: ImageItem) -> Path | None:
    """The local file an item reads from, if it is one."""
    loader = item.loader
    return Path(loader.path) if isinstance(loader, FileLoader) else None


# ---------------------------------------------------------------------------------------- base
class Source(ABC):
    """A deterministic, lazy stream of items. ``errors`` fills as iteration proceeds."""

    kind: str = "source"
    #: Whether items may be local files (sidecar captions can be written beside those only).
    may_have_local_files: bool = True

    def __init__(self) -> None:
        self.errors: list[SourceError] = []

    @abstractmethod
    def __iter__(self) -> Iterator[ImageItem]: ...

    def count(self) -> int | None:
        """The number of items, when it is cheap to know (for the progress bar's ETA)."""
        return None


class ChainSource(Source):
    """Several specs, one after the other."""

    kind = "chain"

    def __init__(self, sources: list[Source]) -> None:
        super().__init__()
        self.sources = sources
        self.may_have_local_files = any(s.may_have_local_files for s in sources)
        self.errors = _SharedErrors(sources)  # type: ignore[assignment]

    def __iter__(self) -> Iterator[ImageItem]:
        for s in self.sources:
            yield from s

    def count(self) -> int | None:
        counts = [s.count() for s in self.sources]
        return None if any(c is None for c in counts) else sum(counts)  # type: ignore[arg-type]


class _SharedErrors(list):
    """A read-only view of the errors of several sources."""

    def __init__(self, sources: list[Source]) -> None:
        super().__init__()
        self._sources = sources

    def _all(self) -> list[SourceError]:
        return [e for s in self._sources for e in s.errors]

    def __iter__(self):
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    def __bool__(self) -> bool:
        return bool(len(self))

    def __getitem__(self, i):
        return self._all()[i]


# ---------------------------------------------------------------------------------------- files
class FileSource(Source):
    """Image files, folders (recursive) and globs. Listing is sorted, so the order is stable."""

    kind = "files"

    def __init__(self, spec: str) -> None:
        super().__init__()
        self.spec = spec
        self._listing: list[tuple[Path, str]] | None = None

    def _list(self) -> list[tuple[Path, str]]:
        if self._listing is None:
            self._listing = list(_list_files(self.spec))
        return self._listing

    def __iter__(self) -> Iterator[ImageItem]:
        for path, id_ in self._list():
            yield ImageItem(id=id_, source=str(path), loader=FileLoader(str(path)))

    def count(self) -> int:
        return len(self._list())


def _list_files(spec: str) -> Iterator[tuple[Path, str]]:
    path = Path(spec)
    if path.is_dir():
        files = sorted((p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and _listed(p)),
                       key=lambda p: p.relative_to(path).as_posix())
        for f in files:
            yield f, f.relative_to(path).as_posix()
    elif _is_glob(spec) and not path.exists():
        base = _glob_base(spec)
        matches = sorted(Path(m) for m in globlib.glob(spec, recursive=True))
        for m in matches:
            if _listed(m):
                yield m, (m.relative_to(base).as_posix() if base and _is_relative_to(m, base) else m.name)
    else:
        # A single file; a missing one becomes a per-item failure record, not a crash.
        yield path, path.name


def _is_glob(spec: str) -> bool:
    return any(c in spec for c in "*?[")


def _glob_base(spec: str) -> Path | None:
    parts = []
    for part in Path(spec).parts:
        if _is_glob(part):
            break
        parts.append(part)
    return Path(*parts) if parts else None


def _is_relative_to(p: Path, base: Path) -> bool:
    try:
        p.relative_to(base)
        return True
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------- rows
class _RowSource(Source):
    """Rows (dicts) to items: the shared logic of manifests, Parquet and HF datasets."""

    def __init__(self, spec: str, options: SourceOptions) -> None:
        super().__init__()
        self.spec = spec
        self.options = options
        self.base = Path(spec).parent

    def _safe_item(self, row: dict[str, Any], where: str) -> ImageItem | None:
        """``_item``, with a row that breaks it (nested too deeply, say) reported as a source error."""
        try:
            return self._item(row, where)
        except (RecursionError, ValueError, TypeError) as exc:
            self.errors.append(SourceError(f"{self.spec} {where}", f"unreadable row: {error_line(exc)}"))
            return None

    def _item(self, row: dict[str, Any], where: str) -> ImageItem | None:
        o = self.options
        image = row.get(o.image_column)
        raw_id = row.get(o.id_column)
        meta = {k: _jsonable(v) for k, v in row.items()
                if k not in (o.id_column, o.image_column) and _jsonable(v) is not _SKIP}
        given_id = None if raw_id is None or raw_id == "" else str(raw_id)
        if isinstance(image, dict):  # Hugging Face Image feature: {"bytes": ..., "path": ...}
            data, ref = image.get("bytes"), image.get("path")
            if data:
                id_ = given_id or ref or hashlib.sha256(data).hexdigest()
                return ImageItem(id=id_, source=f"{self.spec}#{where}", data=bytes(data), meta=meta)
            image = ref
        if isinstance(image, (bytes, bytearray, memoryview)):
            data = bytes(image)
            id_ = given_id or hashlib.sha256(data).hexdigest()
            return ImageItem(id=id_, source=f"{self.spec}#{where}", data=data, meta=meta)
        if isinstance(image, str) and image.strip():
            ref = image.strip()
            id_ = given_id or ref
            if ref.lower().startswith(("http://", "https://")):
                return ImageItem(id=id_, source=ref, loader=UrlLoader(ref, o.fetch), meta=meta)
            return local_item(id_, ref, self.base, o, meta)
        if given_id is not None:
            return ImageItem(id=given_id, source=f"{self.spec}#{where}", meta=meta,
                             loader=FailLoader("no_image", f"{self.spec} {where}: no {o.image_column!r} value"))
        self.errors.append(SourceError(f"{self.spec} {where}",
                                       f"row has neither an {o.id_column!r} nor an {o.image_column!r} value"))
        return None


_SKIP = object()


def _jsonable(v: Any) -> Any:
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    if isinstance(v, (bytes, bytearray, memoryview)):
        return _SKIP
    if isinstance(v, (list, tuple)):
        out = [_jsonable(x) for x in v]
        return _SKIP if any(x is _SKIP for x in out) else out
    if isinstance(v, dict):
        out = {str(k): _jsonable(x) for k, x in v.items()}
        return _SKIP if any(x is _SKIP for x in out.values()) else out
    if hasattr(v, "isoformat"):
        return v.isoformat()
    if hasattr(v, "item"):  # numpy scalar
        return v.item()
    return str(v)


class ManifestSource(_RowSource):
    """JSONL or CSV manifests (Parquet manifests are read by ``ParquetSource``)."""

    kind = "manifest"

    def __init__(self, spec: str, options: SourceOptions) -> None:
        super().__init__(spec, options)
        path = Path(spec)
        if not path.is_file():
            raise SourceSpecError(f"manifest not found: {spec}")
        self.path = path

    def __iter__(self) -> Iterator[ImageItem]:
        if self.path.suffix.lower() == ".csv":
            yield from self._csv()
        else:
            yield from self._jsonl()

    def _jsonl(self) -> Iterator[ImageItem]:
        # Bytes, decoded line by line: an undecodable byte costs its line, not the lines after it.
        with self.path.open("rb") as f:
            for n, raw in enumerate(f, 1):
                where = f"{self.spec} line {n}"
                line = _decode_line(raw, n, where, self.errors)
                if line is None or not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except RecursionError:
                    self.errors.append(SourceError(where, "JSON nested too deeply to read"))
                    continue
                except ValueError as exc:
                    self.errors.append(SourceError(where, f"not JSON: {exc}"))
                    continue
                if not isinstance(row, dict):
                    self.errors.append(SourceError(where, "not a JSON object"))
                    continue
                item = self._safe_item(row, f"line {n}")
                if item is not None:
                    yield item

    def _csv(self) -> Iterator[ImageItem]:
        with self.path.open("rb") as f:
            # undecodable bytes survive as lone surrogates (surrogateescape), so the CSV structure of
            # the line is kept and the row they fall in is reported; the rows around it are read
            reader = csv.DictReader(_lines_escaped(f))
            try:
                fieldnames = reader.fieldnames
            except csv.Error as exc:
                raise SourceSpecError(f"{self.spec}: unreadable CSV header: {exc}") from None
            if fieldnames is None or self.options.image_column not in fieldnames:
                raise SourceSpecError(f"{self.spec}: no {self.options.image_column!r} column "
                                      f"(columns: {fieldnames}); use --image-column")
            while True:
                at = f"line {reader.line_num + 1}"
                where = f"{self.spec} {at}"
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:  # e.g. a field over csv.field_size_limit() (131,072 chars)
                    self.errors.append(SourceError(where, f"unreadable CSV row: {exc}"))
                    continue
                row = {k: v for k, v in row.items() if k is not None}
                if any(isinstance(v, str) and len(v) > CSV_FIELD_LIMIT for v in row.values()):
                    # checked here too: csv.field_size_limit is process-wide, and other code may raise it
                    self.errors.append(SourceError(where, f"unreadable CSV row: a field over {CSV_FIELD_LIMIT:,} characters"))
                    continue
                if any(has_surrogates(v) for v in row.values() if isinstance(v, str)):
                    self.errors.append(SourceError(where, "not valid UTF-8 (an undecodable byte): row skipped"))
                    continue
                item = self._safe_item(row, at)
                if item is not None:
                    yield item

    def count(self) -> int:
        with self.path.open("rb") as f:
            lines = sum(1 for line in f if line.strip())
        return lines - 1 if self.path.suffix.lower() == ".csv" else lines


def _decode_line(raw: bytes, n: int, where: str, errors: list | None) -> str | None:
    """One line of a text manifest as text (a BOM on the first line dropped); None, with a source
    error, when it is not UTF-8."""
    try:
        return raw.decode("utf-8-sig" if n == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        if errors is not None:
            errors.append(SourceError(where, f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column "
                                             f"{exc.start + 1}): line skipped"))
        return None


def _lines_escaped(f) -> Iterator[str]:
    for n, raw in enumerate(f, 1):
        yield raw.decode("utf-8-sig" if n == 1 else "utf-8", "surrogateescape")


class ParquetSource(_RowSource):
    """Parquet files: manifests (an image column of paths/URLs) or embedded images (bytes, or
    Hugging Face's struct {bytes, path}). Read in small record batches: memory stays flat."""

    kind = "parquet"

    def __init__(self, spec: str, options: SourceOptions, batch_size: int = 64) -> None:
        super().__init__(spec, options)
        import pyarrow.parquet as pq

        files = _expand(spec)
        if not files:
            raise SourceSpecError(f"no Parquet file matches {spec}")
        self.files = [Path(f) for f in files]
        for f in self.files:
            if not f.is_file():
                raise SourceSpecError(f"Parquet file not found: {f}")
            names = pq.ParquetFile(f).schema_arrow.names
            if options.image_column not in names:
                raise SourceSpecError(f"{f}: no {options.image_column!r} column (columns: {names}); use --image-column")
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[ImageItem]:
        import pyarrow.parquet as pq

        for f in self.files:
            self.spec, self.base = str(f), f.parent
            pf = pq.ParquetFile(f)
            row_n = 0
            for group in range(pf.metadata.num_row_groups):
                # row group by row group: a corrupt one is a source error, the others are read
                group_rows = pf.metadata.row_group(group).num_rows
                start, batches = row_n, pf.iter_batches(batch_size=self.batch_size, row_groups=[group])
                while True:
                    try:
                        rows = next(batches).to_pylist()
                    except StopIteration:
                        break
                    except Exception as exc:  # noqa: BLE001 - pyarrow raises OSError, ArrowInvalid, ...
                        self.errors.append(SourceError(
                            f"{f} rows {row_n}-{start + group_rows - 1}",
                            f"corrupt Parquet data ({error_line(exc, 300)}); these rows are skipped"))
                        break
                    for row in rows:
                        item = self._safe_item(row, f"row {row_n}")
                        row_n += 1
                        if item is not None:
                            yield item
                row_n = start + group_rows

    def count(self) -> int:
        import pyarrow.parquet as pq

        return sum(pq.ParquetFile(f).metadata.num_rows for f in self.files)


class HFDatasetSource(_RowSource):
    """A Hugging Face ``datasets`` dataset saved with ``save_to_disk`` (``DIR`` or ``DIR#split``).

    Images are read undecoded (``Image(decode=False)``): the bytes go to the pipeline as stored.
    """

    kind = "hf"
    may_have_local_files = False

    def __init__(self, spec: str, options: SourceOptions, batch_size: int = 64) -> None:
        super().__init__(spec, options)
        try:
            import datasets
        except ImportError as exc:
            raise SourceSpecError("reading a saved Hugging Face dataset needs `datasets`: "
                                  "pip install 'scalecap[io]' (or pip install datasets)") from exc
        path, _, split = spec.partition("#")
        self.path = Path(path)
        ds = datasets.load_from_disk(str(self.path))
        if isinstance(ds, datasets.DatasetDict):
            if not split:
                split = "train" if "train" in ds else (next(iter(ds)) if len(ds) == 1 else "")
            if split not in ds:
                raise SourceSpecError(f"{path}: pick a split with {path}#SPLIT (splits: {', '.join(ds)})")
            ds = ds[split]
        column = options.image_column
        if column not in ds.column_names:
            images = [n for n, f in ds.features.items() if isinstance(f, datasets.Image)]
            if not images:
                raise SourceSpecError(f"{spec}: no {column!r} column and no Image column (columns: {ds.column_names})")
            column = images[0]
            self.options = replace(options, image_column=column)
        if isinstance(ds.features[column], datasets.Image):
            ds = ds.cast_column(column, datasets.Image(decode=False))
        self.ds = ds
        self.spec = spec
        self.base = self.path
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[ImageItem]:
        n = 0
        for batch in self.ds.iter(batch_size=self.batch_size):
            keys = list(batch)
            for values in zip(*(batch[k] for k in keys)):
                item = self._item(dict(zip(keys, values)), f"row {n}")
                n += 1
                if item is not None:
                    yield item

    def count(self) -> int:
        return len(self.ds)


# ---------------------------------------------------------------------------------------- tar
_KEY_EXT = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")


def _unsafe_name(name: str) -> bool:
    p = name.replace("\\", "/")
    return p.startswith("/") or any(part == ".." for part in p.split("/")) or bool(re.match(r"^[A-Za-z]:", p))


class TarSource(Source):
    """WebDataset tar shards, streamed (never extracted to disk).

    A sample is the run of consecutive members sharing a key (the path up to the first dot of the
    file name); its image is the member with an image extension (jpg first). A member named with
    ``..`` or an absolute path, or a link or device, makes its sample a failed item
    (``unsafe_member``): nothing from a tar is ever written to a path it names.
    """

    kind = "wds"
    may_have_local_files = False

    def __init__(self, spec: str) -> None:
        super().__init__()
        self.spec = spec
        self.shards = _expand(spec)
        if not self.shards:
            raise SourceSpecError(f"no tar shard matches {spec}")

    def __iter__(self) -> Iterator[ImageItem]:
        for shard in self.shards:
            yield from self._read_shard(shard)

    def _read_shard(self, shard: str) -> Iterator[ImageItem]:
        name = Path(shard).name
        try:
            f = open(shard, "rb")
        except OSError as exc:
            self.errors.append(SourceError(shard, f"cannot open shard: {exc}"))
            return
        key: str | None = None
        sample: dict[str, bytes] = {}
        problem: str | None = None
        try:
            with f, tarfile.open(fileobj=f, mode="r|*") as tar:
                for member in tar:
                    m = _KEY_EXT.match(member.name)
                    mkey, ext = (m.group(1), m.group(2).lower()) if m else (member.name, "")
                    if mkey != key:
                        if key is not None:
                            yield self._sample(name, key, sample, problem)
                        key, sample, problem = mkey, {}, None
                    if member.isdir():
                        continue
                    if _unsafe_name(member.name):
                        problem = f"unsafe member name {member.name!r} (absolute or with '..'): refused"
                        continue
                    if not member.isfile():
                        problem = f"member {member.name!r} is a link or device, not a file: refused"
                        continue
                    data = tar.extractfile(member)
                    sample[ext] = data.read() if data is not None else b""
                if key is not None:
                    yield self._sample(name, key, sample, problem)
                    key = None
                damage = _end_of_archive_problem(tar)
                if damage:
                    self.errors.append(SourceError(shard, damage))
        except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
            # A truncated or corrupt shard: what was read before stays; the torn sample is dropped.
            self.errors.append(SourceError(shard, f"corrupt or truncated tar ({type(exc).__name__}: {exc}); "
                                                  f"the samples before the damage were read"))

    def _sample(self, shard_name: str, key: str, sample: dict[str, bytes], problem: str | None) -> ImageItem:
        source = f"{shard_name}#{key}"
        if problem:
            return ImageItem(id=key, source=source, loader=FailLoader("unsafe_member", problem))
        ext = next((e for e in WDS_IMAGE_EXTS if e in sample), None)
        if ext is None:
            return ImageItem(id=key, source=source, loader=FailLoader(
                "no_image", f"sample {key!r} of {shard_name} has no image member (has: {sorted(sample)})"))
        return ImageItem(id=key, source=source, data=sample[ext])


def _end_of_archive_problem(tar: tarfile.TarFile) -> str | None:
    """Why the member iteration stopped early, if it did.

    ``tarfile`` ends its iteration silently at a damaged header after the first one (the rest of
    the shard unread) and at a file cut at a member boundary. A whole archive ends with zero blocks
    (two, then padding); so after the last member the stream must hold at least one more block,
    and only zeros."""
    offset, seen = tar.offset, 0
    while True:
        chunk = tar.fileobj.read(1 << 16)
        if not chunk:
            break
        seen += len(chunk)
        if chunk.strip(b"\0"):
            return (f"damaged tar header at byte {offset}: the members after it were not read "
                    "(the samples before it were)")
    if seen == 0:
        return (f"truncated tar: no end-of-archive marker after byte {offset} "
                "(the samples before it were read; later ones may be missing)")
    return None


# ---------------------------------------------------------------------------------------- urls
#: A URL of a scheme we do not fetch (``ftp://``, ``s3://``, ``file://``...), never a local path.
_OTHER_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


class UrlListSource(Source):
    """One URL, or a text file with one URL or path per line (``#`` comments, blank lines skipped)."""

    kind = "urls"

    def __init__(self, spec: str, options: SourceOptions) -> None:
        super().__init__()
        self.spec = spec
        self.options = options
        self.single = spec.lower().startswith(("http://", "https://"))
        self.may_have_local_files = not self.single
        if not self.single and not Path(spec).is_file():
            raise SourceSpecError(f"URL list not found: {spec}")

    def _lines(self, errors: list | None = None) -> Iterator[str]:
        if self.single:
            yield self.spec
            return
        with open(self.spec, "rb") as f:
            for n, raw in enumerate(f, 1):
                line = _decode_line(raw, n, f"{self.spec} line {n}", errors)
                line = line.strip() if line is not None else ""
                if line and not line.startswith("#"):
                    yield line

    def __iter__(self) -> Iterator[ImageItem]:
        base = Path(self.spec).parent
        for ref in self._lines(self.errors):
            if ref.lower().startswith(("http://", "https://")):
                yield ImageItem(id=ref, source=ref, loader=UrlLoader(ref, self.options.fetch))
            elif _OTHER_SCHEME.match(ref):  # ftp://, s3://, file://: not a path, and not fetched
                yield ImageItem(id=ref, source=ref, loader=FailLoader(
                    "bad_url", f"only http(s) URLs can be fetched: {ref[:200]!r}"))
            else:
                yield local_item(ref, ref, base, self.options)

    def count(self) -> int:
        return sum(1 for _ in self._lines())


# ---------------------------------------------------------------------------------------- specs
def _expand(spec: str) -> list[str]:
    """Brace patterns (``a-{000..009}.tar``, ``{x,y}``) and globs, sorted; a plain path as is."""
    out: list[str] = []
    for s in _braces(spec):
        if _is_glob(s) and not Path(s).exists():
            out.extend(sorted(globlib.glob(s)))
        else:
            out.append(s)
    return out


def _braces(spec: str) -> list[str]:
    m = re.search(r"\{([^{}]*)\}", spec)
    if not m:
        return [spec]
    body = m.group(1)
    rng = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if rng:
        a, b = rng.groups()
        width = len(a) if a.startswith("0") else 0
        options = [str(i).zfill(width) for i in range(int(a), int(b) + 1)]
    else:
        options = body.split(",")
    return [x for opt in options for x in _braces(spec[:m.start()] + opt + spec[m.end():])]


def detect_kind(spec: str) -> str:
    """The source kind a spec names (by scheme, extension or folder content)."""
    low = spec.lower()
    if low.startswith(("http://", "https://")):
        return "urls"
    path_part = spec.partition("#")[0]
    p = Path(path_part)
    if p.is_dir() and ((p / "dataset_info.json").is_file() or (p / "dataset_dict.json").is_file()
                       or (p / "state.json").is_file()):
        return "hf"
    if low.endswith(TAR_SUFFIXES):
        return "wds"
    if low.endswith(".parquet"):
        return "parquet"
    if p.suffix.lower() in MANIFEST_SUFFIXES:
        return "manifest"
    if p.suffix.lower() == ".txt" and p.is_file():
        return "urls"
    return "files"


def open_source(inputs: str | Iterable[str], input_format: str | None = None,
                options: SourceOptions | None = None) -> Source:
    """A source for one or more spec strings (``input_format`` forces the kind of all of them)."""
    specs = [inputs] if isinstance(inputs, str) else list(inputs)
    if not specs:
        raise SourceSpecError("no input given")
    options = options or SourceOptions()
    fmt = (input_format or "auto").lower()
    if fmt not in INPUT_FORMATS:
        raise SourceSpecError(f"unknown input format {input_format!r}: choose from {', '.join(INPUT_FORMATS)}")
    sources: list[Source] = []
    for spec in specs:
        kind = detect_kind(spec) if fmt == "auto" else fmt
        if kind == "files":
            sources.append(FileSource(spec))
        elif kind == "manifest":
            if spec.lower().endswith(".parquet"):
                sources.append(ParquetSource(spec, options))
            else:
                sources.append(ManifestSource(spec, options))
        elif kind == "parquet":
            sources.append(ParquetSource(spec, options))
        elif kind == "hf":
            sources.append(HFDatasetSource(spec, options))
        elif kind == "wds":
            sources.append(TarSource(spec))
        elif kind == "urls":
            sources.append(UrlListSource(spec, options))
    return sources[0] if len(sources) == 1 else ChainSource(sources)


def iter_items(inputs: str | Iterable[str], input_format: str | None = None,
               options: SourceOptions | None = None) -> Iterator[ImageItem]:
    """Shorthand: the items of ``open_source(...)``."""
    return iter(open_source(inputs, input_format, options))


__all__ = ["Source", "SourceError", "SourceOptions", "SourceSpecError", "FileSource", "ManifestSource",
           "ParquetSource", "HFDatasetSource", "TarSource", "UrlListSource", "ChainSource", "FileLoader",
           "FailLoader", "open_source", "iter_items", "detect_kind", "local_path", "IMAGE_SUFFIXES",
           "INPUT_FORMATS"]
