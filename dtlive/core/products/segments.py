"""Local segments per chamber: how many, their angles and chi2, the hit residuals and the cell efficiencies.

The hits of each muon event are timed from the event's meantimer t0 (:func:`dtlive.core.reco.t0.meantimer_t0`:
no scintillator needed) and fitted per chamber (:func:`dtlive.core.reco.segments.fit_segments`):

- ``segments_per_chamber``; ``segment_angle`` (degrees from the vertical, in the chamber's view) and
  ``segment_chi2`` (chi2 / ndof, segments with ndof > 0) histograms per chamber;
- ``hit_residual``: unbiased residuals (mm) of the hits of 4-hit segments per (chamber, layer): their width is
  the resolution (:func:`dtlive.core.reco.segments.hit_resolution`);
- ``cell_expected`` / ``cell_found`` per (chamber, layer, cell): the "other layers" efficiency
  (:func:`dtlive.core.reco.efficiency.layer_efficiency`); efficiency = found / expected. The meantimer needs a
  hit in layers 2 and 3 (both of its triplets have them), so their efficiency reads 1 here: only layers 1
  and 4 are measured without bias. Chambers 0 and 3 see fewer segments: the telescope's acceptance.

The segments and the four "other layers" fits come from one pass of the fit over the events' hits
(:func:`dtlive.core.reco.segments.fit_event_rows`, the compiled fit's rows of what
:func:`~dtlive.core.reco.segments.fit_events` and :func:`dtlive.core.reco.efficiency.segments_and_efficiency`
give for the timed hits).

Values beyond the histograms' ranges go into their first or last bin. Every entry belongs to one event, so the
counts are exact under any split of a window (:class:`~dtlive.core.products.eventbase.EventProduct`).

>>> from dtlive.core.products.kernel import Registry
>>> from dtlive.core.rows import Rows
>>> from dtlive.core.simulate import simulate
>>> hits = simulate(2.0, seed=5)
>>> a = Registry([SegmentProducts()]).compute(hits.select(hits.head == 2))
>>> a["segments_per_chamber"].tolist(), bool(a["cell_found"].sum() <= a["cell_expected"].sum())
([67, 200, 199, 59], True)
"""

from __future__ import annotations

import numpy as np

from dtlive.core import detector as det
from dtlive.core.products.eventbase import EventProduct, Reconstructed
from dtlive.core.products.kernel import Settings, chamber_coords
from dtlive.core.reco.segments import fit_event_rows

NCHAMB, NLAYERS, NCELLS = det.N_CHAMBERS, det.N_LAYERS, det.CELLS_PER_LAYER
ANGLE_EDGES_DEG = np.linspace(-60.0, 60.0, 61)  # 2 degree bins
CHI2_EDGES = np.linspace(0.0, 10.0, 41)  # chi2 / ndof
RESIDUAL_EDGES_MM = np.linspace(-2.0, 2.0, 81)  # 50 um bins
MIN_RESIDUAL_HITS = 4


def _centres(edges: np.ndarray) -> np.ndarray:
    return (edges[:-1] + edges[1:]) / 2


class SegmentProducts(EventProduct):
    """Count vector: segments per chamber, then the angle, chi2 and residual histograms, then expected and found
    per cell.

    >>> from dtlive.core.products.kernel import Registry
    >>> from dtlive.core.rows import Rows
    >>> hits = Rows.from_columns(head=[2] * 4, fpga=[0] * 4, channel=[7, 5, 6, 4], orbit=[9] * 4,
    ...                          bx=[100, 104, 100, 104], tdc=[0] * 4)  # a vertical track near one wire column
    >>> a = Registry([SegmentProducts()]).compute(hits)
    >>> a["segments_per_chamber"].tolist(), a["hit_residual"].shape
    ([1, 0, 0, 0], (4, 4, 80))
    """

    name = "segments"
    variables = {
        "segments_per_chamber": (("chamber",), {"long_name": "local segments (>= 3 layers)", "units": "1"}),
        "segment_angle": (("chamber", "angle"), {"long_name": "segments per angle", "units": "1"}),
        "segment_chi2": (("chamber", "chi2_ndof"), {"long_name": "segments per chi2 / ndof", "units": "1"}),
        "hit_residual": (("chamber", "layer_number", "residual"),
                         {"long_name": "unbiased hit residuals of 4-hit segments", "units": "1"}),
        "cell_expected": (("chamber", "layer_number", "cell_number"),
                          {"long_name": "hits expected by segments of the other layers", "units": "1"}),
        "cell_found": (("chamber", "layer_number", "cell_number"), {"long_name": "expected hits found", "units": "1"}),
    }
    _SIZES = (NCHAMB, NCHAMB * (len(ANGLE_EDGES_DEG) - 1), NCHAMB * (len(CHI2_EDGES) - 1),
              NCHAMB * NLAYERS * (len(RESIDUAL_EDGES_MM) - 1), NCHAMB * NLAYERS * NCELLS, NCHAMB * NLAYERS * NCELLS)
    _OFFSETS = tuple(int(x) for x in np.concatenate(([0], np.cumsum(_SIZES)[:-1])))

    def size(self, settings: Settings) -> int:
        return int(sum(self._SIZES))

    def fill(self, reco: Reconstructed, settings: Settings) -> tuple[np.ndarray, np.ndarray]:
        from dtlive.core.products.event_entries import segment_entries  # compiled on first use

        seg, hits, expected = fit_event_rows(reco.events, reco.meantimer_t0, min_hits=NLAYERS - 1)
        return segment_entries(seg.code, seg.chamber, np.degrees(np.arctan(seg.b)), seg.chi2, seg.n - 2, seg.n,
                               hits.segment, hits.layer, hits.unbiased, expected.code, expected.flat, expected.found,
                               reco.event_slot, ANGLE_EDGES_DEG, CHI2_EDGES, RESIDUAL_EDGES_MM, self._OFFSETS,
                               MIN_RESIDUAL_HITS, NLAYERS)  # fmt: skip

    def unpack(self, counts: np.ndarray, settings: Settings) -> dict[str, np.ndarray]:
        o_seg, o_angle, o_chi2, o_res, o_exp, o_found = self._OFFSETS
        n = self._SIZES
        cells = (NCHAMB, NLAYERS, NCELLS)
        return {
            "segments_per_chamber": counts[o_seg:o_seg + n[0]],
            "segment_angle": counts[o_angle:o_angle + n[1]].reshape(NCHAMB, -1),
            "segment_chi2": counts[o_chi2:o_chi2 + n[2]].reshape(NCHAMB, -1),
            "hit_residual": counts[o_res:o_res + n[3]].reshape(NCHAMB, NLAYERS, -1),
            "cell_expected": counts[o_exp:o_exp + n[4]].reshape(cells),
            "cell_found": counts[o_found:o_found + n[5]].reshape(cells),
        }

    def coords(self, settings: Settings) -> dict:
        return {
            **chamber_coords(),
            "angle": ("angle", _centres(ANGLE_EDGES_DEG),
                      {"units": "degree", "long_name": "segment angle from the vertical (bin centre)"}),
            "chi2_ndof": ("chi2_ndof", _centres(CHI2_EDGES), {"units": "1", "long_name": "chi2 / ndof (bin centre)"}),
            "residual": ("residual", _centres(RESIDUAL_EDGES_MM),
                         {"units": "mm", "long_name": "hit minus segment (bin centre)"}),
            "layer_number": ("layer_number", np.arange(1, NLAYERS + 1), {"long_name": "layer, 1 = bottom"}),
            "cell_number": ("cell_number", np.arange(NCELLS), {"long_name": "cell in its layer"}),
        }
