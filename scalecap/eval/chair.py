"""CHAIR: object hallucination in captions of COCO images (Rohrbach, Hendricks et al., EMNLP 2018).

An *object mention* is a word (or merged two-word term) of the caption that is one of the 80 COCO
categories or one of their synonyms (``data/coco_synonyms.txt``). A mention is *hallucinated* when
its category is not in the image's ground truth: the categories of its COCO instance annotations
plus those mentioned in its reference captions (so an object that only the reference captions
name is not a hallucination).

* CHAIR_i = hallucinated mentions / all mentions (every occurrence counts, as in the original)
* CHAIR_s = captions with at least one hallucinated mention / captions
* recall  = sum over images of |mentioned categories ∩ ground truth| / sum of |ground truth|
  (ours; CHAIR papers report it in several ways; this one is micro-averaged over the same ground truth)
* length  = mean number of whitespace-separated words per caption

Text processing follows the original ``chair.py``: lower-case, tokenise (here: runs of letters, so
``hot-dog`` is ``hot dog``), singularise (here: ``singular.singularize``, offline; a word that is
already a vocabulary word is kept as it is, so ``skis``, ``glass`` and ``people`` survive), merge
two-word terms (the original list, ``baby``/``adult`` + animal -> the animal, ``passenger jet`` ->
``jet``, ``toilet seat`` -> ``toilet``, ``bow tie`` -> ``tie``, plus every multi-word synonym of the
vocabulary; three-word synonyms such as ``stove top oven`` merge too, which the original did not),
and drop ``seat`` from a caption that also mentions a toilet.
Differences from the original, all deliberate: our tokeniser and singulariser instead of NLTK's
and pattern's; synonyms lower-cased (the file's ``iPhone`` could never match lower-cased text);
three-word merges. On COCO captions they change few mentions; they are listed in ``docs/eval.md``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

from .captions import CaptionSet
from .common import EvalInputError, KeyIndex, read_json_or_jsonl, require_file
from .singular import singularize

METRIC = "chair"
VERSION = "1"

#: Two-word terms of the original CHAIR code, each kept as one token.
ORIGINAL_DOUBLE_WORDS = (
    "motor bike", "motor cycle", "air plane", "traffic light", "street light", "traffic signal", "stop light",
    "fire hydrant", "stop sign", "parking meter", "suit case", "sports ball", "baseball bat", "baseball glove",
    "tennis racket", "wine glass", "hot dog", "cell phone", "mobile phone", "teddy bear", "hair drier",
    "potted plant", "bow tie", "laptop computer", "stove top oven", "home plate",
)
#: "baby X"/"adult X" -> X (else "baby" fires "person"); "passenger X" -> X.
ANIMAL_WORDS = ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "animal", "cub")
VEHICLE_WORDS = ("jet", "train")

_WORD = re.compile(r"[a-z]+")


def default_synonyms_path() -> Path:
    return Path(str(resources.files(__package__).joinpath("data").joinpath("coco_synonyms.txt")))


class ChairVocabulary:
    """The COCO categories, their synonyms and the merge rules; finds object mentions in text."""

    def __init__(self, synonyms_path: str | Path | None = None) -> None:
        self.path = Path(synonyms_path) if synonyms_path else default_synonyms_path()
        if not self.path.is_file():
            raise EvalInputError(f"synonyms: {self.path} does not exist")
        self.inverse: dict[str, str] = {}  # word or term -> canonical category name
        self.categories: list[str] = []
        for n, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            names = [re.sub(r"\s+", " ", s.strip().lower()) for s in line.split(",")]
            names = [s for s in names if s]
            if not names:
                continue
            canonical = names[0]
            if canonical in self.categories:
                raise EvalInputError(f"synonyms: {self.path} line {n}: category {canonical!r} appears twice")
            self.categories.append(canonical)
            for s in names:
                self.inverse[s] = canonical  # a synonym listed under two categories: the later wins, as in the original
        if not self.categories:
            raise EvalInputError(f"synonyms: {self.path} holds no categories")
        self.single_words = frozenset(w for w in self.inverse if " " not in w)
        self.merge: dict[str, str] = {}
        for term in list(ORIGINAL_DOUBLE_WORDS) + [w for w in self.inverse if " " in w]:
            self.merge[term] = term
        for a in ANIMAL_WORDS:
            self.merge[f"baby {a}"] = a
            self.merge[f"adult {a}"] = a
        for v in VEHICLE_WORDS:
            self.merge[f"passenger {v}"] = v
        self.merge["bow tie"] = "tie"
        self.merge["toilet seat"] = "toilet"
        self.max_merge = max(len(t.split()) for t in self.merge)

    def tokens(self, text: str) -> list[str]:
        """Lower-cased, singularised words with multi-word terms merged (before vocabulary filtering)."""
        raw = _WORD.findall(text.lower())
        sing = [w if w in self.single_words else singularize(w) for w in raw]
        out: list[str] = []
        i = 0
        while i < len(raw):
            for k in range(min(self.max_merge, len(raw) - i), 1, -1):
                whole = " ".join(sing[i:i + k])
                head_raw = " ".join(raw[i:i + k - 1] + [sing[i + k - 1]])
                term = whole if whole in self.merge else head_raw if head_raw in self.merge else None
                if term is not None:
                    out.append(self.merge[term])
                    i += k
                    break
            else:
                out.append(sing[i])
                i += 1
        if "toilet" in out and "seat" in out:
            out = [w for w in out if w != "seat"]
        return out

    def mentions(self, text: str) -> list[tuple[str, str]]:
        """(word as found after merging, canonical category) for every object mention, in order."""
        return [(w, self.inverse[w]) for w in self.tokens(text) if w in self.inverse]

    def category_of(self, name: str) -> str | None:
        """The canonical category of an annotation's object name (``"dining tables"`` -> ``dining table``)."""
        low = re.sub(r"\s+", " ", name.strip().lower())
        if low in self.inverse:
            return self.inverse[low]
        found = {c for _, c in self.mentions(low)}
        return found.pop() if len(found) == 1 else None


