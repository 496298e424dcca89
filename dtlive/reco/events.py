"""Event building: the hits of one muon grouped together, the rest kept apart as background.

A muon's chamber hits lie within a maximum drift time (``MAX_DRIFT_NS``, ~390 ns) of its passage; its
trigger words (channel 138) and scintillator hit come within that span too. All of them are sorted on
absolute time in TDC counts (:func:`dtlive.detector.hit_ticks`, so a muon straddling an orbit boundary stays
whole) and cut into time clusters wherever two consecutive ones are more than ``EVENT_GAP_NS`` (1.1 x Tmax)
apart. A cluster is a muon event when it holds a trigger word and at least two chamber hits, or hits in at
least ``EVENT_MIN_LAYERS`` layers of one chamber; every other chamber hit is background (event id -1).

The building depends only on the hits of the cluster: the same hits give the same events whatever else is in
the window, and a cluster never spans an orbit without hits (an orbit, 89 us, is much longer than the gap).

>>> from dtlive.rows import Rows
>>> # a muon crossing chamber 0 (layers 1-4, drift 100-300 ns) with its trigger word, and one noise hit
>>> hits = Rows.from_columns(head=[2] * 6, fpga=[0, 0, 0, 0, 0, 0], channel=[3, 1, 2, 0, 138, 9],
...                          orbit=[7] * 6, bx=[104, 108, 100, 112, 113, 900], tdc=[0] * 6)
>>> ev = build_events(hits)
>>> ev.n_events, ev.event.tolist(), ev.background_per_chamber().tolist()
(1, [0, 0, 0, 0, -1], [1, 0, 0, 0])
>>> ev.trigger.tolist()  # ticks of the event's first trigger word on FPGA 0 and FPGA 1 (-1: none)
[[751830, -1]]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dtlive import detector as det
from dtlive.rows import Rows

NO_TIME = -1  # no trigger word / scintillator hit in an event
_BIG = np.iinfo(np.int64).max
_CHAMBER, _TRIGGER, _SCINT, _OTHER = 0, 1, 2, 3
_NIBBLE_BITS = np.array([bin(i).count("1") for i in range(16)], np.int64)


@dataclass(frozen=True, eq=False)
class Events:
    """The muon events of a set of hits and the chamber hits, in time order, with their event id.

    Per chamber hit (time order): ``ticks`` (absolute time in TDC counts), ``orbit``, ``fpga``, ``channel``,
    ``chamber``, ``layer`` (1-4), ``event`` (0 .. n_events - 1, or -1 for background). Per event: ``start``
    (ticks of its first hit, trigger word or scintillator hit: the reference of its relative times),
    ``orbit`` of that first one, ``n_hits`` (chamber hits), ``trigger`` ((n_events, N_FPGA) ticks of the
    first trigger word of each FPGA, :data:`NO_TIME` for none) and ``scint`` (ticks of the first
    scintillator hit, or :data:`NO_TIME`). ``element_ticks``: the times of every chamber hit, trigger word and
    scintillator hit used, sorted.
    """

    ticks: np.ndarray
    orbit: np.ndarray
    fpga: np.ndarray
    channel: np.ndarray
    chamber: np.ndarray
    layer: np.ndarray
    event: np.ndarray
    start: np.ndarray
    event_orbit: np.ndarray
    n_hits: np.ndarray
    trigger: np.ndarray
    scint: np.ndarray
    element_ticks: np.ndarray

    @property
    def n_events(self) -> int:
        """Number of muon events."""
        return len(self.start)

    def background_per_chamber(self) -> np.ndarray:
        """Chamber hits in no event, per chamber (4,)."""
        return np.bincount(self.chamber[self.event < 0], minlength=det.N_CHAMBERS)

    def in_events(self) -> np.ndarray:
        """Indices of the chamber hits that belong to an event (time order)."""
        return np.flatnonzero(self.event >= 0)

    def relative_ns(self, index: np.ndarray) -> np.ndarray:
        """Time (ns) of the chamber hits at ``index`` (all in events) after the start of their event."""
        return (self.ticks[index] - self.start[self.event[index]]) * det.TDC_NS


def element_kind(fpga: np.ndarray, channel: np.ndarray) -> np.ndarray:
    """0 chamber hit, 1 trigger word, 2 scintillator hit, 3 any other special channel.

    >>> element_kind(np.array([0, 1, 1, 0]), np.array([5, 138, 128, 130])).tolist()
    [0, 1, 2, 3]
    """
    kind = np.full(len(channel), _OTHER, np.int64)
    kind[channel < det.CHAMBER_CHANNELS] = _CHAMBER
    kind[channel == det.TRIGGER_CHANNEL] = _TRIGGER
    kind[(channel == det.SCINT_CHANNEL) & (fpga == det.SCINT_FPGA)] = _SCINT
    return kind


def build_events(hits: Rows, gap_ns: float = det.EVENT_GAP_NS, min_layers: int = det.EVENT_MIN_LAYERS) -> Events:
    """Group cleansed hits into muon events (vectorised: one sort, a diff and cumulative sums).

    Parameters
    ----------
    hits : Rows
        Cleansed hits (HEAD 2), in any order.
    gap_ns : float
        Consecutive hits, trigger words and scintillator hits further apart than this start a new cluster.
    min_layers : int
        A cluster without a trigger word is an event when one chamber has hits in this many layers.

    Returns
    -------
    Events
        Chamber hits in time order with their event id, and the events' start, trigger and scintillator times.

    Examples
    --------
    >>> from dtlive.rows import Rows
    >>> two = Rows.from_columns(head=[2] * 3, fpga=[0] * 3, channel=[3, 1, 2], orbit=[5, 5, 6], bx=[3562, 3563, 2],
    ...                         tdc=[0] * 3)  # three layers across an orbit boundary
    >>> build_events(two).event.tolist(), build_events(two, min_layers=4).event.tolist()
    ([0, 0, 0], [-1, -1, -1])
    """
    fpga, channel = np.asarray(hits.fpga, np.int64), np.asarray(hits.channel, np.int64)
    kind = element_kind(fpga, channel)
    use = np.flatnonzero(kind != _OTHER)
    ticks = det.hit_ticks(hits.orbit[use], hits.bx[use], hits.tdc[use])
    fpga, channel, kind, orbit = fpga[use], channel[use], kind[use], np.asarray(hits.orbit[use], np.int64)
    # a total order (time, then FPGA and channel): the events do not depend on the order the hits came in
    order = np.argsort((ticks * det.N_FPGA * 4 + fpga) * 256 + channel, kind="stable")
    ticks, fpga, channel, kind, orbit = ticks[order], fpga[order], channel[order], kind[order], orbit[order]
    n = len(ticks)
    if n == 0:
        return _no_events()
    new = np.empty(n, bool)
    new[0] = True
    np.greater(np.diff(ticks), gap_ns / det.TDC_NS, out=new[1:])
    first = np.flatnonzero(new)
    cluster = np.cumsum(new) - 1

    is_chamber = kind == _CHAMBER
    chamber = np.where(is_chamber, det.chamber_of(fpga, np.minimum(channel, det.CHAMBER_CHANNELS - 1)), 0)
    layer = det.layer_of(channel)
    bits = np.where(is_chamber, np.left_shift(1, chamber * det.N_LAYERS + layer - 1), 0)
    layers = np.bitwise_or.reduceat(bits, first)
    most_layers = np.max([_NIBBLE_BITS[(layers >> (4 * c)) & 15] for c in range(det.N_CHAMBERS)], axis=0)
    n_chamber = np.add.reduceat(is_chamber.astype(np.int64), first)
    is_trigger = kind == _TRIGGER
    has_trigger = np.add.reduceat(is_trigger.astype(np.int64), first) > 0
    is_event = (most_layers >= min_layers) | (has_trigger & (n_chamber >= 2))

    event_of_cluster = np.where(is_event, np.cumsum(is_event) - 1, -1)
    event = event_of_cluster[cluster]
    trigger = np.stack([_first_of(ticks, is_trigger & (fpga == f), first)[is_event] for f in range(det.N_FPGA)],
                       axis=1).reshape(-1, det.N_FPGA)
    keep = np.flatnonzero(is_chamber)
    return Events(
        ticks=ticks[keep], orbit=orbit[keep], fpga=fpga[keep], channel=channel[keep], chamber=chamber[keep],
        layer=layer[keep], event=event[keep], start=ticks[first[is_event]], event_orbit=orbit[first[is_event]],
        n_hits=n_chamber[is_event], trigger=trigger, scint=_first_of(ticks, kind == _SCINT, first)[is_event],
        element_ticks=ticks,
    )  # fmt: skip


def _first_of(ticks: np.ndarray, mask: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Per cluster (starting at ``first``) the earliest ticks where ``mask``, or NO_TIME."""
    t = np.minimum.reduceat(np.where(mask, ticks, _BIG), first)
    return np.where(t == _BIG, NO_TIME, t)


def _no_events() -> Events:
    z = np.zeros(0, np.int64)
    return Events(ticks=z, orbit=z, fpga=z, channel=z, chamber=z, layer=z, event=z, start=z, event_orbit=z,
                  n_hits=z, trigger=np.zeros((0, det.N_FPGA), np.int64), scint=z, element_ticks=z)
