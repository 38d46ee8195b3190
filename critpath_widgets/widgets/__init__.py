"""Jupyter widgets: AttributionOverlay, LayerContributions and PathwayExplorer.

The classes are imported on first access, so importing a single submodule (say
``critpath_widgets.widgets.images``) does not pull in the others.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AttributionOverlay": ".overlay",
    "LayerContributions": ".layers",
    "PathwayExplorer": ".explorer",
    "load_image": ".images",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(_EXPORTS[name], __name__)
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_EXPORTS))


__all__ = ["AttributionOverlay", "LayerContributions", "PathwayExplorer", "load_image"]
