"""Event building: the hits of one muon grouped together, the rest kept apart as background.

A muon's chamber hits lie within a maximum drift time (``MAX_DRIFT_NS``, ~390 ns) of its passage; its
trigger words (channel 138) and scintillator hit come within that span too. All of them are sorted on
absolute time in TDC counts (:func:`dtlive.detector.hit_ticks`, so a muon straddling an orbit boundary stays
whole) and cut into time clusters wherever two consecutive ones are more than ``EVENT_GAP_NS`` (1.1 x Tmax)
apart. A cluster is a muon event when it holds a trigger word and at least two chamber hits, or hits in at
least ``EVENT_MIN_LAYERS`` layers of one chamber; every other chamber hit is background, counted per chamber.

The building depends only on the hits of the cluster: the same hits give the same events whatever else is in
the window, and a cluster never spans an orbit without hits (an orbit, 89 us, is much longer than the gap).

>>> from dtlive.core.rows import Rows
>>> # a muon crossing chamber 0 (layers 1-4, drift 100-300 ns) with its trigger word, and one noise hit
>>> hits = Rows.from_columns(head=[2] * 6, fpga=[0, 0, 0, 0, 0, 0], channel=[3, 1, 2, 0, 138, 9],
...                          orbit=[7] * 6, bx=[104, 108, 100, 112, 113, 900], tdc=[0] * 6)
>>> ev = build_events(hits)
>>> ev.n_events, ev.event.tolist(), ev.background_per_chamber.tolist()
(1, [0, 0, 0, 0], [1, 0, 0, 0])
>>> ev.trigger.tolist()  # ticks of the event's first trigger word on FPGA 0 and FPGA 1 (-1: none)
[[751830, -1]]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dtlive.core import detector as det
from dtlive.core.rows import Rows

NO_TIME = -1  # no trigger word / scintillator hit in an event
_CHAMBER, _TRIGGER, _SCINT, _OTHER = 0, 1, 2, 3
_KEY_BITS = 11  # FPGA (3 bits) and channel (8 bits) below the time in a sort key
_TICKS_PER_ORBIT = det.BX_PER_ORBIT * det.TDC_PER_BX


@dataclass(frozen=True, eq=False)
class Events:
    """The muon events of a set of hits and their chamber hits, in time order, with their event id; the
    background counted per chamber.

    Per chamber hit of an event (time order, the hits of an event consecutive): ``ticks`` (absolute time in TDC
    counts), ``fpga``, ``channel``, ``chamber``, ``layer`` (1-4), ``cell`` (0-15,
    :func:`dtlive.core.detector.cell_of`), ``event`` (0 .. n_events - 1), and :attr:`orbit` computed from the
    ticks. ``background_per_chamber``: the chamber hits in no event, per chamber (4,). Per event:
    ``start`` (ticks of its first hit, trigger word or scintillator hit: the reference of its relative times; its
    orbit :attr:`event_orbit`), ``n_hits`` (chamber hits), ``trigger`` ((n_events, N_FPGA) ticks of the first
    trigger word of each FPGA, :data:`NO_TIME` for none) and ``scint`` (ticks of the first scintillator hit, or
    :data:`NO_TIME`). ``element_ticks``: the times of every chamber hit, trigger word and scintillator hit used,
    sorted.

    >>> ev = build_events(Rows.from_columns(head=[2] * 5, fpga=[0] * 5, channel=[3, 1, 2, 0, 9], orbit=[7] * 5,
    ...                                     bx=[104, 108, 100, 112, 900], tdc=[0] * 5))
    >>> ev.n_events, ev.event.tolist(), ev.layer.tolist(), ev.n_hits.tolist()
    (1, [0, 0, 0, 0], [3, 1, 2, 4], [4])
    >>> ev.background_per_chamber.tolist(), ev.relative_ns().tolist()
    ([1, 0, 0, 0], [0.0, 100.0, 200.0, 300.0])
    """

    ticks: np.ndarray
    fpga: np.ndarray
    channel: np.ndarray
    chamber: np.ndarray
    layer: np.ndarray
    cell: np.ndarray
    event: np.ndarray
    start: np.ndarray
    n_hits: np.ndarray
    trigger: np.ndarray
    scint: np.ndarray
    background_per_chamber: np.ndarray
    element_ticks: np.ndarray

    @property
    def orbit(self) -> np.ndarray:
        """Orbit of each chamber hit."""
        return self.ticks // _TICKS_PER_ORBIT

    @property
    def event_orbit(self) -> np.ndarray:
        """Orbit of each event's first hit, trigger word or scintillator hit."""
        return self.start // _TICKS_PER_ORBIT

    @property
    def n_events(self) -> int:
        """Number of muon events."""
        return len(self.start)

    def relative_ns(self) -> np.ndarray:
        """Time (ns) of each chamber hit after the start of its event."""
        return (self.ticks - self.start[self.event]) * det.TDC_NS


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
    """Group cleansed hits into muon events (compiled passes: :mod:`~dtlive.core.reco.events_kernel`).

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
        The events' chamber hits in time order with their event id, the events' start, trigger and scintillator
        times, and the background hits per chamber.

    Examples
    --------
    >>> from dtlive.core.rows import Rows
    >>> two = Rows.from_columns(head=[2] * 3, fpga=[0] * 3, channel=[3, 1, 2], orbit=[5, 5, 6], bx=[3562, 3563, 2],
    ...                         tdc=[0] * 3)  # three layers across an orbit boundary
    >>> build_events(two).event.tolist(), build_events(two, min_layers=4).background_per_chamber.tolist()
    ([0, 0, 0], [3, 0, 0, 0])
    >>> build_events(Rows.from_columns(head=[2], fpga=[3], channel=[1], orbit=[5], bx=[0], tdc=[0]))
    Traceback (most recent call last):
    ...
    ValueError: hits must have FPGA 0-1 and channel 0-138, as decoding leaves them; got FPGA 3-3, channel 1-1
    """
    from dtlive.core.reco.events_kernel import cluster_events, element_keys  # compiled on first use (numba)

    key = element_keys(hits.fpga, hits.channel, hits.orbit, hits.bx, hits.tdc)
    if key is None:
        raise ValueError(f"hits must have FPGA 0-{det.N_FPGA - 1} and channel 0-{det.MAX_CHANNEL}, as decoding leaves "
                         f"them; got FPGA {hits.fpga.min()}-{hits.fpga.max()}, channel {hits.channel.min()}-"
                         f"{hits.channel.max()}")
    # one int64 key: time in TDC counts, FPGA, channel; its order is a total order of the hits (the events do
    # not depend on the order the hits came in: equal keys are equal hits) and the sorted key gives back every field
    n = len(key)
    if n == 0:
        return _no_events()
    (hit_ticks, fpga, channel, chamber, layer, cell), event, start, n_hits, trigger, scint, background = \
        cluster_events(key, int(gap_ns / det.TDC_NS), min_layers)
    return Events(
        ticks=hit_ticks, fpga=fpga, channel=channel, chamber=chamber, layer=layer, cell=cell, event=event,
        start=start, n_hits=n_hits, trigger=trigger, scint=scint, background_per_chamber=background,
        element_ticks=np.right_shift(key, _KEY_BITS),
    )  # fmt: skip


def _no_events() -> Events:
    z = np.zeros(0, np.int64)
    return Events(ticks=z, fpga=z, channel=z, chamber=z, layer=z, cell=z, event=z, start=z, n_hits=z,
                  trigger=np.zeros((0, det.N_FPGA), np.int64), scint=z,
                  background_per_chamber=np.zeros(det.N_CHAMBERS, np.int64), element_ticks=z)
