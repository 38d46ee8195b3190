"""PathwayExplorer: the composite widget (photo, target, method, sparsity, scope).

Modules, in the order data flows through them:

* :mod:`.view`: the controls, layout, message area and progress bar (renders only);
* :mod:`.widget`: :class:`PathwayExplorer`, which turns trait and control changes into
  requests and shows their results;
* :mod:`.controls`: picker, upload and cancellation handlers (controls kept in step);
* :mod:`.baselines`: the attribution baselines in the method picker (maps, cache, figure);
* :mod:`.interventions`: the ``interventions`` trait, channel-chart clicks (removed /
  forced in / as selected) and the overrides applied to each result;
  :mod:`.intervention_panel` renders the list, Reset, "apply to" and the top-5s;
* :mod:`.evaluation_link`: the evaluation panel's snapshot of what is on show;
* :mod:`.gallery_link`: the channel gallery's snapshot (picture, selected site, model
  state) and ``set_gallery``;
* :mod:`.worker`: the request worker (generations, coalescing, cancel, progress, the
  worker thread and its idle exit);
* :mod:`.caches`: pictures, explanations per (image, target, method, scope) and
  plain-gradient maps.

``PathwayExplorer.save`` draws with :func:`critpath_widgets.report.render_explanation`,
the renderer the CLI uses too.
"""

from __future__ import annotations

from .widget import PathwayExplorer

__all__ = ["PathwayExplorer"]
