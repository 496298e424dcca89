"""The compiled loop of the meantimer: every (event, chamber) group's triplets and t0 in one pass.

:func:`dtlive.core.reco.t0.meantimer_solutions` describes what is computed; this module does it event by event
in machine code (numba, compiled once and cached on disk): the groups are small, so a loop over them costs a
fraction of array code that pays numpy's per-call overhead on tiny arrays.

Input: the earliest hit of each cell of the events' chambers, sorted by cell key
``((event * N_CHAMBERS + chamber) * N_LAYERS + layer - 1) * HX + half_cell + 1`` (``HX`` half-cell positions
per layer), with its time in TDC counts after the event start.

>>> import numpy as np
>>> hx = 34  # layers 1, 2, 3 of chamber 0 in event 0, half cells 1, 0, 1; times in TDC counts of 1 ns
>>> keys = np.array([0 * hx + 2, 1 * hx + 1, 2 * hx + 2])
>>> t0, paired = meantimer_groups(keys, np.array([0.0, 190.0, 0.0]), 1, hx, 390.0, -15.0, 405.0, 1.0, 8.0, 15.0)
>>> float(t0[0, 0]), bool(paired[0, 0])  # one triplet: its between-the-wires solution, (0 + 190 - 390) / 2
(-100.0, False)
"""

from __future__ import annotations

import numba
import numpy as np

from dtlive.core import detector as det

_NL = det.N_LAYERS
_NCH = det.N_CHAMBERS


def meantimer_groups(keys, rel, n_events: int, hx: int, tmax: float, lo: float, hi: float, tdc_ns: float,
                     agree_ns: float, reference_ns: float) -> tuple[np.ndarray, np.ndarray]:
    """t0 (ns after the event start) per (event, chamber) and whether two triplets agreed on it.

    ``keys``: the sorted distinct cell keys of the earliest hits (see the module doc), ``rel``: their times
    after the event start (TDC counts); ``tmax`` (the maximum drift time) and the range ``[lo, hi]`` a triplet's
    drift times must lie in, in TDC counts; ``tdc_ns`` the ns per count.

    >>> t0, paired = meantimer_groups(np.zeros(0, np.int64), np.zeros(0), 2, 34, 500.0, -20.0, 520.0, 0.78, 8.0, 15.0)
    >>> t0.shape, bool(np.isnan(t0).all()), bool(paired.any())
    ((2, 4), True, False)
    """
    out = np.full((n_events, _NCH), np.nan)
    paired = np.zeros((n_events, _NCH), np.bool_)
    _meantimer(np.ascontiguousarray(keys, np.int64), np.ascontiguousarray(rel, np.float64), int(hx), float(tmax),
               float(lo), float(hi), float(tdc_ns), float(agree_ns), float(reference_ns), out.ravel(),
               paired.ravel())  # fmt: skip
    return out, paired


@numba.njit(cache=True, nogil=True)
def _meantimer(keys, rel, hx, tmax, lo, hi, tdc_ns, agree_ns, reference_ns, out, paired):  # pragma: no cover
    n = len(keys)
    per_group = hx * _NL
    table = np.full(per_group, -1.0)  # a group's earliest times by (layer, half cell); -1: no hit
    # the candidates of one event's groups: group, t0 (ns), middle layer, hypothesis, in the order
    # (group, side of the outer pair, hypothesis, middle cell)
    c_group = np.empty(6 * n + 1, np.int64)
    c_t0 = np.empty(6 * n + 1)
    c_mid = np.empty(6 * n + 1, np.int64)
    c_hyp = np.empty(6 * n + 1, np.int64)
    group_first = np.zeros(_NCH + 1, np.int64)  # candidates of the event's chamber c: group_first[c] .. [c + 1]
    sort_buf = np.empty(6 * n + 1, np.int64)
    i = 0
    while i < n:
        event = keys[i] // (per_group * _NCH)
        n_cand = 0
        for chamber in range(_NCH):
            group = event * _NCH + chamber
            group_first[chamber] = n_cand
            j = i
            while j < n and keys[j] // per_group == group:
                table[keys[j] - group * per_group] = rel[j]
                j += 1
            if j > i:
                for side in (-1, 1):
                    for hyp in range(3):
                        for k in range(i, j):  # the hits of layers 2 and 3, in key order
                            cell_key = keys[k] - group * per_group
                            mid_layer = cell_key // hx
                            if mid_layer != 1 and mid_layer != 2:
                                continue
                            t2 = rel[k]
                            t1 = table[cell_key - hx + side]
                            t3 = table[cell_key + hx + side]
                            if t1 < 0 or t3 < 0:
                                continue
                            if hyp == 0:
                                t0 = ((t1 + t3) / 2 + t2 - tmax) / 2
                            elif hyp == 1:
                                if t3 < t1:
                                    continue
                                t0 = (t3 - t1) / 2 + t2 - tmax
                            else:
                                if t1 < t3:
                                    continue
                                t0 = (t1 - t3) / 2 + t2 - tmax
                            if min(min(t1, t2), t3) - t0 < lo or max(max(t1, t2), t3) - t0 > hi:
                                continue
                            c_group[n_cand], c_t0[n_cand] = group, t0 * tdc_ns
                            c_mid[n_cand], c_hyp[n_cand] = mid_layer + 1, hyp
                            n_cand += 1
                for k in range(i, j):
                    table[keys[k] - group * per_group] = -1.0
            i = j
        group_first[_NCH] = n_cand
        # per chamber: the earliest between-the-wires solution, replaced by the mean of the two closest
        # solutions of different triplets when these agree
        paired_sum, n_paired = 0.0, 0
        for chamber in range(_NCH):
            a, b = group_first[chamber], group_first[chamber + 1]
            if a == b:
                continue
            slot = event * _NCH + chamber
            for k in range(a, b):
                if c_hyp[k] == 0 and not out[slot] <= c_t0[k]:  # NaN at first
                    out[slot] = c_t0[k]
            m = 0
            for k in range(a, b):  # stable insertion sort of the candidates by t0
                q = m
                while q > 0 and c_t0[sort_buf[q - 1]] > c_t0[k]:
                    sort_buf[q] = sort_buf[q - 1]
                    q -= 1
                sort_buf[q] = k
                m += 1
            best_diff, best = np.inf, -1
            for q in range(m - 1):
                u, v = sort_buf[q], sort_buf[q + 1]
                if c_mid[u] != c_mid[v] and c_t0[v] - c_t0[u] < best_diff:
                    best_diff, best = c_t0[v] - c_t0[u], q
            if best >= 0 and best_diff <= agree_ns:
                out[slot] = (c_t0[sort_buf[best]] + c_t0[sort_buf[best + 1]]) / 2
                paired[slot] = True
                paired_sum += out[slot]
                n_paired += 1
        if n_paired == 0:
            continue
        # a chamber with one triplet: the solution closest to the t0 the paired chambers agree on
        reference = paired_sum / n_paired
        for chamber in range(_NCH):
            slot = event * _NCH + chamber
            if paired[slot]:
                continue
            best_dist, best = np.inf, -1
            for k in range(group_first[chamber], group_first[chamber + 1]):
                dist = abs(c_t0[k] - reference)
                if dist <= reference_ns and dist < best_dist:
                    best_dist, best = dist, k
            if best >= 0:
                out[slot] = c_t0[best]
