"""The explorer's controls with a faked front end: the target picker over every class,
the target set by name, tooltips and help, a layout that wraps, and the upload / photo
picker states.

Class names are ImageNet's (torchvision's metadata, no download), on a small random
ResNet-18 with 1000 outputs at 64 x 64, so that searching and close matches meet real
names.
"""

from __future__ import annotations

import difflib
import io

import ipywidgets as widgets
import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from critpath_widgets import InputError, PathwayExplorer
from critpath_widgets.widgets.explorer.targets import class_labels, class_names, resolve_class
from critpath_widgets.widgets.explorer.view import OTHER_PICTURE, TIPS

TIMEOUT = 120
NAMES = list(torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def _preprocess(im: Image.Image) -> torch.Tensor:
    arr = np.array(im.convert("RGB").resize((64, 64)), dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1) / 127.5 - 1.0


def _photo(seed: int, size=(80, 72)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _upload_state(data: bytes, name: str) -> dict:
    """The state a browser FileUpload sends after the user picked a file."""
    item = {
        "name": name,
        "type": "image/png",
        "size": len(data),
        "content": memoryview(data),
        "last_modified": 1_700_000_000_000,
    }
    return {"value": [item]}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=len(NAMES)).eval()


@pytest.fixture
def explorer(model):
    w = PathwayExplorer(model, image=_photo(0), preprocess=_preprocess, categories=NAMES)
    assert w.wait(TIMEOUT) and w.explanation is not None, w.message_text
    yield w
    w.close()


def _input_gradient(model, image: Image.Image, target: int) -> np.ndarray:
    """The plain gradient map (max |.| over channels, signed) by autograd, independently."""
    x = _preprocess(image).unsqueeze(0).requires_grad_(True)
    model(x)[0, target].backward()
    g = x.grad[0]
    return g.gather(0, g.abs().argmax(0, keepdim=True))[0].numpy()


# --------------------------------------------------------------- names, no widget
def test_resolve_class_against_plain_lookups():
    lowered = [n.lower() for n in NAMES]
    # exact names (case ignored), indices and labels with decorations
    assert resolve_class("Espresso", NAMES) == lowered.index("espresso")
    assert resolve_class("967", NAMES) == 967
    assert resolve_class("daisy (0.1%)", NAMES) == lowered.index("daisy")
    # a part only one class contains
    part = "espresso mak"
    assert resolve_class(part, NAMES) == next(i for i, n in enumerate(lowered) if part in n)
    # a name two classes share: the labels carry the index, which resolves to that one
    twice = [*NAMES[:10], NAMES[3]]
    labels, index = class_labels(twice, None, [])
    assert (labels[3], labels[10]) == (f"{NAMES[3]} #3", f"{NAMES[3]} #10")
    assert resolve_class(labels[10], twice) == index[labels[10]] == 10
    # ambiguous part: the error lists the candidates
    with pytest.raises(InputError, match="tiger cat") as info:
        resolve_class("cat", NAMES)
    assert "type more" in str(info.value)
    # no match: the close matches are difflib's
    expected = difflib.get_close_matches("espreso machine", lowered, n=5, cutoff=0.6)
    with pytest.raises(InputError) as info:
        resolve_class("espreso machine", NAMES)
    assert expected and all(NAMES[lowered.index(c)] in str(info.value) for c in expected)
    with pytest.raises(InputError, match="no class"):
        resolve_class("qwxz", NAMES)
    with pytest.raises(InputError, match=r"\[0, 999\]"):
        resolve_class("1000", NAMES)
    # a model without names
    assert class_names(None, 4) == ["class 0", "class 1", "class 2", "class 3"]
    assert resolve_class("class 2", class_names(None, 4)) == 2
    assert resolve_class("class 7", []) == 7


def test_class_labels_top_first_unique_and_complete():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(len(NAMES)))
    top = np.argsort(-probs)[:5].tolist()
    labels, index = class_labels(NAMES, probs, top)
    assert len(labels) == len(set(labels)) == len(NAMES)
    assert [index[label] for label in labels[:5]] == top
    assert all(
        label.endswith(f"({probs[i]:.1%})") for label, i in zip(labels[:5], top, strict=True)
    )
    assert sorted(index[label] for label in labels) == list(range(len(NAMES)))
    # every label resolves back to its own index by name lookup as well
    assert all(resolve_class(label, NAMES) == index[label] for label in labels[::37])


