"""Compiled loops that list the entries (slot, index into the count vector) of the event products.

Each loop makes in one pass over a window's hits or events what a handful of numpy passes made: the entries of
:class:`~dtlive.core.products.events.EventCounts`, :class:`~dtlive.core.products.timebox.TimeBoxes`,
:class:`~dtlive.core.products.t0diff.T0Difference` and :class:`~dtlive.core.products.segments.SegmentProducts`,
and the distinct slots a share holds (numba, compiled once and cached on disk). A value's bin on
``edges`` is ``searchsorted(edges, value, side="right")``: 0 the underflow, ``len(edges)`` the overflow (found
from the value's place on evenly spaced edges, then checked against its neighbours: exact on any sorted edges,
fastest on evenly spaced ones).

>>> import numpy as np
>>> slot, index = t0_difference_entries(np.array([[0.0, np.nan]]), np.array([[5.0, 50.0]]), np.array([3]),
...                                     np.array([0.0, 10.0]))
>>> slot.tolist(), index.tolist()  # chamber 0: bin 1 (0-10); a meantimer t0 in chamber 0, trigger t0s in both
([3, 3, 3, 3], [1, 6, 8, 9])
"""

from __future__ import annotations

import numba
import numpy as np


def t0_difference_entries(meantimer_t0, trigger_t0, event_slot, edges) -> tuple[np.ndarray, np.ndarray]:
    """Entries of the t0 agreement: per event and chamber with both t0s (n_events, chambers; NaN: none) the
    difference ``trigger - meantimer`` in a (chamber, [underflow, bins..., overflow]) histogram on ``edges``,
    then per chamber with a meantimer t0 ``n_chambers * (len(edges) + 1) + chamber`` and per chamber with a
    trigger t0 that plus ``n_chambers``; each with its event's slot.

    >>> mt, tr = np.array([[-100.0, np.nan]]), np.array([[-95.0, -90.0]])
    >>> s, i = t0_difference_entries(mt, tr, np.array([7]), np.array([-10.0, 0.0, 10.0]))
    >>> s.tolist(), i.tolist()  # chamber 0: +5 ns, bin 2 of 0-3; a meantimer t0 in chamber 0; trigger t0s in both
    ([7, 7, 7, 7], [2, 8, 10, 11])
    """
    n_events, n_chambers = np.shape(meantimer_t0)
    slot_out, index_out = np.empty(3 * n_events * n_chambers, np.int64), np.empty(3 * n_events * n_chambers, np.int64)
    n = _t0_difference(np.ascontiguousarray(meantimer_t0, np.float64), np.ascontiguousarray(trigger_t0, np.float64),
                       np.ascontiguousarray(event_slot, np.int64), np.ascontiguousarray(edges, np.float64), slot_out,
                       index_out)  # fmt: skip
    return slot_out[:n], index_out[:n]


def timebox_entries(event, chamber, ticks, start, t0_ns, event_slot, edges, tdc_ns: float):
    """Entries of the time boxes: per chamber hit in an event (``event`` >= 0) and per t0 table of ``t0_ns``
    (kinds, events, chambers) whose value for the hit's event and chamber is known, the drift time
    ``(ticks - start[event]) * tdc_ns - t0`` in kind k's (chamber, [underflow, bins..., overflow]) histogram.

    >>> t0 = np.array([[[-100.0, np.nan]], [[np.nan, np.nan]]])  # meantimer t0 in chamber 0 only, no trigger
    >>> s, i = timebox_entries(np.array([0, 0, -1]), np.array([0, 1, 0]), np.array([52, 54, 90]), np.array([50]), t0,
    ...                        np.array([7]), np.array([0.0, 100.0, 200.0]), 25.0)
    >>> s.tolist(), i.tolist()  # the chamber-0 hit of the event: 150 ns, bin 2 of 0-3
    ([7], [2])
    """
    kinds, _, n_chambers = np.shape(t0_ns)
    slot_out, index_out = np.empty(kinds * len(event), np.int64), np.empty(kinds * len(event), np.int64)
    n = _timebox(np.ascontiguousarray(event, np.int64), np.ascontiguousarray(chamber, np.int64),
                 np.ascontiguousarray(ticks, np.int64), np.ascontiguousarray(start, np.int64),
                 np.ascontiguousarray(t0_ns, np.float64), np.ascontiguousarray(event_slot, np.int64),
                 np.ascontiguousarray(edges, np.float64), float(tdc_ns), slot_out, index_out)  # fmt: skip
    return slot_out[:n], index_out[:n]


def distinct_slots(sorted_ticks, slot_ticks: int) -> np.ndarray:
    """The distinct slots ``ticks // slot_ticks`` of sorted ``ticks``, in order (one pass, no temporaries).

    >>> distinct_slots(np.array([0, 5, 800, 801, 2400]), 800).tolist()
    [0, 1, 3]
    """
    out = np.empty(len(sorted_ticks), np.int64)
    return out[:_distinct_slots(np.ascontiguousarray(sorted_ticks, np.int64), int(slot_ticks), out)]


