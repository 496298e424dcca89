"""t0 of each event and chamber, three ways: scintillator, trigger word, meantimer.

Every t0 is in ns after the event's ``start`` (:class:`~dtlive.core.reco.events.Events`), an array of shape
``(n_events, N_CHAMBERS)`` with NaN where the event gives none.

- scintillator: ``t_scint - T0_OFFSET_NS[c]`` (the drift product's formula);
- trigger word: ``t_trigger - TRIGGER_T0_OFFSET_NS[c]`` with the trigger word of the chamber's FPGA
  (:func:`calibrate_trigger_offset` measures the offsets from data);
- meantimer: for a straight track through three consecutive layers whose middle wire sits half a cell beside
  the outer two (staggered triplet), ``(t1 + t3) / 2 + t2 = Tmax`` with ``t_i = T_i - t0``, hence
  ``t0 = ((T1 + T3) / 2 + T2 - Tmax) / 2``. A steep track may cross the plane of the outer wires between
  the outer layers: then ``|t3 - t1| / 2 + t2 = Tmax``. Each triplet gives the solutions whose drift times
  come out in ``[-tolerance, Tmax + tolerance]``; with both triplets of a chamber (layers 1-2-3, 2-3-4) the
  two closest solutions that agree give the t0, with one triplet the earliest between-the-wires solution.

>>> from dtlive.core.rows import Rows
>>> from dtlive.core.reco.events import build_events
>>> # layers 1, 2, 3 of chamber 0, cells 0 (half cells 1, 0, 1): drift 100, 290, 100 ns after a t0 at BX 100
>>> hits = Rows.from_columns(head=[2] * 3, fpga=[0] * 3, channel=[3, 1, 2], orbit=[7] * 3, bx=[104, 111, 104],
...                          tdc=[0, 18, 0])
>>> ev = build_events(hits)
>>> t0 = meantimer_t0(ev, tmax_ns=390.0)
>>> round(float(t0[0, 0]), 2), bool(np.isnan(t0[0, 1:]).all())  # the event starts at BX 104: t0 = -100 ns
(-100.0, True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dtlive.core import detector as det
from dtlive.core.reco.events import NO_TIME, Events

_HX = 2 * det.CELLS_PER_LAYER + 2  # half-cell positions per layer in a key, room for -1 .. 32
_REL_BITS = 24  # TDC counts after the event start below the cell in a sort key
_DENSE_KEYS = 1 << 22  # cell keys up to this are looked up in a table
MEANTIMER_TOLERANCE_NS = 15.0
MEANTIMER_AGREE_NS = 8.0  # two triplets of a chamber agree on t0 within this
MEANTIMER_REFERENCE_NS = 15.0  # a lone triplet's solution this close to the event's agreed t0 is taken


def scint_t0(ev: Events) -> np.ndarray:
    """t0 (ns after the event start) per event and chamber from the scintillator hit (NaN without one).

    >>> from dtlive.core.rows import Rows
    >>> from dtlive.core.reco.events import build_events
    >>> ev = build_events(Rows.from_columns(head=[2] * 4, fpga=[1, 0, 0, 0], channel=[128, 3, 1, 2], orbit=[7] * 4,
    ...                                     bx=[100, 104, 108, 104], tdc=[0] * 4))
    >>> scint_t0(ev)[0].tolist() == (-det.T0_OFFSET_NS).tolist()
    True
    """
    rel = np.where(ev.scint == NO_TIME, np.nan, (ev.scint - ev.start) * det.TDC_NS)
    return rel[:, None] - det.T0_OFFSET_NS[None, :]


def trigger_t0(ev: Events, offset_ns: np.ndarray = det.TRIGGER_T0_OFFSET_NS) -> np.ndarray:
    """t0 (ns after the event start) per event and chamber from the trigger word of the chamber's FPGA.

    >>> from dtlive.core.rows import Rows
    >>> from dtlive.core.reco.events import build_events
    >>> ev = build_events(Rows.from_columns(head=[2] * 4, fpga=[0, 0, 0, 0], channel=[3, 1, 2, 138], orbit=[7] * 4,
    ...                                     bx=[104, 108, 104, 110], tdc=[0] * 4))
    >>> trigger_t0(ev, np.full(4, 200.0))[0].tolist()  # FPGA 0 serves chambers 0 and 1
    [-50.0, -50.0, nan, nan]
    """
    fpga_of_chamber = det.CHAMBERS // (det.N_CHAMBERS // det.N_FPGA)
    trig = ev.trigger[:, fpga_of_chamber]
    rel = np.where(trig == NO_TIME, np.nan, (trig - ev.start[:, None]) * det.TDC_NS)
    return rel - np.asarray(offset_ns, float)[None, :]


def meantimer_t0(ev: Events, tmax_ns: float = det.MAX_DRIFT_NS, tolerance_ns: float = MEANTIMER_TOLERANCE_NS,
                 agree_ns: float = MEANTIMER_AGREE_NS, reference_ns: float = MEANTIMER_REFERENCE_NS) -> np.ndarray:
    """t0 (ns after the event start) per event and chamber from the meantimer of staggered triplets.

    Parameters
    ----------
    ev : Events
        The events and their chamber hits.
    tmax_ns : float
        Maximum drift time (half a cell / drift velocity).
    tolerance_ns : float
        A triplet counts when its three drift times lie in ``[-tolerance_ns, tmax_ns + tolerance_ns]``.
    agree_ns : float
        With both triplets (layers 1-2-3 and 2-3-4), the t0 is the mean of their two closest solutions
        (:func:`meantimer_candidates`) when these agree within ``agree_ns``.
    reference_ns : float
        Otherwise the solution closest to the mean t0 of the event's chambers with agreeing triplets (chamber
        delays differ by a few ns only), if within ``reference_ns``; else the earliest solution with the track
        between the wires.

    Returns
    -------
    numpy.ndarray
        (n_events, N_CHAMBERS), NaN where a chamber has no good triplet.

    Examples
    --------
    >>> from dtlive.core.rows import Rows
    >>> from dtlive.core.reco.events import build_events
    >>> # layers 2, 3, 4 of chamber 2: cells 3 (half cell 6), 2 (5), 3 (6)
    >>> fpga, ch = det.channel_of(np.array([2, 2, 2]), np.array([2, 3, 4]), np.array([3, 2, 3]))
    >>> ev = build_events(Rows.from_columns(head=[2] * 3, fpga=fpga, channel=ch, orbit=[7] * 3, bx=[10, 12, 10],
    ...                                     tdc=[0, 0, 0]))
    >>> meantimer_t0(ev, tmax_ns=100.0)[0, 2].item()  # ((0 + 0) / 2 + 50 - 100) / 2
    -25.0
    """
    return meantimer_solutions(ev, tmax_ns, tolerance_ns, agree_ns, reference_ns)[0]


def meantimer_solutions(ev: Events, tmax_ns: float = det.MAX_DRIFT_NS,
                        tolerance_ns: float = MEANTIMER_TOLERANCE_NS, agree_ns: float = MEANTIMER_AGREE_NS,
                        reference_ns: float = MEANTIMER_REFERENCE_NS) -> tuple[np.ndarray, np.ndarray]:
    """:func:`meantimer_t0` and a mask of the t0s on which two triplets agree (the unambiguous ones).

    >>> from dtlive.core.rows import Rows
    >>> from dtlive.core.reco.events import build_events
    >>> ev = build_events(Rows.from_columns(head=[2] * 3, fpga=[0] * 3, channel=[3, 1, 2], orbit=[7] * 3,
    ...                                     bx=[104, 111, 104], tdc=[0, 18, 0]))
    >>> t0, paired = meantimer_solutions(ev); paired.tolist()  # one triplet only
    [[False, False, False, False]]
    """
    out = np.full((ev.n_events, det.N_CHAMBERS), np.nan)
    paired = np.zeros(out.shape, bool)
    c = meantimer_candidates(ev, tmax_ns, tolerance_ns)
    if not len(c.group):
        return out, paired
    # single triplets: the earliest track-between-the-wires solution (the others come later for steep tracks)
    single = c.hypothesis == 0
    earliest = np.full(ev.n_events * det.N_CHAMBERS, np.inf)
    np.minimum.at(earliest, c.group[single], c.t0_ns[single])
    has = np.isfinite(earliest)
    out.ravel()[has] = earliest[has]
    # two triplets (layers 1-2-3 and 2-3-4): the two solutions closest to each other, when they agree
    order = np.lexsort((c.t0_ns, c.group))
    g, t0, mid = c.group[order], c.t0_ns[order], c.middle[order]
    pair = np.flatnonzero((g[1:] == g[:-1]) & (mid[1:] != mid[:-1]))
    if len(pair):
        diff = t0[pair + 1] - t0[pair]
        best = np.lexsort((diff, g[pair]))
        best = best[np.concatenate(([True], g[pair][best][1:] != g[pair][best][:-1]))]
        agree = diff[best] <= agree_ns
        chosen = pair[best][agree]
        out.ravel()[g[chosen]] = (t0[chosen] + t0[chosen + 1]) / 2
        paired.ravel()[g[chosen]] = True
    # a chamber with one triplet: the solution closest to the t0 the event's paired chambers agree on
    n_paired = paired.sum(axis=1)
    reference = np.where(n_paired > 0, np.where(paired, out, 0.0).sum(axis=1) / np.maximum(n_paired, 1), np.nan)
    event = c.group // det.N_CHAMBERS
    near = ~paired.ravel()[c.group] & (np.abs(c.t0_ns - reference[event]) <= reference_ns)
    if near.any():
        dist = np.abs(c.t0_ns[near] - reference[event[near]])
        g = c.group[near]
        best = np.lexsort((dist, g))
        best = best[np.concatenate(([True], g[best][1:] != g[best][:-1]))]
        out.ravel()[g[best]] = c.t0_ns[near][best]
    return out, paired


@dataclass(frozen=True)
class Candidates:
    """Meantimer t0 solutions of staggered triplets.

    ``group`` = event * N_CHAMBERS + chamber, ``t0_ns`` after the event start, ``middle`` the middle layer
    of the triplet (2 or 3), ``hypothesis``: 0 the track passes between the outer wires' plane and the middle
    wire in all three layers, 1 (2) it crosses the outer wires' plane between the layers with the lower
    (upper) outer layer on the far side.

    >>> from dtlive.core.rows import Rows
    >>> from dtlive.core.reco.events import build_events
    >>> ev = build_events(Rows.from_columns(head=[2] * 3, fpga=[0] * 3, channel=[3, 1, 2], orbit=[7] * 3,
    ...                                     bx=[104, 111, 104], tdc=[0, 18, 0]))
    >>> c = meantimer_candidates(ev)  # every solution of the one triplet: between the wires, crossing their plane
    >>> c.group.tolist(), [round(t, 1) for t in c.t0_ns.tolist()], c.middle.tolist(), c.hypothesis.tolist()
    ([0, 0, 0], [-100.2, -200.3, -200.3], [2, 2, 2], [0, 1, 2])
    """

    group: np.ndarray
    t0_ns: np.ndarray
    middle: np.ndarray
    hypothesis: np.ndarray


def meantimer_candidates(ev: Events, tmax_ns: float = det.MAX_DRIFT_NS,
                         tolerance_ns: float = MEANTIMER_TOLERANCE_NS) -> Candidates:
    """Every t0 solution of every staggered triplet whose drift times come out in range.

    With the outer wires at x = 0, the middle wire at x = h (half a cell) and the track at x1, x2, x3:
    between the wires ``(t1 + t3) / 2 + t2 = Tmax``; crossing x = 0 between layers 1 and 3 with x1 < 0,
    ``(t3 - t1) / 2 + t2 = Tmax`` (and t3 >= t1); with x3 < 0, ``(t1 - t3) / 2 + t2 = Tmax`` (t1 >= t3).
    The earliest hit of a cell counts. The order of the solutions follows the cells' (deterministic).

    >>> from dtlive.core.rows import Rows
    >>> from dtlive.core.reco.events import build_events
    >>> ev = build_events(Rows.from_columns(head=[2] * 4, fpga=[0] * 4, channel=[3, 1, 2, 0], orbit=[7] * 4,
    ...                                     bx=[104, 108, 104, 112], tdc=[0] * 4))  # layers 1-4, one column
    >>> c = meantimer_candidates(ev, tmax_ns=190.0)
    >>> c.t0_ns.tolist(), c.middle.tolist(), c.hypothesis.tolist()  # 2-3-4 gives a 220 ns drift
    ([-45.0, -90.0, -90.0], [2, 2, 2], [0, 1, 2])
    """
    idx = ev.in_events()
    if not len(idx):
        z = np.zeros(0, np.int64)
        return Candidates(z, np.zeros(0), z, z)
    rel = ev.ticks[idx] - ev.start[ev.event[idx]]  # TDC counts after the event start, exact
    group = ev.event[idx] * det.N_CHAMBERS + ev.chamber[idx]
    key = (group * det.N_LAYERS + ev.layer[idx] - 1) * _HX + det.half_cell_of(ev.channel[idx]) + 1
    if int(rel.max()) < 1 << _REL_BITS:  # one int64 sort key: cell, then time
        both = np.sort(np.left_shift(key, _REL_BITS) | rel, kind="stable")
        key, rel = np.right_shift(both, _REL_BITS), both & ((1 << _REL_BITS) - 1)
    else:
        order = np.lexsort((rel, key))
        key, rel = key[order], rel[order]
    first = np.concatenate(([True], key[1:] != key[:-1]))  # the earliest hit of each cell
    key, rel = key[first], rel[first]
    layer = (key // _HX) % det.N_LAYERS + 1
    middle = np.flatnonzero((layer == 2) | (layer == 3))
    parts = []
    tmax = tmax_ns / det.TDC_NS
    lo, hi = -tolerance_ns / det.TDC_NS, (tmax_ns + tolerance_ns) / det.TDC_NS
    find = _lookup(key)
    for side in (-1, 1):
        below, above = find(key[middle] - _HX + side), find(key[middle] + _HX + side)
        ok = np.flatnonzero((below >= 0) & (above >= 0))
        m, b, a = middle[ok], below[ok], above[ok]
        t1, t2, t3 = rel[b].astype(float), rel[m].astype(float), rel[a].astype(float)
        for hyp, t0, order_ok in ((0, ((t1 + t3) / 2 + t2 - tmax) / 2, None),
                                  (1, (t3 - t1) / 2 + t2 - tmax, t3 >= t1),
                                  (2, (t1 - t3) / 2 + t2 - tmax, t1 >= t3)):
            lowest, highest = np.minimum(np.minimum(t1, t2), t3) - t0, np.maximum(np.maximum(t1, t2), t3) - t0
            good = (lowest >= lo) & (highest <= hi)
            if order_ok is not None:
                good &= order_ok
            good = np.flatnonzero(good)
            parts.append((key[m[good]] // (_HX * det.N_LAYERS), t0[good] * det.TDC_NS, layer[m[good]],
                          np.full(len(good), hyp)))
    group, t0, mid, hypothesis = (np.concatenate(x) for x in zip(*parts))
    return Candidates(group, t0, mid, hypothesis)


def _lookup(sorted_keys: np.ndarray):
    """A function giving the index of keys (0 .. max + _HX + 1) in the sorted distinct ``sorted_keys``, or -1."""
    span = int(sorted_keys[-1]) + _HX + 2 if len(sorted_keys) else 0
    if span > _DENSE_KEYS:
        return lambda keys: _find(sorted_keys, keys)
    table = np.full(span, -1, np.int64)
    table[sorted_keys] = np.arange(len(sorted_keys))
    return table.__getitem__


def _find(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Index of each key in the sorted distinct ``sorted_keys``, or -1."""
    i = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return np.where(sorted_keys[i] == keys, i, -1)


