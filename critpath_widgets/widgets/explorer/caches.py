"""The explorer's caches: pictures (decoded, preprocessed, classified), explanations, gradients.

* :class:`ImageStore` keeps the pictures by id: the one asked for (``current``), the
  last one that loaded (``good``, shown again when a new one fails) and the one on show
  (``shown``) are never evicted;
* :class:`LruCache` holds the scored explanations per (image, target, method, scope)
  (at most :data:`CACHE_SIZE`, within :data:`EXPLANATION_BUDGET` bytes), so that a
  sparsity change costs one masked pass (``Explanation.at_sparsity``), and
  the plain-gradient maps per (image, target). Keys start with the image id, so a
  picture's entries go when the picture goes.

:func:`cache_report` says what they hold (bytes, and whether any tensor keeps an
autograd graph: none may). Only the worker thread prepares pictures and fills the
caches; the explorer's lock guards every change, since the main thread reads and trims
them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from ...errors import CritpathError, InputError
from ..images import as_rgb_image

#: Scored explanations kept (each holds one score per neuron).
CACHE_SIZE = 6
#: Bytes the scored explanations may hold together (the latest one is always kept): on
#: the default model one holds ~80 MB (scores, contributions, sorted keys, pathway), so
#: about three fit; six would hold ~480 MB for results not on show.
EXPLANATION_BUDGET = 256 * 1024 * 1024
#: Plain-gradient maps kept (one (H, W) float32 array each).
GRADIENT_CACHE_SIZE = 4 * CACHE_SIZE
#: Pictures kept (decoded and preprocessed) besides the current one.
IMAGE_CACHE_SIZE = 6
#: Classes listed in the target picker (the most probable ones).
TOP_K = 5


@dataclass
class ImageEntry:
    """A picture as given, then (once prepared in the worker) as the model sees it."""

    id: int
    source: Any  # bytes, PIL image, array, path or tensor, as given; None once prepared
    sample: str | None = None
    ready: bool = False
    failed: bool = False
    x: torch.Tensor | None = None  # (1, C, H, W) model input
    display: Image.Image | None = None  # the picture under the overlays
    probs: np.ndarray | None = None  # softmax of the logits, (classes,)
    top: list[int] = field(default_factory=list)  # the TOP_K most probable classes

    @property
    def predicted(self) -> int:
        """The most probable class."""
        return self.top[0] if self.top else 0


class ImageStore:
    """The pictures by id, with the three ids the explorer tracks."""

    def __init__(self) -> None:
        self.entries: OrderedDict[int, ImageEntry] = OrderedDict()
        self._next_id = 0
        self.current = -1  # the picture asked for last
        self.good = -1  # the last picture that loaded
        self.shown = -1  # the picture on show

    def add(self, source: Any, sample: str | None = None) -> ImageEntry:
        """Register a new picture as the current one."""
        self._next_id += 1
        entry = ImageEntry(self._next_id, source, sample=sample)
        self.entries[entry.id] = entry
        self.current = entry.id
        return entry

    def get(self, image_id: int) -> ImageEntry | None:
        """The picture registered as ``image_id``, or None (unknown or forgotten)."""
        return self.entries.get(image_id)

    def fail(self, entry: ImageEntry) -> ImageEntry | None:
        """Forget a picture that did not load; the current one falls back to ``good``,
        which is returned."""
        entry.failed = True
        self.entries.pop(entry.id, None)
        if self.current == entry.id:
            self.current = self.good
        return self.entries.get(self.good)

    def trim(self, limit: int = IMAGE_CACHE_SIZE) -> list[int]:
        """Evict the oldest pictures beyond ``limit`` (never current, good or shown);
        returns the evicted ids."""
        keep = {self.current, self.good, self.shown}
        evicted = []
        while len(self.entries) > limit:
            victim = next((k for k in self.entries if k not in keep), None)
            if victim is None:
                break
            self.entries.pop(victim)
            evicted.append(victim)
        return evicted

    def num_classes(self) -> int | None:
        """Classes of the model, known once a picture was classified."""
        for entry in reversed(self.entries.values()):
            if entry.ready and entry.probs is not None:
                return int(entry.probs.shape[0])
        return None


class LruCache:
    """A bounded mapping that forgets the least recently used key first: beyond ``size``
    keys, and (with ``budget``) beyond ``budget`` bytes as ``nbytes`` counts them, the
    most recent key always kept."""

    def __init__(self, size: int, budget: int | None = None) -> None:
        self.size = size
        self.budget = budget
        self._data: OrderedDict[Hashable, Any] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._data

    def get(self, key: Hashable) -> Any | None:
        """The value (now the most recently used) or ``None``."""
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: Hashable, value: Any) -> None:
        """Store ``value`` as the most recently used, evicting beyond the bounds."""
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)
        if self.budget is not None:
            # sizes are taken now, not at first put: an explanation grows (sorted keys)
            sizes = [nbytes(v) for v in self._data.values()]
            while len(self._data) > 1 and sum(sizes) > self.budget:
                self._data.popitem(last=False)
                sizes.pop(0)

    def clear(self) -> None:
        """Forget everything (the model changed)."""
        self._data.clear()

    def drop_image(self, image_id: int) -> None:
        """Forget every key of the picture ``image_id`` (keys start with the image id)."""
        for key in [k for k in self._data if k[0] == image_id]:
            del self._data[key]


def prepare_image(
    entry: ImageEntry,
    *,
    preprocess: Callable[[Image.Image], torch.Tensor] | None,
    model: torch.nn.Module,
    predict: Callable[[torch.Tensor], torch.Tensor] | None,
    crop: Callable[[Image.Image], Image.Image] | None,
) -> None:
    """Decode, preprocess and classify ``entry`` in place (raises ``InputError`` if bad)."""
    src = entry.source
    pil = None
    if isinstance(src, torch.Tensor):
        x = src.detach()
    else:
        if entry.sample is not None:
            from ...models import sample_image

            pil = sample_image(entry.sample)
        else:
            pil = as_rgb_image(src)
        try:
            x = preprocess(pil)
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
        param = next(model.parameters())
        x = x.to(device=param.device, dtype=param.dtype)
    except StopIteration:
        pass
    if predict is not None:
        logits = predict(x)  # eval mode, no hooks, no grad
    else:
        with torch.no_grad():
            logits = model(x)
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        raise InputError("the model must return logits of shape (1, classes)")
    if pil is not None and crop is not None:
        display = crop(pil).convert("RGB")
    else:
        display = tensor_to_display(x)
    entry.x = x
    entry.display = display
    classify(entry, logits)
    entry.ready = True
    entry.source = None  # free the raw bytes


def classify(entry: ImageEntry, logits: torch.Tensor) -> None:
    """Set the picture's class probabilities and its :data:`TOP_K` classes from the
    model's (1, classes) logits."""
    probs = torch.softmax(logits.float(), dim=1)[0].cpu().numpy()
    entry.probs = probs
    entry.top = [int(i) for i in np.argsort(-probs, kind="stable")[:TOP_K]]


