"""``AttributionOverlay``: an attribution map painted over its image, in the browser.

The front end (``js/overlay.js``, bundled to ``critpath_widgets/static/overlay.js``)
draws the image with the map on a canvas, a colour bar and a hover readout. The
colormap, opacity, sign mode, percentile clipping, gamma, the photo's muting and the
map-only toggle are applied in the browser, so moving a control repaints at once
without a round trip to the kernel; the new value is then synced back to the Python
traits. The display blur (``smooth``) and a sign change are answered by Python with
the new display map.

Binary payloads (the PNG image, the float32 map, the colormap LUTs) travel as binary
buffers of the widget protocol, never as JSON lists or base64.

Colour mapping (the same in the browser and in :func:`colorize`, from ``colormaps``):

* ``vmax`` = the ``clip_percentile`` percentile (linear interpolation) of the nonzero
  magnitudes that the sign mode shows (``|v|`` for signed/absolute, ``v > 0`` for
  positive, ``-v`` for ``v < 0`` for negative); 1 when there are none.
* ``t`` = ``(v / vmax + 1) / 2`` (signed, diverging), ``max(v, 0) / vmax`` (positive),
  ``max(-v, 0) / vmax`` (negative), ``|v| / vmax`` (absolute), clipped to [0, 1];
  colour = LUT row ``min(floor(t * 256), 255)``.
* alpha = ``opacity`` x the LUT's alpha x the magnitude ``min(|v| / vmax, 1)`` to the
  power ``gamma`` (``|2t - 1|`` in signed mode, ``t`` in the one-sided modes), so pixels
  without attribution leave the image visible and strong ones cover it; with
  ``map_only`` the map is painted alone with the LUT's alpha (no photo).
* The colours are computed from the display map
  (:func:`~critpath_widgets.widgets.colormaps.display_map`: the part the sign mode
  shows, blurred by ``smooth``), which Python computes and sends as its own buffer
  (``display``); the raw map (``values``, :attr:`AttributionOverlay.array`, the hover
  readout) is never changed. With ``smooth = 0`` the browser paints the raw map.
* The photo behind the map is muted by ``photo_dim``
  (:func:`~critpath_widgets.widgets.colormaps.backdrop`).

The defaults are the readable style of :class:`critpath_widgets.report.MapStyle`.

torch is never imported here: tensors are accepted by duck typing (``.detach()``).
"""

from __future__ import annotations

import math
import pathlib
from typing import Any

import anywidget
import numpy as np
import traitlets
from traitlets import TraitError, default, observe, validate

from ..errors import CritpathError, InputError
from . import colormaps as _cm
from .colormaps import colorize, display_map, normalised_vmax
from .overlay_convert import image_to_png, values_to_array

#: Where ``npm run build`` writes the bundled front end.
ESM_PATH = pathlib.Path(__file__).parent.parent / "static" / "overlay.js"

SIGN_MODES: tuple[str, ...] = ("signed", "positive", "negative", "absolute")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MISSING_ESM = """
export default { render({ el }) {
  el.textContent = "critpath_widgets: the overlay front end (static/overlay.js) was not built.";
} };
"""


class FrontendMissingError(CritpathError, FileNotFoundError):
    """The bundled front end ``critpath_widgets/static/overlay.js`` is missing."""


class _TraitInputError(InputError, TraitError):
    """An :class:`InputError` that traitlets also recognises as a ``TraitError``.

    Being a ``TraitError`` matters: inside ``hold_trait_notifications`` (used by the
    constructor and by ``set_state`` for changes from the browser) traitlets rolls back
    every trait of the batch only when a ``TraitError`` is raised, so a bad value
    never leaves a half-updated widget.
    """


class _InputErrorMixin:
    """Turn traitlets' own type errors (say ``opacity = "x"``) into ``InputError``."""

    def error(self, obj, value, error=None, info=None):  # noqa: D102
        try:
            super().error(obj, value, error, info)  # type: ignore[misc]
        except _TraitInputError:
            raise
        except TraitError as exc:
            raise _TraitInputError(str(exc.args[0]) if exc.args else str(exc)) from None


