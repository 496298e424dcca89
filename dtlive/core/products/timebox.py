"""Time boxes: per chamber, the drift times of event hits from the meantimer t0 and from the trigger-word t0.

``timebox_meantimer``: hits of events whose chamber has a meantimer t0 (:func:`dtlive.core.reco.t0.meantimer_t0`),
``timebox_trigger``: hits of events with a trigger word on the chamber's FPGA (:func:`dtlive.core.reco.t0.trigger_t0`),
each on ``Settings.drift_edges`` with under- and overflow, like ``drift_time_ns``. Fit their edges with
:func:`dtlive.core.reco.timebox.fit_timeboxes` (one window, or the sum of many).

>>> from dtlive.core.products.kernel import Registry
>>> from dtlive.core.rows import Rows
>>> hits = Rows.from_columns(head=[2] * 3, fpga=[0] * 3, channel=[3, 1, 2], orbit=[7] * 3, bx=[104, 111, 104],
...                          tdc=[0, 18, 0])  # a staggered triplet
>>> a = Registry([TimeBoxes()]).compute(hits)
>>> int(a["timebox_meantimer"][0].sum()), int(a["timebox_trigger"].sum())
(3, 0)
"""

from __future__ import annotations

import numpy as np

from dtlive.core import detector as det
from dtlive.core.products.eventbase import EventProduct, Reconstructed
from dtlive.core.products.kernel import Settings, drift_time_coords

NCHAMB = det.N_CHAMBERS
_KINDS = ("meantimer", "trigger")


class TimeBoxes(EventProduct):
    """Count vector: per kind (meantimer, trigger) a (chamber, [underflow, bins..., overflow]) histogram.

    >>> from dtlive.core.products.kernel import Registry
    >>> from dtlive.core.rows import Rows
    >>> hits = Rows.from_columns(head=[2] * 4, fpga=[0] * 4, channel=[3, 1, 2, 138], orbit=[7] * 4,
    ...                          bx=[104, 111, 104, 118], tdc=[0, 18, 0, 1])  # a staggered triplet and a trigger word
    >>> a = Registry([TimeBoxes()]).compute(hits, Settings([-100.0, 0.0, 100.0, 200.0, 300.0, 400.0]))
    >>> a["timebox_meantimer"][0].tolist(), int(a["timebox_trigger"][0].sum() + a["timebox_trigger_underflow"][0]
    ...                                          + a["timebox_trigger_overflow"][0])
    ([0, 0, 2, 1, 0], 3)
    """

    name = "timebox"
    variables = {
        name: var
        for kind in _KINDS
        for name, var in {
            f"timebox_{kind}": (("chamber", "drift_time"),
                                {"long_name": f"drift times of event hits from the {kind} t0", "units": "1"}),
            f"timebox_{kind}_underflow": (("chamber",), {"long_name": "drift times below the edges", "units": "1"}),
            f"timebox_{kind}_overflow": (("chamber",), {"long_name": "drift times above the edges", "units": "1"}),
        }.items()
    }

    def size(self, settings: Settings) -> int:
        return len(_KINDS) * NCHAMB * (len(settings.drift_edges) + 1)

    def fill(self, reco: Reconstructed, settings: Settings) -> tuple[np.ndarray, np.ndarray]:
        from dtlive.core.products.event_entries import timebox_entries  # compiled on first use

        ev = reco.events
        return timebox_entries(ev.event, ev.chamber, ev.ticks, ev.start, np.stack([reco.meantimer_t0, reco.trigger_t0]),
                               reco.event_slot, settings.drift_edges, det.TDC_NS)  # fmt: skip

    def unpack(self, counts: np.ndarray, settings: Settings) -> dict[str, np.ndarray]:
        h = counts.reshape(len(_KINDS), NCHAMB, len(settings.drift_edges) + 1)
        out = {}
        for k, kind in enumerate(_KINDS):
            out[f"timebox_{kind}"] = h[k, :, 1:-1]
            out[f"timebox_{kind}_underflow"] = h[k, :, 0]
            out[f"timebox_{kind}_overflow"] = h[k, :, -1]
        return out

    def coords(self, settings: Settings) -> dict:
        return drift_time_coords(settings)