# ------------------------------------------------------------------- the widget
def test_target_picker_lists_every_class_and_typing_part_of_a_name_picks_it(explorer, model):
    w = explorer
    e0 = w.explanation
    probs = torch.softmax(e0.logits[0], 0)
    top = probs.argsort(descending=True)[:5].tolist()
    opts = list(w.target_picker.options)
    assert len(opts) == len(NAMES)
    assert [w.picked_target(o) for o in opts[:5]] == top
    assert opts[0] == f"{NAMES[top[0]]} ({float(probs[top[0]]):.1%})"
    # the browser sends the typed text on Enter: a part that one class contains
    wanted = next(i for i, n in enumerate(NAMES) if "sulphur-crested" in n)
    assert wanted not in top
    grad_before = w.gradient_overlay.array.copy()
    w.target_picker.set_state({"value": "sulphur-crested"})
    assert w.target == wanted
    w.wait(TIMEOUT)
    assert int(w.explanation.target[0]) == wanted and w.last_error is None
    assert w.target_picker.value == NAMES[wanted]
    assert NAMES[wanted] in w.message_text
    ref = _input_gradient(model, _photo(0), wanted)
    np.testing.assert_allclose(w.gradient_overlay.array, ref, rtol=1e-4, atol=1e-7)
    assert not np.allclose(w.gradient_overlay.array, grad_before)
    # text naming several or no classes: a warning, the box shows the target again
    for text, words in [("cat", "type more"), ("espreso machine", "espresso maker")]:
        w.target_picker.set_state({"value": text})
        assert w.target == wanted
        assert w.target_picker.value == NAMES[wanted]
        assert words in w.message_text and "Target" in w.message_text
        assert "critpath-message-warning" in w.message.value


def test_target_trait_accepts_names(model):
    w = PathwayExplorer(
        model, image=_photo(2), preprocess=_preprocess, categories=NAMES, target="daisy"
    )
    try:
        w.wait(TIMEOUT)
        assert w.target == NAMES.index("daisy") == int(w.explanation.target[0])
        w.target = "Granny Smith"
        assert w.target == NAMES.index("Granny Smith")
        assert w.target_picker.value.startswith("Granny Smith")
        with pytest.raises(InputError, match="close matches"):
            w.target = "granny smit apple"
        with pytest.raises(InputError, match="part of"):
            w.target = "dog"
        assert w.target == NAMES.index("Granny Smith")
        w.wait(TIMEOUT)
        assert int(w.explanation.target[0]) == w.target
    finally:
        w.close()


def _controls(w) -> list[widgets.Widget]:
    return [
        w.photo_picker,
        w.upload,
        w.target_picker,
        w.method_picker,
        w.sparsity_slider,
        w.scope_buttons,
        w.cancel_button,
    ]


