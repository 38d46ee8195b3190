"""The explorer's side of the comparison panel: a snapshot of what is on show.

:func:`comparison_context` is called on the thread that shows a result (or the
kernel's, when the section opens); it names the state compared (picture, target,
sparsity, scope and how often the model changed), so the panel computes again exactly
when one of them changes while the section is open, and it hands over the explorer's
cached explanations so that a method on show is not scored twice.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets

from ...attribution import PATHWAY_METHODS
from ...comparison import available_methods
from ..compare import CompareContext, ComparisonPanel
from .baselines import available_baselines
from .panel_link import shown_entry, weak_context


def comparison_context(w: Any) -> CompareContext:
    """The panel's context from explorer ``w`` (InputError if nothing is on show)."""
    entry = shown_entry(w)
    shown, session = w._shown, w._session
    target, scope = int(shown["target"]), shown["scope"]
    sparsity = float(shown["sparsity"])
    with w._lock:
        cached = {m: session.cached((entry.id, target, m, scope)) for m in PATHWAY_METHODS.values()}
    # a model change clears the explorer's caches and counts: compare anew after one
    changes = session.stats.get("model_changed", 0)
    worker, asked = w._worker, w._worker._gen  # the explorer's latest request now
    return CompareContext(
        key=(entry.id, target, round(sparsity, 6), scope, changes),
        explainer=session.explainer,
        x=entry.x,
        target=target,
        sparsity=sparsity,
        scope=scope,
        target_name=w.category(target),
        display=entry.display,
        steps=session.steps,
        reduce=session.reduce,
        explanations={m: e for m, e in cached.items() if e is not None},
        lock=session.compute_lock,
        moved_on=lambda: worker._gen != asked,
    )


def attach_comparison(w: Any) -> tuple[ComparisonPanel, widgets.Accordion]:
    """Make the explorer's comparison panel, in a collapsed "Compare methods" section
    that computes when opened and follows the explorer while open."""
    context = weak_context(w, comparison_context)

    engine = set(w._methods)
    offered = [
        name
        for name, m in PATHWAY_METHODS.items()
        if m in engine  # the pathway methods this explorer's engine has
    ] + [b for b in available_baselines() if b in engine]
    selected = [m for m in available_methods() if m in offered]
    panel = ComparisonPanel(context, offered, selected)
    section = widgets.Accordion([panel], selected_index=None)
    section.set_title(0, "Compare methods: the same photo and target through each method")
    section.add_class("critpath-compare-section")
    section.observe(lambda c: panel.set_open(c["new"] == 0), "selected_index")
    # every result shown ends with a message: then compare what is on show, if open
    w.message.observe(lambda _c: panel.update(), "value")
    return panel, section


__all__ = ["attach_comparison", "comparison_context"]
