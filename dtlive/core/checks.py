"""The automatic quality tests of one chamber's histogram: pure functions of counts, a reference and parameters.

Every test takes the chamber's observed counts ``obs`` (one histogram, or one number as a 1-element array),
the reference's counts ``ref`` of the same bins (or None), a :class:`Context` (bin centres, masked bins,
the exposure ratio) and its parameters (a dict, from the TOML configuration), and returns a
:class:`Outcome`: ``status`` (one of :data:`STATUSES`), a ``score``, a human ``reason`` and ``details``.

=============== ========================================================= =======================================
kind            what it judges                                             score
=============== ========================================================= =======================================
``chi2``        shape against the reference (two-histogram chi2, both      p-value
                normalised to their totals; ``scipy.stats.chi2``)
``ks``          shape of an ordered axis against the reference             p-value
                (Kolmogorov-Smirnov on the cumulative sums;
                ``scipy.stats.kstwobign``; conservative on binned data)
``range``       the chamber's sum, rate (per s) or ratio to the            the value judged
                reference's rate within ``warning``/``error`` bounds
``dead``        channels at zero or far below the reference scaled by      dead channels
                the exposure (Poisson lower tail below ``p_value`` and
                below ``fraction`` of the expectation)
``noisy``       channels above ``(1 + tolerance)`` x the mean of their     noisy channels
                ``neighbours`` same-layer neighbours on each side
                (Poisson upper tail below ``p_value``)
``mean_width``  mean and width (standard deviation) along the axis within  mean minus the reference's mean
                absolute ranges and/or tolerances around the reference's
``timebox``     the fitted edges of a time box against the reference's     t0 minus the reference's t0
                (t0: the rising edge; Tmax, so the drift velocity: its
                width)
=============== ========================================================= =======================================

Minimum statistics: every test has ``min_entries`` (observed entries for a shape; *expected* entries for a
rate or a channel count, so that a chamber that went silent is still judged) and reference-based tests
``min_reference_entries``; below them the status is ``not_enough_statistics``. Masked bins (known-bad
channels) are left out of every test.

>>> ctx = Context(centres=np.arange(4.0), mask=np.zeros(4, bool), scale=1.0)
>>> chi2_test(np.array([100, 100, 100, 100]), np.array([1000, 1000, 1000, 1000]), ctx, {}).status
'ok'
>>> out = chi2_test(np.array([400, 0, 0, 0]), np.array([1000, 1000, 1000, 1000]), ctx, {})
>>> out.status, out.score < 1e-9
('error', True)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from dtlive.core import detector as det
from dtlive.core.reco.timebox import TimeBoxFit, fit_timebox

STATUSES = ("ok", "warning", "error", "not_enough_statistics")
OK, WARNING, ERROR, NES = STATUSES


@dataclass
class Context:
    """What a test knows besides the counts.

    ``centres``: the bin centres along the histogram's axis; ``mask``: bins left out (known-bad channels);
    ``scale``: observed exposure / reference exposure (seconds, or total hits when the exposure is unknown);
    ``seconds``: the observed exposure (NaN when unknown); ``channel_axis``: the bins are the 64 channels
    of a chamber (their layer and cell follow from the channel number).

    >>> ctx = Context(centres=np.arange(64.0), mask=np.isin(np.arange(64), [17]), scale=0.5, seconds=2.0,
    ...               channel_axis=True)  # channel 17 known bad; half the reference's exposure
    >>> obs = np.full(64, 100)
    >>> range_test(obs, None, ctx, {"quantity": "rate"}).score  # 63 channels x 100 hits in 2 s (17 left out)
    3150.0
    """

    centres: np.ndarray
    mask: np.ndarray
    scale: float = float("nan")
    seconds: float = float("nan")
    channel_axis: bool = False


@dataclass
class Outcome:
    """A test's verdict on one chamber: status, score, human reason and details (JSON-ready).

    >>> out = range_test(np.array([50]), None, Context(np.zeros(1), np.zeros(1, bool)), {"warning": [100, None]})
    >>> out.status, out.score, out.reason, out.details
    ('warning', 50.0, 'sum 50 entries outside [100, None]', {'entries': 50.0})
    """

    status: str
    score: float
    reason: str
    details: dict = field(default_factory=dict)


def _level(bad_warning: bool, bad_error: bool) -> str:
    return ERROR if bad_error else WARNING if bad_warning else OK


def _nes(reason: str, **details) -> Outcome:
    return Outcome(NES, float("nan"), reason, details)


def _p_status(p: float, params: dict) -> str:
    return _level(p < params.get("warning_p", 1e-5), p < params.get("error_p", 1e-9))


def _gate(o: np.ndarray, r: np.ndarray | None, params: dict) -> Outcome | None:
    n = float(o.sum())
    if n < params.get("min_entries", 100):
        return _nes(f"{n:.0f} entries, fewer than {params.get('min_entries', 100)}", entries=n)
    if r is not None and r.sum() < params.get("min_reference_entries", 1000):
        return _nes(f"the reference has {r.sum():.0f} entries, fewer than {params.get('min_reference_entries', 1000)}",
                    entries=n, reference_entries=float(r.sum()))
    return None


def chi2_test(obs: np.ndarray, ref: np.ndarray, ctx: Context, params: dict) -> Outcome:
    """Two-histogram chi2 of shapes: ``sum (N_r o_i - N_o r_i)^2 / (o_i + r_i) / (N_o N_r)``, ndf = bins - 1
    (``sum (o_i - e_i)^2 / var_i`` with ``e_i = r_i N_o / N_r`` and ``var_i = (o_i + r_i) N_o / N_r``).

    Bins empty in both and masked bins are left out; bins expecting fewer than ``min_bin_expected`` entries
    in the smaller histogram are summed into one (the chi2 distribution holds for large counts only).
    ``systematic``: a relative uncertainty of the reference's shape added to each bin's variance
    (``(systematic x expected)^2``), so that large samples are judged at that level and not at their
    ever smaller statistical one.
    ``details``: chi2, ndf and the centres of the bins that contribute most (``worst``; NaN: the summed bin).

    >>> ctx = Context(centres=np.arange(3.0), mask=np.array([False, False, True]))
    >>> out = chi2_test(np.array([50, 50, 900]), np.array([500, 500, 0]), ctx, {"min_reference_entries": 10})
    >>> out.status, out.details["ndf"]
    ('ok', 1)
    """
    keep = ~ctx.mask
    o, r = np.asarray(obs, float)[keep], np.asarray(ref, float)[keep]
    gated = _gate(o, r, params)
    if gated:
        return gated
    used = (o + r) > 0
    o, r, centres = o[used], r[used], ctx.centres[keep][used]
    no, nr = o.sum(), r.sum()
    sparse = (o + r) * min(no, nr) / (no + nr) < params.get("min_bin_expected", 5.0)
    if sparse.sum() > 1:  # bins expecting few entries in the smaller histogram make one bin together
        o = np.append(o[~sparse], o[sparse].sum())
        r = np.append(r[~sparse], r[sparse].sum())
        centres = np.append(centres[~sparse], np.nan)
    expected = r * no / nr
    variance = (o + r) * no / nr + (params.get("systematic", 0.0) * expected) ** 2
    terms = (o - expected) ** 2 / variance
    chi2, ndf = float(terms.sum()), int(used.sum()) - 1
    if ndf < 1:
        return _nes("fewer than two bins to compare", entries=float(no))
    p = float(stats.chi2.sf(chi2, ndf))
    worst = centres[np.argsort(terms)[::-1][: params.get("report_bins", 3)]]
    status = _p_status(p, params)
    what = "matches" if status == OK else "differs from"
    reason = f"shape {what} the reference: chi2/ndf = {chi2:.1f}/{ndf} (p = {p:.2g})"
    if status != OK:
        reason += f", most at {_bins(worst, ctx)}"
    return Outcome(status, p, reason, {"chi2": round(chi2, 3), "ndf": ndf,
                                       "worst": [None if not np.isfinite(w) else float(w) for w in worst]})


def ks_test(obs: np.ndarray, ref: np.ndarray, ctx: Context, params: dict) -> Outcome:
    """Kolmogorov-Smirnov distance of the normalised cumulative sums; p from the asymptotic distribution of
    ``D sqrt(N_o N_r / (N_o + N_r))``. On binned data the p-value is conservative (too large).

    >>> ctx = Context(centres=np.arange(4.0), mask=np.zeros(4, bool))
    >>> out = ks_test(np.array([0, 0, 300, 300]), np.array([500, 500, 500, 500]), ctx, {})
    >>> out.status, round(out.details["distance"], 2)
    ('error', 0.5)
    """
    keep = ~ctx.mask
    o, r = np.asarray(obs, float)[keep], np.asarray(ref, float)[keep]
    gated = _gate(o, r, params)
    if gated:
        return gated
    no, nr = o.sum(), r.sum()
    diff = np.abs(np.cumsum(o) / no - np.cumsum(r) / nr)
    d = float(diff.max())
    p = float(stats.kstwobign.sf(d * np.sqrt(no * nr / (no + nr))))
    status = _p_status(p, params)
    at = ctx.centres[keep][int(diff.argmax())]
    what = "matches" if status == OK else "differs from"
    return Outcome(status, p, f"distribution {what} the reference: KS distance {d:.3f} at {_bins([at], ctx)} "
                              f"(p = {p:.2g})", {"distance": d, "at": float(at)})


def range_test(obs: np.ndarray, ref: np.ndarray | None, ctx: Context, params: dict) -> Outcome:
    """The chamber's ``quantity`` within bounds: ``"sum"`` (entries), ``"rate"`` (entries per second) or
    ``"ratio"`` (observed over the reference's entries scaled by the exposure).

    ``warning``/``error``: ``[low, high]`` (either may be omitted). For a ratio, a deviation also needs
    ``min_sigma`` standard deviations ``sqrt(dispersion x expected)`` (``dispersion`` > 1 when entries come
    in clusters: a muon leaves ~4 hits in a chamber), and ``min_entries`` gates on the expected entries
    (a chamber that went silent is judged).

    >>> ctx = Context(centres=np.zeros(1), mask=np.zeros(1, bool), scale=0.01, seconds=2.0)
    >>> p = {"quantity": "ratio", "warning": [0.8, 1.25], "error": [0.6, 1.6]}
    >>> out = range_test(np.array([1200]), np.array([250000]), ctx, p)
    >>> out.status, round(out.score, 2)
    ('error', 0.48)
    """
    keep = ~ctx.mask
    n = float(np.asarray(obs, float)[keep].sum())
    quantity = params.get("quantity", "sum")
    sigma_ok = True
    if quantity == "ratio":
        if ref is None or not np.isfinite(ctx.scale):
            return _nes("no reference exposure to compare with")
        expected = float(np.asarray(ref, float)[keep].sum()) * ctx.scale
        if expected < params.get("min_entries", 100):
            return _nes(f"{expected:.0f} entries expected from the reference, fewer than "
                        f"{params.get('min_entries', 100)}", expected=expected)
        value, unit = n / expected, " of the reference"
        sigma_ok = abs(n - expected) > params.get("min_sigma", 5.0) * np.sqrt(params.get("dispersion", 1.0) * expected)
        details = {"entries": n, "expected": round(expected, 1)}
    elif quantity == "rate":
        if not np.isfinite(ctx.seconds) or ctx.seconds <= 0:
            return _nes("the exposure (seconds) is unknown")
        value, unit, details = n / ctx.seconds, " Hz", {"entries": n, "seconds": ctx.seconds}
    else:
        value, unit, details = n, " entries", {"entries": n}

    def outside(bounds) -> bool:
        if not bounds:
            return False
        lo, hi = (list(bounds) + [None, None])[:2]
        return (lo is not None and value < lo) or (hi is not None and value > hi)

    status = _level(outside(params.get("warning")) and sigma_ok, outside(params.get("error")) and sigma_ok)
    shown = f"{value:.3g}{unit}" if quantity != "ratio" else f"{value:.2f}{unit}"
    bounds = params.get("error" if status == ERROR else "warning")
    reason = f"{quantity} {shown}" + (f" outside {list(bounds or ())}" if status != OK else " within bounds")
    return Outcome(status, value, reason, details)


def dead_test(obs: np.ndarray, ref: np.ndarray, ctx: Context, params: dict) -> Outcome:
    """Channels far below the reference: ``o <= fraction * e`` and ``P(X <= o | e) < p_value`` with
    ``e = ref * scale``; ``warning_channels``/``error_channels`` dead ones make a warning/error.

    ``details``: the ``bad_channels`` (bins' centres), how many channels could be judged (``judged``: a
    zero count can only be significant when ``e > -ln p_value``) and those empty in the reference.

    >>> ctx = Context(centres=np.arange(4.0), mask=np.zeros(4, bool), scale=0.1, channel_axis=True)
    >>> out = dead_test(np.array([40, 0, 38, 41]), np.array([400, 400, 400, 0]), ctx, {})
    >>> out.status, out.details["bad_channels"], out.details["reference_empty"]
    ('warning', [1], [3])
    """
    if not np.isfinite(ctx.scale):
        return _nes("no reference exposure to compare with")
    o, e = np.asarray(obs, float), np.asarray(ref, float) * ctx.scale
    p_value = params.get("p_value", 1e-6)
    judged = ~ctx.mask & (np.exp(-e) < p_value)
    if judged.sum() < params.get("min_channels", 1):
        return _nes(f"no channel expects more than {-np.log(p_value):.1f} entries", expected_max=float(e.max()))
    dead = judged & (o <= params.get("fraction", 0.2) * e) & (stats.poisson.cdf(o, e) < p_value)
    bad = ctx.centres[dead].astype(int).tolist()
    status = _level(len(bad) >= params.get("warning_channels", 1), len(bad) >= params.get("error_channels", 4))
    reason = (f"{len(bad)} dead channel(s) of {int(judged.sum())} judged: {_bins(ctx.centres[dead], ctx)}" if bad
              else f"no dead channel among {int(judged.sum())} judged")
    empty = ctx.centres[~ctx.mask & (np.asarray(ref) == 0)].astype(int).tolist()
    return Outcome(status, float(len(bad)), reason,
                   {"bad_channels": bad, "judged": int(judged.sum()), "reference_empty": empty})


def noisy_test(obs: np.ndarray, ref: np.ndarray | None, ctx: Context, params: dict) -> Outcome:
    """Channels above ``(1 + tolerance)`` x the mean of their same-layer neighbours (``neighbours`` cells on
    each side, masked channels left out) with ``P(X >= o | (1 + tolerance) mean) < p_value`` and at least
    ``min_hits`` entries.

    >>> ctx = Context(centres=np.arange(64.0), mask=np.zeros(64, bool), channel_axis=True)
    >>> occ = np.full(64, 30); occ[21] = 400
    >>> out = noisy_test(occ, None, ctx, {})
    >>> out.status, out.details["bad_channels"]
    ('warning', [21])
    """
    o = np.asarray(obs, float)
    if o.shape[-1] != det.CHANNELS_PER_CHAMBER:
        return _nes("not a per-channel histogram")
    mean = neighbour_mean(o, ctx.mask, params.get("neighbours", 2))
    limit = (1.0 + params.get("tolerance", 3.0)) * mean
    judged = ~ctx.mask & np.isfinite(mean)
    if o[judged].sum() < params.get("min_entries", 100):
        return _nes(f"{o[judged].sum():.0f} entries, fewer than {params.get('min_entries', 100)}")
    with np.errstate(invalid="ignore"):
        noisy = judged & (o > limit) & (o >= params.get("min_hits", 20)) & (
            stats.poisson.sf(o - 1, np.where(np.isfinite(limit), limit, 0.0)) < params.get("p_value", 1e-6))
    bad = ctx.centres[noisy].astype(int).tolist()
    status = _level(len(bad) >= params.get("warning_channels", 1), len(bad) >= params.get("error_channels", 4))
    if bad:
        ratio = (o[noisy] / np.maximum(mean[noisy], 1e-9)).round(1).tolist()
        reason = f"{len(bad)} noisy channel(s): {_bins(ctx.centres[noisy], ctx)} ({ratio} x their neighbours)"
    else:
        reason = f"no noisy channel among {int(judged.sum())} judged"
    return Outcome(status, float(len(bad)), reason, {"bad_channels": bad, "judged": int(judged.sum())})


def mean_width_test(obs: np.ndarray, ref: np.ndarray | None, ctx: Context, params: dict) -> Outcome:
    """Mean and width (standard deviation) along the axis: within ``mean``/``width`` ``[low, high]``
    (a breach is a ``warning``) and within ``mean_tolerance``/``width_tolerance`` ``[warning, error]`` of
    the reference's; a deviation from the reference also needs ``min_sigma`` statistical errors.

    >>> ctx = Context(centres=np.array([0.0, 100.0, 200.0, 300.0]), mask=np.zeros(4, bool))
    >>> p = {"mean_tolerance": [10, 30], "min_reference_entries": 10}
    >>> out = mean_width_test(np.array([0, 0, 300, 300]), np.array([100, 100, 100, 100]), ctx, p)
    >>> out.status, out.score
    ('error', 100.0)
    """
    keep = ~ctx.mask
    o, c = np.asarray(obs, float)[keep], ctx.centres[keep]
    r = None if ref is None else np.asarray(ref, float)[keep]
    needs_ref = "mean_tolerance" in params or "width_tolerance" in params
    if needs_ref and r is None and not (params.get("mean") or params.get("width")):
        return _nes("no reference for the tolerances")
    gated = _gate(o, r if needs_ref else None, params)
    if gated:
        return gated
    mean, width = _moments(o, c)
    details: dict = {"mean": round(mean, 3), "width": round(width, 3)}
    bad_warning = bad_error = False
    notes = []
    for name, value in (("mean", mean), ("width", width)):
        lo, hi = (list(params.get(name) or [None, None]) + [None, None])[:2]
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            bad_warning = True
            notes.append(f"{name} {value:.3g} outside [{lo}, {hi}]")
    score = float("nan")
    if needs_ref and r is not None:
        rmean, rwidth = _moments(r, c)
        details.update(reference_mean=round(rmean, 3), reference_width=round(rwidth, 3))
        n = o.sum()
        errors = {"mean": width / np.sqrt(n), "width": width / np.sqrt(2 * n)}  # normal approximation
        score = mean - rmean
        for name, value, rvalue in (("mean", mean, rmean), ("width", width, rwidth)):
            tol = params.get(f"{name}_tolerance")
            if not tol:
                continue
            dev = abs(value - rvalue)
            significant = dev > params.get("min_sigma", 5.0) * errors[name]
            if significant and dev > tol[0]:
                bad_warning = True
                bad_error |= len(tol) > 1 and dev > tol[1]
                notes.append(f"{name} {value:.3g} vs {rvalue:.3g} in the reference")
    status = _level(bad_warning, bad_error)
    reason = "; ".join(notes) if notes else f"mean {mean:.3g}, width {width:.3g} as expected"
    return Outcome(status, score, reason, details)


def timebox_test(obs: np.ndarray, ref: np.ndarray, ctx: Context, params: dict) -> Outcome:
    """The edges of a time box against the reference's: how far its rising edge (t0) and its falling edge moved,
    so how its t0 and its width Tmax (half a cell over Tmax is the drift velocity) changed.

    The reference's edges are fitted once (:func:`dtlive.core.reco.timebox.fit_timebox`); each edge of the
    window(s) is then matched to the reference's shape moved by ``s`` (its cumulative sum interpolated) in the
    ``window_ns`` around it, ``s`` on a 0.25 ns grid up to ``max_shift_ns``, at the minimum of the Poisson
    deviance (normalised to the window's entries there), with its uncertainty from the deviance's curvature.
    ``t0`` moved by the rising edge's shift, ``tmax`` by the falling edge's minus the rising edge's; either
    beyond ``t0_tolerance``/``tmax_tolerance`` ``[warning, error]`` ns and ``min_sigma`` uncertainties is a
    warning/error. Fewer than ``min_entries`` entries, or a reference whose box cannot be fitted, give
    ``not_enough_statistics``. The bin edges are the midpoints of the centres.

    ``details``: the reference's fitted ``t0_ns_reference``, ``tmax_ns_reference``, the window's ``t0_ns``,
    ``tmax_ns`` (the reference's moved by the shifts) and their uncertainties ``t0_err_ns``, ``tmax_err_ns``.

    >>> centres = np.arange(-97.5, 500.0, 5.0)
    >>> def box(t0, tmax, n=100):
    ...     return np.where((centres > t0) & (centres < t0 + tmax), n, 1)
    >>> ctx = Context(centres=centres, mask=np.zeros(len(centres), bool))
    >>> p = {"t0_tolerance": [3, 10], "tmax_tolerance": [6, 20], "min_entries": 1000}
    >>> out = timebox_test(box(15, 390), box(0, 390, 1000), ctx, p)
    >>> out.status, round(out.score), out.reason
    ('error', 15, 't0 moved by +15.1 ns')
    >>> timebox_test(box(0, 430), box(0, 390, 1000), ctx, p).reason
    'Tmax moved by +39.8 ns'
    >>> timebox_test(box(0, 390), box(0, 390, 1000), ctx, p).status
    'ok'
    >>> timebox_test(box(0, 390, 2), box(0, 390, 1000), ctx, p).status
    'not_enough_statistics'
    """
    keep = ~ctx.mask
    o, r, c = np.asarray(obs, float)[keep], np.asarray(ref, float)[keep], ctx.centres[keep]
    gated = _gate(o, r, params)
    if gated:
        return gated
    edges = _edges(c)
    rfit = _reference_fit(r.tobytes(), edges.tobytes(), int(params.get("min_reference_entries", 1000)))
    if not rfit.ok:
        return _nes("the reference's time box could not be fitted", entries=float(o.sum()))
    window, most = params.get("window_ns", 60.0), params.get("max_shift_ns", 60.0)
    rise, rise_err = _edge_shift(o, r, edges, rfit.t0_ns, window, most)
    fall, fall_err = _edge_shift(o, r, edges, rfit.t0_ns + rfit.tmax_ns, window, most)
    moved = {"t0": (rise, rise_err), "tmax": (fall - rise, float(np.hypot(fall_err, rise_err)))}
    details = {"t0_ns": round(rfit.t0_ns + rise, 3), "t0_err_ns": round(rise_err, 3),
               "tmax_ns": round(rfit.tmax_ns + fall - rise, 3), "tmax_err_ns": round(moved["tmax"][1], 3),
               "t0_ns_reference": round(rfit.t0_ns, 3), "tmax_ns_reference": round(rfit.tmax_ns, 3)}
    bad_warning = bad_error = False
    notes = []
    for name, label in (("t0", "t0"), ("tmax", "Tmax")):
        tol = params.get(f"{name}_tolerance")
        dev, error = moved[name]
        if tol and abs(dev) > tol[0] and abs(dev) > params.get("min_sigma", 5.0) * error:
            bad_warning = True
            bad_error |= len(tol) > 1 and abs(dev) > tol[1]
            notes.append(f"{label} moved by {dev:+.1f} ns")
    reason = "; ".join(notes) or (f"t0 {details['t0_ns']:.1f} +- {rise_err:.1f} ns, Tmax {details['tmax_ns']:.1f} "
                                  f"+- {moved['tmax'][1]:.1f} ns as in the reference")
    return Outcome(_level(bad_warning, bad_error), rise, reason, details)


def _edge_shift(obs: np.ndarray, ref: np.ndarray, edges: np.ndarray, at: float, window: float, most: float
                ) -> tuple[float, float]:
    """Shift (ns) of ``obs`` against ``ref`` that matches them best within ``window`` ns of ``at``, and its error."""
    inside = np.flatnonzero((edges[:-1] >= at - window - most / 2) & (edges[1:] <= at + window + most / 2))
    if len(inside) < 3 or obs[inside].sum() <= 0:
        return float("nan"), float("inf")
    lo, hi = edges[inside[0]], edges[inside[-1] + 1]
    cum = np.concatenate([[0.0], np.cumsum(ref)])
    shifts = np.arange(-most, most + 0.125, 0.25)
    e = edges[inside[0]:inside[-1] + 2]
    moved = np.diff(np.interp(e[None, :] - shifts[:, None], edges, cum), axis=1)  # (shift, bin)
    moved += 1e-3 * max(ref.sum(), 1.0) / len(ref)  # no empty bin: log(0)
    o = obs[inside]
    expected = moved * (o.sum() / moved.sum(axis=1))[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        deviance = 2 * np.sum(expected - o + np.where(o > 0, o * np.log(o / expected), 0.0), axis=1)
    k = int(np.clip(np.argmin(deviance), 1, len(shifts) - 2))
    d0, d1, d2 = deviance[k - 1], deviance[k], deviance[k + 1]
    curvature = (d0 - 2 * d1 + d2) / 0.25**2
    if not curvature > 0 or not lo < at < hi:
        return float(shifts[k]), float("inf")
    best = shifts[k] + 0.125 * (d0 - d2) / (d0 - 2 * d1 + d2)
    return float(best), float(np.sqrt(2.0 / curvature))


@functools.lru_cache(maxsize=64)
def _reference_fit(counts: bytes, edges: bytes, min_entries: int) -> TimeBoxFit:
    """The fit of a reference's time box, once per reference (counts and edges as float64 bytes)."""
    return fit_timebox(np.frombuffer(counts), np.frombuffer(edges), min_entries)


def _edges(centres: np.ndarray) -> np.ndarray:
    """Bin edges from bin centres: the midpoints, and half a bin beyond the first and the last."""
    c = np.asarray(centres, float)
    if len(c) < 2:
        return np.array([c[0] - 0.5, c[0] + 0.5]) if len(c) else np.zeros(1)
    mid = (c[:-1] + c[1:]) / 2
    return np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])


def neighbour_mean(occ: np.ndarray, mask: np.ndarray | None = None, k: int = 2) -> np.ndarray:
    """Mean count of the ``k`` nearest unmasked channels on each side in the same layer (the channel excluded;
    NaN when it has none). ``occ``: 64 channels of a chamber (cell ``c // 4``, layer slot ``c % 4``).

    >>> occ = np.arange(64.0)
    >>> neighbour_mean(occ, k=1)[[0, 4, 60]].tolist()  # cell 0: only cell 1 (channel 4); cell 15: only cell 14
    [4.0, 4.0, 56.0]
    """
    occ = np.asarray(occ, float)
    cells = det.CELLS_PER_LAYER
    valid = np.ones(occ.shape, bool) if mask is None else ~np.asarray(mask, bool)
    by = occ.reshape(cells, -1).T  # (slot, cell)
    ok = valid.reshape(cells, -1).T
    total = np.zeros_like(by)
    count = np.zeros_like(by)
    for shift in [s for d in range(1, k + 1) for s in (d, -d)]:  # 2k shifted copies of 16 cells
        src = slice(max(shift, 0), cells + min(shift, 0))
        dst = slice(max(-shift, 0), cells + min(-shift, 0))
        total[:, dst] += np.where(ok[:, src], by[:, src], 0.0)
        count[:, dst] += ok[:, src]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / count, np.nan)
    return mean.T.reshape(occ.shape)


def _moments(counts: np.ndarray, centres: np.ndarray) -> tuple[float, float]:
    n = counts.sum()
    mean = float((counts * centres).sum() / n)
    return mean, float(np.sqrt(max((counts * (centres - mean) ** 2).sum() / n, 0.0)))


def _bins(values, ctx: Context) -> str:
    values = np.asarray(values, float)
    names = ["the sparse bins" if not np.isfinite(v) else str(int(v)) if ctx.channel_axis else f"{v:g}"
             for v in values]
    return ("channel " if ctx.channel_axis else "") + ", ".join(names)


KINDS: dict[str, tuple[Callable[..., Outcome], bool, bool]] = {
    # kind: (test, needs a reference, needs an axis of bins)
    "chi2": (chi2_test, True, True),
    "ks": (ks_test, True, True),
    "range": (range_test, False, False),
    "dead": (dead_test, True, True),
    "noisy": (noisy_test, False, True),
    "mean_width": (mean_width_test, False, True),
    "timebox": (timebox_test, True, True),
}