@dataclass
class GroundTruth:
    """Per image: the set of ground-truth categories (instances ∪ objects of reference captions)."""

    objects: dict[str, set[str]] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    unmapped: dict[str, int] = field(default_factory=dict)  # object names not in the vocabulary
    instance_images: int = 0
    caption_images: int = 0

    def add(self, image_id: Any, categories: Iterable[str]) -> None:
        self.objects.setdefault(str(image_id), set()).update(categories)


def load_ground_truth(paths: list[str | Path], vocab: ChairVocabulary) -> GroundTruth:
    """COCO instances JSON, COCO captions JSON, and/or simple ``{image_id: [objects]}`` files, merged."""
    if not paths:
        raise EvalInputError("chair: give --annotations (COCO instances and/or captions JSON, or {image_id: [objects]})")
    gt = GroundTruth()
    for path in paths:
        p = require_file(path, "annotations")
        kind, data = read_json_or_jsonl(p, "annotations")
        gt.sources.append(str(p))
        if kind == "json" and isinstance(data, dict) and isinstance(data.get("annotations"), list):
            _load_coco(p, data, vocab, gt)
        elif kind == "json" and isinstance(data, dict):
            for image_id, objs in data.items():
                if not isinstance(objs, list):
                    raise EvalInputError(f"annotations: {p}: the value of {image_id!r} must be a list of object names")
                gt.add(image_id, _map_names(objs, vocab, gt))
        else:
            rows = data if isinstance(data, list) else None
            if rows is None:
                raise EvalInputError(f"annotations: {p} is neither COCO JSON nor {{image_id: [objects]}} nor JSONL")
            for n, row in enumerate(rows, 1):
                if not isinstance(row, dict):
                    raise EvalInputError(f"annotations: {p} row {n} is not an object")
                image_id = row.get("image_id", row.get("id"))
                objs = row.get("objects")
                if image_id is None or not isinstance(objs, list):
                    raise EvalInputError(f"annotations: {p} row {n} needs image_id (or id) and a list 'objects'")
                gt.add(image_id, _map_names(objs, vocab, gt))
    return gt


def _map_names(names: list[Any], vocab: ChairVocabulary, gt: GroundTruth) -> set[str]:
    out = set()
    for name in names:
        c = vocab.category_of(str(name))
        if c is None:
            gt.unmapped[str(name)] = gt.unmapped.get(str(name), 0) + 1
        else:
            out.add(c)
    return out


