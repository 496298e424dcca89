"""Exact geometric generator for the reconstruction tests: straight cosmic tracks through the cell geometry.

Tracks as the simulator draws them (uniform x, y at the telescope's mid-height over +-``halfwidth``,
cos^n zenith through a horizontal plane, uniform azimuth); every layer crossed records the cell whose wire is
nearest with the exact drift distance, optionally smeared by a Gaussian of ``sigma_mm`` and thinned by a
per-(chamber, layer, cell) efficiency. Returned as the plain hit arrays of :mod:`dtlive.core.reco.segments`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dtlive.core import detector as det
from dtlive.core.reco.segments import LAYER_SHIFT, LAYER_Z
from dtlive.core.reco.tracks import Z_REF_MM

PLANE_CHAMBER = np.repeat(np.arange(det.N_CHAMBERS), det.N_LAYERS)
PLANE_LAYER = np.tile(np.arange(1, det.N_LAYERS + 1), det.N_CHAMBERS)
PLANE_Z = det.CHAMBER_HEIGHT_MM[PLANE_CHAMBER] + LAYER_Z[PLANE_LAYER - 1]
HALFWIDTH = det.CELLS_PER_LAYER * det.CELL_WIDTH_MM / 2


@dataclass
class Generated:
    event: np.ndarray  # per hit
    chamber: np.ndarray
    layer: np.ndarray
    cell: np.ndarray
    drift_ns: np.ndarray
    true_x: np.ndarray  # per hit: the track's local coordinate at the layer
    wire_x: np.ndarray
    tx: np.ndarray  # per event
    ty: np.ndarray
    x_ref: np.ndarray  # x, y at Z_REF_MM
    y_ref: np.ndarray

    def local_at(self, event: np.ndarray, chamber: np.ndarray, z_local: float = 0.0) -> np.ndarray:
        """The true local coordinate of events' tracks in a chamber at local z."""
        dz = det.CHAMBER_HEIGHT_MM[chamber] + z_local - Z_REF_MM
        return np.where(chamber == det.ROTATED_CHAMBER, self.y_ref[event] + self.ty[event] * dz,
                        self.x_ref[event] + self.tx[event] * dz)  # fmt: skip

    def local_slope(self, event: np.ndarray, chamber: np.ndarray) -> np.ndarray:
        return np.where(chamber == det.ROTATED_CHAMBER, self.ty[event], self.tx[event])


def generate(
    n: int,
    *,
    seed: int = 0,
    sigma_mm: float = 0.0,
    efficiency: float | np.ndarray = 1.0,
    zenith_power: float = 2.0,
    halfwidth: float = HALFWIDTH,
    wire_halflength: float = HALFWIDTH,
    max_zenith_deg: float = 90.0,
) -> Generated:
    """``n`` muon events (event ids 0 .. n-1; events crossing no layer have no hit); a layer records a hit only
    where the track crosses it within ``wire_halflength`` of the chamber centre along the wires."""
    rng = np.random.default_rng(seed)
    x0, y0 = rng.uniform(-halfwidth, halfwidth, n), rng.uniform(-halfwidth, halfwidth, n)
    lo = np.cos(np.radians(max_zenith_deg)) ** (zenith_power + 2.0)
    cos_t = rng.uniform(lo, 1.0, n) ** (1.0 / (zenith_power + 2.0))
    tan_t = np.sqrt(1.0 - cos_t**2) / cos_t
    phi = rng.uniform(0.0, 2 * np.pi, n)
    tx, ty = tan_t * np.cos(phi), tan_t * np.sin(phi)
    dz = PLANE_Z - Z_REF_MM
    x = x0[:, None] + np.outer(tx, dz)
    y = y0[:, None] + np.outer(ty, dz)
    rotated = PLANE_CHAMBER == det.ROTATED_CHAMBER
    local, along = np.where(rotated, y, x), np.where(rotated, x, y)
    shift = LAYER_SHIFT[PLANE_LAYER - 1]
    cell = np.rint((local - shift) / det.CELL_WIDTH_MM).astype(np.int64)
    hit = (cell >= 0) & (cell < det.CELLS_PER_LAYER) & (np.abs(along) <= wire_halflength)
    eff = np.broadcast_to(np.asarray(efficiency, float), (det.N_CHAMBERS, det.N_LAYERS, det.CELLS_PER_LAYER))
    cell_c = np.clip(cell, 0, det.CELLS_PER_LAYER - 1)
    hit &= rng.random(hit.shape) < eff[PLANE_CHAMBER, PLANE_LAYER - 1, cell_c]
    ev, plane = np.nonzero(hit)
    c = cell[ev, plane]
    wire = c * det.CELL_WIDTH_MM + shift[plane]
    true_x = local[ev, plane]
    d = np.abs(true_x - wire) + rng.normal(0.0, sigma_mm, len(ev)) * (sigma_mm > 0)
    return Generated(event=ev, chamber=PLANE_CHAMBER[plane], layer=PLANE_LAYER[plane], cell=c,
                     drift_ns=d / det.DRIFT_VELOCITY_MM_PER_NS, true_x=true_x, wire_x=wire, tx=tx, ty=ty,
                     x_ref=x0, y_ref=y0)  # fmt: skip


def hit_arrays(g: Generated) -> tuple[np.ndarray, ...]:
    return g.event, g.chamber, g.layer, g.cell, g.drift_ns