class _Bytes(_InputErrorMixin, traitlets.Bytes):
    pass


class _Float(_InputErrorMixin, traitlets.Float):
    pass


class _Int(_InputErrorMixin, traitlets.Int):
    pass


class _Unicode(_InputErrorMixin, traitlets.Unicode):
    pass


class _Bool(_InputErrorMixin, traitlets.Bool):
    pass


class _List(_InputErrorMixin, traitlets.List):
    pass


class _Tuple(_InputErrorMixin, traitlets.Tuple):
    pass


def _bad(msg: str) -> _TraitInputError:
    return _TraitInputError(msg)


# ---------------------------------------------------------------------------------
# the widget
# ---------------------------------------------------------------------------------


class AttributionOverlay(anywidget.AnyWidget):
    """An attribution map painted over its image, with colour bar and hover readout.

    >>> w = AttributionOverlay(image=pil_image, values=saliency_2d, label="pathway gradient")
    >>> w.set_data(values=new_map)          # image and map may be updated separately
    >>> w.colormap, w.sign, w.opacity = "inferno", "positive", 0.8

    Invalid values raise :class:`critpath_widgets.errors.InputError` and leave the
    widget as it was.
    """

    _esm = ESM_PATH if ESM_PATH.is_file() else _MISSING_ESM

    image = _Bytes(b"").tag(sync=True)
    """PNG bytes of the RGB background image (the image the map is aligned to); ``b""``
    for none. Set it with :meth:`set_data` to pass PIL images, arrays or other formats."""

    values = _Bytes(b"").tag(sync=True)
    """The raw map: float32 little-endian, row-major, of shape :attr:`shape`; sent as a
    binary buffer. Set it with :meth:`set_data` so that ``values`` and ``shape`` change
    together."""

    shape = _Tuple(_Int(0), _Int(0), default_value=(0, 0)).tag(sync=True)
    """(height, width) of the map."""

    colormap = _Unicode("inferno").tag(sync=True)
    """Name of the matplotlib colormap in use. Setting a valid matplotlib name that is
    not in :attr:`colormaps` appends it (and its LUT); an unknown name raises
    ``InputError``."""

    colormaps = _List(_Unicode(), default_value=list(_cm.DEFAULT_COLORMAPS)).tag(sync=True)
    """Names offered in the colormap picker (matplotlib names, no duplicates). The
    current :attr:`colormap` is always kept in the list (appended if missing)."""

    luts = _Bytes().tag(sync=True)
    """Computed, do not set: ``len(colormaps) x 256 x 4`` uint8 RGBA lookup tables, row
    ``i`` of table ``k`` = ``matplotlib.colormaps[colormaps[k]](i / 255, bytes=True)``."""

    opacity = _Float(0.9).tag(sync=True)
    """Opacity of the map over the image, in [0, 1]."""

    sign = _Unicode("absolute").tag(sync=True)
    """Which part of the map is shown: ``"signed"`` (diverging colormap centred on 0),
    ``"positive"``, ``"negative"`` or ``"absolute"`` (magnitudes)."""

    clip_percentile = _Float(99.0).tag(sync=True)
    """Percentile in (0, 100] of the shown nonzero magnitudes that is mapped to the end
    of the colour scale; larger values saturate."""

    smooth = _Float(0.005).tag(sync=True)
    """Display-only blur: sigma of a Gaussian as a share of the map's longer side, in
    [0, 0.25]; 0 paints the raw map. Never changes :attr:`values` or the readout."""

    photo_dim = _Float(0.6).tag(sync=True)
    """How much the photo behind the map is greyed and darkened, in [0, 1] (0: as is),
    so that the heat stands out."""

    gamma = _Float(2.0).tag(sync=True)
    """The heat's alpha follows ``magnitude ** gamma``, in [0.25, 8]: 1 is linear, 2
    keeps weak speckle from veiling the photo."""

    map_only = _Bool(False).tag(sync=True)
    """Paint the map alone (opaque colours, no photo) instead of over the photo."""

    display = _Bytes(b"").tag(sync=True)
    """Computed, do not set: the display map (float32, shape :attr:`shape`) that is
    coloured, :func:`~critpath_widgets.widgets.colormaps.display_map` of the map for
    :attr:`display_sign` and :attr:`smooth`; ``b""`` when ``smooth`` is 0."""

    display_sign = _Unicode("").tag(sync=True)
    """Computed, do not set: the sign mode :attr:`display` was computed for (the browser
    paints the raw map while it differs from :attr:`sign`)."""

    label = _Unicode("").tag(sync=True)
    """Caption of the colour bar."""

    message = _Unicode("").tag(sync=True)
    """Text shown in the widget's message area (errors, status); ``""`` hides it."""

    display_width = _Int(320).tag(sync=True)
    """Width of the picture in CSS pixels (the canvas backing store is this times the
    screen's devicePixelRatio)."""

    # ---- scrubbing: display maps at a grid of sparsities, painted while a slider moves
    stack = _Bytes(b"").tag(sync=True)
    """Set with :meth:`set_stack`: uint8 (K, H, W) display maps (``stack_codec``), one per
    :attr:`stack_levels`, made for :attr:`stack_sign` and :attr:`stack_smooth`."""
    stack_levels = _List(_Float(), default_value=[]).tag(sync=True)
    """The K sparsities of :attr:`stack` (ascending)."""
    stack_ranges = _List(_Float(), default_value=[]).tag(sync=True)
    """Per level ``scale, zero``: a code ``q`` decodes to ``(q - zero) * scale``."""
    stack_sign = _Unicode("").tag(sync=True)
    """The sign mode the stack was made for (no preview under another)."""
    stack_smooth = _Float(-1.0).tag(sync=True)
    """The display blur the stack was made for (no preview under another)."""
    values_sparsity = _Float(-1.0).tag(sync=True)
    """The sparsity of the exact map in :attr:`values` (-1: none, e.g. a baseline)."""
    preview_sparsity = _Float(-1.0).tag(sync=True)
    """The sparsity wanted on screen (jslinked to a slider in the browser; -1: none).
    While it differs from :attr:`values_sparsity` and a fitting stack is loaded, the
    browser paints the nearest stack level; the exact map wins once it is for it."""

    def __init__(self, image: Any = None, values: Any = None, **kwargs: Any) -> None:
        if not ESM_PATH.is_file():
            raise FrontendMissingError(
                f"The AttributionOverlay front end {ESM_PATH} is missing. In a source "
                "checkout run `npm install && npm run build` at the repository root "
                "(or `pip install -e .`, which runs them); otherwise reinstall "
                "critpath-widgets."
            )
        if AttributionOverlay.__dict__["_esm"] is _MISSING_ESM:
            # the bundle was built after this module was imported
            AttributionOverlay._esm = ESM_PATH.read_text(encoding="utf-8")
        if image is not None:
            kwargs["image"] = image_to_png(image)
        if values is not None:
            if isinstance(values, (bytes, bytearray, memoryview)):
                kwargs["values"] = bytes(values)
            else:
                arr = values_to_array(values)
                kwargs["values"] = arr.tobytes()
                kwargs["shape"] = tuple(int(s) for s in arr.shape)
        if "values" in kwargs:
            h, w = kwargs.get("shape", (0, 0))
            n = len(kwargs["values"])
            if n not in (0, int(h) * int(w) * 4):
                raise InputError(
                    f"values hold {n} bytes but shape {h}x{w} needs {int(h) * int(w) * 4} "
                    "(float32); pass a 2-D array instead, or matching values and shape"
                )
        super().__init__(**kwargs)

    # ---- atomic updates ------------------------------------------------------

    def __setattr__(self, name: str, value: Any) -> None:
        # Changing the colormap (list) may append names and LUTs: send them all in
        # one message so the browser never sees a name without its LUT.
        if name in ("colormap", "colormaps") and getattr(self, "comm", None) is not None:
            with self.hold_sync():
                super().__setattr__(name, value)
        else:
            super().__setattr__(name, value)

    def set_data(self, image: Any = None, values: Any = None) -> None:
        """Replace the background image and/or the map; ``None`` leaves one as it is.

        ``image``: a PIL image, a uint8 (H, W, 3) array (also (H, W, 4), (H, W) or
        float in [0, 1]) or image file bytes; stored as RGB PNG.
        ``values``: a 2-D numpy array or torch tensor; stored as float32 bytes together
        with :attr:`shape`. NaN/inf or non-2-D values raise ``InputError`` and change
        nothing. Everything is converted before any trait changes, and sent to the
        browser in one message.
        """
        png = None
        arr = None
        if image is not None:
            png = image_to_png(image)
        if values is not None:
            arr = values_to_array(values)
        with self.hold_sync(), self.hold_trait_notifications():
            if png is not None:
                self.image = png
            if arr is not None:
                self.values = arr.tobytes()
                self.shape = (int(arr.shape[0]), int(arr.shape[1]))

    def set_stack(self, maps: Any, levels: Any, sign: str, smooth: float) -> None:
        """Load display maps (K, H, W) of :attr:`shape` at ``levels``, made for ``sign``
        and ``smooth``, as one message; ``set_stack([], [], "", -1)`` discards them."""
        from .stack_codec import encode_stack

        levels = [float(v) for v in levels]
        maps = [np.asarray(m, np.float32) for m in maps]
        if len(maps) != len(levels):
            raise InputError(f"{len(maps)} maps for {len(levels)} levels")
        if any(m.shape != tuple(self.shape) for m in maps):
            raise InputError(f"stack maps must have the map's shape {tuple(self.shape)}")
        data, ranges = encode_stack(maps)
        with self.hold_sync(), self.hold_trait_notifications():
            self.stack = data
            self.stack_levels = levels
            self.stack_ranges = ranges
            self.stack_sign = sign if maps else ""
            self.stack_smooth = float(smooth) if maps else -1.0

    @property
    def stack_array(self) -> np.ndarray:
        """The loaded stack decoded, (K, H, W) float32 (K = 0 when none)."""
        from .stack_codec import decode_stack

        if not self.stack_levels:
            return np.zeros((0, *self.shape), np.float32)
        return decode_stack(self.stack, self.stack_ranges, tuple(self.shape))

    def set_state(self, sync_data: dict[str, Any]) -> None:
        """Apply a change from the browser; a rejected value is rolled back (traitlets
        does it for ``TraitError``) and the browser is sent Python's values again."""
        try:
            super().set_state(sync_data)
        except InputError:
            keys = [k for k in sync_data if k in self.keys]
            if keys and self.comm is not None:
                self.send_state(keys)
            raise

    # ---- helpers ---------------------------------------------------------------

    @property
    def array(self) -> np.ndarray:
        """The map as a (height, width) float32 array (a copy)."""
        h, w = self.shape
        return np.frombuffer(self.values, dtype="<f4").reshape(h, w).copy()

    @property
    def display_array(self) -> np.ndarray:
        """The map as it is coloured (the shown part, display-blurred), (height, width)."""
        return display_map(self.array, self.sign, self.smooth)

    def vmax(self) -> float:
        """The value at the end of the colour scale for the current sign and clipping
        (of the display map, as the colour bar shows)."""
        return normalised_vmax(self.display_array, self.sign, self.clip_percentile)

    def to_rgba(self) -> np.ndarray:
        """The map layer as (height, width, 4) uint8 RGBA, as the browser paints it
        (before it is scaled onto the image)."""
        return colorize(
            self.display_array,
            _cm.lut(self.colormap),
            sign=self.sign,
            opacity=self.opacity,
            clip_percentile=self.clip_percentile,
            fade=not self.map_only,
            gamma=self.gamma,
        )

    @observe("values", "shape", "sign", "smooth")
    def _update_display(self, change: Any = None) -> None:
        # invariant: display is the display map of (values, display_sign, smooth), or
        # empty (smooth 0, or values not matching shape: the browser then paints raw)
        h, w = self.shape
        data = b""
        if self.smooth > 0 and len(self.values) == h * w * 4 and h * w > 0:
            data = display_map(self.array, self.sign, self.smooth).astype("<f4").tobytes()
        with self.hold_sync():
            self.display = data
            self.display_sign = self.sign if data else ""

    # ---- defaults and validation ---------------------------------------------------

    @default("luts")
    def _default_luts(self) -> bytes:
        return _cm.pack_luts(self.colormaps)

    def _set_colormaps_and_luts(self, names: list[str]) -> None:
        luts = _cm.pack_luts(names)  # may raise before anything changes
        self.set_trait("luts", luts)
        self.set_trait("colormaps", names)

    @validate("colormap")
    def _valid_colormap(self, proposal: Any) -> str:
        name = proposal["value"]
        if name in self.colormaps:
            return name
        try:
            _cm.lut(name)
        except InputError as exc:
            raise _bad(str(exc)) from None
        self._set_colormaps_and_luts([*self.colormaps, name])
        return name

    @validate("colormaps")
    def _valid_colormaps(self, proposal: Any) -> list[str]:
        names = list(dict.fromkeys(proposal["value"]))
        current = self.colormap
        if current not in names:
            names.append(current)
        try:
            luts = _cm.pack_luts(names)
        except InputError as exc:
            raise _bad(f"colormaps: {exc}") from None
        self.set_trait("luts", luts)
        return names

    @validate("opacity")
    def _valid_opacity(self, proposal: Any) -> float:
        v = proposal["value"]
        if not (math.isfinite(v) and 0.0 <= v <= 1.0):
            raise _bad(f"opacity must be in [0, 1], not {v!r}")
        return v

    @validate("sign")
    def _valid_sign(self, proposal: Any) -> str:
        v = proposal["value"]
        if v not in SIGN_MODES:
            raise _bad(f"sign must be one of {', '.join(SIGN_MODES)}, not {v!r}")
        return v

    @validate("clip_percentile")
    def _valid_clip(self, proposal: Any) -> float:
        v = proposal["value"]
        if not (math.isfinite(v) and 0.0 < v <= 100.0):
            raise _bad(f"clip_percentile must be in (0, 100], not {v!r}")
        return v

    @validate("smooth")
    def _valid_smooth(self, proposal: Any) -> float:
        v = proposal["value"]
        if not (math.isfinite(v) and 0.0 <= v <= 0.25):
            raise _bad(f"smooth must be in [0, 0.25] (a share of the map's side), not {v!r}")
        return v

    @validate("photo_dim")
    def _valid_dim(self, proposal: Any) -> float:
        v = proposal["value"]
        if not (math.isfinite(v) and 0.0 <= v <= 1.0):
            raise _bad(f"photo_dim must be in [0, 1], not {v!r}")
        return v

    @validate("gamma")
    def _valid_gamma(self, proposal: Any) -> float:
        v = proposal["value"]
        if not (math.isfinite(v) and 0.25 <= v <= 8.0):
            raise _bad(f"gamma must be in [0.25, 8], not {v!r}")
        return v

    @validate("display_width")
    def _valid_width(self, proposal: Any) -> int:
        v = proposal["value"]
        if not 16 <= v <= 8192:
            raise _bad(f"display_width must be between 16 and 8192 CSS pixels, not {v!r}")
        return v

    @validate("shape")
    def _valid_shape(self, proposal: Any) -> tuple[int, int]:
        h, w = proposal["value"]
        if h < 0 or w < 0:
            raise _bad(f"shape must be (height, width) with no negative side, not {(h, w)!r}")
        return (h, w)

    @validate("image")
    def _valid_image(self, proposal: Any) -> bytes:
        v = proposal["value"]
        if v and not _is_png_bytes(v):
            raise _bad("image must be PNG bytes; use set_data(image=...) for other formats")
        return v


def _is_png_bytes(x: Any) -> bool:
    return isinstance(x, (bytes, bytearray)) and bytes(x[:8]) == _PNG_SIGNATURE


__all__ = [
    "AttributionOverlay",
    "FrontendMissingError",
    "SIGN_MODES",
    "colorize",
    "image_to_png",
    "normalised_vmax",
    "values_to_array",
]
