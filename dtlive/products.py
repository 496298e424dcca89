"""The monitoring products of a set of hits, as a labelled xarray Dataset (DESIGN.md §2).

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


def compute_arrays(hits: Rows, drift_edges: np.ndarray = DRIFT_EDGES_NS) -> dict[str, np.ndarray]:
    """The six products as plain numpy arrays (the fast core of :func:`compute_products`)."""
    fpga, channel, orbit = hits.fpga, hits.channel, hits.orbit
    in_chamber = channel < det.CHAMBER_CHANNELS
    chamber = 2 * fpga[in_chamber] + channel[in_chamber] // NCH
    local = channel[in_chamber] % NCH
    cell_key = chamber * NCH + local  # 0..255: (chamber, local channel)
    occupancy = np.bincount(cell_key, minlength=det.N_CHAMBERS * NCH).reshape(det.N_CHAMBERS, NCH)

    # Distinct active channels per (orbit, chamber): sort unique (orbit, cell) keys, count runs.
    o = orbit[in_chamber]
    multiplicity = np.zeros((det.N_CHAMBERS, NCH + 1), np.int64)
    if len(o):
        # sort + drop repeats: timsort is near-linear on DAQ data (almost in orbit order); np.unique's
        # hashing was ~80x slower here
        key = np.sort((o - o.min()) * (det.N_CHAMBERS * NCH) + cell_key, kind="stable")
        key = key[np.r_[True, key[1:] != key[:-1]]]
        orbit_chamber = key // NCH
        starts = np.flatnonzero(np.r_[True, orbit_chamber[1:] != orbit_chamber[:-1]])
        counts = np.diff(np.r_[starts, len(key)])
        multiplicity = np.bincount(
            (orbit_chamber[starts] % det.N_CHAMBERS) * (NCH + 1) + counts, minlength=det.N_CHAMBERS * (NCH + 1)
        ).reshape(det.N_CHAMBERS, NCH + 1)

    # Orbits with a scintillator hit: earliest scintillator time per orbit.
    is_scint = (fpga == det.SCINT_FPGA) & (channel == det.SCINT_CHANNEL)
    nbins = len(drift_edges) - 1
    scint_occ = np.zeros((det.N_CHAMBERS, NCH), np.int64)
    drift = np.zeros((det.N_CHAMBERS, nbins), np.int64)
    under = np.zeros(det.N_CHAMBERS, np.int64)
    over = np.zeros(det.N_CHAMBERS, np.int64)
    if is_scint.any():
        t_scint = det.hit_time_ns(orbit[is_scint], hits.bx[is_scint], hits.tdc[is_scint])
        s_orbit = orbit[is_scint]
        order = np.lexsort((t_scint, s_orbit))
        s_orbit, t_scint = s_orbit[order], t_scint[order]
        first = np.r_[True, s_orbit[1:] != s_orbit[:-1]]
        s_orbit, t_scint = s_orbit[first], t_scint[first]
        idx = np.clip(np.searchsorted(s_orbit, o), 0, len(s_orbit) - 1)
        selected = s_orbit[idx] == o
        scint_occ = np.bincount(cell_key[selected], minlength=det.N_CHAMBERS * NCH).reshape(det.N_CHAMBERS, NCH)
        ch_sel = chamber[selected]
        t_hit = det.hit_time_ns(o[selected], hits.bx[in_chamber][selected], hits.tdc[in_chamber][selected])
        dt = t_hit - (t_scint[idx[selected]] - det.T0_OFFSET_NS[ch_sel])
        b = np.searchsorted(drift_edges, dt, side="right") - 1  # -1: underflow, nbins: overflow
        under = np.bincount(ch_sel[b < 0], minlength=det.N_CHAMBERS)
        over = np.bincount(ch_sel[b >= nbins], minlength=det.N_CHAMBERS)
        inside = (b >= 0) & (b < nbins)
        drift = np.bincount(ch_sel[inside] * nbins + b[inside], minlength=det.N_CHAMBERS * nbins).reshape(
            det.N_CHAMBERS, nbins
        )
    return {
        "total_hits": np.int64(len(hits)),
        "hits_per_chamber": occupancy.sum(axis=1),
        "channel_occupancy": occupancy,
        "active_channels_per_orbit": multiplicity[:, 1:],
        "scint_channel_occupancy": scint_occ,
        "drift_time_ns": drift,
        "drift_time_ns_underflow": under,
        "drift_time_ns_overflow": over,
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
