"""Upload decoding and image validation (critpath_widgets.widgets.images)."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from PIL import Image

from critpath_widgets.errors import InputError, InputTypeError
from critpath_widgets.widgets.images import MAX_SIDE, as_rgb_image, load_image, to_rgb


def _encode(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _rgb(w: int = 40, h: int = 30) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def test_png_and_jpeg_roundtrip():
    src = _rgb()
    for fmt in ("PNG", "JPEG", "BMP", "WEBP", "TIFF", "GIF"):
        out = load_image(_encode(src, fmt))
        assert out.mode == "RGB"
        assert out.size == src.size
    exact = np.asarray(load_image(_encode(src, "PNG")))
    np.testing.assert_array_equal(exact, np.asarray(src))


def test_memoryview_and_bytearray_accepted():
    data = _encode(_rgb())
    assert load_image(memoryview(data)).mode == "RGB"
    assert load_image(bytearray(data)).mode == "RGB"


@pytest.mark.parametrize(
    "data",
    [b"", b"hello, this is not an image", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, b"%PDF-1.7\n%%EOF"],
    ids=["empty", "text", "png-header-garbage", "pdf"],
)
def test_not_an_image_is_rejected(data):
    with pytest.raises(InputError) as info:
        load_image(data)
    assert isinstance(info.value, ValueError)
    assert str(info.value)


def test_wrong_type_is_rejected():
    with pytest.raises(InputTypeError):
        load_image("coffee.png")  # type: ignore[arg-type]
    with pytest.raises(InputTypeError):
        as_rgb_image(12)


def test_truncated_files_are_rejected():
    big = _rgb(200, 150)
    for fmt in ("PNG", "JPEG"):
        data = _encode(big, fmt)
        with pytest.raises(InputError, match="corrupt|truncated|could not"):
            load_image(data[: len(data) // 2])


def test_corrupted_body_is_rejected():
    data = bytearray(_encode(_rgb(64, 64), "PNG"))
    # Clobber the IDAT payload (keep the header so the format is still detected).
    start = data.index(b"IDAT") + 4
    data[start : start + 64] = b"\xff" * 64
    with pytest.raises(InputError):
        load_image(bytes(data))


def test_decompression_bomb_error_and_warning(monkeypatch):
    data = _encode(Image.new("L", (100, 100)), "PNG")  # 10 000 pixels
    # Above 2x the limit Pillow raises DecompressionBombError ...
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4000)
    with pytest.raises(InputError, match="too large"):
        load_image(data)
    # ... between 1x and 2x it only warns: that must become an error too.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(InputError, match="too large"):
            load_image(data)
    # Limit switched off: our own fallback still applies, and small images pass.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    assert load_image(data).size == (100, 100)


def test_huge_photo_is_downscaled():
    big = Image.new("RGB", (3000, 2000), (10, 200, 30))
    for fmt in ("JPEG", "PNG"):
        out = load_image(_encode(big, fmt))
        assert max(out.size) <= MAX_SIDE
        assert abs(out.size[0] / out.size[1] - 1.5) < 0.02
    out = load_image(_encode(big, "JPEG"), max_side=256)
    assert max(out.size) == 256


def test_grayscale_and_bilevel():
    g = Image.fromarray(np.arange(64 * 64, dtype=np.uint32).reshape(64, 64).astype(np.uint8), "L")
    out = load_image(_encode(g))
    arr = np.asarray(out)
    assert out.mode == "RGB"
    np.testing.assert_array_equal(arr[..., 0], np.asarray(g))
    np.testing.assert_array_equal(arr[..., 0], arr[..., 2])
    bw = g.convert("1")
    assert load_image(_encode(bw)).mode == "RGB"


def test_rgba_composited_on_white():
    rgba = Image.new("RGBA", (20, 20), (255, 0, 0, 0))  # fully transparent red
    out = np.asarray(load_image(_encode(rgba)))
    assert (out == 255).all()  # white background
    la = Image.new("LA", (20, 20), (0, 255))  # opaque black
    assert (np.asarray(load_image(_encode(la))) == 0).all()


def test_palette_with_and_without_transparency():
    p = _rgb().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    assert load_image(_encode(p)).mode == "RGB"
    pt = Image.new("P", (16, 16), 0)
    pt.putpalette([0, 0, 0] * 256)
    pt.info["transparency"] = 0
    out = np.asarray(load_image(_encode(pt, "PNG", transparency=0)))
    assert (out == 255).all()  # transparent index -> white


def test_16bit_grayscale_png():
    arr = (np.linspace(0, 65535, 32 * 32).reshape(32, 32)).astype(np.uint16)
    im = Image.fromarray(arr)
    assert im.mode.startswith("I;16")
    out = np.asarray(load_image(_encode(im)))
    assert out.dtype == np.uint8 and out.shape == (32, 32, 3)
    assert out.max() == 255 and out.min() == 0
    # monotone in the input
    assert np.all(np.diff(out[..., 0].ravel().astype(int)) >= 0)


def test_32bit_int_and_float_tiff():
    i32 = Image.fromarray((np.arange(32 * 32).reshape(32, 32) * 50).astype(np.int32), "I")
    out = load_image(_encode(i32, "TIFF"))
    assert out.mode == "RGB"
    f = Image.fromarray(np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32), "F")
    out = np.asarray(load_image(_encode(f, "TIFF")))
    assert out.max() == 255 and out.min() == 0
    nan = np.full((16, 16), np.nan, dtype=np.float32)
    with pytest.raises(InputError, match="NaN"):
        load_image(_encode(Image.fromarray(nan, "F"), "TIFF"))


def test_cmyk_jpeg_converted():
    cmyk = Image.new("CMYK", (24, 24), (0, 255, 255, 0))  # red in CMYK
    out = np.asarray(load_image(_encode(cmyk, "JPEG", quality=95)))
    assert out.shape == (24, 24, 3)
    assert out[..., 0].mean() > 200 and out[..., 1].mean() < 60


def test_unconvertible_mode_rejected():
    lab = Image.new("LAB", (16, 16))
    try:
        lab.convert("RGB")
    except Exception:
        with pytest.raises(InputError, match="mode"):
            to_rgb(lab)
    else:  # this Pillow converts LAB: then it must simply work
        assert to_rgb(lab).mode == "RGB"


def test_too_small_rejected():
    with pytest.raises(InputError, match="too small"):
        load_image(_encode(Image.new("RGB", (2, 2))))


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=50)
    out = np.asarray(load_image(buf.getvalue()))
    assert out[..., 0].mean() > 200 and out[..., 2].mean() < 50


def test_exif_orientation_applied():
    im = Image.new("RGB", (40, 20), (0, 128, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90
    out = load_image(_encode(im, "JPEG", exif=exif.tobytes()))
    assert out.size == (20, 40)


def test_arrays_and_paths(tmp_path):
    assert to_rgb(np.zeros((10, 12), np.uint8)).size == (12, 10)
    assert to_rgb(np.zeros((10, 12, 1), np.uint8)).mode == "RGB"
    assert to_rgb(np.ones((10, 12, 3), np.float32)).getpixel((0, 0)) == (255, 255, 255)
    assert to_rgb(np.zeros((10, 12, 4), np.uint8)).getpixel((0, 0)) == (255, 255, 255)
    assert to_rgb(np.full((10, 12, 3), 65535, np.uint16)).getpixel((0, 0)) == (255,) * 3
    with pytest.raises(InputError, match="channels must come last"):
        to_rgb(np.zeros((3, 10, 12), np.float32))
    with pytest.raises(InputError):
        to_rgb(np.zeros((10, 12, 5), np.uint8))
    with pytest.raises(InputError, match="NaN"):
        to_rgb(np.full((10, 12, 3), np.nan))
    p = tmp_path / "x.png"
    p.write_bytes(_encode(_rgb()))
    assert as_rgb_image(p).mode == "RGB"
    assert as_rgb_image(str(p)).mode == "RGB"
    with pytest.raises(InputError, match="No image file"):
        as_rgb_image(tmp_path / "missing.png")
    big = Image.new("RGB", (2000, 100))
    assert max(as_rgb_image(big).size) == MAX_SIDE
