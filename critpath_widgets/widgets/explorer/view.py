"""The explorer's view: controls, layout, message area, progress bar and the result panels.

Top to bottom: a row of controls (sample photo, upload, target class), a row of
controls (method, sparsity slider, scope), a progress bar with a Cancel button (shown
during the long methods), a message area, the pathway-gradient overlay beside the
plain-gradient overlay, and the :class:`LayerContributions` panel.

The view only renders: it shows what the kernel computed and reports the user's edits
through its controls (observed by :class:`PathwayExplorer`). The CSS classes
(``critpath-*``) are the hooks the browser tests use.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Sequence
from typing import Any

import ipywidgets as widgets
import numpy as np
from PIL import Image

from ...methods import method_label
from ..layers import LayerContributions
from ..overlay import AttributionOverlay
from .targets import class_labels

#: The sparsity slider's upper end (removing every neuron leaves no pathway).
SPARSITY_MAX = 0.99
#: Progress bar updates are at least this many seconds apart (the last one always shows).
PROGRESS_INTERVAL_S = 0.1

#: The photo picker's value for the one picture that is not a sample (an upload, or a
#: picture given from Python); its label names it. No sample is called this.
OTHER_PICTURE = "\x00picture"

#: Every control's tooltip (the ``title`` the browser shows on hover).
TIPS = {
    "photo": "A sample photo to explain, or the picture you uploaded or gave from Python",
    "upload": "Upload a photo (JPEG, PNG, ...) to explain; the count is the uploaded "
    "files on show (0 while a sample is shown)",
    "target": "The class whose logit is explained. The 5 most probable classes come "
    "first, with probabilities; type part of any class name and press Enter",
    "method": "How each neuron's contribution to the target logit is scored; the "
    "pathway keeps the highest scored neurons (random: a baseline)",
    "sparsity": "Share of neurons the pathway removes (0.70: the 30% with the highest "
    "scores are kept); the map is the gradient through the kept neurons",
    "scope": "Where the sparsity threshold applies",
    "scope_global": "global: one threshold over the scores of all sites together",
    "scope_layer": "per layer: the same share of neurons is removed at every site",
    "cancel": "Stop the running computation; the previous result stays",
    "refresh": "Compute the view again from the model as it is now (after an edit; an "
    "idle explorer also notices edits by itself within 2 s)",
}

#: One sentence per control group, shown under a collapsed "?" line.
HELP = (
    (
        "target",
        "the class whose logit is explained (the most probable 5 first; type "
        "to search every class).",
    ),
    (
        "method",
        "how each neuron's contribution to the target logit is scored; the "
        "critical pathway keeps the neurons with the highest scores.",
    ),
    (
        "sparsity",
        "the share of neurons the pathway removes; the map is the gradient "
        "of the target logit through the neurons that remain.",
    ),
    (
        "scope",
        "global uses one threshold over all sites together; per layer removes "
        "the same share at every site.",
    ),
    ("photo", "a sample photo, or a picture you upload (the picker lists it)."),
)


def described(label: str, tip: str) -> str:
    """A control's description as HTML whose hover title is ``tip``: ipywidgets 8's
    dropdown, combobox and text views put ``tooltip`` nowhere once a description is set,
    so the description carries it (the ``tooltip`` trait is set as well)."""
    return f'<span title="{esc(tip)}">{esc(label)}</span>'


def help_html() -> str:
    """The collapsed help under the controls: one line per control group."""
    items = "".join(f"<li><b>{esc(k)}</b>: {esc(v)}</li>" for k, v in HELP)
    return (
        '<details style="font-size:12px;color:#555;margin:2px 0">'
        '<summary style="cursor:pointer">? What the controls mean</summary>'
        f'<ul style="margin:2px 0 2px 18px;padding:0">{items}</ul></details>'
    )


_MESSAGE_COLORS = {
    "info": ("#1b5e20", "#eef7ee"),
    "busy": ("#0d47a1", "#eef3fb"),
    "warning": ("#8a5300", "#fff6e5"),
    "error": ("#b00020", "#fdecee"),
}


def esc(text: Any) -> str:
    """``text`` as HTML-escaped text (messages quote user input such as file names)."""
    return html.escape(str(text))


def message_html(text_html: str, kind: str) -> str:
    """The message box's HTML: ``kind`` (info, busy, warning, error) sets the colours."""
    fg, bg = _MESSAGE_COLORS.get(kind, _MESSAGE_COLORS["info"])
    return (
        f'<div class="critpath-message-{kind}" data-kind="{kind}" style="padding:4px 8px;'
        f"border-left:4px solid {fg};background:{bg};color:{fg};white-space:pre-wrap;"
        f'font-size:13px">{text_html}</div>'
    )


