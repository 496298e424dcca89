"""The compiled loops of the t0s: the meantimer, every (event, chamber) group's triplets and t0 in one pass, and
the t0s from a trigger word or scintillator time per event (:func:`relative_t0`).

:func:`dtlive.core.reco.t0.meantimer_solutions` describes what is computed; this module does it event by event
in machine code (numba, compiled once and cached on disk): the groups are small, so a loop over them costs a
fraction of array code that pays numpy's per-call overhead on tiny arrays.

Input: the chamber hits in time order (the hits of an event are consecutive) with their event (-1: none),
chamber, layer and half-cell position (:func:`dtlive.core.detector.half_cell_of`), and the events' starts.

>>> import numpy as np
>>> one = np.zeros(3, np.int64)  # layers 1, 2, 3 of chamber 0 in event 0, half cells 1, 0, 1; TDC counts of 1 ns
>>> t0, paired = meantimer_events(np.array([1000, 1000, 1190]), one, one, np.array([1, 3, 2]), np.array([1, 1, 0]),
...                               np.array([1000]), 390.0, -15.0, 405.0, 1.0, 8.0, 15.0)
>>> float(t0[0, 0]), bool(paired[0, 0])  # one triplet: its between-the-wires solution, (0 + 190 - 390) / 2
(-100.0, False)
"""

from __future__ import annotations

import numba
import numpy as np

from dtlive.core import detector as det
from dtlive.core.reco.events import NO_TIME

_NL = det.N_LAYERS
_NCH = det.N_CHAMBERS


_HX = 2 * det.CELLS_PER_LAYER + 2  # half-cell positions per layer in a table, room for -1 .. 32


def meantimer_events(ticks, event, chamber, layer, half_cell, start, tmax: float, lo: float, hi: float,
                     tdc_ns: float, agree_ns: float, reference_ns: float) -> tuple[np.ndarray, np.ndarray]:
    """t0 (ns after the event start) per (event, chamber) and whether two triplets agreed on it.

    Per chamber hit (time order, see the module doc): ``ticks``, ``event``, ``chamber``, ``layer`` (1-4),
    ``half_cell`` (0-31); per event its ``start`` (ticks). ``tmax`` (the maximum drift time) and the range
    ``[lo, hi]`` a triplet's drift times must lie in, in TDC counts; ``tdc_ns`` the ns per count.

    >>> z = np.zeros(0, np.int64)
    >>> t0, paired = meantimer_events(z, z, z, z, z, np.zeros(2, np.int64), 500.0, -20.0, 520.0, 0.78, 8.0, 15.0)
    >>> t0.shape, bool(np.isnan(t0).all()), bool(paired.any())
    ((2, 4), True, False)
    """
    n_events = len(start)
    out = np.full((n_events, _NCH), np.nan)
    paired = np.zeros((n_events, _NCH), np.bool_)
    ticks, event, chamber, layer, half_cell, start = (np.ascontiguousarray(a, np.int64)
                                                      for a in (ticks, event, chamber, layer, half_cell, start))
    _meantimer(ticks, event, chamber, layer, half_cell, start, float(tmax), float(lo), float(hi), float(tdc_ns),
               float(agree_ns), float(reference_ns), out.ravel(), paired.ravel())  # fmt: skip
    return out, paired


def relative_t0(times, start, column_of_chamber, offset_ns, tdc_ns: float) -> np.ndarray:
    """t0 (ns after each event's start) per event and chamber from a time per event and column (ticks,
    :data:`NO_TIME`: none): ``(times[e, column_of_chamber[c]] - start[e]) * tdc_ns - offset_ns[c]``, NaN without one.

    >>> relative_t0(np.array([[130, -1]]), np.array([100]), np.array([0, 0, 1, 1]), np.full(4, 5.0), 1.0).tolist()
    [[25.0, 25.0, nan, nan]]
    """
    times = np.ascontiguousarray(times, np.int64)
    out = np.empty((len(times), len(column_of_chamber)))
    _relative_t0(times, np.ascontiguousarray(start, np.int64), np.ascontiguousarray(column_of_chamber, np.int64),
                 np.ascontiguousarray(offset_ns, np.float64), float(tdc_ns), out)  # fmt: skip
    return out


