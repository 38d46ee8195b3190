"""Batch evaluation: many images x methods into a resumable JSONL file, one process or
many under torchrun (see :func:`run_batch`)."""

from __future__ import annotations

from .distributed import Ranks, launched, ranks, shard
from .images import IMAGE_EXTENSIONS, find_images, load_image
from .runner import BatchResult, ImageEvaluator, run_batch
from .store import merge_records, read_records, shard_path
from .summary import summary_rows, summary_table

__all__ = [
    "IMAGE_EXTENSIONS",
    "BatchResult",
    "ImageEvaluator",
    "Ranks",
    "find_images",
    "launched",
    "load_image",
    "merge_records",
    "ranks",
    "read_records",
    "run_batch",
    "shard",
    "shard_path",
    "summary_rows",
    "summary_table",
]
