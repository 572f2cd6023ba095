"""Settings of a run, the binding of roles to models, and the run fingerprint.

Three roles (METHOD.md section 2): the *captioner* writes the first caption and answers the
questions, the *scorer* teacher-forces texts with and without the image, the *writer* (a text LLM)
writes the questions, the summaries and the final caption. One model may play all three.
"""

from __future__ import annotations

import hashlib
import json
import os
try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from . import __version__

ScoreMode = Literal["prob", "logprob", "logit"]
FilterAction = Literal["mark", "drop", "retry"]
ROLES = ("captioner", "scorer", "writer")

#: Default threshold per score mode. The paper publishes no value of tau; these are ours, chosen so
#: that a sentence is kept when at least one content token is clearly more likely with the image.
DEFAULT_TAU: dict[str, float] = {"prob": 0.1, "logprob": 1.0, "logit": 1.0}


class ModelConfig(BaseModel):
    """How to reach one model. ``backend`` picks the implementation; the rest is theirs.

    API keys are never stored: ``api_key_env`` names the environment variable that holds one.
    """

    model_config = ConfigDict(extra="forbid")

    backend: Literal["hf", "openai", "vllm"] = "hf"
    model: str
    # hf / vllm (in-process)
    device: str = "auto"
    dtype: str = "auto"
    max_batch_size: int = 8
    score_batch_size: int = 1
    # transformers: the image processor's output kept per image, not recomputed per request
    # (backends/hf_images.py; exact: verified against the processor's own batch, else it turns off)
    cache_processed_images: bool = True
    trust_remote_code: bool = False
    revision: str | None = None
    # openai-compatible HTTP
    api_base: str | None = None
    api_key_env: str | None = None
    served_model: str | None = None
    max_concurrency: int = 32
    timeout: float = 300.0
    max_retries: int = 6
    backoff_base: float = 0.5  # seconds; retry k waits about backoff_base * 2**k (jittered), capped
    backoff_max: float = 20.0
    max_pixels: int | None = None
    # HTTP, max_pixels unset: resize each image once as the model folder's Qwen2-VL processor would
    # (same pixels and image tokens on the server, fewer bytes; backends/pixel_budget.py)
    processor_resize: bool = True
    # the model's tokenizer in-process (a folder or a cached hub id; default: ``model``, then the
    # folder the server reports); used only after it agrees with the server's /tokenize
    tokenizer: str | None = None
    local_tokenizer: bool = True
    # the with-image rating of a greedy, unconstrained generation reuses the generation's own
    # log-probs when the text re-tokenises to the generated ids (backends/reuse.py). None: on for
    # vLLM, served or in-process (its values are the teacher-forced ones exactly), off with transformers
    # (batched generation makes them depend on batch-mates by ~1e-6, so records would no longer be
    # byte-identical across concurrency); True/False force it
    reuse_logprobs: bool | None = None
    vision: bool | None = None  # None: ask the server (HTTP probe); True/False: skip the probe
    # vllm in-process
    vllm_kwargs: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _http_needs_base(self) -> "ModelConfig":
        if self.backend == "openai" and not self.api_base:
            raise ValueError(f"model {self.model!r}: the openai backend needs api_base (e.g. http://127.0.0.1:8000/v1)")
        return self

    def public(self) -> dict[str, Any]:
        """The parts that identify the model (for fingerprints and logs): never a secret."""
        d = {"backend": self.backend, "model": self.served_model or self.model}
        if self.revision:
            d["revision"] = self.revision
        if self.backend == "openai":
            d["api_base"] = self.api_base
        if self.dtype != "auto":
            d["dtype"] = self.dtype
        return d


