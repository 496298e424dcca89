"""The time box: a chamber's drift-time distribution, flat from t0 to t0 + Tmax, and the fit of its edges.

Drift times ``t = T_hit - t0`` of the hits of events, histogrammed, form a box: its rising edge is the t0
(0 when the t0 is right), its falling edge the maximum drift time Tmax, and half a cell over Tmax the
effective drift velocity. :func:`fit_timebox` fits

``f(t) = b + a (1 + s (t - t0) / 400 ns) / ((1 + exp(-(t - t0) / r)) (1 + exp((t - t0 - Tmax) / w)))``

(a plateau with a slope between two logistic edges, on a flat background), averaged over each bin, by weighted
least squares (:func:`scipy.optimize.curve_fit`, Poisson weights), to one window's histogram or to the sum of
many. Edges sharper than a quarter of a bin are not resolved.

>>> edges = np.arange(-100.0, 505.0, 5.0)
>>> centres = (edges[:-1] + edges[1:]) / 2
>>> box = 200 / ((1 + np.exp(-(centres - 10) / 3)) * (1 + np.exp((centres - 380) / 3)))  # edges 3 ns wide
>>> counts = np.random.default_rng(1).poisson(2 + box)
>>> fit = fit_timebox(counts, edges)
>>> abs(fit.t0_ns - 10) < 3, abs(fit.tmax_ns - 370) < 4, 56 < fit.velocity_um_per_ns < 58
(True, True, True)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from dtlive.core import detector as det
from dtlive.core.reco.events import Events

_SLOPE_SCALE_NS = 400.0
_SUBSTEPS = 5  # the model is averaged over this many points of each bin
FIT_FIELDS = ("t0_ns", "t0_err_ns", "tmax_ns", "tmax_err_ns", "velocity_um_per_ns", "velocity_err_um_per_ns",
              "rise_ns", "fall_ns", "entries")


@dataclass(frozen=True)
class TimeBoxFit:
    """Fitted rising edge (t0), width (Tmax) and drift velocity of a time box, with 1-sigma uncertainties.

    ``ok`` is false (and the numbers NaN) when the histogram is too sparse or the fit fails.

    >>> edges = np.arange(-100.0, 500.1, 5.0)
    >>> t = (edges[:-1] + edges[1:]) / 2
    >>> box = np.where((t > 0) & (t < 390), 100, 2)  # a flat box from 0 to 390 ns over a little noise
    >>> fit = fit_timebox(box, edges)
    >>> fit.ok, round(fit.t0_ns), round(fit.tmax_ns), fit.entries
    (True, 2, 386, 7884)
    """

    t0_ns: float
    t0_err_ns: float
    tmax_ns: float
    tmax_err_ns: float
    velocity_um_per_ns: float
    velocity_err_um_per_ns: float
    rise_ns: float
    fall_ns: float
    entries: int
    ok: bool

    def as_dict(self) -> dict[str, float]:
        """The fields of :data:`FIT_FIELDS` as a dict."""
        return {k: getattr(self, k) for k in FIT_FIELDS}


def drift_times(ev: Events, t0_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(chamber, drift time in ns) of every event hit whose event and chamber have a t0 (NaN t0s skipped).

    ``t0_ns`` is (n_events, N_CHAMBERS) in ns after each event's start (:mod:`dtlive.core.reco.t0`).

    >>> from dtlive.core.rows import Rows
    >>> from dtlive.core.reco.events import build_events
    >>> ev = build_events(Rows.from_columns(head=[2] * 3, fpga=[0] * 3, channel=[3, 1, 2], orbit=[7] * 3,
    ...                                     bx=[104, 108, 104], tdc=[0] * 3))
    >>> t0 = np.full((1, 4), np.nan); t0[0, 0] = -50.0
    >>> chamber, dt = drift_times(ev, t0); chamber.tolist(), dt.tolist()
    ([0, 0, 0], [50.0, 50.0, 150.0])
    """
    t0 = t0_ns[ev.event, ev.chamber]
    has = ~np.isnan(t0)
    return ev.chamber[has], ev.relative_ns()[has] - t0[has]


@dataclass(frozen=True)
class TimedHits:
    """Event hits whose chamber has a t0, as :func:`dtlive.core.reco.segments.fit_segments` takes them.

    ``event``, ``chamber``, ``layer`` (1-4), ``cell`` (0-15), ``drift_ns`` (hit time minus the t0 of its event and
    chamber), ``index`` (of the hit in the :class:`~dtlive.core.reco.events.Events`).

    >>> from dtlive.core.rows import Rows
    >>> from dtlive.core.reco.events import build_events
    >>> from dtlive.core.reco.t0 import meantimer_t0
    >>> ev = build_events(Rows.from_columns(head=[2] * 3, fpga=[0] * 3, channel=[3, 1, 2], orbit=[7] * 3,
    ...                                     bx=[104, 111, 104], tdc=[0, 18, 0]))
    >>> h = timed_hits(ev, meantimer_t0(ev))
    >>> h.layer.tolist(), h.cell.tolist(), [round(d, 1) for d in h.drift_ns.tolist()]
    ([3, 1, 2], [0, 0, 0], [100.2, 100.2, 290.2])
    """

    event: np.ndarray
    chamber: np.ndarray
    layer: np.ndarray
    cell: np.ndarray
    drift_ns: np.ndarray
    index: np.ndarray


