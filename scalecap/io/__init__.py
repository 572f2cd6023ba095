"""Reading datasets and writing results: sources, sinks, the resume journal, exporters.

This package knows nothing of models: it turns spec strings into ``ImageItem`` streams
(``sources``), fetches URLs under limits (``fetch``), keeps the exactly-once journal
(``journal``), writes records as JSONL, Parquet, WebDataset or sidecar files (``sinks``), and turns
a finished run into LLaVA / LLaMA-Factory training files (``exporters``). ``output`` puts the lock,
the journal and the sink behind a few verbs (open or resume, commit, replay, finish) that the local
and the Ray runner use, so the exactly-once order lives in one place. ``scalecap.run`` wires them
to the engine.
"""

from .exporters import export_llamafactory, export_llava
from .fetch import FetchConfig, fetch
from .journal import FingerprintMismatch, JournalError, read_records
from .sinks import SINK_FORMATS, SinkError, open_sink, read_parquet_records
from .sources import (
           INPUT_FORMATS,
           Source,
           SourceError,
           SourceOptions,
           SourceSpecError,
           open_source,
)

__all__ = ["open_source", "Source", "SourceError", "SourceOptions", "SourceSpecError", "INPUT_FORMATS",
           "FetchConfig", "fetch", "open_sink", "SinkError", "SINK_FORMATS", "read_records",
           "read_parquet_records", "FingerprintMismatch", "JournalError", "export_llava", "export_llamafactory"]
