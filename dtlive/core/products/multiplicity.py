"""Multiplicity: orbits with k distinct active channels, per chamber (k = 1..64).

A share counts the distinct channels of each (orbit, chamber) among its own hits. A chamber seen by one
share only is exact in that share's histogram; for a chamber seen by several shares the merge asks them
for their sorted ``orbit * 4 + chamber`` keys with a uint64 mask of the active local channels of each,
ORs the masks of equal keys and counts their bits.

>>> from dtlive.core.products.kernel import Hits
>>> from dtlive.core.rows import Rows
>>> def share(channels):  # chamber 0 hits of orbit 9
...     n = len(channels)
...     return Multiplicity().share(Hits(Rows.from_columns(head=[2] * n, fpga=[0] * n, channel=channels,
...                                                        orbit=[9] * n, bx=[0] * n, tdc=[0] * n)), None)
>>> (sa, ka), (sb, kb) = share([3, 3]), share([4])
>>> requests = Multiplicity().requests({0: sa, 1: sb}, None)
>>> requests
{0: [0], 1: [0]}
>>> answers = [Multiplicity().answer(k, requests[i], None) for i, k in enumerate((ka, kb))]
>>> answers[0]
(array([36]), array([8], dtype=uint64))
>>> Multiplicity().merge([sa, sb], answers, None)["active_channels_per_orbit"][0, :3].tolist()  # one orbit, 2
[0, 1, 0]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from dtlive.core import detector as det
from dtlive.core.products.kernel import CELL_BITS, N_CELLS, NCH, NCHAMB, Hits, Product, Settings, add_up, first_of_runs

MULTIPLICITY = np.arange(1, NCH + 1)
_EMPTY = (np.zeros(0, np.int64), np.zeros(0, np.uint64))


@dataclass
class Distinct:
    """A share's distinct (orbit, cell) pairs: sorted ``(orbit - low) * 256 + cell``.

    >>> from dtlive.core.products.kernel import Hits
    >>> from dtlive.core.rows import Rows
    >>> hits = Hits(Rows.from_columns(head=[2, 2, 2], fpga=[0, 0, 0], channel=[3, 3, 4], orbit=[9, 9, 10],
    ...                               bx=[0, 0, 0], tdc=[0, 0, 0]))
    >>> _, distinct = Multiplicity().share(hits, None)
    >>> distinct.low, distinct.keys.tolist()  # orbit 9: channels 3, 4 (cells 3 and 256 + 4)
    (9, [3, 260])
    """

    low: int
    keys: np.ndarray


class Multiplicity(Product):
    """Summary: the share's own (4, 65) histogram (bin 0 unused; a nonzero row: a chamber it saw).

    >>> from dtlive.core.products.kernel import Hits
    >>> from dtlive.core.rows import Rows
    >>> hits = Hits(Rows.from_columns(head=[2, 2, 2], fpga=[0, 0, 0], channel=[3, 3, 4], orbit=[9, 9, 9],
    ...                               bx=[0, 0, 0], tdc=[0, 0, 0]))
    >>> summary, _ = Multiplicity().share(hits, None)
    >>> Multiplicity().merge([summary], [], None)["active_channels_per_orbit"][0, :3].tolist()  # one orbit, 2 channels
    [0, 1, 0]
    """

    name = "multiplicity"
    variables = {
        "active_channels_per_orbit": (("chamber", "multiplicity"),
                                      {"long_name": "orbits with k distinct active channels", "units": "1"}),
    }

    def share(self, hits: Hits, settings: Settings) -> tuple[np.ndarray, Distinct | None]:
        orbit = hits.orbit
        if not len(orbit):
            return np.zeros((NCHAMB, NCH + 1), np.int64), None
        # Timsort is near-linear on DAQ data (almost in orbit order); np.unique's hashing was ~80x slower here.
        low = int(orbit.min())
        keys = np.sort((orbit - low) * N_CELLS + hits.cell, kind="stable")
        keys = keys[first_of_runs(keys)]
        orbit_chamber = keys >> CELL_BITS
        # the start of each (orbit, chamber) run, then the end
        bounds = np.flatnonzero(np.concatenate(([True], orbit_chamber[1:] != orbit_chamber[:-1], [True])))
        starts, counts = bounds[:-1], bounds[1:] - bounds[:-1]
        hist = np.bincount((orbit_chamber[starts] % NCHAMB) * (NCH + 1) + counts, minlength=NCHAMB * (NCH + 1))
        return hist.reshape(NCHAMB, NCH + 1), Distinct(low, keys)

    def requests(self, summaries: Mapping[int, np.ndarray], settings: Settings) -> dict[int, list[int]]:
        shared = _shared(list(summaries.values()))
        if not shared.any():
            return {}
        seen = {i: s.any(axis=1) for i, s in summaries.items()}
        return {i: np.flatnonzero(s & shared).tolist() for i, s in seen.items() if (s & shared).any()}

    def answer(self, kept: Distinct, chambers: list[int], settings: Settings) -> tuple[np.ndarray, np.ndarray]:
        """The sorted ``orbit * 4 + chamber`` keys of the given chambers and the mask of active channels of each."""
        orbit_chamber = kept.keys >> CELL_BITS
        sel = np.isin(orbit_chamber % NCHAMB, chambers)
        if not sel.any():
            return _EMPTY
        keys, orbit_chamber = kept.keys[sel], orbit_chamber[sel]
        starts = np.flatnonzero(first_of_runs(orbit_chamber))
        bits = np.left_shift(np.uint64(1), (keys % NCH).astype(np.uint64))
        return orbit_chamber[starts] + kept.low * NCHAMB, np.bitwise_or.reduceat(bits, starts)

    def merge(self, summaries: Sequence[np.ndarray], answers: Sequence[tuple[np.ndarray, np.ndarray]],
              settings: Settings) -> dict:
        hist = add_up(summaries, (NCHAMB, NCH + 1))
        shared = _shared(summaries)
        if shared.any():
            keys = np.concatenate([k for k, _ in answers] or [_EMPTY[0]])
            masks = np.concatenate([m for _, m in answers] or [_EMPTY[1]])
            hist[shared] = multiplicity_of(keys, masks)[shared]
        return {"active_channels_per_orbit": hist[:, 1:]}

    def coords(self, settings: Settings) -> dict:
        return {
            "chamber": ("chamber", det.CHAMBERS),
            "multiplicity": ("multiplicity", MULTIPLICITY, {"long_name": "distinct active channels in an orbit"}),
        }


def _shared(summaries: Sequence[np.ndarray]) -> np.ndarray:
    """Mask of the chambers seen by more than one share (no chamber when there is one share)."""
    if len(summaries) < 2:
        return np.zeros(NCHAMB, bool)
    return np.sum([s.any(axis=1) for s in summaries], axis=0) > 1


def multiplicity_of(keys: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(4, 65) histogram of distinct channels from the keys and masks of several shares (OR, popcount).

    >>> multiplicity_of(np.array([4, 4, 5]), np.array([1, 2, 1], np.uint64))[:, :3].tolist()
    [[0, 0, 1], [0, 1, 0], [0, 0, 0], [0, 0, 0]]
    """
    if not len(keys):
        return np.zeros((NCHAMB, NCH + 1), np.int64)
    order = np.argsort(keys, kind="stable")  # concatenated sorted runs: merged, not re-sorted
    keys, masks = keys[order], masks[order]
    starts = np.flatnonzero(first_of_runs(keys))
    counts = np.bitwise_count(np.bitwise_or.reduceat(masks, starts)).astype(np.int64)
    return np.bincount((keys[starts] % NCHAMB) * (NCH + 1) + counts,
                       minlength=NCHAMB * (NCH + 1)).reshape(NCHAMB, NCH + 1)
