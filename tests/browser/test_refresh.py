"""A weight edit from another cell reaches the explorer in JupyterLab: nobody touches a
control, yet the message and the maps follow the model as it is now (the explorer's
model poller), and the logit it reports is the model's new one."""

from __future__ import annotations

import re

import harness as H
import pytest

pytestmark = pytest.mark.browser

LOGIT = re.compile(r"vs (-?[\d.]+(?:e[-+]?\d+)?) in the full network")


def _shown_full_logit(page) -> float:
    match = LOGIT.search(H.message_text(page))
    assert match, H.message_text(page)
    return float(match.group(1))


def test_weight_edit_is_picked_up_without_a_click(explorer):
    page = explorer.page
    H.wait_message_contains(page, "in the full network", timeout_ms=60_000)
    before = H.paint_state(page, H.PATHWAY_OVERLAY)
    logit_before = _shown_full_logit(page)
    # flip the classifier: every logit changes sign, the prediction changes
    out = H.kernel_eval(
        page,
        "import torch\n"
        "with torch.no_grad():\n"
        "    explorer.model._fc.weight.mul_(-1); explorer.model._fc.bias.mul_(-1)\n"
        "float(explorer.model(explorer._images.get(explorer._images.shown).x)"
        "[0, explorer.target])",
    )
    assert out is not None and not out.startswith("ERROR"), out
    H.wait_repaint(page, H.PATHWAY_OVERLAY, before, timeout_ms=60_000)
    _wait_logit(page, logit_before, changed=True)
    H.kernel_eval(page, "explorer.wait(60)")
    shown = _shown_full_logit(page)
    now = float(
        H.kernel_eval(
            page,
            "import torch\n"
            "with torch.no_grad():\n"
            "    _y = explorer.model(explorer._images.get(explorer._images.shown).x)\n"
            "float(_y[0, explorer.target])",
        )
    )
    assert shown == pytest.approx(now, rel=1e-2, abs=1e-2), (shown, now)
    assert H.kernel_eval(page, "explorer._session.stats['model_changed']") == "1"
    # the model put back is picked up too: the first view again (and for later tests)
    H.kernel_eval(
        page,
        "with torch.no_grad():\n"
        "    explorer.model._fc.weight.mul_(-1); explorer.model._fc.bias.mul_(-1)",
    )
    _wait_logit(page, logit_before, changed=False)
    assert H.kernel_eval(page, "explorer._session.stats['model_changed']") == "2"


def _wait_logit(page, old: float, changed: bool) -> None:
    """Until the message reports a full-network logit other than ``old`` (``changed``)
    or ``old`` again."""
    page.wait_for_function(
        "([sel, old, changed]) => { const m = document.querySelector(sel);"
        " const r = /vs (-?[\\d.]+(?:e[-+]?\\d+)?) in the full network/.exec(m ? m.innerText : '');"
        " if (!r) return false; const d = Math.abs(parseFloat(r[1]) - old);"
        " return changed ? d > 1e-3 : d < 1e-2; }",
        arg=[H.MESSAGE, old, changed],
        timeout=60_000,
    )
