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
from dtlive.core.reco.events import Events

_HALF_CELL = det.half_cell_of(np.arange(det.CHAMBER_CHANNELS))  # of each chamber channel
_FPGA_OF_CHAMBER = det.CHAMBERS // (det.N_CHAMBERS // det.N_FPGA)  # whose trigger word a chamber takes
_EVERY_CHAMBER_ON_COLUMN_0 = np.zeros(det.N_CHAMBERS, np.int64)  # the one scintillator serves every chamber
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
    from dtlive.core.reco.t0_kernel import relative_t0  # compiled on first use (numba; cached on disk)

    return relative_t0(ev.scint[:, None], ev.start, _EVERY_CHAMBER_ON_COLUMN_0, det.T0_OFFSET_NS, det.TDC_NS)


def trigger_t0(ev: Events, offset_ns: np.ndarray = det.TRIGGER_T0_OFFSET_NS) -> np.ndarray:
    """t0 (ns after the event start) per event and chamber from the trigger word of the chamber's FPGA.

    >>> from dtlive.core.rows import Rows
    >>> from dtlive.core.reco.events import build_events
    >>> ev = build_events(Rows.from_columns(head=[2] * 4, fpga=[0, 0, 0, 0], channel=[3, 1, 2, 138], orbit=[7] * 4,
    ...                                     bx=[104, 108, 104, 110], tdc=[0] * 4))
    >>> trigger_t0(ev, np.full(4, 200.0))[0].tolist()  # FPGA 0 serves chambers 0 and 1
    [-50.0, -50.0, nan, nan]
    """
    from dtlive.core.reco.t0_kernel import relative_t0  # compiled on first use (numba; cached on disk)

    return relative_t0(ev.trigger, ev.start, _FPGA_OF_CHAMBER, offset_ns, det.TDC_NS)


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
        when these agree within ``agree_ns``.
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
    from dtlive.core.reco.t0_kernel import meantimer_events  # compiled on first use (numba; cached on disk)

    return meantimer_events(ev.ticks, ev.event, ev.chamber, ev.layer, _HALF_CELL[ev.channel & 127], ev.start,
                            tmax_ns / det.TDC_NS, -tolerance_ns / det.TDC_NS, (tmax_ns + tolerance_ns) / det.TDC_NS,
                            det.TDC_NS, agree_ns, reference_ns)  # fmt: skip


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