@numba.njit(cache=True, nogil=True)
def _distinct_slots(ticks, slot_ticks, out):  # pragma: no cover - compiled
    n = 0
    end = -1  # the first tick after the current slot: a sorted tick below it is in the same slot, no division
    for i in range(len(ticks)):
        if ticks[i] < end:
            continue
        s = ticks[i] // slot_ticks
        out[n] = s
        n += 1
        end = (s + 1) * slot_ticks
    return n


@numba.njit(cache=True, nogil=True)
def _right(edges, value):  # pragma: no cover - compiled
    """``searchsorted(edges, value, side="right")`` (NaN: ``len(edges)``): a guess from evenly spaced edges, then
    a step to the next edge until the value lies between two (no binary search, whose branches mispredict)."""
    n = len(edges)
    if n == 0 or np.isnan(value):
        return n
    span = edges[n - 1] - edges[0]
    guess = (value - edges[0]) * ((n - 1) / span) + 1.0 if span > 0.0 else 1.0
    i = n if guess >= n else (np.int64(guess) if guess >= 1.0 else 0)
    while i < n and edges[i] <= value:
        i += 1
    while i > 0 and edges[i - 1] > value:
        i -= 1
    return i


@numba.njit(cache=True, nogil=True)
def _t0_difference(meantimer, trigger, event_slot, edges, slot_out, index_out):  # pragma: no cover - compiled
    n_chambers = meantimer.shape[1]
    width = len(edges) + 1
    counts = n_chambers * width
    n = 0
    for e in range(meantimer.shape[0]):
        for c in range(n_chambers):
            mt, tr = meantimer[e, c], trigger[e, c]
            if not np.isnan(mt) and not np.isnan(tr):
                slot_out[n], index_out[n] = event_slot[e], c * width + _right(edges, tr - mt)
                n += 1
            if not np.isnan(mt):
                slot_out[n], index_out[n] = event_slot[e], counts + c
                n += 1
            if not np.isnan(tr):
                slot_out[n], index_out[n] = event_slot[e], counts + n_chambers + c
                n += 1
    return n


@numba.njit(cache=True, nogil=True)
def _timebox(event, chamber, ticks, start, t0, event_slot, edges, tdc_ns, slot_out, index_out):  # pragma: no cover
    kinds, n_chambers = t0.shape[0], t0.shape[2]
    width = len(edges) + 1
    n = 0
    for k in range(kinds):
        offset = k * n_chambers * width
        for i in range(len(event)):
            e = event[i]
            if e < 0:
                continue
            t0_hit = t0[k, e, chamber[i]]
            if np.isnan(t0_hit):
                continue
            slot_out[n] = event_slot[e]
            index_out[n] = offset + chamber[i] * width + _right(edges, (ticks[i] - start[e]) * tdc_ns - t0_hit)
            n += 1
    return n


def event_count_entries(event, chamber, event_slot, triggered, first_hit_index: int) -> tuple[np.ndarray, np.ndarray]:
    """Entries of the event counts: index 0 per event (its slot), 1 per event with a trigger word, and
    ``first_hit_index + chamber`` per chamber hit of an event (its ``event``'s slot).

    >>> s, i = event_count_entries(np.array([0, 0]), np.array([1, 3]), np.array([2]), np.array([True]), 2)
    >>> s.tolist(), i.tolist()
    ([2, 2, 2, 2], [0, 1, 3, 5])
    """
    n = 2 * len(event_slot) + len(event)
    slot_out, index_out = np.empty(n, np.int64), np.empty(n, np.int64)
    n = _event_counts(np.ascontiguousarray(event, np.int64), np.ascontiguousarray(chamber, np.int64),
                      np.ascontiguousarray(event_slot, np.int64), np.ascontiguousarray(triggered, np.bool_),
                      int(first_hit_index), slot_out, index_out)  # fmt: skip
    return slot_out[:n], index_out[:n]


@numba.njit(cache=True, nogil=True)
def _event_counts(event, chamber, event_slot, triggered, first_hit_index, slot_out,
                  index_out):  # pragma: no cover - compiled
    n = 0
    for e in range(len(event_slot)):
        slot_out[n], index_out[n] = event_slot[e], 0
        n += 1
        if triggered[e]:
            slot_out[n], index_out[n] = event_slot[e], 1
            n += 1
    for i in range(len(event)):
        slot_out[n], index_out[n] = event_slot[event[i]], first_hit_index + chamber[i]
        n += 1
    return n


