"""AttributionOverlay: trait contract, binary payloads, validation and rollback."""

from __future__ import annotations

import io

import matplotlib
import numpy as np
import pytest
from ipywidgets.widgets.widget import _remove_buffers
from PIL import Image

from critpath_widgets.errors import InputError
from critpath_widgets.report import MapStyle
from critpath_widgets.widgets import colormaps as cm
from critpath_widgets.widgets import overlay as ov
from critpath_widgets.widgets.overlay import AttributionOverlay

pytestmark = pytest.mark.skipif(
    not ov.ESM_PATH.is_file(), reason="front end not built (npm install && npm run build)"
)


@pytest.fixture
def values() -> np.ndarray:
    return np.array([[-2.0, -1.0, 0.0], [1.0, 2.0, 4.0]], dtype=np.float64)


@pytest.fixture
def widget(values) -> AttributionOverlay:
    img = np.zeros((20, 30, 3), np.uint8)
    img[:, :, 0] = 200
    return AttributionOverlay(image=img, values=values, label="test")


@pytest.fixture
def sent(widget):
    """Messages the widget sends to the browser (the comm is a DummyComm here)."""
    out: list[tuple[dict, list]] = []
    widget.comm.send = lambda data=None, buffers=None, **kw: out.append((data, buffers or []))
    return out


def snapshot(w: AttributionOverlay) -> dict:
    return {k: getattr(w, k) for k in w.keys if not k.startswith("_")}


# ---- payloads ---------------------------------------------------------------------


def test_values_travel_as_float32_bytes_with_shape(widget, values):
    assert widget.shape == (2, 3)
    assert isinstance(widget.values, bytes)
    assert len(widget.values) == 2 * 3 * 4
    np.testing.assert_array_equal(
        np.frombuffer(widget.values, dtype="<f4").reshape(2, 3), values.astype(np.float32)
    )
    np.testing.assert_array_equal(widget.array, values.astype(np.float32))


def test_state_carries_binary_buffers_not_lists(widget):
    state, buffer_paths, buffers = _remove_buffers(widget.get_state())
    for key in ("values", "luts", "image", "display"):
        assert [key] in buffer_paths, f"{key} should travel as a binary buffer"
        assert key not in state
    by_key = {p[0]: b for p, b in zip(buffer_paths, buffers, strict=True)}
    assert bytes(by_key["values"]) == widget.values
    assert len(by_key["luts"]) == len(widget.colormaps) * 256 * 4
    assert bytes(by_key["image"])[:8] == b"\x89PNG\r\n\x1a\n"
    assert state["shape"] == [2, 3] or tuple(state["shape"]) == (2, 3)
    # the overlay's defaults are the readable style the figures use
    style = MapStyle()
    assert state["colormap"] == style.colormap == "inferno"
    assert state["sign"] == style.sign == "absolute"
    assert state["opacity"] == pytest.approx(style.opacity)
    assert state["clip_percentile"] == pytest.approx(style.clip_percentile)
    assert state["smooth"] == pytest.approx(style.smooth)
    assert state["photo_dim"] == pytest.approx(style.photo_dim)
    assert state["gamma"] == pytest.approx(style.gamma)
    assert state["map_only"] is False
    assert state["label"] == "test"
    assert state["display_width"] == 320


def test_image_is_rgb_png_from_array_pil_and_bytes():
    arr = np.random.default_rng(0).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    w = AttributionOverlay(image=arr)
    img = Image.open(io.BytesIO(w.image))
    assert img.format == "PNG" and img.mode == "RGB" and img.size == (7, 5)
    np.testing.assert_array_equal(np.asarray(img), arr)

    rgba = Image.fromarray(np.dstack([arr, np.full((5, 7), 128, np.uint8)]), "RGBA")
    buf = io.BytesIO()
    rgba.save(buf, format="PNG")
    w.set_data(image=buf.getvalue())
    assert Image.open(io.BytesIO(w.image)).mode == "RGB"
    w.set_data(image=Image.fromarray(arr).convert("L"))
    assert Image.open(io.BytesIO(w.image)).mode == "RGB"


