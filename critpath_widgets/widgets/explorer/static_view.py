"""The explorer's static view: a PNG of what is on show, for front ends without widgets.

GitHub's notebook preview, nbconvert to HTML without saved widget state, and nbconvert
to PDF cannot run the widget; they pick the best MIME type they can render from the
output's bundle. :func:`static_bundle` adds to the widget's own bundle (whose
``application/vnd.jupyter.widget-view+json`` a live front end prefers) an ``image/png``
of the current view, drawn by ``save()`` (the same figure, at a modest dpi, in 256
colours), and a
one-line ``text/plain``. Nothing is computed: without a settled result on show there
is no PNG, only a line saying so.
"""

from __future__ import annotations

import base64
import tempfile
from collections.abc import Container
from pathlib import Path
from typing import Any

from ...errors import InputError
from ...methods import is_baseline, method_name

#: dpi of the static PNG (the figure is about 13 x 8 inches: ~930 x 580 pixels)
STATIC_DPI = 72
PNG = "image/png"
TEXT = "text/plain"


def describe(w: Any) -> str:
    """One line saying what the explorer shows (or why there is nothing to show)."""
    shown = w._shown
    if shown is None or w.busy:
        why = "computing" if w.busy else "no result on show"
        return (
            f"PathwayExplorer ({why}; a front end without widgets shows a picture of the "
            "view once one is on show: call .wait() before displaying it)"
        )
    target = int(shown["target"])
    if is_baseline(shown["method"]):
        how = "baseline, full network"
    else:
        how = f"{shown['scope']} scope, sparsity {float(shown['sparsity']):.2f}"
    return (
        f"PathwayExplorer: {method_name(shown['method'])} ({how}), "
        f"target {w.category(target)!r} ({target})"
    )


def save_view(w: Any, path: str | Path, dpi: int) -> Path:
    """Write the figure of what ``w`` shows (photo, both maps with the overlays' colour
    settings, layer chart; a baseline's own figure) to ``path``; returns the path."""
    from ...report import MapStyle, render_explanation, save_figure

    if w._shown is not None and is_baseline(w._shown["method"]):
        return w._save_baseline(path, dpi)
    e = w.explanation
    if e is None:
        raise InputError("nothing to save yet: no explanation has been computed")
    entry = w._images.get(w._images.shown)
    fig = render_explanation(
        entry.display if entry is not None else None,
        e,
        w.pathway_overlay.array,
        w.gradient_overlay.array,
        name=w.category(int(e.target[0])),
        pathway_style=MapStyle.of(w.pathway_overlay),
        gradient_style=MapStyle.of(w.gradient_overlay),
        selected_site=w.layers.selected_site,
    )
    return save_figure(fig, path, dpi=dpi)


def view_png(w: Any, dpi: int = STATIC_DPI) -> bytes | None:
    """PNG bytes of the view on show, drawn by ``w.save`` without waiting; ``None`` while
    a request runs or before the first result (nothing is computed here)."""
    if w._shown is None or w.busy:
        return None
    with tempfile.TemporaryDirectory(prefix="critpath-static-") as tmp:
        path = Path(tmp) / "view.png"
        try:
            w.save(path, dpi=dpi, timeout=0)
        except TimeoutError:  # a request came in meanwhile: the view is changing
            return None
        return _palette_png(path)


def _palette_png(path: Path) -> bytes:
    """The PNG at ``path`` as a 256-colour palette PNG: about a fifth of the bytes
    (~100 KB instead of ~540 KB on the default view), which every saved notebook
    carries, for a preview that stays legible."""
    import io

    from PIL import Image

    with Image.open(path) as im:
        small = im.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE)
    out = io.BytesIO()
    small.save(out, format="PNG", optimize=True)
    return out.getvalue()


def static_bundle(
    w: Any,
    base: dict[str, Any],
    include: Container[str] | None = None,
    exclude: Container[str] | None = None,
) -> dict[str, Any]:
    """The widget's bundle ``base`` with a PNG of the view (base64, as notebooks store
    it; unless excluded or nothing is on show) and a one-line text in place of the
    widget's long repr."""
    data = dict(base)
    data[TEXT] = describe(w)
    wanted = (include is None or PNG in include) and (exclude is None or PNG not in exclude)
    if wanted:
        png = view_png(w)
        if png is not None:
            data[PNG] = base64.b64encode(png).decode("ascii")
    return data


__all__ = ["STATIC_DPI", "describe", "static_bundle", "view_png"]
