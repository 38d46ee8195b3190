"""Conversions of what users pass to ``AttributionOverlay``: images to PNG bytes and
maps to finite 2-D float32 arrays (numpy and PIL only; torch by duck typing)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from ..errors import InputError


def image_to_png(image: Any) -> bytes:
    """PNG bytes of an RGB image given as a PIL image, PNG/JPEG/... bytes or an array.

    Arrays may be ``uint8`` of shape (H, W, 3), (H, W, 4) (alpha dropped) or (H, W)
    (grey), or floating point with values in [0, 1]. Raises ``InputError`` otherwise.
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, (bytes, bytearray, memoryview)):
        try:
            pil = Image.open(io.BytesIO(bytes(image)))
            pil.load()
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise InputError(f"image bytes are not a readable image: {exc}") from None
        if pil.format == "PNG" and pil.mode == "RGB":
            return bytes(image)
    elif isinstance(image, Image.Image):
        pil = image
    else:
        if hasattr(image, "detach"):
            image = image.detach().cpu().numpy()
        try:
            arr = np.asarray(image)
        except Exception as exc:  # noqa: BLE001 - any failure means "not an image"
            raise InputError(f"cannot read an image from {type(image).__name__}: {exc}") from None
        if arr.ndim == 3 and arr.shape[2] == 4:
            arr = arr[:, :, :3]
        if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
            raise InputError(
                f"image array must have shape (H, W, 3), (H, W, 4) or (H, W), not {arr.shape}"
            )
        if arr.size == 0:
            raise InputError(f"image array is empty (shape {arr.shape})")
        if arr.dtype == np.uint8:
            pass
        elif np.issubdtype(arr.dtype, np.floating):
            if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 1:
                raise InputError(
                    "a floating-point image array must hold finite values in [0, 1]; "
                    "pass uint8 (0-255) otherwise"
                )
            arr = np.round(arr * 255).astype(np.uint8)
        else:
            raise InputError(f"image array must be uint8 (or float in [0, 1]), not {arr.dtype}")
        pil = Image.fromarray(np.ascontiguousarray(arr))
    if pil.mode != "RGB":
        pil = pil.convert("RGB")
    out = io.BytesIO()
    pil.save(out, format="PNG")
    return out.getvalue()


def values_to_array(values: Any) -> np.ndarray:
    """A finite 2-D float32 array from a numpy array, a torch tensor or nested lists."""
    if hasattr(values, "detach"):  # a torch tensor, without importing torch
        values = values.detach().float().cpu().numpy()
    try:
        arr = np.asarray(values)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"cannot read map values from {type(values).__name__}: {exc}") from None
    if arr.ndim != 2:
        hint = " (use .squeeze() or pick one map)" if arr.ndim > 2 else ""
        raise InputError(f"map values must be a 2-D array, got shape {tuple(arr.shape)}{hint}")
    if arr.size == 0:
        raise InputError(f"map values are empty (shape {tuple(arr.shape)})")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_) or np.iscomplexobj(arr):
        raise InputError(f"map values must be real numbers, not {arr.dtype}")
    with np.errstate(over="ignore", invalid="ignore"):
        out = arr.astype("<f4")
    if not np.all(np.isfinite(out)):
        bad = int(np.size(out) - np.count_nonzero(np.isfinite(out)))
        raise InputError(
            f"map values contain {bad} NaN or infinite entr{'y' if bad == 1 else 'ies'} "
            "(or values beyond float32 range)"
        )
    return np.ascontiguousarray(out)


__all__ = ["image_to_png", "values_to_array"]
