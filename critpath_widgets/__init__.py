"""critpath_widgets: critical pathways and pathway-gradient saliency as Jupyter widgets.

The engine (``PathwayExplainer`` and friends) is pure PyTorch and imports no widget
library; the widgets are imported lazily on first access so that scripts using only
the engine never load ipywidgets.
"""

from __future__ import annotations

from typing import Any

from .attribution import ATTRIBUTION_METHODS, attribute, quantus_explain
from .comparison import Comparison, compare_methods, comparison_figure
from .engine import Explanation, Pathway, PathwayExplainer
from .engine.interventions import Interventions
from .errors import (
    Cancelled,
    CritpathError,
    FoldingWarning,
    InputError,
    InputTypeError,
    ModelError,
    OptionError,
    SiteWarning,
)
from .gallery import ChannelGallery, activation_map
from .models import ModelBundle, load_model, sample_image, sample_images

__version__ = "0.1.0"

_WIDGETS = {
    "AttributionOverlay": "critpath_widgets.widgets.overlay",
    "LayerContributions": "critpath_widgets.widgets.layers",
    "PathwayExplorer": "critpath_widgets.widgets.explorer",
}


def __getattr__(name: str) -> Any:
    """Import widget classes on first use, keeping ``import critpath_widgets`` light."""
    if name in _WIDGETS:
        import importlib

        return getattr(importlib.import_module(_WIDGETS[name]), name)
    raise AttributeError(f"module 'critpath_widgets' has no attribute {name!r}")


__all__ = [
    "PathwayExplainer",
    "Explanation",
    "attribute",
    "quantus_explain",
    "ATTRIBUTION_METHODS",
    "Comparison",
    "compare_methods",
    "comparison_figure",
    "Interventions",
    "ChannelGallery",
    "activation_map",
    "Pathway",
    "ModelBundle",
    "load_model",
    "sample_image",
    "sample_images",
    "CritpathError",
    "InputError",
    "InputTypeError",
    "ModelError",
    "OptionError",
    "Cancelled",
    "FoldingWarning",
    "SiteWarning",
    *_WIDGETS,
]
