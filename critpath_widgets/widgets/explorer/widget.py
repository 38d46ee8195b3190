"""PathwayExplorer: wires the view, the request worker and the caches into one widget.

Data flows one way: the controls (and the traits linked to them) make a request; the
worker computes it off the kernel's main thread, from the caches where it can; the
result is shown unless a newer request came meanwhile. Errors (bad uploads, models
without recordable sites, cancellations, ...) are shown in the message area and
logged; the previous view stays and the controls keep working.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import traitlets

from ...engine import SCOPES, Explanation, PathwayExplainer
from ...errors import Cancelled, CritpathError, InputError
from ...methods import LONG_METHODS, is_baseline, method_label
from .baselines import BaselineMixin
from .caches import ImageEntry
from .compare_link import attach_comparison
from .controls import ControlsMixin
from .evaluation_link import attach_evaluation
from .gallery_link import GalleryMixin, attach_gallery
from .interventions import InterventionsMixin
from .scrub import ScrubStack
from .session import ExplainSession
from .static_view import save_view
from .targets import ClassTarget
from .view import SPARSITY_MAX, ExplorerView, esc, notices_html, summary_html
from .watch import ModelPoller
from .worker import Request, RequestWorker, Superseded

log = logging.getLogger(__name__)


class PathwayExplorer(GalleryMixin, InterventionsMixin, ControlsMixin, BaselineMixin, ExplorerView):
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
    **kwargs:
        Initial ``method``, ``sparsity``, ``target``, ``scope``; other keywords go to
        ``ipywidgets.VBox``.
    """

    method = traitlets.Unicode("neuron_mct", help="pathway selection method")
    """Selection method, one of the explainer's ``methods``; linked to the method picker."""

    sparsity = traitlets.Float(0.7, min=0.0, max=SPARSITY_MAX, help="fraction removed")
    """Share of neurons the pathway removes; linked to the slider. A change reuses the
    cached scores (one masked pass)."""

    target = ClassTarget(0, help="class index whose logit is explained")
    """Class explained, held as its index; may be set by name (``w.target = "espresso"``,
    or a part only one class contains; else InputError with the candidates). Follows
    the prediction of each new picture until set (from Python or the target picker)."""

    scope = traitlets.Enum(SCOPES, default_value="global", help="global or per-layer")
    """"global" (one threshold over all sites) or "layer" (the same share per site)."""

    auto_refresh = traitlets.Bool(True, help="recompute when the model changes")
    """While idle, look at the model every 2 s and recompute the view when a weight,
    buffer or module changed since the result on show (``refresh()`` does it at once)."""

    def __init__(
        self,
        model: Any = None,
        image: Any = None,
        preprocess: Any = None,
        categories: Any = None,
        *,
        crop: Any = None,
        steps: int = 10,
        reduce: str = "max_abs",
        **kwargs: Any,
    ) -> None:
        trait_values = {
            k: kwargs.pop(k) for k in ("method", "sparsity", "target", "scope") if k in kwargs
        }
        # state first: validators and close() (also from __del__) rely on it
        self._worker = RequestWorker(self._handle)
        self._lock = self._worker.lock
        self._local = threading.local()
        self._session = ExplainSession(
            preprocess=preprocess,
            crop=crop,
            categories=categories,
            steps=steps,
            reduce=reduce,
            lock=self._lock,
        )
        self._images = self._session.images
        self._target_auto = "target" not in trait_values
        self._explanation: Explanation | None = None
        self._baseline_map: np.ndarray | None = None
        self._shown: dict | None = None
        self._last_error: BaseException | None = None
        self._auto_site = True
        #: how the photo picker names each recent non-sample picture, by image id
        self._picture_slots: dict[int, dict | None] = {}
        #: how many explain / at_sparsity / reused / gradient / shown steps the worker ran
        self.stats = self._session.stats
        #: seconds spent by the last shown request: computing, then updating the widgets
        self.last_timing: dict[str, float] = {}
        try:
            self._session.setup(model)
        except CritpathError as err:
            self._session.setup_error = err
            log.warning("PathwayExplorer: %s", err)
        self._methods = self._session.methods
        if self._session.model is not None and self._session.preprocess is None:
            if not isinstance(image, torch.Tensor):
                raise InputError(
                    "preprocess is required with a plain nn.Module (PIL image -> tensor), "
                    "unless image is an already preprocessed tensor"
                )
        try:
            from ...models import sample_images

            self._sample_names = list(sample_images())
        except Exception:  # noqa: BLE001 - samples are a convenience
            log.debug("sample_images() failed", exc_info=True)
            self._sample_names = []
        photo_ok = self._session.preprocess is not None
        super().__init__(self._methods, self._sample_names, photo_ok, **kwargs)
        #: the evaluation panel, in a collapsed section under the layer panel
        self.evaluation, self.evaluation_section = attach_evaluation(self)
        self.children = (*self.children, self.evaluation_section)
        self.comparison, self.comparison_section = attach_comparison(self)
        self.children = (*self.children, self.comparison_section)
        #: the pathway map at a grid of sparsities, for slider drags without the kernel
        self._scrub = ScrubStack(self)
        self.gallery, self.gallery_section = attach_gallery(self)
        self.children = (*self.children, self.gallery_section)

        with self._quiet():
            for name in ("method", "scope", "sparsity", "target"):
                if name in trait_values:
                    setattr(self, name, trait_values[name])
        self._links = [
            traitlets.link((self, "method"), (self.method_picker, "value")),
            traitlets.link((self, "sparsity"), (self.sparsity_slider, "value")),
            traitlets.link((self, "scope"), (self.scope_buttons, "value")),
        ]
        self._setup_interventions()
        self._sync_method_controls()
        self.cancel_button.on_click(lambda _b: self.cancel())
        self.refresh_button.on_click(lambda _b: self.refresh())
        self._poller = ModelPoller(self, "_look_at_model")
        self.target_picker.observe(self._on_target_picker, "value")
        self.photo_picker.observe(self._on_photo_picker, "value")
        self.upload.observe(self._on_upload, "value")
        if self._session.setup_error is not None:
            self.show_message(f"<b>Error:</b> {esc(self._session.setup_error)}", "error")
            self._last_error = self._session.setup_error

        if image is None and photo_ok and self._sample_names:
            image = "coffee" if "coffee" in self._sample_names else self._sample_names[0]
        if image is not None:
            self.set_image(image, keep_target=not self._target_auto)

    # ================================================================= public API
    @property
    def explanation(self) -> Explanation | None:
        """The Explanation currently on show (``None`` before the first result and
        while a baseline, which has no pathway, is on show)."""
        return self._explanation

    @property
    def explainer(self) -> PathwayExplainer | None:
        """The :class:`PathwayExplainer` (``None`` if the model could not be set up)."""
        return self._session.explainer

    @property
    def model(self) -> torch.nn.Module | None:
        """The model explained (``None`` if it could not be set up)."""
        return self._session.model

    @property
    def last_error(self) -> BaseException | None:
        """The error shown in the message area by the last request (``None`` if it worked)."""
        return self._last_error

    @property
    def busy(self) -> bool:
        """Whether a request is being computed or waits."""
        return self._worker.busy

    def category(self, index: int) -> str:
        """The class name of ``index`` (``"class i"`` without names)."""
        return self._session.category(index)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the view reflects the current traits and image.

        Returns ``True`` once the latest request has been handled: its result is on
        show, or its error / cancellation is in the message area (see
        :attr:`last_error`), and the sparsity stack for the slider's preview is built
        (a newer request interrupts that). Raises ``TimeoutError`` if that takes longer than
        ``timeout`` seconds (``None``: no limit). Do not call it from an observer that
        the worker thread runs.
        """
        if not self._worker.wait(timeout):
            raise TimeoutError(f"PathwayExplorer did not settle within {timeout} s")
        return True

    def refresh(self) -> None:
        """Compute the view again. Every request first checks the model against the
        state its cached results were made with (modules, parameters and buffers, in
        full) and drops them if it changed; call this after editing the model to see
        the new state without touching a control."""
        self._submit()

    def _look_at_model(self) -> None:
        """The poller's look: an idle explorer whose model changed since the result on
        show says so and computes the view again."""
        watch = self._session.watch
        if not self.auto_refresh or self._shown is None or self.busy or watch is None:
            return
        if watch.differs():
            self.show_message("The model changed since this result: computing it again...", "busy")
            self._submit()

    def cancel(self) -> None:
        """Cancel the running or pending long computation (the Cancel button)."""
        if self._worker.cancel():
            self.show_message("Cancelling...", "busy")

    def close(self) -> None:
        """Stop the worker thread and close the widget and its children."""
        worker = getattr(self, "_worker", None)
        if worker is not None:
            worker.close()
        poller = getattr(self, "_poller", None)
        if poller is not None:
            poller.stop()
        if getattr(self, "_scrub", None) is not None:
            self._scrub.close()
        for part in ("evaluation", "comparison", "gallery"):
            for name in (part, f"{part}_section"):
                if getattr(self, name, None) is not None:
                    getattr(self, name).close()
        for link in getattr(self, "_links", []):
            try:
                link.unlink()
            except Exception:  # noqa: BLE001
                pass
        super().close()

    def save(self, path: str | Path, *, dpi: int = 120, timeout: float | None = 120.0) -> Path:
        """Write a figure of the current view (photo, both maps as painted with the
        overlays' colour settings, layer chart) after waiting for the view to settle.
        The format follows the file extension (png, pdf, svg, ...). Returns the path."""
        self.wait(timeout)
        return save_view(self, path, dpi)

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        """The live widget's view plus a PNG of the current view (no recomputation), so
        that front ends without widgets (GitHub, nbconvert) show a picture, not a repr."""
        from .static_view import static_bundle

        base = super()._repr_mimebundle_(**kwargs) or {}
        return static_bundle(self, base, kwargs.get("include"), kwargs.get("exclude"))

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
    def _validate_method(self, proposal: dict) -> str:
        value = proposal["value"]
        if value not in self._methods:
            raise traitlets.TraitError(f"method must be one of {self._methods}, got {value!r}")
        return value

    @traitlets.observe("method", "sparsity", "scope")
    def _on_param(self, change: dict) -> None:
        if change["name"] == "method":
            self._sync_method_controls()
        if not self._is_quiet():
            self._submit()

    def _submit(self) -> None:
        """Make a request of the current picture and traits."""
        with self._lock:
            if self._images.current < 0:
                return
            self._worker.submit(
                image_id=self._images.current,
                target=None if self._target_auto else int(self.target),
                method=self.method,
                scope=self.scope,
                sparsity=float(self.sparsity),
                **self._intervention_request(),
            )

    # ================================================================ the work
    def _handle(self, req: Request) -> None:
        """Run a request in the worker; failures go to the message area."""
        try:
            with self._session.compute_lock:
                self._process(req)
        except Superseded:
            log.debug("request %d superseded", req.gen)
        except Cancelled:
            self._on_cancelled(req)
        except Exception as err:  # noqa: BLE001 - shown in the widget
            if self._worker.is_stale(req) and not isinstance(err, CritpathError):
                log.debug("stale request %d failed", req.gen, exc_info=True)
                return
            self._last_error = err
            if isinstance(err, CritpathError):
                log.info("PathwayExplorer: %s", err)
                text = f"<b>Error:</b> {esc(err)}"
            else:
                log.exception("PathwayExplorer: computation failed")
                text = f"<b>Unexpected error</b> ({esc(type(err).__name__)}): {esc(err)}"
            if self._shown is not None:
                text += "<br><i>The previous result is still shown.</i>"
            self.show_message(text, "error")
        finally:
            self.hide_progress()

    def _process(self, req: Request) -> None:
        """Prepare the picture, get the explanation (cached, re-thresholded or scored),
        the plain gradient, and show them unless a newer request came."""
        session, stale = self._session, self._worker.is_stale
        if session.setup_error is not None:
            raise session.setup_error
        entry = session.entry_for(req.image_id)
        if not entry.ready:
            self._load(entry)
            if stale(req):
                return
        elif session.follow_model() and self._images.current == entry.id:
            self._refresh_target(entry)  # the predicted class may be another one now
        target = session.target_for(entry, req.target)
        if is_baseline(req.method):
            self._scrub.after_show(req, None, None)
            self._process_baseline(req, entry, target)
            return
        key = (entry.id, target, req.method, req.scope)
        t0 = time.perf_counter()
        cached = session.cached(key)
        # greedy's scores hold for one sparsity: another one runs it again, with progress
        path_dependent = session.path_dependent(req.method)
        if cached is None:
            e = self._with_progress(
                req,
                lambda p: session.score(entry, target, req.method, req.scope, req.sparsity, p),
                path_dependent,
            )
        elif abs(float(cached.sparsity) - req.sparsity) < 1e-9:
            e = cached
            self.stats["reused"] += 1
        else:
            if stale(req):
                return
            if path_dependent:
                e = self._with_progress(
                    req, lambda p: cached.at_sparsity(req.sparsity, progress=p), True
                )
            else:
                e = cached.at_sparsity(req.sparsity)
            self.stats["at_sparsity"] += 1
        session.store(key, e)
        if stale(req):
            return
        shown = self._apply_interventions(req, e)  # e itself without overrides
        if stale(req):
            return
        grad = session.gradient(entry, target)
        if stale(req):
            return
        t1 = time.perf_counter()
        # the stack belongs to the scoring and the overrides on show
        scrub_key = (*key, repr(sorted(req.interventions.items())), req.network)
        self._scrub.before_show(scrub_key)
        self._show(req, entry, target, shown, grad, t1 - t0, plain=e)
        self.last_timing = {"compute_s": t1 - t0, "show_s": time.perf_counter() - t1}
        if cached is None and not self._worker.has_pending:
            # sort the new scores while the user looks, so that slider moves need a
            # single comparison pass to select (Explanation.at_sparsity)
            e.prepare_sparsity_changes()
        self._scrub.after_show(req, shown, scrub_key)

    def _with_progress(self, req: Request, run: Callable[[Any], Any], path_dependent: bool) -> Any:
        """``run(progress)``, with the progress bar and Cancel shown for a long method
        (and for every rerun of a path-dependent one); the progress callback stops it on
        Cancel or a newer request that needs other scores."""
        long = req.method in LONG_METHODS or path_dependent
        if long:
            self.show_progress(req.method)
        progress = self._worker.progress_callback(req, self.report_progress, path_dependent)
        e = run(progress)
        if long:
            self.hide_progress()
        return e

    def _mark_shown(self, req: Request, entry: ImageEntry, target: int, e, baseline_map) -> float:
        """Remember what is on show (a cancel reverts the controls to it), the explanation
        or the baseline map; returns the target's probability."""
        self._explanation = e
        self._baseline_map = baseline_map
        self._images.shown = entry.id
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
        return float(entry.probs[target]) if entry.probs is not None else float("nan")

    def _show(
        self, req: Request, entry: ImageEntry, target: int, e, grad, seconds, plain=None
    ) -> None:
        """Put a result on show: maps, layer panel, message (``plain``: ``e`` before its
        interventions)."""
        sal = self._session.saliency(e)
        new_image = self._images.shown != entry.id
        new_gradient = new_image or self._shown is None or self._shown["target"] != target
        self.show_maps(
            entry.display if new_image else None,
            sal,
            f"pathway gradient: {method_label(req.method)}, {req.scope}, "
            f"sparsity {req.sparsity:.2f}",
            grad if new_gradient else None,
            f"plain gradient: {self.category(target)}",
            target=self.category(target),
        )
        self.layers.update(e, entry.display if new_image else None)
        if self._auto_site and self.layers.selected_site < 0 and self.layers.summary:
            # open the panel on the site holding the most kept contribution
            kept = [float(s.kept_total) for s in self.layers.summary]
            self.layers.selected_site = int(np.argmax(kept))
        self._auto_site = False
        p = self._mark_shown(req, entry, target, e, None)
        text = summary_html(e, target, self.category(target), p, self.layers.summary, seconds)
        # (first: the summary ends with the "(N ms)" the benchmarks read)
        text = self._intervention_report(plain if plain is not None else e, e, target) + text
        self.show_message(text + notices_html(e), "warning" if e.notices else "info")


__all__ = ["PathwayExplorer"]
