"""The compiled loop of the event building: time clusters of sorted hits, which of them are muon events.

:func:`dtlive.core.reco.events.build_events` describes the rules and sorts the hits; this module walks the
sorted keys once in machine code (numba, compiled once and cached on disk).

Input: the sorted int64 keys ``ticks << 11 | fpga << 8 | channel`` of the chamber hits, trigger words and
scintillator hits (:func:`element_keys` makes and sorts them from the hits' columns in one pass).

>>> import numpy as np
>>> keys = np.array([(1000 << 11) | 3, (1120 << 11) | 1, (1240 << 11) | 2, (1250 << 11) | 138, (9000 << 11) | 9])
>>> hits, hit_event, start, n_hits, trigger, scint, background = cluster_events(keys, 500, 3)
>>> hits[0].tolist(), hits[2].tolist(), hit_event.tolist(), start.tolist(), n_hits.tolist(), trigger.tolist()
([1000, 1120, 1240], [3, 1, 2], [0, 0, 0], [1000], [3], [[1250, -1]])
>>> hits[5].tolist(), background.tolist()  # the cells; the lone hit in chamber 0
([0, 0, 0], [1, 0, 0, 0])
"""

from __future__ import annotations

import numba
import numpy as np

from dtlive.core import detector as det
from dtlive.core.reco.events import NO_TIME

_LAYER_MOD4 = np.asarray(det.LAYER_OF_CHANNEL_MOD4, np.int64)
_CHAMBER_CHANNELS = det.CHAMBER_CHANNELS
_TRIGGER = det.TRIGGER_CHANNEL
_SCINT, _SCINT_FPGA = det.SCINT_CHANNEL, det.SCINT_FPGA
_NFPGA = det.N_FPGA
_NCH = det.N_CHAMBERS
_MAX_CHANNEL = det.MAX_CHANNEL
_BX_PER_ORBIT, _TDC_PER_BX = det.BX_PER_ORBIT, det.TDC_PER_BX
_MOVES_PER_KEY = 16  # beyond this many moves per hit on average, the keys are sorted at the end instead


def element_keys(fpga, channel, orbit, bx, tdc) -> np.ndarray | None:
    """The sorted keys ``ticks << 11 | fpga << 8 | channel`` of the chamber hits, trigger words and scintillator
    hits among cleansed hits (other special channels left out), ticks as in :func:`dtlive.core.detector.hit_ticks`;
    None when a hit's FPGA or channel lies outside ``0 .. N_FPGA - 1`` or ``0 .. MAX_CHANNEL``.

    Each key is put in place as it is made (the DAQ sends each FPGA's hits in time order, so the hits are nearly
    sorted and a key moves back a few places at most); hits far out of order make the pass stop moving keys
    after ``_MOVES_PER_KEY`` moves per hit on average, and one sort finishes the job.

    >>> keys = element_keys(np.array([0, 0, 1]), np.array([3, 130, 138]), np.array([1, 1, 1]), np.array([2, 2, 2]),
    ...                     np.array([5, 0, 0]))
    >>> (keys >> 11).tolist(), (keys & 255).tolist()  # channel 130 is no element; the trigger word came first
    ([106980, 106985], [138, 3])
    >>> element_keys(np.array([2]), np.array([3]), np.array([1]), np.array([2]), np.array([0])) is None
    True
    """
    fpga, channel, orbit, bx, tdc = (np.ascontiguousarray(a, np.int64) for a in (fpga, channel, orbit, bx, tdc))
    keys = np.empty(len(channel), np.int64)
    n, in_order = _keys(fpga, channel, orbit, bx, tdc, keys, _MOVES_PER_KEY * len(channel))
    if n < 0:
        return None
    keys = keys[:n]
    if not in_order:
        keys.sort(kind="stable")  # timsort: still fast on runs of sorted keys
    return keys


@numba.njit(cache=True, nogil=True)
def _keys(fpga, channel, orbit, bx, tdc, keys, max_moves):  # pragma: no cover - compiled
    n = moves = 0
    for i in range(len(channel)):
        f, c = fpga[i], channel[i]
        if f < 0 or f >= _NFPGA or c < 0 or c > _MAX_CHANNEL:
            return -1, False
        if c >= _CHAMBER_CHANNELS and c != _TRIGGER and not (c == _SCINT and f == _SCINT_FPGA):
            continue
        key = (((orbit[i] * _BX_PER_ORBIT + bx[i]) * _TDC_PER_BX + tdc[i]) << 11) | (f << 8) | c
        j = n
        if moves <= max_moves:  # insertion into the sorted keys before it
            while j > 0 and keys[j - 1] > key:
                keys[j] = keys[j - 1]
                j -= 1
            moves += n - j
        keys[j] = key
        n += 1
    return n, moves <= max_moves


