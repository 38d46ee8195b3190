"""Copy the browser tests' screenshots into docs/ as small PNGs for the README.

    python -m pytest tests/browser -q        # writes test-artifacts/*.png
    python docs/update_screenshots.py        # -> docs/*.png (at most 720 px wide, 128 colours)

Only screenshots that the browser tests made are used: the README shows what the tests
saw in a real JupyterLab / Notebook 7 page in Chromium.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
#: test artifact -> docs file
SHOTS = {
    "explorer.png": "explorer.png",
    "compare.png": "compare.png",
    "layer-panel.png": "layer_panel.png",
    "interventions.png": "interventions.png",
    "channel-gallery.png": "channel_gallery.png",
    "explorer-700px.png": "explorer_narrow.png",
    "explorer-notebook7.png": "explorer_notebook7.png",
    "lab-jupyterlab.png": "lab_jupyterlab.png",  # tests/browser/test_quickstart.py
}
MAX_WIDTH = 720


def shrink(src: Path, dst: Path) -> int:
    """Write ``src`` at most :data:`MAX_WIDTH` wide with a 128-colour palette; bytes."""
    with Image.open(src) as im:
        im = im.convert("RGB")
        if im.width > MAX_WIDTH:
            im = im.resize((MAX_WIDTH, round(im.height * MAX_WIDTH / im.width)), Image.LANCZOS)
        im.quantize(128, method=Image.Quantize.MEDIANCUT).save(dst, optimize=True)
    return dst.stat().st_size


def main() -> int:
    missing = []
    for name, out in SHOTS.items():
        src = ARTIFACTS / name
        if not src.is_file():
            missing.append(name)
            continue
        size = shrink(src, ROOT / "docs" / out)
        print(f"docs/{out}: {size / 1024:.0f} KB (from test-artifacts/{name})")
    if missing:
        print(f"not made by the browser tests this time: {', '.join(missing)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
