"""References for the automatic quality tests: the summed products of a set of windows, with their provenance.

A reference is an ``xarray.Dataset`` of the window products (:data:`dtlive.core.products.PRODUCTS`) summed
over a set of windows, without the ``time`` dimension. Its attrs say where it comes from (NetCDF-safe:
numbers and strings, structured values as JSON strings):

``kind``
    ``"dtlive.reference"`` for a reference, ``"dtlive.accumulation"`` for a plain sum (a lumi block);
``windows``, ``orbits``, ``seconds``
    how many windows were summed and their exposure (orbits from each window's ``first_orbit`` ..
    ``last_orbit``; seconds = orbits x :data:`~dtlive.core.detector.ORBIT_S`; 0 when unknown);
``window_ids``
    JSON list of the window ids summed;
``first_start``, ``last_end``
    ISO UTC times of the first window's start and the last window's end (empty when unknown);
``detector``
    JSON object: the detector configuration the windows were taken with (the caller's dict, plus the
    distinct ``config_hash``/``run_id``/``topic`` values found in the windows' provenance);
``label``, ``created``
    free text naming the reference, and when it was made (ISO UTC, given by the caller).

:func:`accumulate` sums windows (a stacked Dataset as from :func:`dtlive.core.messages.to_dataset`,
one window, or a list of either); :func:`make_reference` adds the provenance; :func:`merge_references`
sums references; :func:`save_reference` / :func:`load_reference` write and read NetCDF (where the file
lives is the caller's business).

>>> from dtlive.core.products import compute_products
>>> from dtlive.core.rows import Rows
>>> def window(i, n):
...     ds = compute_products(Rows.from_columns(head=[2] * n, fpga=[0] * n, channel=[3] * n, orbit=[i] * n,
...                                             bx=[0] * n, tdc=[0] * n))
...     ds.attrs.update(window_id=i, first_orbit=100 * i, last_orbit=100 * i + 99)
...     return ds
>>> ref = make_reference([window(0, 2), window(1, 3)], detector={"hv": "nominal"}, label="test")
>>> int(ref.channel_occupancy.sel(chamber=0, channel=3)), ref.attrs["windows"], ref.attrs["orbits"]
(5, 2, 200)
>>> json.loads(ref.attrs["detector"]), json.loads(ref.attrs["window_ids"])
({'hv': 'nominal'}, [0, 1])
>>> both = merge_references(ref, make_reference([window(7, 1)]))
>>> int(both.total_hits), both.attrs["windows"], json.loads(both.attrs["window_ids"])
(6, 3, [0, 1, 7])
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence

import numpy as np
import xarray as xr

from dtlive.core import detector as det
from dtlive.core.products import PRODUCTS

REFERENCE_KIND = "dtlive.reference"
ACCUMULATION_KIND = "dtlive.accumulation"
_PROVENANCE_KEYS = ("config_hash", "run_id", "topic", "processor")
_EXTRA = ("rows", "ancillary", "special_channel_hits", "late_hits", "rejected")  # counts summed when present

Windows = xr.Dataset | Sequence[xr.Dataset]


def accumulate(windows: Windows) -> xr.Dataset:
    """The sum of the products of windows (a lumi block), with ``windows``/``orbits``/``seconds`` attrs.

    ``windows``: one window's Dataset, a Dataset stacked along ``time`` (each element a window), or a list
    of either. Products absent from a window make the sum fail (they are all in every window result).

    >>> from dtlive.core.products import compute_products
    >>> from dtlive.core.rows import Rows
    >>> one = compute_products(Rows.from_columns(head=[2], fpga=[1], channel=[70], orbit=[7], bx=[0], tdc=[0]))
    >>> acc = accumulate([one, one, one])
    >>> acc.hits_per_chamber.values.tolist(), acc.attrs["windows"], acc.attrs["seconds"]
    ([0, 0, 0, 3], 3, 0.0)
    """
    parts = [windows] if isinstance(windows, xr.Dataset) else list(windows)
    if not parts:
        raise ValueError("no windows to accumulate")
    sums: dict[str, np.ndarray] = {}
    info: list[dict] = []
    for ds in parts:
        check_bins(parts[0], ds)
        names = [k for k in (*PRODUCTS, *_EXTRA) if k in ds.data_vars]
        stacked = "time" in ds.dims
        for k in names:
            da = ds[k]
            v = da.values.sum(axis=da.dims.index("time")) if stacked and "time" in da.dims else da.values
            sums[k] = sums[k] + v if k in sums else np.array(v, dtype=np.int64)
        info += _window_info(ds)
    template = parts[0].isel(time=0, drop=True) if "time" in parts[0].dims else parts[0]
    out = xr.Dataset({k: (template[k].dims, v, template[k].attrs) for k, v in sums.items()},
                     coords={c: v for c, v in template.coords.items() if not {"time", "reason"} & set(v.dims)})
    orbits = [w["orbits"] for w in info]
    known = all(o > 0 for o in orbits)
    starts = [w["start"] for w in info if w["start"]]
    ends = [w["end"] for w in info if w["end"]]
    out.attrs.update(
        kind=ACCUMULATION_KIND,
        windows=int(sum(w["windows"] for w in info)),
        orbits=int(sum(orbits)) if known else 0,
        seconds=float(sum(orbits) * det.ORBIT_S) if known else 0.0,
        window_ids=json.dumps(sorted(i for w in info for i in w["ids"])),
        first_start=min(starts) if starts else "",
        last_end=max(ends) if ends else "",
        provenance=json.dumps(_merge_provenance([w["provenance"] for w in info])),
    )
    return out


def make_reference(windows: Windows, *, detector: dict | None = None, label: str = "",
                   created: str = "") -> xr.Dataset:
    """A reference from windows: their summed products with provenance attrs (see the module docstring).

    ``detector``: the detector configuration the windows were taken with (HV, thresholds, gas, ...), kept
    as JSON together with the configuration values found in the windows' provenance.

    >>> from dtlive.core.products import compute_products
    >>> from dtlive.core.rows import Rows
    >>> w = compute_products(Rows.from_columns(head=[2], fpga=[0], channel=[3], orbit=[7], bx=[0], tdc=[0]))
    >>> w.attrs.update(window_id=5, provenance=json.dumps({"config_hash": "abc"}))
    >>> ref = make_reference(w, detector={"hv_V": 3600}, label="cosmics")
    >>> ref.attrs["kind"], json.loads(ref.attrs["detector"])
    ('dtlive.reference', {'hv_V': 3600, 'config_hash': ['abc']})
    """
    ref = accumulate(windows)
    found = json.loads(ref.attrs.pop("provenance"))
    ref.attrs.update(kind=REFERENCE_KIND, label=str(label), created=str(created),
                     detector=json.dumps({**(detector or {}), **found}, sort_keys=False, default=str))
    return ref


def merge_references(*refs: xr.Dataset, label: str | None = None) -> xr.Dataset:
    """The sum of references (or accumulations) with their provenance merged.

    Window ids, exposures and detector configurations are combined (differing values of a detector key
    become the list of the distinct values); the first start and last end span all of them.

    >>> from dtlive.core.products import compute_products
    >>> from dtlive.core.rows import Rows
    >>> w = compute_products(Rows.from_columns(head=[2], fpga=[0], channel=[3], orbit=[7], bx=[0], tdc=[0]))
    >>> a, b = make_reference(w, detector={"hv_V": 3600}), make_reference(w, detector={"hv_V": 3500})
    >>> json.loads(merge_references(a, b).attrs["detector"])["hv_V"]
    [3600, 3500]
    """
    if not refs:
        raise ValueError("no references to merge")
    out = refs[0].copy(deep=True)
    for r in refs[1:]:
        check_bins(out, r)
        for k in out.data_vars:
            out[k] = out[k] + r[k]
    attrs = [r.attrs for r in refs]
    orbits = [int(a.get("orbits", 0)) for a in attrs]
    known = all(o > 0 for o in orbits)
    ids = sorted({i for a in attrs for i in json.loads(a.get("window_ids", "[]"))})
    starts = [a["first_start"] for a in attrs if a.get("first_start")]
    ends = [a["last_end"] for a in attrs if a.get("last_end")]
    detectors: dict = {}
    for a in attrs:
        for k, v in json.loads(a.get("detector", "{}")).items():
            values = detectors.setdefault(k, [])
            for x in v if isinstance(v, list) else [v]:
                if x not in values:
                    values.append(x)
    out.attrs.update(
        kind=REFERENCE_KIND,
        windows=int(sum(int(a.get("windows", 0)) for a in attrs)),
        orbits=int(sum(orbits)) if known else 0,
        seconds=float(sum(orbits) * det.ORBIT_S) if known else 0.0,
        window_ids=json.dumps(ids),
        first_start=min(starts) if starts else "",
        last_end=max(ends) if ends else "",
        detector=json.dumps({k: v[0] if len(v) == 1 else v for k, v in detectors.items()}, default=str),
        label=label if label is not None else " + ".join(str(a.get("label", "")) for a in attrs).strip(" +"),
    )
    return out


def save_reference(ref: xr.Dataset, path: str | os.PathLike) -> None:
    """Write a reference to a NetCDF-4 file (h5netcdf; int64 counts are kept exactly).

    >>> import tempfile
    >>> from dtlive.core.products import compute_products
    >>> from dtlive.core.rows import Rows
    >>> w = compute_products(Rows.from_columns(head=[2], fpga=[0], channel=[3], orbit=[7], bx=[0], tdc=[0]))
    >>> path = os.path.join(tempfile.mkdtemp(), "ref.nc")
    >>> save_reference(make_reference(w, label="x"), path)
    >>> back = load_reference(path)
    >>> int(back.channel_occupancy.sel(chamber=0, channel=3)), back.attrs["label"], back.total_hits.dtype
    (1, 'x', dtype('int64'))
    """
    ref.to_netcdf(path, engine="h5netcdf")


def load_reference(path: str | os.PathLike) -> xr.Dataset:
    """Read a reference written by :func:`save_reference` (into memory: the file is closed on return).

    >>> import tempfile
    >>> from dtlive.core.products import compute_products
    >>> from dtlive.core.rows import Rows
    >>> w = compute_products(Rows.from_columns(head=[2, 2], fpga=[0, 1], channel=[3, 3], orbit=[7, 7], bx=[0, 0],
    ...                                        tdc=[0, 0]))
    >>> path = os.path.join(tempfile.mkdtemp(), "ref.nc")
    >>> save_reference(make_reference(w, label="cosmics"), path)
    >>> ref = load_reference(path)
    >>> ref.attrs["kind"], ref.attrs["label"], ref.hits_per_chamber.values.tolist()
    ('dtlive.reference', 'cosmics', [1, 0, 1, 0])
    """
    return xr.load_dataset(path, engine="h5netcdf")


def check_bins(a: xr.Dataset, b: xr.Dataset) -> None:
    """Raise ValueError unless the bins (dimension coordinates other than ``time``) shared by two Datasets agree.

    >>> check_bins(xr.Dataset(coords={"drift_time": [1.0, 2.0]}), xr.Dataset(coords={"drift_time": [1.0, 3.0]}))
    Traceback (most recent call last):
    ...
    ValueError: the drift_time bins differ: [1.0, 2.0] ... and [1.0, 3.0] ...
    """
    for dim in set(a.dims) & set(b.dims) - {"time", "reason"}:
        if dim in a.coords and dim in b.coords and not np.array_equal(a[dim].values, b[dim].values):
            raise ValueError(f"the {dim} bins differ: {a[dim].values[:3].tolist()} ... and "
                             f"{b[dim].values[:3].tolist()} ...")


def exposure_s(ds: xr.Dataset) -> float:
    """Seconds of detector time summed in an accumulation or reference (NaN when unknown).

    >>> exposure_s(xr.Dataset(attrs={"seconds": 4.0})), str(exposure_s(xr.Dataset()))
    (4.0, 'nan')
    """
    s = float(ds.attrs.get("seconds", 0.0) or 0.0)
    return s if s > 0 else float("nan")


def _window_info(ds: xr.Dataset) -> list[dict]:
    """ids, windows, orbits, start, end and provenance of each window of a window Dataset (or accumulation)."""
    a = ds.attrs
    if a.get("kind") in (REFERENCE_KIND, ACCUMULATION_KIND):  # an accumulation summed again
        return [{"ids": json.loads(a.get("window_ids", "[]")), "windows": int(a.get("windows", 0)),
                 "orbits": int(a.get("orbits", 0)), "start": a.get("first_start") or None,
                 "end": a.get("last_end") or None, "provenance": _json(a.get("provenance"))}]
    if "time" not in ds.dims:
        wid = a.get("window_id")
        return [{"ids": [] if wid is None else [int(wid)], "windows": 1,
                 "orbits": _orbits(a.get("first_orbit"), a.get("last_orbit")), "start": a.get("window_start"),
                 "end": a.get("window_end"), "provenance": _json(a.get("provenance"))}]
    n = ds.sizes["time"]

    def col(name: str) -> list:
        return ds[name].values.tolist() if name in ds.coords else [None] * n

    def iso(name: str) -> list:
        if name not in ds.coords or not np.issubdtype(ds[name].dtype, np.datetime64):
            return [None] * n
        return [None if np.isnat(t) else str(np.datetime_as_string(t, "ms")) + "Z" for t in ds[name].values]

    provs = col("provenance")
    return [{"ids": [] if i is None else [int(i)], "windows": 1, "orbits": _orbits(f, la), "start": s, "end": e,
             "provenance": _json(p if p is not None else a.get("provenance"))}
            for i, f, la, s, e, p in zip(col("window_id"), col("first_orbit"), col("last_orbit"), iso("time"),
                                         iso("window_end"), provs)]


def _orbits(first, last) -> int:
    if first is None or last is None or int(first) < 0 or int(last) < int(first):
        return 0
    return int(last) - int(first) + 1


def _json(value) -> dict:
    if isinstance(value, dict):
        return value
    try:
        out = json.loads(value) if value else {}
    except (TypeError, ValueError):
        return {}
    return out if isinstance(out, dict) else {}


def _merge_provenance(provs: Iterable[dict]) -> dict:
    """The distinct values of the configuration keys of the windows' provenance, as lists."""
    out: dict[str, list] = {}
    for p in provs:
        for k in _PROVENANCE_KEYS:
            if k in p and p[k] not in out.setdefault(k, []):
                out[k].append(p[k])
    return {k: v for k, v in out.items() if v}
