"""t0 agreement: per chamber, the trigger-word t0 minus the meantimer t0 of the events that have both.

Also the events with a meantimer t0 and with a trigger-word t0, per chamber. A histogram centred on zero
says the trigger offsets (``TRIGGER_T0_OFFSET_NS``) still hold; its width is the trigger word's resolution.

>>> from dtlive.core.products.kernel import Registry
>>> from dtlive.core.rows import Rows
>>> hits = Rows.from_columns(head=[2] * 4, fpga=[0] * 4, channel=[3, 1, 2, 138], orbit=[7] * 4,
...                          bx=[104, 111, 104, 118], tdc=[0, 18, 0, 1])  # a staggered triplet, its trigger word
>>> a = Registry([T0Difference()]).compute(hits)
>>> a["t0_meantimer_events"].tolist(), a["t0_trigger_events"].tolist(), int(a["t0_trigger_minus_meantimer"].sum())
([1, 0, 0, 0], [1, 1, 0, 0], 1)
"""

from __future__ import annotations

import numpy as np

from dtlive.core import detector as det
from dtlive.core.products.eventbase import EventProduct, Reconstructed
from dtlive.core.products.kernel import Settings

NCHAMB = det.N_CHAMBERS
T0_DIFFERENCE_EDGES_NS = np.arange(-300.0, 300.1, 10.0)  # run 591: ~40 ns spread, 150 ns steps
_N = len(T0_DIFFERENCE_EDGES_NS) + 1


class T0Difference(EventProduct):
    """Count vector: (chamber, [underflow, bins..., overflow]) differences, then the two per-chamber counts.

    >>> from dtlive.core.products.kernel import Registry
    >>> from dtlive.core.rows import Rows
    >>> hits = Rows.from_columns(head=[2] * 3, fpga=[0] * 3, channel=[3, 1, 2], orbit=[7] * 3, bx=[104, 111, 104],
    ...                          tdc=[0, 18, 0])  # a staggered triplet without a trigger word
    >>> a = Registry([T0Difference()]).compute(hits)
    >>> a["t0_meantimer_events"].tolist(), a["t0_trigger_events"].tolist(), int(a["t0_trigger_minus_meantimer"].sum())
    ([1, 0, 0, 0], [0, 0, 0, 0], 0)
    """

    name = "t0_difference"
    variables = {
        "t0_trigger_minus_meantimer": (("chamber", "t0_difference"),
                                       {"long_name": "trigger-word t0 minus meantimer t0 per event", "units": "1"}),
        "t0_trigger_minus_meantimer_underflow": (("chamber",), {"long_name": "differences below the first edge",
                                                                "units": "1"}),
        "t0_trigger_minus_meantimer_overflow": (("chamber",), {"long_name": "differences above the last edge",
                                                               "units": "1"}),
        "t0_meantimer_events": (("chamber",), {"long_name": "events with a meantimer t0", "units": "1"}),
        "t0_trigger_events": (("chamber",), {"long_name": "events with a trigger-word t0", "units": "1"}),
    }

    def size(self, settings: Settings) -> int:
        return NCHAMB * _N + 2 * NCHAMB

    def fill(self, reco: Reconstructed, settings: Settings) -> tuple[np.ndarray, np.ndarray]:
        from dtlive.core.products.event_entries import t0_difference_entries  # compiled on first use

        return t0_difference_entries(reco.meantimer_t0, reco.trigger_t0, reco.event_slot, T0_DIFFERENCE_EDGES_NS)

    def unpack(self, counts: np.ndarray, settings: Settings) -> dict[str, np.ndarray]:
        h = counts[:NCHAMB * _N].reshape(NCHAMB, _N)
        return {
            "t0_trigger_minus_meantimer": h[:, 1:-1],
            "t0_trigger_minus_meantimer_underflow": h[:, 0],
            "t0_trigger_minus_meantimer_overflow": h[:, -1],
            "t0_meantimer_events": counts[NCHAMB * _N:NCHAMB * _N + NCHAMB],
            "t0_trigger_events": counts[NCHAMB * _N + NCHAMB:],
        }

    def coords(self, settings: Settings) -> dict:
        e = T0_DIFFERENCE_EDGES_NS
        return {
            "chamber": ("chamber", det.CHAMBERS),
            "t0_difference": ("t0_difference", (e[:-1] + e[1:]) / 2,
                              {"units": "ns", "long_name": "trigger-word t0 minus meantimer t0 (bin centre)"}),
            "t0_difference_edges": ("t0_difference_edge", e, {"units": "ns"}),
        }
