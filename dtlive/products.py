"""The monitoring products of a set of hits, as a labelled xarray Dataset.

Pure functions: cleansed hits in, counts out. Every product is a count, so the
products of consecutive windows add up to the products of the whole span.

>>> from dtlive.rows import Rows
>>> hits = Rows.from_columns(head=[2, 2, 2], fpga=[0, 0, 1], channel=[1, 2, 128], orbit=[5, 5, 5], bx=[0, 0, 0],
...                          tdc=[0, 0, 0])
>>> ds = compute_products(hits)
>>> int(ds.total_hits), ds.hits_per_chamber.values.tolist()
(3, [2, 0, 0, 0])
>>> int(ds.active_channels_per_orbit.sel(chamber=0, multiplicity=2))
1
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from dtlive import detector as det
from dtlive.rows import Rows

NCH = det.CHANNELS_PER_CHAMBER
DRIFT_EDGES_NS = np.arange(-100.0, 500.0 + 1e-9, 5.0)  # default drift-time binning
MULTIPLICITY = np.arange(1, NCH + 1)

PRODUCTS = (
    "total_hits",
    "hits_per_chamber",
    "channel_occupancy",
    "active_channels_per_orbit",
    "scint_channel_occupancy",
    "drift_time_ns",
    "drift_time_ns_underflow",
    "drift_time_ns_overflow",
)


N_CELLS = det.N_CHAMBERS * NCH
_DENSE_SPAN = 1 << 22  # key spans up to this are looked up in a table (a window spans ~22k orbits)


def _find(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Index of each key in the sorted distinct ``sorted_keys``, or -1 (a table lookup when the span is small)."""
    lo, span = int(sorted_keys[0]), int(sorted_keys[-1]) - int(sorted_keys[0]) + 1
    if span > _DENSE_SPAN:
        idx = np.clip(np.searchsorted(sorted_keys, keys), 0, len(sorted_keys) - 1)
        return np.where(sorted_keys[idx] == keys, idx, -1)
    table = np.full(span, -1, np.int64)
    table[sorted_keys - lo] = np.arange(len(sorted_keys))
    rel = keys - lo
    inside = (rel >= 0) & (rel < span)
    out = np.full(len(keys), -1, np.int64)
    out[inside] = table[rel[inside]]
    return out


def compute_arrays(hits: Rows, drift_edges: np.ndarray = DRIFT_EDGES_NS) -> dict[str, np.ndarray]:
    """The six products as plain numpy arrays (the fast core of :func:`compute_products`)."""
    fpga, channel, orbit = hits.fpga, hits.channel, hits.orbit
    cell = fpga * det.CHAMBER_CHANNELS + channel  # == chamber * 64 + local channel, for chamber channels
    in_chamber = channel < det.CHAMBER_CHANNELS
    rows: slice | np.ndarray = slice(None)
    o = orbit
    if not in_chamber.all():
        rows = np.flatnonzero(in_chamber)
        cell, o = cell[rows], orbit[rows]
    occupancy = np.bincount(cell, minlength=N_CELLS).reshape(det.N_CHAMBERS, NCH)

    # Distinct active channels per (orbit, chamber): sort the (orbit, cell) keys, drop repeats, count runs.
    # Timsort is near-linear on DAQ data (almost in orbit order); np.unique's hashing was ~80x slower here.
    multiplicity = np.zeros(det.N_CHAMBERS * (NCH + 1), np.int64)
    if len(o):
        key = np.sort((o - o.min()) * N_CELLS + cell, kind="stable")
        key = key[np.concatenate(([True], key[1:] != key[:-1]))]
        orbit_chamber = key >> 6  # key // NCH
        starts = np.flatnonzero(np.concatenate(([True], orbit_chamber[1:] != orbit_chamber[:-1])))
        counts = np.diff(starts, append=len(key))
        chamber = orbit_chamber[starts] % det.N_CHAMBERS
        multiplicity = np.bincount(chamber * (NCH + 1) + counts, minlength=len(multiplicity))
    multiplicity = multiplicity.reshape(det.N_CHAMBERS, NCH + 1)

    # Hits in orbits with a scintillator hit, timed from the earliest scintillator hit of their orbit.
    nbins = len(drift_edges) - 1
    scint_occ = np.zeros((det.N_CHAMBERS, NCH), np.int64)
    drift = np.zeros((det.N_CHAMBERS, nbins + 2), np.int64)  # [underflow, bins..., overflow]
    is_scint = (channel == det.SCINT_CHANNEL) & (fpga == det.SCINT_FPGA)
    if len(o) and is_scint.any():
        s_orbit = orbit[is_scint]
        t_scint = det.time_in_orbit_ns(hits.bx[is_scint], hits.tdc[is_scint])
        order = np.lexsort((t_scint, s_orbit))
        s_orbit, t_scint = s_orbit[order], t_scint[order]
        first = np.concatenate(([True], s_orbit[1:] != s_orbit[:-1]))
        s_orbit, t_scint = s_orbit[first], t_scint[first]
        match = _find(s_orbit, o)
        sel = np.flatnonzero(match >= 0)
        sel_cell = cell[sel]
        scint_occ = np.bincount(sel_cell, minlength=N_CELLS).reshape(det.N_CHAMBERS, NCH)
        chamber = sel_cell >> 6
        hit_rows = sel if isinstance(rows, slice) else rows[sel]
        t_hit = det.time_in_orbit_ns(hits.bx[hit_rows], hits.tdc[hit_rows])
        dt = t_hit - (t_scint[match[sel]] - det.T0_OFFSET_NS[chamber])
        b = np.searchsorted(drift_edges, dt, side="right")  # 0: underflow, nbins + 1: overflow
        drift = np.bincount(chamber * (nbins + 2) + b, minlength=drift.size)
        drift = drift.reshape(det.N_CHAMBERS, nbins + 2)
    return {
        "total_hits": np.int64(len(hits)),
        "hits_per_chamber": occupancy.sum(axis=1),
        "channel_occupancy": occupancy,
        "active_channels_per_orbit": multiplicity[:, 1:],
        "scint_channel_occupancy": scint_occ,
        "drift_time_ns": drift[:, 1:-1],
        "drift_time_ns_underflow": drift[:, 0],
        "drift_time_ns_overflow": drift[:, -1],
    }


