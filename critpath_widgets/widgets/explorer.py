"""PathwayExplorer: the composite widget (photo, target, method, sparsity, scope).

Layout, top to bottom: a row of controls (sample photo, upload, target class, method,
sparsity slider, scope), a progress bar with a Cancel button (shown during the long
methods), a message area, the pathway-gradient overlay beside the plain-gradient
overlay, and the :class:`LayerContributions` panel.

Threading model
---------------
Every computation runs in ONE daemon worker thread; the kernel's main thread only
records requests, so the kernel stays responsive while a method runs. Each change of
an input (photo, target, method, sparsity, scope) makes a *request* carrying a new
generation number. The worker runs one request at a time; requests arriving while it
is busy replace the pending one (only the latest pending request runs next) and a
result whose generation is no longer the latest is dropped, never shown.

The scored Explanation is cached per (image, target, method, scope), so moving the
sparsity slider costs one masked pass (``Explanation.at_sparsity``), not a re-scoring.
The plain gradient is cached per (image, target).

Long methods (neuron_intgrad, greedy) get a progress callback: it moves the progress
bar and raises :class:`critpath_widgets.Cancelled` when Cancel was clicked, or when a
newer request needs a different scoring (another image, target, method or scope; a
new sparsity alone does not cancel, since it reuses the scores being computed).

Errors (bad uploads, models without recordable sites, cancellations, ...) are shown in
the message area and logged; the previous view stays and the controls keep working.
"""

from __future__ import annotations

import html
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np
import torch
import traitlets
from PIL import Image

from ..errors import Cancelled, CritpathError, InputError
from .images import as_rgb_image
from .layers import LayerContributions
from .overlay import AttributionOverlay

log = logging.getLogger(__name__)

METHOD_LABELS = {
    "neuron_mct": "NeuronMCT (Taylor)",
    "neuron_intgrad": "NeuronIntGrad (slow)",
    "greedy": "Greedy (slow)",
    "random": "Random",
}
LONG_METHODS = frozenset({"neuron_intgrad", "greedy"})
DEFAULT_METHODS = ("neuron_mct", "neuron_intgrad", "greedy", "random")
SCOPES = ("global", "layer")
TOP_K = 5
#: Scored explanations kept in the cache (each holds one score per neuron).
CACHE_SIZE = 6
#: Images kept (decoded and preprocessed) besides the current one.
IMAGE_CACHE_SIZE = 6
SPARSITY_MAX = 0.99
#: The worker thread exits after this many idle seconds (restarted on the next request).
WORKER_IDLE_EXIT_S = 60.0


class _Superseded(Cancelled):
    """A long computation was stopped because a newer request needs other scores."""


@dataclass
class _Request:
    gen: int
    image_id: int
    target: int | None  # None: the predicted class
    method: str
    scope: str
    sparsity: float

    def scoring(self) -> tuple:
        return (self.image_id, self.target, self.method, self.scope)


@dataclass
class _ImageEntry:
    id: int
    source: Any  # bytes, PIL image, array, path or tensor, as given
    sample: str | None = None
    ready: bool = False
    x: torch.Tensor | None = None  # (1, C, H, W) model input
    display: Image.Image | None = None
    probs: np.ndarray | None = None  # softmax of the logits, (classes,)
    predicted: int = 0
    name: str = ""
    failed: bool = False
    extra: dict = field(default_factory=dict)


def _esc(text: Any) -> str:
    return html.escape(str(text))


def _message_html(text: str, kind: str) -> str:
    colors = {
        "info": ("#1b5e20", "#eef7ee"),
        "busy": ("#0d47a1", "#eef3fb"),
        "warning": ("#8a5300", "#fff6e5"),
        "error": ("#b00020", "#fdecee"),
    }
    fg, bg = colors.get(kind, colors["info"])
    return (
        f'<div class="critpath-message-{kind}" data-kind="{kind}" style="padding:4px 8px;'
        f"border-left:4px solid {fg};background:{bg};color:{fg};white-space:pre-wrap;"
        f'font-size:13px">{text}</div>'
    )


def _reduce_channels(g: torch.Tensor, reduce: str, x: torch.Tensor | None = None) -> np.ndarray:
    """(1, C, H, W) -> (H, W) float32, the same reductions as ``saliency_map``."""
    from ..engine import reduce_channels

    out = reduce_channels(g.detach().float(), reduce, None if x is None else x.detach().float())
    return out[0].cpu().numpy().astype(np.float32)