@dataclass(frozen=True)
class TriggerOffset:
    """Per chamber: the median of trigger-word time minus meantimer t0 (ns), its uncertainty, the events used.

    >>> from dtlive.core.simulate import simulate
    >>> from dtlive.core.rows import clean
    >>> from dtlive.core.reco.events import build_events
    >>> cal = calibrate_trigger_offset(build_events(clean(simulate(1.0, seed=3))[0]))
    >>> cal.offset_ns.shape, bool((cal.n > 10).all()), bool((cal.error_ns > 0).all())
    ((4,), True, True)
    """

    offset_ns: np.ndarray
    error_ns: np.ndarray
    n: np.ndarray


def calibrate_trigger_offset(ev: Events, tmax_ns: float = det.MAX_DRIFT_NS) -> TriggerOffset:
    """Measure ``TRIGGER_T0_OFFSET_NS`` from data: per chamber the median of ``t_trigger - t0_meantimer``.

    The uncertainty is that of a median, ``1.2533 x sigma / sqrt(n)`` with sigma from the interquartile range.

    >>> from dtlive.core.simulate import simulate
    >>> from dtlive.core.rows import clean
    >>> from dtlive.core.reco.events import build_events
    >>> cal = calibrate_trigger_offset(build_events(clean(simulate(2.0, seed=1))[0]))
    >>> bool((cal.n > 50).all()), bool((cal.error_ns < 10).all()), bool((np.abs(cal.offset_ns - 380) < 30).all())
    (True, True, True)
    """
    diff = trigger_t0(ev, np.zeros(det.N_CHAMBERS)) - meantimer_t0(ev, tmax_ns)
    offset, error, n = (np.full(det.N_CHAMBERS, np.nan) for _ in range(3))
    for c in range(det.N_CHAMBERS):  # four chambers
        d = diff[:, c][~np.isnan(diff[:, c])]
        n[c] = len(d)
        if len(d):
            q1, offset[c], q3 = np.percentile(d, [25, 50, 75])
            error[c] = 1.2533 * (q3 - q1) / 1.349 / np.sqrt(len(d))
    return TriggerOffset(offset, error, n.astype(np.int64))
