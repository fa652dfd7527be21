"""Board planning without a board: a KV260 power model, idle draw plus energy per tile.

``P = idle_w + joules_per_tile × tiles_per_s``: a SOM that idles at ``idle_w`` and spends
``joules_per_tile`` more for every tile it runs. Average power over a scene and energy per scene
follow from the tile rate (:func:`project_scene`).

Where the numbers come from:

- :data:`KV260_PUBLISHED` (an **estimate** until a trace from our own board exists):

  * idle 4.3 W on the SOM's input rail (the INA260 the governor reads): the low end of the
    4.3–4.8 W that Gubochkin, Gorshkova and Salovskii (Simfero, dAIEDGE project, "What One
    Inference Costs in Watts", March 2026) read from the KV260's on-SOM monitors while the DPU
    ran; taken as idle, so it errs high.
  * 0.98 W more while the accelerator runs flat out: their 12 V supply measurement, 9.15 W idle
    against 10.13 W under DPU load (the 12 V figure includes the carrier's regulators, so it
    errs high on the SOM rail).
  * 33 ms of accelerator time per 800 × 800 chip: the DPU time of YOLOv8n on the KV260 in
    Laganier et al., "Efficient SAR Vessel Detection for FPGA-Based On-Satellite Sensing",
    arXiv 2507.04842 (SEC '25). 0.98 W × 33 ms = 32 mJ per 0.64 MPx chip, scaled by area to
    13.2 mJ per 512 × 512 tile.

  It prices the accelerator only: the ARM cores' pre- and post-processing, which that paper
  found dominate per-chip time, are not in it. Its whole-system bound is the paper's headline
  (:data:`PAPER_CLAIM`): a ~700 MPx scene in under a minute at under 10 W, i.e. under 600 J.
- :func:`fit_from_trace` (measured): least squares of window-mean power on window tile rate
  from a recorded trace (``write_trace_csv``'s ``time_s,watts,energy_j,tiles_done``), so the
  ARM cores, DDR and everything else the INA260 sees is in the fit.
"""

from __future__ import annotations

import csv
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from sarvessel.runtime.power.errors import PowerError
from sarvessel.runtime.power.sensors import Activity, ScriptedSensor

__all__ = [
    "KV260_PUBLISHED",
    "PAPER_CLAIM",
    "PowerModel",
    "ScenePowerProjection",
    "fit_from_trace",
    "fit_from_trace_csv",
    "format_projection",
    "project_scene",
    "tiles_in_scene",
]


@dataclass(frozen=True)
class PowerModel:
    """``P = idle_w + joules_per_tile × tiles_per_s`` on one rail, for one tile size."""

    #: Draw with no tile running (W).
    idle_w: float
    #: Energy above idle per tile (J).
    joules_per_tile: float
    #: Tile side the per-tile energy is for (px).
    tile_size: int = 512
    #: Where the numbers come from.
    source: str = ""
    #: True for published-figure estimates, False for a fit to our own trace.
    estimate: bool = True
    #: The rail the model describes.
    rail: str = "KV260 SOM 5 V input (INA260 ina260_u14)"

    def watts(self, tiles_per_s: float) -> float:
        """Average draw at a steady ``tiles_per_s``."""
        return self.idle_w + self.joules_per_tile * tiles_per_s

    def for_tile_size(self, tile_size: int) -> PowerModel:
        """The same model for another tile side (energy scales with the tile's area)."""
        k = (tile_size / self.tile_size) ** 2
        return replace(self, joules_per_tile=self.joules_per_tile * k, tile_size=tile_size)

    def scripted_sensor(self, activity: Activity, tiles_per_s: float, **kwargs: object
                        ) -> ScriptedSensor:
        """A sensor that draws like this model while ``activity`` is busy at ``tiles_per_s``
        (for planning runs on the ground)."""
        return ScriptedSensor(self.idle_w, self.joules_per_tile * tiles_per_s,
                              activity=activity, name=f"model ({self.source_short})",
                              **kwargs)  # type: ignore[arg-type]

    @property
    def source_short(self) -> str:
        return self.source.split(";")[0]

    def to_dict(self) -> dict:
        return asdict(self)


#: Published-figure estimate for the KV260 (module docstring: sources and what it leaves out).
KV260_PUBLISHED = PowerModel(
    idle_w=4.3,
    joules_per_tile=0.98 * 0.033 * (512 * 512) / (800 * 800),
    tile_size=512,
    source=("published figures, estimate; idle: Simfero/dAIEDGE KV260 measurement (2026), "
            "4.3 W low end on the SOM monitors; +0.98 W under accelerator load (same, 12 V "
            "rail); 33 ms DPU time per 800x800 chip (Laganier et al., arXiv 2507.04842); "
            "accelerator only, ARM pre/post-processing not included"),
    estimate=True,
)

#: The paper's headline for a whole scene on the KV260 (Laganier et al., arXiv 2507.04842).
PAPER_CLAIM: dict[str, float | str] = {
    "scene_mpx": 700.0, "watts_below": 10.0, "seconds_below": 60.0, "joules_below": 600.0,
    "source": "Laganier et al., arXiv 2507.04842 (SEC '25): ~700 MPx in < 1 min at < 10 W",
}


@dataclass(frozen=True)
class ScenePowerProjection:
    """Projected draw of one scene at a steady tile rate."""

    scene_mpx: float
    tiles: int
    tiles_per_s: float
    seconds: float
    watts: float
    joules: float
    joules_per_mpx: float
    estimate: bool
    source: str

    def to_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) and math.isfinite(v) else v)
                for k, v in asdict(self).items()}


