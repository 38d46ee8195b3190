"""The explorer's kernel-side state: the model, its explainer, the pictures and the caches.

:class:`ExplainSession` knows how to get what a request needs (a prepared picture, the
explanation, the plain-gradient map) as cheaply as the caches allow; it imports no
widget library and shows nothing, so it can be used and tested without a front end.
Every change to the pictures and caches happens under ``lock`` (the worker's), since
the worker fills them while the kernel's main thread adds and trims pictures.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ...engine import METHODS, Explanation, PathwayExplainer, reduce_channels
from ...errors import InputError
from .caches import (
    CACHE_SIZE,
    EXPLANATION_BUDGET,
    GRADIENT_CACHE_SIZE,
    ImageEntry,
    ImageStore,
    LruCache,
    classify,
    prepare_image,
)
from .watch import ModelWatch


class ExplainSession:
    """A model and its explainer, the pictures, explanations and gradients of an explorer.

    The model is set by :meth:`setup` (kept apart so that a model that cannot be
    explained leaves a usable session that reports the error).
    """

    def __init__(
        self,
        *,
        preprocess: Callable | None = None,
        crop: Callable | None = None,
        categories: Sequence[str] | None = None,
        steps: int = 10,
        reduce: str = "max_abs",
        lock: threading.RLock | None = None,
    ) -> None:
        self.lock = lock if lock is not None else threading.RLock()
        #: held around every model computation (the worker's requests, the evaluation
        #: panel's runs): the engine's hooks must not meet another thread's passes
        self.compute_lock = threading.RLock()
        self.preprocess = preprocess
        self.crop = crop
        self.categories = list(categories) if categories is not None else None
        self.steps = int(steps)
        self.reduce = reduce
        self.images = ImageStore()
        #: scored explanations per (image, target, method, scope)
        self.explanations = LruCache(CACHE_SIZE, EXPLANATION_BUDGET)
        #: plain-gradient maps per (image, target)
        self.gradients = LruCache(GRADIENT_CACHE_SIZE)
        #: baseline maps (H, W) per (image, target, method)
        self.baselines = LruCache(GRADIENT_CACHE_SIZE)
        #: how many explain / at_sparsity / reused / gradient / shown steps were taken
        self.stats = {
            "explain": 0,
            "at_sparsity": 0,
            "reused": 0,
            "gradient": 0,
            "shown": 0,
            "baseline": 0,
        }
        self.model: torch.nn.Module | None = None
        self.explainer: PathwayExplainer | None = None
        self.setup_error: BaseException | None = None
        #: the model's state when the cached results were made (see :meth:`follow_model`)
        self.watch: ModelWatch | None = None

    def setup(self, model: Any) -> None:
        """Take ``model``: ``None`` (the offline default), a ModelBundle (its preprocess,
        crop and categories fill those not given) or an ``nn.Module``. Raises
        :class:`~critpath_widgets.errors.CritpathError` if it cannot be explained."""
        if model is None:
            from ...models import load_model

            model = load_model()
        if hasattr(model, "model") and hasattr(model, "preprocess"):  # a ModelBundle
            self.model = model.model
            if self.preprocess is None:
                self.preprocess = model.preprocess
            if self.crop is None:
                self.crop = getattr(model, "crop", None)
            if self.categories is None and getattr(model, "categories", None):
                self.categories = list(model.categories)
        elif isinstance(model, torch.nn.Module):
            self.model = model
        else:
            raise InputError(
                "model must be None, a ModelBundle or a torch.nn.Module, "
                f"not {type(model).__name__}"
            )
        self.explainer = PathwayExplainer(self.model)
        self.watch = ModelWatch(self.model)

    def follow_model(self) -> bool:
        """Drop every result of an earlier state of the model (explanations, maps, each
        picture's predicted classes) if the model changed since they were made; returns
        whether it had."""
        if self.watch is None or not self.watch.changed():
            return False
        with self.lock:
            for cache in (self.explanations, self.gradients, self.baselines):
                cache.clear()
            entries = [e for e in self.images.entries.values() if e.ready and e.x is not None]
        for entry in entries:  # classify again with the model as it is now
            classify(entry, self.explainer.predict(entry.x))
        self.stats["model_changed"] = self.stats.get("model_changed", 0) + 1
        return True

    @property
    def methods(self) -> tuple[str, ...]:
        """The selection methods the explainer offers (the engine's without one), then
        the attribution baselines (when Captum is installed)."""
        from .baselines import available_baselines

        return tuple(getattr(self.explainer, "methods", METHODS)) + available_baselines()

    def path_dependent(self, method: str) -> bool:
        """Whether ``method``'s scores depend on the sparsity (greedy): another sparsity
        then runs it again instead of re-thresholding the cached scores."""
        scorer = getattr(self.explainer, "scorer", None)
        return bool(scorer is not None and getattr(scorer(method), "path_dependent", False))

    def category(self, index: int) -> str:
        """The class name of ``index`` (``"class i"`` without names)."""
        if self.categories is not None and 0 <= index < len(self.categories):
            return str(self.categories[index])
        return f"class {index}"

    # ------------------------------------------------------------------ pictures
    def add_image(self, source: Any, sample: str | None = None) -> ImageEntry:
        """Register a picture as the current one; forget the oldest ones and their caches."""
        with self.lock:
            entry = self.images.add(source, sample=sample)
            for image_id in self.images.trim():
                self.explanations.drop_image(image_id)
                self.gradients.drop_image(image_id)
                self.baselines.drop_image(image_id)
            return entry

    def entry_for(self, image_id: int) -> ImageEntry:
        """The picture of a request, or the last good one if that picture failed."""
        entry = self.images.get(image_id)
        if entry is None or entry.failed:
            entry = self.images.get(self.images.good)
            if entry is None:
                raise InputError("no image to explain")
        return entry

    def load(self, entry: ImageEntry) -> bool:
        """Prepare a picture (decode, preprocess, classify). On failure the picture is
        forgotten and the error re-raised; returns whether it was the current one."""
        try:
            prepare_image(
                entry,
                preprocess=self.preprocess,
                model=self.model,
                predict=getattr(self.explainer, "predict", None),
                crop=self.crop,
            )
        except BaseException:
            with self.lock:
                self.images.fail(entry)
            raise
        with self.lock:
            self.images.good = entry.id
        return self.images.current == entry.id

    @staticmethod
    def target_for(entry: ImageEntry, target: int | None) -> int:
        """The class to explain (``None``: the predicted one), checked against the model."""
        target = entry.predicted if target is None else int(target)
        n_classes = int(entry.probs.shape[0])
        if not 0 <= target < n_classes:
            raise InputError(
                f"target {target} is not a class index of this model (0..{n_classes - 1})"
            )
        return target

    # -------------------------------------------------------------- explanations
    def cached(self, key: tuple) -> Explanation | None:
        """The cached explanation of (image, target, method, scope), if any."""
        with self.lock:
            return self.explanations.get(key)

    def store(self, key: tuple, e: Explanation) -> None:
        """Cache ``e`` (its scores serve every later sparsity of the same key)."""
        with self.lock:
            self.explanations.put(key, e)

    def score(
        self,
        entry: ImageEntry,
        target: int,
        method: str,
        scope: str,
        sparsity: float,
        progress: Callable[[int, int], None] | None,
    ) -> Explanation:
        """Score the neurons and select the pathway (the slow step)."""
        options = {"steps": self.steps} if method == "neuron_intgrad" else {}
        e = self.explainer.explain(
            entry.x,
            target=target,
            method=method,
            sparsity=sparsity,
            scope=scope,
            progress=progress,
            **options,
        )
        self.stats["explain"] += 1
        return e

    def gradient(self, entry: ImageEntry, target: int) -> np.ndarray:
        """The plain-gradient map (H, W) of (picture, target), from the cache or computed."""
        key = (entry.id, target)
        with self.lock:
            g = self.gradients.get(key)
        if g is None:
            grad = self.explainer.gradient(entry.x, target=target).detach().float()
            g = reduce_channels(grad, self.reduce, entry.x.detach().float())[0]
            g = g.cpu().numpy().astype(np.float32)
            self.stats["gradient"] += 1
            with self.lock:
                self.gradients.put(key, g)
        return g

    def saliency(self, e: Explanation) -> np.ndarray:
        """The pathway-gradient map (H, W) float32 of ``e``."""
        sal = e.saliency_map(self.reduce)[0]
        sal = sal.detach().float().cpu().numpy() if hasattr(sal, "detach") else np.asarray(sal)
        return sal.astype(np.float32, copy=False)


__all__ = ["ExplainSession"]