def timed_hits(ev: Events, t0_ns: np.ndarray) -> TimedHits:
    """The hits of events with a t0 for their chamber, with their drift times, ready for the segment fit.

    >>> from dtlive.core.rows import Rows
    >>> from dtlive.core.reco.events import build_events
    >>> from dtlive.core.reco.segments import fit_segments
    >>> from dtlive.core.reco.t0 import meantimer_t0
    >>> ev = build_events(Rows.from_columns(head=[2] * 3, fpga=[0] * 3, channel=[3, 1, 2], orbit=[7] * 3,
    ...                                     bx=[104, 111, 104], tdc=[0, 18, 0]))
    >>> h = timed_hits(ev, meantimer_t0(ev))
    >>> seg = fit_segments(h.event, h.chamber, h.layer, h.cell, h.drift_ns)
    >>> len(seg), seg.n_hits.tolist()
    (1, [3])
    """
    t0 = t0_ns[ev.event, ev.chamber]
    idx = np.flatnonzero(~np.isnan(t0))
    return TimedHits(ev.event[idx], ev.chamber[idx], ev.layer[idx], ev.cell[idx], ev.relative_ns()[idx] - t0[idx],
                     idx)


def _model(t, b, a, s, t0, r, tmax, w):
    with np.errstate(over="ignore"):
        rise = 1.0 / (1.0 + np.exp(-(t - t0) / r))
        fall = 1.0 / (1.0 + np.exp((t - t0 - tmax) / w))
    return b + a * (1.0 + s * (t - t0) / _SLOPE_SCALE_NS) * rise * fall


def _failed(entries: int) -> TimeBoxFit:
    nan = float("nan")
    return TimeBoxFit(nan, nan, nan, nan, nan, nan, nan, nan, entries, False)


def fit_timebox(counts: np.ndarray, edges: np.ndarray, min_entries: int = 200) -> TimeBoxFit:
    """Fit the edges of a time box (counts per drift-time bin on ``edges``, ns).

    Parameters
    ----------
    counts : numpy.ndarray
        Entries per bin (``len(edges) - 1``), from one window or summed over windows.
    edges : numpy.ndarray
        Bin edges in ns, increasing; they should reach ~100 ns either side of the box.
    min_entries : int
        Fewer entries than this give a failed fit (``ok`` false, NaN numbers).

    Returns
    -------
    TimeBoxFit

    Examples
    --------
    >>> fit_timebox(np.zeros(10), np.arange(11.0)).ok
    False
    """
    counts = np.asarray(counts, float)
    edges = np.asarray(edges, float)
    entries = int(counts.sum())
    if entries < min_entries or len(counts) < 10:
        return _failed(entries)
    from scipy.optimize import curve_fit

    t = (edges[:-1] + edges[1:]) / 2
    bin_ns = float(np.median(np.diff(edges)))
    inside = edges[:-1, None] + np.diff(edges)[:, None] * (np.arange(_SUBSTEPS) + 0.5) / _SUBSTEPS

    def binned(_, *p):  # the model's mean over each bin
        return _model(inside, *p).mean(axis=1)

    peak = float(np.percentile(counts, 90))
    above = np.flatnonzero(counts > peak / 2)
    background = float(min(np.median(counts[:3]), np.median(counts[-3:])))
    t0, t1 = t[above[0]], t[above[-1]]
    guess = [background, max(peak - background, 1.0), 0.0, t0, bin_ns, max(t1 - t0, 10 * bin_ns), bin_ns]
    lower = [0.0, 0.0, -2.0, t[0], bin_ns / 4, 0.0, bin_ns / 4]  # edges sharper than a bin: t0 undetermined
    upper = [np.inf, np.inf, 2.0, t[-1], 100.0, t[-1] - t[0], 100.0]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p, cov = curve_fit(binned, t, counts, p0=guess, sigma=np.sqrt(np.maximum(counts, 1.0)),
                               bounds=(lower, upper), max_nfev=5000)
    except (RuntimeError, ValueError):
        return _failed(entries)
    if not np.isfinite(cov).all() or not (np.sqrt(np.diag(cov))[[3, 5]] < t[-1] - t[0]).all():
        return _failed(entries)
    tmax, var_tmax = p[5], cov[5, 5]
    velocity = det.HALF_CELL_MM / tmax * 1e3
    velocity_err = velocity * np.sqrt(var_tmax) / tmax
    return TimeBoxFit(float(p[3]), float(np.sqrt(cov[3, 3])), float(tmax), float(np.sqrt(var_tmax)),
                      float(velocity), float(velocity_err), float(p[4]), float(p[6]), entries, True)


def fit_timeboxes(counts: np.ndarray, edges: np.ndarray, min_entries: int = 200) -> dict[str, np.ndarray]:
    """:func:`fit_timebox` of each row of a (chamber, drift time) histogram: a dict of per-chamber arrays.

    Works on a window's ``timebox_meantimer`` / ``timebox_trigger`` or on their sum over many windows.

    >>> fits = fit_timeboxes(np.zeros((4, 20)), np.arange(21.0))
    >>> sorted(fits)[:3], fits["t0_ns"].shape
    (['entries', 'fall_ns', 'rise_ns'], (4,))
    """
    rows = [fit_timebox(c, edges, min_entries) for c in np.asarray(counts)]
    return {k: np.array([getattr(f, k) for f in rows]) for k in FIT_FIELDS}
