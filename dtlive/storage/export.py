"""``dtlive export``: the history store's windows of a time range as a file analysts load (NetCDF, Zarr, Parquet).

:func:`export` loads the windows whose start lies in ``[start, end)`` (:meth:`HistoryStore.load
<dtlive.storage.history.HistoryStore.load>`) and writes them as

``netcdf``
    the Dataset of ``load()`` as it is (every histogram, stacked along ``time``), NetCDF-4 (deflated) through
    xarray and h5netcdf: ``xarray.open_dataset(path)`` gives it back;
``zarr``
    the same Dataset as a Zarr store (a directory) through xarray, when the ``zarr`` package is installed:
    ``xarray.open_zarr(path)``;
``parquet``
    a tidy table, one row per window (:func:`window_table`): its times, ids and orbits, processor, the
    scalar counts, a column per chamber of each per-chamber count (``hits_chamber_<c>``, ...), rejected rows
    per reason (``rejected_<reason>``) and the provenance block as JSON: ``pandas.read_parquet(path)``. The
    histograms (per channel, drift time, ...) are in the NetCDF and Zarr exports.

Every file appears complete or not at all (written under a temporary name in the same directory, then renamed);
an existing ``output`` is replaced only with ``overwrite=True``. Problems raise :class:`ExportError` (a
``ValueError``) with a one-line reason: no windows in the range, an unknown format, a missing ``zarr``, an
output that cannot be written.

>>> import tempfile, pathlib, pandas as pd
>>> from dtlive.core.messages import decode_message, encode_message, iso_utc
>>> from dtlive.core.products import compute_products
>>> from dtlive.core.rows import Rows
>>> def window(i):
...     ds = compute_products(Rows.from_columns(head=[2], fpga=[0], channel=[3], orbit=[i], bx=[0], tdc=[0]))
...     ds.attrs.update(window_id=i, first_orbit=i, last_orbit=i, window_start=iso_utc(1.7e9 + 2 * i),
...                     window_end=iso_utc(1.7e9 + 2 * i + 2))
...     return decode_message(encode_message(ds))
>>> tmp = pathlib.Path(tempfile.mkdtemp())
>>> store = HistoryStore(tmp / "history")
>>> store.append([window(i) for i in range(5)])
5
>>> done = export(store, 1.7e9 + 2, 1.7e9 + 8, "parquet", tmp / "windows.parquet")
>>> done.windows, done.bytes > 0
(3, True)
>>> pd.read_parquet(tmp / "windows.parquet")[["window_id", "total_hits", "hits_chamber_0"]].values.tolist()
[[1, 1, 1], [2, 1, 1], [3, 1, 1]]
>>> export(store, 1.8e9, None, "netcdf", tmp / "later.nc")
Traceback (most recent call last):
...
dtlive.storage.export.ExportError: no windows in the history store ... from 2027-01-15T08:00:00.000Z to the newest
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from dtlive.storage.history import HistoryStore, TimeLike, _ms

__all__ = ["FORMATS", "ExportError", "Exported", "export", "parse_time", "window_table"]

FORMATS = ("parquet", "netcdf", "zarr")


class ExportError(ValueError):
    """An export that cannot be done; the message says why in one line.

    >>> import tempfile
    >>> export(HistoryStore(tempfile.mkdtemp()), None, None, "csv", "out.csv")
    Traceback (most recent call last):
    ...
    dtlive.storage.export.ExportError: unknown format 'csv'; choose one of parquet, netcdf, zarr
    """


@dataclass(frozen=True)
class Exported:
    """What :func:`export` wrote: ``windows`` (count), ``bytes`` (on disk), the path, format and the span of
    window starts (ISO UTC).

    >>> Exported(Path("w.nc"), "netcdf", 2, 2048, "2026-12-05T10:00:00.000Z", "2026-12-05T10:00:02.000Z").windows
    2
    """

    path: Path
    format: str
    windows: int
    bytes: int
    first_start: str
    last_start: str

    def summary(self) -> str:
        """One line for people.

        >>> Exported(Path("w.nc"), "netcdf", 3, 2_500_000, "2026-01-01T00:00:00.000Z", "t").summary()
        'exported 3 windows (starts 2026-01-01T00:00:00.000Z .. t) to w.nc: netcdf, 2.5 MB'
        """
        return (f"exported {self.windows:,} windows (starts {self.first_start} .. {self.last_start}) to {self.path}: "
                f"{self.format}, {_size(self.bytes)}")


def parse_time(text: TimeLike, name: str = "time") -> TimeLike:
    """A command-line time: UNIX seconds or ISO 8601 UTC (``Z`` optional); ExportError naming ``name`` otherwise.

    >>> parse_time("1700000000"), parse_time("2026-12-05T08:00Z")
    (1700000000.0, '2026-12-05T08:00Z')
    >>> parse_time("yesterday", "--start")
    Traceback (most recent call last):
    ...
    dtlive.storage.export.ExportError: --start 'yesterday' is neither UNIX seconds nor an ISO 8601 UTC time
    """
    if text is None or not isinstance(text, str):
        return text
    try:
        return float(text)
    except ValueError:
        pass
    try:
        _ms(text)
    except ValueError:
        raise ExportError(f"{name} {text!r} is neither UNIX seconds nor an ISO 8601 UTC time") from None
    return text


def export(store: HistoryStore, start: TimeLike, end: TimeLike, fmt: str, output: str | os.PathLike,
           overwrite: bool = False, progress=None) -> Exported:
    """Write the windows of ``store`` starting in ``[start, end)`` (None: open) to ``output`` as ``fmt``.

    ``progress``: called with a line of text before the (possibly long) write. Returns :class:`Exported`
    (the windows written, their span and the bytes: :class:`Exported` too has its example here).

    >>> import tempfile
    >>> from dtlive.core.messages import decode_message, encode_message
    >>> from dtlive.core.products import compute_products
    >>> from dtlive.core.rows import Rows
    >>> def window(i):
    ...     ds = compute_products(Rows.from_columns(head=[2], fpga=[0], channel=[3], orbit=[10 * i], bx=[0], tdc=[0]))
    ...     start, end = (f"2026-12-05T10:00:{s:02d}.000Z" for s in (2 * i, 2 * i + 2))
    ...     ds.attrs.update(window_id=i, first_orbit=10 * i, last_orbit=10 * i + 9, window_start=start,
    ...                     window_end=end, provenance='{"processor": "p"}')
    ...     return decode_message(encode_message(ds))
    >>> folder = tempfile.mkdtemp()
    >>> store = HistoryStore(folder + "/history")
    >>> store.append([window(i) for i in range(3)])
    3
    >>> done = export(store, None, None, "parquet", folder + "/windows.parquet")
    >>> done.windows, done.first_start, done.bytes > 0
    (3, '2026-12-05T10:00:00.000Z', True)
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "zarr" and importlib.util.find_spec("zarr") is None:
        raise ExportError("the zarr format needs the zarr package: pip install 'zarr>=2.18'")
    output = Path(output).expanduser()
    _check_writable(output, overwrite, fmt)
    lo, hi = _ms(start), _ms(end)
    if lo is not None and hi is not None and lo >= hi:
        raise ExportError(f"empty range: start {_iso(start)} is not before end {_iso(end)}")
    ds = store.load(start, end)
    if ds is None:
        raise ExportError(f"no windows in the history store {store.path} from {_iso(start) or 'the oldest'} to "
                          f"{_iso(end) or 'the newest'}")
    n = int(ds.sizes["time"])
    if progress is not None:
        progress(f"writing {n:,} windows from {store.path} as {fmt} to {output} ...")
    ds.attrs.update(history_store=str(store.path), export_start=_iso(start) or "", export_end=_iso(end) or "")
    tmp = output.with_name(f".{output.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        if fmt == "netcdf":
            ds.to_netcdf(tmp, engine="h5netcdf", encoding={  # the histograms are mostly small counts: deflate
                k: {"zlib": True, "complevel": 4} for k in ds.data_vars if ds[k].size})
        elif fmt == "zarr":
            with warnings.catch_warnings():  # zarr 3: consolidated metadata is an extension; xarray reads it
                warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
                ds.to_zarr(tmp, mode="w-")
        else:
            window_table(ds).to_parquet(tmp, index=False, compression="zstd")
        _replace(tmp, output)
    except OSError as exc:
        raise ExportError(f"cannot write {output}: {exc.strerror or exc}") from None
    finally:
        _remove(tmp)
    times = np.datetime_as_string(ds.time.values[[0, -1]].astype("datetime64[ms]"), unit="ms")
    return Exported(output, fmt, n, _disk_bytes(output), f"{times[0]}Z", f"{times[1]}Z")


def window_table(ds: xr.Dataset) -> pd.DataFrame:
    """The tidy table of a stacked Dataset (as :meth:`HistoryStore.load` gives it): one row per window.

    Columns: ``start``, ``end`` (UTC), ``window_id``, ``first_orbit``, ``last_orbit``, ``processor``; every
    variable with one value per window (``total_hits``, ``rows``, ``ancillary``, ``special_channel_hits``,
    ``late_hits``, ``rejected``, ``events``, ...); every variable with one value per window and chamber as a
    column per chamber, ``<name>_chamber_<c>`` (a ``_per_chamber`` suffix dropped: ``hits_chamber_0``,
    ``drift_time_ns_underflow_chamber_0``, ...); rejected rows per reason (``rejected_<reason>``); the
    provenance block (JSON).

    >>> import tempfile
    >>> from dtlive.core.messages import decode_message, encode_message
    >>> from dtlive.core.products import compute_products
    >>> from dtlive.core.rows import Rows
    >>> def window(i):
    ...     ds = compute_products(Rows.from_columns(head=[2], fpga=[0], channel=[3], orbit=[10 * i], bx=[0], tdc=[0]))
    ...     start, end = (f"2026-12-05T10:00:{s:02d}.000Z" for s in (2 * i, 2 * i + 2))
    ...     ds.attrs.update(window_id=i, first_orbit=10 * i, last_orbit=10 * i + 9, window_start=start,
    ...                     window_end=end, provenance='{"processor": "p"}')
    ...     return decode_message(encode_message(ds))
    >>> folder = tempfile.mkdtemp()
    >>> store = HistoryStore(folder + "/history")
    >>> store.append([window(i) for i in range(3)])
    3
    >>> table = window_table(store.load())
    >>> table.window_id.tolist(), table.hits_chamber_0.tolist()
    ([0, 1, 2], [1, 1, 1])
    """
    cols: dict[str, np.ndarray] = {
        "start": ds.time.values.astype("datetime64[ms]"),
        "end": ds.window_end.values.astype("datetime64[ms]"),
        "window_id": ds.window_id.values, "first_orbit": ds.first_orbit.values, "last_orbit": ds.last_orbit.values,
        "processor": np.array([json.loads(p).get("processor", "") for p in ds.provenance.values], dtype=object),
    }
    for name, var in ds.data_vars.items():
        if var.dims == ("time",):
            cols[str(name)] = var.values
    for name, var in ds.data_vars.items():
        if var.dims == ("time", "chamber"):
            stem = str(name).removesuffix("_per_chamber")
            for c in range(var.sizes["chamber"]):
                cols[f"{stem}_chamber_{c}"] = var.values[:, c]
    for i, reason in enumerate(ds.reason.values):
        cols[f"rejected_{reason}"] = ds.rejected_by_reason.values[:, i]
    cols["provenance"] = ds.provenance.values.astype(object)
    table = pd.DataFrame(cols)
    for k in ("start", "end"):
        table[k] = table[k].dt.tz_localize("UTC")
    return table


# --------------------------------------------------------------------------------------------------- files


def _check_writable(output: Path, overwrite: bool, fmt: str) -> None:
    parent = output.parent if str(output.parent) else Path(".")
    if output.exists() and not overwrite:
        raise ExportError(f"{output} exists; give --overwrite to replace it")
    if output.is_dir() and fmt != "zarr":
        raise ExportError(f"{output} is a directory, not a file to write")
    if not parent.is_dir():
        raise ExportError(f"cannot write {output}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ExportError(f"cannot write {output}: directory {parent} is not writable")


def _replace(tmp: Path, output: Path) -> None:
    """Put ``tmp`` (a file or a directory) where ``output`` is, in one rename; an old ``output`` goes after."""
    old = None
    if output.is_dir():
        old = output.with_name(f".{output.name}.{uuid.uuid4().hex[:8]}.old")
        os.replace(output, old)
    os.replace(tmp, output)
    if old is not None:
        _remove(old)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _disk_bytes(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _iso(t: TimeLike) -> str | None:
    if t is None:
        return None
    return f"{np.datetime_as_string(np.datetime64(_ms(t), 'ms'), unit='ms')}Z"
