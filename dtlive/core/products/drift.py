"""Drift time: the chamber hits of orbits with a scintillator hit, timed from its earliest one.

``drift time = t_hit - (t_scint - T0_OFFSET_NS[chamber])``, times inside the orbit, histogrammed per chamber
on ``Settings.drift_edges`` with under- and overflow; ``scint_channel_occupancy`` counts the same hits
per channel. The scintillator hit of an orbit may be in another share than its chamber hits: each share
summarises its earliest scintillator time per orbit, the merge of these tables (earliest per orbit) goes
back to every share with chamber hits, and each histograms its own hits against it (hits never move).

>>> from dtlive.core.products.kernel import Hits, Settings
>>> from dtlive.core.rows import Rows
>>> s = Settings([0.0, 100.0, 200.0])
>>> scint = Hits(Rows.from_columns(head=[2], fpga=[1], channel=[128], orbit=[7], bx=[4], tdc=[0]))
>>> wire = Hits(Rows.from_columns(head=[2], fpga=[0], channel=[5], orbit=[7], bx=[5], tdc=[0]))  # 25 ns later
>>> (sa, _), (sb, kb) = DriftTime().share(scint, s), DriftTime().share(wire, s)
>>> requests = DriftTime().requests({0: sa, 1: sb}, s)  # only share 1 has chamber hits
>>> list(requests), requests[1][0].tolist(), requests[1][1].tolist()
([1], [7], [100.0])
>>> a = DriftTime().merge([sa, sb], [DriftTime().answer(kb, requests[1], s)], s)
>>> a["drift_time_ns"][0].tolist(), int(a["scint_channel_occupancy"][0, 5])  # 25 + 93.9 ns
([0, 1], 1)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from dtlive.core import detector as det
from dtlive.core.products.kernel import (
    CELL_BITS,
    N_CELLS,
    NCH,
    NCHAMB,
    Hits,
    Product,
    Settings,
    add_up,
    drift_time_coords,
    first_of_runs,
)

_DENSE_SPAN = 1 << 22  # orbit spans up to this are looked up in a table (a window spans ~22k orbits)
Table = tuple[np.ndarray, np.ndarray]  # sorted distinct orbits with a scintillator hit, earliest time (ns) of each
_NO_TABLE: Table = (np.zeros(0, np.int64), np.zeros(0))


@dataclass
class ChamberHits:
    """What a share keeps for its answer: orbit and cell of its chamber hits, and what times them (no copy).

    >>> kept = ChamberHits(orbit=np.array([7]), cell=np.array([5]), bx=np.array([0, 4]), tdc=np.array([0, 15]),
    ...                    rows=np.array([1]))
    >>> kept.time_ns(np.array([0])).tolist()  # the second hit: bx 4, tdc 15
    [112.5]
    """

    orbit: np.ndarray
    cell: np.ndarray
    bx: np.ndarray  # of all the share's hits
    tdc: np.ndarray
    rows: slice | np.ndarray  # the chamber hits among them

    def time_ns(self, index: np.ndarray) -> np.ndarray:
        """Time inside its orbit (ns) of the chamber hits at ``index``."""
        rows = index if isinstance(self.rows, slice) else self.rows[index]
        return det.time_in_orbit_ns(self.bx[rows], self.tdc[rows])


@dataclass
class ScintSummary:
    """A share's earliest scintillator time per orbit and its number of chamber hits.

    >>> from dtlive.core.products.kernel import Hits, Settings
    >>> from dtlive.core.rows import Rows
    >>> hits = Hits(Rows.from_columns(head=[2, 2, 2], fpga=[1, 1, 0], channel=[128, 128, 5], orbit=[7, 7, 7],
    ...                               bx=[4, 2, 5], tdc=[0, 0, 0]))
    >>> summary, _ = DriftTime().share(hits, Settings())
    >>> summary.orbits.tolist(), summary.times.tolist(), summary.chamber_hits
    ([7], [50.0], 1)
    """

    orbits: np.ndarray
    times: np.ndarray
    chamber_hits: int


class DriftTime(Product):
    """Summary: :class:`ScintSummary`; request: the merged table; answer: the share's histograms against it.

    >>> from dtlive.core.products.kernel import Hits, Settings
    >>> from dtlive.core.rows import Rows
    >>> s = Settings([0.0, 100.0, 200.0])
    >>> hits = Hits(Rows.from_columns(head=[2, 2], fpga=[1, 0], channel=[128, 5], orbit=[7, 7], bx=[4, 9], tdc=[0, 0]))
    >>> summary, kept = DriftTime().share(hits, s)
    >>> table = DriftTime().requests({0: summary}, s)[0]
    >>> a = DriftTime().merge([summary], [DriftTime().answer(kept, table, s)], s)
    >>> a["drift_time_ns"][0].tolist(), a["drift_time_ns_overflow"].tolist()  # 125 + 93.9 ns
    ([0, 0], [1, 0, 0, 0])
    """

    name = "drift_time"
    variables = {
        "scint_channel_occupancy": (("chamber", "channel"),
                                    {"long_name": "hits per channel in orbits with a scintillator hit", "units": "1"}),
        "drift_time_ns": (("chamber", "drift_time"),
                          {"long_name": "drift-time histogram (t_hit - t_scint + t0 offset)", "units": "1"}),
        "drift_time_ns_underflow": (("chamber",), {"long_name": "drift times below the first edge", "units": "1"}),
        "drift_time_ns_overflow": (("chamber",), {"long_name": "drift times above the last edge", "units": "1"}),
    }

    def share(self, hits: Hits, settings: Settings) -> tuple[ScintSummary, ChamberHits]:
        r = hits.rows
        is_scint = (r.channel == det.SCINT_CHANNEL) & (r.fpga == det.SCINT_FPGA)
        if is_scint.any():
            orbits, times = _earliest(r.orbit[is_scint], det.time_in_orbit_ns(r.bx[is_scint], r.tdc[is_scint]))
        else:
            orbits, times = _NO_TABLE
        kept = ChamberHits(hits.orbit, hits.cell, r.bx, r.tdc, hits.chamber_rows)
        return ScintSummary(orbits, times, len(kept.orbit)), kept

    def requests(self, summaries: Mapping[int, ScintSummary], settings: Settings) -> dict[int, Table]:
        tables = [s for s in summaries.values() if len(s.orbits)]
        if not tables:
            return {}
        if len(tables) == 1:
            table = tables[0].orbits, tables[0].times
        else:
            table = _earliest(np.concatenate([s.orbits for s in tables]), np.concatenate([s.times for s in tables]))
        return {i: table for i, s in summaries.items() if s.chamber_hits}

    def answer(self, kept: ChamberHits, table: Table, settings: Settings) -> tuple[np.ndarray, np.ndarray]:
        """(scintillator occupancy (4, 64), drift histogram (4, [underflow, bins..., overflow])) of the share."""
        edges = settings.drift_edges
        width = len(edges) + 1
        orbits, times = table
        match = _find(orbits, kept.orbit)
        sel = np.flatnonzero(match >= 0)
        cell = kept.cell[sel]
        chamber = cell >> CELL_BITS
        dt = kept.time_ns(sel) - (times[match[sel]] - det.T0_OFFSET_NS[chamber])
        b = np.searchsorted(edges, dt, side="right")  # 0: underflow, len(edges): overflow
        return (np.bincount(cell, minlength=N_CELLS).reshape(NCHAMB, NCH),
                np.bincount(chamber * width + b, minlength=NCHAMB * width).reshape(NCHAMB, width))

    def merge(self, summaries: Sequence[ScintSummary], answers: Sequence[tuple[np.ndarray, np.ndarray]],
              settings: Settings) -> dict:
        occupancy = add_up([occ for occ, _ in answers], (NCHAMB, NCH))
        drift = add_up([d for _, d in answers], (NCHAMB, len(settings.drift_edges) + 1))
        return {
            "scint_channel_occupancy": occupancy,
            "drift_time_ns": drift[:, 1:-1],
            "drift_time_ns_underflow": drift[:, 0],
            "drift_time_ns_overflow": drift[:, -1],
        }

    def coords(self, settings: Settings) -> dict:
        return drift_time_coords(settings)


def _earliest(orbits: np.ndarray, times: np.ndarray) -> Table:
    """Sorted distinct orbits and the earliest time of each (of a non-empty list)."""
    order = np.lexsort((times, orbits))
    orbits, times = orbits[order], times[order]
    first = first_of_runs(orbits)
    return orbits[first], times[first]


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