def _coords(drift_edges: np.ndarray) -> dict:
    chamber = det.CHAMBERS
    channel = np.arange(NCH)
    return {
        "chamber": ("chamber", chamber),
        "channel": ("channel", channel, {"long_name": "channel inside the chamber (TDC_CHANNEL % 64)"}),
        "tdc_channel": (
            ("chamber", "channel"),
            (chamber[:, None] % 2) * NCH + channel[None, :],
            {"long_name": "TDC_CHANNEL"},
        ),
        "layer": ("channel", det.layer_of(channel), {"long_name": "layer (1 bottom .. 4 top)"}),
        "cell": ("channel", det.cell_of(channel), {"long_name": "cell column"}),
        "multiplicity": ("multiplicity", MULTIPLICITY, {"long_name": "distinct active channels in an orbit"}),
        "drift_time": (
            "drift_time",
            (drift_edges[:-1] + drift_edges[1:]) / 2,
            {"units": "ns", "long_name": "drift time (bin centre)"},
        ),
        "drift_time_edges": ("drift_time_edge", drift_edges, {"units": "ns"}),
    }


_ATTRS = {
    "total_hits": {"long_name": "hits after cleansing (HEAD == 2), special channels included", "units": "1"},
    "hits_per_chamber": {"long_name": "hits per chamber (channels 0-127)", "units": "1"},
    "channel_occupancy": {"long_name": "hits per channel", "units": "1"},
    "active_channels_per_orbit": {"long_name": "orbits with k distinct active channels", "units": "1"},
    "scint_channel_occupancy": {"long_name": "hits per channel in orbits with a scintillator hit", "units": "1"},
    "drift_time_ns": {"long_name": "drift-time histogram (t_hit - t_scint + t0 offset)", "units": "1"},
    "drift_time_ns_underflow": {"long_name": "drift times below the first edge", "units": "1"},
    "drift_time_ns_overflow": {"long_name": "drift times above the last edge", "units": "1"},
}
_DIMS = {
    "total_hits": (),
    "hits_per_chamber": ("chamber",),
    "channel_occupancy": ("chamber", "channel"),
    "active_channels_per_orbit": ("chamber", "multiplicity"),
    "scint_channel_occupancy": ("chamber", "channel"),
    "drift_time_ns": ("chamber", "drift_time"),
    "drift_time_ns_underflow": ("chamber",),
    "drift_time_ns_overflow": ("chamber",),
}


def arrays_to_dataset(
    arrays: dict[str, np.ndarray], drift_edges: np.ndarray = DRIFT_EDGES_NS, attrs=None
) -> xr.Dataset:
    """Wrap product arrays (as from :func:`compute_arrays`) in a labelled Dataset."""
    data_vars = {k: (_DIMS[k], np.asarray(arrays[k]), _ATTRS[k]) for k in PRODUCTS}
    return xr.Dataset(data_vars, coords=_coords(np.asarray(drift_edges, float)), attrs=dict(attrs or {}))


def compute_products(hits: Rows, drift_edges: np.ndarray = DRIFT_EDGES_NS, attrs=None) -> xr.Dataset:
    """All monitoring products of cleansed hits as an ``xarray.Dataset`` with named dims and units."""
    return arrays_to_dataset(compute_arrays(hits, drift_edges), drift_edges, attrs)
