"""Human names of sites: "block 3 · ReLU6 #2" from a module path such as
``_blocks.3._swish#2``, shared by the layer panel, the CLI figure and the summary table.

A site's name (:attr:`Explanation.site_names`) is its module path, with ``#k`` for the
k-th call of a reused module and ``path:F.kind`` for an activation function called
inside the module at ``path``. The *block* of a site is found from that path alone,
generically: the path up to its first numbered container, i.e.

1. the first all-digit component that is not the path's last one (a ``Sequential`` or
   ``ModuleList`` entry that holds the site: ``_blocks.3``, ``features.4``,
   ``layer2.1``), else
2. the first component holding a digit that is not the last one (a named repeated
   unit: ``encoder.layers.encoder_layer_5``, ``inception3a``, ``denseblock1``).

Sites with no block are "stem" before the first block, "head" after the last one and
"after block N" between blocks. Blocks are numbered by the number their paths end in
when those numbers tell them apart (``_blocks.3`` is block 3), else by call order from 0
(ResNet's ``layer1.0 .. layer4.1`` are blocks 0..7). Within a group, sites of one kind
are counted from 1 in call order ("#2"), the count shown where the group has several.
A model without any block (a plain ``Sequential``) counts kinds over the whole model.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

#: a call-count suffix of a reused module's site ("relu#2")
_CALL = re.compile(r"#\d+$")
#: the trailing number of a block's last path component ("3", "encoder_layer_5")
_TRAILING = re.compile(r"(\d+)$")

SEP = " · "


def module_path(name: str) -> str:
    """The module path of a site name, without its call count and function suffix."""
    path = name.split(":", 1)[0] if ":" in name else name
    path = _CALL.sub("", path)
    return "" if path.startswith("F.") and ":" not in name else path


def block_of(name: str) -> str | None:
    """The block path of a site (the path to its first numbered container), or None."""
    parts = [p for p in module_path(name).split(".") if p]
    for test in (str.isdigit, lambda p: any(c.isdigit() for c in p)):
        for i, part in enumerate(parts[:-1]):
            if test(part):
                return ".".join(parts[: i + 1])
    return None


def _block_numbers(blocks: list[str]) -> dict[str, int]:
    """Each distinct block's display number: the number its path ends in where those
    tell all blocks apart, else its place in call order (from 0)."""
    numbers = [_TRAILING.search(b.rsplit(".", 1)[-1]) for b in blocks]
    values = [int(m.group(1)) for m in numbers if m]
    if len(values) == len(blocks) and len(set(values)) == len(values):
        return dict(zip(blocks, values, strict=True))
    return {b: i for i, b in enumerate(blocks)}


def site_labels(names: Sequence[str], kinds: Sequence[str] = ()) -> list[str]:
    """Human labels of sites in call order ("block 3 · ReLU6 #2", "stem · ReLU6"), one
    per name and all distinct; ``kinds`` (module type or "F.relu") may be shorter."""
    kinds = [kinds[i] if i < len(kinds) and kinds[i] else "site" for i in range(len(names))]
    blocks = [block_of(n) for n in names]
    order = list(dict.fromkeys(b for b in blocks if b is not None))
    number = _block_numbers(order)
    placed = [i for i, b in enumerate(blocks) if b is not None]
    groups: list[str] = []
    for i, b in enumerate(blocks):
        if b is not None:
            groups.append(f"block {number[b]}")
        elif not placed:
            groups.append("")  # no blocks anywhere: kinds are counted over the model
        elif i < placed[0]:
            groups.append("stem")
        elif i > placed[-1]:
            groups.append("head")
        else:  # between blocks: named after the block before it
            before = max(j for j in placed if j < i)
            groups.append(f"after block {number[blocks[before]]}")
    # invariant: (group, kind, count) is unique per site, so the labels are distinct
    totals = Counter(zip(groups, kinds, strict=True))
    seen: Counter[tuple[str, str]] = Counter()
    labels = []
    for group, kind in zip(groups, kinds, strict=True):
        seen[group, kind] += 1
        count = f" #{seen[group, kind]}" if totals[group, kind] > 1 else ""
        labels.append(f"{group}{SEP}{kind}{count}" if group else f"{kind}{count}")
    return labels


__all__ = ["block_of", "module_path", "site_labels"]