@numba.njit(cache=True, nogil=True)
def _relative_t0(times, start, column_of_chamber, offset_ns, tdc_ns, out):  # pragma: no cover - compiled
    for e in range(times.shape[0]):
        for c in range(len(column_of_chamber)):
            t = times[e, column_of_chamber[c]]
            out[e, c] = np.nan if t == NO_TIME else (t - start[e]) * tdc_ns - offset_ns[c]


@numba.njit(cache=True, nogil=True)
def _meantimer(ticks, event, chamber, layer, half_cell, start, tmax, lo, hi, tdc_ns, agree_ns, reference_ns, out,
               paired):  # pragma: no cover - compiled
    n = len(ticks)
    longest = run = 0  # the most hits of one event: the candidates of an event are at most 6 per hit
    for i in range(n):
        run = run + 1 if i > 0 and event[i] == event[i - 1] and event[i] >= 0 else (1 if event[i] >= 0 else 0)
        longest = max(longest, run)
    hx = _HX
    per_chamber = hx * _NL
    table = np.full(_NCH * per_chamber, -1.0)  # an event's earliest times by (chamber, layer, half cell); -1: none
    # the candidates of one event: t0 (ns), middle layer, hypothesis, in the order (chamber, side of the outer
    # pair, hypothesis, middle cell)
    c_t0 = np.empty(6 * longest + 1)
    c_mid = np.empty(6 * longest + 1, np.int64)
    c_hyp = np.empty(6 * longest + 1, np.int64)
    middles = np.empty(longest + 1, np.int64)  # the event's hit cells of layers 2 and 3, sorted
    group_first = np.zeros(_NCH + 1, np.int64)  # candidates of the event's chamber c: group_first[c] .. [c + 1]
    sort_buf = np.empty(6 * longest + 1, np.int64)
    i = 0
    while i < n:
        ev = event[i]
        if ev < 0:
            i += 1
            continue
        j = i
        n_mid = 0
        while j < n and event[j] == ev:
            cell_key = chamber[j] * per_chamber + (layer[j] - 1) * hx + half_cell[j] + 1
            if table[cell_key] < 0:  # hits come in time order: the first of a cell is its earliest
                table[cell_key] = ticks[j] - start[ev]
                if layer[j] == 2 or layer[j] == 3:  # a middle cell: insertion, in (chamber, layer, cell) order
                    q = n_mid
                    while q > 0 and middles[q - 1] > cell_key:
                        middles[q] = middles[q - 1]
                        q -= 1
                    middles[q] = cell_key
                    n_mid += 1
            j += 1
        n_cand = 0
        last_mid = 0
        for ch in range(_NCH):
            group_first[ch] = n_cand
            base = ch * per_chamber
            first_mid = last_mid
            while last_mid < n_mid and middles[last_mid] < base + per_chamber:
                last_mid += 1
            for side in (-1, 1):
                for hyp in range(3):
                    for q in range(first_mid, last_mid):
                        cell_key = middles[q]
                        t2 = table[cell_key]
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
                        c_t0[n_cand] = t0 * tdc_ns
                        c_mid[n_cand], c_hyp[n_cand] = (cell_key - base) // hx + 1, hyp
                        n_cand += 1
        group_first[_NCH] = n_cand
        for k in range(i, j):  # the table is empty again for the next event
            table[chamber[k] * per_chamber + (layer[k] - 1) * hx + half_cell[k] + 1] = -1.0
        i = j
        # per chamber: the earliest between-the-wires solution, replaced by the mean of the two closest
        # solutions of different triplets when these agree
        paired_sum, n_paired = 0.0, 0
        for ch in range(_NCH):
            a, b = group_first[ch], group_first[ch + 1]
            if a == b:
                continue
            slot = ev * _NCH + ch
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
        for ch in range(_NCH):
            slot = ev * _NCH + ch
            if paired[slot]:
                continue
            best_dist, best = np.inf, -1
            for k in range(group_first[ch], group_first[ch + 1]):
                dist = abs(c_t0[k] - reference)
                if dist <= reference_ns and dist < best_dist:
                    best_dist, best = dist, k
            if best >= 0:
                out[slot] = c_t0[best]
