"""The base of the reconstruction products: counts filled per muon event, exact under any split of a window.

The hits of one event may be in several shares. Time is cut into slots of ``SLOT_TICKS`` TDC counts (800 ns,
longer than the event gap): an event's hits lie in one run of consecutive slots that hold hits, and no
event crosses an empty slot. Each share builds the events of its own hits, fills its counts and sends them
with the sorted slots it holds (:class:`EventSummary`). From all the slots the merge finds the runs whose
slots come from more than one share (split runs, :func:`split_slots`); only shares holding split slots are
asked, and they answer with their counts of those slots (to take back) and their raw hits there
(:class:`EventAnswer`). The merge adds the shares' counts, takes back those of the split runs and adds the
counts of the events built again from the gathered hits: exactly the counts of all the hits at once.

A product derives from :class:`EventProduct` and says how long its count vector is (:meth:`~EventProduct.size`),
what an event set fills in it (:meth:`~EventProduct.fill`: the slot and the index of each entry) and how the
vector becomes its variables (:meth:`~EventProduct.unpack`); counts that do not depend on the events (e.g. all the
chamber hits of a share) it adds once per share (:meth:`~EventProduct.totals`). The events and their t0s of a
share are built once for all such products (:func:`reconstructed`).

>>> from dtlive.core.products.kernel import Registry
>>> from dtlive.core.products.events import EventCounts
>>> from dtlive.core.rows import Rows
>>> hits = Rows.from_columns(head=[2] * 5, fpga=[0] * 5, channel=[3, 1, 2, 0, 9], orbit=[7] * 5,
...                          bx=[104, 108, 100, 112, 900], tdc=[0] * 5)
>>> alone = Registry([EventCounts()])
>>> whole = alone.compute(hits)
>>> int(whole["events"]), whole["background_hits_per_chamber"].tolist()
(1, [1, 0, 0, 0])
>>> split = alone.combine([hits.select(np.array([1, 0, 1, 0, 1], bool)), hits.select(np.array([0, 1, 0, 1, 0], bool))])
>>> all((split[k] == whole[k]).all() for k in whole)
True
"""

from __future__ import annotations

import hashlib
import threading
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from dtlive.core import detector as det
from dtlive.core.products.kernel import Hits, Product, Settings, add_up
from dtlive.core.reco.events import Events, build_events, element_kind
from dtlive.core.reco.t0 import meantimer_t0, scint_t0, trigger_t0
from dtlive.core.rows import COLUMNS, Rows

SLOT_TICKS = 32 * det.TDC_PER_BX  # 800 ns
assert SLOT_TICKS * det.TDC_NS > det.EVENT_GAP_NS  # an event never crosses an empty slot


class Reconstructed:
    """A set of hits, their events and the events' t0s, each computed once on first use.

    >>> r = Reconstructed(Rows.from_columns(head=[2] * 3, fpga=[0] * 3, channel=[3, 1, 2], orbit=[7] * 3,
    ...                                     bx=[104, 111, 104], tdc=[0, 18, 0]))
    >>> r.events.n_events, round(float(r.meantimer_t0[0, 0]), 1), r.slots.tolist()  # Tmax 390.3 ns
    (1, -100.2, [782, 783])
    """

    def __init__(self, rows: Rows):
        self.rows = rows

    @cached_property
    def events(self) -> Events:
        return build_events(self.rows)

    @cached_property
    def meantimer_t0(self) -> np.ndarray:
        return meantimer_t0(self.events)

    @cached_property
    def trigger_t0(self) -> np.ndarray:
        return trigger_t0(self.events)

    @cached_property
    def scint_t0(self) -> np.ndarray:
        return scint_t0(self.events)

    @cached_property
    def event_slot(self) -> np.ndarray:
        """Slot of each event (of its first hit)."""
        return self.events.start // SLOT_TICKS

    @cached_property
    def slots(self) -> np.ndarray:
        """The distinct slots holding a chamber hit, trigger word or scintillator hit, sorted."""
        from dtlive.core.products.event_entries import distinct_slots  # compiled on first use

        return distinct_slots(self.events.element_ticks, SLOT_TICKS)


_MEMO = "_reconstructed"
_central_lock = threading.Lock()
_central: dict[bytes, Reconstructed] = {}


def reconstructed(hits: Hits) -> Reconstructed:
    """The share's :class:`Reconstructed`, built once for every event product of the share.

    >>> from dtlive.core.products.kernel import Hits
    >>> hits = Hits(Rows.from_columns(head=[2] * 3, fpga=[0] * 3, channel=[3, 1, 2], orbit=[7] * 3, bx=[104, 111, 104],
    ...                               tdc=[0, 18, 0]))
    >>> reconstructed(hits) is reconstructed(hits), reconstructed(hits).events.n_events
    (True, 1)
    """
    r = getattr(hits, _MEMO, None)
    if r is None:
        r = Reconstructed(hits.rows)
        setattr(hits, _MEMO, r)
    return r