def summary_html(
    e: Any, target: int, name: str, p: float, summary: Sequence[Any], seconds: float
) -> str:
    """The message after a result: class, method, scope, sparsity, pathway size, logits."""
    try:
        kept = sum(int(s.kept) for s in summary)
        total = sum(int(s.neurons) for s in summary)
        kept_txt = f"the pathway keeps {kept:,} of {total:,} neurons ({kept / max(total, 1):.1%})"
    except Exception:  # noqa: BLE001
        kept_txt = "pathway selected"
    try:
        y = float(e.logits[0, target])
        yp = float(e.pathway_logits[0, target])
        logit_txt = f"; target logit {yp:.3g} through the pathway vs {y:.3g} in the full network"
    except Exception:  # noqa: BLE001
        logit_txt = ""
    return (
        f"<b>{esc(name)}</b> (p = {p:.1%}), "
        f"{esc(method_label(e.method))}, {esc(e.scope)} scope, "
        f"sparsity {float(e.sparsity):.2f}: {kept_txt}{logit_txt}. ({seconds * 1000:.0f} ms)"
    )


def _row(children: list[widgets.Widget], align: str = "center") -> widgets.HBox:
    """A row that wraps its children onto new lines when the column is narrow."""
    layout = widgets.Layout(flex_flow="row wrap", align_items=align, max_width="100%")
    return widgets.HBox(children, layout=layout)


