"""The compiled loop of the segment fit: every (event, chamber) group of hits fitted in one pass.

:mod:`dtlive.core.reco.segments` and :mod:`dtlive.core.reco.efficiency` describe what is fitted and chosen;
this module does it, group by group, in machine code (numba, compiled once and cached on disk). The groups
are small (a few hits on four layers), so one loop that fits a group's candidates and every sign choice of
each in registers costs a fraction of array code that pays numpy's per-call overhead on tiny arrays.

Input: the usable hits' rows sorted by (event code, chamber, layer, cell, row) and per row the event code,
chamber, layer, cell and drift distance. For each group, fit 0 takes every layer (``min_hits`` of them at
least); fit ``t`` (1-4, the "other layers" efficiency) leaves out layer ``t`` and predicts the cell crossed
there, found when a usable hit of the group lies within ``neighbours`` cells of it.

>>> import numpy as np
>>> rows = np.arange(4)
>>> cell, layer = np.array([7, 8, 7, 8]), np.array([1, 2, 3, 4])
>>> d = np.array([10.0, 11.0, 10.0, 11.0])  # a vertical track at x = 10 mm
>>> seg, hits, eff = fit_groups(rows, np.zeros(4, np.int64), np.zeros(4, np.int64), layer, cell, d,
...                             True, True, 3, 3, 0.25, 5.0, 1.0, 1, 1.0)
>>> int(seg.n[0]), round(float(seg.ref[0] + seg.a[0]), 6), hits.layer.tolist(), int(eff.found.sum())
(4, 10.0, [1, 2, 3, 4], 4)
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from dtlive.core import detector as det

_NL = det.N_LAYERS
_LAYER_Z = np.array([det.LAYER_Z_MM[k] for k in range(1, _NL + 1)])
_LAYER_SHIFT = np.array([det.LAYER_X_SHIFT_MM[k] for k in range(1, _NL + 1)])
_CELL_MM = float(det.CELL_WIDTH_MM)
_NCELLS = det.CELLS_PER_LAYER
_NCH = det.N_CHAMBERS
_MIRROR_MIN_DSLOPE = 0.1  # a mirror image's slope differs from the track's by more than this
# the sign of the j-th used layer in sign choice p (bit j of p: +)
_SIGNS = np.array([[1.0 if (p >> j) & 1 else -1.0 for p in range(1 << _NL)] for j in range(_NL)])
_TIE = 1e-9  # chi2s closer than this are equal fits, whatever the rounding
# the triplets of layers (lower, middle, upper) and the weights of the middle hit's residual from the line
# through the outer two: r = x_mid - A x_low - B x_up (the chi2 floor of a candidate, whatever its signs)
_TRIPLETS = np.array([(0, 1, 2), (0, 1, 3), (0, 2, 3), (1, 2, 3)])
_TA = (_LAYER_Z[_TRIPLETS[:, 2]] - _LAYER_Z[_TRIPLETS[:, 1]]) / (_LAYER_Z[_TRIPLETS[:, 2]] - _LAYER_Z[_TRIPLETS[:, 0]])
_TB = (_LAYER_Z[_TRIPLETS[:, 1]] - _LAYER_Z[_TRIPLETS[:, 0]]) / (_LAYER_Z[_TRIPLETS[:, 2]] - _LAYER_Z[_TRIPLETS[:, 0]])


class SegmentRows(NamedTuple):
    """Per fit-0 segment: ``code``, ``chamber``, ``n`` (hits), ``ref`` (weighted mean wire x), ``a`` (x at z = 0
    minus ref), ``b`` (slope), ``chi2``, and the fit's sums ``s0``, ``sz``, ``szz``, ``det``.

    >>> seg, _, _ = fit_groups(np.arange(3), np.zeros(3), np.zeros(3), np.arange(1, 4), np.array([7, 8, 7]),
    ...                        np.array([10.0, 11.0, 10.0]), True, False, 3, 3, 0.25, 5.0, 1.0, 1, 1.0)
    >>> seg.n.tolist(), round(float(seg.ref[0] + seg.a[0]), 6), round(float(seg.chi2[0]), 6)
    ([3], 10.0, 0.0)
    """

    code: np.ndarray
    chamber: np.ndarray
    n: np.ndarray
    ref: np.ndarray
    a: np.ndarray
    b: np.ndarray
    chi2: np.ndarray
    s0: np.ndarray
    sz: np.ndarray
    szz: np.ndarray
    det: np.ndarray


class SegmentHits(NamedTuple):
    """Per hit of a fit-0 segment, grouped by segment in layer order: ``segment``, ``row``, ``layer`` (1-4),
    ``x`` (the chosen side), ``z``, ``residual`` (biased) and ``unbiased`` (leave-one-out).

    >>> _, hits, _ = fit_groups(np.arange(3), np.zeros(3), np.zeros(3), np.arange(1, 4), np.array([7, 8, 7]),
    ...                         np.array([10.0, 11.0, 10.0]), True, False, 3, 3, 0.25, 5.0, 1.0, 1, 1.0)
    >>> hits.layer.tolist(), np.round(hits.x, 6).tolist()
    ([1, 2, 3], [10.0, 10.0, 10.0])
    """

    segment: np.ndarray
    row: np.ndarray
    layer: np.ndarray
    x: np.ndarray
    z: np.ndarray
    residual: np.ndarray
    unbiased: np.ndarray


class EfficiencyRows(NamedTuple):
    """Per expected hit (group order, then tested layer): ``code``, ``flat`` (chamber, layer, cell) index,
    ``layer`` (tested, 1-4) and ``found``.

    >>> _, _, eff = fit_groups(np.arange(3), np.zeros(3), np.zeros(3), np.arange(1, 4), np.array([7, 8, 7]),
    ...                        np.array([10.0, 11.0, 10.0]), False, True, 3, 3, 0.25, 5.0, 1.0, 1, 1.0)
    >>> eff.layer.tolist(), eff.found.tolist(), (eff.flat % 16).tolist()  # layer 4 expected in cell 8, not found
    ([4], [False], [8])
    """

    code: np.ndarray
    flat: np.ndarray
    layer: np.ndarray
    found: np.ndarray


def fit_groups(order, code, chamber, layer, cell, d, with_all: bool, with_leave_out: bool, min_hits: int,
               max_per_layer: int, sigma_mm: float, max_chi2_ndof: float, ambiguity_chi2: float, neighbours: int,
               max_slope: float) -> tuple[SegmentRows, SegmentHits, EfficiencyRows]:
    """Fit every group of the sorted usable ``order`` (see the module doc); ``d``: drift distances (mm, clipped).

    ``with_all``: the segments of fit 0 (``min_hits`` layers at least); ``with_leave_out``: the efficiency
    entries of fits 1-4 (three layers). Arrays are indexed by row; ``order`` holds the usable rows sorted by
    (code, chamber, layer, cell, row).

    >>> seg, hits, eff = fit_groups(np.arange(3), np.zeros(3), np.zeros(3), np.arange(1, 4), np.array([7, 8, 7]),
    ...                             np.array([10.0, 11.0, 10.0]), True, True, 3, 3, 0.25, 5.0, 1.0, 1, 1.0)
    >>> len(seg.n), len(hits.row), len(eff.flat)  # a 3-hit segment; only layer 4 can be predicted
    (1, 3, 1)
    """
    out = _fit_groups(np.ascontiguousarray(order, np.int64), np.ascontiguousarray(code, np.int64),
                      np.ascontiguousarray(chamber, np.int64), np.ascontiguousarray(layer, np.int64),
                      np.ascontiguousarray(cell, np.int64), np.ascontiguousarray(d, np.float64), bool(with_all),
                      bool(with_leave_out), int(min_hits), int(max_per_layer), float(sigma_mm), float(max_chi2_ndof),
                      float(ambiguity_chi2), int(neighbours), float(max_slope))  # fmt: skip
    seg_i, seg_f, hit_i, hit_f, eff_i, n_seg, n_hit, n_eff = out
    seg = SegmentRows(seg_i[:n_seg, 0], seg_i[:n_seg, 1], seg_i[:n_seg, 2], *(seg_f[:n_seg, k] for k in range(8)))
    hits = SegmentHits(hit_i[:n_hit, 0], hit_i[:n_hit, 1], hit_i[:n_hit, 2], *(hit_f[:n_hit, k] for k in range(4)))
    eff = EfficiencyRows(eff_i[:n_eff, 0], eff_i[:n_eff, 1], eff_i[:n_eff, 2], eff_i[:n_eff, 3].astype(bool))
    return seg, hits, eff


def timed_order(ticks, start, event, chamber, layer, cell, t0_ns, tdc_ns: float, velocity: float, half_cell: float,
                lo_ns: float, hi_ns: float) -> tuple[np.ndarray, np.ndarray]:
    """The input of :func:`fit_groups` from events: the usable rows sorted by (event, chamber, layer, cell, row)
    and every hit's drift distance (mm, clipped to 0 .. ``half_cell``).

    Per chamber hit, in time order (the hits of an event are consecutive): ``ticks``, ``event`` (-1: none),
    ``chamber``, ``layer``, ``cell``; per event its ``start`` (ticks) and its t0 per chamber (``t0_ns``, NaN:
    none). A hit is usable when its event has a t0 for its chamber and its drift time,
    ``(ticks - start) * tdc_ns - t0``, lies in ``[lo_ns, hi_ns]``.

    >>> t0 = np.array([[-100.0, np.nan, np.nan, np.nan]])  # event 0 has a t0 in chamber 0 only
    >>> order, d = timed_order(np.array([0, 0, 5, 9]), np.array([0]), np.array([0, 0, 0, -1]), np.array([0, 1, 0, 0]),
    ...                        np.array([2, 1, 1, 1]), np.array([3, 3, 3, 3]), t0, 1.0, 0.1, 21.0, -30.0, 430.0)
    >>> order.tolist(), d.round(1).tolist()  # by layer in chamber 0; the hit of chamber 1 and the lone one: none
    ([2, 0], [10.0, 0.0, 10.5, 0.0])
    """
    if np.shape(t0_ns) != (len(start), _NCH):
        raise ValueError(f"t0_ns must have one row per event and a column per chamber, {(len(start), _NCH)}; "
                         f"got {np.shape(t0_ns)}")
    ticks, start, event, chamber, layer, cell = (np.ascontiguousarray(a, np.int64)
                                                 for a in (ticks, start, event, chamber, layer, cell))
    return _timed_order(ticks, start, event, chamber, layer, cell, np.ascontiguousarray(t0_ns, np.float64).ravel(),
                        float(tdc_ns), float(velocity), float(half_cell), float(lo_ns), float(hi_ns))  # fmt: skip


@numba.njit(cache=True, nogil=True)
def _timed_order(ticks, start, event, chamber, layer, cell, t0, tdc_ns, velocity, half_cell, lo_ns,
                 hi_ns):  # pragma: no cover - compiled
    n = len(ticks)
    order = np.empty(n, np.int64)
    order_key = np.empty(n, np.int64)  # the (chamber, layer, cell) key of each row of ``order``
    d = np.zeros(n)
    n_order = 0
    i = 0
    while i < n:
        ev = event[i]
        j = i + 1
        while j < n and event[j] == ev:
            j += 1
        if ev >= 0:
            first = n_order
            for k in range(i, j):
                t0_hit = t0[ev * _NCH + chamber[k]]
                if np.isnan(t0_hit):  # no t0 for this chamber
                    continue
                drift = (ticks[k] - start[ev]) * tdc_ns - t0_hit
                d[k] = min(max(drift * velocity, 0.0), half_cell)
                if drift < lo_ns or drift > hi_ns:
                    continue
                key = (chamber[k] * _NL + layer[k] - 1) * _NCELLS + cell[k]
                q = n_order  # insertion sort of the event's rows by (chamber, layer, cell), then row
                while q > first and order_key[q - 1] > key:
                    order[q], order_key[q] = order[q - 1], order_key[q - 1]
                    q -= 1
                order[q], order_key[q] = k, key
                n_order += 1
        i = j
    return order[:n_order], d


@numba.njit(cache=True, nogil=True)
def _fit_groups(order, code, chamber, layer, cell, d, with_all, with_leave_out, min_hits, max_per_layer, sigma,
                max_chi2_ndof, ambiguity, neighbours, max_slope):  # pragma: no cover - compiled
    n = len(order)
    seg_i = np.empty((n, 3), np.int64)
    seg_f = np.empty((n, 8), np.float64)
    hit_i = np.empty((n, 3), np.int64)
    hit_f = np.empty((n, 4), np.float64)
    eff_i = np.empty((4 * n, 4), np.int64)
    n_seg = n_hit = n_eff = 0
    run_start = np.zeros(_NL, np.int64)
    slopes, chi2s = np.zeros(1 << _NL), np.zeros(1 << _NL)  # per sign choice of a candidate
    run_len = np.zeros(_NL, np.int64)
    kept = np.zeros(_NL, np.int64)
    digits = np.zeros(_NL, np.int64)
    rows = np.full(_NL, -1, np.int64)
    xw = np.zeros(_NL)
    dd = np.zeros(_NL)
    # per fit (0: all layers, t = 1-4: all but layer t): hits, rank in its pass, rows, signs and
    # ref, a, b, chi2, s0, sz, szz, det of its chosen candidate
    fit_n = np.zeros(_NL + 1, np.int64)
    fit_rank = np.zeros(_NL + 1, np.int64)
    fit_rows = np.full((_NL + 1, _NL), -1, np.int64)
    fit_signs = np.ones((_NL + 1, _NL))
    fit_f = np.zeros((_NL + 1, 8))
    # the proper subsets of a group with hits on all four layers are the candidates of fits 1-4, when these run
    reuse = with_leave_out and min_hits == _NL - 1
    i = 0
    while i < n:
        g_code, g_chamber = code[order[i]], chamber[order[i]]
        for la in range(_NL):  # element by element: a slice would be a view with a reference count
            run_len[la] = 0
        j = i
        while j < n and code[order[j]] == g_code and chamber[order[j]] == g_chamber:
            la = layer[order[j]] - 1
            if run_len[la] == 0:
                run_start[la] = j
            run_len[la] += 1
            j += 1
        for la in range(_NL):
            kept[la] = min(run_len[la], max_per_layer)
        for step in range(_NL + 1):
            fit = (step + 1) % (_NL + 1)  # fits 1-4 first, then fit 0
            if (fit > 0 and not with_leave_out) or (fit == 0 and not with_all):
                continue
            skip = fit - 1
            need = min_hits if fit == 0 else _NL - 1
            fit_n[fit] = 0
            n_layers = 0
            for la in range(_NL):
                if la != skip and kept[la] > 0:
                    n_layers += 1
            if n_layers < need:
                continue
            # candidates: one hit on every layer that has one (digit j: the layer's j-th hit), in mixed radix
            # with layer 1's digit fastest; only if none is accepted, the proper subsets of those layers with
            # >= need of them (digit 0: layer unused). Kept: the most hits, then the lowest chi2, then the first.
            best_n, best_chi2 = 0, np.inf
            for subsets in range(2):
                if subsets == 1 and (best_n > 0 or n_layers <= need or fit > 0 or reuse):
                    break
                first_digit = 1 - subsets
                total = 1
                for la in range(_NL):
                    digits[la] = first_digit if la != skip and kept[la] > 0 else 0
                    if la != skip and kept[la] > 0:
                        total *= kept[la] + subsets
                for k in range(total):
                    if k > 0:  # the next candidate: an odometer
                        for la in range(_NL):
                            if la == skip or kept[la] == 0:
                                continue
                            if digits[la] < kept[la]:
                                digits[la] += 1
                                break
                            digits[la] = first_digit
                    m = 0
                    for la in range(_NL):
                        rows[la] = -1
                        if digits[la] > 0:
                            r = order[run_start[la] + digits[la] - 1]
                            rows[la] = r
                            xw[la] = cell[r] * _CELL_MM + _LAYER_SHIFT[la]
                            dd[la] = d[r]
                            m += 1
                        else:
                            xw[la] = dd[la] = 0.0
                    if m < need or (subsets == 1 and m >= n_layers) or m < best_n:
                        continue
                    cut = max_chi2_ndof * (m - 2)
                    bound = min(cut, best_chi2) if m == best_n else cut  # only a lower chi2 can take the best's place
                    x4 = (xw[0], xw[1], xw[2], xw[3])
                    d4 = (dd[0], dd[1], dd[2], dd[3])
                    u4 = (rows[0] >= 0, rows[1] >= 0, rows[2] >= 0, rows[3] >= 0)
                    if _chi2_floor(x4, d4, u4) / sigma**2 > bound * (1 + 1e-6) + 1e-3:
                        continue  # above the cut (or the best) whatever its signs
                    f = _fit_signs(x4, d4, u4, sigma, ambiguity, slopes, chi2s)
                    chi2 = f[3]
                    if chi2 > cut or (m == best_n and not chi2 < best_chi2):
                        continue
                    best_n, best_chi2 = m, chi2
                    rank = 0
                    stride = 1
                    for la in range(_NL):
                        fit_rows[fit, la] = rows[la]
                        fit_signs[fit, la] = f[8 + la]
                        rank += digits[la] * stride
                        stride *= kept[la] + 1
                    for q in range(8):
                        fit_f[fit, q] = f[q]
                    fit_rank[fit] = rank
            fit_n[fit] = best_n
            if fit == 0 and best_n == 0 and reuse and n_layers == _NL:
                pick = -1  # the best of fits 1-4: the lowest chi2, then the first in the subsets' order
                for t in range(1, _NL + 1):
                    if fit_n[t] > 0 and (pick < 0 or fit_f[t, 3] < fit_f[pick, 3]
                                         or (fit_f[t, 3] == fit_f[pick, 3] and fit_rank[t] < fit_rank[pick])):
                        pick = t
                if pick > 0:
                    fit_n[0] = fit_n[pick]
                    for la in range(_NL):
                        fit_rows[0, la], fit_signs[0, la] = fit_rows[pick, la], fit_signs[pick, la]
                    for q in range(8):
                        fit_f[0, q] = fit_f[pick, q]
            if fit > 0 and fit_n[fit] > 0:  # the "other layers" prediction for layer t
                t = fit - 1
                slope = fit_f[fit, 2]
                x = fit_f[fit, 0] + fit_f[fit, 1] + slope * _LAYER_Z[t]
                pred = np.int64(np.rint((x - _LAYER_SHIFT[t]) / _CELL_MM))
                if pred < 0 or pred >= _NCELLS or abs(slope) > max_slope:
                    continue
                found = 0
                for k in range(run_start[t], run_start[t] + run_len[t]):
                    if abs(cell[order[k]] - pred) <= neighbours:
                        found = 1
                        break
                eff_i[n_eff, 0] = g_code
                eff_i[n_eff, 1] = (g_chamber * _NL + t) * _NCELLS + pred
                eff_i[n_eff, 2], eff_i[n_eff, 3] = fit, found
                n_eff += 1
            if fit == 0 and fit_n[0] > 0:
                seg_i[n_seg, 0], seg_i[n_seg, 1], seg_i[n_seg, 2] = g_code, g_chamber, fit_n[0]
                ref, a, b = fit_f[0, 0], fit_f[0, 1], fit_f[0, 2]
                s0, sz, szz, dt = fit_f[0, 4], fit_f[0, 5], fit_f[0, 6], fit_f[0, 7]
                for q in range(8):
                    seg_f[n_seg, q] = fit_f[0, q]
                for la in range(_NL):
                    r = fit_rows[0, la]
                    if r < 0:
                        continue
                    z = _LAYER_Z[la]
                    x = cell[r] * _CELL_MM + _LAYER_SHIFT[la] + fit_signs[0, la] * d[r]
                    resid = x - (ref + a + b * z)
                    leverage = (szz - 2.0 * z * sz + z * z * s0) / dt / sigma**2
                    hit_i[n_hit, 0], hit_i[n_hit, 1], hit_i[n_hit, 2] = n_seg, r, la + 1
                    hit_f[n_hit, 0], hit_f[n_hit, 1] = x, z
                    hit_f[n_hit, 2], hit_f[n_hit, 3] = resid, resid / (1.0 - leverage)
                    n_hit += 1
                n_seg += 1
        i = j
    return seg_i, seg_f, hit_i, hit_f, eff_i, n_seg, n_hit, n_eff


@numba.njit(cache=True, nogil=True, inline="always")
def _chi2_floor(xw, dd, used):  # pragma: no cover - compiled
    """A lower bound of a candidate's chi2 x sigma^2 whatever its signs: the largest of its triplets' (the best
    line through three hits leaves ``r^2 / (1 + A^2 + B^2)``, and ``|r| >= |r(wires)| - (d_mid + A d_low +
    B d_up)``; more hits only add to a chi2)."""
    floor = 0.0
    for t in range(4):
        lo, mid, up = _TRIPLETS[t, 0], _TRIPLETS[t, 1], _TRIPLETS[t, 2]
        if not (used[lo] and used[mid] and used[up]):
            continue
        a, b = _TA[t], _TB[t]
        gap = abs(xw[mid] - a * xw[lo] - b * xw[up]) - (dd[mid] + a * dd[lo] + b * dd[up])
        if gap > 0.0:
            floor = max(floor, gap * gap / (1.0 + a * a + b * b))
    return floor


@numba.njit(cache=True, nogil=True)
def _line(p, used, s0, sz, szz, inv_det, wires0, wires1, wires2, t0, t1, t2):  # pragma: no cover - compiled
    """a, b and chi2 of sign choice ``p`` (bit j: the sign of the j-th used layer, 1: +)."""
    sx, sxz, sxx = wires0, wires1, wires2
    j = 0
    for la in range(4):
        if used[la]:
            s = 1.0 if (p >> j) & 1 else -1.0
            sx += s * t0[la]
            sxz += s * t1[la]
            sxx += 2.0 * s * t2[la]
            j += 1
    b = (s0 * sxz - sz * sx) * inv_det
    a = (szz * sx - sz * sxz) * inv_det
    return a, b, max(sxx - a * sx - b * sxz, 0.0)  # the normal equations' identity


@numba.njit(cache=True, nogil=True, inline="always")  # inlined: no call, no reference counts of its arrays
def _fit_signs(xw, dd, used, sigma, ambiguity, slopes, chi2s):  # pragma: no cover - compiled
    """Weighted straight-line fits of one candidate for every sign choice of its used layers; the chosen one's
    ref, a, b, chi2, s0, sz, szz, det and its signs per layer (+1 on unused layers), as a 12-tuple.

    Positions are centred on the weighted mean wire x (``ref``). The best choice has the lowest chi2; of choices
    that fit equally well (within 1e-9: rounding does not tell them apart), the one with the smallest slope, then
    the first. A track crossing a staircase of staggered cells fits as well with every sign flipped (its mirror
    image, far steeper or flatter): if choices within ``ambiguity`` of the best chi2 have a slope smaller by more
    than 0.1 (nearer the vertical, as cosmic muons prefer), the one of them with the lowest chi2 is taken.
    ``slopes`` and ``chi2s`` (16 each) are the caller's scratch for the choices' slopes and chi2s."""
    w = 1.0 / sigma**2
    s0 = sz = szz = sxw = 0.0
    k = 0
    for la in range(4):
        if used[la]:
            z = _LAYER_Z[la]
            s0 += w
            sz += w * z
            szz += w * z * z
            sxw += w * xw[la]
            k += 1
    det_ = s0 * szz - sz * sz
    inv_det = 1.0 / det_
    ref = sxw / s0
    wires0 = wires1 = wires2 = 0.0
    for la in range(4):
        if used[la]:
            xc = xw[la] - ref
            wires0 += w * xc
            wires1 += w * xc * _LAYER_Z[la]
            wires2 += w * (xc * xc + dd[la] * dd[la])
    # the terms that take a sign: w d, w d z, w d (x - ref) per layer (0 on unused ones)
    t0 = (w * dd[0], w * dd[1], w * dd[2], w * dd[3])
    t1 = (t0[0] * _LAYER_Z[0], t0[1] * _LAYER_Z[1], t0[2] * _LAYER_Z[2], t0[3] * _LAYER_Z[3])
    t2 = (t0[0] * (xw[0] - ref), t0[1] * (xw[1] - ref), t0[2] * (xw[2] - ref), t0[3] * (xw[3] - ref))
    n_choices = 1 << k
    c0, c1, c2 = _compact(t0, used), _compact(t1, used), _compact(t2, used)
    for p in range(n_choices):  # each choice from the sums alone: no chain of updates from one to the next
        sx = wires0 + _SIGNS[0, p] * c0[0] + _SIGNS[1, p] * c0[1] + _SIGNS[2, p] * c0[2] + _SIGNS[3, p] * c0[3]
        sxz = wires1 + _SIGNS[0, p] * c1[0] + _SIGNS[1, p] * c1[1] + _SIGNS[2, p] * c1[2] + _SIGNS[3, p] * c1[3]
        sxx = wires2 + 2.0 * (_SIGNS[0, p] * c2[0] + _SIGNS[1, p] * c2[1] + _SIGNS[2, p] * c2[2]
                              + _SIGNS[3, p] * c2[3])
        b = (s0 * sxz - sz * sx) * inv_det
        slopes[p] = b
        chi2s[p] = max(sxx - (szz * sx - sz * sxz) * inv_det * sx - b * sxz, 0.0)
    best = 0
    for p in range(1, n_choices):
        if chi2s[p] < chi2s[best] - _TIE or (chi2s[p] <= chi2s[best] + _TIE and abs(slopes[p]) < abs(slopes[best])):
            best = p
    best_b, best_chi2 = slopes[best], chi2s[best]
    pick, pick_chi2 = best, np.inf
    for p in range(n_choices):  # the mirror images, from the slopes and chi2s kept above
        b, chi2 = slopes[p], chi2s[p]
        if chi2 <= best_chi2 + ambiguity and abs(b) < abs(best_b) - _MIRROR_MIN_DSLOPE and chi2 < pick_chi2 - _TIE:
            pick, pick_chi2 = p, chi2
    a, b, chi2 = _line(pick, used, s0, sz, szz, inv_det, wires0, wires1, wires2, t0, t1, t2)
    # the sign of layer la: bit j of pick, j the number of used layers below it (+1 on unused layers)
    j1 = 1 if used[0] else 0
    j2 = j1 + (1 if used[1] else 0)
    j3 = j2 + (1 if used[2] else 0)
    return (ref, a, b, chi2, s0, sz, szz, det_, _sign(pick, 0, used[0]), _sign(pick, j1, used[1]),
            _sign(pick, j2, used[2]), _sign(pick, j3, used[3]))


@numba.njit(cache=True, nogil=True)
def _compact(v, used):  # pragma: no cover - compiled
    """The values of the used layers first, in layer order, then zeros."""
    out0 = out1 = out2 = out3 = 0.0
    j = 0
    for la in range(4):
        if used[la]:
            if j == 0:
                out0 = v[la]
            elif j == 1:
                out1 = v[la]
            elif j == 2:
                out2 = v[la]
            else:
                out3 = v[la]
            j += 1
    return (out0, out1, out2, out3)


@numba.njit(cache=True, nogil=True)
def _sign(pick, j, used):  # pragma: no cover - compiled
    return (1.0 if (pick >> j) & 1 else -1.0) if used else 1.0
