"""Hit counts: total hits, hits per chamber, hits per channel. The shares' counts add up.

``special_channel_hits`` (hits on channels 128-138: scintillator, trigger word) goes to the window
message's counts, not to the Dataset.

>>> from dtlive.core.products.kernel import Hits
>>> from dtlive.core.rows import Rows
>>> hits = Hits(Rows.from_columns(head=[2, 2, 2], fpga=[0, 1, 1], channel=[3, 3, 128], orbit=[1, 1, 2],
...                               bx=[0, 0, 0], tdc=[0, 0, 0]))
>>> summary, _ = Counts().share(hits, None)
>>> a = Counts().merge([summary, summary], [], None)
>>> int(a["total_hits"]), a["hits_per_chamber"].tolist(), int(a["special_channel_hits"])
(6, [2, 0, 2, 0], 2)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dtlive.core.products.kernel import N_CELLS, NCH, NCHAMB, Hits, Product, Settings, add_up, chamber_coords


class Counts(Product):
    """Summary: (hits, occupancy per chamber and local channel); merged by summing.

    >>> from dtlive.core.products.kernel import Hits
    >>> from dtlive.core.rows import Rows
    >>> hits = Hits(Rows.from_columns(head=[2, 2], fpga=[0, 0], channel=[3, 67], orbit=[1, 1], bx=[0, 0], tdc=[0, 0]))
    >>> summary, kept = Counts().share(hits, None)
    >>> summary[0], summary[1][1, 3], kept
    (2, np.int64(1), None)
    """

    name = "counts"
    variables = {
        "total_hits": ((), {"long_name": "hits after cleansing (HEAD == 2), special channels included", "units": "1"}),
        "hits_per_chamber": (("chamber",), {"long_name": "hits per chamber (channels 0-127)", "units": "1"}),
        "channel_occupancy": (("chamber", "channel"), {"long_name": "hits per channel", "units": "1"}),
    }
    counts = ("special_channel_hits",)

    def share(self, hits: Hits, settings: Settings) -> tuple[tuple[int, np.ndarray], None]:
        return (len(hits.rows), np.bincount(hits.cell, minlength=N_CELLS).reshape(NCHAMB, NCH)), None

    def merge(self, summaries: Sequence[tuple[int, np.ndarray]], answers: Sequence, settings: Settings) -> dict:
        total = sum(n for n, _ in summaries)
        occupancy = add_up([occ for _, occ in summaries], (NCHAMB, NCH))
        per_chamber = occupancy.sum(axis=1)
        return {
            "total_hits": np.int64(total),
            "hits_per_chamber": per_chamber,
            "channel_occupancy": occupancy,
            "special_channel_hits": np.int64(total - int(per_chamber.sum())),
        }

    def coords(self, settings: Settings) -> dict:
        return chamber_coords()
