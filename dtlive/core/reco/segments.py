"""Local segments: straight lines through the hits of one muon in one chamber.

Input is one row per hit, as plain arrays of equal length:

- ``event``: an integer that groups the hits of one muon (any values; hits of an event need not be adjacent);
- ``chamber`` (0-3), ``layer`` (1 = bottom ... 4 = top), ``cell`` (0-15), as :mod:`dtlive.core.detector` gives
  them from a channel (``chamber_of``, ``layer_of``, ``cell_of``);
- ``drift_ns``: the hit time minus the event's t0 (the time the muon crossed the chamber).

A hit gives a drift distance ``d = drift_ns * DRIFT_VELOCITY_MM_PER_NS`` (clipped to 0 .. half a cell) and
two candidate positions ``wire_x - d`` and ``wire_x + d`` at its layer's z, in the chamber's local frame
(z = 0 at the chamber's centre, x along the measured coordinate: global x for chambers 0, 2, 3, global y
for the rotated chamber 1). Hits whose drift time is outside ``drift_window_ns`` are not used at all.

:func:`fit_segments` builds, per (event, chamber), every candidate with one hit on each of >= ``min_hits``
distinct layers (a layer with several hits contributes each of its first ``max_hits_per_layer`` hits in turn,
or none), resolves the left/right ambiguity by fitting all 2^n sign choices of its n hits (all candidates
at once, vectorised), fits ``x = a + b z`` by weighted least squares with one resolution ``sigma_mm`` per hit
(default 0.25 mm), and keeps per (event, chamber) the candidate with the most hits, then the lowest chi2,
among those with chi2/ndof <= ``max_chi2_ndof`` (a candidate that cannot pass it whatever its signs, by a lower
bound of its chi2 from its triplets of hits, is not fitted: the choice is the same). Residuals are given both
biased (hit in the fit) and unbiased (the same hits, the same signs, the fit without that hit: the exact
leave-one-out residual ``r / (1 - h)``, h the hit's leverage). The residual summaries here and the efficiency counts of
:mod:`dtlive.core.reco.efficiency` are indexed by (chamber, layer, ...) and add up over shares and windows.

>>> z = np.array([-19.5, -6.5, 6.5, 19.5])  # a track x = 100 + 0.2 z through the four layers
>>> layer, x = np.arange(1, 5), 100 + 0.2 * z
>>> shift = np.array([-294.0, -315.0, -294.0, -315.0])
>>> cell = np.rint((x - shift) / 42).astype(int)
>>> drift = np.abs(x - (cell * 42 + shift)) / 53.8e-3
>>> seg = fit_segments(np.zeros(4, int), np.zeros(4, int), layer, cell, drift)
>>> len(seg), seg.n_hits.tolist(), round(float(seg.position_mm[0]), 6), round(float(seg.slope[0]), 6)
(1, [4], 100.0, 0.2)
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from dtlive.core import detector as det

DEFAULT_SIGMA_MM = 0.25  # per-hit resolution of the fit
DEFAULT_MAX_CHI2_NDOF = 5.0
DEFAULT_AMBIGUITY_CHI2 = 1.0
DEFAULT_MAX_HITS_PER_LAYER = 3  # combinations per (event, chamber) are bounded by (3 + 1)^4 = 256
DRIFT_WINDOW_NS = (-30.0, det.MAX_DRIFT_NS + 40.0)  # hits outside are not the muon's

LAYER_Z = np.array([det.LAYER_Z_MM[k] for k in range(1, det.N_LAYERS + 1)])  # index layer - 1
LAYER_SHIFT = np.array([det.LAYER_X_SHIFT_MM[k] for k in range(1, det.N_LAYERS + 1)])
HALF_CELL_MM = det.CELL_WIDTH_MM / 2
_NL = det.N_LAYERS
_MIRROR_MIN_DSLOPE = 0.1  # a mirror image's slope differs from the track's by more than this
_SIGNS = ((np.arange(1 << _NL)[:, None] >> np.arange(_NL)) & 1) * 2.0 - 1.0  # (16, 4) of -1/+1


@dataclass(frozen=True, eq=False)
class Segments:
    """Fitted segments (one per (event, chamber) at most) and the hits each one uses.

    Per segment: ``event``, ``chamber``, ``n_hits`` (3 or 4), ``position_mm`` (x at the chamber's centre,
    z = 0), ``slope`` (dx/dz), ``chi2``, ``ndof`` (n_hits - 2); :attr:`angle_deg` and :attr:`chi2_ndof`
    derive from them. Per hit of a segment (``hit_*``, grouped by segment): ``hit_segment`` (index of its
    segment), ``hit_index`` (row in the input arrays), ``hit_layer``, ``hit_cell``, ``hit_x_mm`` (the chosen
    side: wire x +- drift distance), ``hit_z_mm``, ``residual_mm`` (hit minus fitted line, biased) and
    ``residual_unbiased_mm`` (hit minus the line fitted without it).

    >>> s = Segments.empty()
    >>> len(s), s.angle_deg.shape
    (0, (0,))
    """

    event: np.ndarray
    chamber: np.ndarray
    n_hits: np.ndarray
    position_mm: np.ndarray
    slope: np.ndarray
    chi2: np.ndarray
    ndof: np.ndarray
    hit_segment: np.ndarray
    hit_index: np.ndarray
    hit_layer: np.ndarray
    hit_cell: np.ndarray
    hit_x_mm: np.ndarray
    hit_z_mm: np.ndarray
    residual_mm: np.ndarray
    residual_unbiased_mm: np.ndarray

    def __len__(self) -> int:
        return len(self.event)

    @property
    def angle_deg(self) -> np.ndarray:
        """Angle of the segment to the vertical in its chamber's view, degrees (arctan of the slope)."""
        return np.degrees(np.arctan(self.slope))

    @property
    def chi2_ndof(self) -> np.ndarray:
        """chi2 per degree of freedom."""
        return self.chi2 / self.ndof

    def take(self, keep: np.ndarray) -> Segments:
        """The segments where ``keep`` (a mask) is true, with their hits (``hit_segment`` counted anew).

        >>> seg = fit_segments([0, 0, 0, 1, 1, 1], [0, 0, 0, 2, 2, 2], [1, 2, 3] * 2, [7, 8, 7] * 2,
        ...                    [186.0, 204.5, 186.0] * 2)  # a vertical track in two events
        >>> later = seg.take(seg.event == 1)
        >>> later.chamber.tolist(), later.hit_segment.tolist(), later.hit_index.tolist()
        ([2], [0, 0, 0], [3, 4, 5])
        """
        keep = np.asarray(keep, bool)
        hits = keep[self.hit_segment]
        per_segment = ("event", "chamber", "n_hits", "position_mm", "slope", "chi2", "ndof")
        out = {f.name: getattr(self, f.name)[keep if f.name in per_segment else hits] for f in fields(self)}
        out["hit_segment"] = (np.cumsum(keep) - 1)[self.hit_segment[hits]]
        return Segments(**out)

    @classmethod
    def empty(cls) -> Segments:
        """No segment."""
        ints = ("event", "chamber", "n_hits", "ndof", "hit_segment", "hit_index", "hit_layer", "hit_cell")
        return cls(**{f.name: np.zeros(0, np.int64 if f.name in ints else np.float64) for f in fields(cls)})


