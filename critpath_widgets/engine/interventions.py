"""Interventions: units forced out of (``drop``) or into (``keep``) a network.

A pathway is a network of its own (the model with every site's output multiplied by its
0/1 selection), so a user can test a hypothesis about a unit by changing the selection
and looking at the answer again. Two networks can be intervened on:

* ``"pathway"``: the critical pathway at the explanation's sparsity, with the dropped
  units removed and the kept ones forced in whatever their score;
* ``"full"``: the whole network with the dropped units removed (an ablation: does the
  model need this unit at all?); ``keep`` changes nothing there and is refused.

A unit is a whole site, channels of a site (its feature axis: dim 1 of conv outputs,
the last dim of token and channels-last outputs) or single neurons (index tuples into
the site's output without the batch dimension). Sites are named as in
``Explanation.site_names`` or given by index (negative counts from the end).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import InputError
from .layout import SiteLayout

#: The networks an intervention can be made on.
NETWORKS = ("pathway", "full")
#: What a site maps to in ``drop`` / ``keep`` to mean every unit of it.
WHOLE_SITE = "all"

#: ``{site name or index: "all" | [channel, ...] | [(neuron index), ...]}``
OverrideSpec = Mapping[str | int, Any]


@dataclass(frozen=True)
class Override:
    """One site's units forced out of or into the network."""

    #: "drop" or "keep"
    action: str
    site: int
    name: str
    #: channel indices, or None (then ``neurons``, or the whole site when both are None)
    channels: tuple[int, ...] | None = None
    #: neuron index tuples into the site's output (without the batch dimension)
    neurons: tuple[tuple[int, ...], ...] | None = None

    def describe(self) -> str:
        """ "drop channels 5, 17 of features.3" and the like."""
        if self.channels is not None:
            what = f"channel{'s' if len(self.channels) > 1 else ''} " + ", ".join(
                map(str, self.channels)
            )
        elif self.neurons is not None:
            what = f"neuron{'s' if len(self.neurons) > 1 else ''} " + ", ".join(
                str(n) for n in self.neurons
            )
        else:
            what = "every unit"
        return f"{self.action} {what} of {self.name}"


@dataclass(frozen=True)
class Interventions:
    """What was overridden, and in which network (``"pathway"`` or ``"full"``)."""

    #: "pathway" (overrides of the critical pathway) or "full" (an ablation of the model)
    network: str
    #: the overrides, one per site and action
    items: tuple[Override, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.items)

    def describe(self) -> str:
        """One line: the network and each override."""
        where = "the pathway" if self.network == "pathway" else "the full network"
        if not self.items:
            return f"{where}, no overrides"
        return f"{where}: " + "; ".join(o.describe() for o in self.items)

    def as_spec(self) -> dict[str, dict[str, Any]]:
        """``{"drop": {...}, "keep": {...}}`` by site name: what ``with_overrides`` takes."""
        out: dict[str, dict[str, Any]] = {"drop": {}, "keep": {}}
        for o in self.items:
            if o.channels is not None:
                out[o.action][o.name] = list(o.channels)
            elif o.neurons is not None:
                out[o.action][o.name] = [tuple(n) for n in o.neurons]
            else:
                out[o.action][o.name] = WHOLE_SITE
        return out


def check_network(network: object) -> str:
    """Validate a network name."""
    if network not in NETWORKS:
        choices = ", ".join(map(repr, NETWORKS))
        raise InputError(f"network must be one of {choices}, got {network!r}")
    return str(network)


def parse_interventions(
    drop: OverrideSpec | None,
    keep: OverrideSpec | None,
    network: str,
    names: Sequence[str],
    layout: SiteLayout,
) -> Interventions:
    """Check ``drop`` / ``keep`` against the sites and return them as :class:`Interventions`;
    raises InputError naming the bad site, channel or neuron."""
    network = check_network(network)
    if network == "full" and keep:
        raise InputError(
            "keep= forces units into a pathway; the full network keeps every unit already "
            "(use network='pathway', or drop= alone for an ablation)"
        )
    items: list[Override] = []
    for action, spec in (("drop", drop), ("keep", keep)):
        if spec is None:
            continue
        if not isinstance(spec, Mapping):
            raise InputError(
                f"{action}= must be a dict {{site name or index: 'all' | [channels] | "
                f"[(neuron index), ...]}}, got {type(spec).__name__}"
            )
        for site, units in spec.items():
            i = site_index(site, names)
            items.append(_override(action, i, names[i], units, layout))
    iv = Interventions(network, tuple(items))
    _check_disjoint(iv, layout)
    return iv