def _tensor_to_display(x: torch.Tensor) -> Image.Image:
    """A model input (1, C, H, W) -> RGB image, each channel min-max scaled."""
    t = x.detach()[0].float().cpu()
    if t.shape[0] == 1:
        t = t.repeat(3, 1, 1)
    t = t[:3]
    lo = t.flatten(1).min(1).values[:, None, None]
    hi = t.flatten(1).max(1).values[:, None, None]
    t = (t - lo) / (hi - lo).clamp_min(1e-12)
    arr = (t.permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


class PathwayExplorer(widgets.VBox):
    """Interactive critical-pathway explorer.

    Parameters
    ----------
    model:
        ``None`` for the offline default (``load_model()``), a
        :class:`critpath_widgets.ModelBundle`, or any ``torch.nn.Module``.
    image:
        ``None`` for the sample photo "coffee" (or the first sample), a sample name,
        a PIL image, an ``(H, W[, C])`` array, image file bytes, a path, or an already
        preprocessed tensor ``(C, H, W)`` / ``(1, C, H, W)``.
    preprocess:
        ``PIL image -> (C, H, W) tensor``. Taken from the bundle for the default
        model; required for a plain ``nn.Module`` unless ``image`` is a tensor.
    categories:
        Class names (default: the bundle's, else ``"class i"``).
    crop:
        Optional ``PIL -> PIL`` giving the picture the model sees, shown under the
        overlays (the bundle's ``crop`` for the default model). Without it the
        model input itself is shown, min-max scaled per channel.
    steps:
        Steps of NeuronIntGrad.
    reduce:
        Channel reduction of the displayed maps ("max_abs", "abs_sum", "x_input").
    **traits:
        Initial ``method``, ``sparsity``, ``target``, ``scope``; other keywords go to
        ``ipywidgets.VBox``.

    Traits ``method``, ``sparsity``, ``target`` (class index) and ``scope`` are kept in
    sync with the controls both ways. ``explanation`` is the Explanation on show.
    """

    method = traitlets.Unicode("neuron_mct", help="pathway selection method")
    sparsity = traitlets.Float(0.7, min=0.0, max=SPARSITY_MAX, help="fraction removed")
    target = traitlets.Int(0, help="class index whose logit is explained")
    scope = traitlets.Enum(SCOPES, default_value="global", help="global or per-layer")

    def __init__(
        self,
        model=None,
        image=None,
        preprocess=None,
        categories=None,
        *,
        crop=None,
        steps: int = 10,
        reduce: str = "max_abs",
        **kwargs,
    ):
        trait_values = {
            k: kwargs.pop(k) for k in ("method", "sparsity", "target", "scope") if k in kwargs
        }
        # ---- state (before any trait is touched) ---------------------------------
        self._cond = threading.Condition(threading.RLock())
        self._local = threading.local()
        self._gen = 0
        self._done_gen = 0
        self._cancel_gen = 0
        self._pending: _Request | None = None
        self._running: _Request | None = None
        self._worker: threading.Thread | None = None
        self._closed = False
        self._entries: OrderedDict[int, _ImageEntry] = OrderedDict()
        self._next_image_id = 0
        self._image_id = -1
        self._good_image_id = -1
        self._target_auto = "target" not in trait_values
        self._cache: OrderedDict[tuple, Any] = OrderedDict()
        self._grad_cache: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._explanation = None
        self._shown: dict | None = None
        self._shown_image_id = -1
        self._last_error: BaseException | None = None
        self._message_text = ""
        self._steps = int(steps)
        self._reduce = reduce
        self._last_progress = 0.0
        self._auto_site = True
        self.stats = {"explain": 0, "at_sparsity": 0, "reused": 0, "gradient": 0, "shown": 0}
        self.last_timing: dict[str, float] = {}

        # ---- model ---------------------------------------------------------------
        self._setup_error: BaseException | None = None
        self._explainer = None
        self._model = None
        self._preprocess = preprocess
        self._crop = crop
        self._categories = list(categories) if categories is not None else None
        self._bundle_name = ""
        self._default_model = model is None
        try:
            self._setup_model(model)
        except CritpathError as err:
            self._setup_error = err
            log.warning("PathwayExplorer: %s", err)
        self._methods = tuple(getattr(self._explainer, "methods", DEFAULT_METHODS))
        tensor_image = isinstance(image, torch.Tensor)
        if self._model is not None and self._preprocess is None and not tensor_image:
            raise InputError(
                "preprocess is required with a plain nn.Module (PIL image -> tensor), "
                "unless image is an already preprocessed tensor"
            )

        # ---- controls ------------------------------------------------------------
        try:
            from ..models import sample_images

            self._sample_names = list(sample_images())
        except Exception:  # noqa: BLE001 - samples are a convenience
            log.debug("sample_images() failed", exc_info=True)
            self._sample_names = []
        self.photo_picker = widgets.Dropdown(
            options=self._sample_names,
            value=None,
            description="photo",
            layout=widgets.Layout(width="190px"),
            style={"description_width": "40px"},
        )
        self.upload = widgets.FileUpload(
            accept="image/*", multiple=False, description="Upload", icon="upload"
        )
        photo_ok = self._preprocess is not None
        self.photo_picker.disabled = not photo_ok
        self.upload.disabled = not photo_ok
        self.target_picker = widgets.Dropdown(
            options=[],
            description="target",
            layout=widgets.Layout(width="290px"),
            style={"description_width": "45px"},
        )
        self.method_picker = widgets.Dropdown(
            options=[(METHOD_LABELS.get(m, m), m) for m in self._methods],
            description="method",
            layout=widgets.Layout(width="260px"),
            style={"description_width": "60px"},
        )
        self.sparsity_slider = widgets.FloatSlider(
            min=0.0,
            max=SPARSITY_MAX,
            step=0.01,
            value=0.7,
            continuous_update=True,
            description="sparsity",
            readout_format=".2f",
            layout=widgets.Layout(width="330px"),
            style={"description_width": "55px"},
        )
        self.sparsity_slider.add_class("critpath-sparsity")
        self.scope_buttons = widgets.ToggleButtons(
            options=[("global", "global"), ("per layer", "layer")],
            description="scope",
            style={"button_width": "80px", "description_width": "45px"},
        )
        self.progress = widgets.IntProgress(
            min=0, max=1, value=0, description="", layout=widgets.Layout(width="300px")
        )
        self.progress_label = widgets.Label("")
        self.cancel_button = widgets.Button(
            description="Cancel", icon="stop", button_style="warning", disabled=True
        )
        self.cancel_button.on_click(lambda _b: self.cancel())
        self.progress_box = widgets.HBox(
            [self.progress, self.progress_label, self.cancel_button],
            layout=widgets.Layout(display="none", align_items="center"),
        )
        self.message = widgets.HTML("")
        self.message.add_class("critpath-message")

        # ---- panels --------------------------------------------------------------
        overlay_layout = {"flex": "0 0 auto", "width": "336px", "margin": "0 16px 0 0"}
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

        row1 = widgets.HBox(
            [self.photo_picker, self.upload, self.target_picker],
            layout=widgets.Layout(flex_flow="row wrap", align_items="center"),
        )
        row2 = widgets.HBox(
            [self.method_picker, self.sparsity_slider, self.scope_buttons],
            layout=widgets.Layout(flex_flow="row wrap", align_items="center"),
        )
        maps = widgets.HBox(
            [self.pathway_overlay, self.gradient_overlay],
            layout=widgets.Layout(flex_flow="row wrap", align_items="flex-start"),
        )
        super().__init__(
            children=[row1, row2, self.progress_box, self.message, maps, self.layers], **kwargs
        )
        self.add_class("critpath-explorer")
        self._boxes = [row1, row2, maps, self.progress_box]

        # ---- initial trait values, links, observers --------------------------------
        with self._quiet():
            for name in ("method", "scope", "sparsity", "target"):
                if name in trait_values:
                    setattr(self, name, trait_values[name])
        self._links = [
            widgets.link((self, "method"), (self.method_picker, "value")),
            widgets.link((self, "sparsity"), (self.sparsity_slider, "value")),
            widgets.link((self, "scope"), (self.scope_buttons, "value")),
        ]
        self.target_picker.observe(self._on_target_picker, "value")
        self.photo_picker.observe(self._on_photo_picker, "value")
        self.upload.observe(self._on_upload, "value")
        if self._setup_error is not None:
            self._show_message(f"<b>Error:</b> {_esc(self._setup_error)}", "error")
            self._last_error = self._setup_error

        # ---- first image -----------------------------------------------------------
        if image is None and photo_ok and self._sample_names:
            image = "coffee" if "coffee" in self._sample_names else self._sample_names[0]
        if image is not None:
            self.set_image(image, keep_target=not self._target_auto)

    # ======================================================================= setup
    def _setup_model(self, model) -> None:
        from ..engine import PathwayExplainer

        if model is None:
            from ..models import load_model

            model = load_model()
        if hasattr(model, "model") and hasattr(model, "preprocess"):  # a ModelBundle
            bundle = model
            self._model = bundle.model
            if self._preprocess is None:
                self._preprocess = bundle.preprocess
            if self._crop is None:
                self._crop = getattr(bundle, "crop", None)
            if self._categories is None and getattr(bundle, "categories", None):
                self._categories = list(bundle.categories)
            self._bundle_name = str(getattr(bundle, "name", ""))
        elif isinstance(model, torch.nn.Module):
            self._model = model
        else:
            raise InputError(
                "model must be None, a ModelBundle or a torch.nn.Module, "
                f"not {type(model).__name__}"
            )
        self._explainer = PathwayExplainer(self._model)

    # ================================================================= public API
    @property
    def explanation(self):
        """The Explanation currently on show (``None`` before the first result)."""
        return self._explanation

    @property
    def explainer(self):
        """The :class:`PathwayExplainer` (``None`` if the model could not be set up)."""
        return self._explainer

    @property
    def model(self):
        return self._model

    @property
    def last_error(self) -> BaseException | None:
        """The error shown in the message area by the last request (``None`` if it worked)."""
        return self._last_error

    @property
    def message_text(self) -> str:
        """The message area's text without markup."""
        return self._message_text

    @property
    def busy(self) -> bool:
        with self._cond:
            return self._running is not None or self._pending is not None

    @property
    def display_image(self) -> Image.Image | None:
        """The picture under the overlays (what the model sees)."""
        entry = self._entries.get(self._shown_image_id)
        return entry.display if entry is not None else None

    def category(self, index: int) -> str:
        if self._categories is not None and 0 <= index < len(self._categories):
            return str(self._categories[index])
        return f"class {index}"

    def set_image(self, image, name: str | None = None, *, keep_target: bool = False) -> None:
        """Show another picture: a sample name, PIL image, array, file bytes, path or
        preprocessed tensor. Decoding happens in the worker; a bad picture shows a
        message and the previous one stays. The target follows the new prediction
        unless ``keep_target``."""
        sample = None
        if isinstance(image, str) and image in self._sample_names and not Path(image).is_file():
            sample = image
        if isinstance(image, torch.Tensor):
            if image.ndim == 3:
                image = image.unsqueeze(0)
            if image.ndim != 4 or image.shape[0] != 1:
                raise InputError(
                    f"an image tensor must be (C, H, W) or (1, C, H, W), got {tuple(image.shape)}"
                )
        elif self._preprocess is None and self._model is not None:
            raise InputError("this explorer has no preprocess: pass a preprocessed tensor")
        self._next_image_id += 1
        entry = _ImageEntry(self._next_image_id, image, sample=sample, name=name or sample or "")
        with self._cond:
            self._entries[entry.id] = entry
            self._image_id = entry.id
            if not keep_target:
                self._target_auto = True
            self._trim_images()
        with self._quiet():
            self.photo_picker.value = sample
        label = sample or name or "the picture"
        self._show_message(f"Loading {_esc(label)}...", "busy")
        self._submit()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the view reflects the current traits and image.

        Returns ``True`` once the latest request has been handled: its result is on
        show, or its error / cancellation is in the message area (see
        :attr:`last_error`). Raises ``TimeoutError`` if that takes longer than
        ``timeout`` seconds (``None``: no limit). Do not call it from an observer that
        the worker thread runs.
        """
        with self._cond:
            ok = self._cond.wait_for(self._settled, timeout)
        if not ok:
            raise TimeoutError(f"PathwayExplorer did not settle within {timeout} s")
        return True

    def cancel(self) -> None:
        """Cancel the running or pending long computation (the Cancel button)."""
        with self._cond:
            if self._running is None and self._pending is None:
                return
            self._cancel_gen = self._gen
        self._show_message("Cancelling...", "busy")

    def close(self) -> None:
        """Stop the worker thread and close the widget and its children."""
        with self._cond:
            self._closed = True
            self._cancel_gen = self._gen
            self._pending = None
            self._cond.notify_all()
        for link in getattr(self, "_links", []):
            try:
                link.unlink()
            except Exception:  # noqa: BLE001
                pass
        for name in (
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
            "message",
        ):
            w = getattr(self, name, None)
            if w is not None:
                w.close()
        for box in getattr(self, "_boxes", []):
            box.close()
        super().close()

    # ============================================================ trait plumbing
    @contextmanager
    def _quiet(self) -> Iterator[None]:
        """Trait / control changes made inside do not start a computation (this thread)."""
        self._local.depth = getattr(self._local, "depth", 0) + 1
        try:
            yield
        finally:
            self._local.depth -= 1

    def _is_quiet(self) -> bool:
        return getattr(self._local, "depth", 0) > 0

    @traitlets.validate("method")
    def _validate_method(self, proposal):
        value = proposal["value"]
        if value not in self._methods:
            raise traitlets.TraitError(f"method must be one of {self._methods}, got {value!r}")
        return value

    @traitlets.validate("target")
    def _validate_target(self, proposal):
        value = int(proposal["value"])
        n = self._num_classes()
        if value < 0 or (n is not None and value >= n):
            raise traitlets.TraitError(
                f"target must be a class index in [0, {n - 1 if n else '...'}], got {value}"
            )
        return value

    def _num_classes(self) -> int | None:
        for entry in reversed(self._entries.values()):
            if entry.ready and entry.probs is not None:
                return int(entry.probs.shape[0])
        return None

    @traitlets.observe("method", "sparsity", "scope")
    def _on_param(self, change) -> None:
        if not self._is_quiet():
            self._submit()

    @traitlets.observe("target")
    def _on_target(self, change) -> None:
        if self._is_quiet():
            return
        with self._cond:
            self._target_auto = False
        with self._quiet():
            self._sync_target_picker(change["new"])
        self._submit()

    def _on_target_picker(self, change) -> None:
        if self._is_quiet() or change["new"] is None:
            return
        if int(change["new"]) == self.target:
            # same value, but the user picked it: pin the target
            with self._cond:
                self._target_auto = False
            return
        self.target = int(change["new"])

    def _on_photo_picker(self, change) -> None:
        if self._is_quiet() or change["new"] is None:
            return
        self.set_image(change["new"])

    def _on_upload(self, change) -> None:
        if self._is_quiet():
            return
        files = change["new"]
        if not files:
            return
        item = files[-1]
        content = item["content"] if isinstance(item, dict) else item.content
        name = item["name"] if isinstance(item, dict) else getattr(item, "name", "")
        data = bytes(content)
        with self._quiet():
            try:
                self.upload.value = ()
            except Exception:  # noqa: BLE001 - clearing is only for re-uploads
                pass
        self.set_image(data, name=name or "upload")

    def _sync_target_picker(self, target: int, entry: _ImageEntry | None = None) -> None:
        """Make the target dropdown list the top classes (plus ``target``) and show it."""
        entry = entry or self._entries.get(self._image_id)
        options = list(self.target_picker.options)
        values = [v for _, v in options]
        if entry is not None and entry.ready and entry.extra.get("options") is not None:
            base = entry.extra["options"]
            if [v for _, v in base] != values[: len(base)] or target not in values:
                options = list(base)
                values = [v for _, v in options]
        if target not in values:
            probs = entry.probs if entry is not None else None
            p = probs[target] if probs is not None and 0 <= target < len(probs) else None
            label = self.category(target) + (f" ({p:.1%})" if p is not None else "")
            options.append((label, target))
        with self.target_picker.hold_sync():
            if list(self.target_picker.options) != options:
                self.target_picker.options = options
            self.target_picker.value = target

    # ================================================================ requests
    def _submit(self) -> None:
        with self._cond:
            if self._closed or self._image_id < 0:
                return
            self._gen += 1
            self._pending = _Request(
                gen=self._gen,
                image_id=self._image_id,
                target=None if self._target_auto else int(self.target),
                method=self.method,
                scope=self.scope,
                sparsity=float(self.sparsity),
            )
            self._cond.notify_all()
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(
                    target=self._worker_loop, name="critpath-explorer-worker", daemon=True
                )
                self._worker.start()

    def _settled(self) -> bool:
        return self._pending is None and self._running is None and self._done_gen >= self._gen

    def _is_stale(self, req: _Request) -> bool:
        return req.gen != self._gen or self._closed

    def _worker_loop(self) -> None:
        while True:
            with self._cond:
                idle_since = time.monotonic()
                while self._pending is None and not self._closed:
                    left = WORKER_IDLE_EXIT_S - (time.monotonic() - idle_since)
                    if left <= 0:
                        # idle: let the thread go (and the explorer be collected)
                        self._worker = None
                        return
                    self._cond.wait(left)
                if self._closed:
                    self._running = None
                    self._cond.notify_all()
                    return
                req = self._pending
                self._pending = None
                self._running = req
            try:
                self._handle(req)
            except BaseException:  # noqa: BLE001 - never let the worker die
                log.exception("PathwayExplorer worker: unexpected failure")
            finally:
                with self._cond:
                    self._running = None
                    self._done_gen = max(self._done_gen, req.gen)
                    self._cond.notify_all()

    def _handle(self, req: _Request) -> None:
        try:
            self._process(req)
        except _Superseded:
            log.debug("request %d superseded", req.gen)
        except Cancelled:
            self._on_cancelled(req)
        except Exception as err:  # noqa: BLE001 - shown in the widget
            if self._is_stale(req) and not isinstance(err, CritpathError):
                log.debug("stale request %d failed", req.gen, exc_info=True)
                return
            self._last_error = err
            if isinstance(err, CritpathError):
                log.info("PathwayExplorer: %s", err)
                text = f"<b>Error:</b> {_esc(err)}"
            else:
                log.exception("PathwayExplorer: computation failed")
                text = f"<b>Unexpected error</b> ({_esc(type(err).__name__)}): {_esc(err)}"
            if self._explanation is not None:
                text += "<br><i>The previous result is still shown.</i>"
            self._show_message(text, "error")
        finally:
            self._hide_progress()

    # ------------------------------------------------------------------ the work
    def _process(self, req: _Request) -> None:
        if self._setup_error is not None:
            raise self._setup_error
        entry = self._entries.get(req.image_id)
        if entry is None or entry.failed:
            entry = self._entries.get(self._good_image_id)
            if entry is None:
                raise InputError("no image to explain")
        if not entry.ready:
            self._prepare(entry)
            if self._is_stale(req):
                return
        target = entry.predicted if req.target is None else int(req.target)
        n_classes = int(entry.probs.shape[0])
        if not 0 <= target < n_classes:
            raise InputError(
                f"target {target} is not a class index of this model (0..{n_classes - 1})"
            )
        key = (entry.id, target, req.method, req.scope)
        t0 = time.perf_counter()
        with self._cond:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
        if cached is None:
            long = req.method in LONG_METHODS
            if long:
                self._show_progress(req)
            options = {"steps": self._steps} if req.method == "neuron_intgrad" else {}
            e = self._explainer.explain(
                entry.x,
                target=target,
                method=req.method,
                sparsity=req.sparsity,
                scope=req.scope,
                progress=self._make_progress(req),
                **options,
            )
            self.stats["explain"] += 1
            if long:
                self._hide_progress()
        elif abs(float(cached.sparsity) - req.sparsity) < 1e-9:
            e = cached
            self.stats["reused"] += 1
        else:
            if self._is_stale(req):
                return
            e = cached.at_sparsity(req.sparsity)
            self.stats["at_sparsity"] += 1
        with self._cond:
            self._cache[key] = e
            self._cache.move_to_end(key)
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        if self._is_stale(req):
            return
        grad = self._gradient(entry, target)
        if self._is_stale(req):
            return
        t1 = time.perf_counter()
        self._show(req, entry, target, e, grad, t1 - t0)
        #: seconds spent by the last shown request: computing, then updating the widgets
        self.last_timing = {"compute_s": t1 - t0, "show_s": time.perf_counter() - t1}
        if cached is None:
            with self._cond:
                idle = self._pending is None
            if idle:
                # sort the new scores while the user looks, so that slider moves need a
                # single comparison pass to select (Explanation.at_sparsity)
                e.prepare_sparsity_changes()

    def _prepare(self, entry: _ImageEntry) -> None:
        """Decode, preprocess and classify an image (in the worker)."""
        try:
            src = entry.source
            if isinstance(src, torch.Tensor):
                x = src.detach()
                pil = None
            else:
                if entry.sample is not None:
                    from ..models import sample_image

                    pil = sample_image(entry.sample)
                else:
                    pil = as_rgb_image(src)
                try:
                    x = self._preprocess(pil)
                except CritpathError:
                    raise
                except Exception as err:  # noqa: BLE001
                    raise InputError(f"preprocess failed on this image: {err}") from err
                if not isinstance(x, torch.Tensor):
                    raise InputError(f"preprocess must return a tensor, got {type(x).__name__}")
                if x.ndim == 3:
                    x = x.unsqueeze(0)
            if x.ndim != 4 or x.shape[0] != 1:
                raise InputError(f"the model input must be (1, C, H, W), got {tuple(x.shape)}")
            try:
                param = next(self._model.parameters())
                x = x.to(device=param.device, dtype=param.dtype)
            except StopIteration:
                pass
            if hasattr(self._explainer, "predict"):
                logits = self._explainer.predict(x)  # eval mode, no hooks, no grad
            else:
                with torch.no_grad():
                    logits = self._model(x)
            if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
                raise InputError("the model must return logits of shape (1, classes)")
            probs = torch.softmax(logits.float(), dim=1)[0].cpu().numpy()
            if pil is not None and self._crop is not None:
                display = self._crop(pil).convert("RGB")
            else:
                display = _tensor_to_display(x)
        except BaseException:
            self._image_failed(entry)
            raise
        top = np.argsort(-probs, kind="stable")[:TOP_K]
        entry.x = x
        entry.display = display
        entry.probs = probs
        entry.predicted = int(top[0])
        entry.extra["options"] = [
            (f"{self.category(int(i))} ({probs[int(i)]:.1%})", int(i)) for i in top
        ]
        entry.ready = True
        entry.source = None  # free the raw bytes
        with self._cond:
            self._good_image_id = entry.id
        if self._image_id == entry.id:
            with self._quiet():
                target = entry.predicted if self._target_auto else int(self.target)
                if 0 <= target < len(probs):
                    self._sync_target_picker(target, entry)
                if self._target_auto and self.target != target:
                    self.target = target

    def _image_failed(self, entry: _ImageEntry) -> None:
        entry.failed = True
        with self._cond:
            self._entries.pop(entry.id, None)
            if self._image_id == entry.id:
                self._image_id = self._good_image_id
                # the pending request, if any, is for the failed picture too
                if self._pending is not None and self._pending.image_id == entry.id:
                    self._pending.image_id = self._good_image_id
            good = self._entries.get(self._good_image_id)
        with self._quiet():
            self.photo_picker.value = good.sample if good is not None else None

    def _trim_images(self) -> None:
        keep = {self._image_id, self._good_image_id, self._shown_image_id}
        while len(self._entries) > IMAGE_CACHE_SIZE:
            victim = next((k for k in self._entries if k not in keep), None)
            if victim is None:
                break
            self._entries.pop(victim)
            for k in [k for k in self._cache if k[0] == victim]:
                self._cache.pop(k)
            for k in [k for k in self._grad_cache if k[0] == victim]:
                self._grad_cache.pop(k)

    def _gradient(self, entry: _ImageEntry, target: int) -> np.ndarray:
        key = (entry.id, target)
        g = self._grad_cache.get(key)
        if g is None:
            grad = self._explainer.gradient(entry.x, target=target)
            g = _reduce_channels(grad, self._reduce, entry.x)
            self.stats["gradient"] += 1
            with self._cond:
                self._grad_cache[key] = g
                while len(self._grad_cache) > 4 * CACHE_SIZE:
                    self._grad_cache.popitem(last=False)
        return g

    def _show(self, req, entry, target, e, grad, seconds) -> None:
        sal = e.saliency_map(self._reduce)[0]
        sal = sal.detach().float().cpu().numpy() if hasattr(sal, "detach") else np.asarray(sal)
        sal = sal.astype(np.float32, copy=False)
        new_image = self._shown_image_id != entry.id
        label = (
            f"pathway gradient: {METHOD_LABELS.get(req.method, req.method)}, "
            f"{req.scope}, sparsity {req.sparsity:.2f}"
        )
        with self.pathway_overlay.hold_sync():
            if new_image:
                self.pathway_overlay.set_data(image=entry.display, values=sal)
            else:
                self.pathway_overlay.set_data(values=sal)
            self.pathway_overlay.label = label
        if new_image or self._shown is None or self._shown["target"] != target:
            with self.gradient_overlay.hold_sync():
                if new_image:
                    self.gradient_overlay.set_data(image=entry.display, values=grad)
                else:
                    self.gradient_overlay.set_data(values=grad)
                self.gradient_overlay.label = f"plain gradient: {self.category(target)}"
        self.layers.update(e, entry.display if new_image else None)
        if self._auto_site and self.layers.selected_site < 0 and self.layers.summary:
            # open the panel on the site holding the most kept contribution
            kept = [float(s.kept_total) for s in self.layers.summary]
            self.layers.selected_site = int(np.argmax(kept))
        self._auto_site = False
        self._explanation = e
        self._shown_image_id = entry.id
        self._shown = {
            "image_id": entry.id,
            "target": target,
            "target_auto": req.target is None,
            "method": req.method,
            "scope": req.scope,
            "sparsity": req.sparsity,
        }
        self._last_error = None
        self.stats["shown"] += 1
        self._show_message(self._summary_text(e, entry, target, seconds), "info")

    def _summary_text(self, e, entry, target, seconds) -> str:
        p = float(entry.probs[target]) if entry.probs is not None else float("nan")
        try:
            summ = self.layers.summary
            kept = sum(int(s.kept) for s in summ)
            total = sum(int(s.neurons) for s in summ)
            kept_txt = (
                f"the pathway keeps {kept:,} of {total:,} neurons ({kept / max(total, 1):.1%})"
            )
        except Exception:  # noqa: BLE001
            kept_txt = "pathway selected"
        try:
            y = float(e.logits[0, target])
            yp = float(e.pathway_logits[0, target])
            logit_txt = (
                f"; target logit {yp:.3g} through the pathway vs {y:.3g} in the full network"
            )
        except Exception:  # noqa: BLE001
            logit_txt = ""
        return (
            f"<b>{_esc(self.category(target))}</b> (p = {p:.1%}), "
            f"{_esc(METHOD_LABELS.get(e.method, e.method))}, {_esc(e.scope)} scope, "
            f"sparsity {float(e.sparsity):.2f}: {kept_txt}{logit_txt}. ({seconds * 1000:.0f} ms)"
        )

    # ---------------------------------------------------------- progress / cancel
    def _make_progress(self, req: _Request):
        def progress(done: int, total: int) -> None:
            if req.gen <= self._cancel_gen or self._closed:
                raise Cancelled("cancelled by the user")
            with self._cond:
                pending = self._pending
            if pending is not None and pending.scoring() != req.scoring():
                raise _Superseded("superseded by a newer request")
            now = time.monotonic()
            if now - self._last_progress >= 0.1 or done >= total:
                self._last_progress = now
                with self.progress.hold_sync():
                    self.progress.max = max(int(total), 1)
                    self.progress.value = min(int(done), int(total))
                self.progress_label.value = f"{int(done)} / {int(total)}"

        return progress

    def _show_progress(self, req: _Request) -> None:
        with self.progress.hold_sync():
            self.progress.value = 0
            self.progress.max = 1
        self.progress_label.value = ""
        self.cancel_button.disabled = False
        self.progress_box.layout.display = "flex"
        self._show_message(
            f"Computing {_esc(METHOD_LABELS.get(req.method, req.method))} "
            "(this takes a while; Cancel stops it)...",
            "busy",
        )

    def _hide_progress(self) -> None:
        if self.progress_box.layout.display != "none":
            self.progress_box.layout.display = "none"
        if not self.cancel_button.disabled:
            self.cancel_button.disabled = True

    def _on_cancelled(self, req: _Request) -> None:
        self._last_error = Cancelled("cancelled by the user")
        reverted = False
        with self._cond:
            newer = self._pending is not None
        shown = self._shown
        if not newer and shown is not None and shown["image_id"] == self._image_id:
            # Put the controls back to what the view shows, without a new request.
            with self._quiet():
                self.method = shown["method"]
                self.scope = shown["scope"]
                self.sparsity = shown["sparsity"]
                with self._cond:
                    self._target_auto = shown["target_auto"]
                self._sync_target_picker(shown["target"])
                self.target = shown["target"]
            reverted = True
        text = f"Cancelled: {_esc(METHOD_LABELS.get(req.method, req.method))} was not computed."
        if reverted:
            text += " The controls are back to the result on show."
        self._show_message(text, "warning")

    def _show_message(self, text_html: str, kind: str) -> None:
        import re

        self._message_text = html.unescape(re.sub(r"<[^>]+>", "", text_html))
        self.message.value = _message_html(text_html, kind)

    # ================================================================== export
    def save(self, path, *, dpi: int = 120, timeout: float | None = 120.0) -> Path:
        """Write a matplotlib figure of the current view (image with the pathway
        gradient and its colour bar, the plain gradient, the layer chart).

        Waits for the view to settle first. Uses ``matplotlib.figure.Figure`` with the
        Agg canvas (pyplot's global state is not touched). The format follows the
        file extension (png, pdf, svg, ...). Returns the path.
        """
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.wait(timeout)
        e = self._explanation
        if e is None:
            raise InputError("nothing to save yet: no explanation has been computed")
        entry = self._entries.get(self._shown_image_id)
        display = np.asarray(entry.display) if entry is not None else None
        fig = Figure(figsize=(13, 8), layout="constrained")
        FigureCanvasAgg(fig)
        gs = fig.add_gridspec(2, 3, height_ratios=[3, 2])
        ax_img = fig.add_subplot(gs[0, 0])
        if display is not None:
            ax_img.imshow(display)
        target = self._shown["target"] if self._shown else int(e.target[0])
        ax_img.set_title(f"{self.category(target)}", fontsize=10)
        ax_img.set_axis_off()
        for col, overlay in ((1, self.pathway_overlay), (2, self.gradient_overlay)):
            ax = fig.add_subplot(gs[0, col])
            self._draw_overlay(fig, ax, display, overlay)
        ax_bar = fig.add_subplot(gs[1, :])
        summ = self.layers.summary
        idx = np.arange(len(summ))
        kept = np.array([max(float(s.kept_total), 0.0) for s in summ])
        total = np.array([float(s.total) for s in summ])
        ax_bar.bar(idx, kept, color="#d95f02", label="kept by the pathway")
        ax_bar.bar(
            idx, np.clip(total - kept, 0, None), bottom=kept, color="#c9c9c9", label="removed"
        )
        if self.layers.selected_site >= 0:
            i = self.layers.selected_site
            ax_bar.bar([i], [total[i]], fill=False, edgecolor="black", linewidth=1.5)
        from matplotlib.ticker import MaxNLocator

        ax_bar.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax_bar.set_xlabel("site (call order)")
        ax_bar.set_ylabel("contribution")
        ax_bar.legend(loc="upper right", fontsize=8)
        ax_bar.set_title("Contribution per site", fontsize=10)
        fig.suptitle(
            f"{METHOD_LABELS.get(e.method, e.method)}, {e.scope} scope, "
            f"sparsity {float(e.sparsity):.2f}",
            fontsize=11,
        )
        path = Path(path)
        fig.savefig(path, dpi=dpi)
        return path

    @staticmethod
    def _draw_overlay(fig, ax, display, overlay) -> None:
        """Draw an AttributionOverlay as the browser paints it, with its colour bar."""
        import matplotlib
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        ax.set_axis_off()
        ax.set_title(overlay.label, fontsize=9)
        h, w = (int(v) for v in overlay.shape)
        if display is not None:
            ax.imshow(display)
            H, W = display.shape[:2]
        else:
            H, W = h, w
        if not overlay.values or h * w == 0:
            return
        ax.imshow(
            overlay.to_rgba(),
            extent=(-0.5, W - 0.5, H - 0.5, -0.5),
            interpolation="nearest",
        )
        ax.set_xlim(-0.5, W - 0.5)
        ax.set_ylim(H - 0.5, -0.5)
        vmax = float(overlay.vmax())
        vmin = -vmax if overlay.sign == "signed" else 0.0
        cmap = matplotlib.colormaps[overlay.colormap]
        sm = ScalarMappable(norm=Normalize(vmin=vmin, vmax=vmax), cmap=cmap)
        cb = fig.colorbar(sm, ax=ax, orientation="horizontal", fraction=0.05, pad=0.02)
        cb.set_label(
            f"{overlay.sign} (clipped at the {overlay.clip_percentile:g}th percentile)", fontsize=8
        )


__all__ = ["PathwayExplorer"]
