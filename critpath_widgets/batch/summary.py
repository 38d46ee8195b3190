"""Summary table of a results file: mean and spread per method and numeric field."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from .store import Record

#: fields that name or describe a record rather than measure it
_NOT_MEASURES = frozenset({"file", "method", "model", "target", "label", "skipped"})


def _stats(v: list[float]) -> tuple[float, float, float, float]:
    """Mean, standard deviation (n - 1; 0 for one value), median and interquartile range."""
    n = len(v)
    mean = sum(v) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in v) / (n - 1)) if n > 1 else 0.0
    s = sorted(v)

    def q(p: float) -> float:  # linear interpolation, as numpy's default
        i = p * (n - 1)
        lo = math.floor(i)
        hi = min(lo + 1, n - 1)
        return s[lo] + (s[hi] - s[lo]) * (i - lo)

    return mean, std, q(0.5), q(0.75) - q(0.25)


def summary_rows(records: Iterable[Record]) -> list[dict[str, Any]]:
    """One row per (method, field): n, mean, std, median, iqr; methods and fields in
    order of first appearance. Non-numeric and None values are left out."""
    values: dict[tuple[str, str], list[float]] = {}
    for r in records:
        if "method" not in r:
            continue
        for k, v in r.items():
            if k in _NOT_MEASURES or isinstance(v, bool) or not isinstance(v, int | float):
                continue
            if math.isfinite(v):
                values.setdefault((str(r["method"]), k), []).append(float(v))
    rows = []
    for (method, name), v in values.items():
        mean, std, median, iqr = _stats(v)
        rows.append(
            {"method": method, "field": name, "n": len(v), "mean": mean, "std": std,
             "median": median, "iqr": iqr}
        )  # fmt: skip
    return rows


def summary_table(records: list[Record]) -> str:
    """The summary as aligned text, with the counts of images, pairs and skipped files."""
    rows = summary_rows(records)
    files = {r["file"] for r in records}
    skipped = sum(1 for r in records if "skipped" in r and "method" not in r)
    pairs = sum(1 for r in records if "method" in r)
    head = f"{len(files)} images, {pairs} (image, method) records, {skipped} skipped"
    if not rows:
        return head
    cols = ["method", "field", "n", "mean", "std", "median", "iqr"]
    cells = [cols] + [
        [r["method"], r["field"], str(r["n"])] + [f"{r[c]:.4g}" for c in cols[3:]] for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    lines = []
    for row in cells:
        pairs = enumerate(zip(row, widths, strict=True))
        padded = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in pairs]
        lines.append("  ".join(padded).rstrip())
    return "\n".join([head, *lines])


__all__ = ["summary_rows", "summary_table"]
