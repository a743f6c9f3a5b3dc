"""The resumable JSONL manifest of offline resolution selection, and the fingerprints that invalidate it.

Line 1 is a header ``{"kind": "header", "fingerprint", "settings", "created"}``; every further line is one
sample record ``{"kind": "sample", "id", "image_digest", ...}`` appended (and flushed) as soon as that sample is
done, so an interrupted run resumes where it stopped; records match samples by id and image content. A manifest whose header fingerprint differs from the current
one (another model, schedule, stopping rule or strategy) is renamed to ``<name>.stale`` and a new one begun.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from pathlib import Path

from lfpc.data.records import Sample
from lfpc.files import atomic_write
from lfpc.jsonl_log import append_json_lines, complete_lines
from lfpc.vision.images import image_digest

MANIFEST_VERSION = 2  # 2: replies without a valid answer are retried once, then skipped


def _free_name(base: str) -> str:
    """``base``, or ``base.2``, ``base.3``, ... : the first name no file has."""
    names = (base if n == 1 else f"{base}.{n}" for n in range(1, 10**6))
    return next(name for name in names if not os.path.exists(name))


def settings_fingerprint(settings: dict) -> str:
    """Hash of the JSON-serializable ``settings`` (key order does not matter)."""
    payload = json.dumps({"version": MANIFEST_VERSION, **settings}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class Manifest:
    """The records of one manifest file, for one fingerprint of ``settings``; opening it resumes or restarts it."""

    def __init__(self, path: str | os.PathLike, settings: dict) -> None:
        self.path = Path(path)
        self.settings = settings
        self.fingerprint = settings_fingerprint(settings)
        self.records: dict[str, dict] = self._open()

    def lookup(self, sample: Sample) -> dict | None:
        """The finished record of ``sample``, or None (also when the id was recorded for another image: records
        match by sample id and image content, so a moved or copied dataset is still served)."""
        record = self.records.get(sample.id)
        if record is None or record.get("image_digest") != image_digest(sample.image_path):
            return None
        if record["image_size"] != list(sample.image_size or ()):
            return None
        return record

    def append(self, record: dict) -> None:
        """Append one sample record and flush it to disk."""
        append_json_lines(self.path, [{"kind": "sample", **record}])
        self.records[record["id"]] = record

    def _open(self) -> dict[str, dict]:
        if not self.path.exists():
            return self._start()
        lines = complete_lines(self.path)
        header = self._parse(*lines[0]) if lines else {}
        if header.get("kind") != "header" or header.get("fingerprint") != self.fingerprint:
            self.path.replace(_free_name(f"{self.path}.stale"))  # an older stale manifest is kept too
            return self._start()
        records = {}
        for number, line in lines[1:]:
            record = self._parse(number, line)
            if record.get("kind") != "sample" or "id" not in record:
                raise ValueError(f"{self.path}:{number}: not a sample record: {line[:200]!r}")
            records[record["id"]] = record
        return records

    def _parse(self, number: int, line: str) -> dict:
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            fix = ("delete the file to recompute the selection" if number == 1 else
                   "delete or fix that line (the other finished samples are kept)")
            raise ValueError(f"{self.path}:{number}: malformed manifest line ({err}); {fix}") from err
        if not isinstance(value, dict):
            raise ValueError(f"{self.path}:{number}: expected a JSON object, got {line[:200]!r}")
        return value

    def _start(self) -> dict[str, dict]:
        header = {"kind": "header", "fingerprint": self.fingerprint, "settings": self.settings,
                  "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        atomic_write(self.path, json.dumps(header) + "\n")
        return {}