def tiles_in_scene(height: int, width: int, tile: int = 512, overlap: int = 64) -> int:
    """Tiles the pipeline runs over a ``height`` × ``width`` scene (the same count as the tiling
    module's ``tile_starts`` per axis, last tile shifted inward).

    >>> tiles_in_scene(1000, 1000), tiles_in_scene(512, 300)
    (9, 1)
    """
    def n(length: int) -> int:
        return 1 if length <= tile else math.ceil((length - tile) / (tile - overlap)) + 1

    return n(int(height)) * n(int(width))


def project_scene(model: PowerModel, tiles_per_s: float, *, scene_mpx: float = 700.0,
                  tile: int = 512, overlap: int = 64) -> ScenePowerProjection:
    """W and J for a square ``scene_mpx`` scene run at ``tiles_per_s`` (nodata tiles included:
    a planning upper bound). tile/overlap: the defaults are the runtime's 512 and 64.

    >>> p = project_scene(PowerModel(4.0, 0.01), 20.0, scene_mpx=1.0)
    >>> p.tiles, round(p.watts, 3), round(p.seconds, 3)
    (9, 4.2, 0.45)
    """
    if not tiles_per_s > 0:
        raise PowerError(f"tiles_per_s must be > 0, got {tiles_per_s}")
    side = int(round(math.sqrt(scene_mpx * 1e6)))
    tiles = tiles_in_scene(side, side, tile, overlap)
    m = model.for_tile_size(tile) if tile != model.tile_size else model
    seconds = tiles / tiles_per_s
    joules = m.idle_w * seconds + m.joules_per_tile * tiles
    return ScenePowerProjection(
        scene_mpx=scene_mpx, tiles=tiles, tiles_per_s=tiles_per_s, seconds=seconds,
        watts=joules / seconds, joules=joules, joules_per_mpx=joules / scene_mpx,
        estimate=m.estimate, source=m.source)


def format_projection(p: ScenePowerProjection) -> str:
    """One line for ``bench``: the projection beside the paper's claim."""
    kind = "estimate from published figures" if p.estimate else "fitted to a recorded trace"
    return (f"KV260 projection ({kind}): {p.watts:.1f} W, {p.joules:,.0f} J per "
            f"{p.scene_mpx:g} MPx scene ({p.tiles:,} tiles at {p.tiles_per_s:.1f} tiles/s, "
            f"{p.seconds:,.0f} s)  |  paper: < {PAPER_CLAIM['watts_below']:g} W, < 1 min "
            f"(< {PAPER_CLAIM['joules_below']:g} J)")


def fit_from_trace(times: np.ndarray, energy_j: np.ndarray, tiles_done: np.ndarray, *,
                   idle_w: float | None = None, window_s: float = 1.0, tile_size: int = 512,
                   source: str = "fit to a recorded trace") -> PowerModel:
    """Fit idle W and J per tile to a trace: cumulative energy and tiles done at each time.

    With ``idle_w`` known (the governor measures it), J/tile = (E − idle × T) / tiles. Without,
    a least-squares line of window-mean power on window tile rate over ``window_s`` windows
    (the default is 1 s); the trace must hold both idle and busy stretches.
    """
    t = np.asarray(times, np.float64)
    e = np.asarray(energy_j, np.float64)
    n = np.asarray(tiles_done, np.float64)
    if len(t) < 2 or t[-1] <= t[0]:
        raise PowerError("a fit needs a trace of >= 2 samples over a positive time span")
    total_tiles = n[-1] - n[0]
    if total_tiles <= 0:
        raise PowerError("the trace records no tiles: nothing to fit J per tile to")
    if idle_w is not None:
        j = (e[-1] - e[0] - idle_w * (t[-1] - t[0])) / total_tiles
        return PowerModel(float(idle_w), float(j), tile_size, source, estimate=False)
    edges = np.arange(t[0], t[-1] + 1e-9, window_s)
    if len(edges) < 3:
        raise PowerError(f"trace of {t[-1] - t[0]:.1f} s is too short for {window_s:g} s "
                         "windows; pass idle_w or a shorter window")
    ee = np.interp(edges, t, e)
    nn = np.interp(edges, t, n)
    p = np.diff(ee) / window_s
    r = np.diff(nn) / window_s
    if np.ptp(r) <= 1e-9:
        raise PowerError("the trace runs at one tile rate throughout, so idle and per-tile "
                         "energy cannot be told apart; pass idle_w (measured idle draw)")
    a = np.stack([np.ones_like(r), r], axis=1)
    (idle, j), *_ = np.linalg.lstsq(a, p, rcond=None)
    return PowerModel(float(idle), float(j), tile_size, source, estimate=False)


def fit_from_trace_csv(path: Path | str, *, idle_w: float | None = None,
                       window_s: float = 1.0, tile_size: int = 512) -> PowerModel:
    """:func:`fit_from_trace` on a CSV written by ``write_trace_csv``."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    need = {"time_s", "energy_j", "tiles_done"}
    if not rows or not need <= set(rows[0]):
        raise PowerError(f"{path}: needs columns {sorted(need)} (write_trace_csv's format)")
    t = np.asarray([float(r["time_s"]) for r in rows])
    e = np.asarray([float(r["energy_j"]) for r in rows])
    n = np.asarray([float(r["tiles_done"]) for r in rows])
    return fit_from_trace(t, e, n, idle_w=idle_w, window_s=window_s, tile_size=tile_size,
                          source=f"fit to {path.name}")
