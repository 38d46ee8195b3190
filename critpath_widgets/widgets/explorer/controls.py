"""The explorer's control handlers: pickers and upload in, controls back in step.

:class:`ControlsMixin` turns the target and photo pickers and the upload into trait
changes and requests, prepares a picture (pointing the target at its prediction), and
after a cancellation puts the controls back to the result on show, so that the controls
always describe either the pending request or what is shown. Mixed into
:class:`PathwayExplorer`, whose attributes it uses.
"""

from __future__ import annotations

from ...errors import Cancelled
from ...methods import method_label
from .caches import ImageEntry
from .view import esc
from .worker import Request


class ControlsMixin:
    """Picker, upload and cancellation handlers of :class:`PathwayExplorer`."""

    def _on_target_picker(self, change: dict) -> None:
        """The user picked a class: make it the target (pinned, no longer the prediction)."""
        if self._is_quiet() or change["new"] is None:
            return
        if int(change["new"]) == self.target:
            # same value, but the user picked it: pin the target
            with self._lock:
                self._target_auto = False
            return
        self.target = int(change["new"])

    def _on_photo_picker(self, change: dict) -> None:
        """The user picked a sample photo: show it."""
        if self._is_quiet() or change["new"] is None:
            return
        self.set_image(change["new"])

    def _on_upload(self, change: dict) -> None:
        """The user uploaded a file: show it (decoded in the worker)."""
        if self._is_quiet():
            return
        with self._quiet():
            upload = self.take_upload(change["new"])
        if upload is not None:
            self.set_image(upload[0], name=upload[1])

    def _sync_target_picker(self, target: int, entry: ImageEntry | None = None) -> None:
        """Make the target dropdown list the top classes (plus ``target``) and show it."""
        entry = entry or self._images.get(self._images.current)
        self.set_target_options(target, entry, self.category)

    def _load(self, entry: ImageEntry) -> None:
        """Prepare a picture and point the target at its prediction; if it fails, the
        controls go back to the last good picture and the error is re-raised."""
        try:
            is_current = self._session.load(entry)
        except BaseException:
            # a pending request for the failed picture shows the last good one instead
            self._worker.redirect_pending(entry.id, self._images.good)
            good = self._images.get(self._images.good)
            with self._quiet():
                self.photo_picker.value = good.sample if good is not None else None
            raise
        if is_current:
            self._refresh_target(entry)

    def _refresh_target(self, entry: ImageEntry) -> None:
        """Point the target controls at the picture's classes as now predicted (a new
        picture, or the model changed)."""
        with self._quiet():
            target = entry.predicted if self._target_auto else int(self.target)
            if 0 <= target < len(entry.probs):
                self._sync_target_picker(target, entry)
            if self._target_auto and self.target != target:
                self.target = target

    def _on_cancelled(self, req: Request) -> None:
        """Say the request was cancelled and put the controls back to what is on show."""
        self._last_error = Cancelled("cancelled by the user")
        reverted = False
        shown = self._shown
        if not self._worker.has_pending and shown is not None:
            if shown["image_id"] == self._images.current:
                with self._quiet():
                    self.method = shown["method"]
                    self.scope = shown["scope"]
                    self.sparsity = shown["sparsity"]
                    with self._lock:
                        self._target_auto = shown["target_auto"]
                    self._sync_target_picker(shown["target"])
                    self.target = shown["target"]
                reverted = True
        text = f"Cancelled: {esc(method_label(req.method))} was not computed."
        if reverted:
            text += " The controls are back to the result on show."
        self.show_message(text, "warning")


__all__ = ["ControlsMixin"]
