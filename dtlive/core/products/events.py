"""Muon events per window: how many, how many with a trigger word, chamber hits in events and in none.

The events are those of :func:`dtlive.core.reco.events.build_events`; the counts are exact under any split of the
window's hits into shares (:class:`~dtlive.core.products.eventbase.EventProduct`).

>>> from dtlive.core.products.kernel import Registry
>>> from dtlive.core.rows import Rows
>>> hits = Rows.from_columns(head=[2] * 6, fpga=[0] * 6, channel=[3, 1, 2, 0, 138, 9], orbit=[7] * 6,
...                          bx=[104, 108, 100, 112, 113, 900], tdc=[0] * 6)
>>> a = Registry([EventCounts()]).compute(hits)
>>> int(a["events"]), int(a["events_with_trigger"]), a["event_hits_per_chamber"].tolist()
(1, 1, [4, 0, 0, 0])
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dtlive.core import detector as det
from dtlive.core.products.eventbase import EventProduct, Reconstructed
from dtlive.core.products.kernel import Settings

NCHAMB = det.N_CHAMBERS
_EVENTS, _TRIGGERED, _IN_EVENTS, _CHAMBER_HITS = 0, 1, 2, 2 + NCHAMB


class EventCounts(EventProduct):
    """Count vector: events, events with a trigger word, event hits (4), all chamber hits (4, a share's totals);
    the background is all chamber hits less the event hits.

    >>> from dtlive.core.products.kernel import Registry
    >>> from dtlive.core.rows import Rows
    >>> hits = Rows.from_columns(head=[2] * 5, fpga=[0] * 4 + [1], channel=[3, 1, 2, 0, 70], orbit=[7] * 5,
    ...                          bx=[104, 108, 100, 112, 2000], tdc=[0] * 5)  # one event, one lone hit in chamber 3
    >>> a = Registry([EventCounts()]).compute(hits)
    >>> int(a["events"]), a["event_hits_per_chamber"].tolist(), a["background_hits_per_chamber"].tolist()
    (1, [4, 0, 0, 0], [0, 0, 0, 1])
    """

    name = "events"
    variables = {
        "events": ((), {"long_name": "muon events (time clusters of hits)", "units": "1"}),
        "events_with_trigger": ((), {"long_name": "muon events with a trigger word", "units": "1"}),
        "event_hits_per_chamber": (("chamber",), {"long_name": "chamber hits in muon events", "units": "1"}),
        "background_hits_per_chamber": (("chamber",), {"long_name": "chamber hits in no muon event", "units": "1"}),
    }

    def size(self, settings: Settings) -> int:
        return 2 + 2 * NCHAMB

    def fill(self, reco: Reconstructed, settings: Settings) -> tuple[np.ndarray, np.ndarray]:
        from dtlive.core.products.event_entries import event_count_entries  # compiled on first use

        ev = reco.events
        return event_count_entries(ev.event, ev.chamber, reco.event_slot, (ev.trigger >= 0).any(axis=1), _IN_EVENTS)

    def totals(self, reco: Reconstructed, settings: Settings) -> np.ndarray:
        ev = reco.events
        totals = np.zeros(self.size(settings), np.int64)
        totals[_CHAMBER_HITS:] = np.bincount(ev.chamber, minlength=NCHAMB) + ev.background_per_chamber
        return totals

    def unpack(self, counts: np.ndarray, settings: Settings) -> dict[str, Any]:  # arrays, and scalar counts
        return {
            "events": np.int64(counts[_EVENTS]),
            "events_with_trigger": np.int64(counts[_TRIGGERED]),
            "event_hits_per_chamber": counts[_IN_EVENTS:_IN_EVENTS + NCHAMB],
            "background_hits_per_chamber": counts[_CHAMBER_HITS:] - counts[_IN_EVENTS:_IN_EVENTS + NCHAMB],
        }

    def coords(self, settings: Settings) -> dict:
        return {"chamber": ("chamber", det.CHAMBERS)}
