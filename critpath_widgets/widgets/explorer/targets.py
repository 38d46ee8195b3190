"""Class names for the explorer's target: the searchable picker's labels and name lookup.

The target picker is a combobox over every class of the model: the picture's most
probable classes first (with their probabilities), then all the others in index order.
Labels are unique (a name shared by several classes, such as ImageNet's two "crane"s,
carries its index), so a label maps back to exactly one index. Typed text that is not a
label is resolved by :func:`resolve_class`: an index, an exact name, or a part of a name
that only one class contains.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import traitlets

from ...classes import match_class
from ...errors import InputError

#: A label's decorations, stripped before a name is looked up: " (12.3%)" and " #517".
_DECORATION = re.compile(r"(\s+\(\d+(\.\d+)?%\))?(\s+#\d+)?\s*$")


def class_names(categories: Sequence[str] | None, num_classes: int | None) -> list[str]:
    """The name of every class: ``categories`` (cut to ``num_classes`` when known), else
    ``"class i"`` for each of ``num_classes`` (empty when neither is known)."""
    if categories is not None:
        names = [str(c) for c in categories]
        return names[:num_classes] if num_classes is not None else names
    return [f"class {i}" for i in range(num_classes or 0)]


def _unique_names(names: Sequence[str]) -> list[str]:
    """``names`` with the index appended to every name that several classes share."""
    seen: dict[str, int] = {}
    for n in names:
        seen[n] = seen.get(n, 0) + 1
    return [f"{n} #{i}" if seen[n] > 1 else n for i, n in enumerate(names)]


def class_labels(
    names: Sequence[str], probs: np.ndarray | None, top: Sequence[int]
) -> tuple[list[str], dict[str, int]]:
    """The picker's options (``top`` first with probabilities, then every other class)
    and the map from each label back to its class index."""
    unique = _unique_names(names)
    labels: list[str] = []
    index: dict[str, int] = {}
    top = [int(i) for i in top if 0 <= int(i) < len(unique)]
    for i in top:
        p = f" ({float(probs[i]):.1%})" if probs is not None and i < len(probs) else ""
        label = unique[i] + p
        labels.append(label)
        index[label] = i
    shown = set(top)
    for i, label in enumerate(unique):
        if i not in shown:
            labels.append(label)
        # the bare name also maps back (a top class typed without its probability)
        index.setdefault(label, i)
    return labels, index


def resolve_class(text: str, names: Sequence[str]) -> int:
    """The class index that ``text`` names: an index ("517"), a label or exact name (case
    ignored), or a part of a name that exactly one class contains. Raises
    :class:`InputError` listing the candidates or close matches otherwise."""
    raw = str(text).strip()
    if not raw:
        raise InputError("type a class name (or a part of one) to choose the target")
    m = re.search(r"#(\d+)\s*$", raw)
    if m and int(m.group(1)) < len(names):
        return int(m.group(1))
    query = _DECORATION.sub("", raw).strip().lower()
    if query.isdigit():
        i = int(query)
        if names and i >= len(names):
            raise InputError(f"target must be a class index in [0, {len(names) - 1}], got {i}")
        return i
    m = re.fullmatch(r"class\s+(\d+)", query)
    if m and not names:
        return int(m.group(1))  # a model without names whose class count is not known yet
    found, close = match_class(query, names)
    if len(found) == 1 or (found and names[found[0]].lower() == query):
        return found[0]  # one match, or the first of exact duplicates
    if found:
        listed = ", ".join(names[i] for i in found[:8]) + (", ..." if len(found) > 8 else "")
        raise InputError(
            f"{raw!r} is part of {len(found)} class names ({listed}); type more of the name"
        )
    hint = f"; close matches: {', '.join(names[i] for i in close)}" if close else ""
    raise InputError(f"no class is named {raw!r}{hint}")


class ClassTarget(traitlets.Int):
    """An Int trait holding a class index that may also be set by class name: a string
    is resolved by the owner's ``class_index(name)`` (an :class:`InputError` if it names
    no single class), so the trait's value is always the index."""

    def validate(self, obj: Any, value: Any) -> int:
        """Resolve a name to its index, then validate it as an Int."""
        if isinstance(value, str):
            value = obj.class_index(value)
        return super().validate(obj, value)


__all__ = ["ClassTarget", "class_labels", "class_names", "resolve_class"]
