"""Converters from the paper's data sources into the project's JSONL (paper Sec. 5.1).

``python -m lfpc.data.convert SOURCE IN OUT`` with SOURCE one of :data:`SOURCES`; see :mod:`.core` for the
shared loop (streaming, resumable, kept / dropped report) and each source's module for its schema.
"""

from __future__ import annotations

from lfpc.data.convert import cof, deepeyes, pixel_reasoner, thinklite, visualprobe
from lfpc.data.convert.core import Report, Source, convert_file

SOURCES: dict[str, Source] = {m.SOURCE.name: m.SOURCE for m in (deepeyes, pixel_reasoner, cof, thinklite, visualprobe)}

__all__ = ["SOURCES", "Report", "Source", "convert_file"]