def test_luts_equal_matplotlib(widget):
    assert widget.colormaps == list(cm.DEFAULT_COLORMAPS)
    assert len(cm.DEFAULT_COLORMAPS) >= 12
    luts = np.frombuffer(widget.luts, dtype=np.uint8).reshape(-1, 256, 4)
    for k, name in enumerate(widget.colormaps):
        expected = matplotlib.colormaps[name](np.linspace(0, 1, 256), bytes=True)
        np.testing.assert_array_equal(luts[k], expected)
    assert cm.lut("viridis").shape == (256, 4) and cm.lut("viridis").dtype == np.uint8


def test_unknown_colormap_name_is_named_in_the_error():
    with pytest.raises(InputError, match="'no_such_map'"):
        cm.lut("no_such_map")


# ---- set_data -----------------------------------------------------------------------


def test_set_data_accepts_tensors_and_sends_values_with_shape_at_once(widget, sent):
    torch = pytest.importorskip("torch")
    t = torch.arange(12, dtype=torch.float64).reshape(3, 4).requires_grad_(True) * 1.0
    widget.set_data(values=t)
    assert widget.shape == (3, 4)
    np.testing.assert_array_equal(widget.array, np.arange(12, dtype=np.float32).reshape(3, 4))
    updates = [d for d, _ in sent if d["method"] == "update"]
    assert len(updates) == 1
    assert updates[0]["state"].get("shape") in ([3, 4], (3, 4))
    assert ["values"] in updates[0]["buffer_paths"]


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.array([[1.0, np.nan]]), "NaN"),
        (np.array([[1.0, np.inf]]), "NaN or infinite"),
        (np.array([[1e39, 0.0]]), "float32"),
        (np.zeros((2, 2, 2)), "2-D"),
        (np.zeros(4), "2-D"),
        (np.zeros((0, 3)), "empty"),
        (np.array([["a", "b"]]), "real numbers"),
    ],
)
def test_bad_values_rejected_and_state_unchanged(widget, bad, match):
    before = snapshot(widget)
    with pytest.raises(InputError, match=match):
        widget.set_data(image=np.zeros((4, 4, 3), np.uint8), values=bad)
    assert snapshot(widget) == before


def test_nan_tensor_rejected():
    torch = pytest.importorskip("torch")
    with pytest.raises(InputError, match="NaN"):
        AttributionOverlay(values=torch.tensor([[0.0, float("nan")]]))


