"""The interventions panel: the active overrides, Reset, the network toggle and top-5s.

Renders only: the explorer fills it after each result and observes its controls
(Reset, the per-item remove buttons, the "apply to" toggle). CSS classes
(``critpath-interventions*``, ``critpath-top5*``) are the browser tests' hooks.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence

import ipywidgets as widgets

from ..channel_chart import FORCED_STYLE, REMOVED_STYLE

#: what the list says while nothing is overridden
NO_INTERVENTIONS_HTML = (
    "<i>No interventions. Click a bar in the channel chart to cycle the channel: "
    "removed, forced in, as selected.</i>"
)


def top_html(title: str, rows: Sequence[tuple[str, float]], target_name: str) -> str:
    """A titled top-k list; the target's row in bold."""
    items = "".join(
        f"<li>{'<b>' if name == target_name else ''}{html.escape(name)} "
        f"({p:.1%}){'</b>' if name == target_name else ''}</li>"
        for name, p in rows
    )
    return f"<div><b>{html.escape(title)}</b><ol style='margin:2px 0'>{items}</ol></div>"


class InterventionPanel(widgets.VBox):
    """The active interventions (each removable), Reset, network toggle, two top-5s."""

    def __init__(self) -> None:
        self.network_buttons = widgets.ToggleButtons(
            options=[("pathway", "pathway"), ("full network", "full")],
            value="pathway",
            description="apply to",
            tooltip="pathway: change the critical pathway; full network: ablate the "
            "removed channels in the unrestricted model",
            style={"button_width": "100px", "description_width": "60px"},
        )
        self.network_buttons.add_class("critpath-interventions-network")
        self.reset_button = widgets.Button(
            description="Reset", icon="undo", tooltip="Remove every intervention", disabled=True
        )
        self.reset_button.add_class("critpath-interventions-reset")
        self.site_button = widgets.Button(
            description="selected site: remove",
            tooltip="Cycle the whole selected site: removed, forced in, as selected",
            layout=widgets.Layout(width="auto"),
        )
        self.site_button.add_class("critpath-interventions-site")
        self.items = widgets.VBox([widgets.HTML(NO_INTERVENTIONS_HTML)])
        self.items.add_class("critpath-interventions-list")
        self.restricted = widgets.HTML()
        self.restricted.add_class("critpath-top5-restricted")
        self.full = widgets.HTML()
        self.full.add_class("critpath-top5-full")
        swatch = (
            '<span style="display:inline-block;width:10px;height:10px;background:{};'
            'border:2px solid {}"></span>'
        )
        legend = widgets.HTML(
            f"{swatch.format(*REMOVED_STYLE)} removed &nbsp; {swatch.format(*FORCED_STYLE)} "
            "forced in"
        )
        head = widgets.HBox(
            [
                widgets.HTML("<b>Interventions</b>"),
                self.network_buttons,
                self.site_button,
                self.reset_button,
                legend,
            ],
            layout=widgets.Layout(align_items="center", flex_flow="row wrap"),
        )
        tops = widgets.HBox(
            [self.restricted, self.full],
            layout=widgets.Layout(flex_flow="row wrap", justify_content="flex-start"),
        )
        for box in (self.restricted, self.full):
            box.layout = widgets.Layout(width="320px", margin="0 16px 0 0")
        self._remove_callbacks: list[Callable[[str, str], None]] = []
        self._buttons: list[widgets.Button] = []
        super().__init__([head, self.items, tops])
        self.add_class("critpath-interventions")

    def on_remove(self, callback: Callable[[str, str], None]) -> None:
        """Call ``callback(action, site name)`` when an item's remove button is clicked."""
        self._remove_callbacks.append(callback)

    def set_items(self, items: Sequence[tuple[str, str, str]]) -> None:
        """Show ``(action, site name, description)`` items, each with a remove button."""
        for b in self._buttons:
            b.close()
        self._buttons = []
        rows: list[widgets.Widget] = []
        for action, site, text in items:
            button = widgets.Button(
                icon="times", tooltip="remove this intervention", layout={"width": "32px"}
            )
            button.add_class("critpath-interventions-remove")
            button.on_click(lambda _b, a=action, s=site: self._removed(a, s))
            self._buttons.append(button)
            label = widgets.HTML(html.escape(text))
            rows.append(widgets.HBox([button, label], layout={"align_items": "center"}))
        self.items.children = rows or [widgets.HTML(NO_INTERVENTIONS_HTML)]
        self.reset_button.disabled = not items

    def _removed(self, action: str, site: str) -> None:
        for callback in self._remove_callbacks:
            callback(action, site)

    def set_top(
        self,
        restricted_title: str,
        restricted: Sequence[tuple[str, float]],
        full_title: str,
        full: Sequence[tuple[str, float]],
        target_name: str,
    ) -> None:
        """Show the intervened network's top classes beside the unchanged model's."""
        self.restricted.value = top_html(restricted_title, restricted, target_name)
        self.full.value = top_html(full_title, full, target_name)

    def top_text(self) -> tuple[str, str]:
        """The two top-5 panels' HTML (restricted, full)."""
        return self.restricted.value, self.full.value


__all__ = ["NO_INTERVENTIONS_HTML", "InterventionPanel", "top_html"]