def fit_segments(
    event: np.ndarray,
    chamber: np.ndarray,
    layer: np.ndarray,
    cell: np.ndarray,
    drift_ns: np.ndarray,
    *,
    sigma_mm: float = DEFAULT_SIGMA_MM,
    min_hits: int = 3,
    max_chi2_ndof: float = DEFAULT_MAX_CHI2_NDOF,
    max_hits_per_layer: int = DEFAULT_MAX_HITS_PER_LAYER,
    drift_window_ns: tuple[float, float] = DRIFT_WINDOW_NS,
    ambiguity_chi2: float = DEFAULT_AMBIGUITY_CHI2,
) -> Segments:
    """The best segment of every (event, chamber) with hits on >= ``min_hits`` layers (see the module doc).

    Parameters
    ----------
    event, chamber, layer, cell, drift_ns
        One entry per hit (see the module doc).
    sigma_mm
        Resolution of one hit, the weight of the fit and the scale of chi2.
    min_hits
        Fewest distinct layers (hits) of a segment, 3 or 4.
    max_chi2_ndof
        Candidates above this chi2/ndof are rejected; an (event, chamber) without any gives no segment.
    max_hits_per_layer
        Hits of one layer (of an event and chamber) tried, in (cell, input) order; the others are ignored.
    drift_window_ns
        Hits with a drift time outside ``[lo, hi]`` are ignored.
    ambiguity_chi2
        A track crossing a staircase of staggered cells (steeper than ~45 degrees) fits its hits exactly
        with every sign flipped too (a mirror image, with a slope differing by > 0.1); a sign choice whose
        chi2 is within this of the best and whose line is that much nearer the vertical is kept instead
        (cosmic muons prefer the vertical).

    Returns
    -------
    Segments
        Ordered by event, then chamber.

    Examples
    --------
    Three hits of a vertical track 10 mm right of the wires of cells 7 (layers 1, 3) and left of cell 8
    (layer 2), and a noise hit in layer 4 far off: the segment keeps the three aligned hits.

    >>> seg = fit_segments(np.zeros(4, int), np.ones(4, int), np.array([1, 2, 3, 4]), np.array([7, 8, 7, 0]),
    ...                    np.array([10, 11, 10, 200]) / 53.8e-3)
    >>> seg.chamber.tolist(), seg.n_hits.tolist(), seg.hit_layer.tolist(), np.round(seg.hit_x_mm, 3).tolist()
    ([1], [3], [1, 2, 3], [10.0, 10.0, 10.0])
    """
    event, chamber, layer, cell, drift_ns = (np.asarray(a) for a in (event, chamber, layer, cell, drift_ns))
    if not 3 <= min_hits <= _NL:
        raise ValueError(f"min_hits must be 3 or 4, got {min_hits}")
    groups = _group_hits(event, chamber, layer, cell, drift_ns, drift_window_ns, max_hits_per_layer, min_hits)
    if groups is None:
        return Segments.empty()
    order, counts, start, g_event, g_chamber = groups
    n_layers = (counts > 0).sum(axis=1)
    ctx = (order, start, cell, drift_ns, sigma_mm, max_chi2_ndof, ambiguity_chi2)
    # candidates with a hit on every layer that has one first; smaller subsets only where none of them is
    # accepted (a candidate with more hits always wins, so this is the same choice as trying all at once)
    chosen = [_choose(*_candidates(counts, n_layers >= min_hits, min_hits, skip=False), ctx)]
    retry = n_layers > min_hits
    retry[chosen[0]["group"]] = False
    if retry.any():
        chosen.append(_choose(*_candidates(counts, retry, min_hits, skip=True), ctx))
    best = {k: np.concatenate([c[k] for c in chosen]) for k in chosen[0]}
    if not len(best["group"]):
        return Segments.empty()
    by_group = np.argsort(best["group"], kind="stable")
    return _assemble({k: v[by_group] for k, v in best.items()}, g_event, g_chamber, cell, sigma_mm)


