"""The explorer's control handlers: pickers and upload in, controls back in step.

:class:`ControlsMixin` holds ``set_image`` and the ``target`` trait's validation and
observer, turns the target and photo pickers and the upload into trait changes and
requests (the photo picker also offers the last uploaded or given picture, and the
upload button counts an upload on show), prepares a picture (pointing the target at
its prediction), and
after a cancellation puts the controls back to the result on show, so that the controls
always describe either the pending request or what is shown. Mixed into
:class:`PathwayExplorer`, whose attributes it uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import traitlets

from ...errors import Cancelled, CritpathError, InputError
from ...methods import method_label
from .caches import ImageEntry
from .targets import class_names, resolve_class
from .view import OTHER_PICTURE, esc
from .worker import Request


class ControlsMixin(traitlets.HasTraits):
    """Picture and target setting, picker, upload and cancellation handlers of
    :class:`PathwayExplorer`. A HasTraits so that its ``@observe`` / ``@validate``
    handlers of ``target`` are collected for the widget (a plain mixin's are not)."""

    #: the non-sample picture the photo picker offers (label, source, name, upload)
    _other_picture: dict | None = None
    #: the slot of the next picture made current by the picker or the upload
    _next_other: dict | None = None

    def set_image(self, image: Any, name: str | None = None, *, keep_target: bool = False) -> None:
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
        elif self._session.preprocess is None and self._session.model is not None:
            raise InputError("this explorer has no preprocess: pass a preprocessed tensor")
        with self._lock:
            entry = self._session.add_image(image, sample=sample)
            if not keep_target:
                self._target_auto = True
        self._note_picture(entry, sample, image, name)
        self.show_message(f"Loading {esc(sample or name or 'the picture')}...", "busy")
        self._submit()

    @traitlets.validate("target")
    def _validate_target(self, proposal: dict) -> int:
        """A class index of the model (names are resolved by the trait before this)."""
        value = int(proposal["value"])
        n = self._images.num_classes()
        if value < 0 or (n is not None and value >= n):
            raise traitlets.TraitError(
                f"target must be a class index in [0, {n - 1 if n else '...'}], got {value}"
            )
        return value

    @traitlets.observe("target")
    def _on_target(self, change: dict) -> None:
        """The target was set (Python or picker): pin it, show it, compute the view."""
        if self._is_quiet():
            return
        with self._lock:
            self._target_auto = False
        with self._quiet():
            self._sync_target_picker(change["new"])
        self._submit()

    def class_names(self) -> list[str]:
        """The name of every class of the model (``"class i"`` without names; empty for
        such a model until a picture has been classified)."""
        return class_names(self._session.categories, self._images.num_classes())

    def class_index(self, name: str | int) -> int:
        """The class index of ``name``: an index, a class name (case ignored) or a part
        of one that a single class contains. Raises InputError with close matches."""
        if isinstance(name, int):
            return int(name)
        return resolve_class(name, self.class_names())

    def _on_target_picker(self, change: dict) -> None:
        """The user picked or typed a class: make it the target (pinned, no longer the
        prediction); text naming no single class is reported and the box reverts."""
        if self._is_quiet() or not change["new"]:
            return
        text = str(change["new"])
        index = self.picked_target(text)
        if index is None:
            try:
                index = self.class_index(text)
            except CritpathError as err:
                with self._quiet():
                    self.target_picker.value = self.target_label(int(self.target))
                self.show_message(f"<b>Target:</b> {esc(err)}", "warning")
                return
        if index == self.target:
            # same value, but the user picked it: pin the target
            with self._lock:
                self._target_auto = False
            with self._quiet():
                self.target_picker.value = self.target_label(index)
            return
        self.target = index

    def _on_photo_picker(self, change: dict) -> None:
        """The user picked a sample photo (or the uploaded picture again): show it."""
        if self._is_quiet() or change["new"] is None:
            return
        if change["new"] == OTHER_PICTURE:
            other = self._other_picture
            if other is not None:
                self._set_other_image(other)
            return
        self.set_image(change["new"])

    def _on_upload(self, change: dict) -> None:
        """The user uploaded a file: show it (decoded in the worker)."""
        if self._is_quiet():
            return
        upload = self.take_upload(change["new"])
        if upload is not None:
            data, name = upload
            slot = {
                "label": f"uploaded: {name}",
                "source": data,
                "name": name,
                "upload": tuple(change["new"]),
            }
            self._set_other_image(slot)

    def _set_other_image(self, slot: dict) -> None:
        """Show a non-sample picture named by ``slot`` (an upload, or the picture offered
        again by the photo picker)."""
        self._next_other = slot
        try:
            self.set_image(slot["source"], name=slot["name"])
        finally:
            self._next_other = None  # never carried over to a later picture

    def _note_picture(self, entry: ImageEntry, sample: str | None, source: Any, name: Any) -> None:
        """A picture became current: remember how the photo picker and upload button
        name it (its slot replaces the non-sample one once it loads) and show that."""
        other = None
        if sample is None:
            if name is None and isinstance(source, (str, Path)):
                name = Path(source).name  # a file given by path
            other = getattr(self, "_next_other", None) or {
                "label": f"from Python: {name}" if name else "picture from Python",
                "source": source,
                "name": name,
                "upload": (),
            }
        self._next_other = None
        with self._lock:
            self._picture_slots[entry.id] = other
            # only the current and the last good pictures' slots can be shown again
            keep = {self._images.current, self._images.good}
            for k in [k for k in self._picture_slots if k not in keep]:
                del self._picture_slots[k]
        with self._quiet():
            self.show_photo_choice(sample, other or self._other_picture)

    def _sync_target_picker(self, target: int, entry: ImageEntry | None = None) -> None:
        """Make the target picker list every class (the picture's top ones first) and
        show ``target``."""
        entry = entry or self._images.get(self._images.current)
        self.set_target_options(target, entry, self.class_names())

    def _load(self, entry: ImageEntry) -> None:
        """Prepare a picture and point the target at its prediction; if it fails, the
        controls go back to the last good picture and the error is re-raised."""
        try:
            is_current = self._session.load(entry)
        except BaseException:
            # a pending request for the failed picture shows the last good one instead
            self._worker.redirect_pending(entry.id, self._images.good)
            good = self._images.get(self._images.good)
            with self._lock:
                self._picture_slots.pop(entry.id, None)
            with self._quiet():
                # the offered non-sample picture is the last one that loaded
                sample = good.sample if good is not None else None
                self.show_photo_choice(sample, self._other_picture)
            raise
        with self._lock:
            slot = self._picture_slots.get(entry.id)
            if slot is not None:
                # a non-sample picture that loaded is the one the picker offers again
                self._other_picture = slot
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