def test_bad_image_rejected(widget):
    before = snapshot(widget)
    with pytest.raises(InputError):
        widget.set_data(image=b"not an image")
    with pytest.raises(InputError):
        widget.set_data(image=np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(InputError):
        widget.image = b"GIF89a..."
    assert snapshot(widget) == before


def test_constructor_keywords(values):
    w = AttributionOverlay(
        values=values,
        colormap="viridis",
        opacity=0.25,
        sign="absolute",
        clip_percentile=90,
        label="L",
        message="hello",
        display_width=400,
    )
    assert (w.colormap, w.opacity, w.sign, w.clip_percentile) == ("viridis", 0.25, "absolute", 90)
    assert (w.label, w.message, w.display_width, w.shape) == ("L", "hello", 400, (2, 3))
    with pytest.raises(InputError):
        AttributionOverlay(values=values, sign="both")
    with pytest.raises(InputError, match="needs 24"):
        AttributionOverlay(values=b"\0" * 20, shape=(2, 3))


# ---- traits from the browser and from Python -------------------------------------


def test_front_end_changes_update_python(widget):
    widget.set_state({"opacity": 0.3})
    assert widget.opacity == pytest.approx(0.3)
    widget.set_state({"sign": "negative", "colormap": "viridis", "clip_percentile": 95.0})
    assert (widget.sign, widget.colormap, widget.clip_percentile) == ("negative", "viridis", 95.0)


def test_a_sign_change_from_the_browser_sends_the_display_map_back(widget, sent, values):
    widget.set_state({"sign": "signed"})
    keys = {k for data, _ in sent for k in data.get("state", {})}
    binary = {p[0] for data, _ in sent for p in data.get("buffer_paths", [])}
    assert "display_sign" in keys and "display" in binary, (keys, binary)
    assert widget.display_sign == "signed"
    np.testing.assert_allclose(
        np.frombuffer(widget.display, "<f4").reshape(2, 3),
        cm.display_map(values, "signed", widget.smooth),
    )


@pytest.mark.parametrize(
    "trait, bad",
    [
        ("colormap", "no_such_map"),
        ("colormap", 3),
        ("sign", "both"),
        ("opacity", 1.5),
        ("opacity", -0.1),
        ("opacity", float("nan")),
        ("opacity", "x"),
        ("clip_percentile", 0.0),
        ("clip_percentile", 100.5),
        ("display_width", 0),
        ("shape", (-1, 3)),
    ],
)
def test_invalid_trait_raises_input_error_and_leaves_state(widget, trait, bad):
    before = snapshot(widget)
    with pytest.raises(InputError) as info:
        setattr(widget, trait, bad)
    if trait == "colormap" and isinstance(bad, str):
        assert repr(bad) in str(info.value)
    assert snapshot(widget) == before
    with pytest.raises(InputError):
        widget.set_state({trait: bad})
    assert snapshot(widget) == before


def test_bad_value_from_browser_rolls_back_the_whole_batch(widget, sent):
    before = snapshot(widget)
    with pytest.raises(InputError, match="sign"):
        widget.set_state({"opacity": 0.1, "colormap": "cividis", "sign": "bogus"})
    assert snapshot(widget) == before  # opacity, colormap, colormaps and luts all rolled back
    # the browser is told Python's values again
    resent = {k for d, _ in sent if d["method"] == "update" for k in d["state"]}
    assert {"opacity", "colormap", "sign"} <= resent


def test_new_matplotlib_colormap_is_appended_with_its_lut(widget, sent):
    n = len(widget.colormaps)
    widget.colormap = "cividis"
    assert widget.colormaps[-1] == "cividis" and len(widget.colormaps) == n + 1
    luts = np.frombuffer(widget.luts, dtype=np.uint8).reshape(-1, 256, 4)
    np.testing.assert_array_equal(luts[-1], cm.lut("cividis"))
    # one message carries the name, the list and the LUTs
    updates = [d for d, _ in sent if d["method"] == "update"]
    assert len(updates) == 1
    assert {"colormap", "colormaps"} <= set(updates[0]["state"])
    assert ["luts"] in updates[0]["buffer_paths"]
    widget.colormap = "RdBu_r"  # already listed: nothing appended
    assert len(widget.colormaps) == n + 1


def test_colormaps_list_keeps_current_and_recomputes_luts(widget):
    widget.colormaps = ["viridis", "magma", "viridis"]
    assert widget.colormaps == ["viridis", "magma", "inferno"]
    assert len(widget.luts) == 3 * 1024
    before = snapshot(widget)
    with pytest.raises(InputError, match="nope"):
        widget.colormaps = ["viridis", "nope"]
    assert snapshot(widget) == before


# ---- the reference colouring matches the browser's rules -------------------------------


def test_vmax_and_colorize_follow_the_documented_rules():
    v = np.array([[-4.0, -1.0, 0.0, 0.0, 2.0, 3.0]])
    assert ov.normalised_vmax(v, "signed", 100) == 4
    assert ov.normalised_vmax(v, "positive", 50) == pytest.approx(2.5)
    assert ov.normalised_vmax(v, "negative", 100) == 4
    assert ov.normalised_vmax(np.zeros((2, 2)), "signed", 99.5) == 1.0

    ramp = np.zeros((256, 4), np.uint8)
    ramp[:, 0] = np.arange(256)
    ramp[:, 1] = 255 - np.arange(256)
    ramp[:, 2] = 7
    ramp[:, 3] = 255
    a = round(0.6 * 255)
    rgba = ov.colorize(np.array([[-2.0, 0.0, 1.0, 2.0, 4.0]]), ramp, "signed", 0.6, vmax=2)
    assert rgba[0].tolist() == [
        [0, 255, 7, a],
        [128, 127, 7, 0],  # zero attribution leaves the image untouched
        [192, 63, 7, int(np.floor(0.6 * 0.5 * 255 + 0.5))],
        [255, 0, 7, a],
        [255, 0, 7, a],
    ]
    rgba = ov.colorize(np.array([[-1.0, 0.0, 1.0, 2.0]]), ramp, "positive", 1.0, vmax=2)
    assert rgba[0].tolist() == [
        [0, 255, 7, 0],
        [0, 255, 7, 0],
        [128, 127, 7, 128],
        [255, 0, 7, 255],
    ]


def test_to_rgba_uses_current_traits(widget):
    widget.colormap = "gray"
    widget.sign = "absolute"
    widget.opacity = 1.0
    widget.clip_percentile = 100
    rgba = widget.to_rgba()
    assert rgba.shape == (2, 3, 4)
    assert rgba[1, 2].tolist() == [255, 255, 255, 255]  # |4| = vmax
    assert rgba[0, 2, 3] == 0  # zero attribution is transparent in one-sided modes


# ---- display smoothing, muted photo, map alone ------------------------------------------


def test_display_map_is_sent_and_the_raw_map_is_untouched():
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(5)
    v = rng.standard_normal((30, 40)).astype(np.float32)
    w = AttributionOverlay(values=v, smooth=0.05, sign="absolute")
    # an independent reference: scipy's filter of |v| with sigma = 0.05 x 40 pixels
    ref = gaussian_filter(np.abs(v), sigma=2.0, mode="nearest")
    got = np.frombuffer(w.display, "<f4").reshape(30, 40)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    assert w.display_sign == "absolute"
    np.testing.assert_array_equal(w.array, v)  # the numbers (and the readout) stay raw
    w.sign = "signed"  # recomputed for the new sign: the signed map blurred
    np.testing.assert_allclose(
        np.frombuffer(w.display, "<f4").reshape(30, 40),
        gaussian_filter(v, sigma=2.0, mode="nearest"),
        rtol=1e-5,
        atol=1e-6,
    )
    assert w.display_sign == "signed"
    w.smooth = 0  # raw: nothing extra travels, the browser paints the values
    assert w.display == b"" and w.display_sign == ""


def test_smoothing_zero_paints_exactly_the_raw_rule(values):
    w = AttributionOverlay(values=values, smooth=0.0, gamma=1.0, map_only=False)
    for sign in ov.SIGN_MODES:
        w.sign = sign
        ref = ov.colorize(values, cm.lut(w.colormap), sign, w.opacity, clip_percentile=99.0)
        np.testing.assert_array_equal(w.to_rgba(), ref)


def test_map_only_is_opaque_and_gamma_concentrates_alpha(values):
    w = AttributionOverlay(values=values, smooth=0.0, sign="absolute", clip_percentile=100)
    w.gamma, w.opacity = 2.0, 1.0
    a = w.to_rgba()[..., 3] / 255.0
    np.testing.assert_allclose(a, (np.abs(values) / 4) ** 2, atol=1 / 255)
    w.map_only = True
    assert (w.to_rgba()[..., 3] == 255).all()


@pytest.mark.parametrize(
    ("trait", "bad"), [("smooth", -0.1), ("smooth", 0.5), ("photo_dim", 1.5), ("gamma", 0.0)]
)
def test_new_traits_reject_bad_values(widget, trait, bad):
    before = snapshot(widget)
    with pytest.raises(InputError, match=trait):
        setattr(widget, trait, bad)
    assert snapshot(widget) == before


def test_backdrop_greys_and_darkens_by_dim():
    photo = np.array([[[200, 100, 0], [10, 20, 30]]], np.uint8)
    assert (cm.backdrop(photo, 0.0) == photo).all()
    lum = photo.astype(float) @ np.array([0.3, 0.59, 0.11])
    full = cm.backdrop(photo, 1.0)  # all grey, half as bright
    np.testing.assert_allclose(full, np.repeat(lum[..., None] / 2, 3, -1), atol=0.51)


def test_missing_bundle_gives_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(ov, "ESM_PATH", tmp_path / "overlay.js")
    with pytest.raises(ov.FrontendMissingError, match="npm install && npm run build"):
        AttributionOverlay()


_NODE_SCRIPT = """
import { colorize, computeVmax, shownMagnitudes } from "./js/lib/colormap.js";
let s = "";
process.stdin.on("data", (c) => (s += c));
process.stdin.on("end", () => {
  const q = JSON.parse(s);
  const values = new Float32Array(new Uint8Array(Buffer.from(q.values, "base64")).buffer);
  const lut = new Uint8Array(Buffer.from(q.lut, "base64"));
  const out = {};
  for (const sign of ["signed", "positive", "negative", "absolute"]) {
    const vmax = computeVmax(shownMagnitudes(values, sign), q.clip);
    const enc = (a) => Buffer.from(a.buffer).toString("base64");
    const rgba = colorize(values, lut, { sign, opacity: q.opacity, vmax });
    const heat = colorize(values, lut, { sign, opacity: q.opacity, vmax, gamma: 2 });
    const alone = colorize(values, lut, { sign, opacity: q.opacity, vmax, fade: false });
    out[sign] = { vmax, rgba: enc(rgba), heat: enc(heat), alone: enc(alone) };
  }
  process.stdout.write(JSON.stringify(out));
});
"""


def test_python_reference_matches_the_browser_code():
    """colorize/normalised_vmax here and js/lib/colormap.js give the same pixels."""
    import base64
    import json
    import pathlib
    import shutil
    import subprocess

    node = shutil.which("node")
    root = pathlib.Path(__file__).resolve().parent.parent
    if node is None or not (root / "js" / "lib" / "colormap.js").is_file():
        pytest.skip("node or js sources not available")
    rng = np.random.default_rng(3)
    v = (rng.standard_normal((17, 23)) * 3).astype(np.float32)
    v[rng.random(v.shape) < 0.2] = 0
    table = cm.lut("viridis")
    query = {
        "values": base64.b64encode(v.astype("<f4").tobytes()).decode(),
        "lut": base64.b64encode(table.tobytes()).decode(),
        "clip": 97.3,
        "opacity": 0.7,
    }
    res = subprocess.run(
        [node, "--input-type=module", "-e", _NODE_SCRIPT],
        input=json.dumps(query),
        capture_output=True,
        text=True,
        cwd=root,
        timeout=60,
        check=True,
    )
    out = json.loads(res.stdout)
    for sign, got in out.items():
        assert got["vmax"] == pytest.approx(ov.normalised_vmax(v, sign, 97.3), rel=1e-12)
        js = np.frombuffer(base64.b64decode(got["rgba"]), np.uint8).reshape(17, 23, 4)
        py = ov.colorize(v, table, sign, 0.7, clip_percentile=97.3)
        np.testing.assert_array_equal(js, py, err_msg=sign)
        for key, kw in (("heat", {"gamma": 2.0}), ("alone", {"fade": False})):
            js = np.frombuffer(base64.b64decode(got[key]), np.uint8).reshape(17, 23, 4)
            py = ov.colorize(v, table, sign, 0.7, clip_percentile=97.3, **kw)
            np.testing.assert_array_equal(js, py, err_msg=key)
