"""Image domains (after CapFlow): a label set declared as data, a router, and per-domain presets.

ScaleCap's questions fit natural photos; documents, charts, screenshots, code or medical images
need other first-caption prompts. Each domain is a folder (bundled: ``prompts/domains/<id>/``;
more with the ``domains_dir`` setting, a folder of such folders): ``domain.toml`` holds its ``name``,
a one-line ``description`` the router reads (with boundary rules), an ``order``, and optionally
``families``, the names of its question families beyond object/position (each a ``family_<name>.txt``
beside it: one question about the whole image, asked of the captioner and rated like an object
answer); any prompt files beside it (``caption.txt`` ...) override the run's preset for images of
that domain. Adding a domain or a family is adding files, no code; ``natural`` has no overrides and no
families, so it is the paper's preset.

An image's domain is *declared* (the item's ``domain`` meta column, else the run's ``domain``
setting) or, with ``route="auto"``, *routed*: one constrained multiple-choice call to the router
model (the captioner unless bound otherwise) answering ``<domain> <confidence 1-3>``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from .backends.base import Backend, ChatPrompt, GenerationParams, ImageRef
from .config import Settings
from .prompts import _NAMES, _OPTIONAL, _TOOLS, PromptSet
from .records import DomainInfo
from .stages import Trace

BUNDLED = Path(str(resources.files("scalecap.prompts").joinpath("domains")))


@dataclass(frozen=True)
class Domain:
    id: str
    name: str
    description: str
    order: int
    folder: Path
    families: tuple[str, ...] = ()


def load_domains(extra: str | Path | None = None) -> dict[str, Domain]:
    """The bundled domains plus those of ``extra`` (a folder of domain folders; same id replaces)."""
    found: dict[str, Domain] = {}
    for root in (BUNDLED, Path(extra) if extra else None):
        if root is None:
            continue
        if not root.is_dir():
            raise ValueError(f"domains_dir {str(root)!r} is not a folder")
        for spec in sorted(root.glob("*/domain.toml")):
            data = tomllib.loads(spec.read_text(encoding="utf-8"))
            did = spec.parent.name
            if not re.fullmatch(r"[a-z][a-z0-9_]*", did):
                raise ValueError(f"domain folder {spec.parent}: the name must be lower-case letters, digits, _")
            try:
                found[did] = Domain(did, str(data["name"]), str(data["description"]), int(data.get("order", 99)),
                                    spec.parent, _families(spec, data.get("families", [])))
            except KeyError as exc:
                raise ValueError(f"{spec}: missing {exc.args[0]!r}") from None
    return dict(sorted(found.items(), key=lambda kv: (kv[1].order, kv[0])))


def _families(spec: Path, names: object) -> tuple[str, ...]:
    """A domain's family names, each checked to have its question file (read when first used)."""
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{spec}: families must be a list of names")
    for name in names:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ValueError(f"{spec}: family {name!r}: lower-case letters, digits and _ only")
        if not (spec.parent / f"family_{name}.txt").is_file():
            raise ValueError(f"{spec}: family {name!r} has no family_{name}.txt beside it")
    if len(set(names)) != len(names):
        raise ValueError(f"{spec}: a family is listed twice")
    return tuple(names)


class Presets:
    """The one seam through which the pipeline reaches prompts: the run's preset, with a domain's
    override files on top for images of that domain."""

    def __init__(self, base: PromptSet, domains: dict[str, Domain]) -> None:
        self.base, self.domains = base, domains
        self._cache: dict[str, PromptSet] = {}

    def for_domain(self, domain: str | None) -> PromptSet:
        if domain is None or domain not in self.domains:
            return self.base
        if domain not in self._cache:
            folder = self.domains[domain].folder
            overrides = {n: (folder / f"{n}.txt").read_text(encoding="utf-8")
                         for n in _NAMES + _OPTIONAL + _TOOLS if (folder / f"{n}.txt").is_file()}
            for n in ("system",) + _TOOLS:
                if n in overrides:
                    raise ValueError(f"domain {domain}: {n}.txt comes from the run's preset, not a domain folder")
            if "{}" in overrides.get("caption", ""):
                raise ValueError(f"domain {domain}: caption.txt takes no {{}} slot")
            for n in ("instructions", "object_summary", "position_summary", "final"):
                if n in overrides and overrides[n].count("{}") != self.base.__getattribute__(n).count("{}"):
                    raise ValueError(f"domain {domain}: {n}.txt must have as many {{}} slots as the preset's")
            families = []
            for name in self.domains[domain].families:
                question = (folder / f"family_{name}.txt").read_text(encoding="utf-8").strip()
                if not question or "{}" in question:
                    raise ValueError(f"domain {domain}: family_{name}.txt must be one question with no {{}} slot")
                families.append((name, question))
            self._cache[domain] = replace(self.base, name=f"{self.base.name}+{domain}", families=tuple(families),
                                          **overrides)
        return self._cache[domain]

    def hashes(self) -> dict[str, str]:
        """Each domain's prompt hash (for the fingerprint)."""
        return {d: self.for_domain(d).sha256[:16] for d in self.domains}


class Router:
    """Declared domain first; else, when routing, one constrained multiple-choice call."""

    def __init__(self, settings: Settings, domains: dict[str, Domain], backend: Backend, system: str | None) -> None:
        self.mode, self.declared, self.domains = settings.route, settings.domain, domains
        self.backend, self.system, self.seed = backend, system, settings.seed
        if self.declared is not None and self.declared not in domains:
            raise ValueError(f"--domain {self.declared!r} is not a known domain ({', '.join(domains)})")
        listing = "\n".join(f"- {d.id}: {d.name}: {d.description}" for d in domains.values())
        self.prompt = (BUNDLED / "route.txt").read_text(encoding="utf-8").replace("{}", listing, 1)
        self.regex = "(" + "|".join(re.escape(d) for d in domains) + ") [1-3]"
        self.constrained = backend.capabilities.can_constrain
        if self.mode == "auto" and not backend.capabilities.vision:
            raise ValueError("--route auto needs a vision model as the router")

    async def resolve(self, trace: Trace, image: ImageRef, meta: dict) -> DomainInfo | None:
        declared = meta.get("domain") or self.declared
        if declared and declared not in self.domains and self.declared:
            declared = self.declared  # the run's --domain stands in for a label of the data's own
        if declared and declared in self.domains:
            return DomainInfo(id=declared, source="declared")
        # A data column named "domain" may hold labels of its own ("photo"): such a value is kept in
        # the record (``raw``) and the image is treated as undeclared, never failed (--domain is
        # checked against the label set when the run starts).
        unknown = str(declared)[:200] if declared else None
        if self.mode != "auto":
            return DomainInfo(id=None, source="declared", raw=unknown) if unknown else None
        t0 = time.perf_counter()
        params = GenerationParams(max_tokens=16, regex=self.regex if self.constrained else None, seed=self.seed)
        out = await self.backend.generate(ChatPrompt(user=self.prompt, system=self.system, image=image), params)
        trace.record("routing", out)
        trace.timings["routing"] = round(time.perf_counter() - t0, 4)
        m = re.search(self.regex, out.text)
        if m is None:  # only without constraints: recorded, the image keeps the run's preset
            return DomainInfo(id=None, source="routed", raw=out.text.strip()[:200])
        if unknown:
            trace.skip("declared_domain", f"declared domain {unknown!r} is not a known domain: routed instead")
        return DomainInfo(id=m.group(1), source="routed", confidence=int(m.group(0)[-1]),
                          raw=None if self.constrained else out.text.strip()[:200])
