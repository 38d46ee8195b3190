"""Scrubbing the sparsity: the uint8 stack codec, and the explorer's stack of pathway maps
(fake front end) against ``at_sparsity`` at the same grid points, sent in one message,
discarded on a new scoring, interrupted by a newer request and continued later.

A small random-init ResNet-18 at 64 x 64, as in test_explorer_widget.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from critpath_widgets import PathwayExplorer
from critpath_widgets.widgets import AttributionOverlay
from critpath_widgets.widgets.colormaps import display_map
from critpath_widgets.widgets.explorer import scrub as scrub_module
from critpath_widgets.widgets.stack_codec import (
    SCRUB_LEVELS,
    decode_stack,
    encode_stack,
    nearest_level,
    quantise_level,
)

from . import small_explorer as small

TIMEOUT = 120


_preprocess = small.preprocess


def _photo(seed: int = 0) -> Image.Image:
    return small.photo(seed, (80, 96))


@pytest.fixture(scope="module")
def model():
    return small.resnet()


@pytest.fixture
def explorer(model):
    w = PathwayExplorer(model, image=_photo(0), preprocess=_preprocess)
    assert w.wait(timeout=TIMEOUT)
    assert w.explanation is not None, w.message_text
    yield w
    w.close()


class _Sent:
    """Records the state messages the pathway overlay sends (the fake front end)."""

    def __init__(self, ov: AttributionOverlay) -> None:
        self.messages: list[tuple[dict, int]] = []
        orig = ov._send

        def send(msg, buffers=None):
            state = dict(msg.get("state", {}))
            for path in msg.get("buffer_paths", []):  # binary traits travel as buffers
                state.setdefault(path[0], b"<buffer>")
            nbytes = sum(len(memoryview(b).cast("B")) for b in buffers or [])
            self.messages.append((state, nbytes))
            return orig(msg, buffers)

        ov._send = send

    def with_key(self, key: str) -> list[tuple[int, dict, int]]:
        return [(i, s, n) for i, (s, n) in enumerate(self.messages) if key in s]


def _expected_stack(w: PathwayExplorer) -> np.ndarray:
    e, ov = w.explanation, w.pathway_overlay
    maps = [
        display_map(w._session.saliency(e.at_sparsity(s)), ov.sign, ov.smooth) for s in SCRUB_LEVELS
    ]
    return np.stack(maps)


# ------------------------------------------------------------------------------ codec
@pytest.mark.parametrize("kind", ["signed", "positive", "negative", "constant", "zeros"])
def test_codec_round_trip_within_half_a_step_and_zero_exact(kind):
    rng = np.random.default_rng(1)
    m = rng.normal(size=(7, 9)).astype(np.float32) * 1e-3
    m[rng.random(m.shape) < 0.4] = 0.0
    m = {
        "signed": m,
        "positive": np.abs(m),
        "negative": -np.abs(m),
        "constant": np.full((7, 9), 3.0, np.float32),
        "zeros": np.zeros((7, 9), np.float32),
    }[kind]
    codes, scale, zero = quantise_level(m)
    assert codes.dtype == np.uint8 and 0 <= zero <= 255
    data, ranges = encode_stack([m, 2 * m])
    assert len(data) == 2 * m.size and len(ranges) == 4
    back = decode_stack(data, ranges, m.shape)
    assert np.abs(back[0] - m).max() <= scale / 2 * (1 + 1e-5) + 1e-12
    assert np.all(back[0][m == 0] == 0)  # vmax is a percentile of the nonzeros
    assert np.all(back[0][m != 0] != 0) or kind in ("constant",)


def test_nearest_level():
    assert nearest_level(SCRUB_LEVELS, 0.71) == SCRUB_LEVELS.index(0.7)
    assert nearest_level(SCRUB_LEVELS, 0.975) == len(SCRUB_LEVELS) - 1  # 0.99, not 0.95
    assert nearest_level([0.0, 0.5], 0.25) == 0  # a tie: the lower level
    assert nearest_level(SCRUB_LEVELS, 0.99) == len(SCRUB_LEVELS) - 1
    assert SCRUB_LEVELS[:6] == (0.0, 0.1, 0.2, 0.3, 0.4, 0.45) and len(SCRUB_LEVELS) == 17
    steps = [b - a for a, b in zip(SCRUB_LEVELS[5:-2], SCRUB_LEVELS[6:-1], strict=True)]
    assert steps == pytest.approx([0.05] * len(steps))


# ------------------------------------------------------------------------------ explorer
def test_stack_equals_at_sparsity_maps_within_the_quantisation_step(explorer):
    w = explorer
    ov = w.pathway_overlay
    assert ov.stack_levels == list(SCRUB_LEVELS)
    assert (ov.stack_sign, ov.stack_smooth) == (ov.sign, ov.smooth)
    assert ov.values_sparsity == pytest.approx(w.sparsity)
    h, w_ = ov.shape
    assert len(ov.stack) == len(SCRUB_LEVELS) * h * w_  # bytes per stack: K x H x W
    got, want = ov.stack_array, _expected_stack(w)
    assert got.shape == want.shape
    scales = np.asarray(ov.stack_ranges[0::2])
    for k in range(len(SCRUB_LEVELS)):
        err = np.abs(got[k] - want[k]).max()
        assert err <= scales[k] / 2 * 1.001 + 1e-12, (SCRUB_LEVELS[k], err, scales[k])
    # the levels differ (the stack is not one map repeated)
    assert not np.allclose(got[0], got[-1])
    # the stack's level at the shown sparsity is the shown display map
    k = SCRUB_LEVELS.index(0.7)
    assert np.abs(got[k] - ov.display_array).max() <= scales[k] / 2 * 1.001


def test_stack_sent_in_one_message_and_rebuilt_for_a_sign_change(explorer):
    w = explorer
    ov = w.pathway_overlay
    sent = _Sent(ov)
    ov.sign = "positive"  # as the browser's sign picker sets it
    w.wait(TIMEOUT)
    loads = [(i, s, n) for i, s, n in sent.with_key("stack") if n > 0]
    assert len(loads) == 1
    _, state, nbytes = loads[0]
    assert {"stack", "stack_ranges", "stack_sign"} <= set(state)  # levels: unchanged
    assert nbytes >= len(SCRUB_LEVELS) * ov.shape[0] * ov.shape[1]
    assert ov.stack_sign == "positive" and ov.stack_array.min() >= 0
    np.testing.assert_allclose(
        ov.stack_array, _expected_stack(w), atol=float(max(ov.stack_ranges[0::2])) / 2 * 1.001
    )


@pytest.mark.parametrize("change", ["method", "target", "scope", "image"])
def test_a_new_scoring_discards_the_stack_before_its_map_is_shown(explorer, change):
    w = explorer
    ov = w.pathway_overlay
    old = ov.stack
    sent = _Sent(ov)
    if change == "method":
        w.method = "random"
    elif change == "target":
        w.target = (w.target + 1) % 10
    elif change == "scope":
        w.scope = "layer"
    else:
        w.set_image(_photo(5))
    w.wait(TIMEOUT)
    clears = [i for i, s, _ in sent.with_key("stack") if s.get("stack_levels") == []]
    new_values = [i for i, s, _ in sent.with_key("values")]
    assert clears and new_values and clears[0] < new_values[0]
    # then the stack of the new scoring arrives, and it is not the old one
    assert ov.stack_levels == list(SCRUB_LEVELS) and ov.stack != old
    got, want = ov.stack_array, _expected_stack(w)
    assert np.abs(got - want).max() <= float(max(ov.stack_ranges[0::2])) / 2 * 1.001


def test_a_sparsity_change_keeps_the_stack(explorer):
    w = explorer
    ov = w.pathway_overlay
    sent = _Sent(ov)
    built = w._scrub.stats["levels"]
    w.sparsity = 0.4
    w.wait(TIMEOUT)
    assert not sent.with_key("stack") and w._scrub.stats["levels"] == built
    assert ov.values_sparsity == pytest.approx(0.4)


def test_building_stops_on_a_pending_request_and_continues_later(explorer, monkeypatch):
    w = explorer
    ov = w.pathway_overlay
    calls = []
    real = scrub_module.display_map

    def display_then_interrupt(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            w.sparsity = 0.35  # a slider move while the stack is being built
        return real(*a, **k)

    monkeypatch.setattr(scrub_module, "display_map", display_then_interrupt)
    before = dict(w._scrub.stats)
    sent = _Sent(ov)
    w.method = "random"
    w.wait(TIMEOUT)
    # the interrupted build sent no half stack; the next request finished it, reusing
    # the levels made before the interruption
    loads = [s for _, s, n in sent.with_key("stack") if n > 0]
    assert len(loads) == 1 and ov.stack_levels == list(SCRUB_LEVELS)
    assert w._scrub.stats["interrupted"] == before["interrupted"] + 1
    assert w._scrub.stats["levels"] - before["levels"] == len(SCRUB_LEVELS)
    assert len(calls) == len(SCRUB_LEVELS)
    assert ov.values_sparsity == pytest.approx(0.35)
    assert (
        np.abs(ov.stack_array - _expected_stack(w)).max()
        <= float(max(ov.stack_ranges[0::2])) / 2 * 1.001
    )


def test_no_stack_for_a_path_dependent_method(explorer):
    w = explorer
    w.method = "greedy"
    w.wait(TIMEOUT)
    assert w.explanation.method == "greedy"
    assert w.pathway_overlay.stack_levels == [] and w.pathway_overlay.stack == b""


def test_slider_is_jslinked_to_the_preview(explorer):
    w = explorer
    link = w._scrub._link
    assert link.source == (w.sparsity_slider, "value")
    assert link.target == (w.pathway_overlay, "preview_sparsity")


def test_the_stack_follows_the_interventions_on_show(explorer):
    w = explorer
    plain = np.array(w.pathway_overlay.stack_array, copy=True)
    site = w.explanation.site_names[-1]
    w.interventions = {"drop": {site: [0, 1, 2]}}
    assert w.wait(TIMEOUT) and w.explanation.interventions, w.message_text
    ov = w.pathway_overlay
    assert ov.stack_levels == list(SCRUB_LEVELS)
    step = float(max(ov.stack_ranges[0::2])) / 2 * 1.001
    assert np.abs(ov.stack_array - _expected_stack(w)).max() <= step
    assert np.abs(ov.stack_array - plain).max() > step  # not the plain pathway's stack
    w.intervention_network = "full"  # an ablation's map does not change with the sparsity
    assert w.wait(TIMEOUT)
    assert ov.stack_levels == [] and ov.stack == b""
