"""Per-site figures of one sample: :class:`SiteSummary`, and :class:`LayerSummary`, the
list of them that :meth:`~.explanation.Explanation.layer_summary` returns, shown as a
table in a notebook and convertible to a pandas DataFrame."""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from .naming import site_labels

if TYPE_CHECKING:
    import pandas as pd

    from .layout import SiteGrid

#: the table's columns, as (key in :meth:`SiteSummary.row`, heading of the HTML table)
COLUMNS: tuple[tuple[str, str], ...] = (
    ("index", "index"),
    ("label", "site"),
    ("name", "module path"),
    ("kind", "kind"),
    ("shape", "shape"),
    ("neurons", "neurons"),
    ("kept", "kept"),
    ("kept_pct", "kept %"),
    ("total", "total contribution"),
    ("kept_total", "kept contribution"),
    ("kept_share", "kept share of contribution"),
)
#: rows of a :class:`LayerSummary` repr (the first and last ones; the table has all)
REPR_ROWS = 6


@dataclass
class SiteSummary:
    """Per-site figures for one sample: what the layer panel plots."""

    index: int
    name: str
    shape: tuple[int, ...]
    neurons: int
    kept: int
    total: float
    kept_total: float
    channel_total: torch.Tensor = field(repr=False)
    _channel_kept: Callable[[], torch.Tensor] | torch.Tensor = field(repr=False)
    #: how the site maps onto the input (kind "none" and a reason where it has no map)
    grid: SiteGrid | None = field(default=None, repr=False)
    #: contribution of the class token of a token site (left out of its map), else None
    class_token_total: float | None = None
    #: what the site is: its module type ("ReLU6") or the function called ("F.relu")
    kind: str = ""
    #: its human name ("block 3 · ReLU6 #2", :func:`.naming.site_labels`); a
    #: :class:`LayerSummary` fills it in from all its sites where it is empty
    label: str = ""

    @property
    def channel_kept(self) -> torch.Tensor:
        """Contribution kept by the pathway in each channel (computed on first use: a
        panel shows the channels of one site at a time)."""
        if callable(self._channel_kept):
            self._channel_kept = self._channel_kept()
        return self._channel_kept

    @property
    def kept_pct(self) -> float:
        """Kept neurons in percent of the site's neurons (NaN for a site without any)."""
        return 100.0 * self.kept / self.neurons if self.neurons else math.nan

    @property
    def kept_share(self) -> float:
        """Kept contribution as a share of the site's total (NaN where the total is 0)."""
        return self.kept_total / self.total if self.total else math.nan

    def row(self) -> dict[str, Any]:
        """The figures of the table's columns, by key (scalars only, no tensors)."""
        return {key: getattr(self, key) for key, _ in COLUMNS}


class LayerSummary(list):
    """The :class:`SiteSummary` of every site, in call order, for one sample.

    A plain list (indexing, iteration and ``len`` as before) that a notebook shows as a
    table (:meth:`_repr_html_`) and :meth:`to_frame` turns into a pandas DataFrame.
    """

    def __init__(self, sites: Iterable[SiteSummary] = (), sample: int = 0) -> None:
        super().__init__(sites)
        #: the sample of the batch these figures are of
        self.sample = sample
        # a label says where a site lies among all sites, so it is computed over the list
        if any(not s.label for s in self):
            labels = site_labels([s.name for s in self], [s.kind for s in self])
            for s, label in zip(self, labels, strict=True):
                s.label = s.label or label

    def to_frame(self) -> pd.DataFrame:
        """A DataFrame with one row per site and the table's columns (index: the site's)."""
        import pandas as pd  # only here: the engine does not need pandas otherwise

        keys = [key for key, _ in COLUMNS]
        frame = pd.DataFrame([s.row() for s in self], columns=keys)
        return frame.set_index("index")

    def _totals(self) -> str:
        """One line: sites, kept neurons and kept contribution over all sites."""
        kept, neurons = sum(s.kept for s in self), sum(s.neurons for s in self)
        total, kept_total = sum(s.total for s in self), sum(s.kept_total for s in self)
        pct = f"{100.0 * kept / neurons:.1f} %" if neurons else "-"
        return (
            f"sample {self.sample}, {len(self)} sites: kept {kept} of {neurons} neurons "
            f"({pct}), contribution {kept_total:.4g} of {total:.4g} ({_share(kept_total, total)})"
        )

    def __repr__(self) -> str:
        """The totals and a few sites, one line each (the table lists all)."""
        lines = [f"LayerSummary({self._totals()})"]
        n = len(self)
        shown = list(range(n))
        if n > REPR_ROWS:
            half = REPR_ROWS // 2
            shown = [*range(half), -1, *range(n - half, n)]
        for i in shown:
            if i < 0:
                lines.append(f"  ... {n - REPR_ROWS} more (to_frame() or the table lists all)")
                continue
            s = self[i]
            lines.append(
                f"  {s.index:>3} {s.label} ({s.name})  {tuple(s.shape)}  "
                f"kept {s.kept}/{s.neurons}, "
                f"contribution {s.kept_total:.4g} of {s.total:.4g} "
                f"({_share(s.kept_total, s.total)})"
            )
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        """An HTML table of every site (names escaped), with the totals as its caption."""
        head = "".join(f"<th>{html.escape(h)}</th>" for _, h in COLUMNS)
        rows = []
        for s in self:
            r = s.row()
            cells = [
                str(r["index"]),
                html.escape(str(r["label"])),
                html.escape(str(r["name"])),
                html.escape(str(r["kind"])),
                html.escape(str(tuple(r["shape"]))),
                str(r["neurons"]),
                str(r["kept"]),
                _number(r["kept_pct"], ".1f"),
                _number(r["total"], ".4g"),
                _number(r["kept_total"], ".4g"),
                _number(r["kept_share"], ".3f"),
            ]
            # invariant: one cell per column of COLUMNS, in its order
            rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        return (
            '<table class="critpath-layer-summary">'
            f"<caption>{html.escape(self._totals())}</caption>"
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )


def _share(part: float, whole: float) -> str:
    """``part / whole`` in percent, or "-" where ``whole`` is 0."""
    return f"{100.0 * part / whole:.1f} %" if whole else "-"


def _number(v: float, fmt: str) -> str:
    """``v`` formatted, or "-" for NaN (a share of nothing)."""
    return "-" if math.isnan(v) else format(v, fmt)
