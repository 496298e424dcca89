"""Compiled loops that list the entries (slot, index into the count vector) of the event products.

Each loop makes in one pass over a window's hits or events what a handful of numpy passes made: the entries of
:class:`~dtlive.core.products.events.EventCounts`, :class:`~dtlive.core.products.timebox.TimeBoxes` and
:class:`~dtlive.core.products.t0diff.T0Difference` (numba, compiled once and cached on disk). A value's bin on
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