def segment_entries(seg_event, seg_chamber, angle, chi2, ndof, n_hits, hit_segment, hit_layer, residual, eff_event,
                    eff_flat, eff_found, event_slot, angle_edges, chi2_edges, residual_edges, offsets,
                    min_residual_hits: int, n_layers: int) -> tuple[np.ndarray, np.ndarray]:
    """Entries of the segment products: per segment its chamber, angle bin and (ndof > 0) chi2 / ndof bin, per hit
    of a segment with >= ``min_residual_hits`` hits its (chamber, layer) residual bin, per expected hit its flat
    cell index and, if found, again; at ``offsets`` (segments, angle, chi2, residual, expected, found) of the
    count vector. Values beyond the edges go into the first or last bin (NaN: the last), as
    ``clip(searchsorted(edges, v, side="right") - 1, 0, len(edges) - 2)``.

    >>> e = np.zeros(0, np.int64)
    >>> s, i = segment_entries(np.array([0]), np.array([1]), np.array([3.0]), np.array([2.0]), np.array([1]),
    ...                        np.array([3]), e, e, np.zeros(0), e, e, np.zeros(0, bool), np.array([5]),
    ...                        np.array([0.0, 2.0, 4.0]), np.array([0.0, 10.0]), np.array([0.0, 1.0]),
    ...                        (0, 4, 12, 16, 20, 30), 4, 4)
    >>> s.tolist(), i.tolist()  # chamber 1; angle bin 1 of chamber 1: 4 + 2 + 1; chi2 bin 0 of chamber 1: 12 + 1
    ([5, 5, 5], [1, 7, 13])
    """
    n_seg, n_hit, n_eff = len(seg_event), len(hit_segment), len(eff_event)
    slot_out = np.empty(3 * n_seg + n_hit + 2 * n_eff, np.int64)
    index_out = np.empty(3 * n_seg + n_hit + 2 * n_eff, np.int64)
    ints = (np.ascontiguousarray(a, np.int64) for a in (seg_event, seg_chamber, ndof, n_hits, hit_segment, hit_layer,
                                                         eff_event, eff_flat, event_slot))  # fmt: skip
    seg_event, seg_chamber, ndof, n_hits, hit_segment, hit_layer, eff_event, eff_flat, event_slot = ints
    floats = (np.ascontiguousarray(a, np.float64) for a in (angle, chi2, residual, angle_edges, chi2_edges,
                                                             residual_edges))  # fmt: skip
    angle, chi2, residual, angle_edges, chi2_edges, residual_edges = floats
    n = _segments(seg_event, seg_chamber, angle, chi2, ndof, n_hits, hit_segment, hit_layer, residual, eff_event,
                  eff_flat, np.ascontiguousarray(eff_found, np.bool_), event_slot, angle_edges, chi2_edges,
                  residual_edges, np.asarray(offsets, np.int64), int(min_residual_hits), int(n_layers), slot_out,
                  index_out)  # fmt: skip
    return slot_out[:n], index_out[:n]


@numba.njit(cache=True, nogil=True)
def _bin(value, edges):  # pragma: no cover - compiled
    if np.isnan(value):
        return len(edges) - 2
    return min(max(_right(edges, value) - 1, 0), len(edges) - 2)


@numba.njit(cache=True, nogil=True)
def _segments(seg_event, seg_chamber, angle, chi2, ndof, n_hits, hit_segment, hit_layer, residual, eff_event, eff_flat,
              eff_found, event_slot, angle_edges, chi2_edges, residual_edges, offsets, min_residual_hits, n_layers,
              slot_out, index_out):  # pragma: no cover - compiled
    n_angle, n_chi2, n_res = len(angle_edges) - 1, len(chi2_edges) - 1, len(residual_edges) - 1
    n = 0
    for s in range(len(seg_event)):
        slot, chamber = event_slot[seg_event[s]], seg_chamber[s]
        slot_out[n], index_out[n] = slot, offsets[0] + chamber
        slot_out[n + 1], index_out[n + 1] = slot, offsets[1] + chamber * n_angle + _bin(angle[s], angle_edges)
        n += 2
        if ndof[s] > 0:
            slot_out[n] = slot
            index_out[n] = offsets[2] + chamber * n_chi2 + _bin(chi2[s] / ndof[s], chi2_edges)
            n += 1
    for h in range(len(hit_segment)):
        s = hit_segment[h]
        if n_hits[s] >= min_residual_hits:
            plane = seg_chamber[s] * n_layers + hit_layer[h] - 1
            slot_out[n] = event_slot[seg_event[s]]
            index_out[n] = offsets[3] + plane * n_res + _bin(residual[h], residual_edges)
            n += 1
    for e in range(len(eff_event)):
        slot_out[n], index_out[n] = event_slot[eff_event[e]], offsets[4] + eff_flat[e]
        n += 1
        if eff_found[e]:
            slot_out[n], index_out[n] = event_slot[eff_event[e]], offsets[5] + eff_flat[e]
            n += 1
    return n