class Settings(BaseModel):
    """Everything that changes what the pipeline computes (and so enters the fingerprint)."""

    model_config = ConfigDict(extra="forbid")

    budget: int | None = Field(default=None, ge=0, description="max object instructions; None = all")
    score_mode: ScoreMode = "prob"
    tau: float | None = None
    preset: str = "paper"
    tagger: str = "auto"
    constrain_instructions: bool = True
    store_tokens: bool = False
    max_tokens_caption: int = 1024
    max_tokens_instructions: int = 512
    max_tokens_answer: int = 512
    max_tokens_summary: int = 4096
    # Decoding, explicit for every role and sent as such to every backend (no backend may fall back
    # on a checkpoint's generation_config or a server's default). The captioner decodes greedily
    # (METHOD step 1); the writer's penalty of 1.05 stops few-shot loops.
    temperature: float = Field(default=0.0, ge=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    repetition_penalty: float = Field(default=1.0, gt=0.0)
    writer_temperature: float = Field(default=0.0, ge=0.0)
    writer_top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    writer_repetition_penalty: float = Field(default=1.05, gt=0.0)
    # The writer's window where its server reports none (Ollama, closed APIs); the smaller of the two
    # where both are known. None and no reported window: no context guard.
    context_window: int | None = Field(default=None, ge=256)
    max_pixels: int = 64_000_000
    seed: int = 0
    # Adaptive budget (beyond the paper; ``budget="auto[:MAX]"``): questions asked in waves of
    # ``wave_size`` objects, stopping after a wave whose kept answers bring fewer than
    # ``novelty_threshold`` (a share of their distinct content words) new words; ``budget`` is MAX.
    adaptive_budget: bool = False
    wave_size: int = Field(default=4, ge=1)
    novelty_threshold: float = Field(default=0.25, ge=0.0, le=1.0)
    # Self-correction (beyond the paper, after SC-Captioner): the captioner re-checks the final
    # caption in the same conversation; only corrected sentences the image supports are kept.
    # Greedy by default (SC-Captioner sampled at temperature 0.95, top_p 0.7).
    self_correct: bool = False
    correction_rounds: int = Field(default=1, ge=1)
    max_tokens_correction: int = 1024
    correction_temperature: float = Field(default=0.0, ge=0.0)
    correction_top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    # Degenerate-output filter (screen.py; model-free, on by default): first caption, answers and
    # final caption checked for loops, refusals, script drift, length, truncation (and, opt-in, stock
    # openings); ``degenerate_actions`` maps a reason code to mark / drop / retry (default: mark all).
    degenerate_filter: bool = True
    degenerate_actions: dict[str, FilterAction] = Field(default_factory=dict)
    degenerate_retry_penalty: float = Field(default=1.2, gt=0.0)
    strip_stock_opening: bool = False
    degenerate_min_chars: int = Field(default=8, ge=0)
    degenerate_max_chars: int = Field(default=60_000, ge=1)
    degenerate_min_distinct_ratio: float = Field(default=0.35, ge=0.0, le=1.0)
    degenerate_max_foreign_share: float = Field(default=0.35, ge=0.0, le=1.0)
    # OCR evidence (evidence.py): "on" for every image, "auto" for the domains in ``ocr_domains`` (a
    # declared or routed domain), "off". The OCR text reaches the writer through the preset's
    # evidence.txt; quotes in the final caption the OCR does not contain (fuzzy, ``quote_threshold``)
    # are marked in the record, and dropped with their sentence when ``drop_unsupported_quotes``.
    ocr: Literal["off", "auto", "on"] = "off"
    ocr_engine: Literal["tesseract", "rapidocr"] = "tesseract"
    ocr_domains: tuple[str, ...] = ("infographic_document", "ui", "code")
    quote_threshold: float = Field(default=0.8, ge=0.0, le=1.0)
    drop_unsupported_quotes: bool = False
    # Domains (domains.py): a declared domain (the item's ``domain`` column, else ``domain``) or, with
    # route="auto", one constrained multiple-choice call to the router model; each domain's folder
    # may override the preset's prompts. ``domains_dir``: a folder of extra domain folders.
    route: Literal["off", "auto"] = "off"
    domain: str | None = None
    domains_dir: str | None = None
    # Judge post-filter (judge.py; opt-in, ``--judge``, after CapFlow): the judge model (the captioner
    # unless ``ScaleCap(judge=...)`` binds another) scores the final caption with the image on five
    # dimensions, 1-3 each; the caption is kept when every dimension reaches ``judge_min`` (or its own
    # entry in ``judge_thresholds``), else the record's status is "rejected".
    judge_filter: bool = False
    judge_min: int = Field(default=3, ge=1, le=3)
    judge_thresholds: dict[str, int] = Field(default_factory=dict)
    max_tokens_judge: int = Field(default=768, ge=64)

    @model_validator(mode="before")
    @classmethod
    def _parse_auto_budget(cls, data: Any) -> Any:
        """``budget="auto"`` / ``"auto:MAX"``: the adaptive budget, capped at MAX (default all)."""
        if isinstance(data, dict) and isinstance(data.get("budget"), str):
            mode, _, cap = data["budget"].strip().lower().partition(":")
            if mode == "auto":
                try:
                    cap_value = None if cap.strip() in ("", "all", "none") else int(cap)
                except ValueError:
                    raise ValueError(f"budget {data['budget']!r}: expected auto or auto:MAX with MAX a number or 'all'") from None
                data = {**data, "budget": cap_value, "adaptive_budget": True}
        return data

    @field_validator("budget", mode="before")
    @classmethod
    def _parse_budget(cls, v: Any) -> Any:
        if isinstance(v, str):
            return None if v.strip().lower() in ("all", "none", "") else int(v)
        return v

    @field_validator("degenerate_actions", mode="before")
    @classmethod
    def _parse_actions(cls, v: Any) -> Any:
        """``"repetition=retry,refusal=drop"`` (as ``--set`` gives it) or a mapping; codes checked."""
        from .text.degenerate import CODES

        if isinstance(v, str):
            v = _key_values(v, "degenerate_actions", "CODE=ACTION")
        for code in v or {}:
            if code not in CODES:
                raise ValueError(f"degenerate_actions: unknown check {code!r}; choose from {', '.join(CODES)}")
        return v

    @field_validator("judge_thresholds", mode="before")
    @classmethod
    def _parse_judge_thresholds(cls, v: Any) -> Any:
        """``"accuracy=3,professionalism=2"`` (as ``--set`` gives it) or a mapping; names and values checked."""
        from .judge import DIMENSIONS

        if isinstance(v, str):
            text, v = v, _key_values(v, "judge_thresholds", "DIMENSION=SCORE")
            try:
                v = {k: int(n) for k, n in v.items()}
            except ValueError:
                raise ValueError(f"judge_thresholds {text!r}: scores are whole numbers 1-3") from None
        for name, score in (v or {}).items():
            if name not in DIMENSIONS:
                raise ValueError(f"judge_thresholds: unknown dimension {name!r}; choose from {', '.join(DIMENSIONS)}")
            if not 1 <= int(score) <= 3:
                raise ValueError(f"judge_thresholds: {name}={score} is not a score 1-3")
        return v

    @property
    def effective_tau(self) -> float:
        return DEFAULT_TAU[self.score_mode] if self.tau is None else self.tau


def _key_values(text: str, what: str, form: str) -> dict[str, str]:
    """``"a=x,b=y"`` (a ``--set`` value) as a mapping, or a one-line error showing the form."""
    pairs = [p.partition("=") for p in text.split(",") if p.strip()]
    if any(not sep for _, sep, _ in pairs):
        raise ValueError(f"{what} {text!r}: expected {form}[,{form}...]")
    return {k.strip(): val.strip() for k, _, val in pairs}


class RunConfig(BaseModel):
    """A config file: roles bound to models plus settings. See README, "Config files"."""

    model_config = ConfigDict(extra="forbid")

    captioner: ModelConfig
    scorer: ModelConfig
    writer: ModelConfig
    settings: Settings = Field(default_factory=Settings)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "RunConfig":
        """Read TOML (or YAML, if PyYAML is installed) with a ``[models.NAME]`` table per model and a
        ``[roles]`` table naming the model of each role, or one ``model`` for all three."""
        p = Path(path)
        text = p.read_text(encoding="utf-8")
        if p.suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError as exc:  # pragma: no cover - depends on the environment
                raise ValueError("YAML config files need PyYAML: pip install pyyaml (or use TOML)") from exc
            raw = yaml.safe_load(text) or {}
        else:
            raw = tomllib.loads(text)
        return cls.from_mapping(raw)

    @classmethod
    def from_mapping(cls, raw: dict[str, Any]) -> "RunConfig":
        models = {name: ModelConfig(**spec) for name, spec in (raw.get("models") or {}).items()}
        roles = raw.get("roles") or {}
        default = roles.get("model") or raw.get("model")
        bound = {}
        for role in ROLES:
            # The scorer is the captioner unless set (METHOD section 2), not the shared ``model``.
            name = roles.get(role, roles.get("captioner", default) if role == "scorer" else default)
            if name is None:
                raise ValueError(f"config: no model for role {role!r} (set roles.{role} or roles.model)")
            if name not in models:
                raise ValueError(f"config: role {role!r} names model {name!r}, which is not in [models]")
            bound[role] = models[name]
        return cls(**bound, settings=Settings(**(raw.get("settings") or {})))


def stable_hash(obj: Any, length: int = 16) -> str:
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def fingerprint_fields(
    models: dict[str, dict[str, Any]], settings: Settings, prompt_hash: str, tagger: str
) -> dict[str, Any]:
    """Everything that determines a record, as a plain mapping (hashed into the fingerprint id)."""
    return {
        "scalecap_version": __version__,
        "models": models,
        "prompt_preset": settings.preset,
        "prompt_hash": prompt_hash,
        "score_mode": settings.score_mode,
        "tau": settings.effective_tau,
        "budget": settings.budget,
        "tagger": tagger,
        "settings": settings.model_dump(mode="json"),
    }