def _group_hits(event, chamber, layer, cell, drift_ns, window, max_per_layer, min_hits):
    """Usable hits sorted by (event, chamber, layer, cell, input order); per (event, chamber) group and layer
    the number of hits kept and the first one's position in that order."""
    valid = (drift_ns >= window[0]) & (drift_ns <= window[1]) & (layer >= 1) & (layer <= _NL)
    valid &= (cell >= 0) & (cell < det.CELLS_PER_LAYER) & (chamber >= 0) & (chamber < det.N_CHAMBERS)
    idx = np.flatnonzero(valid)
    if not len(idx):
        return None
    ev = event[idx].astype(np.int64)
    ev -= ev.min()
    if ev.max() < 1 << 52:  # one int64 key: a single sort
        key = ((ev * det.N_CHAMBERS + chamber[idx]) * _NL + layer[idx] - 1) * det.CELLS_PER_LAYER + cell[idx]
        order = idx[np.argsort(key, kind="stable")]
    else:
        order = idx[np.lexsort((cell[idx], layer[idx], chamber[idx], event[idx]))]
    ev, ch, la = event[order], chamber[order], layer[order]
    new_group = np.ones(len(order), bool)
    new_group[1:] = (ev[1:] != ev[:-1]) | (ch[1:] != ch[:-1])
    group = np.cumsum(new_group) - 1
    key = group * _NL + la - 1
    rank = _rank_in_runs(key)
    keep = rank < max_per_layer
    order, key = order[keep], key[keep]
    n_groups = int(group[-1]) + 1
    counts = np.bincount(key, minlength=n_groups * _NL)
    start = (np.cumsum(counts) - counts).reshape(n_groups, _NL)
    counts = counts.reshape(n_groups, _NL)
    first = np.flatnonzero(new_group)
    if not ((counts > 0).sum(axis=1) >= min_hits).any():
        return None
    return order, counts, start, ev[first], ch[first]


