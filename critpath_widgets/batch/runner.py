"""The batch loop, generic over what is computed per (image, method): shard, resume,
write each record durably, gather, merge.

Invariants: a record is written (flushed, fsynced) before the next pair starts, so a
kill loses at most the pair in progress; a pair whose record exists anywhere (output
file or any shard file) is never computed again; the merged file holds one record per
(file, method), ordered as the sorted image list and the methods.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

from ..errors import CritpathError, InputError
from .distributed import Ranks, shard
from .store import (
    Key,
    Record,
    RecordWriter,
    merge_records,
    read_records,
    record_key,
    shard_files,
    shard_path,
    write_atomic,
)

log = logging.getLogger("critpath_widgets.batch")


class ImageEvaluator(Protocol):
    """What a batch run computes: ``prepare`` once per image (raising InputError for an
    image that cannot be read), then ``evaluate`` per method, returning flat JSON fields."""

    def prepare(self, key: str) -> Any:
        """Load and preprocess the image ``key`` once, for every method's ``evaluate``."""
        ...

    def evaluate(self, prepared: Any, method: str) -> dict[str, Any]:
        """The record of ``method`` on the prepared image, as flat JSON fields."""
        ...


@dataclass
class BatchResult:
    """What one process did: its counts, and on rank 0 the merged records."""

    written: int = 0
    skipped: int = 0
    resumed: int = 0
    records: list[Record] = field(default_factory=list)


def _done_keys(out: Path, own: Path) -> set[Key]:
    """Pairs with a record in the output file or any shard file; the own file (the one
    this process appends to) has its torn last line cut, the others are only read."""
    keys = {record_key(r) for r in read_records(own, repair=True)}
    for p in {out, *shard_files(out).values()} - {own}:
        keys.update(record_key(r) for r in read_records(p))
    return keys


def _work(
    mine: Sequence[str],
    methods: Sequence[str],
    evaluator: ImageEvaluator,
    writer: RecordWriter,
    done: set[Key],
    bar: Any,
) -> tuple[int, int]:
    written = skipped = 0
    for key in mine:
        todo = [m for m in methods if (key, m) not in done]
        if not todo:
            continue
        bar.set_postfix_str(os.path.basename(key)[-30:], refresh=False)
        try:
            prepared = evaluator.prepare(key)
        except InputError as e:
            log.warning("skipping %s: %s", key, e)
            writer.write({"file": key, "skipped": str(e)})
            skipped += 1
            bar.update(len(todo))
            continue
        for m in todo:
            t0 = time.perf_counter()
            fields = evaluator.evaluate(prepared, m)
            elapsed = time.perf_counter() - t0
            writer.write({"file": key, "method": m, **fields, "elapsed_s": round(elapsed, 4)})
            written += 1
            bar.update(1)
    return written, skipped


def run_batch(
    files: Sequence[str],
    methods: Sequence[str],
    evaluator: ImageEvaluator,
    out: str | os.PathLike,
    ranks: Ranks | None = None,
    progress: bool = True,
    retry_skipped: bool = False,
) -> BatchResult:
    """Evaluate this rank's share of ``files`` (sorted) with every method into ``out``.

    One process appends to ``out`` itself; under torchrun rank r appends to
    ``out.rank{r}``, and at the end rank 0 gathers every rank's records and rewrites
    ``out`` merged (shard files are then removed). Skip records mark unreadable images
    as done; ``retry_skipped`` tries them again.
    """
    rk = ranks or Ranks()
    out = Path(out)
    own = out if rk.world_size == 1 else shard_path(out, rk.rank)
    done = _done_keys(out, own)
    if retry_skipped:
        done = {k for k in done if k[1] is not None}
    mine = shard(list(files), rk.rank, rk.world_size)
    skip_files = {f for f, m in done if m is None}
    pairs = sum(1 for f in mine if f not in skip_files for m in methods if (f, m) not in done)
    res = BatchResult(resumed=sum(1 for f in mine for m in methods if (f, m) in done))
    if rk.rank == 0 and res.resumed:
        log.info("resuming: %d of rank 0's pairs are already done", res.resumed)
    error: BaseException | None = None
    bar = tqdm(
        total=pairs,
        desc=f"evaluate (rank 0 of {rk.world_size})" if rk.distributed else "evaluate",
        unit="pair",
        disable=not progress or rk.rank != 0,
    )
    done |= {(f, m) for f in skip_files for m in methods}  # a skipped image is done
    try:
        with RecordWriter(own) as writer:
            res.written, res.skipped = _work(mine, methods, evaluator, writer, done, bar)
    except Exception as e:  # reported after the gather, so no rank waits for ever
        error = e
    finally:
        bar.close()
    _finish(out, own, files, methods, rk, res, error)
    return res


def _finish(
    out: Path,
    own: Path,
    files: Sequence[str],
    methods: Sequence[str],
    rk: Ranks,
    res: BatchResult,
    error: BaseException | None,
) -> None:
    """Gather (a barrier), merge on rank 0, remove shard files, raise any rank's error."""
    mine = read_records(own) if rk.distributed and error is None else []
    status = rk.gather((rk.rank, None if error is None else repr(error), mine))
    failed: list[str] = []
    if rk.rank == 0:
        assert status is not None  # rank 0 receives every rank's status
        failed = [f"rank {r}: {msg}" for r, msg, _ in status if msg is not None]
        if not failed:
            stale = shard_files(out)
            groups = [read_records(out), *(read_records(p) for p in stale.values())]
            groups += [recs for _, _, recs in status]
            res.records = merge_records(groups, files, methods)
            write_atomic(out, res.records)
            for r, p in stale.items():  # live ranks remove their own after the broadcast
                if r >= rk.world_size or rk.world_size == 1:
                    p.unlink(missing_ok=True)
    failed = rk.broadcast(failed)
    if error is not None:
        raise error
    if failed:
        raise CritpathError(
            f"{'; '.join(failed)}. Finished records are kept in the shard files; run the "
            "same command again to resume."
        )
    if own != out:
        own.unlink(missing_ok=True)


__all__ = ["BatchResult", "ImageEvaluator", "run_batch"]
