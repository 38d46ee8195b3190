"""Decoding and validation of user images (uploads, arrays, paths) for the widgets.

Everything here turns odd or hostile input into a plain RGB ``PIL.Image`` or raises
:class:`critpath_widgets.errors.InputError` with a message meant for the person who
uploaded the file (it is shown in the widget's message area):

* bytes that are not an image, truncated or corrupt files;
* decompression bombs: Pillow's ``Image.MAX_IMAGE_PIXELS`` limit (its warning as well
  as its error) becomes an ``InputError``;
* huge photos are downscaled (JPEG draft mode first, so a 50-megapixel photo is never
  decoded at full size) to at most ``max_side`` pixels on the longer side;
* grayscale, bilevel, palette, RGBA / LA (composited on white), CMYK, YCbCr, HSV,
  16-bit and 32-bit integer and float images are converted to 8-bit RGB;
  modes that cannot be converted meaningfully are rejected;
* EXIF orientation is applied; animated images use their first frame.

No widget library is imported here.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputError, InputTypeError

#: Longer side, in pixels, that decoded images are downscaled to (the models see 224).
MAX_SIDE = 1024
#: Smallest accepted side, in pixels.
MIN_SIDE = 8
#: Pixel limit used when Pillow's own limit is switched off (``MAX_IMAGE_PIXELS = None``).
FALLBACK_MAX_PIXELS = 200_000_000

_HIGH_DEPTH_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_DIRECT_MODES = {"RGB", "L", "1", "CMYK", "YCbCr", "HSV", "RGBX"}


def _pixel_limit() -> int:
    limit = Image.MAX_IMAGE_PIXELS
    return int(limit) if limit else FALLBACK_MAX_PIXELS


def _bomb_message(size: tuple[int, int] | None = None) -> str:
    dims = f" ({size[0]} x {size[1]} pixels)" if size else ""
    return (
        f"The image is too large to decode safely{dims}: more than "
        f"{_pixel_limit():,} pixels (a possible decompression bomb). "
        "Please upload a smaller picture."
    )


def load_image(
    data: bytes | bytearray | memoryview,
    *,
    max_side: int = MAX_SIDE,
    min_side: int = MIN_SIDE,
) -> Image.Image:
    """Decode image file bytes into an RGB ``PIL.Image`` of at most ``max_side`` pixels.

    Raises ``InputError`` (a ``ValueError``) with a readable message for anything that
    is not a usable picture; ``InputTypeError`` if ``data`` is not bytes-like.
    """
    if isinstance(data, memoryview):
        data = data.tobytes()
    if not isinstance(data, bytes | bytearray):
        raise InputTypeError(
            f"load_image expects the bytes of an image file, got {type(data).__name__}"
        )
    if len(data) == 0:
        raise InputError("The uploaded file is empty.")
    with warnings.catch_warnings():
        # Pillow warns between MAX_IMAGE_PIXELS and twice that, and raises above it.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(bytes(data)))
        except UnidentifiedImageError as err:
            raise InputError(
                "The file is not an image that can be read (supported: PNG, JPEG, GIF, "
                "BMP, TIFF, WebP, ...)."
            ) from err
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise InputError(_bomb_message()) from err
        except Exception as err:  # noqa: BLE001 - any decoder failure is bad input
            raise InputError(f"The image file could not be read: {err}") from err
        try:
            return _finish(im, max_side=max_side, min_side=min_side)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise InputError(_bomb_message(getattr(im, "size", None))) from err
        finally:
            im.close()


def _finish(im: Image.Image, *, max_side: int, min_side: int) -> Image.Image:
    w, h = im.size
    if w * h > _pixel_limit():
        raise InputError(_bomb_message((w, h)))
    if getattr(im, "is_animated", False):
        im.seek(0)
    # JPEG: decode at a reduced scale directly (cheap for huge photos).
    if im.format == "JPEG" and max(w, h) > 2 * max_side:
        im.draft(im.mode, (max_side, max_side))
    try:
        im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise
    except Exception as err:  # noqa: BLE001 - truncated / corrupt data
        raise InputError(
            f"The image file is corrupt or truncated and could not be decoded ({err})."
        ) from err
    try:
        im = ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001 - a broken EXIF block is not worth rejecting the image
        pass
    return to_rgb(im, max_side=max_side, min_side=min_side)


def to_rgb(
    image: Any,
    *,
    max_side: int = MAX_SIDE,
    min_side: int = MIN_SIDE,
) -> Image.Image:
    """Convert a PIL image or a numpy array into an 8-bit RGB ``PIL.Image``.

    Arrays may be ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)``, of an
    integer type (uint8 / uint16 ranges) or floats in ``[0, 1]`` (other float ranges are
    min-max scaled). Images larger than ``max_side`` are downscaled.
    """
    if isinstance(image, np.ndarray):
        image = _array_to_pil(image)
    if not isinstance(image, Image.Image):
        raise InputTypeError(f"expected a PIL image or a numpy array, got {type(image).__name__}")
    w, h = image.size
    if w < min_side or h < min_side:
        raise InputError(
            f"The image is too small ({w} x {h} pixels); at least {min_side} x {min_side} "
            "is needed."
        )
    if w * h > _pixel_limit():
        raise InputError(_bomb_message((w, h)))
    mode = image.mode
    if mode in _HIGH_DEPTH_MODES:
        image = _high_depth_to_l(image)
    elif mode == "P":
        has_alpha = "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
    elif mode not in _ALPHA_MODES and mode not in _DIRECT_MODES:
        try:
            image = image.convert("RGB")
        except Exception as err:  # noqa: BLE001
            raise InputError(
                f"Images in Pillow mode {mode!r} cannot be converted to RGB; please save "
                "the picture as an ordinary RGB or grayscale PNG or JPEG."
            ) from err
    if image.mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    if image.mode != "RGB":
        try:
            image = image.convert("RGB")
        except Exception as err:  # noqa: BLE001
            raise InputError(
                f"Images in Pillow mode {image.mode!r} cannot be converted to RGB."
            ) from err
    if max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return image


def _float_to_uint8(arr: np.ndarray, what: str) -> np.ndarray:
    """Float pixels -> uint8: [0, 1] is scaled by 255, [0, 255] kept, anything else
    stretched from its min-max; NaN/inf are rejected."""
    a = arr.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise InputError(f"{what} contains NaN or infinite pixel values.")
    lo, hi = float(a.min()), float(a.max())
    if lo >= 0.0 and hi <= 1.0:
        a = a * 255.0
    elif not (lo >= 0.0 and hi <= 255.0):
        a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def _high_depth_to_l(image: Image.Image) -> Image.Image:
    """16-bit / 32-bit integer or float single-band image -> 8-bit grayscale."""
    arr = np.asarray(image)
    if arr.dtype.kind == "f":
        return Image.fromarray(_float_to_uint8(arr, "The image"), mode="L")
    arr = arr.astype(np.int64)
    lo, hi = int(arr.min()), int(arr.max())
    if image.mode.startswith("I;16") or (lo >= 0 and hi <= 65535 and hi > 255):
        scaled = arr / 257.0
    elif lo >= 0 and hi <= 255:
        scaled = arr.astype(np.float64)
    else:
        scaled = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros(arr.shape)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")


def _array_to_pil(arr: np.ndarray) -> Image.Image:
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        raise InputError(
            f"The image array has shape {arr.shape}; channels must come last (H, W, C)."
        )
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise InputError(
            f"The image array has shape {arr.shape}; expected (H, W), (H, W, 3) or (H, W, 4)."
        )
    if arr.size == 0:
        raise InputError("The image array is empty.")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype.kind == "f":
        arr = _float_to_uint8(arr, "The image array")
    elif arr.dtype.kind in "iu":
        hi = int(arr.max())
        lo = int(arr.min())
        if lo < 0:
            raise InputError("The image array has negative integer values.")
        if hi > 255:
            arr = np.clip(np.rint(arr / 257.0), 0, 255)
        arr = arr.astype(np.uint8)
    else:
        raise InputError(f"Image arrays of dtype {arr.dtype} are not supported.")
    mode = "L" if arr.ndim == 2 else ("RGB" if arr.shape[-1] == 3 else "RGBA")
    return Image.fromarray(np.ascontiguousarray(arr), mode=mode)


def as_rgb_image(image: Any, *, max_side: int = MAX_SIDE) -> Image.Image:
    """Accept a PIL image, numpy array, file bytes, or a path and return RGB ``PIL.Image``."""
    if isinstance(image, bytes | bytearray | memoryview):
        return load_image(image, max_side=max_side)
    if isinstance(image, str | os.PathLike):
        path = Path(image)
        if not path.is_file():
            raise InputError(f"No image file at {str(path)!r}.")
        return load_image(path.read_bytes(), max_side=max_side)
    if isinstance(image, Image.Image):
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                image.load()
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
                raise InputError(_bomb_message(image.size)) from err
            except Exception as err:  # noqa: BLE001
                raise InputError(f"The image could not be decoded ({err}).") from err
        return to_rgb(image, max_side=max_side)
    if isinstance(image, np.ndarray):
        return to_rgb(image, max_side=max_side)
    raise InputTypeError(
        "image must be a PIL image, a numpy array, image file bytes or a path, "
        f"not {type(image).__name__}"
    )


__all__ = ["load_image", "to_rgb", "as_rgb_image", "MAX_SIDE", "MIN_SIDE"]
