"""3D tracks: one straight line per muon event through the segments of all four chambers.

Chambers 0, 2 and 3 measure x, the rotated chamber 1 measures y, all in one global frame (the chambers'
local coordinates taken as global ones, no alignment offsets) with global z = ``CHAMBER_HEIGHT_MM`` of the
chamber + the layer's z. The x view is fitted to the hits of the three x segments (their chosen left/right
positions, up to 12 hits), the y view is the rotated chamber's segment. The line is
``x = x_mm + tx (z - z_ref)``, ``y = y_mm + ty (z - z_ref)``; the muon comes down from the direction
(tx, ty, 1): zenith angle ``theta`` with ``cos(theta) = 1 / sqrt(1 + tx^2 + ty^2)`` and azimuth
``phi = atan2(ty, tx)`` (from +x towards +y), the angles the simulator draws.

>>> from dtlive.core.reco.segments import Segments
>>> tracks = fit_tracks(Segments.empty())
>>> len(tracks), tracks.cos_theta.shape
(0, (0,))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dtlive.core import detector as det
from dtlive.core.reco.segments import DEFAULT_SIGMA_MM, Segments

Z_REF_MM = float(det.CHAMBER_HEIGHT_MM.min() + det.CHAMBER_HEIGHT_MM.max()) / 2  # mid-height of the telescope
_X_CHAMBERS = np.array([c for c in range(det.N_CHAMBERS) if c != det.ROTATED_CHAMBER])


@dataclass(frozen=True, eq=False)
class Tracks:
    """Fitted 3D tracks, one per event with a segment in every chamber.

    ``event``; ``x_mm``, ``y_mm`` at ``z_ref_mm``; slopes ``tx = dx/dz``, ``ty = dy/dz``; the x view's
    ``chi2_x`` (in units of the hit resolution) with ``ndof_x = n_hits_x - 2``.

    >>> t = Tracks.empty()
    >>> t.theta_deg.tolist(), t.phi_deg.tolist()
    ([], [])
    """

    event: np.ndarray
    x_mm: np.ndarray
    tx: np.ndarray
    y_mm: np.ndarray
    ty: np.ndarray
    chi2_x: np.ndarray
    ndof_x: np.ndarray
    z_ref_mm: float = Z_REF_MM

    def __len__(self) -> int:
        return len(self.event)

    @property
    def cos_theta(self) -> np.ndarray:
        """Cosine of the zenith angle."""
        return 1.0 / np.sqrt(1.0 + self.tx**2 + self.ty**2)

    @property
    def theta_deg(self) -> np.ndarray:
        """Zenith angle, degrees (0 = vertical)."""
        return np.degrees(np.arccos(np.clip(self.cos_theta, -1.0, 1.0)))

    @property
    def phi_deg(self) -> np.ndarray:
        """Azimuth of the direction the muon comes from, degrees in (-180, 180], from +x towards +y."""
        return np.degrees(np.arctan2(self.ty, self.tx))

    @classmethod
    def empty(cls) -> Tracks:
        """No track."""
        f, i = np.zeros(0), np.zeros(0, np.int64)
        return cls(event=i, x_mm=f, tx=f, y_mm=f, ty=f, chi2_x=f, ndof_x=i)


def fit_tracks(segments: Segments, *, sigma_mm: float = DEFAULT_SIGMA_MM, z_ref_mm: float = Z_REF_MM) -> Tracks:
    """The 3D track of every event of ``segments`` with a segment in each of the four chambers.

    ``segments`` must hold at most one segment per (event, chamber), as :func:`~dtlive.core.reco.segments.fit_segments`
    gives (concatenations of its results over disjoint events too).

    Examples
    --------
    A track x = 30 + 0.1 (z - z_ref), y = -20 - 0.2 (z - z_ref), its hits made from the geometry:

    >>> from dtlive.core.reco.segments import LAYER_SHIFT, LAYER_Z, fit_segments
    >>> ch = np.repeat(np.arange(4), 4); lay = np.tile(np.arange(1, 5), 4)
    >>> z = det.CHAMBER_HEIGHT_MM[ch] + LAYER_Z[lay - 1]
    >>> local = np.where(ch == 1, -20 - 0.2 * (z - Z_REF_MM), 30 + 0.1 * (z - Z_REF_MM))
    >>> cell = np.rint((local - LAYER_SHIFT[lay - 1]) / 42).astype(int)
    >>> drift = np.abs(local - cell * 42 - LAYER_SHIFT[lay - 1]) / det.DRIFT_VELOCITY_MM_PER_NS
    >>> t = fit_tracks(fit_segments(np.zeros(16, int), ch, lay, cell, drift))
    >>> np.round([t.x_mm[0], t.tx[0], t.y_mm[0], t.ty[0]], 6).tolist(), round(float(t.phi_deg[0]), 2)
    ([30.0, 0.1, -20.0, -0.2], -63.43)
    """
    if not len(segments):
        return Tracks.empty()
    order = np.lexsort((segments.chamber, segments.event))
    ev = segments.event[order]
    new = np.ones(len(ev), bool)
    new[1:] = ev[1:] != ev[:-1]
    first = np.flatnonzero(new)
    n_seg = np.diff(np.append(first, len(ev)))
    complete = n_seg == det.N_CHAMBERS
    if not complete.any():
        return Tracks.empty()
    track_of_run = np.where(complete, np.cumsum(complete) - 1, -1)
    track_of_seg = np.empty(len(ev), np.int64)
    track_of_seg[order] = np.repeat(track_of_run, n_seg)
    n_tracks = int(complete.sum())
    # x view: the hits of the x chambers' segments
    hit_track = track_of_seg[segments.hit_segment]
    hit_chamber = segments.chamber[segments.hit_segment]
    xv = (hit_track >= 0) & np.isin(hit_chamber, _X_CHAMBERS)
    t, x = hit_track[xv], segments.hit_x_mm[xv]
    z = det.CHAMBER_HEIGHT_MM[hit_chamber[xv]] + segments.hit_z_mm[xv] - z_ref_mm
    s0, sz, szz = (np.bincount(t, weights=v, minlength=n_tracks) for v in (np.ones_like(z), z, z**2))
    sx, sxz, sxx = (np.bincount(t, weights=v, minlength=n_tracks) for v in (x, x * z, x**2))
    den = s0 * szz - sz**2
    tx = (s0 * sxz - sz * sx) / den
    x0 = (szz * sx - sz * sxz) / den
    chi2 = np.bincount(t, weights=(x - x0[t] - tx[t] * z) ** 2, minlength=n_tracks) / sigma_mm**2
    # y view: the rotated chamber's segment
    rot = np.flatnonzero((track_of_seg >= 0) & (segments.chamber == det.ROTATED_CHAMBER))
    ty = np.empty(n_tracks)
    y0 = np.empty(n_tracks)
    ty[track_of_seg[rot]] = segments.slope[rot]
    y0[track_of_seg[rot]] = segments.position_mm[rot] + segments.slope[rot] * (
        z_ref_mm - det.CHAMBER_HEIGHT_MM[det.ROTATED_CHAMBER]
    )
    return Tracks(event=ev[first[complete]], x_mm=x0, tx=tx, y_mm=y0, ty=ty, chi2_x=chi2,
                  ndof_x=(s0 - 2).astype(np.int64), z_ref_mm=z_ref_mm)  # fmt: skip


def cos_theta_histogram(tracks: Tracks, edges: np.ndarray) -> np.ndarray:
    """Counts of cos(zenith) on ``edges`` (additive over windows); values outside are not counted.

    >>> t = Tracks(event=np.arange(2), x_mm=np.zeros(2), tx=np.array([0.0, 1.0]), y_mm=np.zeros(2),
    ...            ty=np.zeros(2), chi2_x=np.zeros(2), ndof_x=np.full(2, 10))
    >>> cos_theta_histogram(t, np.array([0.5, 0.9, 1.0])).tolist()  # cos 45 deg and cos 0
    [1, 1]
    """
    return np.histogram(tracks.cos_theta, bins=np.asarray(edges, float))[0].astype(np.int64)