def tensor_to_display(x: torch.Tensor) -> Image.Image:
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


def _walk(obj: Any, seen: set[int], found: dict[int, Any], depth: int = 0) -> None:
    """Collect the tensors and arrays reachable from ``obj`` into ``found`` (by storage),
    through dataclasses, plain objects, dicts and sequences; never into a model."""
    if depth > 8 or id(obj) in seen or obj is None or isinstance(obj, (str, bytes, int, float)):
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        key = obj.untyped_storage().data_ptr() if obj.numel() else id(obj)
        found.setdefault(key, obj)
        return
    if isinstance(obj, np.ndarray):
        base = obj
        while isinstance(base.base, np.ndarray):
            base = base.base
        found.setdefault(id(base), base)
        return
    if isinstance(obj, torch.nn.Module) or callable(obj) and not hasattr(obj, "__dict__"):
        return
    if isinstance(obj, dict):
        children = list(obj.values())
    elif isinstance(obj, (list, tuple, set, frozenset)):
        children = list(obj)
    elif isinstance(obj, (LruCache, OrderedDict)):
        children = list(obj._data.values()) if isinstance(obj, LruCache) else list(obj.values())
    elif hasattr(obj, "__dict__"):
        # an Explanation's explainer holds the model and its buffers: not a cache's own
        children = [v for k, v in vars(obj).items() if k != "explainer"]
    else:
        return
    for child in children:
        _walk(child, seen, found, depth + 1)


def _tensors_bytes(found: dict[int, Any]) -> tuple[int, int]:
    """Bytes of the distinct tensors and arrays in ``found``, and how many tensors keep
    an autograd graph (or require grad)."""
    total, graphs = 0, 0
    for v in found.values():
        if isinstance(v, torch.Tensor):
            total += v.untyped_storage().nbytes()
            graphs += int(v.grad_fn is not None or v.requires_grad)
        else:
            total += v.nbytes
    return total, graphs


def nbytes(obj: Any) -> int:
    """Bytes of the distinct tensors and arrays reachable from ``obj`` (not its model)."""
    found: dict[int, Any] = {}
    _walk(obj, set(), found)
    return _tensors_bytes(found)[0]


def cache_report(session: Any) -> dict[str, Any]:
    """What the session's caches hold: ``bytes`` of distinct tensors and arrays,
    ``graphs`` (cached tensors that keep an autograd graph or require grad: must be 0),
    ``entries`` per cache; for benchmarks and tests, not for the hot path."""
    found: dict[int, Any] = {}
    seen: set[int] = set()
    with session.lock:
        caches = {
            "explanations": session.explanations,
            "gradients": session.gradients,
            "baselines": session.baselines,
        }
        entries = {name: len(c) for name, c in caches.items()}
        entries["images"] = len(session.images.entries)
        for c in caches.values():
            _walk(list(c._data.values()), seen, found)
        for entry in session.images.entries.values():
            _walk([entry.x, entry.probs, entry.source], seen, found)
    total, graphs = _tensors_bytes(found)
    return {"bytes": total, "graphs": graphs, "entries": entries}


__all__ = [
    "CACHE_SIZE",
    "EXPLANATION_BUDGET",
    "GRADIENT_CACHE_SIZE",
    "IMAGE_CACHE_SIZE",
    "TOP_K",
    "ImageEntry",
    "cache_report",
    "nbytes",
    "ImageStore",
    "LruCache",
    "prepare_image",
    "tensor_to_display",
]
