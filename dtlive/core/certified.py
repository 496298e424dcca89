"""Windows inside the good ranges of a certification, per chamber. Pure (xarray).

A window ``[time, window_end)`` is certified for a chamber when it lies wholly inside one of that chamber's good
time ranges (:mod:`dtlive.core.golden`); a window without an end counts by its start. How a window with some
chambers good and others not is treated, as per-chamber analyses expect:

- the window is **kept**, and every variable with a ``chamber`` dimension is **NaN for its uncertified
  chambers** (those variables become floating point, in every window, so their type does not depend on the
  selection); detector-wide variables (``total_hits``, counts, rejects) are left as they are;
- a window in which **no** chamber is certified is **dropped**;
- a boolean ``certified`` (time, chamber) variable says which chamber was certified in each window, so a
  detector-wide analysis keeps the windows good in every chamber with
  ``ds.where(ds.certified.all("chamber"), drop=True)``.

>>> import numpy as np, xarray as xr
>>> t = np.array(["2026-01-01T00:00:00", "2026-01-01T00:00:02", "2026-01-01T00:00:04"], "datetime64[ms]")
>>> ds = xr.Dataset({"hits_per_chamber": (("time", "chamber"), np.ones((3, 2), np.int64)),
...                  "total_hits": ("time", np.full(3, 2))},
...                 coords={"time": t, "window_end": ("time", t + np.timedelta64(2, "s")), "chamber": [0, 1]})
>>> ms = t.astype(np.int64)
>>> out = select(ds, {0: [(ms[0], ms[2])], 1: [(ms[1], ms[2] + 2000)]})   # window 0: chamber 0 only; 1: both
>>> out.hits_per_chamber.values.tolist(), out.certified.values.tolist(), out.total_hits.values.tolist()
([[1.0, nan], [1.0, 1.0], [nan, 1.0]], [[True, False], [True, True], [False, True]], [2, 2, 2])
>>> select(ds, {0: [], 1: []}) is None   # nothing certified
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import xarray as xr

from dtlive.core.certification import ALL

CERTIFIED = "certified"  # the (time, chamber) variable saying which chamber was certified in each window


def inside(start_ms: np.ndarray, end_ms: np.ndarray, ranges: Sequence[tuple[int, int]]) -> np.ndarray:
    """Mask of windows ``[start, end)`` (int ms; end < start: unknown, the start alone counts) wholly inside a range.

    >>> inside(np.array([0, 10, 20]), np.array([10, 20, 30]), [(0, 20), (25, 40)]).tolist()
    [True, True, False]
    """
    start, end = np.asarray(start_ms, np.int64), np.asarray(end_ms, np.int64)
    iv = np.asarray(sorted(ranges), np.int64).reshape(-1, 2)
    if not len(iv):
        return np.zeros(start.shape, bool)
    i = np.searchsorted(iv[:, 0], start, side="right") - 1  # the last range starting at or before the window
    j = np.clip(i, 0, None)
    last = np.where(end >= start, end, start)
    return (i >= 0) & (start < iv[j, 1]) & (last <= iv[j, 1])


def certified_mask(ds: xr.Dataset, times: Mapping[int | str, Sequence[tuple[int, int]]]) -> xr.DataArray:
    """The (time, chamber) boolean mask of certified windows (see the module docstring); chambers absent: False.

    >>> t = np.array(["2026-01-01T00:00:00"], "datetime64[ms]")
    >>> ds = xr.Dataset(coords={"time": t, "window_end": ("time", t + np.timedelta64(2, "s")), "chamber": [0, 1]})
    >>> certified_mask(ds, {1: [(int(t.astype(np.int64)[0]), int(t.astype(np.int64)[0]) + 2000)]}).values.tolist()
    [[False, True]]
    """
    start = ds["time"].values.astype("datetime64[ms]").astype(np.int64)
    if "window_end" in ds.coords:
        end_t = ds["window_end"].values.astype("datetime64[ms]")
        end = np.where(np.isnat(end_t), np.iinfo(np.int64).min, end_t.astype(np.int64))
    else:
        end = np.full(start.shape, np.iinfo(np.int64).min)
    chambers = ds["chamber"].values
    mask = np.stack([inside(start, end, times.get(int(c), ())) for c in chambers], axis=-1) if len(chambers) else \
        np.zeros((len(start), 0), bool)
    return xr.DataArray(mask.reshape(len(start), len(chambers)), dims=("time", "chamber"),
                        coords={"time": ds["time"], "chamber": ds["chamber"]},
                        attrs={"long_name": "window certified good for the chamber"})


def select(ds: xr.Dataset, times: Mapping[int | str, Sequence[tuple[int, int]]]) -> xr.Dataset | None:
    """``ds`` with uncertified chambers NaN and windows with no certified chamber dropped (None if none is left).

    ``times``: chamber -> good ``[start, end)`` ranges in int ms (UTC), as :func:`dtlive.core.golden.times_ms`
    gives them (its ``all`` entry is not needed: it follows from the chambers').

    >>> t = np.array(["2026-01-01T00:00:00"], "datetime64[ms]")
    >>> ds = xr.Dataset({"x": (("time", "chamber"), [[5, 6]])}, coords={"time": t, "chamber": [0, 1]})
    >>> select(ds, {0: [(int(t.astype(np.int64)[0]), int(t.astype(np.int64)[0]) + 1)]}).x.values.tolist()
    [[5.0, nan]]
    """
    mask = certified_mask(ds, {k: v for k, v in times.items() if k != ALL})
    any_good = mask.any("chamber")
    if not bool(any_good.any()):
        return None
    out = ds.copy()
    for name, var in ds.data_vars.items():
        if "chamber" in var.dims and "time" in var.dims:
            out[name] = var.where(mask)
            out[name].attrs = var.attrs
    out[CERTIFIED] = mask
    return out.isel(time=np.flatnonzero(any_good.values))
