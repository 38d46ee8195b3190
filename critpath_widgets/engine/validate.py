"""Checks of what a caller passes in: inputs, targets, options, the progress callback.

Every check raises one of the package's errors (:mod:`critpath_widgets.errors`) with a
message that says what was expected, before any pass runs.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import InputError, InputTypeError, OptionError
from .sites import model_device, model_dtype

ProgressFn = Callable[[int, int], None]

#: options every method accepts, with their defaults
COMMON_OPTIONS: dict[str, Any] = {"granularity": "neuron", "progress": None}


def check_input(
    x: Any, model: nn.Module, in_channels: int | None, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """``x`` as a detached (N, C, H, W) batch on the model's device, in ``dtype`` (None:
    the model's), after checking it is one (finite, non-empty, with the first
    convolution's channels)."""
    if not isinstance(x, torch.Tensor):
        raise InputTypeError(
            f"x must be a torch.Tensor shaped (N, C, H, W), got {type(x).__name__}"
        )
    if x.dim() != 4:
        raise InputError(
            f"x must be 4-D (N, C, H, W), got shape {tuple(x.shape)}"
            + (" (add a batch dimension: x[None])" if x.dim() == 3 else "")
        )
    if x.shape[0] == 0 or x.numel() == 0:
        raise InputError(f"x is empty: shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise InputTypeError(f"x must be a floating-point tensor, got {x.dtype}")
    if in_channels is not None and x.shape[1] != in_channels:
        raise InputError(
            f"x has {x.shape[1]} channels but the model's first convolution expects {in_channels}"
        )
    if not bool(torch.isfinite(x).all()):
        raise InputError("x contains NaN or infinite values")
    return x.detach().to(device=model_device(model), dtype=dtype or model_dtype(model))


def resolve_target(target: Any, logits: torch.Tensor) -> torch.Tensor:
    """The target class of every sample as a LongTensor (N,) on the logits' device: the
    predicted class when ``target`` is None, else an int, ints, an integer tensor or
    numpy integers (a scalar or an array)."""
    n, k = logits.shape
    if target is None:
        return logits.detach().argmax(dim=1)
    if isinstance(target, np.ndarray | np.generic) and not isinstance(target, np.bool_):
        if target.dtype.kind not in "iu":
            raise InputTypeError(f"target must hold integers, got numpy {target.dtype}")
        target = torch.as_tensor(np.asarray(target, dtype=np.int64))
    if isinstance(target, bool | np.bool_):
        raise InputTypeError("target must be an int, a sequence of ints or a LongTensor")
    if isinstance(target, int):
        t = torch.full((n,), target, dtype=torch.long)
    elif isinstance(target, torch.Tensor):
        if target.is_floating_point() or target.dtype == torch.bool or target.is_complex():
            raise InputTypeError(f"target must hold integers, got {target.dtype}")
        t = target.reshape(-1).long()
        if t.numel() == 1:
            t = t.expand(n)
    elif isinstance(target, Sequence) and all(
        isinstance(v, int | np.integer) and not isinstance(v, bool) for v in target
    ):
        t = torch.tensor(list(target), dtype=torch.long)
    else:
        raise InputTypeError(
            f"target must be an int, a sequence of ints or a LongTensor, got {target!r}"
        )
    if t.numel() != n:
        raise InputError(f"target has {t.numel()} entries for a batch of {n}")
    bad = (t < 0) | (t >= k)
    if bool(bad.any()):
        raise InputError(
            f"target {t[bad][0].item()} out of range: the model has {k} classes (0..{k - 1})"
        )
    return t.to(logits.device)


def check_options(
    method: str, options: Mapping[str, Any], accepted: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """Every option of ``method`` (the common ones and ``accepted[method]``), defaults
    filled in; an option of another method is named as such."""
    allowed = {**COMMON_OPTIONS, **accepted[method]}
    for k in options:
        if k not in allowed:
            users = [m for m, o in accepted.items() if k in o]
            hint = f" (it belongs to {', '.join(users)})" if users else ""
            raise OptionError(
                f"unknown option {k!r} for method {method!r}{hint}; accepted: "
                f"{', '.join(sorted(allowed))}"
            )
    return {**allowed, **options}


def check_positive_int(opts: Mapping[str, Any], *names: str) -> None:
    """Each named option is a positive integer (not a bool)."""
    for k in names:
        v = opts[k]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InputError(f"{k} must be a positive integer, got {v!r}")


def progress_fn(progress: Any, method: str) -> Any:
    """Normalise the progress option to None, a tqdm-backed callable, or the user's callable."""
    if progress is None or progress is False:
        return None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(desc=method, unit="step")

        class _Bar:
            def __call__(self, done: int, total: int) -> None:
                bar.total = total
                bar.n = done
                bar.refresh()

            def close(self) -> None:
                bar.close()

        return _Bar()
    if callable(progress):
        return progress
    raise OptionError(f"progress must be None, True or a callable(done, total), got {progress!r}")


def caller_level() -> int:
    """The ``stacklevel`` of the first frame outside this package (and contextlib), so
    that a warning names the user's call."""
    here = Path(__file__).resolve().parent.parent
    frames = traceback.extract_stack()[:-1]
    for level, frame in enumerate(reversed(frames), start=1):
        f = Path(frame.filename)
        if here not in f.parents and f.name != "contextlib.py":
            return level
    return 2
