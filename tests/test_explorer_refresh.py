"""The explorer never shows a result of a model state that no longer exists: a weight
edit or a swapped module between two requests drops every cached result (explanations,
maps, predicted classes), and ``refresh()`` recomputes the view."""

from __future__ import annotations

import time

import torch
from torch import nn

from critpath_widgets import PathwayExplorer

from . import reference as ref

TIMEOUT = 120


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 5)
    ).eval()


def _shown_logits(w: PathwayExplorer) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits of the explanation on show, and the model's logits now, for its input."""
    x = w._images.get(w._images.shown).x
    with torch.no_grad():
        return w.explanation.logits, w.model(x)


def test_weight_edit_then_refresh_shows_the_model_as_it_is_now():
    model = _model()
    w = PathwayExplorer(model, image=torch.randn(1, 3, 16, 16))
    try:
        assert w.wait(TIMEOUT) and w.last_error is None, w.message_text
        before, now = _shown_logits(w)
        torch.testing.assert_close(before, now)
        first = w.explanation
        with torch.no_grad():  # the head flipped: another class is predicted
            model[4].weight.mul_(-1)
            model[4].bias.mul_(-1)
        w.refresh()
        assert w.wait(TIMEOUT) and w.last_error is None, w.message_text
        shown, now = _shown_logits(w)
        assert w.explanation is not first
        torch.testing.assert_close(shown, now)
        assert w.target == int(now.argmax())  # the target follows the new prediction
        assert w._session.stats["model_changed"] == 1
    finally:
        w.close()


def test_a_control_change_after_an_edit_or_a_swapped_module_is_fresh_too():
    model = _model()
    state = ref.model_state(model)
    w = PathwayExplorer(model, image=torch.randn(1, 3, 16, 16))
    try:
        assert w.wait(TIMEOUT)
        with torch.no_grad():
            model[0].weight.add_(0.5)
        w.sparsity = 0.5  # cached scores of the old model must not serve this
        assert w.wait(TIMEOUT) and w.last_error is None, w.message_text
        torch.testing.assert_close(*_shown_logits(w))
        model[4] = nn.Linear(24, 5).eval()  # a swapped module, same shapes
        w.sparsity = 0.7
        assert w.wait(TIMEOUT) and w.last_error is None, w.message_text
        torch.testing.assert_close(*_shown_logits(w))
        w.sparsity = 0.6  # nothing changed: the cached scores serve it
        assert w.wait(TIMEOUT)
        assert w._session.stats["model_changed"] == 2
    finally:
        w.close()
    # the explorer itself changed nothing in the model (hooks, flags)
    after = ref.model_state(model)
    assert after["hooks"] == state["hooks"] and after["training"] == state["training"]


def test_an_idle_explorer_notices_a_weight_edit_without_any_call():
    """No control touched, no refresh(): the poller sees the edit and the view follows."""
    model = _model()
    w = PathwayExplorer(model, image=torch.randn(1, 3, 16, 16))
    try:
        w._poller.interval = 0.2
        assert w.wait(TIMEOUT) and w.last_error is None, w.message_text
        first = w.explanation
        with torch.no_grad():
            model[4].weight.mul_(-1)
        deadline = time.monotonic() + TIMEOUT
        while w.explanation is first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert w.wait(TIMEOUT) and w.last_error is None, w.message_text
        assert w.explanation is not first
        torch.testing.assert_close(*_shown_logits(w))
        assert w._session.stats["model_changed"] == 1
    finally:
        w.close()
    assert not w._session.watch.differs()


def test_auto_refresh_off_leaves_the_view_until_asked_and_close_ends_the_poller():
    model = _model()
    w = PathwayExplorer(model, image=torch.randn(1, 3, 16, 16), auto_refresh=False)
    try:
        w._poller.interval = 0.05
        assert w.wait(TIMEOUT)
        first = w.explanation
        with torch.no_grad():
            model[4].bias.add_(1.0)
        time.sleep(0.5)
        assert w.explanation is first and w._session.watch.differs()
        w.refresh_button.click()  # the Refresh button, as the front end reports a click
        assert w.wait(TIMEOUT) and w.explanation is not first
        torch.testing.assert_close(*_shown_logits(w))
    finally:
        w.close()
    time.sleep(0.2)
    assert not w._poller.alive