def _rank_in_runs(key: np.ndarray) -> np.ndarray:
    """Position of every element inside its run of equal consecutive keys."""
    new = np.ones(len(key), bool)
    new[1:] = key[1:] != key[:-1]
    first = np.flatnonzero(new)
    return np.arange(len(key)) - np.repeat(first, np.diff(np.append(first, len(key))))


def _candidates(counts: np.ndarray, active: np.ndarray, min_hits: int, skip: bool) -> tuple[np.ndarray, np.ndarray]:
    """Candidates of the ``active`` groups: their group and, per layer, a digit (0: layer unused, j: its j-th
    hit), enumerated in mixed radix per group. ``skip=False``: one hit on every layer that has one;
    ``skip=True``: the proper subsets of those layers with >= ``min_hits`` layers."""
    opts = counts + 1 if skip else np.maximum(counts, 1)
    n_comb = np.where(active, opts.prod(axis=1), 0)
    group = np.repeat(np.arange(len(counts)), n_comb)
    k = np.arange(len(group)) - np.repeat(np.cumsum(n_comb) - n_comb, n_comb)
    stride = np.cumprod(np.hstack([np.ones((len(counts), 1), counts.dtype), opts[:, :-1]]), axis=1)
    digit = (k[:, None] // stride[group]) % opts[group]
    if not skip:
        return group, np.where(counts[group] > 0, digit + 1, 0)
    n = (digit > 0).sum(axis=1)
    ok = (n >= min_hits) & (n < (counts[group] > 0).sum(axis=1))
    return group[ok], digit[ok]


def _choose(cand_group: np.ndarray, digit: np.ndarray, ctx: tuple) -> dict:
    """Fit the candidates; of every group the accepted one with the most hits, then the lowest chi2."""
    order, start, cell, drift_ns, sigma_mm, max_chi2_ndof, ambiguity_chi2 = ctx
    used = digit > 0
    rows = order[np.where(used, start[cand_group] + digit - 1, 0)]
    xw = cell[rows] * det.CELL_WIDTH_MM + LAYER_SHIFT
    d = np.clip(drift_ns[rows] * det.DRIFT_VELOCITY_MM_PER_NS, 0.0, HALF_CELL_MM)
    n = used.sum(axis=1)
    # a candidate whose chi2 exceeds the cut whatever its signs is never chosen: it is not fitted (the margin is
    # many times the rounding of a fit's chi2, so no candidate that could pass is left out)
    fit_it = np.flatnonzero(_chi2_floor(xw, d, used, sigma_mm) <= max_chi2_ndof * (n - 2) * (1 + 1e-6) + 1e-3)
    cand_group, used, rows, xw, d, n = (v[fit_it] for v in (cand_group, used, rows, xw, d, n))
    fit = _fit_in_chunks(xw, d, used, sigma_mm, ambiguity_chi2)
    ok = fit["chi2"] <= max_chi2_ndof * (n - 2)
    idx = np.flatnonzero(ok)
    idx = idx[np.lexsort((fit["chi2"][idx], cand_group[idx] * (_NL + 1) + _NL - n[idx]))]
    first = np.ones(len(idx), bool)
    first[1:] = cand_group[idx][1:] != cand_group[idx][:-1]
    best = idx[first]
    out = {"group": cand_group[best], "n": n[best], "used": used[best], "rows": rows[best], "xw": xw[best],
           "d": d[best]}  # fmt: skip
    return out | {k: v[best] for k, v in fit.items()}


# the triplets of layers (lower, middle, upper) and the weights of the middle hit's residual from the line
# through the outer two: r = x_mid - A x_low - B x_up
_LOW, _MID, _UP = np.array([(0, 1, 2), (0, 1, 3), (0, 2, 3), (1, 2, 3)]).T
_A = (LAYER_Z[_UP] - LAYER_Z[_MID]) / (LAYER_Z[_UP] - LAYER_Z[_LOW])
_B = (LAYER_Z[_MID] - LAYER_Z[_LOW]) / (LAYER_Z[_UP] - LAYER_Z[_LOW])


def _chi2_floor(xw: np.ndarray, d: np.ndarray, used: np.ndarray, sigma_mm: float) -> np.ndarray:
    """A lower bound of the chi2 of (M, 4) candidates, whatever their signs.

    The best line through three hits leaves a chi2 of ``r^2 / (1 + A^2 + B^2) / sigma^2``, r the middle hit's
    residual from the line through the outer two; a hit lies at ``xw +- d``, so ``|r|`` is at least
    ``|r(wires)| - (d_mid + A d_low + B d_up)``. More hits only add to a chi2: the largest bound of the
    candidate's triplets holds for it.

    >>> xw = np.array([[0.0, 21.0, 0.0, 0.0], [0.0, 105.0, 0.0, 0.0]])  # the middle wire 21 or 105 mm aside
    >>> d, used = np.full((2, 4), 10.0), np.array([[True, True, True, False]] * 2)
    >>> _chi2_floor(xw, d, used, 0.25).round(1).tolist()  # |21| - (10 + 5 + 5) = 1 mm, 105 - 20 = 85 mm
    [10.7, 77066.7]
    """
    gap = np.abs(xw[:, _MID] - _A * xw[:, _LOW] - _B * xw[:, _UP]) - (d[:, _MID] + _A * d[:, _LOW] + _B * d[:, _UP])
    gap = np.where(used[:, _LOW] & used[:, _MID] & used[:, _UP], np.maximum(gap, 0.0), 0.0)
    return (gap**2 / (1 + _A**2 + _B**2)).max(axis=1) / sigma_mm**2


_CHUNK = 1 << 14


def _fit_in_chunks(xw: np.ndarray, d: np.ndarray, used: np.ndarray, sigma_mm: float, ambiguity_chi2: float) -> dict:
    """:func:`_fit_all_signs` of the candidates in chunks (bounded (chunk, 16) arrays)."""
    if len(used) <= _CHUNK:
        return _fit_all_signs(xw, d, used, sigma_mm, ambiguity_chi2)
    parts = [_fit_all_signs(xw[i : i + _CHUNK], d[i : i + _CHUNK], used[i : i + _CHUNK], sigma_mm, ambiguity_chi2)
             for i in range(0, len(used), _CHUNK)]  # fmt: skip
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _fit_all_signs(xw, d, used, sigma_mm: float, ambiguity_chi2: float) -> dict:
    """Weighted straight-line fits of (M, 4) candidates (3 or 4 layers used) for every sign choice of their used
    layers (8 or 16); the best choice of each.

    Positions are centred on the weighted mean wire position ``ref`` of the candidate (precision). Returns
    ``ref``, ``a`` (at z = 0, relative to ref), ``b``, ``chi2``, ``signs`` (M, 4; +1 on unused layers) and the
    sums S, Sz, Szz, D.

    >>> xw = np.array([[7.0, 8.0, 7.0, 0.0]]) * 42 + LAYER_SHIFT  # cells 7, 8, 7 in layers 1-3
    >>> fit = _fit_all_signs(xw, np.array([[10.0, 11.0, 10.0, 0.0]]), np.array([[True, True, True, False]]),
    ...                      0.25, 1.0)
    >>> fit["signs"].tolist(), round(float(fit["ref"][0] + fit["a"][0]), 9), round(float(fit["chi2"][0]), 9)
    ([[1.0, -1.0, 1.0, 1.0]], 10.0, 0.0)
    """
    w = used / sigma_mm**2
    s0, sz, szz = w.sum(axis=1), w @ LAYER_Z, w @ LAYER_Z**2
    det_ = s0 * szz - sz**2
    ref = (w * xw).sum(axis=1) / s0
    xc = np.where(used, xw - ref[:, None], 0.0)
    wd = w * d
    # Sx, Sxz, Sxx of the wires, and the drift distances' terms that take a sign
    wires = np.stack([(w * xc).sum(axis=1), (w * xc * LAYER_Z).sum(axis=1), (w * (xc**2 + d**2)).sum(axis=1)])
    terms = np.stack([wd, wd * LAYER_Z, wd * xc])
    fit = {"ref": ref, "a": np.empty(len(w)), "b": np.empty(len(w)), "chi2": np.empty(len(w)),
           "signs": np.ones((len(w), _NL)), "s0": s0, "sz": sz, "szz": szz, "det": det_}  # fmt: skip
    n = used.sum(axis=1)
    for k in np.unique(n):
        rows = np.flatnonzero(n == k)
        cols = np.nonzero(used[rows])[1].reshape(len(rows), k)  # the used layers of each, in order
        signed = _signed(terms[:, rows[:, None], cols])
        sx = wires[0, rows, None] + signed[0]  # (M, 2^k)
        sxz = wires[1, rows, None] + signed[1]
        sxx = wires[2, rows, None] + 2.0 * signed[2]
        a, b, chi2, pick = _best_signs(sx, sxz, sxx, s0[rows], sz[rows], szz[rows], det_[rows], ambiguity_chi2)
        fit["a"][rows], fit["b"][rows], fit["chi2"][rows] = a, b, chi2
        fit["signs"][rows[:, None], cols] = _SIGNS[pick, :k]
    return fit


def _signed(v: np.ndarray) -> np.ndarray:
    """``sum_j s_j v[..., j]`` for every choice of signs s of the last axis of ``v`` (k of them -> 2^k), summed
    column by column; bit j of a choice is the sign of column j (1: +), as in ``_SIGNS``.

    >>> _signed(np.array([1.0, 10.0])).tolist()  # - -, + -, - +, + +
    [-11.0, -9.0, 9.0, 11.0]
    """
    out = np.stack([-v[..., 0], v[..., 0]], axis=-1)
    for j in range(1, v.shape[-1]):
        vj = v[..., j, None]
        out = np.concatenate([out - vj, out + vj], axis=-1)
    return out


def _best_signs(sx, sxz, sxx, s0, sz, szz, det_, ambiguity_chi2: float):
    """The line (a, b), chi2 and index of the chosen sign choice of each candidate, from the sums of every choice
    ((M, P) arrays)."""
    b = (s0[:, None] * sxz - sz[:, None] * sx) / det_[:, None]
    a = (szz[:, None] * sx - sz[:, None] * sxz) / det_[:, None]
    chi2 = np.maximum(sxx - a * sx - b * sxz, 0.0)  # the normal equations' identity
    # a track crossing a staircase of staggered cells fits its hits as well with every sign flipped (its mirror
    # image about the line of the wires, far steeper or flatter): of such images within ``ambiguity_chi2`` of
    # the best, take the nearest to vertical (cosmics prefer it). Flipping a hit near its wire only tilts the
    # line a little and is left to chi2.
    best = chi2.argmin(axis=1)
    rows = np.arange(len(best))
    tied = chi2 <= chi2[rows, best][:, None] + ambiguity_chi2
    flatter = tied & (np.abs(b) < np.abs(b[rows, best])[:, None] - _MIRROR_MIN_DSLOPE)
    alt = np.where(flatter, np.abs(b), np.inf).argmin(axis=1)
    pick = np.where(flatter[rows, alt], alt, best)
    return a[rows, pick], b[rows, pick], chi2[rows, pick], pick


def _assemble(best: dict, g_event, g_chamber, cell, sigma_mm) -> Segments:
    a, b, ref, n = best["a"], best["b"], best["ref"], best["n"]
    seg, col = np.nonzero(best["used"])  # hits of the segments, grouped by segment, in layer order
    z = LAYER_Z[col]
    x = best["xw"][seg, col] + best["signs"][seg, col] * best["d"][seg, col]
    resid = x - (ref[seg] + a[seg] + b[seg] * z)
    s0, sz, szz, det_ = (best[k][seg] for k in ("s0", "sz", "szz", "det"))
    leverage = (szz - 2.0 * z * sz + z**2 * s0) / det_ / sigma_mm**2
    hit_rows = best["rows"][seg, col]
    g = best["group"]
    return Segments(
        event=g_event[g].astype(np.int64), chamber=g_chamber[g].astype(np.int64), n_hits=n.astype(np.int64),
        position_mm=ref + a, slope=b, chi2=best["chi2"], ndof=(n - 2).astype(np.int64),
        hit_segment=seg.astype(np.int64), hit_index=hit_rows.astype(np.int64), hit_layer=(col + 1).astype(np.int64),
        hit_cell=np.asarray(cell)[hit_rows].astype(np.int64), hit_x_mm=x, hit_z_mm=z, residual_mm=resid,
        residual_unbiased_mm=resid / (1.0 - leverage),
    )  # fmt: skip


# --- residuals --------------------------------------------------------------------------------------------------


def residual_histogram(
    segments: Segments, edges: np.ndarray, *, unbiased: bool = True, min_hits: int = 4
) -> np.ndarray:
    """Counts of residuals per (chamber, layer) on ``edges`` with under- and overflow, of segments with at
    least ``min_hits`` hits (default 4: one leverage per layer, comparable widths).

    Returns an int64 array of shape (N_CHAMBERS, N_LAYERS, len(edges) + 1): index 0 is the underflow, the
    last one the overflow. The unbiased residual is the default: its width is the hit resolution combined
    with the uncertainty of the line fitted without the hit; the biased one is narrower.

    >>> seg = fit_segments(np.zeros(4, int), np.zeros(4, int), np.arange(1, 5), np.array([7, 8, 7, 8]),
    ...                    np.array([10.1, 11, 10, 11]) / 53.8e-3)
    >>> residual_histogram(seg, np.array([-1.0, 0.0, 1.0]))[0].tolist()  # layer 1's hit is 0.1 mm right
    [[0, 0, 1, 0], [0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]
    """
    edges = np.asarray(edges, float)
    width = len(edges) + 1
    keep = segments.n_hits[segments.hit_segment] >= min_hits
    r = (segments.residual_unbiased_mm if unbiased else segments.residual_mm)[keep]
    plane = segments.chamber[segments.hit_segment[keep]] * _NL + segments.hit_layer[keep] - 1
    b = np.searchsorted(edges, r, side="right")
    counts = np.bincount(plane * width + b, minlength=det.N_CHAMBERS * _NL * width)
    return counts.reshape(det.N_CHAMBERS, _NL, width)


def residual_moments(segments: Segments, *, min_hits: int = 4) -> np.ndarray:
    """Additive sums per (chamber, layer) of segments with >= ``min_hits`` hits: [n, sum r, sum r^2, sum u,
    sum u^2] of the biased (r) and unbiased (u) residuals, shape (N_CHAMBERS, N_LAYERS, 5); see
    :func:`hit_resolution`.

    >>> residual_moments(Segments.empty()).shape
    (4, 4, 5)
    """
    keep = segments.n_hits[segments.hit_segment] >= min_hits
    r, u = segments.residual_mm[keep], segments.residual_unbiased_mm[keep]
    plane = segments.chamber[segments.hit_segment[keep]] * _NL + segments.hit_layer[keep] - 1
    n_planes = det.N_CHAMBERS * _NL
    sums = [np.bincount(plane, weights=v, minlength=n_planes) for v in (np.ones_like(r), r, r**2, u, u**2)]
    return np.stack(sums, axis=-1).reshape(det.N_CHAMBERS, _NL, 5)


def hit_resolution(moments: np.ndarray) -> np.ndarray:
    """Hit resolution per (chamber, layer) from :func:`residual_moments`: (var_biased x var_unbiased)^(1/4).

    With a hit's leverage h, var_biased = sigma^2 (1 - h) and var_unbiased = sigma^2 / (1 - h), so their
    geometric mean is sigma^2 whatever the fit's lever arm (exact when every segment of the sums has the
    same layers, as 4-hit segments do). NaN with fewer than 2 residuals.

    >>> m = np.zeros((4, 4, 5)); m[0, 0] = [2, 0, 2 * 0.5**2, 0, 2 * 2.0**2]
    >>> float(hit_resolution(m)[0, 0])
    1.0
    """
    n = moments[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        var_b = moments[..., 2] / n - (moments[..., 1] / n) ** 2
        var_u = moments[..., 4] / n - (moments[..., 3] / n) ** 2
        return np.where(n >= 2, np.sqrt(np.sqrt(np.maximum(var_b * var_u, 0.0))), np.nan)