def gathered(rows: Rows) -> Reconstructed:
    """:class:`Reconstructed` of hits gathered from several shares, shared by the event products of one merge.

    >>> rows = Rows.from_columns(head=[2] * 3, fpga=[0] * 3, channel=[3, 1, 2], orbit=[7] * 3, bx=[104, 111, 104],
    ...                          tdc=[0, 18, 0])
    >>> r = gathered(rows)
    >>> gathered(Rows.concat([rows])) is r, r.events.n_events  # the same hits again: built once
    (True, 1)
    """
    digest = hashlib.blake2b(b"".join(np.ascontiguousarray(getattr(rows, c)).tobytes() for c in COLUMNS),
                             digest_size=16).digest()
    with _central_lock:
        r = _central.get(digest)
        if r is None:
            r = Reconstructed(rows)
            _central.clear()
            _central[digest] = r
    return r


@dataclass
class EventSummary:
    """A share's counts (over all its hits) and the sorted distinct slots it holds.

    >>> from dtlive.core.products.events import EventCounts
    >>> from dtlive.core.products.kernel import Hits
    >>> hits = Rows.from_columns(head=[2] * 5, fpga=[0] * 5, channel=[3, 1, 2, 0, 9], orbit=[7] * 5,
    ...                          bx=[104, 108, 100, 112, 900], tdc=[0] * 5)
    >>> summary, _ = EventCounts().share(Hits(hits), Settings())
    >>> summary.counts[:2].tolist(), summary.slots.tolist()  # 1 event, no trigger word; 3 slots hold hits
    ([1, 0], [782, 783, 807])
    """

    counts: np.ndarray
    slots: np.ndarray


@dataclass
class EventAnswer:
    """A share's counts of the split slots (to take back) and its hits in them.

    >>> from dtlive.core.products.events import EventCounts
    >>> from dtlive.core.products.kernel import Hits
    >>> hits = Rows.from_columns(head=[2] * 4, fpga=[0] * 4, channel=[3, 1, 2, 0], orbit=[7] * 4,
    ...                          bx=[104, 108, 100, 112], tdc=[0] * 4)
    >>> p, s = EventCounts(), Settings()
    >>> (sa, ka), (sb, kb) = (p.share(Hits(hits.select(np.array(part))), s) for part in ([0, 1, 2], [3]))
    >>> requests = p.requests({0: sa, 1: sb}, s)  # the event is split: both shares are asked
    >>> answer = p.answer(ka, requests[0], s)
    >>> answer.hits.channel.tolist(), int(answer.counts.sum())  # its hits there; to take back: its event, 3 hits
    ([3, 1, 2], 4)
    """

    counts: np.ndarray
    hits: Rows


@dataclass
class EventKept:
    """What a share keeps: its reconstruction and the slot and index of each entry it made.

    >>> from dtlive.core.products.events import EventCounts
    >>> from dtlive.core.products.kernel import Hits
    >>> hits = Rows.from_columns(head=[2] * 4, fpga=[0] * 4, channel=[3, 1, 2, 0], orbit=[7] * 4,
    ...                          bx=[104, 108, 100, 112], tdc=[0] * 4)
    >>> _, kept = EventCounts().share(Hits(hits), Settings())
    >>> kept.reco.events.n_events, len(kept.slot) == len(kept.index)
    (1, True)
    """

    reco: Reconstructed | None  # None with the reconstruction switched off
    slot: np.ndarray
    index: np.ndarray