class ExplorerView(widgets.VBox):
    """The explorer's widgets and how results, messages and progress are shown."""

    def __init__(
        self, methods: Sequence[str], sample_names: Sequence[str], photo_ok: bool, **kwargs: Any
    ) -> None:
        self._message_text = ""
        self._last_progress = 0.0
        self.photo_picker = widgets.Dropdown(
            options=list(sample_names),
            value=None,
            description=described("photo", TIPS["photo"]),
            description_allow_html=True,
            tooltip=TIPS["photo"],
            layout=widgets.Layout(width="220px"),
            style={"description_width": "40px"},
        )
        self.photo_picker.add_class("critpath-photo")
        self._sample_names = list(sample_names)
        self.upload = widgets.FileUpload(
            accept="image/*",
            multiple=False,
            description="Upload",
            icon="upload",
            tooltip=TIPS["upload"],
        )
        self.upload.add_class("critpath-upload")
        self.photo_picker.disabled = not photo_ok
        self.upload.disabled = not photo_ok
        #: every class, most probable first; typed text is resolved by the explorer
        self.target_picker = widgets.Combobox(
            options=[],
            value="",
            placeholder="type to search all classes",
            ensure_option=False,
            continuous_update=False,
            description=described("target", TIPS["target"]),
            description_allow_html=True,
            tooltip=TIPS["target"],
            layout=widgets.Layout(width="300px"),
            style={"description_width": "45px"},
        )
        self.target_picker.add_class("critpath-target")
        self._target_labels: dict[str, int] = {}
        self._target_key: tuple = ()
        self.method_picker = widgets.Dropdown(
            options=[(method_label(m), m) for m in methods],
            description=described("method", TIPS["method"]),
            description_allow_html=True,
            tooltip=TIPS["method"],
            layout=widgets.Layout(width="260px"),
            style={"description_width": "60px"},
        )
        self.method_picker.add_class("critpath-method")
        self.sparsity_slider = widgets.FloatSlider(
            min=0.0,
            max=SPARSITY_MAX,
            step=0.01,
            value=0.7,
            continuous_update=True,
            description=described("sparsity", TIPS["sparsity"]),
            description_allow_html=True,
            tooltip=TIPS["sparsity"],
            readout_format=".2f",
            layout=widgets.Layout(width="330px"),
            style={"description_width": "55px"},
        )
        self.sparsity_slider.add_class("critpath-sparsity")
        self.scope_buttons = widgets.ToggleButtons(
            options=[("global", "global"), ("per layer", "layer")],
            description=described("scope", TIPS["scope"]),
            description_allow_html=True,
            tooltips=[TIPS["scope_global"], TIPS["scope_layer"]],
            tooltip=TIPS["scope"],
            style={"button_width": "80px", "description_width": "45px"},
            # ipywidgets lays toggle buttons out as a block: the label would sit above
            layout=widgets.Layout(display="flex", align_items="center"),
        )
        self.scope_buttons.add_class("critpath-scope")
        self.progress = widgets.IntProgress(
            min=0, max=1, value=0, description="", layout=widgets.Layout(width="300px")
        )
        self.progress_label = widgets.Label("")
        self.cancel_button = widgets.Button(
            description="Cancel",
            icon="stop",
            button_style="warning",
            disabled=True,
            tooltip=TIPS["cancel"],
        )
        self.refresh_button = widgets.Button(
            description="Refresh",
            icon="refresh",
            tooltip=TIPS["refresh"],
            layout=widgets.Layout(width="auto"),
        )
        self.refresh_button.add_class("critpath-refresh")
        self.progress_box = widgets.HBox(
            [self.progress, self.progress_label, self.cancel_button],
            layout=widgets.Layout(display="none", align_items="center"),
        )
        self.message = widgets.HTML("")
        self.message.add_class("critpath-message")
        self.help = widgets.HTML(help_html(), layout=widgets.Layout(max_width="100%"))
        self.help.add_class("critpath-help")

        # a fixed width that still shrinks to a narrow column (the canvas follows its box)
        overlay_layout = {
            "flex": "0 1 auto",
            "width": "336px",
            "max_width": "100%",
            "margin": "0 16px 0 0",
        }
        # the overlays' defaults are the readable style of the CLI figure and save()
        # (MapStyle(); tests/test_report.py checks they agree)
        self.pathway_overlay = AttributionOverlay(
            label="pathway gradient", layout=widgets.Layout(**overlay_layout)
        )
        self.pathway_overlay.add_class("critpath-pathway-overlay")
        self.gradient_overlay = AttributionOverlay(
            label="plain gradient", layout=widgets.Layout(**overlay_layout)
        )
        self.gradient_overlay.add_class("critpath-gradient-overlay")
        self.layers = LayerContributions()
        self.layers.layer_figure.add_class("critpath-layer-chart")
        for box in self.layers.children:
            # the layer panel's rows (channel chart beside the site map) wrap too
            if isinstance(box, widgets.HBox):
                box.layout.flex_flow = "row wrap"

        row1 = _row([self.photo_picker, self.upload, self.target_picker, self.refresh_button])
        row2 = _row([self.method_picker, self.sparsity_slider, self.scope_buttons])
        maps = _row([self.pathway_overlay, self.gradient_overlay], align="flex-start")
        # the explorer fits the notebook column: rows wrap, nothing sets a total width
        kwargs.setdefault("layout", widgets.Layout(max_width="100%"))
        children = [row1, row2, self.help, self.progress_box, self.message, maps, self.layers]
        super().__init__(children=children, **kwargs)
        self.add_class("critpath-explorer")
        self._boxes = [row1, row2, maps, self.progress_box]

    @property
    def message_text(self) -> str:
        """The message area's text without markup."""
        return self._message_text

    # ---------------------------------------------------------------- messages
    def show_message(self, text_html: str, kind: str) -> None:
        """Show ``text_html`` (escaped by the caller) in the message area."""
        self._message_text = html.unescape(re.sub(r"<[^>]+>", "", text_html))
        self.message.value = message_html(text_html, kind)

    # ---------------------------------------------------------------- progress
    def show_progress(self, method: str) -> None:
        """Show the progress bar and Cancel button for a long ``method``."""
        with self.progress.hold_sync():
            self.progress.value = 0
            self.progress.max = 1
        self.progress_label.value = ""
        self.cancel_button.disabled = False
        self.progress_box.layout.display = "flex"
        self.show_message(
            f"Computing {esc(method_label(method))} (this takes a while; Cancel stops it)...",
            "busy",
        )

    def report_progress(self, done: int, total: int) -> None:
        """Move the progress bar (throttled: a message per step would flood the front end)."""
        now = time.monotonic()
        if now - self._last_progress >= PROGRESS_INTERVAL_S or done >= total:
            self._last_progress = now
            with self.progress.hold_sync():
                self.progress.max = max(int(total), 1)
                self.progress.value = min(int(done), int(total))
            self.progress_label.value = f"{int(done)} / {int(total)}"

    def hide_progress(self) -> None:
        """Hide the progress bar and disable Cancel (no message when nothing changes)."""
        if self.progress_box.layout.display != "none":
            self.progress_box.layout.display = "none"
        if not self.cancel_button.disabled:
            self.cancel_button.disabled = True

    # ----------------------------------------------------------------- results
    def set_target_options(self, target: int, entry: Any | None, names: list[str]) -> None:
        """List every class in the target picker (the picture's most probable ones first,
        with probabilities) and show ``target``'s label; ``entry`` is the picture's cache
        entry, ``names`` the class names. Options are sent only when they change."""
        ready = entry is not None and entry.ready
        # the picture and its top classes with their probabilities (they change when
        # the model does) decide the options
        key = (len(names), None)
        if ready:
            top = [int(i) for i in entry.top]
            key = (len(names), entry.id, tuple(top), np.asarray(entry.probs)[top].tobytes())
        if key != self._target_key or not self._target_labels:
            probs = entry.probs if ready else None
            labels, index = class_labels(names, probs, entry.top if ready else [])
            self._target_labels, self._target_key = index, key
            if list(self.target_picker.options) != labels:
                self.target_picker.options = labels
        self.target_picker.value = self.target_label(target)

    def target_label(self, target: int) -> str:
        """The picker's label of class ``target`` (with its probability when in the top)."""
        # labels come in picker order: a top class's first label carries its probability
        for label, i in self._target_labels.items():
            if i == target:
                return label
        return f"class {target}"

    def picked_target(self, text: str) -> int | None:
        """The class index of a label of the picker (``None`` for other typed text)."""
        return self._target_labels.get(text)

    def take_upload(self, files: Any) -> tuple[bytes, str] | None:
        """The last uploaded file as (content, name); ``None`` when there is none. The
        upload control keeps it (its count says an uploaded file is on show) until
        :meth:`show_photo_choice` clears it for another picture."""
        if not files:
            return None
        item = files[-1]
        content = item["content"] if isinstance(item, dict) else item.content
        name = item["name"] if isinstance(item, dict) else getattr(item, "name", "")
        return bytes(content), name or "upload"

    def show_photo_choice(self, sample: str | None, other: dict | None) -> None:
        """Show in the photo picker and upload button which picture is current: a sample
        (``other`` the non-sample picture still offered), or ``other`` itself (a dict
        with ``label`` and ``upload``, the upload control's value or ``()``). Call it
        quietly."""
        options = [(n, n) for n in self._sample_names]
        if other is not None:
            options.append((other["label"], OTHER_PICTURE))
        with self.photo_picker.hold_sync():
            if list(self.photo_picker.options) != options:
                self.photo_picker.options = options
            self.photo_picker.value = (
                sample if sample is not None else (OTHER_PICTURE if other is not None else None)
            )
        upload = other["upload"] if sample is None and other is not None else ()
        if tuple(self.upload.value) != tuple(upload):
            try:
                self.upload.value = upload
            except Exception:  # noqa: BLE001 - the count is cosmetic
                pass

    def show_maps(
        self,
        image: Image.Image | None,
        pathway: np.ndarray,
        pathway_label: str,
        gradient: np.ndarray | None,
        gradient_label: str,
        target: str | None = None,
    ) -> None:
        """Show new maps; ``image`` (``None``: unchanged) and ``gradient`` (``None``:
        unchanged) are sent only when they changed. ``target`` (the class name) is
        added to the pathway's label when the label does not name it, so that every
        map says method, scope, sparsity and target."""
        if target and repr(target) not in pathway_label and target not in pathway_label:
            pathway_label = f"{pathway_label} · target {target!r}"
        with self.pathway_overlay.hold_sync():
            self.pathway_overlay.set_data(image=image, values=pathway)
            self.pathway_overlay.label = pathway_label
        if gradient is not None:
            with self.gradient_overlay.hold_sync():
                self.gradient_overlay.set_data(image=image, values=gradient)
                self.gradient_overlay.label = gradient_label

    def close(self) -> None:
        """Close every control, panel and box, then the view itself."""
        # getattr: close() also runs (from __del__) on a view whose construction failed
        for name in (*self._CHILDREN, "_boxes"):
            value = getattr(self, name, None)
            for w in value if isinstance(value, list) else [value]:
                if w is not None:
                    w.close()
        super().close()

    _CHILDREN = (
        "pathway_overlay",
        "gradient_overlay",
        "layers",
        "photo_picker",
        "upload",
        "target_picker",
        "method_picker",
        "sparsity_slider",
        "scope_buttons",
        "progress",
        "progress_label",
        "cancel_button",
        "refresh_button",
        "message",
        "help",
    )


__all__ = [
    "ExplorerView",
    "OTHER_PICTURE",
    "SPARSITY_MAX",
    "TIPS",
    "esc",
    "message_html",
    "summary_html",
]


def notices_html(e: Any) -> str:
    """What a reader of the map must know, as lines to append to the summary: why a map
    is blank, and which sites are not piecewise linear."""
    notes = list(e.notices)
    if e.nonlinear_kinds:
        notes.append(
            f"Sites of kinds {', '.join(e.nonlinear_kinds)} are not piecewise linear: the "
            "map is the gradient through the kept neurons, not the exact local linear model "
            "of the paper."
        )
    return "".join(f"<br>{esc(n)}" for n in notes)
