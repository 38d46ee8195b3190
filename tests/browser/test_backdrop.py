"""The muted photo in a real Chromium: js/lib/canvas.js's dimPhoto (a grey "saturation"
blend, then black) gives the pixels of Python's colormaps.backdrop, the rule that the
static figures paint, and the heat layer's colours come out of the canvas unchanged.
No Jupyter server: a blank page imports the module from a data URL.
"""

from __future__ import annotations

import base64
from pathlib import Path

import harness as H
import numpy as np
import pytest

from critpath_widgets.widgets import colormaps as cm

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]

_PAINT = """
async ([src, w, h, pixels, dim]) => {
  const { dimPhoto } = await import(src);
  const canvas = document.createElement("canvas");
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(w, h);
  img.data.set(pixels);
  ctx.putImageData(img, 0, 0);
  dimPhoto(ctx, w, h, dim);
  return Array.from(ctx.getImageData(0, 0, w, h).data);
}
"""


@pytest.mark.parametrize("dim", [0.0, 0.35, 0.6, 1.0])
def test_dim_photo_in_chromium_matches_python_backdrop(dim):
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)
    rgba = np.concatenate([photo, np.full((6, 9, 1), 255, np.uint8)], axis=2)
    code = (ROOT / "js" / "lib" / "canvas.js").read_bytes()
    src = "data:text/javascript;base64," + base64.b64encode(code).decode()
    with H.browser_context() as ctx:
        page = ctx.new_page()
        page.goto("about:blank")
        out = page.evaluate(_PAINT, [src, 9, 6, rgba.ravel().tolist(), dim])
    got = np.asarray(out, np.uint8).reshape(6, 9, 4)
    assert (got[..., 3] == 255).all()
    ref = cm.backdrop(photo, dim)
    # the canvas works in 8 bits per step (two fills): a couple of levels of rounding
    diff = np.abs(got[..., :3].astype(int) - ref.astype(int))
    assert diff.max() <= 3, (dim, diff.max())
