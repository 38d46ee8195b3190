"""The explorer's interventions: channels forced out of or into the network by clicks.

A click on a bar of the channel chart cycles that channel of the selected site: as
selected -> removed (``drop``) -> forced in (``keep``) -> as selected. The state lives
in the explorer's ``interventions`` trait (settable from a notebook cell too); every
change makes a request whose result is the cached explanation with the overrides
(``Explanation.with_overrides``: one masked pass, the scores are not recomputed). The
map, its colour bar, the site chart, the top-5 of the intervened network (beside the
unchanged model's) and the summary follow. :class:`InterventionsMixin` holds this
logic so that ``widget.py`` stays about requests and results.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import traitlets

from ...engine import Explanation
from ...engine.interventions import NETWORKS, WHOLE_SITE, parse_interventions
from ...errors import InputError
from ..channel_chart import FORCED, REMOVED
from .intervention_panel import InterventionPanel
from .view import esc

log = logging.getLogger(__name__)

ACTIONS = ("drop", "keep")
#: rows of the top-k panels
TOP_K = 5


def empty_spec() -> dict[str, dict[str, Any]]:
    """No interventions."""
    return {"drop": {}, "keep": {}}


def normalize_spec(value: Any) -> dict[str, dict[str, Any]]:
    """``value`` as ``{"drop": {site: units}, "keep": {site: units}}`` (copies); raises
    InputError for anything else (the site entries are checked by the engine)."""
    if not isinstance(value, Mapping):
        raise InputError(
            'interventions must be a dict {"drop": {site: [channels]}, "keep": {...}}, '
            f"got {type(value).__name__}"
        )
    extra = sorted(set(map(str, value)) - set(ACTIONS))
    if extra:
        raise InputError(f"interventions take the keys 'drop' and 'keep', got {extra}")
    out = empty_spec()
    for action in ACTIONS:
        spec = value.get(action) or {}
        if not isinstance(spec, Mapping):
            raise InputError(
                f"interventions[{action!r}] must be a dict {{site name: [channels] | 'all'}}, "
                f"got {type(spec).__name__}"
            )
        out[action] = {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in spec.items()}
    return out


class SpecDict(traitlets.Dict):
    """A Dict trait whose non-dict values raise InputError (as every bad spec does)."""

    def validate(self, obj: Any, value: Any) -> Any:
        """Refuse a non-mapping with the message of :func:`normalize_spec`."""
        if not isinstance(value, Mapping):
            normalize_spec(value)  # raises InputError (None is no mapping either)
        return super().validate(obj, dict(value))


class InterventionsMixin(traitlets.HasTraits):
    """The ``interventions`` trait, the channel-chart clicks and the interventions panel
    of :class:`PathwayExplorer` (mixed in; uses its layers, worker and message area)."""

    interventions = SpecDict(help="channels forced out of / into the network")
    """Overrides of the pathway: ``{"drop": {site name: [channels] | "all"}, "keep":
    {...}}`` (sites by name as in ``explanation.site_names``; an index is turned into the
    name). Clicks on the channel chart set it; a notebook cell may too
    (``w.interventions = {"drop": {"features.6.0.block.0.2": [3]}}``). A bad value raises
    InputError and leaves the previous one. It survives a new picture, method, scope,
    target or sparsity while it still parses for the model; otherwise it is cleared with
    a message. ``{}`` (or ``reset_interventions()``) removes every override."""

    intervention_network = traitlets.Enum(NETWORKS, default_value="pathway")
    """Which network the overrides apply to: "pathway" (the critical pathway at this
    sparsity) or "full" (an ablation of the unrestricted model, where forced-in channels
    change nothing); linked to the "apply to" toggle."""

    # ------------------------------------------------------------------ set-up
    def _setup_interventions(self) -> None:
        """Make the panel, put it under the layer panel and wire the controls."""
        self._interventions_note = ""
        self.interventions_panel = InterventionPanel()
        kids = list(self.children)
        at = kids.index(self.layers) + 1 if self.layers in kids else len(kids)
        self.children = (*kids[:at], self.interventions_panel, *kids[at:])
        self._links.append(
            traitlets.link(
                (self, "intervention_network"), (self.interventions_panel.network_buttons, "value")
            )
        )
        self.interventions_panel.reset_button.on_click(lambda _b: self.reset_interventions())
        self.interventions_panel.on_remove(self._remove_intervention)
        self.interventions_panel.site_button.on_click(lambda _b: self.cycle_selected_site())
        self.layers.observe(lambda _c: self._paint_site_button(), "selected_site")
        self.layers.on_channel_click(self._on_channel_clicked)

    # ------------------------------------------------------------------ public API
    def reset_interventions(self) -> None:
        """Remove every intervention (the Reset button)."""
        self.interventions = empty_spec()

    def _site_names(self) -> list[str] | None:
        e = getattr(self, "_explanation", None)
        return list(e.site_names) if e is not None else None

    @traitlets.default("interventions")
    def _default_interventions(self) -> dict:
        return empty_spec()

    @traitlets.validate("interventions")
    def _validate_interventions(self, proposal: dict) -> dict:
        spec = normalize_spec(proposal["value"])
        e = getattr(self, "_explanation", None)
        if e is None:
            return spec  # checked against the sites once an explanation exists
        iv = parse_interventions(
            spec["drop"] or None, spec["keep"] or None, "pathway", e.site_names, e._layout
        )
        return iv.as_spec()  # site names, sorted channels: one spelling per state

    @traitlets.observe("interventions", "intervention_network")
    def _on_interventions(self, _change: dict) -> None:
        if getattr(self, "interventions_panel", None) is None:
            return  # (set before the explorer was built: the first request carries it)
        self._paint_interventions()
        if not self._is_quiet():
            self._submit()

    # ------------------------------------------------------------------ clicks
    def _on_channel_clicked(self, site: int, channel: int) -> None:
        """Cycle ``channel`` of site ``site``: as selected -> removed -> forced in."""
        names = self._site_names()
        if names is None or not 0 <= site < len(names):
            return
        name = names[site]
        spec = normalize_spec(self.interventions)
        for action in ACTIONS:
            units = spec[action].get(name)
            if units is not None and not all(isinstance(u, int) for u in units):
                self.show_message(
                    f"<b>{esc(name)}</b> has a whole-site or neuron override ({action}); "
                    "remove it from the interventions list to edit its channels",
                    "warning",
                )
                return
        dropped = channel in spec["drop"].get(name, [])
        kept = channel in spec["keep"].get(name, [])
        _take(spec, "drop", name, channel)
        _take(spec, "keep", name, channel)
        if not dropped and not kept:
            spec["drop"].setdefault(name, []).append(channel)
        elif dropped:
            spec["keep"].setdefault(name, []).append(channel)
        try:
            self.interventions = spec
        except InputError as err:  # shown, never raised into the comm handler
            self.show_message(f"<b>Error:</b> {esc(err)}", "error")

    def cycle_selected_site(self) -> None:
        """Cycle the whole selected site: as selected -> removed -> forced in (its
        channel overrides are replaced)."""
        names = self._site_names()
        site = self.layers.selected_site
        if names is None or not 0 <= site < len(names):
            return
        name = names[site]
        spec = normalize_spec(self.interventions)
        state = _site_state(spec, name)
        spec["drop"].pop(name, None)
        spec["keep"].pop(name, None)
        if state is None:
            spec["drop"][name] = WHOLE_SITE
        elif state == "drop":
            spec["keep"][name] = WHOLE_SITE
        try:
            self.interventions = spec
        except InputError as err:
            self.show_message(f"<b>Error:</b> {esc(err)}", "error")

    def _paint_site_button(self) -> None:
        """The site button says what its next click does to the selected site."""
        names = self._site_names() or []
        site = self.layers.selected_site
        button = self.interventions_panel.site_button
        button.disabled = not 0 <= site < len(names)
        state = _site_state(self.interventions, names[site]) if not button.disabled else None
        nxt = {None: "remove", "drop": "force in", "keep": "restore"}[state]
        button.description = f"selected site: {nxt}"

    def _remove_intervention(self, action: str, site: str) -> None:
        """An item's remove button: drop that site's entry of that action."""
        spec = normalize_spec(self.interventions)
        spec[action].pop(site, None)
        self.interventions = spec

    def _paint_interventions(self) -> None:
        """The list of overrides and the channel states on the chart, from the trait."""
        spec = self.interventions
        labels = {s.name: str(getattr(s, "label", "") or "") for s in self.layers.summary}
        items = []
        for action in ACTIONS:
            for site, units in spec.get(action, {}).items():
                verb = "removed" if action == "drop" else "forced in"
                if units == WHOLE_SITE:
                    what = "every unit"
                elif all(isinstance(u, int) for u in units):
                    what = "channel" + ("s " if len(units) > 1 else " ")
                    what += ", ".join(map(str, units))
                else:
                    what = f"{len(units)} neuron(s)"
                note = ""
                if action == "keep" and self.intervention_network == "full":
                    note = " (no effect on the full network)"
                label = labels.get(site)
                where = f"{label} ({site})" if label and label != site else site
                items.append((action, site, f"{what} of {where}: {verb}{note}"))
        self.interventions_panel.set_items(items)
        names = self._site_names() or []
        states: dict[int, dict[int, int]] = {}
        for action, code in (("drop", REMOVED), ("keep", FORCED)):
            for site, units in spec.get(action, {}).items():
                if site in names and isinstance(units, list):
                    row = states.setdefault(names.index(site), {})
                    row.update({u: code for u in units if isinstance(u, int)})
        self.layers.set_channel_states(states)
        self._paint_site_button()

    # ------------------------------------------------------------------ the work
    def _intervention_request(self) -> dict[str, Any]:
        """What a request carries of the interventions (a snapshot)."""
        return {
            "interventions": normalize_spec(self.interventions),
            "network": self.intervention_network,
        }

    def _apply_interventions(self, req: Any, e: Explanation) -> Explanation:
        """(worker) ``e`` with the request's overrides, or ``e`` itself without any; a
        spec that no longer parses for this model is cleared, with a note."""
        self._interventions_note = ""
        spec = req.interventions or {}
        drop = spec.get("drop") or None
        keep = spec.get("keep") or None
        if req.network == "full":
            keep = None  # the full network keeps every unit already
        if not drop and not keep:
            return e
        try:
            return e.with_overrides(drop=drop, keep=keep, network=req.network)
        except InputError as err:
            log.info("interventions cleared: %s", err)
            self._interventions_note = f"<br><i>The interventions were cleared: {esc(err)}</i>"
            with self._quiet():
                self.interventions = empty_spec()
            return e

    def _intervention_report(self, plain: Explanation, shown: Explanation, target: int) -> str:
        """Fill the top-5 panels and return the summary's first line on the overrides."""
        name = self.category
        restricted_title = (
            "full network, ablated"
            if shown.interventions and shown.interventions.network == "full"
            else "pathway" + (", intervened" if shown.interventions else "")
        )
        self.interventions_panel.set_top(
            f"Top {TOP_K}: {restricted_title}",
            [(name(i), p) for i, p in shown.top_classes(TOP_K, network="pathway")],
            f"Top {TOP_K}: full network (unchanged)",
            [(name(i), p) for i, p in shown.top_classes(TOP_K, network="full")],
            name(target),
        )
        self._paint_interventions()  # the site's index may be known only now
        note, self._interventions_note = self._interventions_note, ""
        if not shown.interventions:
            return note
        full = shown.interventions.network == "full"
        before = float(plain.probabilities("full" if full else "pathway")[0, target])
        after = float(shown.probabilities("pathway")[0, target])
        return note + (
            f"<b>Overridden</b> ({esc(shown.interventions.describe())}): "
            f"p({esc(name(target))}) through the {'full network' if full else 'pathway'} "
            f"{before:.1%} &rarr; {after:.1%}<br>"
        )


def _site_state(spec: Mapping, name: str) -> str | None:
    """ "drop" / "keep" when the whole site ``name`` is overridden, else None."""
    for action in ACTIONS:
        if spec.get(action, {}).get(name) == WHOLE_SITE:
            return action
    return None


def _take(spec: dict, action: str, site: str, channel: int) -> None:
    """Remove ``channel`` from ``spec[action][site]`` (and the entry once empty)."""
    units = spec[action].get(site)
    if units is None:
        return
    rest = [u for u in units if u != channel]
    if rest:
        spec[action][site] = rest
    else:
        del spec[action][site]


__all__ = ["InterventionsMixin", "empty_spec", "normalize_spec"]
