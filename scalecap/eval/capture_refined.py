"""Refined CAPTURE, after SC-Captioner (arXiv 2508.06125): CAPTURE's incomplete precision and its
relation matching, fixed.

SC-Captioner describes three changes; its code is not among our sources, so this is our reading of
the description, and its numbers are comparable with each other, not digit-for-digit with theirs:

- **objects**: precision against the reference objects *plus* the image's extra objects (objects
  that are there but no reference mentions: a correct mention of one is no error), recall against
  the reference objects only. Matching is CAPTURE's (exact, synonym, soft).
- **attributes**: matched per object, not as one flat bag: candidate and reference objects are paired
  (exact and synonym pairs weigh 1; then, with an embedder, the rest one to one by descending
  cosine similarity, weighing that similarity), and each pair's attributes are matched with
  CAPTURE's stages and credited times the pair's weight. Attributes of a candidate object that
  matches only an extra object cannot be checked and count on neither side; those of an object
  found nowhere count against precision.
- **relations**: yes/no questions answered by an LLM judge: each candidate relation is asked
  against the reference text (precision = share of "yes"), each reference relation against the
  candidate caption (recall).

Score = (0.5·F1_obj + 0.5·F1_attr + 0.2·F1_rel) / 1.2 against one reference, a caption's score the
mean over its references, as in CAPTURE.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .capture import ALPHA, BETA, EPS, GAMMA, Elements, Embedder, Synonyms, greedy_match, is_synonym
from .common import fill


def prf(matched_cand: float, n_cand: int, matched_ref: float, n_ref: int) -> dict[str, float]:
    p = matched_cand / (n_cand + EPS)
    r = matched_ref / (n_ref + EPS)
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r + EPS)}


def object_pairs(cands: Sequence[str], refs: Sequence[str], synonyms: Synonyms | None,
                 embedder: Embedder | None = None, soft_threshold: float | None = None) -> list[tuple[int, int, float]]:
    """(candidate index, reference index, weight): exact and synonym pairs weigh 1, then (with an
    embedder) the rest one to one, most similar first, weighing their cosine similarity (> 0)."""
    m = greedy_match(cands, refs, lambda a, b: is_synonym(a, b, synonyms))
    pairs = [(i, j, 1.0) for i, j in m.exact + m.synonym]
    rest_c = sorted(set(range(len(cands))) - {i for i, _, _ in pairs})
    rest_r = sorted(set(range(len(refs))) - {j for _, j, _ in pairs})
    if embedder is None or not rest_c or not rest_r:
        return pairs
    import numpy as np

    a = np.asarray(embedder.encode([cands[i] for i in rest_c]), dtype=np.float64)
    b = np.asarray(embedder.encode([refs[j] for j in rest_r]), dtype=np.float64)
    sim = a @ b.T
    order = sorted(((float(sim[x, y]), x, y) for x in range(len(rest_c)) for y in range(len(rest_r))),
                   key=lambda t: (-t[0], t[1], t[2]))
    used_c: set[int] = set()
    used_r: set[int] = set()
    for s, x, y in order:
        if s <= 0 or (soft_threshold is not None and s < soft_threshold):
            break
        if x not in used_c and y not in used_r:
            used_c.add(x)
            used_r.add(y)
            pairs.append((rest_c[x], rest_r[y], s))
    return pairs


def refined_objects(cand: Elements, ref: Elements, extra: Sequence[str], synonyms: Synonyms | None,
                    embedder: Embedder | None = None, soft_threshold: float | None = None) -> dict[str, Any]:
    syn = lambda a, b: is_synonym(a, b, synonyms)  # noqa: E731
    against_all = greedy_match(cand.objects, list(ref.objects) + [e for e in extra if e not in ref.objects], syn,
                               embedder, soft_threshold=soft_threshold)
    against_ref = greedy_match(cand.objects, ref.objects, syn, embedder, soft_threshold=soft_threshold)
    out = prf(against_all.cand_match, len(cand.objects), against_ref.ref_match, len(ref.objects))
    return {**out, "n_cand": len(cand.objects), "n_ref": len(ref.objects), "n_extra": len(extra)}


def refined_attributes(cand: Elements, ref: Elements, extra: Sequence[str], synonyms: Synonyms | None,
                       embedder: Embedder | None = None, soft_threshold: float | None = None) -> dict[str, Any]:
    syn = lambda a, b: is_synonym(a, b, synonyms)  # noqa: E731
    c_attrs, r_attrs = _attributes_by_object(cand), _attributes_by_object(ref)
    pairs = object_pairs(cand.objects, ref.objects, synonyms, embedder, soft_threshold)
    paired = {i for i, _, _ in pairs}
    # a candidate object paired with no reference object but matching an extra object: unverifiable
    only_extra = {i for i, o in enumerate(cand.objects)
                  if i not in paired and greedy_match([o], list(extra), syn).hard}
    n_cand = sum(len(c_attrs.get(o, [])) for i, o in enumerate(cand.objects) if i not in only_extra)
    n_ref = sum(len(v) for v in r_attrs.values())
    got_c = got_r = 0.0
    for i, j, w in pairs:
        m = greedy_match(c_attrs.get(cand.objects[i], []), r_attrs.get(ref.objects[j], []), syn, embedder,
                         soft_threshold=soft_threshold)
        got_c += w * m.cand_match
        got_r += w * m.ref_match
    return {**prf(got_c, n_cand, got_r, n_ref), "n_cand": n_cand, "n_ref": n_ref,
            "pairs": [[cand.objects[i], ref.objects[j], round(w, 6)] for i, j, w in pairs]}


#: [(description, statement)] -> the judge's replies, in order ("yes"/"no" in the first word)
Judge = Callable[[list[tuple[str, str]]], Awaitable[list[str]]]


async def refined_relations(cand: Elements, ref: Elements, candidate_text: str, reference_text: str,
                            judge: Judge) -> dict[str, Any]:
    """Precision: candidate relations the judge finds in the reference; recall: reference relations it
    finds in the candidate."""
    questions = ([(reference_text, " ".join(r)) for r in cand.relations]
                 + [(candidate_text, " ".join(r)) for r in ref.relations])
    replies = await judge(questions) if questions else []
    yes = [is_yes(r) for r in replies]
    n_c = len(cand.relations)
    out = prf(sum(yes[:n_c]), n_c, sum(yes[n_c:]), len(ref.relations))
    return {**out, "n_cand": n_c, "n_ref": len(ref.relations), "answers": replies}


async def refined_pair(cand: Elements, ref: Elements, candidate_text: str, reference_text: str,
                       extra: Sequence[str], synonyms: Synonyms | None, judge: Judge,
                       embedder: Embedder | None = None, soft_threshold: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "object": refined_objects(cand, ref, extra, synonyms, embedder, soft_threshold),
        "attribute": refined_attributes(cand, ref, extra, synonyms, embedder, soft_threshold),
        "relation": await refined_relations(cand, ref, candidate_text, reference_text, judge),
    }
    out["score"] = (ALPHA * out["object"]["f1"] + BETA * out["attribute"]["f1"]
                    + GAMMA * out["relation"]["f1"]) / (ALPHA + BETA + GAMMA)
    return out


def is_yes(reply: str) -> bool:
    """The judge said yes: its first word, stripped of punctuation and markup, is "yes"."""
    words = reply.strip().lower().split()
    return bool(words) and words[0].strip("*.,:;!\"'()") == "yes"


def make_judge(backend: Any, prompt: str, system: str | None, max_tokens: int = 4) -> Judge:
    """A judge over any backend: one greedy generation per question, all in flight at once."""
    import asyncio

    from ..backends.base import ChatPrompt, GenerationParams

    async def judge(questions: list[tuple[str, str]]) -> list[str]:
        outs = await asyncio.gather(*(backend.generate(ChatPrompt(user=fill(prompt, d, s), system=system),
                                                       GenerationParams(max_tokens=max_tokens)) for d, s in questions))
        return [o.text for o in outs]

    return judge


def _attributes_by_object(el: Elements) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for o, a in el.attribute_pairs:
        if o in el.objects and a not in out.setdefault(o, []):
            out[o].append(a)
    return out




# ----------------------------------------------------------------------------- over a corpus

class Refined:
    """What the refined variant needs beside CAPTURE's parts: the judge, and the extra objects per
    reference id (lemmatised like parsed objects)."""

    def __init__(self, judge: Judge, extra: dict[str, list[str]] | None = None, describe: dict[str, Any] | None = None):
        self.judge, self.extra, self._describe = judge, extra or {}, describe or {}

    def describe(self) -> dict[str, Any]:
        return {**self._describe, "extra_objects_ids": len(self.extra)}

    async def score(self, cand: Elements, refs: Sequence[Elements], candidate_text: str, reference_texts: Sequence[str],
                    reference_id: str, synonyms: Synonyms | None, embedder: Embedder | None = None,
                    soft_threshold: float | None = None) -> dict[str, Any]:
        """Mean over references of ``refined_pair`` (score and every P/R/F1), as CAPTURE averages."""
        extra = self.extra.get(reference_id, [])
        pairs = [await refined_pair(cand, r, candidate_text, t, extra, synonyms, self.judge, embedder, soft_threshold)
                 for r, t in zip(refs, reference_texts)]
        out: dict[str, Any] = {"score": _mean([p["score"] for p in pairs]), "extra_objects": list(extra)}
        for k, x in _KEYS:
            out[f"{k}_{x}"] = _mean([p[k][x] for p in pairs])
        out["pairs"] = pairs
        return out


_KEYS = [(k, x) for k in ("object", "attribute", "relation") for x in ("precision", "recall", "f1")]


def aggregate_refined(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"captions": len(samples), "score": _mean([s["score"] for s in samples]),
                           "captions_with_extra_objects": sum(bool(s["extra_objects"]) for s in samples)}
    for k, x in _KEYS:
        out[f"{k}_{x}"] = _mean([s[f"{k}_{x}"] for s in samples])
    return out


def load_extra_objects(path: Any, noun: Callable[[str], str]) -> dict[str, list[str]]:
    """``{id: [object, ...]}`` JSON: objects in the image that no reference mentions (``noun``
    lemmatises them like parsed objects)."""
    from .common import EvalInputError, read_json_or_jsonl, require_file

    p = require_file(path, "extra objects")
    kind, data = read_json_or_jsonl(p, "extra objects")
    if kind != "json" or not isinstance(data, dict):
        raise EvalInputError(f"extra objects: {p} must be a JSON object {{id: [object, ...]}}")
    out: dict[str, list[str]] = {}
    for k, v in data.items():
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise EvalInputError(f"extra objects: {p} entry {k!r}: expected a list of strings")
        out[str(k)] = list(dict.fromkeys(noun(x.strip().lower()) for x in v if x.strip()))
    return out


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


__all__ = ["Refined", "aggregate_refined", "is_yes", "load_extra_objects", "make_judge", "object_pairs",
           "refined_attributes", "refined_objects", "refined_pair", "refined_relations"]
