"""Display names of the engine's selection methods and of the attribution baselines,
shared by the CLI, figures and widgets.

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

#: Human-readable name of each baseline of ``critpath_widgets.attribution`` (picker order).
BASELINE_NAMES: dict[str, str] = {
    "gradient": "Gradient (baseline)",
    "gradient_x_input": "Gradient × input (baseline)",
    "integrated_gradients": "Integrated gradients (baseline)",
    "smoothgrad": "SmoothGrad (baseline)",
    "guided_backprop": "Guided backprop (baseline)",
    "gradcam": "Grad-CAM (baseline)",
    "deeplift": "DeepLift (baseline)",
}

#: The baselines, in picker order: maps without a pathway (no sparsity, no scope).
BASELINES: tuple[str, ...] = tuple(BASELINE_NAMES)

#: Methods that take many forward/backward passes: they report progress and can be cancelled.
LONG_METHODS: frozenset[str] = frozenset(
    {"neuron_intgrad", "greedy", "dgr", "integrated_gradients", "smoothgrad"}
)


def method_name(method: str) -> str:
    """The display name of ``method`` (the key itself for a method not listed)."""
    return METHOD_NAMES.get(method) or BASELINE_NAMES.get(method, method)


def method_label(method: str) -> str:
    """The name for a picker: long methods are marked "(slow)" so users know what to expect."""
    return f"{method_name(method)} (slow)" if method in LONG_METHODS else method_name(method)


def is_baseline(method: str) -> bool:
    """Whether ``method`` is an attribution baseline (no pathway behind its map)."""
    return method in BASELINE_NAMES


__all__ = [
    "BASELINES",
    "BASELINE_NAMES",
    "LONG_METHODS",
    "METHOD_NAMES",
    "is_baseline",
    "method_label",
    "method_name",
]
