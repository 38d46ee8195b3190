"""JSON-lines result files that survive a kill: append + fsync per record, torn tail cut.

A record is one JSON object per line. ``{"file", "method", ...}`` is a finished
(image, method) pair; ``{"file", "skipped"}`` an image that could not be read. The key
of a record is ``(file, method)``, with method None for a skip record.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("critpath_widgets.batch")

Record = dict[str, Any]
Key = tuple[str, str | None]


def record_key(r: Record) -> Key:
    """The (file, method) pair a record stands for (method None: a skip record)."""
    return (str(r["file"]), r.get("method"))


def _clean(v: Any) -> Any:
    """JSON-safe value: NaN and infinities become None (strict JSON has no NaN)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    return v


def read_records(path: str | os.PathLike, repair: bool = False) -> list[Record]:
    """Records of a JSONL file (missing file: none). A last line without its newline is a
    torn write of a killed run: ignored, and with ``repair`` cut off the file so that the
    next append starts on a fresh line. Malformed complete lines are logged and ignored."""
    p = Path(path)
    if not p.is_file():
        return []
    data = p.read_bytes()
    end = data.rfind(b"\n") + 1  # bytes up to and including the last newline
    if end < len(data):
        log.warning(
            "%s: ignoring a torn last line (%d bytes) of an interrupted run", p, len(data) - end
        )
        if repair:
            with open(p, "r+b") as f:
                f.truncate(end)
                f.flush()
                os.fsync(f.fileno())
    records: list[Record] = []
    for n, line in enumerate(data[:end].splitlines(), start=1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s:%d: ignoring a line that is not JSON", p, n)
            continue
        if isinstance(r, dict) and "file" in r:
            records.append(r)
        else:
            log.warning("%s:%d: ignoring a line that is not a result record", p, n)
    return records


class RecordWriter:
    """Appends records to a JSONL file, each flushed and fsynced before the next starts,
    so a kill loses at most the record being written (a torn line, cut on resume)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f: IO[str] | None = None

    def write(self, record: Record) -> None:
        """Append one record as one line, durable when this returns."""
        if self._f is None:
            self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._f.write(json.dumps(_clean(record), allow_nan=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        """Close the file (nothing to do when nothing was written)."""
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_SHARD = re.compile(r"\.rank(\d+)$")


def shard_path(out: str | os.PathLike, rank: int) -> Path:
    """The shard file of ``rank`` next to the output file: ``results.jsonl.rank{rank}``."""
    return Path(f"{os.fspath(out)}.rank{rank}")


def shard_files(out: str | os.PathLike) -> dict[int, Path]:
    """Shard files of ``out`` that exist, by rank (left by this or an earlier run)."""
    p = Path(out)
    found: dict[int, Path] = {}
    if p.parent.is_dir():
        for q in p.parent.glob(p.name + ".rank*"):
            m = _SHARD.search(q.name)
            if m and q.name == f"{p.name}.rank{m.group(1)}":
                found[int(m.group(1))] = q
    return dict(sorted(found.items()))


def merge_records(
    groups: Iterable[Iterable[Record]], files: Sequence[str], methods: Sequence[str]
) -> list[Record]:
    """One record per key, the first seen winning, ordered by ``files`` then ``methods``
    (records of other files or methods keep their order, after those). A skip record is
    dropped when its file has results (a retried image that could be read after all)."""
    seen: dict[Key, Record] = {}
    for g in groups:
        for r in g:
            seen.setdefault(record_key(r), r)
    has_results = {f for f, m in seen if m is not None}
    file_rank = {f: i for i, f in enumerate(files)}
    method_rank = {m: i for i, m in enumerate(methods)}
    big = len(files) + len(methods) + 1

    def order(item: tuple[int, Key]) -> tuple[int, int, int]:
        n, (f, m) = item
        return (file_rank.get(f, big), -1 if m is None else method_rank.get(m, big), n)

    keyed = [(n, k) for n, k in enumerate(seen) if not (k[1] is None and k[0] in has_results)]
    return [seen[k] for _, k in sorted(keyed, key=order)]


def write_atomic(path: str | os.PathLike, records: Iterable[Record]) -> None:
    """Replace ``path`` by these records at once (temp file, fsync, rename): a kill
    leaves either the old file or the new one, never a mix."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(_clean(r), allow_nan=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)
    try:  # make the rename itself durable
        fd = os.open(p.parent, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = [
    "Record",
    "RecordWriter",
    "merge_records",
    "read_records",
    "record_key",
    "shard_files",
    "shard_path",
    "write_atomic",
]
