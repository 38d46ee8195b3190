"""Display names of the engine's selection methods, shared by the CLI, figures and widgets.

Pure Python (no torch, no widget library), so every front end names a method the same way.
"""

from __future__ import annotations

#: Human-readable name of each method of ``critpath_widgets.engine.METHODS``.
METHOD_NAMES: dict[str, str] = {
    "neuron_mct": "NeuronMCT (Taylor)",
    "neuron_intgrad": "NeuronIntGrad",
    "greedy": "Greedy",
    "dgr": "DGR (pruning objective)",
    "random": "Random",
}

#: Methods that take many forward/backward passes: they report progress and can be cancelled.
LONG_METHODS: frozenset[str] = frozenset({"neuron_intgrad", "greedy", "dgr"})


def method_name(method: str) -> str:
    """The display name of ``method`` (the key itself for a method not listed)."""
    return METHOD_NAMES.get(method, method)


def method_label(method: str) -> str:
    """The name for a picker: long methods are marked "(slow)" so users know what to expect."""
    return f"{method_name(method)} (slow)" if method in LONG_METHODS else method_name(method)


__all__ = ["LONG_METHODS", "METHOD_NAMES", "method_label", "method_name"]