class EventProduct(Product):
    """A product of counts filled per event; subclasses give :meth:`size`, :meth:`fill` and :meth:`unpack`.

    >>> class EventsPerChamber(EventProduct):  # events that hit each chamber
    ...     name = "events_per_chamber"
    ...     variables = {"events_per_chamber": (("chamber",), {"units": "1"})}
    ...     def size(self, settings):
    ...         return det.N_CHAMBERS
    ...     def fill(self, reco, settings):
    ...         ev = reco.events
    ...         pairs = np.unique(ev.event * det.N_CHAMBERS + ev.chamber)
    ...         return reco.event_slot[pairs // det.N_CHAMBERS], pairs % det.N_CHAMBERS
    ...     def unpack(self, counts, settings):
    ...         return {"events_per_chamber": counts}
    >>> from dtlive.core.products.kernel import Registry
    >>> hits = Rows.from_columns(head=[2] * 8, fpga=[0] * 4 + [1] * 4, channel=[3, 1, 2, 0] * 2, orbit=[7] * 8,
    ...                          bx=[104, 108, 100, 112] * 2, tdc=[0] * 8)
    >>> Registry([EventsPerChamber()]).compute(hits)["events_per_chamber"].tolist()
    [1, 0, 1, 0]
    """

    reconstruction = True

    @abstractmethod
    def size(self, settings: Settings) -> int:
        """Length of the count vector."""

    @abstractmethod
    def fill(self, reco: Reconstructed, settings: Settings) -> tuple[np.ndarray, np.ndarray]:
        """(slot, index into the count vector) of every entry the events of ``reco`` make."""

    @abstractmethod
    def unpack(self, counts: np.ndarray, settings: Settings) -> dict[str, np.ndarray]:
        """The variables and counts of the product from the count vector."""

    def totals(self, reco: Reconstructed, settings: Settings) -> np.ndarray | None:
        """Counts of the share that do not depend on its events (whichever share holds a hit counts it once): added
        to the share's counts, never taken back or built again in a merge. None (the default): there are none."""
        return None

    def share(self, hits: Hits, settings: Settings) -> tuple[EventSummary, EventKept]:
        if not settings.reconstruction:  # switched off: no events, no slots, so no requests; the counts stay 0
            nothing = np.zeros(0, np.int64)
            return EventSummary(np.zeros(self.size(settings), np.int64), nothing), EventKept(None, nothing, nothing)
        reco = reconstructed(hits)
        slot, index = self.fill(reco, settings)
        counts = np.bincount(index, minlength=self.size(settings))
        totals = self.totals(reco, settings)
        if totals is not None:
            counts += totals
        return EventSummary(counts, reco.slots), EventKept(reco, slot, index)

    def requests(self, summaries: Mapping[int, EventSummary], settings: Settings) -> dict[int, np.ndarray]:
        if sum(1 for s in summaries.values() if len(s.slots)) < 2:
            return {}
        split = split_slots({i: s.slots for i, s in summaries.items()})
        out = {}
        for i, s in summaries.items():
            mine = split[_isin_sorted(split, s.slots)] if len(split) else split
            if len(mine):
                out[i] = mine
        return out

    def answer(self, kept: EventKept, slots: np.ndarray, settings: Settings) -> EventAnswer:
        """The share's counts of the split ``slots`` and its hits there (chamber, trigger, scintillator)."""
        counts = np.bincount(kept.index[_isin_sorted(kept.slot, slots)], minlength=self.size(settings))
        assert kept.reco is not None, "slots are only asked of a share that reconstructed its events"
        rows = kept.reco.rows
        used = element_kind(rows.fpga, rows.channel) != 3
        slot = det.hit_ticks(rows.orbit, rows.bx, rows.tdc) // SLOT_TICKS
        return EventAnswer(counts, rows.select(used & _isin_sorted(slot, slots)))

    def merge(self, summaries: Sequence[EventSummary], answers: Sequence[EventAnswer], settings: Settings) -> dict:
        size = self.size(settings)
        counts = add_up([s.counts for s in summaries], (size,)).copy()
        if answers:
            for a in answers:
                counts -= a.counts
            _, index = self.fill(gathered(Rows.concat([a.hits for a in answers])), settings)
            counts += np.bincount(index, minlength=size)
        return self.unpack(counts, settings)


def split_slots(slots: Mapping[int, np.ndarray]) -> np.ndarray:
    """The sorted slots of every run of consecutive slots held by more than one share.

    >>> split_slots({0: np.array([1, 2, 5, 9]), 1: np.array([3, 9, 20])}).tolist()  # 1-3 and 9 are split
    [1, 2, 3, 9]
    """
    owners = [np.full(len(s), i, np.int64) for i, s in slots.items()]
    allslots = np.concatenate([np.asarray(s, np.int64) for s in slots.values()])
    if not len(allslots):
        return allslots
    owner = np.concatenate(owners)
    order = np.lexsort((owner, allslots))
    allslots, owner = allslots[order], owner[order]
    new_run = np.concatenate(([True], np.diff(allslots) > 1))
    run = np.cumsum(new_run) - 1
    starts = np.flatnonzero(new_run)
    lo, hi = np.minimum.reduceat(owner, starts), np.maximum.reduceat(owner, starts)
    split = (lo != hi)[run]
    out = allslots[split]
    return out[np.concatenate(([True], out[1:] != out[:-1]))] if len(out) else out


def _isin_sorted(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """Mask of ``values`` found in the sorted distinct ``sorted_set``."""
    if not len(sorted_set) or not len(values):
        return np.zeros(len(values), bool)
    i = np.minimum(np.searchsorted(sorted_set, values), len(sorted_set) - 1)
    return sorted_set[i] == values
