"""The readable default rendering (issue #16) measured on real maps: the displayed heat
concentrates where the map is strong, and the random pathway looks unlike NeuronMCT.

The metrics are those of benchmarks/bench_readability.py (see its docstring); the
thresholds hold with margin on the figures it prints (old -> new share of the heat in
the top 10 % of pixels: coffee 0.50 -> 0.68, chelsea 0.44 -> 0.52; displayed Spearman
random vs NeuronMCT at most 0.18 on the six sample photos).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from critpath_widgets.report import MapStyle, painted_heat

ROOT = Path(__file__).resolve().parent.parent


def _bench():
    spec = importlib.util.spec_from_file_location(
        "bench_readability", ROOT / "benchmarks" / "bench_readability.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


bench = _bench()
PHOTOS = ("coffee", "chelsea")


@pytest.fixture(scope="module")
def maps():
    return bench.pathway_maps(list(PHOTOS), ("neuron_mct", "random"))


def test_top_share_reference_values():
    rng = np.random.default_rng(0)
    mag = rng.random((40, 50))
    assert bench.top_share(np.ones_like(mag), mag) == pytest.approx(0.10)
    # heat only on the strongest tenth: all of it inside
    heat = (mag >= np.quantile(mag, 0.9)).astype(float)
    assert bench.top_share(heat, mag) == pytest.approx(1.0)
    # heat only on the weakest pixels: none of it inside
    assert bench.top_share(1.0 - heat, mag) == pytest.approx(0.0)


@pytest.mark.parametrize("photo", PHOTOS)
def test_new_rendering_puts_more_heat_where_the_map_is_strong(maps, photo):
    r = bench.measure(maps[photo])
    assert r["new"]["uniform"] == pytest.approx(0.10, abs=1e-3)
    # measured +0.08 (chelsea) and +0.18 (coffee)
    assert r["new"]["share"] > r["old"]["share"] + 0.04, r
    assert r["new"]["share"] > 4 * r["new"]["uniform"], r


@pytest.mark.parametrize("photo", PHOTOS)
def test_random_pathway_looks_unlike_neuron_mct(maps, photo):
    r = bench.measure(maps[photo])
    # measured 0.11 (coffee) and 0.18 (chelsea); the same map would give 1
    assert r["new"]["rho_random_mct"] < 0.35, r
    assert bench.spearman(
        painted_heat(maps[photo]["neuron_mct"]), painted_heat(maps[photo]["neuron_mct"])
    ) == pytest.approx(1.0)


def test_display_never_changes_the_map(maps):
    v = maps["coffee"]["neuron_mct"]
    before = v.copy()
    heat = painted_heat(v, MapStyle())
    np.testing.assert_array_equal(v, before)
    assert heat.shape == v.shape and 0 <= heat.min() and heat.max() <= 1
