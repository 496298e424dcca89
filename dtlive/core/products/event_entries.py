"""Compiled loops that list the entries (slot, index into the count vector) of the event products.

Each loop makes in one pass over a window's hits or events what a handful of numpy passes made: the entries of
:class:`~dtlive.core.products.events.EventCounts`, :class:`~dtlive.core.products.timebox.TimeBoxes`,
:class:`~dtlive.core.products.t0diff.T0Difference` and :class:`~dtlive.core.products.segments.SegmentProducts`
(numba, compiled once and cached on disk). A value's bin on
``edges`` is ``searchsorted(edges, value, side="right")``: 0 the underflow, ``len(edges)`` the overflow.

>>> import numpy as np
>>> slot, index = histogram_entries(np.array([0, 1]), np.array([5.0, 50.0]), np.array([3, 4]), np.array([0.0, 10.0]))
>>> slot.tolist(), index.tolist()  # chamber 0: bin 1 (0-10); chamber 1: the overflow, 3 + 2
([3, 4], [1, 5])
"""

from __future__ import annotations

import numba
import numpy as np


def histogram_entries(chamber, values, slot, edges, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Entries of ``values`` (NaN: none) in a (chamber, [underflow, bins..., overflow]) histogram on ``edges``
    that starts at ``offset`` of the count vector, with the ``slot`` of each.

    >>> s, i = histogram_entries(np.array([2]), np.array([np.nan]), np.array([9]), np.array([0.0, 1.0]))
    >>> len(s), len(i)
    (0, 0)
    """
    slot_out, index_out = np.empty(len(values), np.int64), np.empty(len(values), np.int64)
    n = _histogram(np.ascontiguousarray(chamber, np.int64), np.ascontiguousarray(values, np.float64),
                   np.ascontiguousarray(slot, np.int64), np.ascontiguousarray(edges, np.float64), int(offset), slot_out,
                   index_out, 0)  # fmt: skip
    return slot_out[:n], index_out[:n]


def timebox_entries(event, chamber, relative_ns, t0_ns, event_slot, edges, n_chambers: int):
    """Entries of the time boxes: per hit in an event and per t0 table of ``t0_ns`` (kinds, events, chambers)
    whose value for the hit's event and chamber is known, the drift time ``relative_ns - t0`` in kind k's
    (chamber, [underflow, bins..., overflow]) histogram.

    >>> t0 = np.array([[[-100.0, np.nan]], [[np.nan, np.nan]]])  # meantimer t0 in chamber 0 only, no trigger
    >>> s, i = timebox_entries(np.array([0, 0]), np.array([0, 1]), np.array([50.0, 60.0]), t0, np.array([7]),
    ...                        np.array([0.0, 100.0, 200.0]), 2)
    >>> s.tolist(), i.tolist()  # the chamber-0 hit: 150 ns, bin 2 of 0-4
    ([7], [2])
    """
    kinds = len(t0_ns)
    slot_out = np.empty(kinds * len(event), np.int64)
    index_out = np.empty(kinds * len(event), np.int64)
    event, chamber = np.ascontiguousarray(event, np.int64), np.ascontiguousarray(chamber, np.int64)
    relative_ns = np.ascontiguousarray(relative_ns, np.float64)
    edges, event_slot = np.ascontiguousarray(edges, np.float64), np.ascontiguousarray(event_slot, np.int64)
    n = 0
    for k in range(kinds):
        t0 = np.ascontiguousarray(t0_ns[k], np.float64)
        n = _timebox(event, chamber, relative_ns, t0, event_slot, edges, k * n_chambers * (len(edges) + 1), slot_out,
                     index_out, n)  # fmt: skip
    return slot_out[:n], index_out[:n]


@numba.njit(cache=True, nogil=True)
def _histogram(chamber, values, slot, edges, offset, slot_out, index_out, n):  # pragma: no cover - compiled
    width = len(edges) + 1
    for i in range(len(values)):
        v = values[i]
        if np.isnan(v):
            continue
        slot_out[n] = slot[i]
        index_out[n] = offset + chamber[i] * width + np.searchsorted(edges, v, side="right")
        n += 1
    return n


@numba.njit(cache=True, nogil=True)
def _timebox(event, chamber, relative_ns, t0, event_slot, edges, offset, slot_out, index_out,
             n):  # pragma: no cover - compiled
    width = len(edges) + 1
    for i in range(len(event)):
        t0_hit = t0[event[i], chamber[i]]
        if np.isnan(t0_hit):
            continue
        slot_out[n] = event_slot[event[i]]
        index_out[n] = offset + chamber[i] * width + np.searchsorted(edges, relative_ns[i] - t0_hit, side="right")
        n += 1
    return n


def event_count_entries(event, chamber, ticks, event_slot, triggered, slot_ticks: int, first_hit_index: int,
                        n_chambers: int) -> tuple[np.ndarray, np.ndarray]:
    """Entries of the event counts: index 0 per event (its slot), 1 per event with a trigger word, and per chamber
    hit ``first_hit_index + chamber`` in an event (its event's slot) or ``first_hit_index + n_chambers + chamber``
    in none (the hit's own slot, ``ticks // slot_ticks``).

    >>> s, i = event_count_entries(np.array([0, -1]), np.array([1, 2]), np.array([1600, 8000]), np.array([2]),
    ...                            np.array([True]), 800, 2, 4)
    >>> s.tolist(), i.tolist()
    ([2, 2, 2, 10], [0, 1, 3, 8])
    """
    n_events, n_hits = len(event_slot), len(event)
    slot_out = np.empty(2 * n_events + n_hits, np.int64)
    index_out = np.empty(2 * n_events + n_hits, np.int64)
    n = _event_counts(np.ascontiguousarray(event, np.int64), np.ascontiguousarray(chamber, np.int64),
                      np.ascontiguousarray(ticks, np.int64), np.ascontiguousarray(event_slot, np.int64),
                      np.ascontiguousarray(triggered, np.bool_), int(slot_ticks), int(first_hit_index),
                      int(n_chambers), slot_out, index_out)  # fmt: skip
    return slot_out[:n], index_out[:n]


@numba.njit(cache=True, nogil=True)
def _event_counts(event, chamber, ticks, event_slot, triggered, slot_ticks, first_hit_index, n_chambers, slot_out,
                  index_out):  # pragma: no cover - compiled
    n = 0
    for e in range(len(event_slot)):
        slot_out[n], index_out[n] = event_slot[e], 0
        n += 1
        if triggered[e]:
            slot_out[n], index_out[n] = event_slot[e], 1
            n += 1
    for i in range(len(event)):
        if event[i] >= 0:
            slot_out[n], index_out[n] = event_slot[event[i]], first_hit_index + chamber[i]
        else:
            slot_out[n], index_out[n] = ticks[i] // slot_ticks, first_hit_index + n_chambers + chamber[i]
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
    return min(max(np.searchsorted(edges, value, side="right") - 1, 0), len(edges) - 2)


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
