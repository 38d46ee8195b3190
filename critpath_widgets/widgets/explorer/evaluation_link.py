"""The explorer's side of the evaluation panel: a snapshot of what is on show.

:func:`explorer_context` is called on the kernel's thread when the panel's Run is
pressed; the callables it returns compute maps of the same image, target and options
as the explorer (baselines through the explorer's baseline cache, pathway methods at
the sparsity and scope on show), so the panel evaluates exactly what the user sees.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
import numpy as np
import torch

from ...attribution import PATHWAY_METHODS, attribute
from ...engine import memory
from ...errors import InputError
from ...methods import is_baseline
from ..evaluation import EvalContext, EvaluationPanel
from .baselines import available_baselines, compute_baseline
from .panel_link import shown_entry, weak_context
from .worker import trim_heap

#: engine method -> its name in ``attribute``
ATTRIBUTION_NAME = {v: k for k, v in PATHWAY_METHODS.items()}


def explorer_context(w: Any) -> EvalContext:
    """The panel's context from explorer ``w`` (InputError if nothing is on show)."""
    waiting = "wait for the explorer to show a result, then press Run"
    if w.busy:
        raise InputError(waiting)
    entry = shown_entry(w, waiting)
    shown, session = w._shown, w._session
    x, target, method = entry.x, int(shown["target"]), shown["method"]
    e = w.explanation
    current = w._baseline_map if is_baseline(method) else session.saliency(e)
    sparsity, scope = float(shown["sparsity"]), shown["scope"]

    def map_of(m: str) -> np.ndarray:
        """The map of method ``m`` on the picture on show (the shown one for the current)."""
        if m == method:
            return current
        key = (entry.id, target, m)
        with w._lock:
            sal = session.baselines.get(key)
        if sal is None:
            sal = compute_baseline(session.model, x, m, target, session.reduce)
            with w._lock:
                session.baselines.put(key, sal)
        return sal

    def method_fn(m: str) -> Callable[[torch.nn.Module, torch.Tensor, Any], torch.Tensor]:
        """Method ``m`` as ``f(net, x, target) -> (N, C, H, W)`` at the sparsity and scope
        on show (what the sanity check calls on each randomised copy of the model)."""
        if is_baseline(m):
            return lambda net, xx, t: attribute(net, xx, m, t)
        opts = {"steps": session.steps} if m == "neuron_intgrad" else {}
        name = ATTRIBUTION_NAME[m]
        return lambda net, xx, t: attribute(
            net, xx, name, t, sparsity=sparsity, scope=scope, **opts
        )

    def explain_other(m: str) -> Any:
        """Method ``m``'s pathway at the sparsity and scope on show."""
        opts = {"steps": session.steps} if m == "neuron_intgrad" else {}
        return session.explainer.explain(
            x, target=target, method=m, sparsity=sparsity, scope=scope, **opts
        )

    return EvalContext(
        model=session.model,
        x=x,
        target=target,
        method=method,
        map_of=map_of,
        method_fn=method_fn,
        explanation=e,
        explain_other=explain_other if e is not None else None,
        lock=session.compute_lock,
    )


def _release() -> None:
    """After an evaluation run: unmap the engine's free batch-sized buffers (about
    280 MB on the default model) and trim the C heap."""
    memory.release()
    trim_heap()


def attach_evaluation(w: Any) -> tuple[EvaluationPanel, widgets.Accordion]:
    """Make the explorer's evaluation panel, in a collapsed "Evaluation" section."""
    context = weak_context(w, explorer_context)

    pathway = [m for m in w._methods if not is_baseline(m)]
    panel = EvaluationPanel(context, pathway, available_baselines())
    # Run is enabled again when a run ends: its batch-sized buffers serve no slider move
    panel.run_button.observe(lambda ch: None if ch["new"] else _release(), "disabled")
    section = widgets.Accordion([panel], selected_index=None)
    section.set_title(0, "Evaluation: deletion / insertion, sanity check, pathway analysis")
    section.add_class("critpath-evaluation-section")
    return panel, section


__all__ = ["ATTRIBUTION_NAME", "attach_evaluation", "explorer_context"]