def _walk(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _walk(child)


def test_every_control_explains_itself_and_rows_wrap(explorer):
    w = explorer
    for control in _controls(w):
        assert control.tooltip and len(control.tooltip) > 20, control
    assert list(w.scope_buttons.tooltips) == [TIPS["scope_global"], TIPS["scope_layer"]]
    help_text = w.help.value
    for word in ("target", "method", "sparsity", "scope", "removes", "per layer"):
        assert word in help_text
    assert "<details" in help_text  # collapsed until asked for
    # nothing sets a width beyond a notebook column, and every row wraps
    assert w.layout.max_width == "100%"
    for child in _walk(w):
        width = getattr(child.layout, "width", None) or ""
        if width.endswith("px"):
            assert float(width[:-2]) <= 420, (child, width)
    for box in w._boxes[:3]:
        assert box.layout.flex_flow == "row wrap"


def test_upload_and_photo_picker_stay_consistent(explorer, tmp_path):
    w = explorer
    # a good upload: the picker names it, the upload button counts it
    w.upload.set_state(_upload_state(_png(_photo(5)), "mine.png"))
    w.wait(TIMEOUT)
    assert w.last_error is None, w.message_text
    uploaded_image = w.pathway_overlay.image
    assert (w.photo_picker.value, w.photo_picker.label) == (OTHER_PICTURE, "uploaded: mine.png")
    assert [f["name"] for f in w.upload.value] == ["mine.png"]
    # a failed upload: both go back to the uploaded picture on show
    w.upload.set_state(_upload_state(b"not an image at all", "bad.png"))
    w.wait(TIMEOUT)
    assert w.last_error is not None
    assert (w.photo_picker.value, w.photo_picker.label) == (OTHER_PICTURE, "uploaded: mine.png")
    assert [f["name"] for f in w.upload.value] == ["mine.png"]
    assert w.pathway_overlay.image == uploaded_image
    # a sample: the upload count drops to 0, the upload stays on offer
    sample = w.photo_picker.options[0][1]
    w.photo_picker.set_state({"index": 0})  # what the browser sends
    w.wait(TIMEOUT)
    assert w.last_error is None, w.message_text
    assert w.photo_picker.value == sample and tuple(w.upload.value) == ()
    assert ("uploaded: mine.png", OTHER_PICTURE) in w.photo_picker.options
    # a failed upload while a sample is shown: back to the sample, count 0
    w.upload.set_state(_upload_state(b"still not an image", "bad2.png"))
    w.wait(TIMEOUT)
    assert w.photo_picker.value == sample and tuple(w.upload.value) == ()
    assert ("uploaded: mine.png", OTHER_PICTURE) in w.photo_picker.options
    # picking the upload again shows it again, and the button counts it again
    w.photo_picker.set_state({"index": [v for _, v in w.photo_picker.options].index(OTHER_PICTURE)})
    w.wait(TIMEOUT)
    assert w.last_error is None, w.message_text
    assert w.pathway_overlay.image == uploaded_image
    assert [f["name"] for f in w.upload.value] == ["mine.png"]
    assert w.photo_picker.label == "uploaded: mine.png"
    # a file given from Python by path takes the non-sample place under its name
    path = tmp_path / "given.png"
    _photo(7).save(path)
    w.set_image(str(path))
    w.wait(TIMEOUT)
    assert w.last_error is None, w.message_text
    assert (w.photo_picker.value, w.photo_picker.label) == (OTHER_PICTURE, "from Python: given.png")
    assert tuple(w.upload.value) == ()


def test_picker_probabilities_follow_a_model_edit():
    torch.manual_seed(3)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 8),
    ).eval()
    w = PathwayExplorer(model, image=_photo(4), preprocess=_preprocess)
    try:
        assert w.wait(TIMEOUT) and w.last_error is None, w.message_text
        with torch.no_grad():
            model[4].bias.copy_(torch.arange(8.0) * 3)  # class 7 now wins clearly
        w.refresh()
        assert w.wait(TIMEOUT) and w.last_error is None, w.message_text
        with torch.no_grad():
            probs = torch.softmax(model(_preprocess(_photo(4)).unsqueeze(0)), 1)[0]
        top = probs.argsort(descending=True)[:5].tolist()
        opts = list(w.target_picker.options)
        assert [w.picked_target(o) for o in opts[:5]] == top == [7, 6, 5, 4, 3]
        assert opts[0] == f"class 7 ({float(probs[7]):.1%})"
        assert w.target_picker.value == opts[0] and w.target == 7
    finally:
        w.close()