def apply_interventions(
    weights: torch.Tensor, layout: SiteLayout, interventions: Interventions
) -> torch.Tensor:
    """A copy of the (N, total) 0/1 ``weights`` with the kept units set to 1 and the
    dropped ones to 0 (the same units for every sample)."""
    out = weights.clone()
    for o in interventions.items:
        mask = unit_mask(o, layout, out.shape[0], out.device)
        layout.slice(out, o.site).masked_fill_(mask, 1.0 if o.action == "keep" else 0.0)
    return out


def unit_mask(o: Override, layout: SiteLayout, n: int, device: torch.device) -> torch.Tensor:
    """Bool (n, size of the site): the units ``o`` names."""
    i = o.site
    mask = torch.zeros(n, layout.sizes[i], dtype=torch.bool, device=device)
    if o.channels is not None:
        by_channel = layout.by_channel(mask, i)  # (n, C, positions) view of mask
        by_channel[:, list(o.channels), :] = True
    elif o.neurons is not None:
        shaped = mask.view(n, *layout.shapes[i])
        for idx in o.neurons:
            shaped[(slice(None), *idx)] = True
    else:
        mask.fill_(True)
    return mask


def site_index(site: object, names: Sequence[str]) -> int:
    """The index of ``site`` (a name or an index, negative from the end)."""
    if isinstance(site, bool) or not isinstance(site, (str, int)):
        raise InputError(f"a site is given by name or index, got {site!r}")
    if isinstance(site, int):
        if not -len(names) <= site < len(names):
            raise InputError(f"site index {site} out of range: there are {len(names)} sites")
        return site % len(names)
    if site in names:
        return list(names).index(site)
    close = difflib.get_close_matches(site, names, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    raise InputError(f"no site named {site!r}{hint} (Explanation.site_names lists them)")


def _override(action: str, i: int, name: str, units: Any, layout: SiteLayout) -> Override:
    """One site's entry as an :class:`Override`, its indices checked against the site."""
    if isinstance(units, str):
        if units != WHOLE_SITE:
            raise InputError(
                f"{action}[{name!r}] = {units!r}: use {WHOLE_SITE!r} for the whole site, "
                "a list of channel indices or a list of neuron index tuples"
            )
        return Override(action, i, name)
    if isinstance(units, int) and not isinstance(units, bool):
        units = [units]
    if isinstance(units, torch.Tensor):
        units = units.tolist()
    if not isinstance(units, Iterable):
        raise InputError(f"{action}[{name!r}] must be 'all' or a list, got {units!r}")
    units = list(units)
    if not units:
        raise InputError(f"{action}[{name!r}] is empty: name at least one channel or neuron")
    shape = layout.shapes[i]
    if all(isinstance(u, int) and not isinstance(u, bool) for u in units):
        c = layout.channels()[i]
        bad = [u for u in units if not -c <= u < c]
        if bad:
            raise InputError(
                f"{action}[{name!r}]: channel{'s' if len(bad) > 1 else ''} {bad} out of "
                f"range, the site has {c} channels (output shape {tuple(shape)})"
            )
        return Override(action, i, name, channels=tuple(sorted({u % c for u in units})))
    if all(isinstance(u, (tuple, list)) for u in units):
        neurons = []
        for u in units:
            idx = tuple(u)
            if len(idx) != len(shape) or not all(
                isinstance(v, int) and not isinstance(v, bool) and -s <= v < s
                for v, s in zip(idx, shape, strict=False)
            ):
                raise InputError(
                    f"{action}[{name!r}]: neuron {idx} is not an index into the site's "
                    f"output of shape {tuple(shape)} (batch dimension left out)"
                )
            neurons.append(tuple(v % s for v, s in zip(idx, shape, strict=True)))
        return Override(action, i, name, neurons=tuple(dict.fromkeys(neurons)))
    raise InputError(
        f"{action}[{name!r}] = {units!r}: give channel indices (ints) or neuron index tuples, "
        "not a mix"
    )


def _check_disjoint(iv: Interventions, layout: SiteLayout) -> None:
    """No unit may be both dropped and kept."""
    for o in iv.items:
        if o.action != "drop":
            continue
        for k in iv.items:
            if k.action == "keep" and k.site == o.site:
                both = unit_mask(o, layout, 1, torch.device("cpu")) & unit_mask(
                    k, layout, 1, torch.device("cpu")
                )
                if bool(both.any()):
                    raise InputError(
                        f"site {o.name!r}: {int(both.sum())} unit(s) are both dropped and "
                        "kept; an override says one or the other"
                    )


__all__ = [
    "NETWORKS",
    "WHOLE_SITE",
    "Interventions",
    "Override",
    "OverrideSpec",
    "apply_interventions",
    "check_network",
    "parse_interventions",
    "site_index",
    "unit_mask",
]
