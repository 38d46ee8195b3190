"""The image list of a batch run: files, folders (recursive) and sample names, sorted."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from ..errors import InputError

log = logging.getLogger("critpath_widgets.batch")

#: File extensions (lower case) picked up inside folders; files named directly are
#: always tried, whatever their extension.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)


def find_images(specs: Sequence[str]) -> list[str]:
    """Sorted, de-duplicated image keys: sample names as given, file paths normalised.

    The sorted list is what ranks shard and what the merged file follows, so every
    process of a run must see the same list (same arguments, same folders).
    """
    from ..models import sample_images

    samples = set(sample_images())
    keys: set[str] = set()
    for spec in specs:
        p = Path(spec)
        if spec in samples and not p.exists():
            keys.add(spec)
        elif p.is_dir():
            found = [
                os.path.normpath(q)
                for q in p.rglob("*")
                if q.suffix.lower() in IMAGE_EXTENSIONS and q.is_file()
            ]
            if not found:
                log.warning("no images in folder %s", p)
            keys.update(found)
        elif p.is_file():
            keys.add(os.path.normpath(p))
        else:
            raise InputError(
                f"{spec!r} is neither a file, a folder nor a sample name "
                f"({', '.join(sorted(samples))})"
            )
    if not keys:
        raise InputError(
            f"no images found in {', '.join(map(repr, specs)) or 'the arguments'} (extensions "
            f"{', '.join(sorted(IMAGE_EXTENSIONS))}, searched recursively)"
        )
    return sorted(keys)


def load_image(key: str) -> Image.Image:
    """The RGB image of a key (a file first, else a sample name); InputError says why
    it cannot be read (the run records that reason and skips the image)."""
    from PIL import UnidentifiedImageError

    from ..models import sample_image

    p = Path(key)
    if not p.is_file():
        return sample_image(key)
    try:
        with Image.open(p) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise InputError(f"cannot read {p} as an image: {e}") from e


__all__ = ["IMAGE_EXTENSIONS", "find_images", "load_image"]