def cluster_events(keys: np.ndarray, gap_ticks: int, min_layers: int):
    """The muon events of sorted ``keys`` (see the module doc).

    Returns the columns of the chamber hits in events (ticks, FPGA, channel, chamber, layer, cell) and the event of
    each; per event its start (ticks of its first element), chamber hits, first trigger word per FPGA and first
    scintillator hit (ticks, :data:`NO_TIME` for none); and the chamber hits in no event (background) per chamber.
    A cluster is a run of keys with gaps of at most ``gap_ticks``; it is an event when it holds two
    elements or more and either hits on ``min_layers`` layers of one chamber, or a trigger word and two chamber
    hits.

    >>> hits, hit_event, start, n_hits, trigger, scint, background = cluster_events(np.array([(5 << 11) | 3]), 500, 3)
    >>> hits.shape, len(start), background.tolist()  # a lone hit is background
    ((6, 0), 0, [1, 0, 0, 0])
    """
    n = len(keys)
    hits, hit_event = np.empty((6, n), np.int64), np.empty(n, np.int64)
    start, n_hits = np.empty(n // 2 + 1, np.int64), np.empty(n // 2 + 1, np.int64)  # two elements an event at least
    trigger, scint = np.empty((n // 2 + 1, _NFPGA), np.int64), np.empty(n // 2 + 1, np.int64)
    background = np.zeros(_NCH, np.int64)
    n_hit, n_events = _cluster(np.ascontiguousarray(keys, np.int64), int(gap_ticks), int(min_layers), hits,
                               hit_event, start, n_hits, trigger, scint, background)  # fmt: skip
    return (hits[:, :n_hit], hit_event[:n_hit], start[:n_events], n_hits[:n_events], trigger[:n_events],
            scint[:n_events], background)  # fmt: skip


@numba.njit(cache=True, nogil=True)
def _cluster(keys, gap, min_layers, hits, hit_event, start, n_hits, trigger, scint,
             background):  # pragma: no cover - compiled
    n = len(keys)
    n_hit = n_events = 0
    i = 0
    while i < n:
        j = i + 1
        while j < n and (keys[j] >> 11) - (keys[j - 1] >> 11) <= gap:
            j += 1
        layers = 0  # bit (chamber * 4 + layer - 1) per chamber hit
        n_chamber = 0
        has_trigger = False
        for k in range(i, j):
            channel, fpga = keys[k] & 255, (keys[k] >> 8) & 7
            if channel < _CHAMBER_CHANNELS:
                n_chamber += 1
                layers |= 1 << (((2 * fpga + (channel >> 6)) * 4 + _LAYER_MOD4[channel & 3] - 1) & 63)
            elif channel == _TRIGGER:
                has_trigger = True
        most = 0
        for c in range(_NCH):
            nibble = (layers >> (4 * c)) & 15
            most = max(most, (nibble & 1) + ((nibble >> 1) & 1) + ((nibble >> 2) & 1) + ((nibble >> 3) & 1))
        if j - i < 2 or not (most >= min_layers or (has_trigger and n_chamber >= 2)):
            for k in range(i, j):  # background: counted per chamber
                channel = keys[k] & 255
                if channel < _CHAMBER_CHANNELS:
                    background[2 * ((keys[k] >> 8) & 7) + (channel >> 6)] += 1
            i = j
            continue
        event = n_events
        n_events += 1
        start[event], n_hits[event] = keys[i] >> 11, n_chamber
        for f in range(_NFPGA):  # element by element: a slice would be a view with a reference count
            trigger[event, f] = NO_TIME
        scint[event] = NO_TIME
        for k in range(i, j):
            channel, fpga = keys[k] & 255, (keys[k] >> 8) & 7
            if channel < _CHAMBER_CHANNELS:
                hits[0, n_hit], hits[1, n_hit], hits[2, n_hit] = keys[k] >> 11, fpga, channel
                hits[3, n_hit], hits[4, n_hit] = 2 * fpga + (channel >> 6), _LAYER_MOD4[channel & 3]
                hits[5, n_hit] = (channel & 63) >> 2
                hit_event[n_hit] = event
                n_hit += 1
            else:  # the first trigger word of each FPGA, the first scintillator hit
                if channel == _TRIGGER:
                    if fpga < _NFPGA and trigger[event, fpga] == NO_TIME:
                        trigger[event, fpga] = keys[k] >> 11
                elif scint[event] == NO_TIME:
                    scint[event] = keys[k] >> 11
        i = j
    return n_hit, n_events
