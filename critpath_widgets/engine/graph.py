"""Walks over an autograd graph, shared by the in-place input masking and the folding."""

from __future__ import annotations

from collections import Counter
from typing import Any


def edge_counts(root: Any) -> Counter:
    """How many graph edges point at each (node, output index) reachable from ``root``
    (the keys are ``next_functions`` entries): 1 means a single reader of that output."""
    counts: Counter = Counter()
    if root is None:
        return counts
    seen, stack = {root}, [root]
    while stack:
        for edge in stack.pop().next_functions:
            nxt = edge[0]
            if nxt is None:
                continue
            counts[edge] += 1
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return counts
