"""ChannelGallery and activation_map: what a channel responds to, against a
straightforward loop over the pictures with a forward hook on a copy of the model."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from critpath_widgets import InputError, PathwayExplainer
from critpath_widgets.gallery import ChannelGallery, activation_map, patch_box


def cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    ).eval()


def pictures(n: int = 5) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)) for _ in range(n)]


def to_tensor(im: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)


def loop_best(model, module_name, channel, images, preprocess):
    """Per picture: the channel's largest activation and its (row, col), by a hook."""
    m = copy.deepcopy(model).eval()
    out = {}
    handle = dict(m.named_modules())[module_name].register_forward_hook(
        lambda _m, _i, o: out.setdefault("a", o.detach())
    )
    rows = []
    with torch.no_grad():
        for im in images:
            out.clear()
            m(preprocess(im)[None])
            a = out["a"][0, channel]
            flat = int(a.flatten().argmax())
            rows.append((float(a.flatten()[flat]), divmod(flat, a.shape[1])))
    handle.remove()
    return rows


@pytest.mark.parametrize("site,channel", [("1", 2), ("3", 5), (-1, 0)])
def test_top_patches_equal_a_straightforward_loop(site, channel):
    model, images = cnn(), pictures()
    gallery = ChannelGallery(PathwayExplainer(model), images, preprocess=to_tensor)
    name = {"1": "1", "3": "3", -1: "3"}[site]
    best = loop_best(model, name, channel, images, to_tensor)
    order = sorted(range(len(images)), key=lambda p: -best[p][0])
    patches = gallery.top_patches(site, channel, k=3)
    assert [p.index for p in patches] == order[:3]
    for p in patches:
        assert p.value == pytest.approx(best[p.index][0], rel=1e-6)
        assert p.cell == best[p.index][1]
        assert p.image.size == (p.box[2] - p.box[0], p.box[3] - p.box[1])


def test_activation_map_is_the_channel_output():
    model, im = cnn(), pictures(1)[0]
    x = to_tensor(im)[None]
    m = copy.deepcopy(model)
    with torch.no_grad():
        want = m[:4](x)[0, 5]
    got = activation_map(PathwayExplainer(model), x, "3", 5)
    torch.testing.assert_close(got, want)


def test_patch_box_covers_the_cell_and_stays_inside():
    for cell, grid, size in [
        ((0, 0), (7, 7), (224, 224)),
        ((6, 6), (7, 7), (224, 224)),
        ((50, 3), (112, 112), (224, 224)),
        ((1, 2), (4, 8), (64, 32)),
    ]:
        left, top, right, bottom = patch_box(cell, grid, size)
        assert 0 <= left < right <= size[0] and 0 <= top < bottom <= size[1]
        cy = (cell[0] + 0.5) * size[1] / grid[0]
        cx = (cell[1] + 0.5) * size[0] / grid[1]
        assert left <= cx <= right and top <= cy <= bottom


def test_default_model_and_sample_photos_match_the_loop():
    from critpath_widgets.models import load_model, sample_image, sample_images

    bundle = load_model()
    names = sample_images()
    gallery = ChannelGallery(
        PathwayExplainer(bundle.model), None, preprocess=bundle.preprocess, crop=bundle.crop
    )
    site = next(
        n
        for n in gallery.site_names[len(gallery.site_names) // 2 :]
        if "#" not in n and ":" not in n
    )
    images = [sample_image(n) for n in names]
    best = loop_best(bundle.model, site, 7, images, bundle.preprocess)
    patches = gallery.top_patches(site, 7, k=len(names))
    assert [p.name for p in patches] == [
        names[i] for i in sorted(range(len(names)), key=lambda p: -best[p][0])
    ]
    for p in patches:
        assert p.value == pytest.approx(best[p.index][0], rel=1e-4, abs=1e-5)


def test_bad_gallery_and_bad_channel_are_named(tmp_path):
    model = cnn()
    ex = PathwayExplainer(model)
    with pytest.raises(InputError, match="does not exist"):
        ChannelGallery(ex, tmp_path / "nope", preprocess=to_tensor)
    with pytest.raises(InputError, match="holds no"):
        ChannelGallery(ex, tmp_path, preprocess=to_tensor)
    with pytest.raises(InputError, match="not a PIL image"):
        ChannelGallery(ex, [42], preprocess=to_tensor)
    g = ChannelGallery(ex, pictures(2), preprocess=to_tensor)
    with pytest.raises(InputError, match="out of range"):
        g.top_patches("1", 6)
    with pytest.raises(InputError, match="no site"):
        g.top_patches("0", 0)
    pictures(1)[0].save(tmp_path / "a.png")
    assert ChannelGallery(ex, tmp_path, preprocess=to_tensor).names == ["a.png"]