def _load_coco(p: Path, data: dict[str, Any], vocab: ChairVocabulary, gt: GroundTruth) -> None:
    anns = data["annotations"]
    for img in data.get("images") or []:
        if isinstance(img, dict) and "id" in img:
            gt.add(img["id"], ())
    if "categories" in data or any(isinstance(a, dict) and "category_id" in a for a in anns[:10]):
        names = {}
        for c in data.get("categories") or []:
            names[c["id"]] = c["name"]
        images = set()
        for n, a in enumerate(anns):
            try:
                image_id, cat = a["image_id"], a["category_id"]
            except (KeyError, TypeError):
                raise EvalInputError(f"annotations: {p}: annotation {n} lacks image_id or category_id") from None
            if cat not in names:
                raise EvalInputError(f"annotations: {p}: annotation {n} has category_id {cat} not in 'categories'")
            c = vocab.category_of(names[cat])
            if c is None:
                gt.unmapped[names[cat]] = gt.unmapped.get(names[cat], 0) + 1
                gt.add(image_id, ())
            else:
                gt.add(image_id, (c,))
            images.add(image_id)
        gt.instance_images += len(images)
    else:
        images = set()
        for n, a in enumerate(anns):
            if not isinstance(a, dict) or "image_id" not in a or not isinstance(a.get("caption"), str):
                raise EvalInputError(f"annotations: {p}: annotation {n} is neither an instance nor a caption")
            gt.add(a["image_id"], {c for _, c in vocab.mentions(a["caption"])})
            images.add(a["image_id"])
        gt.caption_images += len(images)


@dataclass
class ImageResult:
    id: str
    image_id: str
    words: int
    mentions: list[tuple[str, str]]
    hallucinated: list[tuple[str, str]]
    ground_truth: list[str]
    recalled: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "image_id": self.image_id, "words": self.words,
                "mentions": [list(m) for m in self.mentions], "hallucinated": [list(m) for m in self.hallucinated],
                "chair_i": len(self.hallucinated) / len(self.mentions) if self.mentions else None,
                "ground_truth": self.ground_truth, "recalled": self.recalled}


def score_caption(caption_id: str, image_id: str, caption: str, gt_objects: set[str],
                  vocab: ChairVocabulary) -> ImageResult:
    mentions = vocab.mentions(caption)
    hallucinated = [m for m in mentions if m[1] not in gt_objects]
    recalled = sorted({c for _, c in mentions if c in gt_objects})
    return ImageResult(caption_id, image_id, len(caption.split()), mentions, hallucinated, sorted(gt_objects), recalled)


def aggregate(images: list[ImageResult]) -> dict[str, Any]:
    n = len(images)
    mentions = sum(len(r.mentions) for r in images)
    halluc = sum(len(r.hallucinated) for r in images)
    halluc_caps = sum(1 for r in images if r.hallucinated)
    gt_total = sum(len(r.ground_truth) for r in images)
    recalled = sum(len(r.recalled) for r in images)
    return {
        "captions": n,
        "chair_s": halluc_caps / n if n else None,
        "chair_i": halluc / mentions if mentions else None,
        "recall": recalled / gt_total if gt_total else None,
        "mean_length_words": sum(r.words for r in images) / n if n else None,
        "mentions": mentions,
        "hallucinated_mentions": halluc,
        "hallucinated_captions": halluc_caps,
        "ground_truth_objects": gt_total,
        "recalled_objects": recalled,
        "empty_captions": sum(1 for r in images if r.words == 0),
    }


def evaluate(captions: CaptionSet, gt: GroundTruth, vocab: ChairVocabulary) -> tuple[dict[str, Any], list[ImageResult]]:
    """Score every usable caption whose id names an annotated image.

    Ids: a caption id matches an annotated image id by ``common.KeyIndex`` with numbers
    (``COCO_val2014_000000000042.jpg`` = ``42``). Caption ids matching no annotated image are
    *unknown* and skipped (listed); a second caption for the same image is skipped (listed).
    """
    index = KeyIndex(gt.objects.keys(), numeric=True)
    results: list[ImageResult] = []
    unknown: list[str] = []
    duplicates: list[str] = []
    seen: set[str] = set()
    for key, text in captions.captions.items():
        image_id = index.find(key)
        if image_id is None:
            unknown.append(key)
            continue
        if image_id in seen:
            duplicates.append(key)
            continue
        seen.add(image_id)
        results.append(score_caption(key, image_id, text, gt.objects[image_id], vocab))
    summary = aggregate(results)
    summary.update({
        "unknown_ids": {"count": len(unknown), "ids": unknown[:100]},
        "duplicate_captions": {"count": len(duplicates), "ids": duplicates[:100]},
        "unusable_captions": {"count": len(captions.unusable), "ids": dict(list(captions.unusable.items())[:100])},
        "annotated_images_without_caption": len(gt.objects) - len(seen),
        "unmapped_annotation_names": dict(sorted(gt.unmapped.items())),
        "partial": bool(unknown or captions.unusable),
    })
    return summary, results


def top_hallucinations(images: list[ImageResult], k: int = 10) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for r in images:
        for _, c in r.hallucinated:
            counts[c] = counts.get(c, 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
